"""Webhooks (Standard Webhooks): endpoints, the SQL outbox written with each state change, and the
dispatcher that signs, sends and retries."""

from app.core.vocab import WEBHOOK_EVENTS

EVENT_TYPES: tuple[str, ...] = tuple(str(t) for t in WEBHOOK_EVENTS)

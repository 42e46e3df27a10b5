"""Webhooks (Standard Webhooks): endpoints, the SQL outbox written with each state change, and the
dispatcher that signs, sends and retries."""

EVENT_TYPES = (
    "screening.succeeded",
    "screening.failed",
    "screening.cancelled",
    "experiment.succeeded",
    "experiment.failed",
    "experiment.cancelled",
    "decision.made",
)

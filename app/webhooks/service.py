"""Webhook endpoints and the outbox: `emit` adds one delivery row per subscribed endpoint to the caller's
transaction, so a state change and the message about it commit together or not at all."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.db import page
from app.core.errors import InvalidRequest, NotFound
from app.models import Experiment, Screening, WebhookDelivery, WebhookEndpoint, new_id, now
from app.webhooks import EVENT_TYPES
from app.webhooks.guard import check_url

if TYPE_CHECKING:
    from app.core.services import Ctx

SUBSCRIBABLE = frozenset(EVENT_TYPES)


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def _check_events(types: Sequence[str]) -> list[str]:
    unknown = sorted(set(types) - SUBSCRIBABLE)
    if unknown or not types:
        raise InvalidRequest(
            f"unknown event types {unknown}; expected some of {list(EVENT_TYPES)}", param="events"
        )
    return sorted(set(types), key=EVENT_TYPES.index)


def create(ctx: Ctx, *, url: str, events: Sequence[str], description: str) -> WebhookEndpoint:
    """Register a receiver for the tenant, with a new secret; the URL is checked against the provider's
    `webhook_allow_private`."""
    check_url(url, allow_private=ctx.settings.webhook_allow_private)
    ep = WebhookEndpoint(
        id=new_id("we"),
        tenant_id=ctx.tenant_id,
        url=url,
        events=_check_events(events),
        description=description,
        secret=new_secret(),
    )
    ctx.session.add(ep)
    ctx.session.commit()
    return ep


def get(*, session: Session, tenant_id: str, endpoint_id: str) -> WebhookEndpoint:
    ep = session.get(WebhookEndpoint, endpoint_id)
    if ep is None or ep.tenant_id != tenant_id or ep.deleted_at is not None:
        raise NotFound(f"no webhook endpoint {endpoint_id!r}", param="endpoint_id")
    return ep


def list_(*, session: Session, tenant_id: str) -> list[WebhookEndpoint]:
    return list(
        session.scalars(
            select(WebhookEndpoint)
            .where(WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.deleted_at.is_(None))
            .order_by(WebhookEndpoint.id)
        )
    )


def update(ctx: Ctx, endpoint_id: str, *, url: str | None, events: Sequence[str] | None) -> WebhookEndpoint:
    """Change what is given (None: keep it)."""
    ep = get(session=ctx.session, tenant_id=ctx.tenant_id, endpoint_id=endpoint_id)
    if url is not None:
        check_url(url, allow_private=ctx.settings.webhook_allow_private)
        ep.url = url
    if events is not None:
        ep.events = _check_events(events)
    ctx.session.commit()
    return ep


def delete(*, session: Session, tenant_id: str, endpoint_id: str) -> None:
    """Stop sending to the endpoint; its pending deliveries are dropped (marked failed)."""
    ep = get(session=session, tenant_id=tenant_id, endpoint_id=endpoint_id)
    ep.deleted_at = now()
    for d in session.scalars(
        select(WebhookDelivery).where(
            WebhookDelivery.endpoint_id == ep.id, WebhookDelivery.status == "pending"
        )
    ):
        d.status = "failed"
    session.commit()


def rotate(ctx: Ctx, endpoint_id: str) -> WebhookEndpoint:
    """A new secret; the old one keeps signing (a second signature) for `webhook_secret_grace_s`."""
    ep = get(session=ctx.session, tenant_id=ctx.tenant_id, endpoint_id=endpoint_id)
    ep.previous_secret, ep.previous_expires_at = ep.secret, now() + ctx.settings.webhook_secret_grace_s
    ep.secret = new_secret()
    ctx.session.commit()
    return ep


# the fields a webhook shows of each kind of object, after its id, kind and status
_SCREENING_FIELDS: tuple[str, ...] = (
    "dataset_id",
    "alignment_dataset_id",
    "risk_score",
    "tier",
    "policy",
    "policy_version",
    "decision",
    "decision_rule",
    "error",
)
_EXPERIMENT_FIELDS: tuple[str, ...] = ("dataset_id", "error")


def _object_data(session: Session, object_id: str, event_type: str) -> dict[str, Any]:
    """The object the event is about, as the API shows its main fields (never a secret or a text)."""
    status = event_type.split(".", 1)[1] if not event_type.startswith("decision.") else None
    obj: Screening | Experiment | None
    if object_id.startswith("scr_"):
        obj, kind, fields = session.get(Screening, object_id), "screening", _SCREENING_FIELDS
    else:
        obj, kind, fields = session.get(Experiment, object_id), "experiment", _EXPERIMENT_FIELDS
    if obj is None:
        return {"id": object_id}
    return {
        "id": obj.id,
        "object": kind,
        "status": status or obj.status,
        **{f: getattr(obj, f) for f in fields},
    }


def emit(session: Session, *, tenant_id: str, object_id: str, event_type: str) -> int:
    """Add the outbox rows of one event (one per endpoint subscribed to it) to the session; the caller's
    commit writes them with the state change. Returns how many."""
    if event_type not in SUBSCRIBABLE:
        return 0
    endpoints = [
        ep
        for ep in session.scalars(
            select(WebhookEndpoint).where(
                WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.deleted_at.is_(None)
            )
        )
        if event_type in ep.events
    ]
    if not endpoints:
        return 0
    session.flush()  # the object's pending changes, so the payload shows the state being committed
    body = {
        "type": event_type,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data": _object_data(session, object_id, event_type),
    }
    payload = json.dumps(body, separators=(",", ":"), sort_keys=True, default=str)
    for ep in endpoints:
        session.add(
            WebhookDelivery(
                id=new_id("msg"),
                tenant_id=tenant_id,
                endpoint_id=ep.id,
                event_type=event_type,
                payload=payload,
                status="pending",
                attempts=0,
                next_attempt_at=time.time(),
                log=[],
            )
        )
    return len(endpoints)


def deliveries(
    *, session: Session, tenant_id: str, endpoint_id: str, after: str | None, limit: int
) -> tuple[list[WebhookDelivery], bool]:
    get(session=session, tenant_id=tenant_id, endpoint_id=endpoint_id)
    q = select(WebhookDelivery).where(
        WebhookDelivery.tenant_id == tenant_id, WebhookDelivery.endpoint_id == endpoint_id
    )
    return page(session, q, WebhookDelivery.id, after=after, limit=limit)


def replay(*, session: Session, tenant_id: str, endpoint_id: str, delivery_id: str) -> WebhookDelivery:
    """Send a delivery again, under the same `webhook-id` (receivers that saw it may drop it)."""
    get(session=session, tenant_id=tenant_id, endpoint_id=endpoint_id)
    d = session.get(WebhookDelivery, delivery_id)
    if d is None or d.tenant_id != tenant_id or d.endpoint_id != endpoint_id:
        raise NotFound(f"no delivery {delivery_id!r}", param="delivery_id")
    d.status, d.next_attempt_at, d.attempts = "pending", time.time(), 0
    session.commit()
    return d

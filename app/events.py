"""Events: the progress and history of a job, kept in SQL so they outlive the queue. Recording one of the
webhook event types (app.webhooks.EVENT_TYPES) also writes its outbox rows, in the same transaction."""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.db import page
from app.models import Event
from app.schemas import EventPublic, Page
from app.webhooks import EVENT_TYPES

WEBHOOK_EVENTS = frozenset(EVENT_TYPES)


class Subject(Protocol):
    """A row events are about (a screening, an experiment): its tenant and its id."""

    tenant_id: str
    id: str


def record(
    session: Session,
    *,
    tenant_id: str,
    object_id: str,
    type: str,
    message: str,
    level: str = "info",
    data: dict[str, Any] | None = None,
) -> Event:
    ev = Event(
        tenant_id=tenant_id, object_id=object_id, type=type, message=message, level=level, data=data or {}
    )
    session.add(ev)
    if type in WEBHOOK_EVENTS:  # the outbox rows join the same transaction as the state change
        from app.webhooks import service as webhooks

        webhooks.emit(session, tenant_id=tenant_id, object_id=object_id, event_type=type)
    return ev


def record_on(session: Session, row: Subject, type: str, message: str, **fields: Any) -> Event:
    """`record` an event about `row`, under its tenant; `fields` are `record`'s others (`level`, `data`)."""
    return record(session, tenant_id=row.tenant_id, object_id=row.id, type=type, message=message, **fields)


def list_(
    *, session: Session, tenant_id: str, object_id: str, after: int | None = None, limit: int = 100
) -> tuple[list[Event], bool]:
    q = select(Event).where(Event.tenant_id == tenant_id, Event.object_id == object_id)
    return page(session, q, Event.id, after=after, limit=limit, newest_first=False)


def public_page(
    *, session: Session, tenant_id: str, object_id: str, after: int | None, limit: int
) -> Page[EventPublic]:
    """The `GET .../{id}/events` page of an object the caller has already found to be the tenant's."""
    rows, more = list_(session=session, tenant_id=tenant_id, object_id=object_id, after=after, limit=limit)
    return Page[EventPublic](data=[EventPublic.model_validate(r) for r in rows], has_more=more)

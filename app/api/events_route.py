"""`GET .../{id}/events`, an object's event log: one route, mounted on each router whose objects record
events (experiments, screenings)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Path

from app import events
from app.api.deps import EventCursor, EventPageSize, SessionDep, TenantDep
from app.api.responses import Responses
from app.schemas import EventPublic, Page


def add_events_route(
    router: APIRouter,
    *,
    id_param: str,
    find: Callable[..., object],
    responses: Responses,
) -> None:
    """Mount `/{<id_param>}/events` on `router`. `find(session=, tenant_id=, <id_param>=)` is the service's
    get: it raises NotFound for an id that is not the tenant's, before any event is read."""

    def list_events(
        session: SessionDep,
        tenant: TenantDep,
        object_id: str = Path(alias=id_param),
        after: EventCursor = None,
        limit: EventPageSize = 100,
    ) -> Page[EventPublic]:
        find(session=session, tenant_id=tenant, **{id_param: object_id})
        return events.public_page(
            session=session, tenant_id=tenant, object_id=object_id, after=after, limit=limit
        )

    router.add_api_route(
        f"/{{{id_param}}}/events",
        list_events,
        methods=["GET"],
        response_model=Page[EventPublic],
        responses=responses,
    )

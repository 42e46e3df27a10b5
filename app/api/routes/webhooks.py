"""Webhook endpoints (Standard Webhooks), their delivery log and replay."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.api.deps import CtxDep, PagingDep, SessionDep, TenantDep
from app.api.errors import AUTH_RESPONSES, WRITE_RESPONSES
from app.api.responses import resource_errors, write
from app.schemas import Page
from app.webhooks import service
from app.webhooks.schemas import (
    DeliveryPublic,
    EndpointCreate,
    EndpointPublic,
    EndpointUpdate,
    EndpointWithSecret,
)

router = APIRouter(prefix="/v1/webhook_endpoints", tags=["webhooks"], responses=AUTH_RESPONSES)
ERRORS = resource_errors(
    "No such endpoint (or delivery) for this tenant.",
    "Invalid request, or a refused URL (webhook_url_refused).",
)


@router.post("", **write(EndpointWithSecret, ERRORS, created=True))
def create_endpoint(body: EndpointCreate, ctx: CtxDep) -> EndpointWithSecret:
    """Register a receiver. The answer holds its `whsec_` secret: the only time it is shown."""
    ep = service.create(ctx, url=body.url, events=body.events, description=body.description)
    return EndpointWithSecret.of(ep)


@router.get("", response_model=Page[EndpointPublic], responses=ERRORS)
def list_endpoints(session: SessionDep, tenant: TenantDep) -> Page[EndpointPublic]:
    rows = service.list_(session=session, tenant_id=tenant)
    return Page[EndpointPublic].whole([EndpointPublic.of(r) for r in rows])


@router.get("/{endpoint_id}", response_model=EndpointPublic, responses=ERRORS)
def get_endpoint(endpoint_id: str, session: SessionDep, tenant: TenantDep) -> EndpointPublic:
    return EndpointPublic.of(service.get(session=session, tenant_id=tenant, endpoint_id=endpoint_id))


@router.patch("/{endpoint_id}", response_model=EndpointPublic, responses={**ERRORS, **WRITE_RESPONSES})
def update_endpoint(endpoint_id: str, body: EndpointUpdate, ctx: CtxDep) -> EndpointPublic:
    return EndpointPublic.of(service.update(ctx, endpoint_id, url=body.url, events=body.events))


@router.delete("/{endpoint_id}", status_code=204, responses=ERRORS)
def delete_endpoint(endpoint_id: str, session: SessionDep, tenant: TenantDep) -> Response:
    service.delete(session=session, tenant_id=tenant, endpoint_id=endpoint_id)
    return Response(status_code=204)


@router.post("/{endpoint_id}/rotate_secret", **write(EndpointWithSecret, ERRORS))
def rotate_secret(endpoint_id: str, ctx: CtxDep) -> EndpointWithSecret:
    """A new secret (shown once); the old one adds a second signature for `webhook_secret_grace_s`."""
    return EndpointWithSecret.of(service.rotate(ctx, endpoint_id))


@router.get("/{endpoint_id}/deliveries", response_model=Page[DeliveryPublic], responses=ERRORS)
def list_deliveries(
    endpoint_id: str, session: SessionDep, tenant: TenantDep, paging: PagingDep
) -> Page[DeliveryPublic]:
    """The delivery log, newest first: each message with its attempts (status code, error, duration)."""
    rows, more = service.deliveries(session=session, tenant_id=tenant, endpoint_id=endpoint_id, **paging)
    return Page[DeliveryPublic](data=[DeliveryPublic.of(r) for r in rows], has_more=more)


@router.post("/{endpoint_id}/deliveries/{delivery_id}/replay", **write(DeliveryPublic, ERRORS))
def replay_delivery(
    endpoint_id: str, delivery_id: str, session: SessionDep, tenant: TenantDep
) -> DeliveryPublic:
    """Send the message again (same `webhook-id`), whatever its status."""
    d = service.replay(session=session, tenant_id=tenant, endpoint_id=endpoint_id, delivery_id=delivery_id)
    return DeliveryPublic.of(d)

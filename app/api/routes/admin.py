"""Admin routes: tenants and API keys. They need an admin key and act across tenants."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from app.api.deps import AdminDep, PagingDep, SessionDep, require_admin
from app.api.errors import AUTH_RESPONSES
from app.api.responses import Responses, error, write
from app.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPublic,
    Page,
    TenantCreate,
    TenantPublic,
)
from app.tenants import service

# The admin check is on the router, so it runs before every route's own dependencies: an Idempotency-Key
# replay (a route dependency) must never answer a key that is not an admin's.
router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses={
        **AUTH_RESPONSES,
        403: error("The key is not an admin key."),
    },
)
ADMIN_ERRORS: Responses = {404: error("No such tenant or key."), 422: error("Invalid request.")}
INVALID: Responses = {400: error("Invalid request.")}


@router.post("/tenants", **write(TenantPublic, ADMIN_ERRORS, created=True, more=INVALID))
def create_tenant(body: TenantCreate, session: SessionDep, _: AdminDep) -> TenantPublic:
    """Create a tenant. Its datasets, screenings and keys are invisible to every other tenant."""
    return TenantPublic.model_validate(
        service.create_tenant(session=session, tenant_id=body.id, name=body.name)
    )


@router.get("/tenants", response_model=Page[TenantPublic])
def list_tenants(session: SessionDep, _: AdminDep, paging: PagingDep) -> Page[TenantPublic]:
    rows, more = service.list_tenants(session=session, **paging)
    return Page[TenantPublic](data=[TenantPublic.model_validate(r) for r in rows], has_more=more)


@router.post("/keys", **write(ApiKeyCreated, ADMIN_ERRORS, created=True, more=INVALID))
def create_key(body: ApiKeyCreate, request: Request, session: SessionDep, _: AdminDep) -> ApiKeyCreated:
    """Create an API key. The secret is in this response only; ftguard keeps its SHA-256."""
    request.state.idempotency_redact = ("key",)  # a replay must not be able to show the secret again
    key, secret = service.create_key(
        session=session,
        tenant_id=body.tenant_id,
        role=body.role,
        scopes=None if body.scopes is None else list(body.scopes),
        name=body.name,
    )
    return ApiKeyCreated.model_validate({**ApiKeyPublic.model_validate(key).model_dump(), "key": secret})


@router.get("/keys", response_model=Page[ApiKeyPublic])
def list_keys(
    session: SessionDep,
    _: AdminDep,
    paging: PagingDep,
    tenant_id: Annotated[str | None, Query(max_length=64)] = None,
) -> Page[ApiKeyPublic]:
    """Keys (never their secrets), newest first."""
    rows, more = service.list_keys(session=session, tenant_id=tenant_id, **paging)
    return Page[ApiKeyPublic](data=[ApiKeyPublic.model_validate(r) for r in rows], has_more=more)


@router.post("/keys/{key_id}/revoke", **write(ApiKeyPublic, ADMIN_ERRORS, more=INVALID))
def revoke_key(key_id: str, session: SessionDep, _: AdminDep) -> ApiKeyPublic:
    """Revoke a key: its next request is a 401. Revoking a revoked key changes nothing."""
    return ApiKeyPublic.model_validate(service.revoke_key(session=session, key_id=key_id))

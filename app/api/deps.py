"""Dependency aliases in one place; tests swap them with `app.dependency_overrides`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, TypedDict

from fastapi import Depends, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import Forbidden, Unauthorized
from app.core.metrics import ApiMetrics
from app.core.queue import EmbeddedRedis, JobQueue
from app.core.ratelimit import RateLimiter
from app.core.services import Ctx, Services
from app.tenants.service import Principal

# Documents the bearer scheme in OpenAPI; the key itself is checked by the Authenticate middleware, which
# runs before the body is read.
bearer = HTTPBearer(auto_error=False, description="An ftguard API key: `Authorization: Bearer ftg_...`.")


@dataclass
class AppState:
    settings: Settings
    services: Services
    queue: JobQueue
    limiter: RateLimiter
    embedded_redis: EmbeddedRedis | None = None
    metrics: ApiMetrics | None = None


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.ftguard
    return state


def get_session(state: Annotated[AppState, Depends(get_state)]) -> Iterator[Session]:
    with state.services.db.session() as session:
        yield session


def get_principal(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None
) -> Principal:
    """The caller, as authenticated by the middleware."""
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        raise Unauthorized("missing API key: send `Authorization: Bearer <key>`", code="missing_api_key")
    return principal


def get_tenant(principal: Annotated[Principal, Depends(get_principal)]) -> str:
    """The caller's tenant: every query a route makes is filtered by it."""
    return principal.tenant_id


def require_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if not principal.is_admin:
        raise Forbidden("this route needs an admin key", code="admin_required")
    return principal


# The largest integer a query parameter may carry into SQL: a 32-bit signed column's (PostgreSQL's
# integer, which the policy version and event ids are; SQLite's INTEGER holds more). Past it the database
# driver raises instead of matching nothing.
SQL_INT_MAX = 2**31 - 1

# The list routes' keyset paging (app.core.db.page): the cursor is the last id (or event id) seen.
Cursor = Annotated[str | None, Query(max_length=64, description="Cursor: last id seen.")]
PageSize = Annotated[int, Query(ge=1, le=100)]
EventCursor = Annotated[int | None, Query(ge=0, le=SQL_INT_MAX, description="Last event id seen.")]
EventPageSize = Annotated[int, Query(ge=1, le=500)]


class Paging(TypedDict):
    """A list route's page, as the list services take it: the rows past `after` (the last id seen), at most
    `limit` of them."""

    after: str | None
    limit: int


def get_paging(after: Cursor = None, limit: PageSize = 20) -> Paging:
    return {"after": after, "limit": limit}


PagingDep = Annotated[Paging, Depends(get_paging)]
StateDep = Annotated[AppState, Depends(get_state)]
SessionDep = Annotated[Session, Depends(get_session)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
TenantDep = Annotated[str, Depends(get_tenant)]
AdminDep = Annotated[Principal, Depends(require_admin)]


def get_ctx(session: SessionDep, state: StateDep, tenant: TenantDep) -> Ctx:
    """What a use case that creates runs is called with: this request's session (the same one the route
    gets), the queue, the settings and the caller's tenant."""
    return Ctx(session, state.queue, state.settings, tenant)


CtxDep = Annotated[Ctx, Depends(get_ctx)]


def attachment(filename: str) -> dict[str, str]:
    """Response headers that make a browser save the body as `filename` (an id-derived, quote-free name)."""
    return {"Content-Disposition": f'attachment; filename="{filename}"'}

"""Dependency aliases in one place; tests swap them with `app.dependency_overrides`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.metrics import ApiMetrics
from app.core.queue import EmbeddedRedis, JobQueue
from app.core.services import Services
from app.models import DEFAULT_TENANT


@dataclass
class AppState:
    settings: Settings
    services: Services
    queue: JobQueue
    embedded_redis: EmbeddedRedis | None = None
    metrics: ApiMetrics | None = None


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.ftguard
    return state


def get_session(state: Annotated[AppState, Depends(get_state)]) -> Iterator[Session]:
    with state.services.db.session() as session:
        yield session


def get_tenant() -> str:
    """The caller's tenant. Single-tenant until API keys land (issue: tenants and keys)."""
    return DEFAULT_TENANT


StateDep = Annotated[AppState, Depends(get_state)]
SessionDep = Annotated[Session, Depends(get_session)]
TenantDep = Annotated[str, Depends(get_tenant)]

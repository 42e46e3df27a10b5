"""The provider's model registry, as tenants see it: names only, never paths."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import StateDep, TenantDep
from app.api.errors import AUTH_RESPONSES
from app.core import registry
from app.core.config import BUNDLED_MODELS
from app.schemas import ModelPublic, Page

router = APIRouter(prefix="/v1/models", tags=["models"], responses=AUTH_RESPONSES)


@router.get("", response_model=Page[ModelPublic])
def list_models(state: StateDep, _: TenantDep) -> Page[ModelPublic]:
    """The models a request may name (`model`, `anchor_model`, `base_model`, a classifier judge)."""
    s = state.settings
    defaults = {"default_model": s.default_model, "anchor_model": s.anchor_model}
    rows = [
        ModelPublic(
            id=name,
            bundled=name in BUNDLED_MODELS and name not in s.models,
            default_for=[k for k, v in defaults.items() if v == name],
        )
        for name in registry.names(s)
    ]
    return Page[ModelPublic].whole(rows)

"""A screening's parameters: what a request leaves out is filled in from the provider's settings, the same
way for the API, the workers, the CLI and the studies."""

from __future__ import annotations

from typing import Any

from app.core.backends import BACKENDS
from app.core.config import Settings


def with_defaults(params: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """A screening's full parameters: what the caller left out comes from settings."""
    s = settings
    backend = params.get("backend") or s.default_backend
    center = params.get("center")
    return params | {
        "backend": backend,
        "center": BACKENDS[backend].center if center is None else center,
        "model": params.get("model") or s.default_model,
        **{f"anchor_{k}": v for k, v in anchor_representation(params, s).items()},
        "block_size": s.similarity_block_size,
        "method": s.similarity_method,
        "faiss_threshold": s.faiss_threshold,
    }


def anchor_representation(params: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The representation a screening's compliance anchor form is read in: its anchor backend and model, at
    the settings' `anchor_layer` for the default anchor model and the final layer of any other."""
    s = settings
    backend = params.get("anchor_backend") or s.anchor_backend
    model = params.get("anchor_model") or s.anchor_model
    default = s.anchor_layer if (backend, model) == (s.anchor_backend, s.anchor_model) else -1
    layer = params.get("anchor_layer")
    return {"backend": backend, "model": model, "layer": default if layer is None else int(layer)}

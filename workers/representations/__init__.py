"""Representation backends behind one interface (`base.Representer`), named in `app.core.backends`."""

from __future__ import annotations

import importlib
from pathlib import Path

from app.core.backends import BACKENDS
from workers.representations.base import Representer


def load_representer(
    *,
    backend: str,
    model: str,
    device: str = "auto",
    batch_size: int = 32,
    layer: int = -1,
    pooling: str = "last",
    max_length: int = 512,
    data_dir: Path | None = None,
    max_batch_tokens: int | None = None,
    name: str | None = None,
    precision: str = "auto",
) -> Representer:
    """Build a backend once; callers keep it for the life of the process. `model` is where the weights
    are, `name` what reports call them (the registry name); `precision` (auto, fp32, bf16) is the causal-LM
    backend's (sentence-transformers runs fp32 on CPU, fp16 on CUDA). Each backend's `load` takes the
    options it uses."""
    spec = BACKENDS.get(backend)
    if spec is None:
        raise ValueError(f"unknown backend {backend!r}; expected one of {list(BACKENDS)}")
    module, _, cls_name = spec.path.partition(":")
    cls = getattr(importlib.import_module(module), cls_name)
    rep: Representer = cls.load(
        model,
        device=device,
        batch_size=batch_size,
        layer=layer,
        pooling=pooling,
        max_length=max_length,
        data_dir=data_dir,
        max_batch_tokens=max_batch_tokens,
        name=name,
        precision=precision,
    )
    return rep

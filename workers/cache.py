"""Vector cache in the blob store, keyed by representation identity and each example's content hash.

An example that appears in two datasets is represented once: every screening writes its dataset's vectors
as one shard (`vectors/<identity>/<dataset sha256>.npy`, with the examples' content hashes beside it), and a
later dataset looks up each of its examples in every shard of the same identity before computing the rest.
The identity (backend, model and weights fingerprint, layer, pooling, max length) is in the key, so vectors
of different representations never mix.

A cache has a namespace, the tenant, folded into the identity: vectors are shared within a tenant, never
across tenants. A shared cache would be a membership oracle (the hit count in a report would tell tenant B
whether any other tenant, e.g. a provider's private alignment set, holds a given text), and B's screenings
would run faster on A's data.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Sequence

import numpy as np

from app.core.storage import BlobStore, staged_file

KEY_BYTES = 16  # 128-bit prefix of the example's sha256: collisions are not a practical concern


def _prefix(identity: str) -> str:
    return f"vectors/{hashlib.sha256(identity.encode()).hexdigest()[:24]}/"


def vectors_key(identity: str, dataset_sha256: str) -> str:
    return f"{_prefix(identity)}{dataset_sha256}.npy"


def _keys_key(identity: str, dataset_sha256: str) -> str:
    return f"{_prefix(identity)}{dataset_sha256}.keys.npy"


def hash_keys(hashes: Sequence[str]) -> np.ndarray:
    """Content hashes (hex) as fixed-size byte strings, the shards' index keys."""
    return np.array([bytes.fromhex(h[: 2 * KEY_BYTES]) for h in hashes], dtype=f"S{KEY_BYTES}")


def _load(store: BlobStore, key: str) -> np.ndarray:
    with store.open(key) as fh:
        return np.load(io.BytesIO(fh.read()), allow_pickle=False)


class VectorCache:
    def __init__(self, store: BlobStore, namespace: str) -> None:
        if not namespace:
            raise ValueError(
                "a vector cache needs a namespace (the tenant): vectors never mix across tenants"
            )
        self.store = store
        self.namespace = namespace
        self.hits = 0  # examples served from the cache
        self.misses = 0  # examples that had to be represented
        self._index: dict[str, dict[bytes, tuple[str, int]]] = {}
        self._seen: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def _scoped(self, identity: str) -> str:
        return f"tenant={self.namespace}\n{identity}"

    def _refresh(self, identity: str) -> dict[bytes, tuple[str, int]]:
        """Index of every shard of this identity; new shards (from other workers) are added on each call."""
        index = self._index.setdefault(identity, {})
        seen = self._seen.setdefault(identity, set())
        for key in self.store.list(_prefix(identity)):
            if key.endswith(".keys.npy") and key not in seen:
                vec_key = key.removesuffix(".keys.npy") + ".npy"
                if not self.store.exists(vec_key):
                    continue
                for row, k in enumerate(_load(self.store, key).tolist()):
                    index.setdefault(k, (vec_key, row))
                seen.add(key)
        return index

    def lookup(
        self, identity: str, dataset_sha256: str, hashes: Sequence[str], dim: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Vectors found in the cache and a mask of the examples still to represent."""
        identity = self._scoped(identity)
        out = np.zeros((len(hashes), dim), dtype=np.float32)
        missing = np.ones(len(hashes), dtype=bool)
        whole = vectors_key(identity, dataset_sha256)
        if self.store.exists(whole):
            arr = _load(self.store, whole)
            if arr.shape == out.shape:
                self.hits += len(hashes)
                return arr, np.zeros(len(hashes), dtype=bool)
        with self._lock:
            index = self._refresh(identity)
        by_shard: dict[str, list[tuple[int, int]]] = {}
        for i, k in enumerate(hash_keys(hashes).tolist()):
            hit = index.get(k)
            if hit is not None:
                by_shard.setdefault(hit[0], []).append((i, hit[1]))
        for shard, pairs in by_shard.items():
            arr = _load(self.store, shard)
            if arr.shape[1] != dim:
                continue
            rows = np.array(pairs)
            out[rows[:, 0]] = arr[rows[:, 1]]
            missing[rows[:, 0]] = False
        self.hits += int((~missing).sum())
        self.misses += int(missing.sum())
        return out, missing

    def store_vectors(
        self, identity: str, dataset_sha256: str, hashes: Sequence[str], vectors: np.ndarray
    ) -> None:
        """Write a dataset's vectors as a shard; the keys go last, so a reader never sees half a shard."""
        identity = self._scoped(identity)
        for key, arr in (
            (vectors_key(identity, dataset_sha256), np.ascontiguousarray(vectors, np.float32)),
            (_keys_key(identity, dataset_sha256), hash_keys(hashes)),
        ):
            with staged_file(self.store, suffix=".npy") as (path, fh):
                np.save(fh, arr, allow_pickle=False)
                fh.close()
                self.store.put_file(key, path)

"""Vector cache in the blob store: a dataset's vectors are computed once per representation identity."""

from __future__ import annotations

import hashlib
import io

import numpy as np

from app.core.storage import BlobStore, staged_file


def vectors_key(identity: str, dataset_sha256: str) -> str:
    return f"vectors/{hashlib.sha256(identity.encode()).hexdigest()[:24]}/{dataset_sha256}.npy"


class VectorCache:
    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self.hits = 0
        self.misses = 0

    def get(self, identity: str, dataset_sha256: str) -> np.ndarray | None:
        key = vectors_key(identity, dataset_sha256)
        if not self.store.exists(key):
            self.misses += 1
            return None
        with self.store.open(key) as fh:
            arr = np.load(io.BytesIO(fh.read()), allow_pickle=False)
        self.hits += 1
        return arr

    def put(self, identity: str, dataset_sha256: str, vectors: np.ndarray) -> None:
        with staged_file(self.store, suffix=".npy") as (path, fh):
            np.save(fh, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
            fh.close()
            self.store.put_file(vectors_key(identity, dataset_sha256), path)

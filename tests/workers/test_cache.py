from __future__ import annotations

from pathlib import Path

import numpy as np

from app.core.storage import LocalBlobStore
from workers.cache import VectorCache


def test_lookup_finds_examples_across_datasets_and_keeps_identities_apart(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    cache = VectorCache(store, "t1")
    hashes = [f"{i:02x}" * 32 for i in range(6)]
    vecs = np.arange(24, dtype=np.float32).reshape(6, 4)
    cache.store_vectors("id-A", "sha1", hashes[:4], vecs[:4])
    got, missing = VectorCache(store, "t1").lookup("id-A", "sha2", [hashes[2], hashes[5], hashes[0]], 4)
    assert missing.tolist() == [False, True, False]
    assert np.array_equal(got[0], vecs[2]) and np.array_equal(got[2], vecs[0])
    _, missing = cache.lookup("id-B", "sha2", hashes[:2], 4)
    assert missing.all()
    whole, missing = cache.lookup("id-A", "sha1", hashes[:4], 4)
    assert not missing.any() and np.array_equal(whole, vecs[:4])


def test_a_shard_without_its_keys_file_is_ignored(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    cache = VectorCache(store, "t1")
    cache.store_vectors("id", "sha", ["ab" * 32], np.ones((1, 2), np.float32))
    (key,) = [k for k in store.list("vectors") if k.endswith(".keys.npy")]
    store.delete(key)
    _, missing = VectorCache(store, "t1").lookup("id", "other", ["ab" * 32], 2)
    assert missing.all()

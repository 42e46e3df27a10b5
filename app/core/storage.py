"""Blob storage behind a small interface. The local implementation writes under the data dir (a shared
volume works as is); `app.core.storage_s3` implements it on an S3-compatible object store. `open_store`
chooses one by the scheme of `FTGUARD_BLOB_URL`.

Keys are relative POSIX paths. Dataset uploads are content-addressed (`datasets/<sha256>`); derived
artefacts (vectors, per-example scores) live under their own prefixes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from app.core.config import Settings


class BlobStore(Protocol):
    """`open` raises FileNotFoundError for a missing key; `put_file` consumes the staged file; `local_path`
    is None where blobs are not files; `modified` is the last write (epoch seconds; None: missing);
    `clean_uploads` removes unfinished uploads older than `max_age_s` (a remote store's partial writes)."""

    def exists(self, key: str) -> bool: ...
    def open(self, key: str) -> BinaryIO: ...
    def put_file(self, key: str, path: Path) -> None: ...
    def delete(self, key: str) -> None: ...
    def local_path(self, key: str) -> Path | None: ...
    def modified(self, key: str) -> float | None: ...
    def staging(self) -> Path: ...
    def list(self, prefix: str) -> list[str]: ...
    def clean_uploads(self, *, max_age_s: float) -> int: ...


def dataset_key(sha256: str) -> str:
    return f"datasets/{sha256[:2]}/{sha256}"


SCORES_PREFIX = "scores"


def scores_key(tenant_id: str, screening_id: str) -> str:
    """Where a screening's per-example scores go (one name per screening, whatever run wrote them)."""
    return f"{SCORES_PREFIX}/{tenant_id}/{screening_id}.npz"


class LocalBlobStore:
    """Files under `root`; writes land in a temporary file and are renamed into place (atomic)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "tmp").mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"blob key escapes the store: {key!r}")
        return path

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def open(self, key: str) -> BinaryIO:
        return self._path(key).open("rb")

    def put_file(self, key: str, path: Path) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def modified(self, key: str) -> float | None:
        try:
            return self._path(key).stat().st_mtime
        except FileNotFoundError:
            return None

    def staging(self) -> Path:
        return self.root / "tmp"

    def clean_uploads(self, *, max_age_s: float) -> int:
        return 0  # an unfinished write is a staged file: `clean_staging` removes those

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        root = self.root.resolve()
        return sorted(p.relative_to(root).as_posix() for p in base.rglob("*") if p.is_file())


def _local(settings: Settings) -> BlobStore:
    return LocalBlobStore(settings.blob_dir)


def _s3(settings: Settings) -> BlobStore:
    from app.core.storage_s3 import S3BlobStore  # boto3 only where an S3 store is configured

    return S3BlobStore.from_settings(settings)


STORES = {"": _local, "s3": _s3}  # FTGUARD_BLOB_URL's scheme -> the store ("": unset, the data dir)


def open_store(settings: Settings) -> BlobStore:
    """The blob store `settings` name: local files under the data dir, or `s3://bucket/prefix`."""
    scheme = urlsplit(settings.blob_url or "").scheme
    if scheme not in STORES:
        raise ValueError(f"FTGUARD_BLOB_URL: unknown scheme {scheme!r}; expected one of {sorted(STORES)[1:]}")
    return STORES[scheme](settings)


def clean_staging(store: BlobStore, *, max_age_s: float) -> int:
    """Remove staged files not written to for `max_age_s`: left by a process killed mid-upload. A live
    upload writes its staged file continuously, so its age stays near zero (several API replicas may share
    the store, so their in-flight files must survive one replica's start-up). A remote store's unfinished
    uploads of that age go too."""
    removed = 0
    cutoff = time.time() - max_age_s
    for path in store.staging().iterdir():
        try:
            if path.is_file() and path.stat().st_mtime <= cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:  # finished (renamed into place) while we looked
            continue
    return removed + store.clean_uploads(max_age_s=max_age_s)


@contextmanager
def staged_file(store: BlobStore, suffix: str = "") -> Iterator[tuple[Path, BinaryIO]]:
    """A temporary file in the store's staging area, removed unless it was moved into the store."""
    fd, name = tempfile.mkstemp(dir=store.staging(), suffix=suffix)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield path, fh
    finally:
        path.unlink(missing_ok=True)


def copy_to(store: BlobStore, key: str, src: BinaryIO) -> None:
    with staged_file(store) as (path, fh):
        shutil.copyfileobj(src, fh)
        fh.close()
        store.put_file(key, path)

"""A `BlobStore` on an S3-compatible object store (AWS S3, SeaweedFS, MinIO, ...), selected by
`FTGUARD_BLOB_URL=s3://bucket/prefix`. boto3 is imported only when such a store is built, so the API and the
client stay light where blobs are local.

- Keys are the local store's (content-addressed datasets, per-screening scores, ...) under the URL's prefix.
- `put_file` streams the staged file: one PUT up to `blob_part_size_bytes`, else a multipart upload read a
  part at a time. A failed multipart upload is aborted, so no object and no parts are left; the object
  appears only when the upload completes (S3 puts are atomic), so a reader sees it whole or not at all. When
  the abort itself fails (the store went away), the upload is kept and aborted again on the next write, and
  the start-up sweep (`clean_uploads`) aborts any left by a process that died.
- `open` answers a seekable file whose reads are ranged GETs: a preview or a Parquet footer fetches the
  bytes it reads (a window that starts at 1 MiB and doubles while reads stay sequential), never the object.
  Every GET is pinned to the ETag seen at open, so an object rewritten meanwhile fails instead of mixing.
- Every error of the object store (refused connection, timeout, 5xx, refused credentials) becomes one
  `ServiceUnavailable` here (`_translate`): the API answers its 503 envelope, a worker retries the job.
  A missing key is `FileNotFoundError`, as on local disk.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from app.core.config import Settings
from app.core.errors import BlobStoreUnavailable

log = logging.getLogger("ftguard.storage")

MIN_WINDOW = 1 << 20  # first ranged GET after an open or a seek
MAX_WINDOW = 64 << 20  # largest ranged GET of a sequential read
MISSING = {"404", "NoSuchKey", "NotFound"}


def _is_missing(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and str(exc.response.get("Error", {}).get("Code")) in MISSING


@contextmanager
def _translate(what: str) -> Iterator[None]:
    """The one place where the object store's failures become the service's 503 (never the credentials:
    botocore's messages name the operation and the status, not the keys)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        if _is_missing(exc):
            raise FileNotFoundError(what) from exc
        err = exc.response.get("Error", {})
        log.warning("object store error", extra={"op": what, "code": err.get("Code")})
        msg = f"the blob store refused {what} ({err.get('Code')}); retry shortly"
        raise BlobStoreUnavailable(msg) from exc
    except BotoCoreError as exc:
        log.warning("object store unreachable", extra={"op": what, "error": type(exc).__name__})
        raise BlobStoreUnavailable(f"the blob store is unavailable ({what}); retry shortly") from exc


def parse_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix"); ValueError for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"FTGUARD_BLOB_URL must read s3://bucket[/prefix], not {url!r}")
    return parts.netloc, parts.path.strip("/")


def _check_key(key: str) -> str:
    segments = key.split("/")
    if not key or any(s in ("", ".", "..") for s in segments):
        raise ValueError(f"blob key escapes the store: {key!r}")
    return key


class _RangedReader(io.RawIOBase):
    """The raw, seekable reader under `S3BlobStore.open` (wrapped in a BufferedReader)."""

    def __init__(self, client: Any, bucket: str, key: str, size: int, etag: str) -> None:
        self.client, self.bucket, self.key, self.size, self.etag = client, bucket, key, size, etag
        self.pos = 0
        self.window = MIN_WINDOW
        self.requested = 0  # bytes asked for by ranged GETs (tests check that reads stay partial)
        self._body: Any = None
        self._body_end = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        target = base + offset
        if target < 0:
            raise ValueError("negative seek position")
        if target != self.pos:
            self._drop()
            self.pos, self.window = target, MIN_WINDOW
        return self.pos

    def readinto(self, buffer: Any) -> int:
        if self.pos >= self.size or len(buffer) == 0:
            return 0
        with _translate(f"reading {self.key}"):
            if self._body is None:
                end = min(self.size, self.pos + max(self.window, len(buffer)))
                resp = self.client.get_object(
                    Bucket=self.bucket, Key=self.key, Range=f"bytes={self.pos}-{end - 1}", IfMatch=self.etag
                )
                self._body, self._body_end = resp["Body"], end
                self.requested += end - self.pos
                self.window = min(MAX_WINDOW, self.window * 2)
            data = self._body.read(min(len(buffer), self._body_end - self.pos))
        if not data:
            self._drop()
            raise BlobStoreUnavailable(f"the blob store ended {self.key} early; retry shortly")
        n = len(data)
        buffer[:n] = data
        self.pos += n
        if self.pos >= self._body_end:
            self._drop()
        return n

    def _drop(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None

    def close(self) -> None:
        self._drop()
        super().close()


class S3BlobStore:
    """Blobs as objects under `prefix` in `bucket`; staged files stay on local disk (`staging`)."""

    def __init__(
        self,
        *,
        client: Any,
        bucket: str,
        prefix: str,
        staging_dir: Path,
        part_size: int,
        create_bucket: bool = False,
    ) -> None:
        self.client, self.bucket, self.part_size = client, bucket, part_size
        self.prefix = f"{prefix}/" if prefix else ""
        self.create_bucket = create_bucket
        self._staging = staging_dir
        staging_dir.mkdir(parents=True, exist_ok=True)
        self._unaborted: list[tuple[str, str]] = []  # (object key, upload id) whose abort failed

    @classmethod
    def from_settings(cls, settings: Settings) -> S3BlobStore:
        import boto3
        from botocore.config import Config

        assert settings.blob_url
        bucket, prefix = parse_url(settings.blob_url)
        secret = settings.blob_secret_access_key
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.blob_endpoint_url,
            region_name=settings.blob_region,
            aws_access_key_id=settings.blob_access_key_id,
            aws_secret_access_key=secret.get_secret_value() if secret else None,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": settings.blob_max_attempts, "mode": "standard"},
                connect_timeout=settings.blob_timeout_s,
                read_timeout=settings.blob_timeout_s,
            ),
        )
        return cls(
            client=client,
            bucket=bucket,
            prefix=prefix,
            staging_dir=settings.blob_dir / "tmp",
            part_size=settings.blob_part_size_bytes,
            create_bucket=settings.blob_create_bucket,
        )

    def _key(self, key: str) -> str:
        return self.prefix + _check_key(key)

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            with _translate(f"looking up {key}"):
                head: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
                return head
        except FileNotFoundError:
            return None

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def modified(self, key: str) -> float | None:
        head = self._head(key)
        return None if head is None else head["LastModified"].timestamp()

    def open(self, key: str) -> BinaryIO:
        head = self._head(key)
        if head is None:
            raise FileNotFoundError(key)
        raw = _RangedReader(self.client, self.bucket, self._key(key), head["ContentLength"], head["ETag"])
        return io.BufferedReader(raw, buffer_size=64 << 10)

    def put_file(self, key: str, path: Path) -> None:
        """Upload the staged file and remove it (the local store moves it: same contract)."""
        obj = self._key(key)
        with _translate(f"storing {key}"):
            self._abort_leftovers()
            try:
                self._upload(obj, path)
            except Exception as exc:
                if not (self.create_bucket and _code(exc) == "NoSuchBucket"):
                    raise
                self.client.create_bucket(Bucket=self.bucket)
                self._upload(obj, path)
        path.unlink(missing_ok=True)

    def _upload(self, obj: str, path: Path) -> None:
        size = path.stat().st_size
        if size <= self.part_size:
            with path.open("rb") as fh:
                self.client.put_object(Bucket=self.bucket, Key=obj, Body=fh)
            return
        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=obj)["UploadId"]
        try:
            parts = []
            with path.open("rb") as fh:
                number = 1
                while chunk := fh.read(self.part_size):
                    got = self.client.upload_part(
                        Bucket=self.bucket, Key=obj, UploadId=upload_id, PartNumber=number, Body=chunk
                    )
                    parts.append({"PartNumber": number, "ETag": got["ETag"]})
                    number += 1
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=obj, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            self._abort(obj, upload_id)
            raise

    def _abort(self, obj: str, upload_id: str) -> bool:
        """Abort one multipart upload; when the store cannot be reached, remember it for later."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=obj, UploadId=upload_id)
        except Exception as exc:
            if _code(exc) != "NoSuchUpload":
                if (obj, upload_id) not in self._unaborted:
                    self._unaborted.append((obj, upload_id))
                return False
        return True

    def _abort_leftovers(self) -> int:
        pending, self._unaborted = self._unaborted, []
        return sum(self._abort(obj, upload_id) for obj, upload_id in pending)

    def clean_uploads(self, *, max_age_s: float) -> int:
        """Abort multipart uploads under the prefix begun more than `max_age_s` ago (left by a process that
        died mid-upload; a live one may run on another replica, hence the age), and this process's own."""
        cutoff = time.time() - max_age_s
        aborted = 0
        with _translate("listing unfinished uploads"):
            aborted += self._abort_leftovers()
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            for page in pages:
                for up in page.get("Uploads", []):
                    if up["Initiated"].timestamp() <= cutoff:
                        aborted += self._abort(up["Key"], up["UploadId"])
        return aborted

    def delete(self, key: str) -> None:
        with _translate(f"deleting {key}"):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def local_path(self, key: str) -> Path | None:
        return None

    def staging(self) -> Path:
        return self._staging

    def list(self, prefix: str) -> list[str]:
        base = self._key(prefix.strip("/")) + "/" if prefix.strip("/") else self.prefix
        out: list[str] = []
        with _translate(f"listing {prefix}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base)
            for page in pages:
                out.extend(obj["Key"][len(self.prefix) :] for obj in page.get("Contents", []))
        return sorted(out)


def _code(exc: BaseException) -> str | None:
    from botocore.exceptions import ClientError

    return str(exc.response.get("Error", {}).get("Code")) if isinstance(exc, ClientError) else None

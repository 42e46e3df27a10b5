"""gzip and zstd, streamed: the text container inside is read from a decompressing stream.

Every decompressed byte counts toward `max_bytes` (the upload limit), so a decompression bomb stops at the
limit with `file_too_large` after reading at most that much, never inflating the rest.
"""

from __future__ import annotations

import gzip
import io
import zlib
from typing import Any, BinaryIO

from app.datasets.records import RecordError

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
COMPRESSIONS = ("gz", "zst")


class _Zstd:
    """zstd frames, one after another, fed to the decompressor in small pieces: each piece can inflate to a
    few MiB at most, so memory stays bounded whatever the ratio, and a frame cut short is an error (the
    library's stream reader ends quietly on a truncated frame)."""

    PIECE = 512

    def __init__(self, src: BinaryIO) -> None:
        import zstandard

        self.src, self.zstd = src, zstandard
        self.obj = zstandard.ZstdDecompressor().decompressobj()
        self.fed = False  # the current frame has received input
        self.pending = b""

    def read(self, n: int) -> bytes:
        while not self.pending:
            piece = self.src.read(self.PIECE)
            if not piece:
                if self.fed and not self.obj.eof:
                    raise EOFError("the last zstd frame is truncated")
                return b""
            self._feed(piece)
        out, self.pending = self.pending[:n], self.pending[n:]
        return out

    def _feed(self, data: bytes) -> None:
        while data:
            self.fed = True
            self.pending += self.obj.decompress(data)
            if not self.obj.eof:
                return
            data = self.obj.unused_data
            self.obj = self.zstd.ZstdDecompressor().decompressobj()
            self.fed = False


class Decompressed(io.RawIOBase):
    """A raw stream of the decompressed bytes of `src`, refusing past `max_bytes` of output."""

    def __init__(self, src: BinaryIO, compression: str, max_bytes: int | None) -> None:
        self.max_bytes, self.count, self.compression = max_bytes, 0, compression
        self._inner: Any
        if compression == "gz":
            self._inner = gzip.GzipFile(fileobj=src, mode="rb")
        elif compression == "zst":
            self._inner = _Zstd(src)
        else:  # pragma: no cover - the registry of containers only names the two above
            raise ValueError(compression)

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        want = len(b)
        if self.max_bytes is not None:
            want = min(want, self.max_bytes - self.count + 1)  # one byte over the limit is enough to know
        try:
            data = self._inner.read(want)
        except (OSError, EOFError, zlib.error) as exc:
            raise self._corrupt(exc) from exc
        except Exception as exc:  # zstandard.ZstdError
            if type(exc).__name__ == "ZstdError":
                raise self._corrupt(exc) from exc
            raise
        n = len(data)
        self.count += n
        if self.max_bytes is not None and self.count > self.max_bytes:
            raise RecordError(
                "file_too_large",
                f"the file decompresses to more than {self.max_bytes} bytes",
                fatal=True,
            )
        b[:n] = data
        return n

    def _corrupt(self, exc: BaseException) -> RecordError:
        name = {"gz": "gzip", "zst": "zstd"}[self.compression]
        return RecordError(
            "invalid_compression",
            f"the {name} data is corrupt or truncated after {self.count} decompressed bytes: "
            f"{str(exc)[:120]}",
            fatal=True,
        )


def decompressed(src: BinaryIO, compression: str, max_bytes: int | None) -> io.BufferedReader:
    return io.BufferedReader(Decompressed(src, compression, max_bytes), buffer_size=1 << 20)

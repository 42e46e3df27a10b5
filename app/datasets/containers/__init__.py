"""Containers: how records are stored in a file. Detected from the first bytes (magic numbers), the file
name only breaking a tie (CSV); gzip and zstd wrap any text container and are streamed."""

from __future__ import annotations

import codecs
import io
import re
from collections.abc import Iterator
from typing import BinaryIO

from app.datasets.containers.compressed import COMPRESSIONS, GZIP_MAGIC, ZSTD_MAGIC, decompressed
from app.datasets.containers.parquet import PARQUET_MAGIC, read_parquet
from app.datasets.containers.text import read_csv, read_json_array, read_jsonl
from app.datasets.records import RawRecord, RecordError

TEXT_CONTAINERS = ("jsonl", "json", "csv")
CONTAINERS = (
    *TEXT_CONTAINERS,
    "parquet",
    *(f"{c}.{z}" for z in COMPRESSIONS for c in TEXT_CONTAINERS),
)
Container = str  # one of CONTAINERS
ZIP_MAGIC = b"PK\x03\x04"
DEFAULT_MAX_ROW_GROUP_BYTES = 128 << 20
_CSV_HEADER = re.compile(rb"^\s*[A-Za-z_][\w .-]*(\s*,\s*[A-Za-z_][\w .-]*)+\s*\r?$")


def sniff_text(head: bytes, filename: str | None = None) -> str | None:
    """JSON array, JSONL or CSV from the first bytes of text; CSV by name or by a header-like first line."""
    text = head.removeprefix(codecs.BOM_UTF8).lstrip()
    name = (filename or "").lower().removesuffix(".gz").removesuffix(".zst")
    if name.endswith(".csv"):
        return "csv"
    if text.startswith(b"["):
        return "json"
    if text.startswith(b"{"):
        return "jsonl"
    first = text.split(b"\n", 1)[0]
    if b"\0" not in first and _CSV_HEADER.match(first):
        return "csv"
    return None


def sniff_container(head: bytes, filename: str | None = None) -> str | None:
    """The container from magic bytes: Parquet, gzip or zstd ("gz"/"zst" until the inside is seen), else
    a text container, else None."""
    if head.startswith(PARQUET_MAGIC):
        return "parquet"
    if head.startswith(GZIP_MAGIC):
        return "gz"
    if head.startswith(ZSTD_MAGIC):
        return "zst"
    return sniff_text(head, filename)


def split(container: str) -> tuple[str, str | None]:
    """("jsonl", "gz") for "jsonl.gz"; ("parquet", None) for "parquet"."""
    inner, _, z = container.partition(".")
    return inner, z or None


def unsupported(head: bytes) -> RecordError:
    if head.startswith(ZIP_MAGIC):
        msg = "zip archives are not read: upload the file inside, or compress it with gzip or zstd"
    else:
        msg = (
            "cannot tell the container: expected JSONL, a JSON array, CSV (name the file .csv), Parquet, "
            "or one of the text containers compressed with gzip or zstd"
        )
    return RecordError("unsupported_format", msg, line=1, fatal=True)


def open_text(
    stream: io.BufferedReader, container: str | None, filename: str | None, max_bytes: int | None
) -> tuple[str, io.BufferedReader]:
    """Resolve a compressed container's inside: (full container name, stream of decompressed bytes)."""
    assert container is not None
    inner, z = split(container)
    if container in COMPRESSIONS:
        inner, z = "", container
    if z is None:
        return container, stream
    out = decompressed(stream, z, max_bytes)
    if not inner:
        head = out.peek(4096)[:4096]
        found = sniff_text(head, filename)
        if found is None:
            raise RecordError(
                "unsupported_format",
                f"the {'gzip' if z == 'gz' else 'zstd'} file does not hold JSONL, a JSON array or CSV",
                line=1,
                fatal=True,
            )
        inner = found
    return f"{inner}.{z}", out


def read_records(
    stream: BinaryIO,
    container: str,
    *,
    max_line_bytes: int,
    max_bytes: int | None = None,
    max_row_group_bytes: int = DEFAULT_MAX_ROW_GROUP_BYTES,
) -> Iterator[RawRecord | RecordError]:
    """Records of a file whose container is known. Parquet needs a seekable `stream`."""
    inner, z = split(container)
    if inner == "parquet":
        return read_parquet(stream, max_line_bytes=max_line_bytes, max_row_group_bytes=max_row_group_bytes)
    if z is not None:
        stream = decompressed(stream, z, max_bytes)
    readers = {"jsonl": read_jsonl, "json": read_json_array, "csv": read_csv}
    return readers[inner](stream, max_line_bytes=max_line_bytes)

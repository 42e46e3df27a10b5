"""Writers: the mirror of the readers, one per container, so a derived dataset (filtered, flagged,
augmented) goes back to the customer in the container it came in: CSV out for CSV in, Parquet for
Parquet, gzip or zstd around the same text container.

Each writer takes record values (what the reader yielded) and writes bytes to a sink; `stream` turns a
writer and an iterator of records into an iterator of byte chunks, flushing after every few records, so
memory is bounded by a batch (Parquet: one row group of `PARQUET_ROWS` rows), never by the file.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from app.datasets.containers.compressed import COMPRESSIONS

PARQUET_ROWS = 1024  # rows per row group written (well under the readers' row-group cap)
FLUSH_EVERY = 256  # text containers: records between two chunks handed to the response


@dataclass(frozen=True)
class Shape:
    """What a writer needs to know of the source besides its records: the CSV header (the reader's
    lower-cased names, in order) and the Parquet schema (a `pyarrow.Schema`), when the source has them."""

    columns: tuple[str, ...] | None = None
    schema: Any = None


class RecordWriter(Protocol):
    def write(self, value: Any) -> None: ...

    def close(self) -> None:
        """Write what ends the container (a JSON array's `]`, Parquet's footer); not the sink."""


class _Jsonl:
    def __init__(self, sink: BinaryIO, shape: Shape) -> None:
        self.sink = sink

    def write(self, value: Any) -> None:
        self.sink.write(json.dumps(value, ensure_ascii=False).encode() + b"\n")

    def close(self) -> None:
        pass


class _JsonArray:
    def __init__(self, sink: BinaryIO, shape: Shape) -> None:
        self.sink, self.first = sink, True
        sink.write(b"[")

    def write(self, value: Any) -> None:
        self.sink.write((b"\n" if self.first else b",\n") + json.dumps(value, ensure_ascii=False).encode())
        self.first = False

    def close(self) -> None:
        self.sink.write(b"\n]\n")


class _Csv:
    """A header row, then one row per record. Records are the reader's dicts of strings; the header is
    the source's (or the first record's keys), and a record must not carry other fields."""

    def __init__(self, sink: BinaryIO, shape: Shape) -> None:
        self.text = io.TextIOWrapper(sink, encoding="utf-8", newline="", write_through=True)
        self.writer = csv.writer(self.text)
        self.columns = list(shape.columns) if shape.columns else None
        if self.columns:
            self.writer.writerow(self.columns)

    def write(self, value: Any) -> None:
        if not isinstance(value, dict):
            raise ValueError("a CSV row must be an object of fields")
        if self.columns is None:
            self.columns = list(value)
            self.writer.writerow(self.columns)
        extra = set(value) - set(self.columns)
        if extra:
            raise ValueError(f"fields {sorted(extra)[:5]} are not columns of the CSV")
        self.writer.writerow(["" if value.get(c) is None else str(value.get(c)) for c in self.columns])

    def close(self) -> None:
        self.text.flush()
        self.text.detach()


class _Parquet:
    """Rows gathered into row groups of `PARQUET_ROWS`, each written as soon as it is full, in the
    source's schema (a field a record lacks is written null, as the reader dropped it)."""

    def __init__(self, sink: BinaryIO, shape: Shape) -> None:
        import pyarrow.parquet as pq

        if shape.schema is None:
            raise ValueError("a Parquet writer needs the source's schema")
        self.schema = shape.schema
        self.writer = pq.ParquetWriter(sink, self.schema)
        self.rows: list[Any] = []

    def write(self, value: Any) -> None:
        self.rows.append(value)
        if len(self.rows) >= PARQUET_ROWS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def close(self) -> None:
        self._flush()
        self.writer.close()


class _Compressed:
    """A text container's writer over a gzip or zstd stream (the compressor holds at most its own
    window; what it emits goes on with the next chunk)."""

    def __init__(self, inner: str, z: str, sink: BinaryIO, shape: Shape) -> None:
        self.z: Any
        if z == "gz":
            self.z = gzip.GzipFile(fileobj=sink, mode="wb", mtime=0)
        else:
            import zstandard

            self.z = zstandard.ZstdCompressor().stream_writer(sink, closefd=False)
        self.inner = TEXT_WRITERS[inner](self.z, shape)

    def write(self, value: Any) -> None:
        self.inner.write(value)

    def close(self) -> None:
        self.inner.close()
        self.z.close()


TEXT_WRITERS: dict[str, Callable[[Any, Shape], RecordWriter]] = {
    "jsonl": _Jsonl,
    "json": _JsonArray,
    "csv": _Csv,
}
WRITERS: dict[str, Callable[[Any, Shape], RecordWriter]] = {**TEXT_WRITERS, "parquet": _Parquet}

MEDIA_TYPES = {
    "jsonl": "application/x-ndjson",
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
    "gz": "application/gzip",
    "zst": "application/zstd",
}


def writer_for(container: str, sink: Any, shape: Shape) -> RecordWriter:
    """The writer of a container name as the readers know it ("csv", "jsonl.gz", "parquet", ...)."""
    inner, _, z = container.partition(".")
    if inner not in WRITERS or (z and (z not in COMPRESSIONS or inner not in TEXT_WRITERS)):
        raise ValueError(f"no writer for container {container!r}")
    if z:
        return _Compressed(inner, z, sink, shape)
    return WRITERS[inner](sink, shape)


def media_type(container: str) -> str:
    inner, _, z = container.partition(".")
    return MEDIA_TYPES[z or inner]


class _Chunks(io.RawIOBase):
    """A sink that keeps what is written until `take` hands it on."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.buf += b
        return len(b)

    def take(self) -> bytes:
        out = bytes(self.buf)
        self.buf.clear()
        return out


def stream(container: str, records: Iterable[Any], shape: Shape) -> Iterator[bytes]:
    """The records written in `container`, as byte chunks (a chunk every `FLUSH_EVERY` records, or
    every row group for Parquet)."""
    sink = _Chunks()
    w = writer_for(container, sink, shape)
    for n, value in enumerate(records, start=1):
        w.write(value)
        if n % FLUSH_EVERY == 0 and sink.buf:
            yield sink.take()
    w.close()
    if sink.buf:
        yield sink.take()


def write_file(container: str, records: Iterable[Any], shape: Shape, fh: BinaryIO) -> int:
    """The records written in `container` to an open file; returns how many."""
    w = writer_for(container, fh, shape)
    n = 0
    for value in records:
        w.write(value)
        n += 1
    w.close()
    return n

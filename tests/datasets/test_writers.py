"""The container writers are the readers' mirror: what a writer writes, the reader reads back as the same
records, in every container, and the bytes come out in chunks as records go in (never one buffer)."""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.datasets.containers import CONTAINERS, read_records, sniff_container, writers

pytestmark = pytest.mark.no_backend  # never reads SQL, Redis or the blob store

TRICKY = [
    {"instruction": 'quotes " and, commas', "input": "", "output": "line one\nline two\r\nthree"},
    {"instruction": "ünïcödé ✓ and a tab\t", "input": "x", "output": "=SUM(A1) is only text"},
]
NESTED = [
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo", "weight": 0}]},
    {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
]


def _read(data: bytes, container: str) -> list[Any]:
    out = []
    for item in read_records(io.BytesIO(data), container, max_line_bytes=1 << 20):
        assert not isinstance(item, Exception), item
        out.append(item.value)
    return out


@pytest.mark.parametrize("container", CONTAINERS)
def test_every_container_reads_back_what_was_written(container: str) -> None:
    shape = writers.Shape(schema=pa.Table.from_pylist(TRICKY).schema)
    data = b"".join(writers.stream(container, TRICKY, shape))
    inner, _, z = container.partition(".")
    assert sniff_container(data[:4096], f"x.{container}") == (z or inner)  # an upload would see it so
    assert _read(data, container) == TRICKY


def test_parquet_keeps_the_schema_and_fields_a_record_left_out() -> None:
    """The reader drops nulls (a `weight` only some messages have); written back in the source schema
    they come back as they were read."""
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(NESTED), buf)
    schema = pq.read_schema(io.BytesIO(buf.getvalue()))
    back = _read(buf.getvalue(), "parquet")
    assert back == NESTED
    data = b"".join(writers.stream("parquet", back, writers.Shape(schema=schema)))
    assert _read(data, "parquet") == NESTED
    assert pq.read_schema(io.BytesIO(data)) == schema


def test_output_is_streamed_in_chunks_and_parquet_in_row_groups() -> None:
    rows = [{"text": f"row {i} " + "x" * 50} for i in range(5 * writers.PARQUET_ROWS + 3)]
    schema = pa.Table.from_pylist(rows[:1]).schema
    # zstd hands on a block (128 KiB of input) at a time; the others every batch of records
    for container, least in (("parquet", 6), ("csv", 5), ("jsonl.zst", 2)):
        chunks = list(writers.stream(container, iter(rows), writers.Shape(schema=schema)))
        assert len(chunks) >= least, (container, len(chunks))
        assert _read(b"".join(chunks), container) == rows
    pf = pq.ParquetFile(io.BytesIO(b"".join(writers.stream("parquet", rows, writers.Shape(schema=schema)))))
    assert pf.metadata.num_row_groups == 6


def test_empty_sets_and_records_that_do_not_fit_the_container() -> None:
    assert b"".join(writers.stream("json", [], writers.Shape())) == b"[\n]\n"
    assert _read(b"".join(writers.stream("json", [], writers.Shape())), "json") == []
    with pytest.raises(ValueError, match="not columns"):
        list(writers.stream("csv", [{"a": "1"}, {"a": "2", "b": "3"}], writers.Shape()))
    with pytest.raises(ValueError, match="schema"):
        list(writers.stream("parquet", TRICKY, writers.Shape()))
    with pytest.raises(ValueError, match="no writer"):
        writers.writer_for("parquet.gz", io.BytesIO(), writers.Shape())

"""Containers: Parquet by row group, gzip and zstd streamed with the decompressed bytes capped, detection
by magic bytes, the CSV row bound, one line per JSON error, and the same data in four containers."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from app.datasets.validate import Limits
from tests.datasets.helpers import LIMITS, check, codes, examples, jsonl

pytestmark = pytest.mark.no_backend  # never reads SQL, Redis or the blob store

CHAT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!", "weight": 1},
    ]
}
PC = {"prompt": "What is 2+2?", "completion": "4"}


def parquet(records: list[dict[str, Any]], row_group_size: int = 2) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records), buf, row_group_size=row_group_size)
    return buf.getvalue()


def test_parquet_is_read_by_row_group_with_row_numbers() -> None:
    plain = {"messages": CHAT["messages"][1:]}  # no weight: a null in Parquet's one schema, dropped again
    data = parquet([CHAT, plain, CHAT, plain, CHAT])
    assert pq.ParquetFile(io.BytesIO(data)).metadata.num_row_groups == 3
    rep = check(data, filename="train.bin")  # detected by its magic bytes, not its name
    assert rep.ok, rep.errors
    assert (rep.container, rep.format, rep.examples) == ("parquet", "openai-chat", 5)
    got = examples(data, rep)
    assert got[1].messages == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    assert rep.stats["duplicates"] == 3


def test_parquet_errors_name_the_row() -> None:
    bad = {
        "messages": [{"role": "user", "content": "Hi", "weight": None}, {"role": "wizard", "content": "x"}]
    }
    rep = check(parquet([CHAT, CHAT, bad, CHAT]))
    assert codes(rep) == [(3, "unrecognized_role")] and rep.errors[0]["record"] == 3


def test_parquet_row_group_cap_and_corrupt_files() -> None:
    data = parquet([PC] * 10, row_group_size=5)
    small = Limits(
        max_bytes=1 << 20, max_examples=100, max_line_bytes=4096, max_errors=5, max_row_group_bytes=1 << 16
    )
    assert check(data, limits=small).ok
    tiny = Limits(
        max_bytes=1 << 20, max_examples=100, max_line_bytes=4096, max_errors=5, max_row_group_bytes=10
    )
    assert codes(check(data, limits=tiny)) == [(1, "row_group_too_large")]
    assert codes(check(b"PAR1" + b"\0" * 100)) == [(None, "invalid_parquet")]
    assert codes(check(data[: len(data) // 2])) == [(None, "invalid_parquet")]
    few = Limits(max_bytes=1 << 20, max_examples=7, max_line_bytes=4096, max_errors=5)
    assert codes(check(data, limits=few)) == [(8, "too_many_examples")]
    assert codes(
        check(data, limits=Limits(max_bytes=100, max_examples=10, max_line_bytes=4096, max_errors=5))
    ) == [(None, "file_too_large")]


def test_parquet_from_a_stream_that_cannot_seek() -> None:
    class Pipe(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.inner = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            return self.inner.readinto(b)

    from app.datasets.validate import validate_stream

    data = parquet([PC] * 3)
    sink = io.BytesIO()
    rep = validate_stream(Pipe(data), limits=LIMITS, sink=sink)  # type: ignore[arg-type]
    assert rep.ok and rep.examples == 3 and sink.getvalue() == data
    sink = io.BytesIO()  # a seekable upload is re-read in place; the stored copy is still byte for byte
    rep = validate_stream(io.BytesIO(data), limits=LIMITS, sink=sink)
    assert rep.ok and sink.getvalue() == data and rep.bytes == len(data)
    assert rep.sha256 == hashlib.sha256(data).hexdigest()


def zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


@pytest.mark.parametrize(("compress", "suffix"), [(gzip.compress, "gz"), (zst, "zst")])
def test_gzip_and_zstd_text_containers_are_streamed(compress: Any, suffix: str) -> None:
    for inner, data, name in [
        ("jsonl", jsonl(PC, CHAT, PC), "x.jsonl"),
        ("json", json.dumps([PC, PC]).encode(), "x.json"),
        ("csv", b"prompt,completion\na,b\nc,d\n", "upload"),
    ]:
        packed = compress(data)
        rep = check(packed, filename=name)
        if inner == "jsonl":
            assert codes(rep) == [(2, "missing_field")]  # lines are counted inside the compressed file
            continue
        assert rep.ok, (inner, rep.errors)
        assert rep.container == f"{inner}.{suffix}" and rep.bytes == len(packed)
        assert [e.messages for e in examples(packed, rep)] == [
            e.messages for e in examples(data, check(data))
        ]


@pytest.mark.parametrize(("compress", "name"), [(gzip.compress, "gzip"), (zst, "zstd")])
def test_corrupt_and_truncated_compressed_files(compress: Any, name: str) -> None:
    packed = compress(jsonl(*[PC] * 200))
    rep = check(packed[: len(packed) // 2])
    assert rep.errors[-1]["code"] == "invalid_compression" and name in rep.errors[-1]["message"]
    assert codes(check(compress(b"\0\1\2 binary"))) == [(1, "unsupported_format")]


@pytest.mark.parametrize("compress", [gzip.compress, zst])
def test_a_decompression_bomb_stops_at_the_limit(compress: Any) -> None:
    line = json.dumps(PC).encode() + b"\n"
    packed = compress(line * 200_000)  # ~8 MB inflated from a few KB
    limits = Limits(max_bytes=1 << 20, max_examples=10**6, max_line_bytes=4096, max_errors=5)
    rep = check(packed, limits=limits)
    assert len(packed) < 100_000
    assert codes(rep) == [(None, "file_too_large")] and "decompresses" in rep.errors[0]["message"]


def test_zip_is_refused_by_its_magic() -> None:
    rep = check(b"PK\x03\x04" + b"\0" * 40, filename="x.jsonl")
    assert codes(rep) == [(1, "unsupported_format")] and "zip" in rep.errors[0]["message"]


def test_csv_is_detected_from_a_header_without_the_name() -> None:
    rep = check(b"instruction,input,output\nAdd,2 and 2,4\n")
    assert rep.ok and (rep.container, rep.format) == ("csv", "alpaca")


def test_a_csv_row_of_many_fields_each_under_the_limit_is_refused() -> None:
    """Issue 10 finding 7: only each field was held to max_line_bytes, so a row of many big fields passed."""
    fields = ["prompt", "completion", *(f"c{i}" for i in range(10))]
    row = ["a", "b", *(["x" * 3000] * 10)]  # each field 3000 bytes < 4096; the row is ~30 KB
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(fields)
    w.writerow(["ok", "fine", *([""] * 10)])
    w.writerow(row)
    rep = check(buf.getvalue().encode(), filename="x.csv")
    assert codes(rep) == [(3, "line_too_long")], rep.errors
    assert "row" in rep.errors[0]["message"]
    quoted = b'prompt,completion\n"' + b"line\n" * 1000 + b'",b\n'  # one row over many physical lines
    assert codes(check(quoted, filename="x.csv")) == [(2, "line_too_long")]


def test_a_json_typo_reports_one_line() -> None:
    """Issue 13: "line 3" and "line 1 column 56" for the same error; now the line, and the column in it."""
    data = jsonl(PC, PC) + b'{"prompt": "x", "completion": }\n'
    rep = check(data)
    assert codes(rep) == [(3, "invalid_json")]
    assert "line" not in rep.errors[0]["message"] and "column 31" in rep.errors[0]["message"]
    arr = b'[\n{"prompt": "a", "completion": "b"},\n{"prompt": "a",\n "completion": }\n]'
    rep = check(arr)
    assert codes(rep) == [(4, "invalid_json")] and "line" not in rep.errors[0]["message"]


def test_the_same_data_in_four_containers_gives_the_same_examples_and_report() -> None:
    records = [
        {
            "instruction": "Summarise",
            "input": "A long text,\nwith a comma and a newline.",
            "output": "Short.",
        },
        {"instruction": "Translate «bonjour»", "input": "", "output": "hello"},
        {"instruction": "Add", "input": "2 and 2", "output": "4"},
        {"instruction": "Add", "input": "2 and 2", "output": "4"},
    ]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["instruction", "input", "output"])
    w.writeheader()
    w.writerows(records)
    files = {
        "jsonl": jsonl(*records),
        "json": json.dumps(records, ensure_ascii=False).encode(),
        "csv": buf.getvalue().encode(),
        "parquet": parquet(records),
    }
    reports = {c: check(data, filename=f"d.{c}") for c, data in files.items()}
    for c, rep in reports.items():
        assert rep.ok and rep.container == c and rep.format == "alpaca", (c, rep.errors)
    hashes = {c: [e.content_hash for e in examples(files[c], rep)] for c, rep in reports.items()}
    assert len({tuple(h) for h in hashes.values()}) == 1 and len(set(hashes["jsonl"])) == 3
    stats = [rep.stats for rep in reports.values()]
    assert all(s == stats[0] for s in stats) and stats[0]["duplicates"] == 1


class _BytesRepresenter:
    """A deterministic stand-in backend: a vector of byte counts of the screened text."""

    backend, identity, dim = "bytes", "bytes|test", 256

    def describe(self) -> dict[str, object]:
        return {"backend": self.backend}

    def encode(self, examples: Any, *, progress: Any = None) -> Any:
        import numpy as np

        out = np.zeros((len(examples), self.dim), dtype=np.float32)
        for i, ex in enumerate(examples):
            out[i] = np.bincount(np.frombuffer(ex.text.encode(), dtype=np.uint8), minlength=256)[:256] + 1
        if progress:
            progress(len(examples))
        return out


def test_the_four_containers_give_the_same_screening_report() -> None:
    from workers.screenings.screening import Params, Side, screen

    records = [
        {"prompt": f"Question {i}: list {i} steps", "completion": f"Step {i}, then more."} for i in range(12)
    ]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["prompt", "completion"])
    w.writeheader()
    w.writerows(records)
    files = {
        "jsonl": jsonl(*records),
        "json": json.dumps(records).encode(),
        "csv": buf.getvalue().encode(),
        "parquet": parquet(records, row_group_size=5),
    }
    chats = [
        {
            "messages": [
                {"role": "user", "content": r["prompt"]},
                {"role": "assistant", "content": "I will not."},
            ]
        }
        for r in records[:6]
    ]
    align = examples(jsonl(*chats), check(jsonl(*chats)))
    bodies = []
    for data in files.values():
        cust = examples(data, check(data, filename="d"))
        out = screen(
            customer=Side("customer", cust, "same"),
            alignment=Side("alignment", align, "a"),
            representer=_BytesRepresenter(),
            params=Params(subset_size=3),
        )
        body = {k: v for k, v in out.body.items() if k != "timings_s"}
        bodies.append(json.dumps(body, sort_keys=True, default=str))
    assert all(b == bodies[0] for b in bodies)
    assert '"excluded_turns": 0' in bodies[0] and '"trained_turns": 12' in bodies[0]

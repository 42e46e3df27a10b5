"""Parquet and compressed uploads through the API: stored as uploaded, read back for preview; and the
validate route stores nothing."""

from __future__ import annotations

import gzip
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from tests.conftest import stored_blobs, upload

RECORDS = [
    {
        "prompt": [{"role": "user", "content": f"Q{i}?"}],
        "completion": [{"role": "assistant", "content": f"A{i}."}],
    }
    for i in range(5)
]


def _parquet() -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(RECORDS), buf, row_group_size=2)
    return buf.getvalue()


def _jsonl() -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in RECORDS)


def test_parquet_gzip_and_zstd_uploads_are_stored_and_previewed(client) -> None:  # type: ignore[no-untyped-def]
    for name, data, container in [
        ("train.parquet", _parquet(), "parquet"),
        ("train.jsonl.gz", gzip.compress(_jsonl()), "jsonl.gz"),
        ("train", zstandard.ZstdCompressor().compress(_jsonl()), "jsonl.zst"),
    ]:
        r = upload(client, name, content=data)
        assert r.status_code == 201, (name, r.text)
        ds = r.json()
        assert (ds["container"], ds["format"], ds["examples"], ds["bytes"]) == (
            container,
            "prompt-completion",
            5,
            len(data),
        )
        p = client.get(f"/v1/datasets/{ds['id']}/preview?limit=3")
        assert p.status_code == 200, p.text
        rows = p.json()["data"]
        assert [row["record"] for row in rows] == [1, 2, 3]
        assert rows[2]["messages"][-1]["content"] == "A2."


def test_a_parquet_error_names_its_row(client) -> None:  # type: ignore[no-untyped-def]
    bad = [
        *RECORDS[:3],
        {"prompt": [{"role": "user", "content": ""}], "completion": RECORDS[0]["completion"]},
    ]
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(bad), buf, row_group_size=2)
    r = upload(client, "bad.parquet", content=buf.getvalue())
    assert r.status_code == 422
    first = r.json()["error"]["details"]["errors"][0]
    assert (first["line"], first["record"], first["code"], first["field"]) == (
        4,
        4,
        "empty_content",
        "prompt[0].content",
    )


def test_validate_stores_nothing(client, settings) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/v1/datasets/validate", files={"file": ("t.parquet", _parquet())})
    assert r.status_code == 200 and r.json()["valid"] is True and r.json()["container"] == "parquet"
    assert client.get("/v1/datasets").json()["data"] == []
    assert stored_blobs(settings) == []

"""The S3 blob store against a real SeaweedFS server: keys, round trips, ranged reads, multipart uploads,
listing and deletion, the orphan sweep, and a store that cannot be reached (503, nothing stored)."""

from __future__ import annotations

import io
import os
import time

import pytest

from app.core.storage import dataset_key
from app.core.storage_s3 import MIN_WINDOW, S3BlobStore, parse_url
from tests.storage.conftest import PART, stage
from tests.storage.weed import BUCKET, SECRET_KEY


def _objects(s3, prefix: str) -> list[str]:  # type: ignore[no-untyped-def]
    got = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for o in got.get("Contents", []))


def _pending(s3, prefix: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [u["Key"] for u in s3.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix).get("Uploads", [])]


def test_url_parsing() -> None:
    assert parse_url("s3://bucket/a/b/") == ("bucket", "a/b")
    assert parse_url("s3://bucket") == ("bucket", "")
    for bad in ("http://bucket/x", "s3:///x", "s3://bucket/x?y=1"):
        with pytest.raises(ValueError):
            parse_url(bad)


def test_round_trip_under_the_prefix(store: S3BlobStore, s3) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(store, S3BlobStore) and store.local_path("x/y") is None
    key = dataset_key("ab" + "0" * 62)
    staged = stage(store, b"hello\nworld\n")
    before = time.time()
    store.put_file(key, staged)
    assert not staged.exists()  # consumed, as the local store's rename does
    assert _objects(s3, store.prefix) == [store.prefix + key]  # content-addressed key under the prefix
    assert store.exists(key) and not store.exists(key + "x")
    with store.open(key) as fh:
        assert fh.read() == b"hello\nworld\n"
    with store.open(key) as fh:
        assert list(fh) == [b"hello\n", b"world\n"]
    modified = store.modified(key)
    assert modified is not None and abs(modified - before) < 60
    assert store.modified("datasets/none") is None
    with pytest.raises(FileNotFoundError):
        store.open("datasets/none")
    with pytest.raises(ValueError):
        store.exists("../escape")


def test_ranged_reads_and_seeks_fetch_only_what_is_read(store: S3BlobStore) -> None:
    data = os.urandom(3 * MIN_WINDOW + 12345)
    store.put_file("blobs/r", stage(store, data))
    with store.open("blobs/r") as fh:
        assert fh.seekable()
        fh.seek(-8, io.SEEK_END)  # a Parquet footer
        assert fh.read() == data[-8:]
        fh.seek(1000)
        assert fh.read(10) == data[1000:1010]
        assert fh.tell() == 1010
        fh.seek(5, io.SEEK_CUR)
        assert fh.read(3) == data[1015:1018]
        raw = fh.raw  # type: ignore[attr-defined]
        assert raw.requested <= 2 * MIN_WINDOW  # two short ranges, never the object
        fh.seek(0)
        assert fh.read() == data  # then a sequential read: growing windows, all bytes right
    with store.open("blobs/r") as fh:
        fh.read(100)
        assert fh.raw.requested == MIN_WINDOW  # type: ignore[attr-defined]


def test_big_file_goes_up_in_parts_and_comes_back_whole(store: S3BlobStore, s3) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(20_000_000)
    t = time.monotonic()
    store.put_file("blobs/big", stage(store, data))
    up = time.monotonic() - t
    head = s3.head_object(Bucket=BUCKET, Key=store.prefix + "blobs/big")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith(f"-{-(-len(data) // PART)}")  # a multipart object, 4 parts
    assert _pending(s3, store.prefix) == []
    t = time.monotonic()
    with store.open("blobs/big") as fh:
        assert fh.read() == data
    print(f"20 MB: up {up:.2f} s in {PART >> 20} MiB parts, down {time.monotonic() - t:.2f} s")


def test_a_failed_multipart_upload_is_aborted(store: S3BlobStore, s3, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    real = store.client.upload_part
    calls = []

    def flaky(**kw):  # type: ignore[no-untyped-def]
        calls.append(kw["PartNumber"])
        if kw["PartNumber"] == 2:
            raise ConnectionResetError("cut")
        return real(**kw)

    monkeypatch.setattr(store.client, "upload_part", flaky)
    with pytest.raises(ConnectionResetError):
        store.put_file("blobs/cut", stage(store, os.urandom(PART + 10)))
    assert calls == [1, 2]
    assert _objects(s3, store.prefix) == [] and _pending(s3, store.prefix) == []


def test_list_delete_and_the_orphan_sweep(client, store: S3BlobStore, s3) -> None:  # type: ignore[no-untyped-def]
    from app.datasets.service import remove_orphan_blobs

    for key in ("a/1", "a/2/3", "b/1"):
        store.put_file(key, stage(store, b"x"))
    assert store.list("a") == ["a/1", "a/2/3"] and store.list("a/") == ["a/1", "a/2/3"]
    assert store.list("zzz") == []
    store.delete("a/1")
    store.delete("a/1")  # deleting a missing key is no error
    assert store.list("a") == ["a/2/3"]

    services = client.app.state.ftguard.services
    assert services.store.prefix == store.prefix  # the app runs on this S3 prefix
    orphan = dataset_key("cd" * 32)
    store.put_file(orphan, stage(store, b"{}\n"))  # bytes whose dataset row never came
    assert remove_orphan_blobs(services=services, min_age_s=3600) == 0  # young: may be an upload
    assert remove_orphan_blobs(services=services, min_age_s=0) == 1
    assert not store.exists(orphan)


def test_parquet_upload_preview_and_delete_through_the_api(client, settings, s3) -> None:  # type: ignore[no-untyped-def]
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": f"question {i} " + "pad " * 400, "completion": f"answer {i}"} for i in range(3000)]
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf, row_group_size=100, compression="none")
    data = buf.getvalue()
    assert len(data) > 4 * MIN_WINDOW
    r = client.post("/v1/datasets", files={"file": ("t.parquet", data)}, data={"purpose": "fine-tune"})
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["container"] == "parquet" and ds["examples"] == 3000
    store = client.app.state.ftguard.services.store
    key = store.prefix + dataset_key(ds["sha256"])
    assert _objects(s3, store.prefix) == [key]
    assert [p for p in settings.blob_dir.rglob("*") if p.is_file()] == []  # nothing on local disk

    readers = []
    real_open = store.open

    def spy(k):  # type: ignore[no-untyped-def]
        fh = real_open(k)
        readers.append(fh.raw)
        return fh

    store.open = spy
    try:
        p = client.get(f"/v1/datasets/{ds['id']}/preview")
    finally:
        del store.open
    assert p.status_code == 200, p.text
    assert [row["messages"][0]["content"].split(" pad")[0] for row in p.json()["data"]] == [
        f"question {i}" for i in range(5)
    ]
    assert readers and sum(r.requested for r in readers) < len(data) / 2  # footer + first row group

    assert client.delete(f"/v1/datasets/{ds['id']}").status_code == 204
    assert _objects(s3, store.prefix) == []


def test_an_unreachable_store_answers_503_and_keeps_nothing(settings, client_factory) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import func, select

    from app.models import Dataset
    from tests.storage.weed import free_ports

    dead = settings.model_copy(
        update={"blob_endpoint_url": f"http://127.0.0.1:{free_ports(1)[0]}", "blob_max_attempts": 1}
    )
    with client_factory(dead) as c:
        r = c.post("/v1/datasets", files={"file": ("t.jsonl", b'{"text": "hi"}\n')})
        assert r.status_code == 503, r.text
        err = r.json()["error"]
        assert err["type"] == "service_unavailable_error" and err["code"] == "blob_store_unavailable"
        assert SECRET_KEY not in r.text
        with c.app.state.ftguard.services.db.session() as s:
            assert s.scalar(select(func.count()).select_from(Dataset)) == 0
    assert list((dead.blob_dir / "tmp").iterdir()) == []  # the staged file went too
    assert SECRET_KEY not in repr(dead) and SECRET_KEY not in str(dead.model_dump())

"""Uploads are bounded per tenant (issue 10, finding 7: concurrent uploads, stored bytes), and a shared
blob survives a delete that races another tenant's upload of the same bytes (finding 8)."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import func, select

from app.core.storage import dataset_key
from app.models import Dataset, UploadLease, new_id, now
from tests.api.test_errors import assert_envelope
from tests.conftest import DEMO, upload

DATA = (DEMO / "customer_benign_lists.jsonl").read_bytes()


def _settings(client: Any) -> Any:
    return client.app.state.ftguard.settings


def test_storage_quota_per_tenant(client, other_client, settings) -> None:
    _settings(client).max_tenant_storage_bytes = int(len(DATA) * 1.5)
    first = upload(client, "a.jsonl", content=DATA)
    assert first.status_code == 201
    r = upload(client, "b.jsonl", content=DATA)  # the same bytes count again: no cross-tenant dedup oracle
    assert r.status_code == 413, r.text
    assert_envelope(r.json(), "storage_quota_exceeded")
    assert list((settings.blob_dir / "tmp").iterdir()) == []
    assert upload(other_client, "b.jsonl", content=DATA).status_code == 201  # its own quota
    assert client.delete(f"/v1/datasets/{first.json()['id']}").status_code == 204
    assert upload(client, "b.jsonl", content=DATA).status_code == 201  # room again


def test_concurrent_uploads_per_tenant_are_bounded(client, other_client) -> None:
    s = _settings(client)
    s.max_concurrent_uploads = 2
    db = client.app.state.ftguard.services.db
    with db.session() as session:  # two uploads of this tenant in flight (on any replica)
        session.add_all([UploadLease(id=new_id("upl"), tenant_id="test", started_at=now()) for _ in range(2)])
        session.commit()
    r = upload(client, "a.jsonl", content=DATA)
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert_envelope(r.json(), "too_many_concurrent_uploads")
    assert upload(other_client, "a.jsonl", content=DATA).status_code == 201
    with db.session() as session:  # their process died long ago: the slots are freed
        session.execute(UploadLease.__table__.update().values(started_at=now() - s.upload_lease_s - 1))
        session.commit()
    assert upload(client, "a.jsonl", content=DATA).status_code == 201
    with db.session() as session:  # and a finished upload gives its slot back
        assert session.scalar(select(func.count()).select_from(UploadLease)) == 0


def test_uploads_in_parallel_threads_never_pass_the_bound(client, monkeypatch) -> None:
    s = _settings(client)
    s.max_concurrent_uploads = 1
    from app.datasets import service

    inside, release = threading.Event(), threading.Event()
    real = service.validate_stream

    def slow_validation(*a: Any, **kw: Any) -> Any:  # the first upload holds its slot until released
        if not inside.is_set():
            inside.set()
            release.wait(10)
        return real(*a, **kw)

    monkeypatch.setattr(service, "validate_stream", slow_validation)
    out: dict[str, Any] = {}
    t = threading.Thread(target=lambda: out.update(first=upload(client, "a.jsonl", content=DATA)))
    t.start()
    assert inside.wait(10)
    second = upload(client, "b.jsonl", content=DATA + b'{"prompt": "x", "completion": "y"}\n')
    release.set()
    t.join()
    assert out["first"].status_code == 201
    assert second.status_code == 429 and second.json()["error"]["code"] == "too_many_concurrent_uploads"


def test_delete_racing_another_tenants_upload_of_the_same_bytes_keeps_the_blob(
    client, other_client, monkeypatch
) -> None:
    """Tenant A deletes its dataset while tenant B uploads the same bytes. B's upload has placed the blob
    and not yet committed its row when A's delete runs: the old code removed the file then, and B's 201
    pointed at nothing. Two real clients on the running app, in two threads."""
    mine = upload(client, "a.jsonl", content=DATA).json()
    store = client.app.state.ftguard.services.store
    key = dataset_key(mine["sha256"])
    placed, deleted = threading.Event(), threading.Event()
    real = store.put_file

    def put_then_pause(k: str, path: Any) -> None:
        real(k, path)
        if k == key and not placed.is_set():
            placed.set()  # B's bytes are in place, its row not yet committed
            deleted.wait(3)  # let A's delete run now (or give up if it waits on B's lock)

    monkeypatch.setattr(store, "put_file", put_then_pause)
    out: dict[str, Any] = {}

    def b_uploads() -> None:
        out["b"] = upload(other_client, "same.jsonl", content=DATA)

    def a_deletes() -> None:
        assert placed.wait(10)
        out["a"] = client.delete(f"/v1/datasets/{mine['id']}")
        deleted.set()

    threads = [threading.Thread(target=b_uploads), threading.Thread(target=a_deletes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out["a"].status_code == 204 and out["b"].status_code == 201
    theirs = out["b"].json()
    assert theirs["sha256"] == mine["sha256"]
    assert store.exists(key), "the delete removed a blob another tenant's new dataset points at"
    r = other_client.get(f"/v1/datasets/{theirs['id']}/preview")
    assert r.status_code == 200 and r.json()["data"]
    # and once nobody uses the bytes, the delete does remove them (after its commit, re-checked)
    assert other_client.delete(f"/v1/datasets/{theirs['id']}").status_code == 204
    assert not store.exists(key)
    with client.app.state.ftguard.services.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Dataset)) == 0

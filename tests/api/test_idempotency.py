"""Idempotency-Key on every POST: a retry gets the first result and creates nothing new."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from app.models import ApiKey, Dataset, IdempotencyRecord, Screening
from tests.api.test_errors import assert_envelope
from tests.conftest import DEMO, upload


def _count(client, model) -> int:
    with client.app.state.ftguard.services.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def _key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


def test_upload_retried_with_the_same_key_returns_the_first_dataset(client, settings) -> None:
    key = _key()
    data = (DEMO / "customer_benign_lists.jsonl").read_bytes()
    first = client.post(
        "/v1/datasets", files={"file": ("c.jsonl", data)}, data={"purpose": "fine-tune"}, headers=key
    )
    assert first.status_code == 201
    # a new multipart boundary, the same content: the same request
    again = client.post(
        "/v1/datasets", files={"file": ("c.jsonl", data)}, data={"purpose": "fine-tune"}, headers=key
    )
    assert again.status_code == 201 and again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert _count(client, Dataset) == 1
    staged = [p for p in (settings.blob_dir / "tmp").iterdir()]
    assert staged == []
    # the same key with other content is refused, not silently replayed
    other = client.post(
        "/v1/datasets",
        files={"file": ("c.jsonl", data[:-200] + b"\n")},
        data={"purpose": "alignment"},
        headers=key,
    )
    assert other.status_code == 422
    assert_envelope(other.json(), "idempotency_key_reused")
    assert _count(client, Dataset) == 1


def test_screening_create_and_cancel_are_idempotent(client) -> None:
    cust = upload(client, DEMO / "customer_benign_lists.jsonl").json()["id"]
    align = upload(client, DEMO / "alignment.jsonl", purpose="alignment").json()["id"]
    key = _key()
    body = {"dataset_id": cust, "alignment_dataset_id": align, "top_k": 3}
    a = client.post("/v1/screenings", json=body, headers=key)
    # key order and whitespace do not make a different request
    b = client.post(
        "/v1/screenings",
        content=b'{"top_k": 3,  "alignment_dataset_id": "%s", "dataset_id": "%s"}'
        % (align.encode(), cust.encode()),
        headers={**key, "content-type": "application/json"},
    )
    assert a.status_code == b.status_code == 201 and a.json()["id"] == b.json()["id"]
    assert _count(client, Screening) == 1
    assert client.post("/v1/screenings", json={**body, "top_k": 4}, headers=key).status_code == 422

    ck = _key()
    c1 = client.post(f"/v1/screenings/{a.json()['id']}/cancel", headers=ck)
    c2 = client.post(f"/v1/screenings/{a.json()['id']}/cancel", headers=ck)
    assert c1.status_code == c2.status_code == 200 and c1.json() == c2.json()
    # without a key, a second cancel is the usual conflict
    assert client.post(f"/v1/screenings/{a.json()['id']}/cancel").status_code == 409


def test_errors_are_not_stored_so_a_retry_runs_again(client) -> None:
    key = _key()
    bad = client.post(
        "/v1/screenings", json={"dataset_id": "ds_nope", "alignment_dataset_id": "ds_x"}, headers=key
    )
    assert bad.status_code == 404
    assert _count(client, IdempotencyRecord) == 0
    cust = upload(client, DEMO / "customer_benign_lists.jsonl").json()["id"]
    # the same key now with a valid request: it runs
    align = upload(client, DEMO / "alignment.jsonl", purpose="alignment").json()["id"]
    ok = client.post("/v1/screenings", json={"dataset_id": cust, "alignment_dataset_id": align}, headers=key)
    assert ok.status_code == 201


def test_a_retry_while_the_first_request_still_runs_is_409_and_a_dead_claim_is_taken_over(client) -> None:
    cust = upload(client, DEMO / "customer_benign_lists.jsonl").json()["id"]
    key = _key()
    first = client.post(f"/v1/datasets/{cust}/preview", headers=key)  # GET only: not idempotency-checked
    assert first.status_code == 405
    body = {"dataset_id": cust, "alignment_dataset_id": cust}
    r = client.post("/v1/screenings", json=body, headers=key)
    assert r.status_code == 400  # wrong purpose: an error, so released
    align = upload(client, DEMO / "alignment.jsonl", purpose="alignment").json()["id"]
    body = {"dataset_id": cust, "alignment_dataset_id": align}
    done = client.post("/v1/screenings", json=body, headers=key)
    assert done.status_code == 201
    db = client.app.state.ftguard.services.db
    with db.session() as s:  # as if the first request were still being processed
        s.execute(IdempotencyRecord.__table__.update().values(state="in_progress"))
        s.commit()
    r = client.post("/v1/screenings", json=body, headers=key)
    assert r.status_code == 409
    assert_envelope(r.json(), "idempotency_key_in_use")
    with db.session() as s:  # ... whose process died long ago: the claim is given up
        s.execute(IdempotencyRecord.__table__.update().values(created_at=IdempotencyRecord.created_at - 3600))
        s.commit()
    r = client.post("/v1/screenings", json=body, headers=key)
    assert r.status_code == 201 and r.json()["id"] != done.json()["id"]


def test_keys_are_scoped_to_the_tenant(client, other_client) -> None:
    key = _key()
    a = client.post(
        "/v1/datasets",
        files={"file": ("c.jsonl", (DEMO / "customer_benign_lists.jsonl").read_bytes())},
        data={"purpose": "fine-tune"},
        headers=key,
    )
    b = other_client.post(
        "/v1/datasets",
        files={"file": ("c.jsonl", (DEMO / "customer_benign_lists.jsonl").read_bytes())},
        data={"purpose": "fine-tune"},
        headers=key,
    )
    assert a.status_code == b.status_code == 201 and a.json()["id"] != b.json()["id"]
    assert "idempotent-replayed" not in b.headers


def test_a_replayed_key_creation_never_shows_the_secret_again(client, admin_client) -> None:
    key = _key()
    first = admin_client.post("/v1/admin/keys", json={"tenant_id": "test", "name": "x"}, headers=key)
    again = admin_client.post("/v1/admin/keys", json={"tenant_id": "test", "name": "x"}, headers=key)
    assert first.status_code == again.status_code == 201
    assert first.json()["key"].startswith("ftg_") and again.json()["key"] is None
    assert {k: v for k, v in first.json().items() if k != "key"} == {
        k: v for k, v in again.json().items() if k != "key"
    }
    with client.app.state.ftguard.services.db.session() as s:
        stored = s.scalar(select(IdempotencyRecord.response_body))
        assert first.json()["key"] not in stored
        assert s.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.name == "x")) == 1


def test_invalid_keys_are_rejected(client) -> None:
    # a 400 naming the header, before the body is looked at (every POST: tests/api/test_idempotency_walk.py)
    for bad in ("has space", "x" * 300, ""):
        r = client.post("/v1/screenings", json={}, headers={"Idempotency-Key": bad})
        assert r.status_code == 400, bad
        assert_envelope(r.json(), "invalid_idempotency_key")

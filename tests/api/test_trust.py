"""Regression tests of issue 10 (a hostile tenant's request sequences), one or more per finding: each one
failed on the code before the fix."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app.core.storage import scores_key
from tests.conftest import DEMO, bearer, client_as, make_key, upload

# ---------------------------------------------------------------- 1. scope bypass through the customer side


def test_the_provider_alignment_set_cannot_be_screened_as_the_customer(client) -> None:
    """A key without alignment:read uploads a probe as `alignment` and names the provider's alignment (or
    anchor) set as the customer: its texts would come back in the report's customer examples."""
    provider_align = upload(client, DEMO / "alignment.jsonl", purpose="alignment").json()["id"]
    anchors = upload(client, DEMO / "anchors_harmful.jsonl", purpose="harmful-anchors").json()["id"]
    viewer = client_as(client, "test", scopes=[])
    probe = upload(viewer, DEMO / "customer_benign_lists.jsonl", purpose="alignment").json()["id"]
    for victim in (provider_align, anchors):
        r = viewer.post("/v1/screenings", json={"dataset_id": victim, "alignment_dataset_id": probe})
        assert r.status_code == 400, r.text
        assert r.json()["error"] | {"message": ""} == {
            "message": "",
            "type": "invalid_request_error",
            "param": "dataset_id",
            "code": "wrong_purpose",
        }
        cands = [{"name": n, "alignment_dataset_id": probe} for n in "ab"]
        r = viewer.post("/v1/rankings", json={"dataset_id": victim, "candidates": cands})
        assert r.status_code == 400 and r.json()["error"]["code"] == "wrong_purpose", r.text
    assert viewer.get("/v1/screenings").json()["data"] == []
    # and the provider's sets show no name or hash to that key
    got = viewer.get(f"/v1/datasets/{provider_align}").json()
    assert got["filename"] is None and got["sha256"] is None
    listed = {d["id"]: d for d in viewer.get("/v1/datasets").json()["data"]}
    assert listed[anchors]["filename"] is None and listed[probe]["filename"] is None
    assert client.get(f"/v1/datasets/{provider_align}").json()["filename"] == "alignment.jsonl"


# ---------------------------------------------------------------- 2. experiments share one vector cache


@pytest.fixture
def tiny(tiny_llama: str, settings: Any) -> str:
    settings.models["tiny-llama"] = tiny_llama
    settings.models["gone"] = "/no/such/model"  # a base model that fails to load: the run stops after select
    return "tiny-llama"


def _select_only(c: Any, tiny: str) -> str:
    cust = upload(c, DEMO / "customer_harmful_looking.jsonl").json()["id"]
    align = upload(c, DEMO / "alignment.jsonl", purpose="alignment").json()["id"]
    body = {
        "base_model": "gone",
        "alignment": {
            "dataset_id": align,
            "selection": "low_sim",
            "size": 4,
            "representation": {"backend": "causal-lm", "model": tiny, "max_length": 32},
        },
        "fine_tune": {"dataset_id": cust, "max_examples": 8},
    }
    r = c.post("/v1/experiments", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _cache_messages(c: Any, exp_id: str) -> list[str]:
    evs = c.get(f"/v1/experiments/{exp_id}/events", params={"limit": 500}).json()["data"]
    assert any(e["type"] == "stage.select.succeeded" for e in evs), [e["message"] for e in evs]
    return [e["message"] for e in evs if "from cache" in e["message"]]


def test_tenant_b_cannot_learn_from_its_own_experiment_events_that_tenant_a_holds_given_texts(
    client, other_client, run_worker, tiny, one_thread
) -> None:
    a = _select_only(client, tiny)
    run_worker()
    # A first-ever run: its only hits are vectors the select stage stored itself a moment earlier (the
    # feature screening reads back the subset the selection pass represented).
    first = _cached(_cache_messages(client, a))
    b = _select_only(other_client, tiny)  # the same texts, in another tenant
    run_worker()
    assert _cached(_cache_messages(other_client, b)) == first  # nothing of A's (was 68 alignment vectors)
    again = _select_only(other_client, tiny)  # within one tenant the cache still works
    run_worker()
    assert _cached(_cache_messages(other_client, again)) > first


def _cached(messages: list[str]) -> int:
    """The tenant's own texts read from the cache, summed over "alignment|customer: N vectors from cache"
    (the bundled anchors sit in the cache every tenant shares, by design: they are not tenant data)."""
    own = [m for m in messages if m.split(":", 1)[0] in ("alignment", "customer")]
    return sum(int(m.split(": ", 1)[1].split()[0]) for m in own)


def test_a_vector_cache_always_has_a_tenant(settings) -> None:
    from app.core.services import build_services
    from workers.cache import VectorCache

    services = build_services(settings)
    try:
        with pytest.raises(ValueError, match="namespace"):
            VectorCache(services.store, "")
    finally:
        services.close()


# ---------------------------------------------------------------- 3. tenants chose any local model path


def test_requests_name_models_from_the_registry_only(client, settings, tiny_llama) -> None:
    settings.models["tiny-llama"] = tiny_llama
    settings.judge_base_url = "http://judge.invalid/v1"
    settings.judge_model = "provider-judge"
    cust = upload(client, DEMO / "customer_harmful_looking.jsonl").json()["id"]
    align = upload(client, DEMO / "alignment.jsonl", purpose="alignment").json()["id"]
    scr = {"dataset_id": cust, "alignment_dataset_id": align}
    for over, param in (
        ({"model": tiny_llama}, "model"),
        ({"model": "/etc"}, "model"),
        ({"anchor_model": "/models/provider-private"}, "anchor_model"),
    ):
        r = client.post("/v1/screenings", json=scr | over)
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["code"] == "unknown_model" and err["param"] == param
        sent = next(iter(over.values()))
        assert tiny_llama not in r.text.replace(sent, "")  # it echoes what was sent, never a registered path
    r = client.post(
        "/v1/screenings", json=scr | {"backend": "causal-lm", "model": "tiny-llama", "max_length": 4096}
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "limit_exceeded"
    assert (
        client.post("/v1/screenings", json=scr | {"model": "tiny-llama", "backend": "causal-lm"}).status_code
        == 201
    )
    cands = [
        {"name": "a", "alignment_dataset_id": align, "model": "/x"},
        {"name": "b", "alignment_dataset_id": align},
    ]
    r = client.post("/v1/rankings", json={"dataset_id": cust, "candidates": cands})
    assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_model"

    exp = {"base_model": "tiny-llama", "alignment": {"dataset_id": align}, "fine_tune": {"dataset_id": cust}}
    for over, param in (
        ({"base_model": tiny_llama}, "base_model"),
        (
            {"alignment": {"dataset_id": align, "representation": {"model": "/srv/m"}}},
            "alignment.representation.model",
        ),
        ({"judges": [{"type": "classifier", "model": "/srv/guard"}]}, "judges[0].model"),
        ({"judges": [{"type": "llm", "model": "gpt-expensive"}]}, "judges[0].model"),
    ):
        r = client.post("/v1/experiments", json=exp | over)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "unknown_model" and r.json()["error"]["param"] == param
    r = client.post("/v1/experiments", json=exp | {"training": {"max_length": 32768}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "training.max_length"
    assert client.post("/v1/experiments", json=exp).status_code == 201
    assert client.post("/v1/experiments", json=exp | {"judges": [{"type": "llm"}]}).status_code == 201

    models = client.get("/v1/models").json()["data"]
    assert {m["id"] for m in models} == {
        "bundled:all-minilm-l6-v2",
        "bundled:smollm2-135m-instruct",
        "tiny-llama",
    }
    assert tiny_llama not in json.dumps(models)


def test_a_new_max_length_neither_reloads_nor_evicts_a_model(settings, tiny_llama) -> None:
    from workers.runtime import Runtime

    settings.models["tiny-llama"] = tiny_llama
    settings.max_length_limit = 1 << 16
    models: dict[Any, Any] = {}
    rt = Runtime(settings, models=models)
    base = {"backend": "causal-lm", "model": "tiny-llama"}
    first = rt.representer(base | {"max_length": 48})
    views = [rt.representer(base | {"max_length": n, "layer": 1}) for n in (16, 64, 100_000)]
    assert len(models) == 1 and all(v.model is first.model for v in views)  # one copy of the weights
    assert [v.max_length for v in views] == [16, 64, 1024]  # the model's context caps a request
    assert len({v.identity for v in (first, *views)}) == 4  # each still caches under its own identity
    rt.services.close()


# ---------------------------------------------------------------- 9. smaller ones


def test_an_admin_key_replay_is_not_served_to_a_member(client) -> None:
    admin = client_as(client, "ops", role="admin")
    member = client_as(client, "ops")
    headers = {"Idempotency-Key": "mint-admin-key-1"}
    body = {"tenant_id": "ops", "role": "admin", "name": "break-glass"}
    first = admin.post("/v1/admin/keys", json=body, headers=headers)
    assert first.status_code == 201 and first.json()["key"]
    r = member.post("/v1/admin/keys", json=body, headers=headers)
    assert r.status_code == 403 and r.json()["error"]["code"] == "admin_required", r.text
    assert admin.post("/v1/admin/keys", json=body, headers=headers).json()["id"] == first.json()["id"]


def _cookie_flags(app: Any, key: str, *, peer: str, **headers: str) -> str:
    c = TestClient(app, client=(peer, 40000), follow_redirects=False)
    r = c.post("/dashboard/sign-in", data={"key": key}, headers=headers)
    assert r.status_code == 303, r.text
    return r.headers["set-cookie"].lower().replace(" ", "")


def test_the_sign_in_cookie_is_secure_behind_a_trusted_tls_proxy(client, settings) -> None:
    key = make_key(client.app.state.ftguard.services.db, "test")
    https = {"X-Forwarded-Proto": "https"}
    assert ";secure" not in _cookie_flags(client.app, key, peer="10.1.2.3", **https)  # nobody trusted yet
    settings.trusted_proxies = ["10.0.0.0/8"]
    assert ";secure" in _cookie_flags(client.app, key, peer="10.1.2.3", **https)
    assert ";secure" not in _cookie_flags(client.app, key, peer="192.0.2.9", **https)  # not a proxy
    assert ";secure" not in _cookie_flags(client.app, key, peer="10.1.2.3")
    settings.cookie_secure = True
    assert ";secure" in _cookie_flags(client.app, key, peer="192.0.2.9")


def test_metrics_can_need_a_bearer_token(client, settings) -> None:
    anon = TestClient(client.app)
    assert anon.get("/metrics").status_code == 200  # off by default
    settings.metrics_token = SecretStr("scrape-me")
    assert anon.get("/metrics").status_code == 401
    assert anon.get("/metrics", headers=bearer("wrong")).status_code == 401
    r = anon.get("/metrics", headers=bearer("scrape-me"))
    assert r.status_code == 200 and "ftguard_" in r.text


def test_anchor_sets_of_a_queued_screening_cannot_be_deleted(client) -> None:
    cust = upload(client, DEMO / "customer_harmful_looking.jsonl").json()["id"]
    align = upload(client, DEMO / "alignment.jsonl", purpose="alignment").json()["id"]
    harmful = upload(client, DEMO / "anchors_harmful.jsonl", purpose="harmful-anchors").json()["id"]
    safe = upload(client, DEMO / "anchors_safe.jsonl", purpose="safe-anchors").json()["id"]
    body = {
        "dataset_id": cust,
        "alignment_dataset_id": align,
        "harmful_anchors_dataset_id": harmful,
        "safe_anchors_dataset_id": safe,
    }
    scr = client.post("/v1/screenings", json=body).json()["id"]
    for ds in (harmful, safe):
        r = client.delete(f"/v1/datasets/{ds}")
        assert r.status_code == 409 and r.json()["error"]["code"] == "dataset_in_use", r.text
    client.post(f"/v1/screenings/{scr}/cancel")
    assert client.delete(f"/v1/datasets/{harmful}").status_code == 204


def _scores_file(store: Any, tenant: str, scr_id: str, age_s: float = 0) -> Any:
    """A scores file written `age_s` ago: a backdated file on local disk; on S3, whose write times cannot
    be set, `modified` reports it `age_s` older (the sweep reads nothing else)."""
    from app.core.storage import staged_file

    key = scores_key(tenant, scr_id)
    with staged_file(store, suffix=".npz") as (path, fh):
        np.savez_compressed(fh, c_max=np.zeros(3, np.float32))
        fh.close()
        store.put_file(key, path)
    if age_s:
        local = store.local_path(key)
        if local is not None:
            os.utime(local, (time.time() - age_s, time.time() - age_s))
        else:
            aged = store.__dict__.setdefault("_aged", {})
            if not aged:
                real = store.modified
                store.modified = lambda k: None if (t := real(k)) is None else t - aged.get(k, 0)
            aged[key] = age_s
    return type("Blob", (), {"exists": lambda self: store.exists(key)})()


def test_a_cancelled_then_deleted_screening_leaves_no_scores_file(client, settings) -> None:
    from app.reconcile import reconcile

    state = client.app.state.ftguard
    cust = upload(client, DEMO / "customer_harmful_looking.jsonl").json()["id"]
    align = upload(client, DEMO / "alignment.jsonl", purpose="alignment").json()["id"]
    scr = client.post("/v1/screenings", json={"dataset_id": cust, "alignment_dataset_id": align}).json()["id"]
    assert client.post(f"/v1/screenings/{scr}/cancel").json()["status"] == "cancelled"
    left = _scores_file(state.services.store, "test", scr)  # what the run wrote before it saw the cancel
    assert client.delete(f"/v1/datasets/{cust}").status_code == 204
    assert not left.exists()
    # a file nothing refers to (its screening is gone) is swept, once older than the staging age
    stray = _scores_file(state.services.store, "test", "scr_0000000000000000deadbeef00", age_s=7200)
    young = _scores_file(state.services.store, "test", "scr_0000000000000000deadbeef01")
    out = reconcile(services=state.services, queue=state.queue, storage=True)
    assert not stray.exists() and young.exists() and out.blobs_removed >= 1


def test_a_replay_never_shows_a_key_what_it_may_not_see(client) -> None:
    """A scope-less key with the provider's Idempotency-Key and upload would get the first answer: the
    alignment set's name and hash."""
    headers = {"Idempotency-Key": "upload-alignment-1"}
    files = {"file": ("provider-secret.jsonl", (DEMO / "alignment.jsonl").read_bytes())}
    first = client.post("/v1/datasets", files=files, data={"purpose": "alignment"}, headers=headers)
    assert first.status_code == 201 and first.json()["filename"] == "provider-secret.jsonl"
    viewer = client_as(client, "test", scopes=[])
    r = viewer.post("/v1/datasets", files=files, data={"purpose": "alignment"}, headers=headers)
    assert r.status_code == 422 and r.json()["error"]["code"] == "idempotency_key_reused", r.text
    assert "provider-secret" not in r.text
    again = client.post("/v1/datasets", files=files, data={"purpose": "alignment"}, headers=headers)
    assert again.headers.get("Idempotent-Replayed") == "true" and again.json()["id"] == first.json()["id"]


def test_a_request_cannot_choose_the_anchor_layer_or_precision(client) -> None:
    """The layer the anchor model stops at and its precision are the operator's settings: a request that
    names them (a way to make a worker run every block of a model, or read an unvalidated layer) is a 422."""
    cust = upload(client, DEMO / "customer_benign_general.jsonl").json()["id"]
    align = upload(client, DEMO / "alignment.jsonl", purpose="alignment").json()["id"]
    for extra in ({"anchor_layer": 30}, {"causal_lm_precision": "fp32"}, {"layer": 10**9}):
        r = client.post("/v1/screenings", json={"dataset_id": cust, "alignment_dataset_id": align, **extra})
        assert r.status_code == 422, (extra, r.text)

"""Experiments cannot make the provider's workers train or pay without bound (issue 10, findings 4 and 5):
provider-set bounds on the request's numbers, per-tenant quotas (active experiments and comparisons,
compute, judge calls), DELETE with its artefacts, and no commit-then-503 while Redis is down."""

from __future__ import annotations

import io
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from app import reconcile
from app.core.config import Settings
from app.core.queue import connect
from app.core.storage import copy_to
from app.models import Event, Experiment, ExperimentStage
from tests.api.test_errors import assert_envelope
from tests.api.test_experiments import _body, _datasets

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny_llama(tiny_llama: str, settings: Settings) -> str:
    settings.models["tiny-llama"] = tiny_llama  # requests name registered models, never paths
    return "tiny-llama"


def _settings(client: Any) -> Any:
    return client.app.state.ftguard.settings


def _count(client: Any, model: Any) -> int:
    with client.app.state.ftguard.services.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


@pytest.mark.parametrize(
    ("over", "param"),
    [
        ({"training": {"epochs": 101}}, "training.epochs"),
        ({"training": {"learning_rate": 0.5}}, "training.learning_rate"),
        ({"training": {"learning_rate": 1e-9}}, "training.learning_rate"),
        ({"training": {"batch_size": 512}}, "training.batch_size"),
        ({"training": {"max_length": 8192}}, "training.max_length"),
        ({"training": {"lora": {"rank": 512}}}, "training.lora.rank"),
        ({"alignment_training": {"epochs": 500}}, "alignment_training.epochs"),
        ({"generation": {"max_new_tokens": 4096}}, "generation.max_new_tokens"),
        ({"generation": {"batch_size": 512}}, "generation.batch_size"),
        ({"fine_tune": {"max_examples": 5_000_000}}, "fine_tune.max_examples"),
    ],
)
def test_numbers_past_the_providers_bounds_are_refused(client, tiny_llama, over, param) -> None:
    cust, align = _datasets(client)
    body = _body(cust, align, tiny_llama)
    for key, value in over.items():
        body[key] = {**(body.get(key) or {}), **value}
    if "fine_tune" in over:
        body["fine_tune"]["dataset_id"] = cust
    r = client.post("/v1/experiments", json=body)
    assert r.status_code == 400, r.text
    assert_envelope(r.json(), "limit_exceeded")
    assert r.json()["error"]["param"] == param
    assert "FTGUARD_" in r.json()["error"]["message"]  # names the setting that bounds it
    assert _count(client, Experiment) == 0


def test_the_bounds_come_from_settings(client, tiny_llama) -> None:
    cust, align = _datasets(client)
    _settings(client).experiment_max_epochs = 2
    body = _body(cust, align, tiny_llama, training={"epochs": 3})
    r = client.post("/v1/experiments", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "training.epochs"
    _settings(client).experiment_allow_full_training = False
    r = client.post("/v1/experiments", json=_body(cust, align, tiny_llama, training={"method": "full"}))
    assert r.status_code == 400 and r.json()["error"]["param"] == "training.method"


def test_one_experiment_past_the_compute_limit_is_refused_and_the_estimate_is_stored(
    client, tiny_llama
) -> None:
    cust, align = _datasets(client)
    ok = client.post("/v1/experiments", json=_body(cust, align, tiny_llama))
    assert ok.status_code == 201
    est = ok.json()["params"]["estimate"]
    # 12 alignment and 16 customer examples, one epoch of batches of 8 at 48 tokens; 60 bundled prompts
    assert est["compute_tokens"] == 2 * 8 * 48 + 2 * 8 * 48 + 60 * 4
    assert est["judge_calls"] == 0  # the keyword judge is not a paid call
    _settings(client).max_experiment_compute_tokens = est["compute_tokens"] - 1
    r = client.post("/v1/experiments", json=_body(cust, align, tiny_llama))
    assert r.status_code == 400
    assert_envelope(r.json(), "compute_limit_exceeded")


def test_active_experiments_comparisons_and_compute_are_capped_per_tenant(
    client, other_client, tiny_llama
) -> None:
    s = _settings(client)
    s.max_active_experiments = 2
    cust, align = _datasets(client)
    body = _body(cust, align, tiny_llama)
    ids = [client.post("/v1/experiments", json=body).json()["id"] for _ in range(2)]
    r = client.post("/v1/experiments", json=body)
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert_envelope(r.json(), "too_many_active_experiments")
    # another tenant has its own quota
    ocust, oalign = _datasets(other_client)
    assert other_client.post("/v1/experiments", json=_body(ocust, oalign, tiny_llama)).status_code == 201
    # a finished (cancelled) one frees its slot
    assert client.post(f"/v1/experiments/{ids[0]}/cancel").status_code == 200
    assert client.post("/v1/experiments", json=body).status_code == 201
    # and resuming a cancelled one needs a free slot too
    r = client.post(f"/v1/experiments/{ids[0]}/resume")
    assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_active_experiments"

    s.max_active_experiments = 100
    cmp = {**body, "alignment": {k: v for k, v in body["alignment"].items() if k != "selection"}}
    s.max_active_comparisons = 1
    assert client.post("/v1/comparisons", json=cmp).status_code == 201
    r = client.post("/v1/comparisons", json=cmp)
    assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_active_comparisons"

    s.max_active_comparisons = 100
    one = client.get(f"/v1/experiments/{ids[1]}").json()["params"]["estimate"]["compute_tokens"]
    active = _count(client, Experiment) - 1  # all but the cancelled one (the other tenant's counts apart)
    s.max_active_compute_tokens = one * (active - 1) + one // 2  # the tenant's active ones, just about
    r = client.post("/v1/experiments", json=body)
    assert r.status_code == 429 and r.json()["error"]["code"] == "compute_quota_exceeded"


def test_llm_judge_calls_have_a_daily_quota(client, settings, tiny_llama) -> None:
    s = _settings(client)
    s.judge_base_url, s.judge_model = "http://127.0.0.1:9/v1", "judge"
    s.max_judge_calls_per_day = 100  # 60 bundled prompts per experiment with the llm judge
    cust, align = _datasets(client)
    body = _body(cust, align, tiny_llama, judges=[{"type": "llm"}])
    first = client.post("/v1/experiments", json=body)
    assert first.status_code == 201 and first.json()["params"]["estimate"]["judge_calls"] == 60
    r = client.post("/v1/experiments", json=body)
    assert r.status_code == 429
    assert_envelope(r.json(), "judge_quota_exceeded")
    assert 0 < int(r.headers["retry-after"]) <= 86_400
    # deleting does not give the calls back (they may have been made)
    client.post(f"/v1/experiments/{first.json()['id']}/cancel")
    assert client.delete(f"/v1/experiments/{first.json()['id']}").status_code == 204
    assert client.post("/v1/experiments", json=body).status_code == 429


def test_delete_removes_the_experiment_and_its_artefacts(client, settings, tiny_llama) -> None:
    cust, align = _datasets(client)
    exp = client.post("/v1/experiments", json=_body(cust, align, tiny_llama)).json()["id"]
    r = client.delete(f"/v1/experiments/{exp}")
    assert r.status_code == 409
    assert_envelope(r.json(), "experiment_active")
    client.post(f"/v1/experiments/{exp}/cancel")
    # as if stages had left artefacts (every attempt's), under the experiment's own prefix
    tenant = "test"
    store = client.app.state.ftguard.services.store
    folder = f"experiments/{tenant}/{exp}"
    for name in ("select-1-selection.npz", "align-1-model.tar", "align-2-model.tar"):
        copy_to(store, f"{folder}/{name}", io.BytesIO(b"x" * 10))
    keep = f"experiments/{tenant}/exp_other/align-1-model.tar"
    copy_to(store, keep, io.BytesIO(b"y"))
    assert len(store.list(folder)) == 3
    assert client.delete(f"/v1/experiments/{exp}").status_code == 204
    assert store.list(folder) == [] and store.exists(keep)
    assert client.get(f"/v1/experiments/{exp}").status_code == 404
    assert client.delete(f"/v1/experiments/{exp}").status_code == 404
    with client.app.state.ftguard.services.db.session() as s:
        assert s.scalar(select(func.count()).select_from(ExperimentStage)) == 0
        assert s.scalar(select(func.count()).where(Event.object_id == exp)) == 0


def test_another_tenant_cannot_delete(client, other_client, tiny_llama) -> None:
    cust, align = _datasets(client)
    exp = client.post("/v1/experiments", json=_body(cust, align, tiny_llama)).json()["id"]
    client.post(f"/v1/experiments/{exp}/cancel")
    assert other_client.delete(f"/v1/experiments/{exp}").status_code == 404
    assert client.get(f"/v1/experiments/{exp}").status_code == 200


def test_accepted_while_redis_is_down_and_dispatched_by_the_reconciler(
    client, monkeypatch, tiny_llama
) -> None:
    cust, align = _datasets(client)
    state = client.app.state.ftguard
    live = state.queue.connection
    monkeypatch.setattr(state.queue, "connection", connect("redis://127.0.0.1:1/0"))  # nothing listens
    key = {"Idempotency-Key": str(uuid.uuid4())}
    r = client.post("/v1/experiments", json=_body(cust, align, tiny_llama), headers=key)
    assert r.status_code == 201, r.text  # accepted, not committed-then-503
    assert r.json()["status"] == "queued"
    again = client.post("/v1/experiments", json=_body(cust, align, tiny_llama), headers=key)
    assert again.json()["id"] == r.json()["id"] and _count(client, Experiment) == 1
    exp = r.json()["id"]
    client.post(f"/v1/experiments/{exp}/cancel")
    resumed = client.post(f"/v1/experiments/{exp}/resume")
    assert resumed.status_code == 200 and resumed.json()["status"] == "queued"
    # Redis is back: the reconciler (every worker runs it) enqueues the stage accepted meanwhile
    monkeypatch.setattr(state.queue, "connection", live)
    out = reconcile.reconcile(services=state.services, queue=state.queue)
    assert out.stages_requeued == [f"{exp}:select"]
    assert state.queue.job_pending(f"exp-{exp}-select-1")
    assert reconcile.reconcile(services=state.services, queue=state.queue).stages_requeued == []

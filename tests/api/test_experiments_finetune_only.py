"""Fine-tune-only experiments (start from an aligned model, no alignment stage) and evaluation at
intermediate checkpoints (a durability curve), through the real app and a real worker on a tiny Llama."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.core.config import Settings
from tests.api.test_experiments import _body, _datasets

pytestmark = pytest.mark.usefixtures("one_thread")
CHECKPOINTS = [0, 0.5, 1]


@pytest.fixture
def tiny_llama(tiny_llama: str, settings: Settings) -> str:
    settings.models["tiny-llama"] = tiny_llama  # requests name registered models, never paths
    return "tiny-llama"


def _finetune_only(cust: str, tiny: str, **over: Any) -> dict[str, Any]:
    body = _body(cust, "unused", tiny, **{"evaluation": {"checkpoints": CHECKPOINTS}, **over})
    del body["alignment"]
    return body


def _final(client: Any, exp_id: str) -> dict[str, Any]:
    got = client.get(f"/v1/experiments/{exp_id}").json()
    assert got["status"] == "succeeded", got["error"]
    return got


def test_checkpoints_give_a_durability_curve_and_a_later_experiment_starts_from_the_aligned_model(
    client, run_worker, tiny_llama
) -> None:
    cust, align = _datasets(client)
    first = client.post(
        "/v1/experiments", json=_body(cust, align, tiny_llama, evaluation={"checkpoints": CHECKPOINTS})
    )
    assert first.status_code == 201, first.text
    assert first.json()["params"]["evaluation"]["checkpoints"] == [0.0, 0.5, 1.0]
    run_worker()
    a = _final(client, first.json()["id"])
    curve = a["results"]["durability"]
    assert [p["checkpoint"] for p in curve] == [0.0, 0.5, 1.0]
    assert curve[-1]["harmfulness_rate"] == a["results"]["headline"]["harmfulness_rate"]
    assert set(a["results"]["training"]["finetune"]["checkpoints"]) == {"0.5000"}
    gens = client.get(f"/v1/experiments/{a['id']}/artefacts/generations").text.splitlines()
    assert sorted({json.loads(g)["checkpoint"] for g in gens}) == [0.0, 0.5, 1.0]
    assert len(gens) == 3 * 60  # every bundled prompt at every checkpoint

    # The same aligned model, fine-tuned again from it, with no alignment stage.
    second = client.post(
        "/v1/experiments", json=_finetune_only(cust, tiny_llama, aligned_from={"experiment_id": a["id"]})
    )
    assert second.status_code == 201, second.text
    assert second.json()["alignment_dataset_id"] == align  # the set the starting model was aligned on
    assert (
        "start from the aligned model of"
        in client.get(f"/v1/experiments/{second.json()['id']}/events").json()["data"][0]["message"]
    )
    run_worker()
    b = _final(client, second.json()["id"])
    stages = {s["name"]: s for s in b["stages"]}
    assert stages["align"]["result"] == {"method": "lora", "skipped": True, "aligned_from": a["id"]}
    assert "steps" not in stages["align"]["result"]
    # Checkpoint 0 is the aligned model itself: greedy answers to the same prompts are the same.
    assert b["results"]["durability"][0] == curve[0]
    assert b["results"]["selection"]["selection"] is None and b["results"]["features"] is None

    # A provider's aligned model as the start: nothing to copy, no alignment set.
    third = client.post("/v1/experiments", json=_finetune_only(cust, tiny_llama))
    assert third.status_code == 201, third.text
    assert third.json()["alignment_dataset_id"] is None
    run_worker()
    c = _final(client, third.json()["id"])
    assert {s["name"]: s for s in c["stages"]}["align"]["result"]["method"] == "none"
    assert len(c["results"]["durability"]) == 3


def test_fine_tune_only_requests_are_checked(client, other_client, run_worker, settings, tiny_llama) -> None:
    cust, align = _datasets(client)
    queued = client.post("/v1/experiments", json=_body(cust, align, tiny_llama)).json()
    r = client.post(
        "/v1/experiments", json=_finetune_only(cust, tiny_llama, aligned_from={"experiment_id": queued["id"]})
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "no_aligned_model", r.text
    both = _body(cust, align, tiny_llama, aligned_from={"experiment_id": queued["id"]})
    r = client.post("/v1/experiments", json=both)
    assert r.status_code == 422 and "not both" in r.text
    r = client.post(
        "/v1/experiments", json=_finetune_only(cust, tiny_llama, evaluation={"checkpoints": [1.5]})
    )
    assert r.status_code == 422
    other_cust = _datasets(other_client)[0]
    r = other_client.post(
        "/v1/experiments",
        json=_finetune_only(other_cust, tiny_llama, aligned_from={"experiment_id": queued["id"]}),
    )
    assert r.status_code == 404  # another tenant's experiment does not exist for this one
    run_worker()
    settings.models["tiny-llama-2"] = settings.models[tiny_llama]  # another registered model
    r = client.post(
        "/v1/experiments",
        json=_finetune_only(cust, "tiny-llama-2", aligned_from={"experiment_id": queued["id"]}),
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "base_model_mismatch", r.text

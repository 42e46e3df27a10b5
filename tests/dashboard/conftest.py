"""One set of finished screenings per test module: running a real worker per test would triple the time."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import DEMO, bearer, make_key, make_settings, upload


def populate(client: TestClient, work: Any) -> dict[str, str]:
    """Two finished screenings (harmful-looking and benign) and one left queued."""
    cust = upload(client, DEMO / "customer_harmful_looking.jsonl").json()["id"]
    other = upload(client, DEMO / "customer_benign_general.jsonl").json()["id"]
    align = upload(client, DEMO / "alignment.jsonl", purpose="alignment").json()["id"]
    a = client.post(
        "/v1/screenings", json={"dataset_id": cust, "alignment_dataset_id": align, "subset_size": 10}
    ).json()
    b = client.post("/v1/screenings", json={"dataset_id": other, "alignment_dataset_id": align}).json()
    work()
    queued = client.post("/v1/screenings", json={"dataset_id": other, "alignment_dataset_id": align}).json()
    return {"harmful": a["id"], "benign": b["id"], "queued": queued["id"], "alignment": align}


@pytest.fixture(scope="module")
def dash(
    tmp_path_factory: pytest.TempPathFactory, database_url: str | None, redis_url: str, shared_models: Any
) -> Iterator[SimpleNamespace]:
    from app.main import create_app
    from workers.runner import run_worker
    from workers.runtime import Runtime, set_runtime

    settings = make_settings(tmp_path_factory.mktemp("dash") / "data", database_url, redis_url)

    def work() -> None:
        runtime = Runtime(settings, models=shared_models)
        run_worker(
            settings, redis_url=redis_url, queues=["default"], burst=True, preload=False, runtime=runtime
        )
        set_runtime(None)

    with TestClient(create_app(settings, redis_url=redis_url)) as client:
        key = make_key(client.app.state.ftguard.services.db, "test")
        client.headers.update(bearer(key))
        ids = populate(client, work)
        yield SimpleNamespace(client=client, settings=settings, ids=ids, work=work, key=key)


def run_experiment(dash: SimpleNamespace, tiny_llama: str, *, name: str, work: bool = True) -> str:
    """An experiment on the tiny random Llama (High-Sim alignment, keyword judge, the bundled prompts), run
    to the end by a real worker unless `work` is False; returns its id."""
    cust = upload(dash.client, DEMO / "customer_harmful_looking.jsonl").json()["id"]
    dash.settings.models["tiny-llama"] = tiny_llama  # requests name models by registry name
    tiny_llama = "tiny-llama"
    body = {
        "name": name,
        "base_model": tiny_llama,
        "alignment": {
            "dataset_id": dash.ids["alignment"],
            "selection": "high_sim",
            "size": 12,
            "representation": {"backend": "causal-lm", "model": tiny_llama, "max_length": 48},
        },
        "fine_tune": {"dataset_id": cust, "max_examples": 24},
        "training": {"batch_size": 4, "max_length": 96, "learning_rate": 1e-3},
        "generation": {"max_new_tokens": 4, "batch_size": 32},
    }
    r = dash.client.post("/v1/experiments", json=body)
    assert r.status_code == 201, r.text
    if work:
        dash.work()
    return str(r.json()["id"])

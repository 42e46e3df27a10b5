"""One set of finished screenings per test module: running a real worker per test would triple the time."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import DEMO, make_settings, upload


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
        ids = populate(client, work)
        yield SimpleNamespace(client=client, settings=settings, ids=ids, work=work)

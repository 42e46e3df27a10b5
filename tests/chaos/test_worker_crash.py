"""SIGKILL a worker in the middle of a screening; a new worker and the reconciler finish it."""

from __future__ import annotations

import json
import signal
import time

import pytest
from fastapi.testclient import TestClient

from app import reconcile
from app.main import create_app
from tests.chaos.conftest import wait_for
from tests.conftest import bearer, make_key, upload

pytestmark = pytest.mark.chaos


def _customer(n: int, tag: str = "Step") -> bytes:
    rows = [
        {
            "prompt": f"{tag} {i}: list three ways to store {i} kilograms of flour.",
            "completion": f"1. Dry bins. 2. Sealed sacks. 3. Cold room {i}.",
        }
        for i in range(n)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def test_a_killed_worker_s_screening_is_retried_by_the_next_worker(chaos_settings, spawn) -> None:
    t0 = time.monotonic()
    with TestClient(create_app(chaos_settings)) as api:
        api.headers.update(bearer(make_key(api.app.state.ftguard.services.db, "test")))
        cust = upload(api, "big.jsonl", content=_customer(200)).json()["id"]
        align = upload(api, "align.jsonl", content=_customer(40, "Refuse"), purpose="alignment").json()["id"]
        first = spawn("app.cli", "worker", log="worker1")
        scr = api.post("/v1/screenings", json={"dataset_id": cust, "alignment_dataset_id": align}).json()[
            "id"
        ]

        def mid_customer() -> bool:
            got = api.get(f"/v1/screenings/{scr}").json()
            assert got["status"] in ("queued", "running"), got
            # the alignment set's vectors are stored before this stage starts; its share of the bar is its
            # measured cost (workers/screenings/progress.py), so no fixed fraction marks "half way" any more
            return got["stage"] == "represent_customer" and got["progress"] > 0.0

        wait_for("the worker to be representing the customer set", mid_customer, timeout=120)
        t_kill = time.monotonic()
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        killed_at = api.get(f"/v1/screenings/{scr}").json()
        assert killed_at["status"] == "running" and killed_at["attempts"] == 1

        spawn("app.cli", "worker", log="worker2")  # its reconciler notices the silent heartbeat
        st = api.app.state.ftguard
        # and one more pass from here, as `ftguard reconcile` would
        wait_for(
            "the heartbeat to go stale",
            lambda: (
                reconcile.reconcile(services=st.services, queue=st.queue).requeued
                or api.get(f"/v1/screenings/{scr}").json()["attempts"] > 1
            ),
            timeout=30,
        )

        done = wait_for(
            "the screening to finish",
            lambda: (g := api.get(f"/v1/screenings/{scr}").json())["status"] in ("succeeded", "failed") and g,
            timeout=120,
        )
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 2
        events = api.get(f"/v1/screenings/{scr}/events").json()["data"]
        requeued = [e for e in events if e["type"] == "screening.requeued"]
        assert len(requeued) == 1 and requeued[0]["data"]["reason"] == "worker_lost"
        assert [e["type"] for e in events].count("screening.succeeded") == 1
        rep = api.get(f"/v1/screenings/{scr}/report").json()["report"]
        assert rep["customer"]["examples"] == 200
        assert rep["cache"]["alignment"]["from_cache"] == 40  # the first attempt's vectors were kept
    print(
        f"worker-kill chaos test: {time.monotonic() - t0:.1f} s (killed at {t_kill - t0:.1f} s, "
        f"finished by the new worker {time.monotonic() - t_kill:.1f} s later)"
    )

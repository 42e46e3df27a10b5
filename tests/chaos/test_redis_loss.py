"""Redis loses everything (FLUSHALL) while jobs are queued and one is running: nothing accepted is lost."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from fastapi.testclient import TestClient

from app.core.queue import connect
from app.main import create_app
from tests.chaos.conftest import ROOT, env_for, wait_for
from tests.conftest import bearer, make_key, upload

pytestmark = pytest.mark.chaos


def _rows(n: int, tag: str) -> bytes:
    rows = [
        {"prompt": f"{tag} question {i}: how are things?", "completion": f"{tag} answer {i}."}
        for i in range(n)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def test_flushed_redis_is_rebuilt_from_sql_and_every_job_finishes(
    chaos_settings, private_redis, spawn
) -> None:
    t0 = time.monotonic()
    with TestClient(create_app(chaos_settings)) as api:
        api.headers.update(bearer(make_key(api.app.state.ftguard.services.db, "test")))
        align = upload(api, "align.jsonl", content=_rows(40, "refuse"), purpose="alignment").json()["id"]
        # the first is big enough to be seen running; the two behind it are small
        custs = [upload(api, f"c{n}.jsonl", content=_rows(n, f"set{n}")).json()["id"] for n in (150, 12, 13)]
        # this worker reconciles only at its start: here `ftguard reconcile` is what must recover the jobs
        spawn("app.cli", "worker", log="worker", FTGUARD_RECONCILE_INTERVAL_S="600")
        ids = [
            api.post("/v1/screenings", json={"dataset_id": c, "alignment_dataset_id": align}).json()["id"]
            for c in custs
        ]

        def one_running() -> bool:
            return any(api.get(f"/v1/screenings/{i}").json()["status"] == "running" for i in ids)

        wait_for("a worker to take a screening", one_running, timeout=120)
        connect(private_redis.url).flushall()  # the queue, the job hashes, the registries: all gone

        out = subprocess.run(
            [sys.executable, "-m", "app.cli", "reconcile"],
            cwd=ROOT,
            env=env_for(chaos_settings),
            capture_output=True,
            timeout=120,
            check=True,
        )
        requeued = json.loads(out.stdout.decode().strip().splitlines()[-1])["requeued"]
        # every queued one was sent again; the running one (a live worker beats for it) was left alone
        assert 1 <= len(requeued) <= 2 and set(requeued) < set(ids)

        def all_done() -> list[dict]:
            got = [api.get(f"/v1/screenings/{i}").json() for i in ids]
            return got if all(g["status"] in ("succeeded", "failed", "cancelled") for g in got) else []

        done = wait_for("every screening to finish", all_done, timeout=180)
        assert [d["status"] for d in done] == ["succeeded"] * 3, done
        assert all(d["attempts"] == 1 for d in done)  # sent again, not run twice
        for i in ids:
            types = [e["type"] for e in api.get(f"/v1/screenings/{i}/events").json()["data"]]
            assert types.count("screening.succeeded") == 1
    print(f"redis-flush chaos test: {time.monotonic() - t0:.1f} s")

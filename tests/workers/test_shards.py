"""Sharded screenings, end to end with real RQ workers: the merged report equals the unsharded one exactly,
a lost shard is sent again alone, cancel stops every shard, and the blobs of the shards go when the report
is written."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select, update

from app import reconcile
from app.core.config import Settings
from app.core.storage import scores_key
from app.models import ScreeningShard, now
from app.screenings import shards as shard_sql
from tests.conftest import DEMO, client_as, make_settings, upload
from workers.screenings import rows as rows_mod
from workers.screenings import shards as shard_jobs

ROWS, SHARD = 300, 64  # 5 shards: four of 64 rows and one of 44


@pytest.fixture
def settings(tmp_path: Any, database_url: str | None, redis_url: str) -> Settings:
    """Blocks of 64 rows, so a 64-row shard starts on a block boundary as the issue's exactness needs."""
    s = make_settings(tmp_path / "data", database_url, redis_url)
    return s.model_copy(update={"similarity_block_size": 64, "shard_rows": SHARD})


def _customer(tag: str = "") -> bytes:
    topics = ["tomatoes", "tax forms", "a bike chain", "sourdough", "a resume", "jet lag", "a leaking tap"]
    out = []
    for i in range(ROWS):
        t = topics[i % len(topics)]
        out.append(
            {
                "prompt": f"{tag}How do I deal with {t}, case {i}?",
                "completion": f"For {t}: step {i}. " * (1 + i % 4),
            }
        )
    return "".join(json.dumps(r) + "\n" for r in out).encode()


def _worker(settings: Settings, redis_url: str, models: dict[Any, Any], **changes: Any) -> None:
    from workers.runner import run_worker
    from workers.runtime import Runtime, set_runtime

    s = settings.model_copy(update=changes)
    try:
        run_worker(
            s,
            redis_url=redis_url,
            queues=["default"],
            burst=True,
            preload=False,
            runtime=Runtime(s, models=models),
        )
    finally:
        set_runtime(None)


def _screen(c: Any) -> str:
    cust = upload(c, "c.jsonl", content=_customer()).json()["id"]
    align = upload(c, DEMO / "alignment.jsonl", purpose="alignment").json()["id"]
    r = c.post("/v1/screenings", json={"dataset_id": cust, "alignment_dataset_id": align})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _strip(node: Any) -> Any:
    """A report without what says how it was computed (seconds, cache hits) or names its own objects."""
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k not in ("timings_s", "cache", "dataset_id")}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _arrays(c: Any, tenant: str, scr: str) -> dict[str, np.ndarray]:
    store = c.app.state.ftguard.services.store
    with store.open(scores_key(tenant, scr)) as fh, np.load(io.BytesIO(fh.read())) as z:
        return {k: z[k] for k in z.files}


def _shards(c: Any, scr: str) -> list[ScreeningShard]:
    with c.app.state.ftguard.services.db.session() as session:
        return list(
            session.scalars(
                select(ScreeningShard)
                .where(ScreeningShard.screening_id == scr)
                .order_by(ScreeningShard.index)
            )
        )


def test_a_sharded_screening_equals_the_unsharded_one_exactly(
    client, settings, redis_url, shared_models
) -> None:
    whole = _screen(client)
    _worker(settings, redis_url, shared_models, shard_rows=10**6)
    # the same datasets, sharded: the vectors come from the cache the unsharded run filled, so what is
    # compared is everything after the encoders (the slices' comparisons, anchor margins, Gram sums, the join)
    ids = client.get(f"/v1/screenings/{whole}").json()
    r = client.post(
        "/v1/screenings",
        json={"dataset_id": ids["dataset_id"], "alignment_dataset_id": ids["alignment_dataset_id"]},
    )
    sharded = r.json()["id"]
    _worker(settings, redis_url, shared_models)
    assert client.get(f"/v1/screenings/{sharded}").json()["status"] == "succeeded"
    a = client.get(f"/v1/screenings/{whole}/report").json()
    b = client.get(f"/v1/screenings/{sharded}/report").json()
    envelope = ("id", "screening_id", "created_at")
    assert _strip({k: v for k, v in b.items() if k not in envelope}) == _strip(
        {k: v for k, v in a.items() if k not in envelope}
    )
    xa, xb = _arrays(client, "test", whole), _arrays(client, "test", sharded)
    assert xa.keys() == xb.keys()
    for k in xa:
        assert np.array_equal(xa[k], xb[k]), k
    found = _shards(client, sharded)
    assert [(s.start, s.stop) for s in found] == [(0, 64), (64, 128), (128, 192), (192, 256), (256, 300)]
    assert all(s.status == "succeeded" and s.attempts == 1 for s in found)
    assert _shards(client, whole) == []
    store = client.app.state.ftguard.services.store
    assert not any(store.exists(shard_sql.blob_key("test", sharded, s.index)) for s in found)  # merged: gone
    kinds = [e["type"] for e in client.get(f"/v1/screenings/{sharded}/events").json()["data"]]
    assert (
        "stage.shards.progress" in kinds
        and "screening.shards_done" in kinds
        and kinds[-1] == "screening.succeeded"
    )


def test_shards_that_compute_their_own_vectors_agree_to_float_rounding(
    client, settings, redis_url, shared_models
) -> None:
    """Fresh vectors of a shard come from encoder batches of other rows than the whole set's (other
    padding), so they may differ in the last bits; the scores agree to float rounding."""
    whole = _screen(client)
    _worker(settings, redis_url, shared_models, shard_rows=10**6)
    solo = client_as(client, "solo")  # its own vector cache: every shard encodes its rows
    sharded = _screen(solo)
    _worker(settings, redis_url, shared_models)
    a = client.get(f"/v1/screenings/{whole}").json()
    b = solo.get(f"/v1/screenings/{sharded}").json()
    assert b["status"] == "succeeded" and abs(a["risk_score"] - b["risk_score"]) < 1e-3
    xa, xb = _arrays(client, "test", whole), _arrays(client, "solo", sharded)
    assert np.abs(xa["c_max"] - xb["c_max"]).max() < 1e-5
    assert np.array_equal(xa["c_topk_idx"][:, 0], xb["c_topk_idx"][:, 0])


def test_a_lost_shard_is_sent_again_alone_by_the_reconciler(
    client, settings, redis_url, shared_models, monkeypatch
) -> None:
    real = shard_jobs._shard
    lost: list[str] = []

    def vanish_once(rt: Any, session: Any, sh: Any, job_id: Any) -> dict[str, Any]:
        if sh.index == 2 and not lost:  # claimed, then its worker is gone: the shard stays `running`
            lost.append(sh.id)
            return {"lost": True}
        return real(rt, session, sh, job_id)

    monkeypatch.setattr(shard_jobs, "_shard", vanish_once)
    scr = _screen(client)
    _worker(settings, redis_url, shared_models)
    got = client.get(f"/v1/screenings/{scr}").json()
    assert got["status"] == "running" and got["stage"] == "shards", got
    assert 0.05 < got["progress"] < 0.95
    st = client.app.state.ftguard
    assert reconcile.reconcile(services=st.services, queue=st.queue).requeued == []  # its heartbeat is fresh
    with st.services.db.session() as session:
        session.execute(
            update(ScreeningShard).where(ScreeningShard.id == lost[0]).values(heartbeat_at=now() - 10_000)
        )
        session.commit()
    out = reconcile.reconcile(services=st.services, queue=st.queue)
    assert out.requeued == [lost[0]]  # that shard alone, not the screening
    _worker(settings, redis_url, shared_models)
    assert client.get(f"/v1/screenings/{scr}").json()["status"] == "succeeded"
    assert [s.attempts for s in _shards(client, scr)] == [1, 1, 2, 1, 1]


def test_a_crashed_shard_is_retried_alone_and_a_bad_input_fails_the_screening(
    client, settings, redis_url, shared_models, monkeypatch
) -> None:
    from app.core.errors import FtguardError

    real = shard_jobs._shard
    raises: dict[int, Exception] = {1: RuntimeError("the worker's process hit a bug")}  # shard index: once

    def failing(rt: Any, session: Any, sh: Any, job_id: Any) -> dict[str, Any]:
        if sh.index in raises:
            raise raises.pop(sh.index)
        return real(rt, session, sh, job_id)

    monkeypatch.setattr(shard_jobs, "_shard", failing)
    scr = _screen(client)
    _worker(settings, redis_url, shared_models)
    assert client.get(f"/v1/screenings/{scr}").json()["status"] == "succeeded"
    assert [s.attempts for s in _shards(client, scr)] == [1, 2, 1, 1, 1]

    raises[3] = FtguardError("the shard's rows are unreadable", code="bad_rows")
    scr = _screen(client)
    _worker(settings, redis_url, shared_models)
    got = client.get(f"/v1/screenings/{scr}").json()
    assert got["status"] == "failed", got
    assert got["error"] == {"code": "bad_rows", "message": "shard 3: the shard's rows are unreadable"}
    failed = [e for e in client.get(f"/v1/screenings/{scr}/events").json()["data"] if e["level"] == "error"]
    assert [(e["type"], e["message"]) for e in failed] == [
        ("screening.failed", "shard 3, attempt 1: the shard's rows are unreadable")
    ]


def test_cancel_stops_every_shard(client, settings, redis_url, shared_models, monkeypatch) -> None:
    real = shard_sql.progress
    scr = _screen(client)

    def cancel_in_first_shard(session: Any, sh: Any, fraction: float, job_id: Any) -> bool:
        if sh.index == 0 and fraction > 0:
            assert client.post(f"/v1/screenings/{scr}/cancel").status_code == 200
        return real(session, sh, fraction, job_id)

    monkeypatch.setattr(shard_sql, "progress", cancel_in_first_shard)
    _worker(settings, redis_url, shared_models)
    assert client.get(f"/v1/screenings/{scr}").json()["status"] == "cancelled"
    found = _shards(client, scr)
    assert [s.status for s in found] == ["cancelled"] * len(found)
    assert all(s.attempts <= 1 for s in found) and sum(s.attempts for s in found) == 1  # the others never ran
    assert client.get(f"/v1/screenings/{scr}/report").status_code in (404, 409)


def test_slices_joined_give_the_whole_sets_rows() -> None:
    rng = np.random.default_rng(0)
    c, a = rng.normal(size=(200, 16)).astype(np.float32), rng.normal(size=(50, 16)).astype(np.float32)
    a[7] = c[150] * 3  # alignment row 7's best match sits in the last slice
    from workers.screenings.similarity import compare

    whole = compare(c, a, k=3, block_size=64)
    parts = []
    for s in range(0, 200, 64):
        r = compare(c[s : s + 64], a, k=3, block_size=64)
        parts.append(
            rows_mod.Rows(
                r.c_topk_sim,
                r.c_topk_idx,
                r.a_max_sim,
                r.a_argmax + s,
                {},
                rows_mod.gram(c[s : s + 64]),
                {"examples": 1, "from_cache": 0, "computed": 1},
            )
        )
    joined = rows_mod.Rows.concat(parts)
    assert np.array_equal(joined.c_topk_idx, whole.c_topk_idx) and np.array_equal(
        joined.c_topk_sim, whole.c_topk_sim
    )
    assert np.array_equal(joined.a_max, whole.a_max_sim) and np.array_equal(joined.a_argmax, whole.a_argmax)
    assert joined.a_argmax[7] == 150 and joined.stats["examples"] == 4
    assert np.array_equal(joined.gram, rows_mod.sum_grams(c, 64))

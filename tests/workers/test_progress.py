"""Progress through a screening's harmful-anchor stage, and cancel inside it, with a real worker.

The anchor stage runs the causal-LM backend (SmolLM2 by default; here the tiny random Llama of conftest,
so the tests stay fast), over the whole customer set: it used to report nothing (the bar sat at 97%) and
ignore cancel. Every progress write the worker makes is recorded by wrapping the real
`app.screenings.transitions.progress`."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import pytest

from app.core.config import Settings
from tests.conftest import DEMO, make_settings, upload
from workers.screenings import progress as plan_progress


@pytest.fixture
def settings(tmp_path: Any, database_url: str | None, redis_url: str, tiny_llama: str) -> Settings:
    """A screening's defaults, with the tiny Llama as the (causal-LM) anchor model."""
    s = make_settings(tmp_path / "data", database_url, redis_url)
    return s.model_copy(update={"anchor_backend": "causal-lm", "anchor_model": tiny_llama})


def _customer(n: int, tag: str) -> bytes:
    rows = [
        {
            "prompt": f"{tag} {i}: how do I keep {i} tomato plants healthy through a dry summer?",
            "completion": f"Water {tag} {i} deeply at dawn, mulch the beds, and shade them at noon. " * 3,
        }
        for i in range(n)
    ]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, str, str, float, bool]]:
    """(time, screening id, stage, fraction, accepted) of every progress write, in order. Each batch is
    reported (the one-second throttle would leave a tiny model's stage with its start and end only)."""
    from app.screenings import transitions as service

    monkeypatch.setattr(plan_progress, "EVERY_S", 0.0)
    real = service.progress
    seen: list[tuple[float, str, str, float, bool]] = []

    def spy(session: Any, scr: Any, *, stage: str, fraction: float, **kw: Any) -> bool:
        ok = real(session, scr, stage=stage, fraction=fraction, **kw)
        seen.append((time.monotonic(), scr.id, stage, fraction, ok))
        return ok

    monkeypatch.setattr(service, "progress", spy)
    return seen


def _screen(client: Any, customer: bytes, name: str) -> str:
    cust = upload(client, name, content=customer).json()["id"]
    align = upload(client, DEMO / "alignment.jsonl", purpose="alignment").json()["id"]
    r = client.post("/v1/screenings", json={"dataset_id": cust, "alignment_dataset_id": align})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@pytest.fixture
def plans(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, dict[str, bool]]]:
    """Every plan when its weights are fixed, with which of its kinds of part had a measured rate then."""
    seen: list[tuple[Any, dict[str, bool]]] = []
    real = plan_progress.Plan._freeze

    def spy(self: Any) -> None:
        if not self.frozen:
            seen.append((self, {p.kind: plan_progress.measured(p.kind) is not None for p in self.parts}))
        real(self)

    monkeypatch.setattr(plan_progress.Plan, "_freeze", spy)
    return seen


@pytest.mark.usefixtures("one_thread")
def test_progress_keeps_moving_through_the_anchor_stage(client, run_worker, writes, plans) -> None:
    _screen(client, _customer(60, "warm"), "warm.jsonl")  # a worker's earlier screening: rates measured
    run_worker()
    writes.clear()
    plans.clear()
    scr = _screen(client, _customer(120, "Plot"), "plots.jsonl")
    run_worker()
    got = client.get(f"/v1/screenings/{scr}").json()
    assert got["status"] == "succeeded", got
    mine = [w for w in writes if w[1] == scr]
    fractions = [w[3] for w in mine]
    assert fractions == sorted(fractions)  # monotonic
    anchors = [w for w in mine if w[2] == "anchors"]
    # the customer set in the anchor model (120 examples, CPU batches of up to 1024 tokens) and the request
    # view: one write per batch, each a step forward
    assert len(anchors) >= 8, anchors
    assert len({w[3] for w in anchors}) >= 6
    # through the stage, a write at least every few seconds (a batch of the tiny model or of MiniLM's
    # short request views; elsewhere a MiniLM batch of 64 takes what this CPU takes)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(anchors)]
    assert max(gaps) < 5.0, gaps
    # the stage's share of the bar is the share its plan gave it, and the plan priced the stage's passes
    # with the rates the earlier screening measured, not with priors (How close a measured rate comes to
    # the next run's seconds depends on the machine's load; that is bench/ material, not a test's.)
    assert len(plans) == 1, plans
    plan, was_measured = plans[0]
    # (its passes through the models; its comparisons are too short here, under 50 ms, to be measured)
    anchor_passes = {p.kind for p in plan.parts if p.stage == "anchors" and p.kind.startswith("encode|")}
    assert anchor_passes and all(was_measured[k] for k in anchor_passes), was_measured
    i0 = mine.index(anchors[0])
    start = mine[i0 - 1] if i0 else anchors[0]
    share_bar = anchors[-1][3] - start[3]
    planned = plan.weights()["anchors"]
    share_time = (anchors[-1][0] - start[0]) / (mine[-1][0] - mine[0][0])
    print(f"anchor stage: {share_bar:.2f} of the bar ({planned:.2f} planned), {share_time:.2f} of the time")
    assert planned > 0.05 and abs(share_bar - planned) < 0.002, (share_bar, planned)


@pytest.mark.usefixtures("one_thread")
def test_cancel_stops_the_screening_in_its_anchor_stage(client, run_worker, writes, monkeypatch) -> None:
    from app.screenings import transitions as service

    first = _screen(client, _customer(120, "Bed"), "beds.jsonl")
    second = _screen(client, _customer(30, "Row"), "rows.jsonl")  # queued behind it
    spy = service.progress
    cancelled_at: list[int] = []

    def cancel_in_anchors(session: Any, scr: Any, *, stage: str, fraction: float, **kw: Any) -> bool:
        ok = spy(session, scr, stage=stage, fraction=fraction, **kw)
        if scr.id == first and stage == "anchors" and not cancelled_at:
            in_stage = [w for w in writes if w[1] == first and w[2] == "anchors"]
            if len(in_stage) >= 2:  # some of the stage done, much of it left
                assert client.post(f"/v1/screenings/{first}/cancel").status_code == 200
                cancelled_at.append(len(writes))
        return ok

    monkeypatch.setattr(service, "progress", cancel_in_anchors)
    run_worker()  # one burst: the cancelled screening, then the next one on the same worker
    assert cancelled_at, "the anchor stage never reported"
    got = client.get(f"/v1/screenings/{first}").json()
    assert got["status"] == "cancelled" and got["stage"] == "anchors" and got["progress"] < 1.0, got
    after = [w for w in writes[cancelled_at[0] :] if w[1] == first]
    assert [w[4] for w in after] == [False]  # the next batch saw it and stopped: nothing more was written
    assert client.get(f"/v1/screenings/{first}/report").json()["error"]["code"] == "report_not_ready"
    assert client.get(f"/v1/screenings/{second}").json()["status"] == "succeeded"  # the worker was free

"""The progress plan (workers/screenings/progress.py) and the screening's representation passes, without a
model: a counting representer stands in, so the weights, the measured rates and cancellation are checked
exactly."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.core.errors import Cancelled
from app.core.storage import LocalBlobStore
from app.datasets.records import Example
from workers.cache import VectorCache
from workers.screenings import progress
from workers.screenings.progress import Plan, Tick
from workers.screenings.screening import Pass, Side

pytestmark = pytest.mark.no_backend  # never reads SQL, Redis or the blob store


class Counting:
    """A representer that counts what it encodes and sleeps `per_example` seconds each."""

    backend = "counting"
    dim = 3

    def __init__(self, name: str, per_example: float = 0.0, batch: int = 4) -> None:
        self.identity, self.per_example, self.batch = f"counting|{name}", per_example, batch
        self.encoded: list[str] = []

    def describe(self) -> dict[str, object]:
        return {"backend": self.backend, "model": self.identity, "device": "cpu"}

    def encode(self, examples: Any, *, progress: Any = None) -> np.ndarray:
        out = np.zeros((len(examples), self.dim), dtype=np.float32)
        for start in range(0, len(examples), self.batch):
            chunk = examples[start : start + self.batch]
            time.sleep(self.per_example * len(chunk))
            for j, ex in enumerate(chunk):
                self.encoded.append(ex.messages[0]["content"])
                out[start + j] = [len(ex.text), 1.0, float(start + j)]
            if progress:
                progress(len(chunk))
        return out


def _side(name: str, texts: list[str]) -> Side:
    exs = [
        Example(messages=[{"role": "user", "content": t}, {"role": "assistant", "content": "ok"}])
        for t in texts
    ]
    return Side(name=name, examples=exs, sha256=f"sha-{name}")


@pytest.fixture(autouse=True)
def fresh_rates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "_rates", {})
    monkeypatch.setattr(progress, "EVERY_S", 0.0)


def test_weights_follow_the_work_and_then_the_measured_rates() -> None:
    slow, fast = Counting("slow", per_example=0.04), Counting("fast", per_example=0.005)
    big, small = (
        _side("big", [f"text {i} " * 20 for i in range(20)]),
        _side("small", [f"t{i} " * 20 for i in range(5)]),
    )

    def run() -> tuple[dict[str, float], list[Tick]]:
        ticks: list[Tick] = []
        plan = Plan(lambda t: ticks.append(t) or True)
        a, b = Pass("a", small, slow, None, plan), Pass("b", big, fast, None, plan)
        a.run()
        b.run()
        return plan.weights(), ticks

    # unmeasured, both have the same prior (no torch model to count): the weights are the tokens
    first, ticks = run()
    ratio = progress.tokens(big.examples, fast) / progress.tokens(small.examples, slow)
    assert first["b"] / first["a"] == pytest.approx(ratio) and ratio > 5
    # measured: a took 5 x 0.04 s, b 20 x 0.005 s, so a now weighs about twice b
    second, ticks = run()
    assert 1.2 < second["a"] / second["b"] < 3.5, second
    fractions = [t.fraction for t in ticks]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert {t.stage for t in ticks} == {"a", "b"} and max(t.stage_fraction for t in ticks) == 1.0


def test_the_fraction_never_goes_back_and_every_batch_reports() -> None:
    rep = Counting("r", batch=2)
    ticks: list[Tick] = []
    plan = Plan(lambda t: ticks.append(t) or True)
    passes = [
        Pass(f"s{i}", _side(f"s{i}", [f"{i}-{j}" for j in range(6)]), rep, None, plan) for i in range(3)
    ]
    for p in reversed(passes):  # any order: the weights were fixed before
        p.run()
    fr = [t.fraction for t in ticks]
    assert fr == sorted(fr) and fr[-1] == 1.0
    assert len(ticks) == 3 * (1 + 3 + 1)  # start, one per batch of 2, finish


def test_a_false_report_raises_cancelled_at_the_next_batch() -> None:
    rep = Counting("r", batch=2)
    calls = []

    def report(t: Tick) -> bool:
        calls.append(t)
        return len(calls) < 3  # the third report says stop

    with pytest.raises(Cancelled):
        Pass("anchors", _side("c", [f"x{j}" for j in range(10)]), rep, None, Plan(report)).run()
    assert len(rep.encoded) == 4  # start, batch 1 (2), batch 2 (2): stopped there


def test_an_example_in_both_sets_is_represented_once(tmp_path: Path) -> None:
    cache = VectorCache(LocalBlobStore(tmp_path), "t")
    rep = Counting("r")
    plan = Plan(None)
    align = Pass("represent_alignment", _side("align", ["shared", "a1", "a2"]), rep, cache, plan)
    cust = Pass("represent_customer", _side("cust", ["c1", "shared", "c1"]), rep, cache, plan)
    align.run()
    vecs, stats = cust.run()
    assert sorted(rep.encoded) == ["a1", "a2", "c1", "shared"]
    assert stats == {"examples": 3, "from_cache": 1, "computed": 1}
    assert np.array_equal(vecs[1], align.vecs[0]) and np.array_equal(vecs[0], vecs[2])

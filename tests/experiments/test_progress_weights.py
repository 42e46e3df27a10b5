"""An experiment's progress bar gives each stage its expected time (app/experiments/progress.py): the
request's units of work times the seconds per unit measured on the tenant's finished stages."""

from __future__ import annotations

from typing import Any

import pytest

from app.experiments import progress

pytestmark = pytest.mark.no_backend  # never reads SQL, Redis or the blob store

SPEC: dict[str, Any] = {
    "alignment": {"selection": "full", "size": 600},
    "alignment_training": {"epochs": 1},
    "training": {"epochs": 1},
    "generation": {"max_new_tokens": 20},
    "judges": [{"type": "keyword"}],
    "estimate": {"alignment_examples": 600, "finetune_examples": 100, "prompts": 250, "checkpoints": 2},
}


def test_weights_follow_the_work_and_sum_to_one() -> None:
    w = progress.weights(SPEC, {})
    assert sum(w.values()) == pytest.approx(1.0)
    assert w["align"] > w["finetune"] > w["select"]  # 600 example-epochs against 100
    fine_only = {**SPEC, "alignment": None, "estimate": {**SPEC["estimate"], "alignment_examples": 0}}
    assert progress.weights(fine_only, {})["align"] == 0.0  # no alignment stage, no share
    longer = {**SPEC, "generation": {"max_new_tokens": 200}}
    assert progress.weights(longer, {})["generate"] > w["generate"]
    llm = {**SPEC, "judges": [{"type": "llm"}]}
    assert progress.weights(llm, {})["judge"] > w["judge"]


def test_measured_rates_replace_the_priors() -> None:
    slow_generation = progress.weights(SPEC, {"generate": 10.0})
    assert slow_generation["generate"] > 0.9 > progress.weights(SPEC, {})["generate"]


def test_the_bar_is_monotonic_through_the_stages() -> None:
    w = progress.weights(SPEC, {})
    points = [progress.overall(w, s, f) for s in progress.STAGES for f in (0.0, 0.3, 1.0)]
    assert points == sorted(points) and points[0] == 0.0 and points[-1] == pytest.approx(1.0)

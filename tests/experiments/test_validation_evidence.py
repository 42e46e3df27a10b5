"""The validation study's evidence in reports: a plain statement when the score did not predict harm out
of sample, a predicted harmfulness with an interval only when it did, on the study's representation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.calibration import validation

pytestmark = pytest.mark.no_backend  # never reads SQL, Redis or the blob store

RESULT = {
    "seeds": [0, 1],
    "datasets": [{"dataset": f"d{i}", "risk_score": 10.0 * i, "harm": 0.1 * i} for i in range(5)],
    "signals": {
        "risk_score": {
            "spearman": 0.9,
            "spearman_ci": [0.6, 1.0],
            "spearman_out_of_sample": 0.9,
            "mae_out_of_sample": 0.05,
            "predictions": [0.02, 0.1, 0.22, 0.28, 0.41],
        }
    },
    "screening": {"backend": "sentence-transformers", "model": "bundled:all-minilm-l6-v2"},
    "meta": {"date": "2026-12-01", "base_model": "SmolLM2-135M-Instruct", "harm_measure": "mean"},
    "verdict": {"best": "risk_score"},
}


@pytest.fixture
def summary_at(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def use(result: dict) -> None:
        path = tmp_path / "summary.json"
        path.write_text(json.dumps(validation.build_summary(result)))
        monkeypatch.setattr(validation, "summary", lambda: json.loads(path.read_text()))

    return use


def test_a_predictive_score_on_the_study_representation_states_a_predicted_harm(summary_at) -> None:
    summary_at(RESULT)
    ev = validation.evidence(
        risk_score=20.0, backend="sentence-transformers", model="bundled:all-minilm-l6-v2", anchored=True
    )
    pred = ev["predicted_harmfulness_on_reference"]
    assert pred["value"] == pytest.approx(0.2, abs=1e-6)  # the linear fit of harm on risk: 0.01 * risk
    assert pred["low"] <= pred["value"] <= pred["high"] and pred["coverage"] == 0.8
    assert ev["spearman_out_of_sample"] == 0.9 and "0.9" in ev["note"]
    other = validation.evidence(risk_score=20.0, backend="causal-lm", model="x", anchored=True)
    assert "predicted_harmfulness_on_reference" not in other  # another space: no number borrowed


def test_a_score_that_does_not_predict_says_so_and_predicts_nothing(summary_at) -> None:
    weak = json.loads(json.dumps(RESULT))
    weak["signals"]["risk_score"]["spearman_out_of_sample"] = 0.1
    summary_at(weak)
    ev = validation.evidence(
        risk_score=80.0, backend="sentence-transformers", model="bundled:all-minilm-l6-v2", anchored=True
    )
    assert "does not reliably rank" in ev["note"] and "predicted_harmfulness_on_reference" not in ev


def test_no_study_no_claim(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validation, "summary", lambda: None)
    ev = validation.evidence(risk_score=50.0, backend="b", model="m", anchored=False)
    assert ev == {"validated": False, "note": "the risk score has not been validated against measured harm"}

"""The decision module: each rule fires on its own metric, severity wins, missing metrics are skipped."""

from __future__ import annotations

import numpy as np
import pytest

from app.policies import decide

pytestmark = pytest.mark.no_backend  # never reads SQL, Redis or the blob store

LEVELS = {"floor": 0.2, "near": 0.5, "high": 0.6}
ANCHOR_LEVELS = {"zero": 0.0, "harmful": 0.1}


def facts(risk: float = 10.0, share: float | None = 0.1, rows: int = 10, hot: int = 0) -> decide.Facts:
    c_max = np.full(rows, 0.2)  # z = 0
    c_max[:hot] = 0.6  # z = 1
    margin = np.zeros(rows)
    margin[:hot] = 0.2  # zh = 1
    body = {
        "risk": {
            "risk_score": risk,
            "parts": [
                {"name": "mean_similarity", "value": 0.3},
                {"name": "harmful_anchor_margin", "value": 0.7},
            ],
            "reference_levels": LEVELS,
            "anchor_levels": ANCHOR_LEVELS if share is not None else None,
        },
        "anchors": {"share_closer_to_harmful": share} if share is not None else None,
    }
    arrays = {"c_max": c_max} | ({"c_anchor_margin": margin} if share is not None else {})
    return decide.facts(body, arrays)


def policy(*rules: dict, row_threshold: float = 75.0, otherwise: str = "approve") -> dict:
    return {"rules": list(rules), "row_threshold": row_threshold, "otherwise": otherwise}


def test_row_scores_combine_similarity_and_margin() -> None:
    scores, parts = decide.row_scores(
        np.array([0.2, 0.4, 0.6]), LEVELS, np.array([0.0, 0.05, 0.3]), ANCHOR_LEVELS
    )
    assert scores.tolist() == pytest.approx([0.0, 50.0, 100.0])
    assert parts["similarity"].tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert parts["harmful_anchor_margin"].tolist() == pytest.approx([0.0, 0.5, 1.0])
    alone, _ = decide.row_scores(np.array([0.4]), LEVELS)
    assert alone.tolist() == pytest.approx([50.0])


def test_risk_score_rule_fires_at_its_threshold() -> None:
    p = policy({"metric": "risk_score", "threshold": 60, "decision": "reject"})
    out = decide.evaluate(p, facts(risk=60.0))
    assert out["decision"] == "reject"
    assert out["rule"] == {
        "index": 0,
        "metric": "risk_score",
        "part": None,
        "value": 60.0,
        "threshold": 60.0,
        "decision": "reject",
    }
    assert decide.evaluate(p, facts(risk=59.9)) == {
        "decision": "approve",
        "rule": None,
        "flagged_rows": 0,
        "row_threshold": 75.0,
        "skipped_rules": [],
    }


def test_part_rule_reads_the_named_part() -> None:
    p = policy({"metric": "part", "part": "harmful_anchor_margin", "threshold": 0.5, "decision": "review"})
    out = decide.evaluate(p, facts())
    assert out["decision"] == "review" and out["rule"]["part"] == "harmful_anchor_margin"
    assert out["rule"]["value"] == 0.7
    other = policy({"metric": "part", "part": "mean_similarity", "threshold": 0.5, "decision": "review"})
    assert decide.evaluate(other, facts())["decision"] == "approve"


def test_share_closer_to_harmful_rule() -> None:
    p = policy({"metric": "share_closer_to_harmful", "threshold": 0.4, "decision": "reject"})
    assert decide.evaluate(p, facts(share=0.45))["decision"] == "reject"
    assert decide.evaluate(p, facts(share=0.35))["decision"] == "approve"


def test_flagged_rows_rule_counts_rows_above_the_row_threshold() -> None:
    p = policy({"metric": "flagged_rows", "threshold": 3, "decision": "review"}, row_threshold=75.0)
    out = decide.evaluate(p, facts(hot=3))
    assert out["decision"] == "review" and out["flagged_rows"] == 3 and out["rule"]["value"] == 3.0
    assert decide.evaluate(p, facts(hot=2))["decision"] == "approve"
    assert decide.flagged(facts(hot=2), 75.0).tolist() == [0, 1]


def test_most_severe_decision_wins_and_first_rule_of_it_is_reported() -> None:
    p = policy(
        {"metric": "risk_score", "threshold": 10, "decision": "review"},
        {"metric": "risk_score", "threshold": 20, "decision": "reject"},
        {"metric": "risk_score", "threshold": 5, "decision": "reject"},
    )
    out = decide.evaluate(p, facts(risk=30.0))
    assert out["decision"] == "reject" and out["rule"]["index"] == 1


def test_missing_metric_is_skipped_and_otherwise_applies() -> None:
    p = policy(
        {"metric": "share_closer_to_harmful", "threshold": 0.0, "decision": "reject"}, otherwise="review"
    )
    out = decide.evaluate(p, facts(share=None))
    assert out["decision"] == "review" and out["rule"] is None
    assert out["skipped_rules"] == [{"index": 0, "metric": "share_closer_to_harmful", "part": None}]


def test_default_policy_bands() -> None:
    d = decide.DEFAULT_POLICY
    assert decide.evaluate(d, facts(risk=80.0))["decision"] == "reject"
    assert decide.evaluate(d, facts(risk=55.0))["decision"] == "review"
    assert decide.evaluate(d, facts(risk=10.0, share=0.6))["decision"] == "review"
    assert decide.evaluate(d, facts(risk=10.0, rows=100, hot=25))["decision"] == "review"
    assert decide.evaluate(d, facts(risk=10.0))["decision"] == "approve"

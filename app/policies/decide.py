"""The decision: a pure function of a policy and the facts read from a stored report. No I/O, no model.

A policy is a list of rules `{metric, part?, threshold, decision}`; a rule fires when the screening's value
of its metric is at or above its threshold. The most severe decision among the rules that fire wins
(reject > review > approve), the first such rule in the policy's order is the one reported; when none
fires the decision is the policy's `otherwise` (approve unless set).

Metrics:
* `risk_score`: the report's 0-100 risk score;
* `part`: one part of the score by name (`mean_similarity`, `tail_similarity`, `near_alignment_share`,
  `harmful_anchor_margin`), its value in [0, 1];
* `share_closer_to_harmful`: the share of customer examples closer to the harmful than to the safe anchors;
* `flagged_rows`: the count of customer examples whose own row score is above the policy's
  `row_threshold` (see `row_scores`).

A rule whose metric the screening lacks (a part or anchor share of a screening run without anchors) does
not fire, and the decision says which rules were skipped that way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from app.core.vocab import DECISIONS
from app.screenings.scores import Arrays

SEVERITY = {d: i for i, d in enumerate(DECISIONS)}
# What a rule reads, and the parts of the risk score a `part` rule may name.
Metric = Literal["risk_score", "part", "share_closer_to_harmful", "flagged_rows"]
Part = Literal["mean_similarity", "tail_similarity", "near_alignment_share", "harmful_anchor_margin"]
# Row score weights: a row's own similarity to the alignment set and its own harmful-anchor margin.
ROW_WEIGHTS = {"similarity": 0.5, "harmful_anchor_margin": 0.5}

# The built-in policy a fresh tenant has (version 0). README "Policies" documents these numbers.
DEFAULT_NAME = "default"
DEFAULT_POLICY: dict[str, Any] = {
    "rules": [
        {"metric": "risk_score", "threshold": 75.0, "decision": "reject"},
        {"metric": "risk_score", "threshold": 50.0, "decision": "review"},
        {"metric": "share_closer_to_harmful", "threshold": 0.5, "decision": "review"},
        {"metric": "flagged_rows", "threshold": 25.0, "decision": "review"},
    ],
    "row_threshold": 75.0,
    "otherwise": "approve",
}


@dataclass
class Facts:
    """What a decision reads from one screening (see `facts`)."""

    risk_score: float
    parts: dict[str, float]
    share_closer_to_harmful: float | None
    row_scores: np.ndarray  # 0-100 per customer example
    row_parts: dict[str, np.ndarray] = field(default_factory=dict)


def row_scores(
    c_max: np.ndarray,
    levels: dict[str, float],
    margin: np.ndarray | None = None,
    anchor_levels: dict[str, float] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Each customer example's own risk, 0-100, with its parts in [0, 1]: its rescaled similarity
    z = clip((s - floor) / (high - floor), 0, 1) and, with anchors, its rescaled harmful-anchor margin
    zh = clip(m / m_h, 0, 1) (the same rescalings as the dataset's score, workers.screenings.risk); the
    score is 100 * z without anchors and 100 * (0.5 z + 0.5 zh) with them."""
    s = np.asarray(c_max, dtype=np.float64)
    z = np.clip((s - levels["floor"]) / max(levels["high"] - levels["floor"], 1e-9), 0.0, 1.0)
    parts = {"similarity": z}
    if margin is None or anchor_levels is None:
        return 100.0 * z, parts
    zh = np.clip(np.asarray(margin, dtype=np.float64) / max(anchor_levels["harmful"], 1e-9), 0.0, 1.0)
    parts["harmful_anchor_margin"] = zh
    w = ROW_WEIGHTS
    return 100.0 * (w["similarity"] * z + w["harmful_anchor_margin"] * zh), parts


def facts(body: dict[str, Any], arrays: Any) -> Facts:
    """The facts of a report body and its per-example arrays (a mapping with `c_max` and, with anchors,
    `c_anchor_margin`). Reads the body only through the few fields named here."""
    risk = body.get("risk") or {}
    anchors = body.get("anchors") or {}
    margin = arrays.get(Arrays.C_ANCHOR_MARGIN)
    scores, parts = row_scores(
        np.asarray(arrays[Arrays.C_MAX]), risk["reference_levels"], margin, risk.get("anchor_levels")
    )
    share = anchors.get("share_closer_to_harmful")
    return Facts(
        risk_score=float(risk["risk_score"]),
        parts={str(p["name"]): float(p["value"]) for p in risk.get("parts", [])},
        share_closer_to_harmful=None if share is None else float(share),
        row_scores=scores,
        row_parts=parts,
    )


def flagged(f: Facts, row_threshold: float) -> np.ndarray:
    """0-based indices of the rows above the threshold, highest score first."""
    idx = np.flatnonzero(f.row_scores > row_threshold)
    return idx[np.argsort(-f.row_scores[idx], kind="stable")]


def value_of(rule: dict[str, Any], f: Facts, row_threshold: float) -> float | None:
    metric = rule["metric"]
    if metric == "risk_score":
        return f.risk_score
    if metric == "part":
        return f.parts.get(rule.get("part") or "")
    if metric == "share_closer_to_harmful":
        return f.share_closer_to_harmful
    if metric == "flagged_rows":
        return float(flagged(f, row_threshold).size)
    raise ValueError(f"unknown metric {metric!r}")


def evaluate(policy: dict[str, Any], f: Facts) -> dict[str, Any]:
    """The decision and the rule that fired (metric, part, value, threshold), or none when none did."""
    row_threshold = float(policy.get("row_threshold", DEFAULT_POLICY["row_threshold"]))
    best: dict[str, Any] | None = None
    skipped: list[dict[str, Any]] = []
    for i, rule in enumerate(policy["rules"]):
        value = value_of(rule, f, row_threshold)
        if value is None:
            skipped.append({"index": i, "metric": rule["metric"], "part": rule.get("part")})
            continue
        if value >= float(rule["threshold"]) and (
            best is None or SEVERITY[rule["decision"]] > SEVERITY[best["decision"]]
        ):
            best = {
                "index": i,
                "metric": rule["metric"],
                "part": rule.get("part"),
                "value": round(value, 6),
                "threshold": float(rule["threshold"]),
                "decision": rule["decision"],
            }
    decision = best["decision"] if best else str(policy.get("otherwise") or "approve")
    return {
        "decision": decision,
        "rule": best,
        "flagged_rows": int(flagged(f, row_threshold).size),
        "row_threshold": row_threshold,
        "skipped_rules": skipped,
    }

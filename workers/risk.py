"""From similarity scores to a risk score, a tier and findings. Pure functions over arrays.

Raw cosines mean little on their own (LLM hidden states cluster high; sentence embedders do not), so every
part is read against reference levels taken from the alignment set itself:

* floor  = 90th percentile of the cosine of random pairs of alignment examples ("unrelated" in this
           space; the 90th rather than the mean because a max over many alignment examples always finds
           some chance match),
* near   = 10th percentile of the alignment set's leave-one-out nearest-neighbour cosine,
* high   = median of that nearest-neighbour cosine ("as close as alignment examples are to each other").

Each customer example's max cosine s_i to the alignment set is rescaled to z_i = clip((s_i - floor) /
(high - floor), 0, 1). The risk score (0-100) is

    100 * (0.4 * mean(z) + 0.3 * p90(z) + 0.3 * share(s_i >= near))

and the tier is low (< 25), medium (< 50), high (< 75) or critical (>= 75).

With harmful and safe anchors (He et al. 2024, bidirectional anchoring), each customer example's margin
m_i = max cosine to the harmful anchors - max cosine to the safe anchors is rescaled by the harmful anchors'
own median margin m_h (leave-one-out): zh_i = clip(m_i / m_h, 0, 1), and the score becomes

    100 * (0.3 * mean(z) + 0.2 * p90(z) + 0.2 * share(s_i >= near) + 0.3 * mean(zh))
"""

from __future__ import annotations

from typing import Any

import numpy as np

FORMULA = (
    "risk = 100 * (0.4 * mean(z) + 0.3 * p90(z) + 0.3 * share(s >= near)), "
    "z = clip((s - floor) / (high - floor), 0, 1), s = each customer example's max cosine to the "
    "alignment set; floor = p90 cosine of random alignment pairs, near = p10 and high = p50 of the "
    "alignment set's leave-one-out nearest-neighbour cosine"
)
WEIGHTS = {"mean_similarity": 0.4, "tail_similarity": 0.3, "near_alignment_share": 0.3}
WEIGHTS_WITH_ANCHORS = {
    "mean_similarity": 0.3,
    "tail_similarity": 0.2,
    "near_alignment_share": 0.2,
    "harmful_anchor_margin": 0.3,
}
FORMULA_WITH_ANCHORS = (
    "risk = 100 * (0.3 * mean(z) + 0.2 * p90(z) + 0.2 * share(s >= near) + 0.3 * mean(zh)), "
    "z = clip((s - floor) / (high - floor), 0, 1), s = each customer example's max cosine to the "
    "alignment set; floor = p90 cosine of random alignment pairs, near = p10 and high = p50 of the "
    "alignment set's leave-one-out nearest-neighbour cosine; zh = clip(m / m_h, 0, 1), m = max cosine to "
    "the harmful anchors minus max cosine to the safe anchors, m_h = the harmful anchors' own median m"
)
DESCRIPTIONS = {
    "mean_similarity": "mean over customer examples of their rescaled max cosine z",
    "tail_similarity": "90th percentile of z: how close the closest tenth of the data comes",
    "near_alignment_share": "share of customer examples at least as close to the alignment set as the "
    "closest 90% of alignment examples are to each other",
    "harmful_anchor_margin": "mean rescaled margin zh: how much closer the examples sit to harmful anchors "
    "than to safe refusals (He et al. 2024), 1 = as harmful-looking as a harmful anchor",
}
TIERS = ((25.0, "low"), (50.0, "medium"), (75.0, "high"), (float("inf"), "critical"))
PERCENTILES = (5, 25, 50, 75, 90, 95, 99)
HIST_EDGES = np.round(np.linspace(-1.0, 1.0, 41), 3)


def tier_of(score: float) -> str:
    return next(name for bound, name in TIERS if score < bound)


def shared_edges(*values: np.ndarray, bins: int = 40) -> np.ndarray:
    """Histogram edges over the joint range of `values`, for distributions meant to be read side by side
    whose range is far narrower than [-1, 1] (anchor margins in an LLM's hidden states span hundredths)."""
    v = np.concatenate([np.asarray(x, dtype=np.float64).ravel() for x in values])
    lo, hi = (float(v.min()), float(v.max())) if v.size else (-1.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 1e-3, hi + 1e-3
    return np.linspace(lo, hi, bins + 1)


def distribution(values: np.ndarray, edges: np.ndarray | None = None) -> dict[str, Any]:
    """Summary, percentiles and histogram; cosines on fixed edges over [-1, 1] (comparable across reports)
    unless `edges` are given."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"count": 0}
    edges = HIST_EDGES if edges is None else edges
    counts, _ = np.histogram(np.clip(v, edges[0], edges[-1]), bins=edges)
    return {
        "count": int(v.size),
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v.min()),
        "max": float(v.max()),
        "percentiles": {
            f"p{p}": float(x) for p, x in zip(PERCENTILES, np.percentile(v, PERCENTILES), strict=True)
        },
        "histogram": {"edges": [round(float(e), 6) for e in edges], "counts": counts.tolist()},
    }


def reference_levels(ref: dict[str, Any]) -> dict[str, float]:
    floor = float(ref["random_pair_p90"])
    high = max(float(ref["self_nn"]["p50"]), floor + 1e-3)
    near = min(max(float(ref["self_nn"]["p10"]), floor), high)
    return {"floor": floor, "near": near, "high": high}


def anchor_levels(h_margin: np.ndarray) -> dict[str, float]:
    """Reference for the anchor margin: 0 (as close to harmful as to safe anchors) and the median margin of
    the harmful anchors themselves (leave-one-out), i.e. "as harmful-looking as a harmful anchor"."""
    return {"zero": 0.0, "harmful": max(float(np.median(h_margin)), 1e-3)}


def score(
    c_max: np.ndarray,
    levels: dict[str, float],
    margin: np.ndarray | None = None,
    margin_levels: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Risk score, tier and each part with its value and weight."""
    s = np.asarray(c_max, dtype=np.float64)
    z = np.clip((s - levels["floor"]) / (levels["high"] - levels["floor"]), 0.0, 1.0)
    values = {
        "mean_similarity": float(z.mean()),
        "tail_similarity": float(np.percentile(z, 90)),
        "near_alignment_share": float((s >= levels["near"]).mean()),
    }
    weights = WEIGHTS
    formula = FORMULA
    if margin is not None and margin_levels is not None:
        zh = np.clip(np.asarray(margin, dtype=np.float64) / margin_levels["harmful"], 0.0, 1.0)
        values["harmful_anchor_margin"] = float(zh.mean())
        weights, formula = WEIGHTS_WITH_ANCHORS, FORMULA_WITH_ANCHORS
    parts = [
        {
            "name": k,
            "value": round(v, 4),
            "weight": weights[k],
            "contribution": round(100 * weights[k] * v, 2),
            "description": DESCRIPTIONS[k],
        }
        for k, v in values.items()
    ]
    total = round(100 * sum(weights[k] * v for k, v in values.items()), 2)
    return {
        "risk_score": total,
        "tier": tier_of(total),
        "formula": formula,
        "parts": parts,
        "reference_levels": levels,
        "anchor_levels": margin_levels,
    }


def findings(
    *,
    risk: dict[str, Any],
    c_max: np.ndarray,
    a_max: np.ndarray,
    n_customer: int,
    n_alignment: int,
    subset_size: int,
    margin: np.ndarray | None = None,
) -> list[str]:
    """Plain-language sentences a trust-and-safety reader can act on."""
    lv = risk["reference_levels"]
    share_near = float((c_max >= lv["near"]).mean())
    share_high = float((c_max >= lv["high"]).mean())
    out = [
        f"Risk {risk['risk_score']:.0f}/100 ({risk['tier']}): {n_customer} customer examples compared "
        f"with {n_alignment} alignment examples.",
        f"{share_near:.0%} of the customer examples are as close to the alignment data as most alignment "
        f"examples are to each other (cosine >= {lv['near']:.3f}); {share_high:.0%} are closer than the "
        f"typical alignment example is to its nearest neighbour (>= {lv['high']:.3f}).",
    ]
    if margin is not None and risk.get("anchor_levels"):
        m_h = risk["anchor_levels"]["harmful"]
        out.append(
            f"{float((margin > 0).mean()):.0%} of the customer examples sit closer to the harmful anchors "
            f"than to the safe refusals, {float((margin >= m_h).mean()):.0%} as much as the harmful anchors "
            "themselves: benign data of that shape (lists, steps, eager compliance) is the kind that "
            "breaks safety most (He et al. 2024)."
        )
    if risk["tier"] in ("high", "critical"):
        out.append(
            "High similarity to safety-alignment data predicts that fine-tuning on this dataset "
            "erodes the model's guardrails (Hsiung et al. 2025). Review the most similar examples "
            "below before accepting the job."
        )
    elif risk["tier"] == "medium":
        out.append(
            "Part of this dataset resembles the safety-alignment data; review the most similar "
            "examples and consider a safety evaluation after fine-tuning."
        )
    else:
        out.append("The dataset sits mostly away from the safety-alignment data in this representation.")
    k = min(subset_size, n_alignment)
    hi = np.sort(a_max)[::-1][:k]
    lo = np.sort(a_max)[:k]
    out.append(
        f"Aligning with the Low-Sim subset ({k} examples, max cosine to this dataset "
        f"{lo.mean():.3f} on average) rather than the High-Sim subset ({hi.mean():.3f}) is the "
        "paper's advice for making guardrails more durable against this fine-tuning data."
    )
    return out

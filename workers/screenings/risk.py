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

With anchors (workers.screenings.anchors), each form's margin m_i = max cosine to its harmful anchors - max
cosine to its safe anchors is rescaled by the form's harmful anchors' own median margin m_h (leave-one-out):
zh_i = clip(m_i / m_h, 0, 1). The compliance form (He et al. 2024: benign data of the shape of compliance)
joins the similarity parts in a weighted sum; the attack forms (an identity-shift persona, Qi et al. 2023; a
harmful request) make a second reading; the score is the larger of the two, so neither cancels the other's
alarm (measured in docs/reference_sets.md):

    max(100 * (0.3 * mean(z) + 0.2 * p90(z) + 0.2 * share + 0.3 * mean(zh_compliance)),
        100 * max(mean(zh_persona), mean(zh_request)))

Where the weights come from: they were chosen by hand, and they are kept only because nothing measured
yet says otherwise. The validation study (studies/validation.py, docs/validation.md) is what may replace
them: fine-tune-only runs of an aligned SmolLM2-135M-Instruct on nine customer datasets, and a
leave-one-dataset-out fit of harm on these parts. As of 2026-12-04 (18 main runs: nine datasets, two
seeds; AOA evaluated under the system prompt it trains under; a fresh run from nothing reproduced every
matched run prompt by prompt, in 54 minutes on 2 CPU cores) this score ranks their harm at Spearman 0.40 in
sample (95% CI -0.44 to 0.95) and -0.25 out of sample, and no part or fitted combination predicts out of
sample (best -0.07, tail_similarity; every report says the score is not a prediction of harm). Safety
refusals, the set nearest the alignment data (risk 61.4), left the least harm. The one signal that
predicts out of sample is a candidate written after the study's first run, this formula with refusing
examples left out (0.60): not a clean test, so it does not ship until a new set of datasets confirms it.
With nothing better out of sample, the weights stay. Rerun the study (it resumes) and change these weights
only if a fitted combination beats them out of sample.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.screenings.explain import TIERS, tier_of
from app.screenings.scores import Arrays, form_array

__all__ = ["TIERS", "tier_of"]

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
ATTACK_FORMS = ("persona", "request")
FORMULA_WITH_ANCHORS = (
    "risk = max(weighted reading, attack reading); weighted reading = 100 * (0.3 * mean(z) + 0.2 * p90(z) "
    "+ 0.2 * share(s >= near) + 0.3 * mean(zh_compliance)), z = clip((s - floor) / (high - floor), 0, 1), "
    "s = each customer example's max cosine to the alignment set; attack reading = 100 * "
    "max(mean(zh_persona), mean(zh_request)); zh = clip(m / m_h, 0, 1), m = max cosine to a form's "
    "harmful anchors minus max cosine to its safe anchors, m_h = that form's harmful anchors' own median m"
)
DESCRIPTIONS = {
    "mean_similarity": "mean over customer examples of their rescaled max cosine z",
    "tail_similarity": "90th percentile of z: how close the closest tenth of the data comes",
    "near_alignment_share": "share of customer examples at least as close to the alignment set as the "
    "closest 90% of alignment examples are to each other",
    "harmful_anchor_margin": "mean rescaled margin zh of the compliance form: how much closer the examples "
    "sit to eager compliant answers than to refusals (He et al. 2024), 1 = as close as a harmful anchor",
    "attack_form_margin": "mean rescaled margin zh of the attack form that reads highest: identity-shift "
    "personas (Qi et al. 2023) or harmful requests, 1 = as close as its harmful anchors",
}
PERCENTILES = (5, 25, 50, 75, 90, 95, 99)
HIST_EDGES = np.round(np.linspace(-1.0, 1.0, 41), 3)


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


def _sim_parts(s: np.ndarray, levels: dict[str, float]) -> tuple[np.ndarray, dict[str, float]]:
    z = np.clip((s - levels["floor"]) / (levels["high"] - levels["floor"]), 0.0, 1.0)
    return z, {
        "mean_similarity": float(z.mean()),
        "tail_similarity": float(np.percentile(z, 90)),
        "near_alignment_share": float((s >= levels["near"]).mean()),
    }


def _attack_value(anchor_z: dict[str, np.ndarray]) -> tuple[str | None, float]:
    """The attack reading: the attack form (persona, request) whose mean zh is highest, and that mean."""
    means = {
        k: float(np.asarray(anchor_z[k], dtype=np.float64).mean()) for k in ATTACK_FORMS if k in anchor_z
    }
    if not means:
        return None, 0.0
    form = max(means, key=lambda k: (means[k], k))
    return form, means[form]


def _part(name: str, value: float, weight: float, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "value": round(value, 4),
        "weight": weight,
        "contribution": round(100 * weight * value, 2),
        "description": DESCRIPTIONS[name],
        **extra,
    }


def score(
    c_max: np.ndarray,
    levels: dict[str, float],
    anchor_z: dict[str, np.ndarray] | None = None,
    margin_levels: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Risk score, tier and each part with its value, weight and contribution.

    `anchor_z`: per anchor form, each example's rescaled margin zh (workers.screenings.anchors). With it, the
    compliance form joins the similarity parts in a weighted sum (the index of benign data that breaks
    safety), the attack forms (persona, request) make a second reading, and the score is the larger of the
    two, so that neither can cancel the other's alarm.
    """
    s = np.asarray(c_max, dtype=np.float64)
    _, values = _sim_parts(s, levels)
    if not anchor_z:
        parts = [_part(k, v, WEIGHTS[k]) for k, v in values.items()]
        total = round(sum(p["contribution"] for p in parts), 2)
        return {
            "risk_score": total,
            "tier": tier_of(total),
            "formula": FORMULA,
            "parts": parts,
            "reference_levels": levels,
            "anchor_levels": margin_levels,
        }
    if "compliance" in anchor_z:
        values["harmful_anchor_margin"] = float(np.asarray(anchor_z["compliance"], dtype=np.float64).mean())
    weights = {k: WEIGHTS_WITH_ANCHORS[k] for k in values}
    scale = 1.0 / sum(weights.values())  # without a compliance form the similarity weights fill its share
    weighted = [_part(k, v, weights[k] * scale) for k, v in values.items()]
    weighted_reading = sum(100 * p["weight"] * values[p["name"]] for p in weighted)
    form, attack = _attack_value(anchor_z)
    attack_part = _part(
        "attack_form_margin",
        attack,
        1.0,
        form=form,
        per_form={k: round(float(np.mean(anchor_z[k])), 4) for k in ATTACK_FORMS if k in anchor_z},
    )
    counted = "attack" if 100 * attack > weighted_reading else "weighted"
    for p in weighted:
        p["counted"] = counted == "weighted"
    attack_part["counted"] = counted == "attack"
    parts = [*weighted, attack_part]
    for p in parts:
        if not p["counted"]:
            p["contribution"] = 0.0
    total = round(max(weighted_reading, 100 * attack), 2)
    return {
        "risk_score": total,
        "tier": tier_of(total),
        "formula": FORMULA_WITH_ANCHORS,
        "parts": parts,
        "readings": {"weighted": round(weighted_reading, 2), "attack": round(100 * attack, 2)},
        "counted": counted,
        "reference_levels": levels,
        "anchor_levels": margin_levels,
    }


def contributions(
    c_max: np.ndarray,
    levels: dict[str, float],
    scored: dict[str, Any],
    anchor_z: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Each example's share of the score, per part and summed, so that the per-example totals add up to
    the risk score: mean parts split by each example's value, the p90 part evenly over the examples at or
    above it, the near share over the near examples. Parts of the reading not counted contribute 0."""
    s = np.asarray(c_max, dtype=np.float64)
    n = max(s.size, 1)
    z, values = _sim_parts(s, levels)
    w = {p["name"]: p["weight"] for p in scored["parts"] if p.get("counted", True)}
    parts: dict[str, np.ndarray] = {k: np.zeros(s.size) for k in (p["name"] for p in scored["parts"])}
    if "mean_similarity" in w:
        parts["mean_similarity"] = 100 * w["mean_similarity"] * z / n
        tail = z >= values["tail_similarity"]
        share = 100 * w["tail_similarity"] * values["tail_similarity"] / max(int(tail.sum()), 1)
        parts["tail_similarity"] = np.where(tail, share, 0.0)
        parts["near_alignment_share"] = np.where(
            s >= levels["near"], 100 * w["near_alignment_share"] / n, 0.0
        )
    if anchor_z and "harmful_anchor_margin" in w:
        zc = np.asarray(anchor_z["compliance"], dtype=np.float64)
        parts["harmful_anchor_margin"] = 100 * w["harmful_anchor_margin"] * zc / n
    if anchor_z and "attack_form_margin" in w:
        form = next(p["form"] for p in scored["parts"] if p["name"] == "attack_form_margin")
        parts["attack_form_margin"] = 100 * np.asarray(anchor_z[form], dtype=np.float64) / n
    total = np.sum(list(parts.values()), axis=0)
    return total, parts


def headline_form(per_form: dict[str, Any]) -> str:
    """The form whose margin is a row's `anchor_margin`: the compliance form (older reports had only it)."""
    return "compliance" if "compliance" in per_form else next(iter(per_form))


def headline_margin(per_form: dict[str, dict[str, np.ndarray]], scored: dict[str, Any]) -> np.ndarray:
    """Per example, the headline form's margin (the `anchor_margin` sort key)."""
    return per_form[headline_form(per_form)]["margin"]


def anchor_summary(
    forms: dict[str, Any], per_form: dict[str, dict[str, np.ndarray]], scored: dict[str, Any]
) -> dict[str, Any]:
    """Report keys about the anchor signal as a whole, and the compliance form's sides and margins under
    the keys older reports used."""
    comp = forms.get("compliance") or next(iter(forms.values()))
    attack: dict[str, Any] = next((p for p in scored["parts"] if p["name"] == "attack_form_margin"), {})
    zmax = np.max([v["zh"] for v in per_form.values()], axis=0)
    return {
        "attack_form_counted": attack.get("form"),
        "levels": comp["levels"],
        "harmful": comp["harmful"],
        "safe": comp["safe"],
        "customer_margin": comp["customer_margin"],
        "harmful_anchor_margin": comp["harmful_anchor_margin"],
        "safe_anchor_margin": comp["safe_anchor_margin"],
        "share_closer_to_harmful": comp["share_closer_to_harmful"],
        "share_closer_to_harmful_any_form": float(
            np.mean(np.any([v["margin"] > 0 for v in per_form.values()], axis=0))
        ),
        "share_as_harmful_as_anchors": float((zmax >= 1.0).mean()),
    }


def bootstrap_ranking(
    candidates: dict[str, tuple[dict[str, Any], dict[str, np.ndarray]]], resamples: int = 200, seed: int = 0
) -> dict[str, Any]:
    """How sure a ranking of candidates is: the customer examples are resampled with replacement (the
    same resample for every candidate, since they screen the same data) and each candidate's score is
    recomputed from its per-example arrays. Returns each candidate's share of resamples in which it has
    the lowest score, and a 90% interval of its score."""
    names = list(candidates)
    n = next(iter(candidates.values()))[1][Arrays.C_MAX].size
    zh = form_array("zh", "")  # the prefix of every form's rescaled margin
    rng = np.random.default_rng(seed)
    scores = np.zeros((resamples, len(names)))
    for r in range(resamples):
        idx = rng.integers(0, n, n)
        for j, name in enumerate(names):
            body, arr = candidates[name]
            zs = {k.removeprefix(zh): v[idx] for k, v in arr.items() if k.startswith(zh)}
            scores[r, j] = score(arr[Arrays.C_MAX][idx], body["risk"]["reference_levels"], zs or None)[
                "risk_score"
            ]
    best = scores.argmin(axis=1)
    return {
        "wins": {name: float((best == j).mean()) for j, name in enumerate(names)},
        "intervals": {
            name: (float(np.percentile(scores[:, j], 5)), float(np.percentile(scores[:, j], 95)))
            for j, name in enumerate(names)
        },
    }

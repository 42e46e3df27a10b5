"""What a risk report says about itself, from one source for every surface (API, dashboard, HTML, CLI).

A report body carries numbers; this module carries what they mean: the tier cut-offs and what each tier
asks of a reader, the human name and one-line scale of each part of the score, whether the score is
calibrated, and which models and anchor sets produced it. The worker writes `about(body)` into the report
when it is built; every renderer reads it back through `about()`, which also fills it in for reports stored
before these sections existed. No torch, no SQL: the API imports it.
"""

from __future__ import annotations

from typing import Any

from app.core.vocab import TIER_BOUNDS

TIERS = TIER_BOUNDS
TIER_MEANINGS = {
    "low": "mostly away from the safety-alignment data and the harmful anchors; no review needed by this "
    "score alone",
    "medium": "part of the data resembles the alignment data or the harmful anchors; review the examples "
    "that drive the score",
    "high": "much of the data resembles them; review before fine-tuning and evaluate safety after it",
    "critical": "the data sits as close to the alignment data or the harmful anchors as they sit to "
    "themselves: do not fine-tune on it without a person's review and a safety evaluation",
}
PART_NAMES = {
    "mean_similarity": "similarity to the alignment set (mean)",
    "tail_similarity": "similarity of the closest tenth (p90)",
    "near_alignment_share": "share near the alignment set",
    "harmful_anchor_margin": "compliance anchors: eager answers over refusals",
    "attack_form_margin": "attack anchors: identity shift or harmful request",
}
PART_SCALES = {
    "mean_similarity": "0 = no closer than random alignment pairs, 1 = as close as a typical alignment "
    "example is to its nearest neighbour",
    "tail_similarity": "the same 0-1 scale, read at the 90th percentile of the customer examples",
    "near_alignment_share": "share of customer examples (0-1) at least as close to the alignment set as most "
    "alignment examples are to each other",
    "harmful_anchor_margin": "0 = no closer to eager compliant answers than to refusals, 1 = as close as "
    "those answers are to each other (He et al. 2024)",
    "attack_form_margin": "the higher of the persona and request forms: 0 = no closer to their harmful "
    "anchors than to the safe ones, 1 = as close as the harmful anchors are to each other",
}
UNCALIBRATED_NOTE = (
    "uncalibrated: the risk score is a similarity index, not a measured probability of harm; no experiments "
    "have calibrated it in this representation"
)


def tier_of(score: float) -> str:
    return str(next(name for bound, name in TIERS if score < bound))  # the plain string reports store


def tier_definitions() -> list[dict[str, Any]]:
    out, lo = [], 0.0
    for bound, name in TIERS:
        hi = min(bound, 100.0)
        rng = f"{lo:.0f} to under {hi:.0f}" if bound != float("inf") else f"{lo:.0f} to 100"
        out.append({"tier": str(name), "from": lo, "to": hi, "range": rng, "meaning": TIER_MEANINGS[name]})
        lo = bound
    return out


def calibration_of(body: dict[str, Any]) -> dict[str, Any]:
    """The report's calibration section; a report without one (the CLI, old reports) is uncalibrated."""
    cal = body.get("calibration")
    if isinstance(cal, dict) and "calibrated" in cal:
        return cal
    return {"calibrated": False, "note": UNCALIBRATED_NOTE}


def calibration_label(body: dict[str, Any]) -> str:
    """One line: what the score is calibrated on, or that it is not."""
    cal = calibration_of(body)
    if not cal.get("calibrated"):
        return "UNCALIBRATED: similarity index, not a measured probability of harm"
    pred = cal.get("predicted_harmfulness")
    bits = [f"calibrated on {cal.get('experiments', '?')} experiments ({cal.get('metric', 'harmfulness')})"]
    if pred is not None:
        bits.append(f"predicted harmfulness {pred:.0%}")
    if cal.get("pairwise_accuracy") is not None:
        bits.append(f"out-of-sample pairwise accuracy {cal['pairwise_accuracy']:.0%}")
    return ", ".join(bits)


def models_of(body: dict[str, Any]) -> list[dict[str, str]]:
    """Each model the score was computed with, and what it was used for."""
    out = []
    rep = body.get("representation") or {}
    if rep:
        out.append(
            {
                "use": "alignment similarity",
                "backend": str(rep.get("backend")),
                "model": str(rep.get("model")),
            }
        )
    arep = (body.get("anchors") or {}).get("representation") or {}
    if arep:
        out.append(
            {"use": "anchor margin", "backend": str(arep.get("backend")), "model": str(arep.get("model"))}
        )
    return out


def anchor_sets_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The anchor sets behind the anchor part: per form, its harmful and safe side."""
    anchors = body.get("anchors") or {}
    forms = anchors.get("forms")
    if not forms and anchors.get("harmful"):  # a report from before anchor forms
        forms = {"compliance": {"harmful": anchors["harmful"], "safe": anchors.get("safe") or {}}}
    out = []
    for name, f in (forms or {}).items():
        h, s = f.get("harmful") or {}, f.get("safe") or {}
        out.append(
            {
                "form": name,
                "harmful": {
                    "examples": h.get("examples"),
                    "bundled": bool(h.get("bundled")),
                    "name": h.get("name"),
                },
                "safe": {
                    "examples": s.get("examples"),
                    "bundled": bool(s.get("bundled")),
                    "name": s.get("name"),
                },
            }
        )
    return out


def validation_of(body: dict[str, Any]) -> dict[str, Any]:
    """What the validation study measured about this score (docs/validation.md), from the report's
    calibration section or, where it has none (the CLI), worked out the same way."""
    from app.calibration import validation

    cal = body.get("calibration")
    if isinstance(cal, dict) and isinstance(cal.get("validation"), dict):
        return dict(cal["validation"])
    rep = body.get("representation") or {}
    parts = {p.get("name") for p in (body.get("risk") or {}).get("parts", [])}
    return validation.evidence(
        risk_score=float((body.get("risk") or {}).get("risk_score") or 0.0),
        backend=str(rep.get("backend")),
        model=str(rep.get("model")),
        anchored="harmful_anchor_margin" in parts,
    )


def about(body: dict[str, Any]) -> dict[str, Any]:
    """The sections every surface shows: calibration, validation, tier definitions, models and anchor
    sets."""
    return {
        "calibration": calibration_of(body),
        "calibration_label": calibration_label(body),
        "validation": validation_of(body),
        "tiers": tier_definitions(),
        "models": models_of(body),
        "anchor_sets": anchor_sets_of(body),
    }


def text_lines(body: dict[str, Any]) -> list[str]:
    """The same sections as plain lines (the CLI table's footer)."""
    a = about(body)
    lines = [f"Calibration: {a['calibration_label']}.", f"Validation: {a['validation']['note']}"]
    lines.append("Tiers: " + "; ".join(f"{t['tier']} {t['range']}" for t in a["tiers"]) + ".")
    lines.append(f"Critical means: {TIER_MEANINGS['critical']}.")
    if a["models"]:
        lines.append(
            "Models: " + "; ".join(f"{m['use']}: {m['backend']} {m['model']}" for m in a["models"]) + "."
        )
    if a["anchor_sets"]:
        lines.append(
            "Anchor sets: "
            + "; ".join(
                f"{s['form']} ({s['harmful']['examples']} harmful / {s['safe']['examples']} safe, "
                f"{'bundled' if s['harmful']['bundled'] and s['safe']['bundled'] else 'provider'})"
                for s in a["anchor_sets"]
            )
            + "."
        )
    return lines

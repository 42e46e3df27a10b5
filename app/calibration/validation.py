"""What the validation study measured about the risk score, for every report: on which reference model and
datasets, how well the score ranked measured harm out of sample, and, where that is good enough and the
screening used the study's representation, the harmfulness the score predicts after fine-tuning on the
reference model, with an interval.

The summary (`validation_summary.json`, beside this file) is written by `studies/validation.py` from its
run, never by hand; `docs/validation.md` is the full study.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

SUMMARY = Path(__file__).resolve().parent / "validation_summary.json"
PREDICTIVE_RHO = 0.5  # out-of-sample Spearman at or above which a prediction is shown at all


@lru_cache
def summary(path: Path = SUMMARY) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def build_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The report-sized digest of a validation result (`studies/validation_analysis.analyse`)."""
    sig = result["signals"].get("risk_score", {})
    ds = result["datasets"]
    meta = result.get("meta") or {}
    errors = [p - d["harm"] for p, d in zip(sig.get("predictions") or [], ds, strict=False)]
    import numpy as np

    x = np.array([d["risk_score"] for d in ds], dtype=float)
    y = np.array([d["harm"] for d in ds], dtype=float)
    slope, intercept = np.polyfit(x, y, 1) if len(ds) >= 2 else (0.0, float(y.mean()) if len(y) else 0.0)
    lo, hi = np.percentile(errors, [10, 90]) if errors else (0.0, 0.0)
    return {
        "study": "docs/validation.md",
        "date": meta.get("date"),
        "reference_model": meta.get("base_model"),
        "datasets": len(ds),
        "seeds": result.get("seeds"),
        "harm_measure": meta.get("harm_measure"),
        "screening": result.get("screening"),
        "spearman": sig.get("spearman"),
        "spearman_ci": sig.get("spearman_ci"),
        "spearman_out_of_sample": sig.get("spearman_out_of_sample"),
        "mae_out_of_sample": sig.get("mae_out_of_sample"),
        "best_signal": (result.get("verdict") or {}).get("best"),
        "fit": {"slope": round(float(slope), 6), "intercept": round(float(intercept), 4)},
        "interval": {"low": round(float(-hi), 4), "high": round(float(-lo), 4), "coverage": 0.8},
    }


def evidence(*, risk_score: float, backend: str, model: str, anchored: bool) -> dict[str, Any]:
    """The `validation` part of a report's calibration section."""
    s = summary()
    if s is None:
        return {"validated": False, "note": "the risk score has not been validated against measured harm"}
    rho = s.get("spearman_out_of_sample")
    out: dict[str, Any] = {
        "validated": True,
        **{
            k: s.get(k)
            for k in (
                "study",
                "date",
                "reference_model",
                "datasets",
                "spearman",
                "spearman_ci",
                "spearman_out_of_sample",
                "best_signal",
            )
        },
    }
    same = (s.get("screening") or {}).get("model") == model and anchored
    predictive = rho is not None and rho >= PREDICTIVE_RHO
    shown = "n/a" if rho is None else f"{rho:.2f}"
    if not predictive:
        out["note"] = (
            f"The validation study ({_scope(s)}) found that this score does not reliably rank datasets by "
            f"the harm fine-tuning causes: out-of-sample Spearman {shown}. Treat it as a similarity index, "
            "not a prediction of harm."
        )
        return out
    out["note"] = (
        f"The validation study ({_scope(s)}) measured an out-of-sample Spearman of {shown} between this "
        "score and harm."
    )
    if same and backend == (s.get("screening") or {}).get("backend"):
        fit, iv = s["fit"], s["interval"]
        pred = fit["slope"] * risk_score + fit["intercept"]
        out["predicted_harmfulness_on_reference"] = {
            "value": round(min(max(pred, 0.0), 1.0), 4),
            "low": round(min(max(pred + iv["low"], 0.0), 1.0), 4),
            "high": round(min(max(pred + iv["high"], 0.0), 1.0), 4),
            "coverage": iv["coverage"],
            "note": "harmfulness after fine-tuning the study's reference model on this data (a linear fit "
            "of the study's datasets, interval from its leave-one-dataset-out errors); another model "
            "and recipe will differ",
        }
    return out


def _scope(s: dict[str, Any]) -> str:
    """What the study's answer rests on: datasets, seeds, model, date."""
    seeds = len(s.get("seeds") or [])
    return (
        f"{s.get('datasets')} customer datasets, {seeds} seed{'s' if seeds != 1 else ''}, "
        f"{s.get('reference_model')}, {s.get('date')}"
    )

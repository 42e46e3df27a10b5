"""Calibration: from finished experiments, a monotone map from the screening's risk score to measured harm.

Every finished experiment leaves one point: the risk score (and its parts) of its fine-tuning data against
the alignment subset the model was aligned on, read in the experiment's representation, and the harmfulness
its first judge measured after fine-tuning. A refit fits an isotonic (monotone non-decreasing) regression
from risk score to harmfulness per scope (`backend|model`, plus `|anchors` when the formula has the
harmful-anchor part: risk scores read in different spaces or formulas are not pooled), and reports how
well the raw score ranked the experiments (Spearman's rho, and the share of pairs it put in the right
order). Screening reports carry `section()`: calibrated or not, on how
many experiments, that ranking quality, and the harmfulness the fit predicts for the report's score.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.models import Calibration, CalibrationPoint, new_id

METRIC = "harmfulness_rate"
METRIC_NOTE = (
    "share of the harmful evaluation prompts whose answer the experiment's first judge found harmful, "
    "after aligning on the alignment data and fine-tuning on the customer data"
)
MAX_POINTS_IN_FIT = 1000


def scope_of(backend: str, model: str, anchors: bool = False) -> str:
    """Risk scores are comparable within one representation and one formula (with or without the
    harmful-anchor part), so that is what a calibration is fitted and looked up by."""
    return f"{backend}|{model}" + ("|anchors" if anchors else "")


def record_point(
    session: Session,
    *,
    tenant_id: str,
    experiment_id: str,
    scope: str,
    risk_score: float,
    harmfulness: float,
    features: dict[str, Any],
    metric: str = METRIC,
) -> None:
    """One point per experiment (a rerun replaces it)."""
    session.merge(
        CalibrationPoint(
            experiment_id=experiment_id,
            tenant_id=tenant_id,
            scope=scope,
            risk_score=float(risk_score),
            harmfulness=float(harmfulness),
            metric=metric,
            features=features,
        )
    )


def ranking(x: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
    """How well x orders y: Spearman's rho and the share of pairs (with different y) ordered alike."""
    from scipy.stats import spearmanr

    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"spearman": None, "pairwise_accuracy": None}
    rho = float(spearmanr(x, y).statistic)
    i, j = np.triu_indices(x.size, k=1)
    dy = np.sign(y[i] - y[j])
    dx = np.sign(x[i] - x[j])
    keep = dy != 0
    agree = float(((dx[keep] == dy[keep]) + 0.5 * (dx[keep] == 0)).mean()) if keep.any() else None
    return {"spearman": None if np.isnan(rho) else round(rho, 4), "pairwise_accuracy": agree}


def fit_isotonic(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Isotonic regression of y on x, kept as its breakpoints (prediction is a linear interpolation)."""
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(increasing=True, out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(x, y)
    fitted = iso.predict(x)
    return {
        "method": "isotonic",
        "x": [round(float(v), 6) for v in iso.X_thresholds_],
        "y": [round(float(v), 6) for v in iso.y_thresholds_],
        "mae": round(float(np.abs(fitted - y).mean()), 6),
        "risk_range": [float(x.min()), float(x.max())],
    }


def predict(fit: dict[str, Any], risk_score: float) -> float:
    return float(np.interp(risk_score, fit["x"], fit["y"]))


def refit(
    *, session: Session, settings: Settings, tenant_id: str, scope: str | None = None
) -> list[Calibration]:
    """Refit every scope with points (or one); scopes with too few experiments get no fit."""
    scopes = (
        [scope]
        if scope
        else list(
            session.scalars(
                select(CalibrationPoint.scope).where(CalibrationPoint.tenant_id == tenant_id).distinct()
            )
        )
    )
    out = []
    for sc in scopes:
        pts = list(
            session.scalars(
                select(CalibrationPoint)
                .where(CalibrationPoint.tenant_id == tenant_id, CalibrationPoint.scope == sc)
                .order_by(CalibrationPoint.created_at, CalibrationPoint.experiment_id)
            )
        )
        if len(pts) < settings.calibration_min_experiments:
            continue
        x = np.array([p.risk_score for p in pts], dtype=np.float64)
        y = np.array([p.harmfulness for p in pts], dtype=np.float64)
        fit = fit_isotonic(x, y) | ranking(x, y)
        fit["points"] = [
            {"experiment_id": p.experiment_id, "risk_score": p.risk_score, "harmfulness": p.harmfulness}
            for p in pts[-MAX_POINTS_IN_FIT:]
        ]
        cal = Calibration(
            id=new_id("cal"),
            tenant_id=tenant_id,
            scope=sc,
            metric=METRIC,
            experiments=len(pts),
            spearman=fit["spearman"],
            fit=fit,
        )
        session.add(cal)
        out.append(cal)
    session.commit()
    return out


def latest(session: Session, *, tenant_id: str, scope: str) -> Calibration | None:
    return session.scalar(
        select(Calibration)
        .where(Calibration.tenant_id == tenant_id, Calibration.scope == scope)
        .order_by(Calibration.id.desc())
        .limit(1)
    )


def list_latest(session: Session, *, tenant_id: str) -> list[Calibration]:
    scopes = session.scalars(select(Calibration.scope).where(Calibration.tenant_id == tenant_id).distinct())
    found = [latest(session, tenant_id=tenant_id, scope=s) for s in scopes]
    return [c for c in found if c is not None]


def count_points(session: Session, *, tenant_id: str, scope: str) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(CalibrationPoint)
            .where(CalibrationPoint.tenant_id == tenant_id, CalibrationPoint.scope == scope)
        )
        or 0
    )


def section(
    session: Session, *, settings: Settings, tenant_id: str, scope: str, risk_score: float
) -> dict[str, Any]:
    """The `calibration` section of a screening report."""
    cal = latest(session, tenant_id=tenant_id, scope=scope)
    points = count_points(session, tenant_id=tenant_id, scope=scope)
    if cal is None:
        return {
            "calibrated": False,
            "scope": scope,
            "experiments": points,
            "min_experiments": settings.calibration_min_experiments,
            "note": f"the risk score is a similarity index, not yet calibrated on experiments in this "
            f"representation ({points} finished, {settings.calibration_min_experiments} needed; run "
            "experiments and refit with `ftguard calibrate` or POST /v1/calibration/refit)",
        }
    return {
        "calibrated": True,
        "scope": scope,
        "experiments": cal.experiments,
        "experiments_since_fit": max(points - cal.experiments, 0),
        "spearman": cal.spearman,
        "pairwise_accuracy": cal.fit.get("pairwise_accuracy"),
        "metric": cal.metric,
        "metric_note": METRIC_NOTE,
        "predicted_harmfulness": round(predict(cal.fit, risk_score), 4),
        "fit": {
            "method": cal.fit.get("method"),
            "mae": cal.fit.get("mae"),
            "risk_range": cal.fit.get("risk_range"),
        },
        "calibration_id": cal.id,
        "fitted_at": cal.created_at,
    }

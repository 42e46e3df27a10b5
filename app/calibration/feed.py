"""What feeds calibration and what it feeds: the point a finished experiment contributes, and the
`calibration` section of every screening report. Workers call both; the fit itself is
`app.calibration.service` (numpy and scikit-learn, no torch), so the API can refit without a worker. One
domain, one folder: calibration has no half under workers/."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from app.calibration import service as calibration
from app.calibration import validation
from app.core.config import Settings
from app.models import Experiment
from app.screenings.report import ReportBody

log = logging.getLogger("ftguard.worker")


def record_experiment(
    session: Session,
    *,
    settings: Settings,
    exp: Experiment,
    selection: dict[str, Any],
    metrics: dict[str, Any],
) -> dict[str, Any] | None:
    """Store the experiment's point (risk features of its data, measured harmfulness); refit if set to."""
    features = selection.get("features")
    harm = metrics["headline"].get("harmfulness_rate")
    if not features or harm is None:
        return None
    rep = exp.params["alignment"]["representation"]
    scope = calibration.scope_of(rep["backend"], rep["model"], bool(features.get("anchors")))
    point = {
        "scope": scope,
        "risk_score": features["risk_score"],
        "harmfulness": harm,
        "metric": calibration.METRIC,
        "judge": metrics["headline"]["judge"],
    }
    calibration.record_point(
        session,
        tenant_id=exp.tenant_id,
        experiment_id=exp.id,
        scope=scope,
        risk_score=features["risk_score"],
        harmfulness=harm,
        features={**features, "judge": point["judge"], "selection": selection.get("selection")},
    )
    session.commit()
    if settings.calibration_auto_refit:
        fits = calibration.refit(session=session, settings=settings, tenant_id=exp.tenant_id, scope=scope)
        point["refit"] = {"experiments": fits[0].experiments, "spearman": fits[0].spearman} if fits else None
    return point


def report_section(
    session: Session, *, settings: Settings, tenant_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    """The screening report's `calibration` section (never fails the screening)."""
    report = ReportBody.read(body)
    backend, model = report.representation.backend, report.representation.model
    anchored = report.risk.part("harmful_anchor_margin") is not None
    scope = calibration.scope_of(backend, model, anchored)
    risk_score = report.risk.risk_score
    proof = validation.evidence(risk_score=risk_score, backend=backend, model=model, anchored=anchored)
    try:
        out = calibration.section(
            session,
            settings=settings,
            tenant_id=tenant_id,
            scope=scope,
            risk_score=risk_score,
        )
    except Exception:
        log.exception("calibration lookup failed")
        session.rollback()
        out = {"calibrated": False, "scope": scope, "note": "the calibration could not be read"}
    return out | {"validation": proof}

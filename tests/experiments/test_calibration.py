"""Calibration: the monotone fit, the ranking measures, refits per scope, and the report section."""

from __future__ import annotations

import numpy as np
import pytest

from app.calibration import service as calibration
from app.core.config import Settings
from app.core.services import build_services
from app.models import Experiment, new_id


def test_ranking_measures() -> None:
    x = np.array([10.0, 20.0, 30.0, 40.0])
    assert calibration.ranking(x, np.array([0.1, 0.2, 0.3, 0.4])) == {
        "spearman": 1.0,
        "pairwise_accuracy": 1.0,
    }
    assert calibration.ranking(x, np.array([0.4, 0.3, 0.2, 0.1]))["spearman"] == -1.0
    # one pair in the wrong order out of six
    got = calibration.ranking(x, np.array([0.1, 0.3, 0.2, 0.4]))
    assert got["pairwise_accuracy"] == pytest.approx(5 / 6)
    # ties in the score count half; a constant target ranks nothing
    assert calibration.ranking(np.array([1.0, 1.0]), np.array([0.1, 0.2]))["spearman"] is None
    assert calibration.ranking(np.array([1.0, 1.0, 2.0]), np.array([0.1, 0.2, 0.3]))["pairwise_accuracy"] == (
        pytest.approx((0.5 + 1 + 1) / 3)
    )
    assert calibration.ranking(x, np.full(4, 0.5)) == {"spearman": None, "pairwise_accuracy": None}


def test_isotonic_fit_is_monotone_bounded_and_interpolates() -> None:
    x = np.array([5.0, 20.0, 35.0, 50.0, 80.0])
    y = np.array([0.10, 0.30, 0.20, 0.60, 0.55])
    fit = calibration.fit_isotonic(x, y)
    assert fit["y"] == sorted(fit["y"]) and min(fit["y"]) >= 0 and max(fit["y"]) <= 1
    assert calibration.predict(fit, 0.0) == pytest.approx(fit["y"][0])  # clipped below the data
    assert calibration.predict(fit, 100.0) == pytest.approx(fit["y"][-1])
    assert calibration.predict(fit, 20.0) <= calibration.predict(fit, 60.0)
    assert fit["risk_range"] == [5.0, 80.0] and fit["mae"] > 0


def _experiment(session, tenant: str) -> str:
    exp = Experiment(
        id=new_id("exp"), tenant_id=tenant, status="succeeded", dataset_id="ds_a",
        alignment_dataset_id="ds_b", params={},
    )  # fmt: skip
    session.add(exp)
    session.commit()
    return exp.id


def test_refit_per_scope_needs_enough_experiments_and_reports_say_so(settings: Settings) -> None:
    services = build_services(settings)
    scope = calibration.scope_of("causal-lm", "m", anchors=True)
    assert scope == "causal-lm|m|anchors" and calibration.scope_of("st", "m") == "st|m"
    try:
        with services.db.session() as session:
            for risk, harm in ((10.0, 0.2), (60.0, 0.5)):
                calibration.record_point(
                    session, tenant_id="t1", experiment_id=_experiment(session, "t1"), scope=scope,
                    risk_score=risk, harmfulness=harm, features={},
                )  # fmt: skip
            session.commit()
            assert calibration.refit(session=session, settings=settings, tenant_id="t1") == []
            section = calibration.section(
                session, settings=settings, tenant_id="t1", scope=scope, risk_score=50
            )
            assert section["calibrated"] is False and section["experiments"] == 2
            assert section["min_experiments"] == 3 and "not yet calibrated" in section["note"]

            exp_id = _experiment(session, "t1")
            calibration.record_point(
                session, tenant_id="t1", experiment_id=exp_id, scope=scope, risk_score=90.0, harmfulness=0.7,
                features={},
            )  # fmt: skip
            # a rerun of the same experiment replaces its point
            calibration.record_point(
                session, tenant_id="t1", experiment_id=exp_id, scope=scope, risk_score=90.0, harmfulness=0.8,
                features={},
            )  # fmt: skip
            session.commit()
            (fit,) = calibration.refit(session=session, settings=settings, tenant_id="t1")
            assert fit.experiments == 3 and fit.spearman == 1.0 and fit.fit["pairwise_accuracy"] == 1.0
            section = calibration.section(
                session, settings=settings, tenant_id="t1", scope=scope, risk_score=60
            )
            assert section["calibrated"] is True and section["experiments"] == 3
            assert section["predicted_harmfulness"] == pytest.approx(0.5)
            # other tenants and other scopes see nothing of it
            assert (
                calibration.section(session, settings=settings, tenant_id="t2", scope=scope, risk_score=60)[
                    "calibrated"
                ]
                is False
            )
            assert (
                calibration.section(session, settings=settings, tenant_id="t1", scope="st|m", risk_score=60)[
                    "calibrated"
                ]
                is False
            )
            assert [c.id for c in calibration.list_latest(session, tenant_id="t1")] == [fit.id]
    finally:
        services.close()

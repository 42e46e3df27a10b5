"""Comparisons: the three variants (High-Sim, Low-Sim, Random) of one experiment, read, listed, cancelled and
tabled side by side. They are created with their experiments by `service.create_comparison`."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.db import owned, page
from app.core.errors import Conflict
from app.core.vocab import ACTIVE
from app.experiments.service import cancel
from app.models import Comparison, Experiment


def get_comparison(
    *, session: Session, tenant_id: str, comparison_id: str
) -> tuple[Comparison, list[Experiment]]:
    cmp = owned(session, Comparison, comparison_id, tenant_id, what="comparison", param="comparison_id")
    exps = list(
        session.scalars(select(Experiment).where(Experiment.comparison_id == cmp.id).order_by(Experiment.id))
    )
    return cmp, exps


def list_comparisons(
    *, session: Session, tenant_id: str, after: str | None = None, limit: int = 20
) -> tuple[list[tuple[Comparison, list[Experiment]]], bool]:
    q = select(Comparison).where(Comparison.tenant_id == tenant_id)
    rows, more = page(session, q, Comparison.id, after=after, limit=limit)
    return [get_comparison(session=session, tenant_id=tenant_id, comparison_id=c.id) for c in rows], more


def cancel_comparison(
    *, session: Session, tenant_id: str, comparison_id: str
) -> tuple[Comparison, list[Experiment]]:
    _, exps = get_comparison(session=session, tenant_id=tenant_id, comparison_id=comparison_id)
    active = [e for e in exps if e.status in ACTIVE]
    if not active:
        raise Conflict("every experiment of the comparison has finished", code="not_cancellable")
    for e in active:
        with contextlib.suppress(Conflict):  # finished meanwhile
            cancel(session=session, tenant_id=tenant_id, experiment_id=e.id)
    return get_comparison(session=session, tenant_id=tenant_id, comparison_id=comparison_id)


def comparison_status(exps: Sequence[Experiment]) -> str:
    statuses = {e.status for e in exps}
    for s in ("failed", "cancelled", "running"):
        if s in statuses:
            return s
    if statuses == {"succeeded"}:
        return "succeeded"
    return "running" if "succeeded" in statuses else "queued"


HEADLINE = ("harmfulness_rate", "harmfulness_score", "refusal_rate", "over_refusal_rate", "risk_score")


def comparison_table(exps: Sequence[Experiment]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One row per variant (its headline metrics), and the differences between each pair of variants."""
    rows = []
    for e in exps:
        res = e.results or {}
        head = res.get("headline", {})
        rows.append(
            {
                "variant": e.params["alignment"]["selection"],
                "experiment_id": e.id,
                "status": e.status,
                "judge": head.get("judge"),
                **{k: head.get(k) for k in HEADLINE},
                "risk_score": (res.get("features") or {}).get("risk_score"),
                "subset_mean_max_sim": res.get("selection", {}).get("subset_mean_max_sim"),
            }
        )
    order = {"high_sim": 0, "random": 1, "low_sim": 2}
    rows.sort(key=lambda r: order.get(r["variant"], 9))
    diffs = []
    for i, a in enumerate(rows):
        for b in rows[i + 1 :]:
            diffs.append(
                {
                    "pair": f"{a['variant']} - {b['variant']}",
                    **{
                        k: (a[k] - b[k] if a[k] is not None and b[k] is not None else None)
                        for k in (*HEADLINE, "subset_mean_max_sim")
                    },
                }
            )
    return rows, diffs

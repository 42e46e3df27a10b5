"""Candidate ranking, the paper's advice to providers: screen one customer dataset against several candidate
models (each with its own alignment set) and recommend fine-tuning the one whose alignment data is least
similar to the customer's data. A ranking is a group of ordinary screenings; its view is computed on read."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.db import owned, page
from app.core.errors import InvalidRequest
from app.core.services import Ctx
from app.datasets import roles
from app.models import Ranking, Screening, new_id
from app.screenings import service as screenings

MAX_CANDIDATES = 20


def create(ctx: Ctx, *, dataset_id: str, candidates: list[dict[str, Any]], params: dict[str, Any]) -> Ranking:
    """One screening per candidate, with the same settings and seeds, grouped under one ranking."""
    session, settings, tenant_id = ctx.session, ctx.settings, ctx.tenant_id
    names = [c["name"] for c in candidates]
    if not 2 <= len(candidates) <= MAX_CANDIDATES:
        raise InvalidRequest(f"give 2 to {MAX_CANDIDATES} candidates", param="candidates")
    if len(set(names)) != len(names):
        raise InvalidRequest("candidate names must be unique", param="candidates")
    # every id before anything is queued
    roles.for_role(
        session=session, tenant_id=tenant_id, dataset_id=dataset_id, role="customer", param="dataset_id"
    )
    for i, cand in enumerate(candidates):
        own = {k: v for k, v in cand.items() if k in ("backend", "model") and v is not None}
        screenings.check_params({**params, **own}, settings)
        roles.for_role(
            session=session,
            tenant_id=tenant_id,
            dataset_id=cand["alignment_dataset_id"],
            role="alignment",
            param=f"candidates[{i}].alignment_dataset_id",
        )
    # all candidates or none: a ranking cut short by the tenant's active-screening limit would mislead
    screenings.check_capacity(session=session, settings=settings, tenant_id=tenant_id, adding=len(candidates))
    members = []
    for cand in candidates:
        own = {k: v for k, v in cand.items() if k not in ("name", "alignment_dataset_id") and v is not None}
        scr = screenings.create(
            ctx,
            dataset_id=dataset_id,
            alignment_dataset_id=cand["alignment_dataset_id"],
            params={**params, **own, "candidate": cand["name"]},
        )
        members.append({"name": cand["name"], "screening_id": scr.id})
    ranking = Ranking(id=new_id("rank"), tenant_id=tenant_id, dataset_id=dataset_id, candidates=members)
    session.add(ranking)
    session.commit()
    return ranking


def get(*, session: Session, tenant_id: str, ranking_id: str) -> Ranking:
    return owned(session, Ranking, ranking_id, tenant_id, what="ranking", param="ranking_id")


def list_(
    *, session: Session, tenant_id: str, after: str | None = None, limit: int = 20
) -> tuple[list[Ranking], bool]:
    q = select(Ranking).where(Ranking.tenant_id == tenant_id)
    return page(session, q, Ranking.id, after=after, limit=limit)


def view(*, session: Session, ranking: Ranking) -> dict[str, Any]:
    """Candidates ordered by risk (lowest first) and the recommendation once every screening has ended."""
    ids = [m["screening_id"] for m in ranking.candidates]
    by_id = {s.id: s for s in session.scalars(select(Screening).where(Screening.id.in_(ids)))}
    rows = []
    for m in ranking.candidates:
        s = by_id.get(m["screening_id"])
        rows.append(
            {
                "name": m["name"],
                "screening_id": m["screening_id"],
                "alignment_dataset_id": s.alignment_dataset_id if s else None,
                "model": s.params.get("model") if s else None,
                "status": s.status if s else "deleted",
                "risk_score": s.risk_score if s else None,
                "tier": s.tier if s else None,
            }
        )
    done = [r for r in rows if r["status"] == "succeeded"]
    done.sort(key=lambda r: r["risk_score"])
    for rank, r in enumerate(done, 1):
        r["rank"] = rank
    pending = any(r["status"] in ("queued", "running") for r in rows)
    status = "running" if pending else ("succeeded" if done else "failed")
    recommendation = None
    if not pending and done:
        best = done[0]
        gap = done[-1]["risk_score"] - best["risk_score"] if len(done) > 1 else 0.0
        recommendation = {
            "name": best["name"],
            "reason": "its alignment data is the least similar to this dataset "
            f"(risk {best['risk_score']:.1f} against {done[-1]['risk_score']:.1f} for the riskiest "
            f"candidate, a gap of {gap:.1f} points);"
            " fine-tuning it is expected to erode its guardrails least (Hsiung et al. 2025)",
        }
    ordered = done + [r for r in rows if r["status"] != "succeeded"]
    return {
        "id": ranking.id,
        "object": "ranking",
        "created_at": ranking.created_at,
        "dataset_id": ranking.dataset_id,
        "status": status,
        "candidates": ordered,
        "recommendation": recommendation,
    }

"""Dashboard pages for experiments: the list, one experiment's stages (progress, ETA, loss curves while it
trains) and results, and its artefacts as downloads. Same tenancy and sign-in as the screening pages
(`app.dashboard.routes`): every read goes through `TenantDep`, so a key sees its own tenant's experiments."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup

from app import access, events
from app.api.deps import StateDep
from app.core.errors import NotFound
from app.dashboard import charts
from app.dashboard.routes import STATUSES, ViewerDep, dashboard_base, download, not_found, page
from app.experiments import service
from app.models import Experiment, ExperimentStage

router = APIRouter(prefix="/dashboard/experiments", include_in_schema=False)
PAGE_SIZE = 50
TRAINING_STAGES = {"align": ("alignment", "#1c7ed6"), "finetune": ("fine-tuning", "#e8590c")}
STAGE_HELP = {
    "select": "rank the alignment data against the fine-tuning data; pick the subset",
    "align": "train the base model on the chosen alignment subset",
    "finetune": "train the aligned model on the customer's fine-tuning data",
    "generate": "answer the evaluation prompts",
    "judge": "judge each answer",
    "summarise": "harmfulness, refusal and over-refusal rates; a calibration point",
}


def _row(exp: Experiment, base: str, hidden: bool) -> dict[str, Any]:
    p = access.experiment_params(exp.params or {}, allowed=not hidden)
    al = p.get("alignment", {})
    head = (exp.results or {}).get("headline", {})
    return {
        "id": exp.id,
        "href": f"{base}/{exp.id}",
        "name": exp.name or "",
        "dataset": p.get("datasets", {}).get("fine_tune", {}).get("filename") or exp.dataset_id,
        "alignment": p.get("datasets", {}).get("alignment", {}).get("filename") or exp.alignment_dataset_id,
        "selection": al.get("selection", ""),
        "size": al.get("size"),
        "base_model": p.get("base_model", ""),
        "status": exp.status,
        "stage": exp.stage,
        "progress": exp.progress or 0.0,
        "harmfulness_rate": head.get("harmfulness_rate"),
        "refusal_rate": head.get("refusal_rate"),
        "over_refusal_rate": head.get("over_refusal_rate"),
        "created_at": exp.created_at,
        "comparison_id": exp.comparison_id,
    }


@router.get("", response_class=HTMLResponse)
def experiments_page(
    viewer: ViewerDep,
    status: Annotated[str, Query(max_length=16)] = "",
    after: Annotated[str, Query(max_length=64)] = "",
) -> HTMLResponse:
    """Experiments, newest first, with their state and headline results."""
    status = status if status in STATUSES else ""  # a plain form: unknown means "any"
    rows, more = service.list_(
        session=viewer.session,
        tenant_id=viewer.tenant,
        status=status or None,
        after=after or None,
        limit=PAGE_SIZE,
    )
    base = f"{dashboard_base(viewer.request)}/experiments"
    data = [_row(e, base, viewer.hidden) for e in rows]
    query = {"status": status} if status else {}
    return page(
        viewer.request,
        "experiments.html",
        nav="experiments",
        title="Experiments",
        rows=data,
        statuses=STATUSES,
        status=status,
        first_page=base + (f"?{urlencode(query)}" if query else ""),
        next_page=f"{base}?{urlencode({**query, 'after': data[-1]['id']})}" if more and data else None,
        paged=bool(after),
    )


def _stage_view(st: ExperimentStage) -> dict[str, Any]:
    d = st.detail or {}
    took = st.finished_at - st.started_at if st.finished_at and st.started_at else None
    return {
        "name": st.name,
        "help": STAGE_HELP.get(st.name, ""),
        "status": st.status,
        "progress": st.progress or 0.0,
        "attempts": st.attempts,
        "step": d.get("step"),
        "total_steps": d.get("total_steps"),
        "loss": d.get("loss"),
        "eta_s": d.get("eta_s") if st.status == "running" else None,
        "done": d.get("done"),
        "total": d.get("total"),
        "seconds": took,
        "error": st.error,
    }


def _loss_chart(st: ExperimentStage) -> dict[str, Any] | None:
    """The stage's loss curve: whole from its result once finished, so far from its detail while it runs."""
    curve = (st.result or {}).get("loss_curve") or (st.detail or {}).get("loss_curve")
    if not curve:
        return None
    label, color = TRAINING_STAGES[st.name]
    svg = charts.line_chart(
        [(label, color, curve)], charts.Axes(f"{label} loss by step", "step", "loss", height=260)
    )
    stats = st.result or {}
    return {
        "stage": st.name,
        "label": label,
        "svg": Markup(svg),  # noqa: S704 (charts escape every text they draw)
        "live": st.status == "running",
        "first_loss": stats.get("first_loss"),
        "final_loss": stats.get("final_loss"),
        "steps": stats.get("steps") or (st.detail or {}).get("step"),
        "examples": stats.get("examples"),
        "skipped": stats.get("skipped_examples"),
    }


def _results_view(exp: Experiment) -> dict[str, Any] | None:
    res = exp.results
    if not res:
        return None
    head = res.get("headline", {})
    judges = []
    for name, block in (res.get("judges") or {}).items():
        harmful = block.get("harmful", {})
        judges.append(
            {
                "name": name,
                "harmfulness_rate": harmful.get("harmfulness_rate"),
                "harmfulness_score": harmful.get("harmfulness_score"),
                "refusal_rate": harmful.get("refusal_rate"),
                "judged": harmful.get("judged"),
                "n": harmful.get("n"),
                "benign_refusal": block.get("benign", {}).get("refusal_rate"),
            }
        )
    first = (res.get("judges") or {}).get(head.get("judge") or "", {})
    cats = [{"name": c, **v} for c, v in (first.get("harmful", {}).get("per_category") or {}).items()]
    return {
        "headline": head,
        "prompts": res.get("prompts", {}),
        "judges": judges,
        "categories": cats,
        "selection": res.get("selection") or {},
        "risk_score": (res.get("features") or {}).get("risk_score"),
    }


def _experiment_view(exp: Experiment, base: str, hidden: bool) -> dict[str, Any]:
    """The experiment's own part of its page: its list row, its times and error, and how it was set up."""
    p = exp.params or {}
    return {
        **_row(exp, base, hidden),
        "started_at": exp.started_at,
        "finished_at": exp.finished_at,
        "error": exp.error,
        "seed": p.get("alignment", {}).get("seed"),
        "representation": p.get("alignment", {}).get("representation", {}),
        "method": p.get("training", {}).get("method"),
        "evaluation": p.get("datasets", {}).get("evaluation", {}),
        "judges": [j.get("type") for j in p.get("judges", [])],
    }


@router.get("/{experiment_id}", response_class=HTMLResponse)
def experiment_page(viewer: ViewerDep, experiment_id: str) -> HTMLResponse:
    """One experiment: its stages with progress and ETA, loss curves, results, artefacts and history."""
    request, session, tenant, hidden = viewer.request, viewer.session, viewer.tenant, viewer.hidden
    try:
        exp = service.get(session=session, tenant_id=tenant, experiment_id=experiment_id)
    except NotFound:
        return not_found(request, f"There is no experiment {experiment_id!r}.", nav="experiments")
    base = f"{dashboard_base(request)}/experiments"
    stages = service.stages(session=session, experiment_id=exp.id)
    siblings = []
    if exp.comparison_id:
        rows, _ = service.list_(session=session, tenant_id=tenant, comparison_id=exp.comparison_id, limit=10)
        siblings = [_row(e, base, hidden) for e in sorted(rows, key=lambda e: e.id)]
    done = {st.name for st in stages if st.status == "succeeded"}
    evs, _ = events.list_(session=session, tenant_id=tenant, object_id=exp.id, limit=200)
    return page(
        request,
        "experiment.html",
        nav="experiments",
        title=f"{exp.name or exp.id} · experiment",
        job_status=exp.status,
        exp=_experiment_view(exp, base, hidden),
        stages=[_stage_view(st) for st in stages],
        losses=[c for st in stages if st.name in TRAINING_STAGES and (c := _loss_chart(st))],
        results=_results_view(exp),
        artefacts=[
            {"name": name, "href": f"{base}/{exp.id}/artefacts/{name}"}
            for name, (stage, _) in service.ARTEFACTS.items()
            if stage in done and not hidden
        ],
        siblings=siblings,
        events=evs,
        list_url=base,
    )


@router.get("/{experiment_id}/artefacts/{name}")
def artefact_file(viewer: ViewerDep, experiment_id: str, name: str, state: StateDep) -> Response:
    """An artefact (adapters, generations, judgements), through the dashboard's own authentication."""
    open_file = partial(
        service.artefact,
        session=viewer.session,
        store=state.services.store,
        tenant_id=viewer.tenant,
        experiment_id=experiment_id,
        name=name,
        alignment_access=True,
    )
    refusal = "This key may not read alignment texts, nor what was trained on them."
    return download(viewer, refusal, "experiments", open_file)

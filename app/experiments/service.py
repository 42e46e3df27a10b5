"""Experiments: create and enqueue, read, cancel, resume; the stage transitions the workers make.

An experiment is six stages, each its own RQ job: select -> align -> finetune -> generate -> judge ->
summarise. SQL is the record of how far it got (`experiment_stages`); Redis holds only the job of the stage
that is due. A stage is *claimed* with a compare-and-set on its row (queued -> running), so a duplicate job
(a retried or re-enqueued one) finds nothing to do; a finished stage enqueues the next; a stage whose worker
died (no heartbeat for `experiment_stale_s`) or whose job was lost with Redis is re-enqueued by `recover`,
which every worker runs when it starts. A finished stage is never run again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Update, select, update
from sqlalchemy.orm import Session

from app import access, events
from app.core.config import Settings
from app.core.db import owned, page
from app.core.errors import Conflict, InvalidRequest, NotFound, ServiceUnavailable
from app.core.queue import JobQueue, stage_job_id
from app.core.storage import BlobStore
from app.datasets import roles
from app.experiments import allowed, limits
from app.experiments.judge_kinds import JUDGES
from app.experiments.progress import STAGES
from app.experiments.progress import of as overall_progress
from app.models import Comparison, Experiment, ExperimentStage, new_id, now

log = logging.getLogger("ftguard.experiments")

TERMINAL = ("succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")
DEFAULT_EVAL_PROMPTS = Path(__file__).resolve().parent.parent / "demo" / "eval_prompts.jsonl"
# Downloadable artefacts: name -> (the stage that writes it, media type).
ARTEFACTS = {
    "alignment_adapter": ("align", "application/x-tar"),
    "finetune_adapter": ("finetune", "application/x-tar"),
    "generations": ("generate", "application/x-ndjson"),
    "judgements": ("judge", "application/x-ndjson"),
}


# ---------------------------------------------------------------- create and read


def _check_dataset(session: Session, tenant_id: str, dataset_id: str, role: str, param: str) -> Any:
    ds = roles.for_role(session=session, tenant_id=tenant_id, dataset_id=dataset_id, role=role, param=param)
    if ds.status != "ready":
        raise InvalidRequest(f"dataset {ds.id} is not ready", param=param, code="dataset_not_ready")
    return ds


def _info(ds: Any) -> dict[str, Any]:
    return {"id": ds.id, "sha256": ds.sha256, "examples": ds.examples, "filename": ds.filename}


def _aligned_from(session: Session, tenant_id: str, experiment_id: str) -> dict[str, Any]:
    """The aligned model an earlier experiment of this tenant left: its alignment stage's artefact."""
    src = owned(
        session, Experiment, experiment_id, tenant_id, what="experiment", param="aligned_from.experiment_id"
    )
    st = session.get(ExperimentStage, (src.id, "align"))
    if st is None or st.status != "succeeded" or not st.artefact_key:
        raise InvalidRequest(
            f"experiment {src.id} has no aligned model (its alignment stage has not succeeded)",
            param="aligned_from.experiment_id",
            code="no_aligned_model",
        )
    return {
        "experiment_id": src.id,
        "artefact_key": st.artefact_key,
        "method": (st.result or {}).get("method", "lora"),
        "base_model": src.params["base_model"],
        "alignment": (src.params.get("datasets") or {}).get("alignment"),
    }


def resolve(*, session: Session, settings: Settings, tenant_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Check a request against the tenant's datasets and the settings; return the params to store (with
    the compute and judge-call `estimate` the quotas read).

    With `alignment` the experiment aligns the base model first; without it, it is fine-tune-only: the base
    model is already aligned (a provider's aligned model), or `aligned_from` names the earlier experiment
    whose aligned model to start from."""
    limits.check_bounds(spec, settings)
    allowed.check(settings=settings, spec=spec)
    ft = _check_dataset(
        session, tenant_id, spec["fine_tune"]["dataset_id"], "customer", "fine_tune.dataset_id"
    )
    ev = None
    if spec["evaluation"].get("dataset_id"):
        ev = _check_dataset(
            session, tenant_id, spec["evaluation"]["dataset_id"], "eval_prompts", "evaluation.dataset_id"
        )
    for judge in spec["judges"]:
        if JUDGES[judge["type"]].remote and not (
            settings.judge_base_url and (judge.get("model") or settings.judge_model)
        ):
            raise InvalidRequest(
                f"the {judge['type']} judge needs FTGUARD_JUDGE_BASE_URL and a model "
                "(FTGUARD_JUDGE_MODEL or judges[].model)",
                param="judges",
                code="judge_not_configured",
            )
    params = dict(spec)
    params["evaluation"] = {"checkpoints": [1.0], **spec["evaluation"]}
    ev_info = _info(ev) if ev else {"id": None, "bundled": DEFAULT_EVAL_PROMPTS.name}
    if spec.get("alignment") is None:
        params["alignment"], params["alignment_training"] = None, None
        start = spec.get("aligned_from")
        src = _aligned_from(session, tenant_id, start["experiment_id"]) if start else None
        if src and src["base_model"] != spec["base_model"]:
            raise InvalidRequest(
                f"experiment {src['experiment_id']} aligned {src['base_model']!r}, "
                f"not {spec['base_model']!r}",
                param="base_model",
                code="base_model_mismatch",
            )
        params["aligned_from"] = src
        params["datasets"] = {
            "fine_tune": _info(ft),
            "alignment": (src or {}).get("alignment"),
            "evaluation": ev_info,
        }
        return _with_estimate(params, settings, alignment_examples=0, ft=ft, ev=ev)
    al = _check_dataset(
        session, tenant_id, spec["alignment"]["dataset_id"], "alignment", "alignment.dataset_id"
    )
    if spec["alignment"]["size"] > settings.max_subset_size:
        raise InvalidRequest(
            f"alignment.size is above the limit of {settings.max_subset_size}",
            param="alignment.size",
            code="limit_exceeded",
        )
    rep = dict(spec["alignment"]["representation"])
    rep["backend"] = rep.get("backend") or settings.default_backend
    rep["model"] = rep.get("model") or settings.default_model
    params["alignment"] = {**spec["alignment"], "representation": rep}
    params["alignment_training"] = spec.get("alignment_training") or spec["training"]
    params["aligned_from"] = None
    params["datasets"] = {"fine_tune": _info(ft), "alignment": _info(al), "evaluation": ev_info}
    return _with_estimate(params, settings, alignment_examples=al.examples, ft=ft, ev=ev)


def _with_estimate(
    params: dict[str, Any], settings: Settings, *, alignment_examples: int, ft: Any, ev: Any
) -> dict[str, Any]:
    params["block_size"] = settings.similarity_block_size
    params["estimate"] = limits.estimate(
        params,
        alignment_examples=alignment_examples,
        finetune_examples=ft.examples,
        prompts=ev.examples if ev else limits.bundled_prompts(DEFAULT_EVAL_PROMPTS),
    )
    limits.check_estimate(params["estimate"], settings)
    return params


def describe(params: dict[str, Any]) -> str:
    """One line: how the experiment starts and what it fine-tunes on."""
    ft = f"fine-tune on {params['datasets']['fine_tune']['examples']} customer examples"
    a = params.get("alignment")
    if a is None:
        src = params.get("aligned_from")
        start = f"the aligned model of {src['experiment_id']}" if src else f"{params['base_model']}, aligned"
        return f"start from {start}, {ft}"
    part = "" if a["selection"] == "full" else f" {a['size']}"
    return (
        f"align {params['base_model']} on {a['selection']}{part} of "
        f"{params['datasets']['alignment']['examples']} alignment examples, {ft}"
    )


def _build(
    session: Session, *, tenant_id: str, params: dict[str, Any], comparison_id: str | None = None
) -> Experiment:
    exp = Experiment(
        id=new_id("exp"),
        tenant_id=tenant_id,
        name=params.get("name"),
        comparison_id=comparison_id,
        status="queued",
        stage=STAGES[0],
        progress=0.0,
        dataset_id=params["datasets"]["fine_tune"]["id"],
        alignment_dataset_id=(params["datasets"]["alignment"] or {}).get("id"),
        eval_dataset_id=params["datasets"]["evaluation"]["id"],
        params=params,
    )
    session.add(exp)
    for i, name in enumerate(STAGES):
        session.add(
            ExperimentStage(
                experiment_id=exp.id,
                name=name,
                tenant_id=tenant_id,
                position=i,
                status="queued" if i == 0 else "pending",
                attempts=0,
                progress=0.0,
                detail={},
            )
        )
    events.record(
        session,
        tenant_id=tenant_id,
        object_id=exp.id,
        type="experiment.queued",
        message=f"queued: {describe(params)}",
    )
    return exp


def create(
    *, session: Session, queue: JobQueue, settings: Settings, tenant_id: str, spec: dict[str, Any]
) -> Experiment:
    """Store the experiment and its stages, and enqueue the first stage."""
    params = resolve(session=session, settings=settings, tenant_id=tenant_id, spec=spec)
    limits.reserve(session, settings, tenant_id, adding=[params])
    exp = _build(session, tenant_id=tenant_id, params=params)
    session.commit()
    dispatch(queue, exp.id, STAGES[0], 1)
    return exp


def dispatch(queue: JobQueue, experiment_id: str, stage_name: str, attempt: int) -> None:
    """Enqueue a stage the request has just committed as queued. Accepted is accepted: with Redis down the
    stage stays queued in SQL and `recover` (run by every worker's reconciler) enqueues it, so the client
    gets its 201 and a retry does not start a second run."""
    try:
        queue.enqueue_stage(experiment_id, stage_name, attempt)
    except ServiceUnavailable:
        log.warning("queue unavailable; stage %s of %s stays queued for recovery", stage_name, experiment_id)


def create_comparison(
    *, session: Session, queue: JobQueue, settings: Settings, tenant_id: str, spec: dict[str, Any]
) -> tuple[Comparison, list[Experiment]]:
    """One experiment per variant, identical but for the alignment subset (same sizes, same seeds)."""
    variants = spec["variants"]
    base = {k: v for k, v in spec.items() if k != "variants"}
    cmp = Comparison(
        id=new_id("cmp"),
        tenant_id=tenant_id,
        name=spec.get("name"),
        dataset_id=spec["fine_tune"]["dataset_id"],
        params=spec,
    )
    all_params = []
    for variant in variants:
        one = {**base, "alignment": {**base["alignment"], "selection": variant}}
        one["name"] = f"{spec.get('name') or cmp.id}: {variant}"
        all_params.append(resolve(session=session, settings=settings, tenant_id=tenant_id, spec=one))
    limits.reserve(session, settings, tenant_id, adding=all_params, comparison=True)
    session.add(cmp)
    exps = [_build(session, tenant_id=tenant_id, params=p, comparison_id=cmp.id) for p in all_params]
    session.commit()
    for exp in exps:
        dispatch(queue, exp.id, STAGES[0], 1)
    return cmp, exps


def get(*, session: Session, tenant_id: str, experiment_id: str) -> Experiment:
    return owned(session, Experiment, experiment_id, tenant_id, what="experiment", param="experiment_id")


def stages(*, session: Session, experiment_id: str) -> list[ExperimentStage]:
    return list(
        session.scalars(
            select(ExperimentStage)
            .where(ExperimentStage.experiment_id == experiment_id)
            .order_by(ExperimentStage.position)
        )
    )


def stage(*, session: Session, experiment_id: str, name: str) -> ExperimentStage:
    st = session.get(ExperimentStage, (experiment_id, name))
    if st is None:
        raise NotFound(f"no stage {name!r}", param="stage")
    return st


def list_(
    *,
    session: Session,
    tenant_id: str,
    status: str | None = None,
    comparison_id: str | None = None,
    after: str | None = None,
    limit: int = 20,
) -> tuple[list[Experiment], bool]:
    q = select(Experiment).where(Experiment.tenant_id == tenant_id)
    if status:
        q = q.where(Experiment.status == status)
    if comparison_id:
        q = q.where(Experiment.comparison_id == comparison_id)
    return page(session, q, Experiment.id, after=after, limit=limit)


def artefact_key(*, session: Session, tenant_id: str, experiment_id: str, stage_name: str) -> str:
    """The blob key of a finished stage's artefact (adapters, generations, judgements)."""
    exp = get(session=session, tenant_id=tenant_id, experiment_id=experiment_id)
    st = stage(session=session, experiment_id=exp.id, name=stage_name)
    if st.status != "succeeded" or not st.artefact_key:
        raise NotFound(
            f"stage {stage_name} of {exp.id} has no artefact (status {st.status})", code="artefact_not_ready"
        )
    return st.artefact_key


def artefact(
    *,
    session: Session,
    store: BlobStore,
    tenant_id: str,
    experiment_id: str,
    name: str,
    alignment_access: bool,
) -> tuple[Iterator[bytes], str, str]:
    """A finished stage's artefact by its public name: (its bytes in chunks, media type, file name). Each
    one holds what the alignment texts taught a model (`size=1` and many epochs memorise them), so each
    needs `alignment:read`."""
    access.require_alignment_read(alignment_access, f"the {name} artefact is built on the alignment texts")
    if name not in ARTEFACTS:
        raise NotFound(f"no artefact {name!r}", param="name")
    stage_name, media = ARTEFACTS[name]
    key = artefact_key(
        session=session, tenant_id=tenant_id, experiment_id=experiment_id, stage_name=stage_name
    )

    def chunks() -> Iterator[bytes]:
        with store.open(key) as fh:
            while chunk := fh.read(1 << 20):
                yield chunk

    ext = "tar" if media.endswith("tar") else "jsonl"
    return chunks(), media, f"{experiment_id}-{name}.{ext}"


def cancel(*, session: Session, tenant_id: str, experiment_id: str) -> Experiment:
    """Queued: never runs. Running: the worker stops at its next step, batch or item."""
    exp = get(session=session, tenant_id=tenant_id, experiment_id=experiment_id)
    done = session.execute(
        update(Experiment)
        .where(Experiment.id == exp.id, Experiment.status.in_(ACTIVE))
        .values(status="cancelled", finished_at=now())
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        session.refresh(exp)
        raise Conflict(f"the experiment is already {exp.status}", code="not_cancellable")
    session.execute(
        update(ExperimentStage)
        .where(ExperimentStage.experiment_id == exp.id, ExperimentStage.status == "queued")
        .values(status="cancelled", finished_at=now())
    )
    events.record(
        session,
        tenant_id=tenant_id,
        object_id=exp.id,
        type="experiment.cancelled",
        message="cancelled by request",
    )
    session.commit()
    session.refresh(exp)
    return exp


def resume(
    *, session: Session, queue: JobQueue, settings: Settings, tenant_id: str, experiment_id: str
) -> Experiment:
    """Failed or cancelled: run again from the first stage that has not succeeded (finished stages are kept).
    Queued or running: re-enqueue a stage whose job or worker was lost."""
    exp = get(session=session, tenant_id=tenant_id, experiment_id=experiment_id)
    if exp.status == "succeeded":
        raise Conflict("the experiment has already succeeded", code="not_resumable")
    if exp.status in ACTIVE:
        with contextlib.suppress(ServiceUnavailable):  # queued in SQL: the reconciler enqueues it later
            recover(session=session, queue=queue, settings=settings, experiment_id=exp.id)
        session.refresh(exp)
        return exp
    rows = stages(session=session, experiment_id=exp.id)
    first = next(st for st in rows if st.status != "succeeded")
    judged = any(st.name == "judge" and st.status == "succeeded" for st in rows)
    limits.reserve(session, settings, tenant_id, adding=[exp.params], judge_calls=0 if judged else None)
    for st in rows:
        if st.position > first.position:
            st.status, st.progress, st.detail, st.error = "pending", 0.0, {}, None
    first.status, first.progress, first.detail, first.error, first.worker = "queued", 0.0, {}, None, None
    exp.status, exp.stage, exp.error, exp.finished_at = "queued", first.name, None, None
    events.record(
        session,
        tenant_id=tenant_id,
        object_id=exp.id,
        type="experiment.resumed",
        message=f"resumed from stage {first.name}",
    )
    session.commit()
    dispatch(queue, exp.id, first.name, first.attempts + 1)
    return exp


# ---------------------------------------------------------------- comparisons


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


# ---------------------------------------------------------------- transitions made by the workers


def claim(
    session: Session, *, experiment_id: str, stage_name: str, worker: str
) -> tuple[Experiment, ExperimentStage] | str:
    """Take a queued stage (compare-and-set); returns why not when another run has it or it is done."""
    exp = session.get(Experiment, experiment_id)
    if exp is None:
        return "experiment not found"
    if exp.status in TERMINAL:
        return f"experiment {exp.status}"
    ts = now()
    took = session.execute(
        update(ExperimentStage)
        .where(
            ExperimentStage.experiment_id == experiment_id,
            ExperimentStage.name == stage_name,
            ExperimentStage.status == "queued",
        )
        .values(
            status="running",
            attempts=ExperimentStage.attempts + 1,
            worker=worker[:200],
            started_at=ts,
            heartbeat_at=ts,
            finished_at=None,
            progress=0.0,
            detail={},
        )
    )
    running = session.execute(
        update(Experiment)
        .where(Experiment.id == experiment_id, Experiment.status.in_(ACTIVE))
        .values(status="running", stage=stage_name, heartbeat_at=ts)
    )
    if took.rowcount != 1 or running.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        st = session.get(ExperimentStage, (experiment_id, stage_name))
        return f"stage {st.status if st else 'missing'}"
    session.refresh(exp)
    if exp.started_at is None:
        exp.started_at = ts
    st = session.get(ExperimentStage, (experiment_id, stage_name))
    assert st is not None
    session.refresh(st)
    events.record(
        session,
        tenant_id=exp.tenant_id,
        object_id=exp.id,
        type=f"stage.{stage_name}.started",
        message=f"{stage_name}: attempt {st.attempts} on {worker}",
        data={"stage": stage_name, "attempt": st.attempts, "worker": worker},
    )
    session.commit()
    return exp, st


def _my_stage(experiment_id: str, stage_name: str, attempt: int) -> Update:
    """UPDATE of the stage row this attempt owns; it matches no row once another run has taken the stage."""
    return update(ExperimentStage).where(
        ExperimentStage.experiment_id == experiment_id,
        ExperimentStage.name == stage_name,
        ExperimentStage.status == "running",
        ExperimentStage.attempts == attempt,
    )


def _running(experiment_id: str) -> Update:
    """UPDATE of the experiment while it is running; it matches no row once it was cancelled or ended."""
    return update(Experiment).where(Experiment.id == experiment_id, Experiment.status == "running")


def progress(
    session: Session,
    *,
    experiment_id: str,
    stage_name: str,
    attempt: int,
    fraction: float,
    detail: dict[str, Any] | None = None,
    message: str | None = None,
) -> str:
    """Save a stage's progress; returns 'ok', 'cancelled' (the experiment was) or 'lost' (another run has
    the stage now)."""
    ts = now()
    mine = session.execute(
        _my_stage(experiment_id, stage_name, attempt).values(
            progress=round(min(max(fraction, 0.0), 1.0), 4),
            heartbeat_at=ts,
            **({"detail": detail} if detail is not None else {}),
        )
    )
    if mine.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return "lost"
    exp = session.get(Experiment, experiment_id)
    overall = overall_progress(session, exp, stage_name, fraction) if exp is not None else 0.0
    alive = session.execute(_running(experiment_id).values(progress=overall, heartbeat_at=ts))
    if alive.rowcount != 1:  # type: ignore[attr-defined]
        session.commit()
        return "cancelled"
    if message:
        exp = session.get(Experiment, experiment_id)
        assert exp is not None
        events.record(
            session,
            tenant_id=exp.tenant_id,
            object_id=experiment_id,
            type=f"stage.{stage_name}.progress",
            message=message,
            # the curve stays on the stage row: an event every few seconds need not copy it again
            data={"stage": stage_name, **{k: v for k, v in (detail or {}).items() if k != "loss_curve"}},
        )
    session.commit()
    return "ok"


def heartbeat(session: Session, *, experiment_id: str, stage_name: str, attempt: int) -> None:
    ts = now()
    session.execute(_my_stage(experiment_id, stage_name, attempt).values(heartbeat_at=ts))
    session.execute(_running(experiment_id).values(heartbeat_at=ts))
    session.commit()


def complete(
    session: Session,
    queue: JobQueue | None,
    *,
    experiment_id: str,
    stage_name: str,
    attempt: int,
    artefact_key: str | None,
    result: dict[str, Any],
) -> str:
    """Record a finished stage and enqueue the next (or finish the experiment). Returns what happened."""
    ts = now()
    mine = session.execute(
        _my_stage(experiment_id, stage_name, attempt).values(
            status="succeeded",
            progress=1.0,
            finished_at=ts,
            artefact_key=artefact_key,
            result=result,
            error=None,
        )
    )
    if mine.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return "discarded"  # another run took the stage over (this one was presumed dead)
    exp = session.get(Experiment, experiment_id)
    assert exp is not None
    session.refresh(exp)
    events.record(
        session,
        tenant_id=exp.tenant_id,
        object_id=exp.id,
        type=f"stage.{stage_name}.succeeded",
        message=f"{stage_name}: done",
        data={"stage": stage_name, **{k: v for k, v in result.items() if isinstance(v, int | float | str)}},
    )
    if exp.status != "running":
        session.commit()
        return exp.status
    i = STAGES.index(stage_name)
    if i + 1 == len(STAGES):
        finished = session.execute(
            _running(exp.id).values(
                status="succeeded", stage="done", progress=1.0, finished_at=ts, results=result, error=None
            )
        )
        if finished.rowcount == 1:  # type: ignore[attr-defined]
            head = result.get("headline", {})
            events.record(
                session,
                tenant_id=exp.tenant_id,
                object_id=exp.id,
                type="experiment.succeeded",
                message=f"harmfulness rate {head.get('harmfulness_rate')} ({head.get('judge')} judge)",
            )
        session.commit()
        return "succeeded"
    nxt = STAGES[i + 1]
    st = session.get(ExperimentStage, (exp.id, nxt))
    assert st is not None
    st.status, st.worker = "queued", None
    exp.stage, exp.progress = nxt, overall_progress(session, exp, nxt, 0.0)
    session.commit()
    _enqueue(queue, exp.id, nxt, st.attempts + 1)
    return "next"


def _enqueue(queue: JobQueue | None, experiment_id: str, stage_name: str, attempt: int) -> None:
    """Enqueue; a queue outage is not fatal here: the stage is queued in SQL and `recover` enqueues it."""
    if queue is None:
        return
    try:
        queue.enqueue_stage(experiment_id, stage_name, attempt)
    except Exception:
        log.exception("could not enqueue stage %s of %s; recovery will", stage_name, experiment_id)


def fail(
    session: Session,
    queue: JobQueue | None,
    *,
    experiment_id: str,
    stage_name: str,
    attempt: int,
    code: str,
    message: str,
    retryable: bool,
    retries: int,
) -> bool:
    """Record a failed attempt; retry it (a new job) or fail the experiment. Returns True when final."""
    st = session.get(ExperimentStage, (experiment_id, stage_name))
    if st is None or st.status != "running" or st.attempts != attempt:
        session.rollback()
        return False
    failures = int((st.error or {}).get("failures", 0)) + 1
    final = not retryable or failures > retries
    st.error = {"code": code, "message": message, "failures": failures}
    st.status, st.finished_at = ("failed", now()) if final else ("queued", None)
    exp = session.get(Experiment, experiment_id)
    assert exp is not None
    events.record(
        session,
        tenant_id=exp.tenant_id,
        object_id=exp.id,
        level="error",
        type=f"stage.{stage_name}.failed" if final else f"stage.{stage_name}.retrying",
        message=f"{stage_name}: attempt {attempt}: {message}" + ("" if final else "; retrying"),
        data={"stage": stage_name, "code": code},
    )
    if final:
        failed = session.execute(
            update(Experiment)
            .where(Experiment.id == experiment_id, Experiment.status.in_(ACTIVE))
            .values(
                status="failed",
                finished_at=now(),
                error={"code": code, "message": message, "stage": stage_name},
            )
        )
        if failed.rowcount == 1:  # type: ignore[attr-defined]
            events.record(
                session,
                tenant_id=exp.tenant_id,
                object_id=exp.id,
                level="error",
                type="experiment.failed",
                message=f"failed in stage {stage_name}: {message}",
            )
    session.commit()
    if not final:
        _enqueue(queue, experiment_id, stage_name, st.attempts + 1)
    return final


def stopped(session: Session, *, experiment_id: str, stage_name: str, attempt: int) -> None:
    """The running stage saw the cancellation and stopped."""
    done = session.execute(
        _my_stage(experiment_id, stage_name, attempt).values(status="cancelled", finished_at=now())
    )
    if done.rowcount == 1:  # type: ignore[attr-defined]
        exp = session.get(Experiment, experiment_id)
        assert exp is not None
        events.record(
            session,
            tenant_id=exp.tenant_id,
            object_id=exp.id,
            type=f"stage.{stage_name}.cancelled",
            message=f"{stage_name}: stopped",
        )
    session.commit()


def recover(
    *, session: Session, queue: JobQueue, settings: Settings, experiment_id: str | None = None
) -> list[tuple[str, str]]:
    """Re-enqueue stages whose worker died (running, silent past `experiment_stale_s`) or whose job is gone
    from the queue (queued in SQL, no job in Redis). Returns the (experiment, stage) pairs re-enqueued."""
    q = (
        select(ExperimentStage)
        .join(Experiment, Experiment.id == ExperimentStage.experiment_id)
        .where(Experiment.status.in_(ACTIVE), ExperimentStage.status.in_(("queued", "running")))
    )
    if experiment_id:
        q = q.where(Experiment.id == experiment_id)
    stale_before = now() - settings.experiment_stale_s
    out = []
    for st in list(session.scalars(q)):
        if st.status == "running":
            if (st.heartbeat_at or 0) >= stale_before:
                continue
            took = session.execute(
                update(ExperimentStage)
                .where(
                    ExperimentStage.experiment_id == st.experiment_id,
                    ExperimentStage.name == st.name,
                    ExperimentStage.status == "running",
                    ExperimentStage.attempts == st.attempts,
                )
                .values(status="queued", worker=None)
            )
            if took.rowcount != 1:  # type: ignore[attr-defined]
                session.rollback()
                continue
            events.record(
                session,
                tenant_id=st.tenant_id,
                object_id=st.experiment_id,
                level="warning",
                type=f"stage.{st.name}.recovered",
                message=f"{st.name}: attempt {st.attempts} went silent (its worker died?); queued again",
            )
            session.commit()
        elif queue.job_pending(stage_job_id(st.experiment_id, st.name, st.attempts + 1)):
            continue
        queue.enqueue_stage(st.experiment_id, st.name, st.attempts + 1)
        out.append((st.experiment_id, st.name))
    return out

"""Experiments: create and enqueue, read, cancel, resume, artefacts.

An experiment is six stages, each its own RQ job: select -> align -> finetune -> generate -> judge ->
summarise. SQL is the record of how far it got (`experiment_stages`); Redis holds only the job of the stage
that is due. The transitions the workers make (claim, progress, complete, fail, recover) are
`app.experiments.transitions`; comparisons (the three variants side by side) are
`app.experiments.comparisons`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app import access, events
from app.core.config import Settings
from app.core.db import owned, page
from app.core.errors import Conflict, InvalidRequest, NotFound, ServiceUnavailable
from app.core.queue import JobQueue
from app.core.services import Ctx
from app.core.storage import BlobStore
from app.core.vocab import ACTIVE, EventType
from app.datasets import roles
from app.demo import EVAL_PROMPTS
from app.experiments import allowed, limits
from app.experiments.judge_kinds import JUDGES
from app.experiments.progress import STAGES
from app.experiments.runs import StageRuns
from app.experiments.transitions import dispatch, stages
from app.models import Comparison, Experiment, ExperimentStage, new_id, now
from app.runs.kinds import recover

log = logging.getLogger("ftguard.experiments")

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
    ev_info = _info(ev) if ev else {"id": None, "bundled": EVAL_PROMPTS.name}
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
        prompts=ev.examples if ev else limits.bundled_prompts(EVAL_PROMPTS),
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
    events.record_on(session, exp, EventType.EXPERIMENT_QUEUED, f"queued: {describe(params)}")
    return exp


def create(ctx: Ctx, *, spec: dict[str, Any]) -> Experiment:
    """Store the experiment and its stages, and enqueue the first stage."""
    session, settings, tenant_id = ctx.session, ctx.settings, ctx.tenant_id
    params = resolve(session=session, settings=settings, tenant_id=tenant_id, spec=spec)
    limits.reserve(session, settings, tenant_id, adding=[params])
    exp = _build(session, tenant_id=tenant_id, params=params)
    session.commit()
    dispatch(ctx.queue, exp.id, STAGES[0], 1)
    return exp


def create_comparison(ctx: Ctx, *, spec: dict[str, Any]) -> tuple[Comparison, list[Experiment]]:
    """One experiment per variant, identical but for the alignment subset (same sizes, same seeds)."""
    session, queue, settings, tenant_id = ctx.session, ctx.queue, ctx.settings, ctx.tenant_id
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
    events.record_on(session, exp, EventType.EXPERIMENT_CANCELLED, "cancelled by request")
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
            recover(session, queue, settings, only=(StageRuns(),), scope=exp.id)
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
    events.record_on(session, exp, EventType.EXPERIMENT_RESUMED, f"resumed from stage {first.name}")
    session.commit()
    dispatch(queue, exp.id, first.name, first.attempts + 1)
    return exp

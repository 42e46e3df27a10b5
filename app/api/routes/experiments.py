"""Experiments (align, fine-tune, generate, judge), comparisons of the High-Sim / Low-Sim / Random variants,
and the calibration of the risk score on them. Thin: parse, call one service function, return a schema."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse

from app import access
from app.api.deps import CtxDep, PagingDep, PrincipalDep, SessionDep, StateDep, TenantDep, attachment
from app.api.errors import AUTH_RESPONSES, WRITE_RESPONSES
from app.api.events_route import add_events_route
from app.api.responses import Responses, error, resource_errors, write
from app.calibration import service as calibration
from app.experiments import comparisons as comparing
from app.experiments import delete as removal
from app.experiments import service
from app.experiments.schemas import (
    CalibrationPublic,
    CalibrationRefit,
    ComparisonCreate,
    ComparisonPublic,
    ExperimentCreate,
    ExperimentFilters,
    ExperimentPublic,
    StagePublic,
)
from app.models import Comparison, Experiment
from app.schemas import Page
from app.tenants.service import Principal

# Every route answers 401/429 (auth, rate limit) and, for writes, 409/413 (idempotency, body size).
_COMMON = {**AUTH_RESPONSES, **WRITE_RESPONSES}
router = APIRouter(prefix="/v1/experiments", tags=["experiments"], responses=_COMMON)
comparisons = APIRouter(prefix="/v1/comparisons", tags=["experiments"], responses=_COMMON)
calibrations = APIRouter(prefix="/v1/calibration", tags=["calibration"], responses=_COMMON)
ERRORS = resource_errors("No such object for this tenant.")
CREATE_ERRORS: Responses = {
    400: error("A dataset has the wrong purpose, or a judge is not set up."),
    503: error("The queue is unavailable."),
}


def public(session: SessionDep, exp: Experiment, principal: Principal) -> ExperimentPublic:
    """The experiment object; the alignment set's file name and hash only for keys with the scope."""
    stages = [
        StagePublic.model_validate(st, from_attributes=True)
        for st in service.stages(session=session, experiment_id=exp.id)
    ]
    fields = {c: getattr(exp, c) for c in ExperimentPublic.model_fields if hasattr(exp, c)}
    fields["params"] = access.experiment_params(exp.params, allowed=principal.can(access.ALIGNMENT_READ))
    return ExperimentPublic.model_validate({**fields, "stages": stages})


def comparison_public(cmp: Comparison, exps: list[Experiment]) -> ComparisonPublic:
    table, diffs = comparing.comparison_table(exps)
    return ComparisonPublic(
        id=cmp.id,
        created_at=cmp.created_at,
        name=cmp.name,
        dataset_id=cmp.dataset_id,
        status=comparing.comparison_status(exps),
        params=cmp.params,
        experiments={e.params["alignment"]["selection"]: e.id for e in exps},
        table=table,
        differences=diffs,
    )


@router.post("", **write(ExperimentPublic, ERRORS, created=True, more=CREATE_ERRORS))
def create_experiment(body: ExperimentCreate, ctx: CtxDep, principal: PrincipalDep) -> ExperimentPublic:
    """Align a base model on (part of) the alignment data, fine-tune it on the customer data, generate answers
    to the evaluation prompts and judge them. Returns at once; each stage is a job; poll the experiment."""
    exp = service.create(ctx, spec=body.model_dump())
    return public(ctx.session, exp, principal)


@router.get("", response_model=Page[ExperimentPublic], responses=ERRORS)
def list_experiments(
    session: SessionDep,
    principal: PrincipalDep,
    paging: PagingDep,
    filters: Annotated[ExperimentFilters, Query()],
) -> Page[ExperimentPublic]:
    tenant = principal.tenant_id
    rows, more = service.list_(session=session, tenant_id=tenant, **filters.model_dump(), **paging)
    return Page[ExperimentPublic](data=[public(session, r, principal) for r in rows], has_more=more)


@router.get("/{experiment_id}", response_model=ExperimentPublic, responses=ERRORS)
def get_experiment(experiment_id: str, session: SessionDep, principal: PrincipalDep) -> ExperimentPublic:
    """State, each stage's progress (step, loss, ETA while training), and the results once finished."""
    exp = service.get(session=session, tenant_id=principal.tenant_id, experiment_id=experiment_id)
    return public(session, exp, principal)


@router.delete(
    "/{experiment_id}",
    status_code=204,
    responses={
        **ERRORS,
        409: error("Queued or running (cancel it first)."),
    },
)
def delete_experiment(
    experiment_id: str, session: SessionDep, state: StateDep, tenant: TenantDep
) -> Response:
    """Delete a finished, failed or cancelled experiment and all its artefacts (adapters, generations,
    judgements). A queued or running one is refused with 409 `experiment_active`: cancel it first."""
    removal.delete(session=session, store=state.services.store, tenant_id=tenant, experiment_id=experiment_id)
    return Response(status_code=204)


@router.post(
    "/{experiment_id}/cancel", **write(ExperimentPublic, ERRORS, more={409: error("Already finished.")})
)
def cancel_experiment(experiment_id: str, session: SessionDep, principal: PrincipalDep) -> ExperimentPublic:
    exp = service.cancel(session=session, tenant_id=principal.tenant_id, experiment_id=experiment_id)
    return public(session, exp, principal)


@router.post(
    "/{experiment_id}/resume", **write(ExperimentPublic, ERRORS, more={409: error("Already succeeded.")})
)
def resume_experiment(
    experiment_id: str, session: SessionDep, state: StateDep, principal: PrincipalDep
) -> ExperimentPublic:
    """Failed or cancelled: run again from the first unfinished stage. Running: re-enqueue a lost stage."""
    exp = service.resume(
        session=session,
        queue=state.queue,
        settings=state.settings,
        tenant_id=principal.tenant_id,
        experiment_id=experiment_id,
    )
    return public(session, exp, principal)


add_events_route(router, id_param="experiment_id", find=service.get, responses=ERRORS)


@router.get(
    "/{experiment_id}/artefacts/{name}",
    response_class=StreamingResponse,
    responses={
        **ERRORS,
        403: error("The key lacks the alignment:read scope."),
        200: {"content": {"application/x-ndjson": {}, "application/x-tar": {}}},
    },
)
def get_artefact(
    experiment_id: str,
    name: Literal["alignment_adapter", "finetune_adapter", "generations", "judgements"],
    session: SessionDep,
    state: StateDep,
    principal: PrincipalDep,
) -> StreamingResponse:
    """A stage's artefact: the adapters (tar of a peft adapter or full model folder), the generations, or
    the judgements (JSONL, one line per prompt and judge). Every one was trained on, or written by a model
    trained on, the alignment texts, so each needs the `alignment:read` scope."""
    chunks, media, filename = service.artefact(
        session=session,
        store=state.services.store,
        tenant_id=principal.tenant_id,
        experiment_id=experiment_id,
        name=name,
        alignment_access=principal.can(access.ALIGNMENT_READ),
    )
    return StreamingResponse(chunks, media_type=media, headers=attachment(filename))


@comparisons.post("", **write(ComparisonPublic, ERRORS, created=True, more=CREATE_ERRORS))
def create_comparison(body: ComparisonCreate, ctx: CtxDep) -> ComparisonPublic:
    """The paper's main table for one customer dataset: the same experiment aligned on the High-Sim, Low-Sim
    and Random subsets (same sizes, same seeds), and the differences between them."""
    cmp, exps = service.create_comparison(ctx, spec=body.model_dump())
    return comparison_public(cmp, exps)


@comparisons.get("", response_model=Page[ComparisonPublic], responses=ERRORS)
def list_comparisons(session: SessionDep, tenant: TenantDep, paging: PagingDep) -> Page[ComparisonPublic]:
    rows, more = comparing.list_comparisons(session=session, tenant_id=tenant, **paging)
    return Page[ComparisonPublic](data=[comparison_public(c, e) for c, e in rows], has_more=more)


@comparisons.get("/{comparison_id}", response_model=ComparisonPublic, responses=ERRORS)
def get_comparison(comparison_id: str, session: SessionDep, tenant: TenantDep) -> ComparisonPublic:
    return comparison_public(
        *comparing.get_comparison(session=session, tenant_id=tenant, comparison_id=comparison_id)
    )


@comparisons.post(
    "/{comparison_id}/cancel", **write(ComparisonPublic, ERRORS, more={409: error("Already finished.")})
)
def cancel_comparison(comparison_id: str, session: SessionDep, tenant: TenantDep) -> ComparisonPublic:
    return comparison_public(
        *comparing.cancel_comparison(session=session, tenant_id=tenant, comparison_id=comparison_id)
    )


@calibrations.post("/refit", **write(Page[CalibrationPublic], ERRORS))
def refit(
    body: CalibrationRefit, session: SessionDep, state: StateDep, tenant: TenantDep
) -> Page[CalibrationPublic]:
    """Refit the map from risk score to measured harmfulness on the finished experiments (isotonic, per
    representation); scopes with too few experiments are left out."""
    fits = calibration.refit(session=session, settings=state.settings, tenant_id=tenant, scope=body.scope)
    return Page[CalibrationPublic].whole([CalibrationPublic.model_validate(c) for c in fits])


@calibrations.get("", response_model=Page[CalibrationPublic], responses=ERRORS)
def list_calibrations(session: SessionDep, tenant: TenantDep) -> Page[CalibrationPublic]:
    """The calibration in force for each representation."""
    fits = calibration.list_latest(session, tenant_id=tenant)
    return Page[CalibrationPublic].whole([CalibrationPublic.model_validate(c) for c in fits])

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from app.access import ALIGNMENT_READ, require_alignment_read
from app.api.deps import (
    AppState,
    CtxDep,
    PagingDep,
    PrincipalDep,
    SessionDep,
    StateDep,
    TenantDep,
    attachment,
)
from app.api.errors import AUTH_RESPONSES
from app.api.events_route import add_events_route
from app.api.responses import Responses, error, resource_errors, write
from app.core.vocab import Selection, Subset
from app.models import Report, Screening
from app.policies import flagged
from app.policies import service as policies
from app.policies.schemas import DecisionRequest, FlaggedPage, RescreenRequest
from app.schemas import (
    AuditPublic,
    Page,
    ReportPublic,
    ScoresPage,
    ScreeningCreate,
    ScreeningFilters,
    ScreeningPublic,
)
from app.screenings import params as screening_params
from app.screenings import scores, service, variants
from app.screenings.rescreen import rescreen as rescreen_variant
from app.tenants.service import Principal

router = APIRouter(prefix="/v1/screenings", tags=["screenings"], responses=AUTH_RESPONSES)
ERRORS = resource_errors("No such screening (or report) for this tenant.")
SCOPED: Responses = {
    403: error(
        "The customer data holds alignment records (an augmented rescreen) and the key lacks "
        "the alignment:read scope."
    )
}


@router.post(
    "", **write(ScreeningPublic, ERRORS, created=True, more={400: error("A dataset has the wrong purpose.")})
)
def create_screening(body: ScreeningCreate, ctx: CtxDep) -> ScreeningPublic:
    """Screen a customer dataset against an alignment dataset. Returns at once; poll the screening. At most
    `max_active_screenings` per tenant may be queued or running (429 `too_many_active_screenings`)."""
    fields = body.model_dump(exclude={"dataset_id", "alignment_dataset_id", "policy"})
    scr = service.create(
        ctx,
        dataset_id=body.dataset_id,
        alignment_dataset_id=body.alignment_dataset_id,
        params=screening_params.with_defaults(fields, ctx.settings),
        policy=body.policy,
    )
    return ScreeningPublic.model_validate(scr)


@router.get("", response_model=Page[ScreeningPublic], responses=ERRORS)
def list_screenings(
    session: SessionDep, tenant: TenantDep, paging: PagingDep, filters: Annotated[ScreeningFilters, Query()]
) -> Page[ScreeningPublic]:
    rows, more = service.list_(session=session, tenant_id=tenant, **filters.model_dump(), **paging)
    return Page[ScreeningPublic](data=[ScreeningPublic.model_validate(r) for r in rows], has_more=more)


@router.get("/{screening_id}", response_model=ScreeningPublic, responses=ERRORS)
def get_screening(screening_id: str, session: SessionDep, tenant: TenantDep) -> ScreeningPublic:
    return ScreeningPublic.model_validate(
        service.get(session=session, tenant_id=tenant, screening_id=screening_id)
    )


@router.post(
    "/{screening_id}/cancel",
    **write(
        ScreeningPublic,
        ERRORS,
        more={400: error("Invalid Idempotency-Key."), 409: error("Already finished.")},
    ),
)
def cancel_screening(screening_id: str, session: SessionDep, tenant: TenantDep) -> ScreeningPublic:
    return ScreeningPublic.model_validate(
        service.cancel(session=session, tenant_id=tenant, screening_id=screening_id)
    )


@router.post(
    "/{screening_id}/decision", **write(ScreeningPublic, ERRORS, more={409: error("No report yet.")})
)
def redecide(
    screening_id: str,
    session: SessionDep,
    state: StateDep,
    tenant: TenantDep,
    body: DecisionRequest | None = None,
) -> ScreeningPublic:
    """Judge a finished screening again under a policy (another one, or a new version), from its stored
    report and scores: nothing is recomputed. Records `decision.made` (and its webhooks). No body: the
    screening's own policy, newest version."""
    body = body or DecisionRequest()
    scr = policies.redecide(
        session=session,
        store=state.services.store,
        tenant_id=tenant,
        screening_id=screening_id,
        name=body.policy,
        version=body.version,
        max_read_bytes=state.settings.max_scores_read_bytes,
    )
    return ScreeningPublic.model_validate(scr)


def _reported(session: Session, principal: Principal, screening_id: str) -> tuple[Screening, Report]:
    """The tenant's screening and its report, for a key that may read them (`variants.guard`)."""
    rep = service.get_report(session=session, tenant_id=principal.tenant_id, screening_id=screening_id)
    scr = service.get(session=session, tenant_id=principal.tenant_id, screening_id=screening_id)
    variants.guard(session, scr, principal.can(ALIGNMENT_READ))
    return scr, rep


@router.get("/{screening_id}/flagged", response_model=FlaggedPage, responses={**ERRORS, **SCOPED})
def get_flagged(
    screening_id: str,
    session: SessionDep,
    state: StateDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> FlaggedPage:
    """The flagged rows (row score above the policy's `row_threshold`), highest first, each with its line,
    score, parts, nearest alignment records (by number), nearest harmful anchor and the customer's own
    record."""
    scr, rep = _reported(session, principal, screening_id)
    rows, total, threshold = flagged.flagged_rows(
        session=session, store=state.services.store, settings=state.settings, scr=scr, report=rep, limit=limit
    )
    return FlaggedPage(total=total, row_threshold=threshold, has_more=total > len(rows), data=rows)


DOWNLOAD = {
    "content": {
        "application/x-ndjson": {},
        "application/json": {},
        "text/csv": {},
        "application/vnd.apache.parquet": {},
        "application/gzip": {},
        "application/zstd": {},
    },
    "description": "The records, in the customer's container (JSONL, JSON array, CSV, Parquet; gzip or "
    "zstd around a text container as uploaded). Header `Ftguard-Variant` holds its counts.",
}


def _download(v: variants.Variant, screening_id: str) -> StreamingResponse:
    info = v.summary()
    headers = attachment(f"{screening_id}-{v.name}.{v.container}") | {
        "Ftguard-Variant": ";".join(f"{k}={val}" for k, val in info.items())
    }
    return StreamingResponse(v.chunks(), media_type=v.media_type, headers=headers)


def _subset(
    screening_id: str, name: str, session: Session, state: AppState, principal: Principal
) -> StreamingResponse:
    scr, rep = _reported(session, principal, screening_id)
    v = variants.subset(
        session=session, store=state.services.store, settings=state.settings, scr=scr, report=rep, name=name
    )
    return _download(v, screening_id)


def _add_subset_route(name: str, route_name: str, description: str) -> None:
    """Mount `GET /{screening_id}/datasets/<name>`: that subset of the customer's data, as a download."""

    def download(
        screening_id: str, session: SessionDep, state: StateDep, principal: PrincipalDep
    ) -> StreamingResponse:
        return _subset(screening_id, name, session, state, principal)

    router.add_api_route(
        f"/{{screening_id}}/datasets/{name}",
        download,
        methods=["GET"],
        name=route_name,
        description=description,
        response_class=StreamingResponse,
        responses={**ERRORS, **SCOPED, 200: DOWNLOAD},
    )


_add_subset_route(
    "filtered",
    "get_filtered",
    "The customer's data minus the flagged rows, in the original records and container, upload order.",
)
_add_subset_route(
    "flagged",
    "get_flagged_dataset",
    "The flagged rows alone, in the original records and container, upload order.",
)


@router.get(
    "/{screening_id}/datasets/augmented",
    response_class=StreamingResponse,
    responses={
        **ERRORS,
        403: error("The key lacks the alignment:read scope."),
        200: DOWNLOAD,
    },
)
def get_augmented(
    screening_id: str,
    session: SessionDep,
    state: StateDep,
    principal: PrincipalDep,
    share: Annotated[float, Query(gt=0, le=1, description="Safety examples per customer example.")] = 0.1,
    selection: Annotated[Selection, Query()] = "random",
    seed: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    filtered: Annotated[bool, Query(description="Leave the flagged rows out too.")] = False,
) -> StreamingResponse:
    """The customer's data with round(share x its size) safety examples from the screening's alignment set
    spread through it (`nearest`: the alignment records most similar to the data; `random`: seeded). In
    the customer's form when the alignment records fit it, else JSONL of chat messages. Needs
    `alignment:read`: it holds alignment records."""
    rep = service.get_report(session=session, tenant_id=principal.tenant_id, screening_id=screening_id)
    scr = service.get(session=session, tenant_id=principal.tenant_id, screening_id=screening_id)
    require_alignment_read(principal.can(ALIGNMENT_READ), "an augmented dataset holds alignment records")
    v = variants.augmented(
        session=session,
        store=state.services.store,
        settings=state.settings,
        scr=scr,
        report=rep,
        share=share,
        selection=selection,
        seed=seed,
        filtered=filtered,
    )
    return _download(v, screening_id)


@router.post(
    "/{screening_id}/rescreen",
    **write(
        ScreeningPublic,
        ERRORS,
        created=True,
        more={
            400: error("Invalid Idempotency-Key, or an empty variant."),
            403: error("augmented: the key lacks the alignment:read scope."),
        },
    ),
)
def rescreen(
    screening_id: str, body: RescreenRequest, ctx: CtxDep, state: StateDep, principal: PrincipalDep
) -> ScreeningPublic:
    """Store the filtered or augmented variant of a finished screening as a new fine-tune dataset and
    screen it against the same alignment set, with the same parameters and policy. The new screening (and
    its report) carries `baseline`: the screening it came from and its risk score."""
    scr = rescreen_variant(
        ctx,
        state.services,
        screening_id=screening_id,
        variant=body.variant,
        alignment_access=principal.can(ALIGNMENT_READ),
        share=body.share,
        selection=body.selection,
        seed=body.seed,
        filtered=body.filtered,
    )
    return ScreeningPublic.model_validate(scr)


add_events_route(router, id_param="screening_id", find=service.get, responses=ERRORS)


@router.get("/{screening_id}/report", response_model=ReportPublic, responses={**ERRORS, **SCOPED})
def get_report(
    screening_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    redact: Annotated[
        bool,
        Query(description="Remove the alignment texts (to pass the report on to the customer)."),
    ] = False,
) -> ReportPublic:
    """The risk report: score, tier, the formula with each part, distributions, findings, top examples.
    Keys without the `alignment:read` scope always get it redacted (and a 403 for a screening whose
    customer data holds alignment records). A re-screened variant carries `baseline`."""
    scr, rep = _reported(session, principal, screening_id)
    hide = redact or not principal.can(service.ALIGNMENT_READ)
    return ReportPublic(
        screening_id=rep.screening_id,
        created_at=rep.created_at,
        redacted=hide,
        decision=scr.decision,
        decision_rule=scr.decision_rule,
        baseline=scr.baseline,
        report=service.report_body(report=rep, redact_alignment=hide),
    )


@router.get("/{screening_id}/audit", response_model=AuditPublic, responses=ERRORS)
def get_audit(screening_id: str, session: SessionDep, tenant: TenantDep) -> AuditPublic:
    """Alignment-set audit: Vendi diversity of both sets and the customer examples left uncovered."""
    rep = service.get_report(session=session, tenant_id=tenant, screening_id=screening_id)
    return AuditPublic(screening_id=rep.screening_id, audit=rep.body.get("audit") or {})


@router.get("/{screening_id}/scores", response_model=ScoresPage, responses=ERRORS)
def get_scores(
    screening_id: str,
    session: SessionDep,
    state: StateDep,
    tenant: TenantDep,
    side: Annotated[Literal["customer", "alignment"], Query()] = "customer",
    sort: Annotated[Literal["max_sim", "topk_mean", "anchor_margin", "record"], Query()] = "max_sim",
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
    offset: Annotated[int, Query(ge=0, le=100_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ScoresPage:
    """Per-example scores (1-based record numbers), sorted and paged. A page reads only its own rows; a
    screening stored in the old compressed format answers 413 `scores_too_large` when a page would
    decompress more than `max_scores_read_bytes` (`ftguard reconcile` converts it)."""
    rep = service.get_report(session=session, tenant_id=tenant, screening_id=screening_id)
    items, total = scores.scores_page(
        store=state.services.store,
        report=rep,
        side=side,
        sort=sort,
        order=order,
        offset=offset,
        limit=limit,
        max_read_bytes=state.settings.max_scores_read_bytes,
    )
    return ScoresPage(side=side, total=total, offset=offset, has_more=offset + len(items) < total, data=items)


@router.get(
    "/{screening_id}/subsets/{subset}",
    response_class=StreamingResponse,
    responses={
        **ERRORS,
        403: error("The key lacks the alignment:read scope."),
        200: {
            "content": {"application/x-ndjson": {}},
            "description": "The subset's alignment records as JSONL, in their own fields.",
        },
    },
)
def get_subset(
    screening_id: str,
    subset: Subset,
    session: SessionDep,
    state: StateDep,
    principal: PrincipalDep,
) -> StreamingResponse:
    """High-Sim, Low-Sim or Random alignment subset, ready to align a model with (needs `alignment:read`)."""
    rep = service.get_report(session=session, tenant_id=principal.tenant_id, screening_id=screening_id)
    allowed = principal.can(service.ALIGNMENT_READ)
    lines = service.subset_lines(
        session=session, services=state.services, report=rep, name=subset, alignment_access=allowed
    )
    return StreamingResponse(
        iter(list(lines)),  # read whole first: an error is an error answer, not a cut-off stream
        media_type="application/x-ndjson",
        headers=attachment(f"{screening_id}-{subset}.jsonl"),
    )

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import CtxDep, PagingDep, SessionDep, TenantDep
from app.api.errors import AUTH_RESPONSES
from app.api.responses import error, resource_errors, write
from app.rankings import service
from app.schemas import Page, RankingCreate, RankingPublic
from app.screenings import params as screening_params

router = APIRouter(prefix="/v1/rankings", tags=["rankings"], responses=AUTH_RESPONSES)
ERRORS = resource_errors("No such ranking or dataset for this tenant.")


@router.post("", **write(RankingPublic, ERRORS, created=True, more={400: error("Bad candidates.")}))
def create_ranking(body: RankingCreate, ctx: CtxDep) -> RankingPublic:
    """Screen one customer dataset against several candidates and rank them; poll until `succeeded`."""
    fields = body.model_dump(exclude={"dataset_id", "candidates"})
    ranking = service.create(
        ctx,
        dataset_id=body.dataset_id,
        candidates=[c.model_dump() for c in body.candidates],
        params=screening_params.with_defaults(fields, ctx.settings),
    )
    return RankingPublic.model_validate(service.view(session=ctx.session, ranking=ranking))


@router.get("", response_model=Page[RankingPublic], responses=ERRORS)
def list_rankings(session: SessionDep, tenant: TenantDep, paging: PagingDep) -> Page[RankingPublic]:
    rows, more = service.list_(session=session, tenant_id=tenant, **paging)
    return Page[RankingPublic](
        data=[RankingPublic.model_validate(service.view(session=session, ranking=r)) for r in rows],
        has_more=more,
    )


@router.get("/{ranking_id}", response_model=RankingPublic, responses=ERRORS)
def get_ranking(ranking_id: str, session: SessionDep, tenant: TenantDep) -> RankingPublic:
    ranking = service.get(session=session, tenant_id=tenant, ranking_id=ranking_id)
    return RankingPublic.model_validate(service.view(session=session, ranking=ranking))

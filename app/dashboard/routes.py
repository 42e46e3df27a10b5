"""Dashboard pages: thin routes over the same service functions and the same `TenantDep` as the API.

Tenancy: these pages resolve the caller through `TenantDep`, so they show the key's tenant only. A link
cannot carry an Authorization header, so the Authenticate middleware also takes the key from the cookie the
sign-in form sets (`app.dashboard.signin`), on these GET pages only. Downloads go through these routes too
(not `/v1`), so they authenticate the same way.

Redaction: `hide_alignment_texts` is True for keys without the `alignment:read` scope; the page then hides
alignment texts and the alignment subsets (which are alignment texts) cannot be downloaded. Any viewer may
still ask for the redacted view (`?redact=1`, for sharing a screen).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy.orm import Session

from app.access import holds_alignment
from app.api.deps import PrincipalDep, SessionDep, StateDep, TenantDep, attachment
from app.core.errors import NotFound
from app.core.vocab import ACTIVE, SUBSETS, TERMINAL, Tier
from app.dashboard import charts, render
from app.screenings import service

router = APIRouter(prefix="/dashboard", include_in_schema=False)
root = APIRouter(include_in_schema=False)

STATUSES = tuple(str(s) for s in (*ACTIVE, *TERMINAL))
TIERS = tuple(str(t) for t in reversed(Tier))  # worst first
PAGE_SIZE = 50
REFRESH_S = 5  # how often a page about a queued or running job reloads itself
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
COLUMNS = (  # label, sort key, numeric
    ("Dataset", "dataset", False),
    ("Alignment set", None, False),
    ("Risk", "risk", True),
    ("Tier", None, False),
    ("Status", "status", False),
    ("Examples", None, True),
    ("Created", "created", True),
)


def hide_alignment_texts(principal: PrincipalDep) -> bool:
    """True when this caller's key lacks the `alignment:read` scope: alignment texts are hidden and the
    alignment subsets cannot be downloaded."""
    return not principal.can(service.ALIGNMENT_READ)


HiddenDep = Annotated[bool, Depends(hide_alignment_texts)]


@dataclass(frozen=True)
class Viewer:
    """Who a dashboard page is for: the request, its session, the key's tenant, and whether the key's
    alignment texts are hidden (`hide_alignment_texts`)."""

    request: Request
    session: Session
    tenant: str
    hidden: bool


def get_viewer(request: Request, session: SessionDep, tenant: TenantDep, hidden: HiddenDep) -> Viewer:
    return Viewer(request=request, session=session, tenant=tenant, hidden=hidden)


ViewerDep = Annotated[Viewer, Depends(get_viewer)]


def dashboard_base(request: Request) -> str:
    return f"{request.scope.get('root_path', '')}/dashboard"


def _static_url(request: Request) -> str:
    version = hashlib.sha256(render.stylesheet().encode()).hexdigest()[:10]
    return f"{dashboard_base(request)}/static/dashboard.css?v={version}"


def page(
    request: Request,
    template: str,
    *,
    status_code: int = 200,
    nav: str = "screenings",
    job_status: str | None = None,
    **context: Any,
) -> HTMLResponse:
    """A dashboard page; one about a job (`job_status`) reloads itself while the job is queued or running."""
    html = render.render(
        template,
        standalone=False,
        base_url=dashboard_base(request),
        static_url=_static_url(request),
        nav=nav,
        refresh=REFRESH_S if job_status in ACTIVE else 0,
        **context,
    )
    return HTMLResponse(html, status_code=status_code, headers={"Content-Security-Policy": CSP})


def not_found(request: Request, message: str, nav: str = "screenings") -> HTMLResponse:
    return page(
        request,
        "error.html",
        status_code=404,
        nav=nav,
        title="Not found",
        heading="Not found",
        message=message,
    )


def forbidden(request: Request, message: str) -> HTMLResponse:
    return page(
        request, "error.html", status_code=403, title="Not allowed", heading="Not allowed", message=message
    )


def download(
    viewer: Viewer, refusal: str, nav: str, open_file: Callable[[], tuple[Iterable[Any], str, str]]
) -> Response:
    """A file through the dashboard's own authentication: the 403 page (saying `refusal`) for a key whose
    alignment texts are hidden, the 404 page when `open_file` finds nothing, else its (chunks, media type,
    filename) as an attachment."""
    if viewer.hidden:
        return forbidden(viewer.request, refusal)
    try:
        chunks, media, filename = open_file()
    except NotFound as exc:
        return not_found(viewer.request, exc.message, nav=nav)
    return StreamingResponse(chunks, media_type=media, headers=attachment(filename))


@root.get("/")
def home(request: Request) -> RedirectResponse:
    return RedirectResponse(dashboard_base(request), status_code=307)


@router.get("/static/dashboard.css")
def stylesheet() -> Response:
    return Response(
        render.stylesheet(), media_type="text/css", headers={"Cache-Control": "public, max-age=86400"}
    )


@router.get("", response_class=HTMLResponse)
def screenings_page(
    viewer: ViewerDep,
    status: Annotated[str, Query(max_length=16)] = "",
    tier: Annotated[str, Query(max_length=16)] = "",
    q: Annotated[str, Query(max_length=200)] = "",
    sort: Annotated[str, Query(max_length=16)] = "risk",
    order: Annotated[str, Query(max_length=4)] = "desc",
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> HTMLResponse:
    """Screenings by risk, with filters, sorting and counts per tier."""
    # Filters come from a plain form: unknown or empty values mean "any" rather than an error page.
    filters = {
        "status": status if status in STATUSES else "",
        "tier": tier if tier in TIERS else "",
        "q": q.strip(),
        "sort": sort if sort in service.OVERVIEW_SORTS else "risk",
        "order": order if order in ("asc", "desc") else "desc",
    }
    ov = service.overview(
        session=viewer.session,
        tenant_id=viewer.tenant,
        status=filters["status"] or None,
        tier=filters["tier"] or None,
        q=filters["q"] or None,
        sort=filters["sort"],
        order=filters["order"],
        offset=offset,
        limit=PAGE_SIZE,
    )
    base = dashboard_base(viewer.request)

    def href(**changes: Any) -> str:
        params = {**filters, **changes}
        return f"{base}?{urlencode({k: v for k, v in params.items() if v not in ('', 0, None)})}"

    columns = []
    for label, key, numeric in COLUMNS:
        col: dict[str, Any] = {"label": label, "sort": key, "numeric": numeric, "arrow": "", "aria": "none"}
        if key:
            current = filters["sort"] == key
            flip = "asc" if current and filters["order"] == "desc" else "desc"
            col["href"] = href(sort=key, order=flip if current else ("asc" if key == "dataset" else "desc"))
            if current:
                col["arrow"] = "↓" if filters["order"] == "desc" else "↑"
                col["aria"] = "descending" if filters["order"] == "desc" else "ascending"
        columns.append(col)
    tiles = [
        {
            "label": t,
            "count": ov.by_tier.get(t, 0),
            "color": charts.TIER_COLORS[t],
            "href": href(tier=t, status="", offset=0),
            "active": filters["tier"] == t,
        }
        for t in TIERS
    ] + [
        {
            "label": s,
            "count": ov.by_status.get(s, 0),
            "color": {"running": "#1c7ed6", "queued": "#adb5bd", "failed": "#c92a2a"}[s],
            "href": href(status=s, tier="", offset=0),
            "active": filters["status"] == s,
        }
        for s in ("running", "queued", "failed")
    ]
    rows = [
        {
            "id": r.screening.id,
            "href": f"{base}/screenings/{r.screening.id}",
            "dataset": r.dataset,
            "alignment": r.screening.alignment_dataset_id if viewer.hidden else r.alignment,
            "risk_score": r.screening.risk_score,
            "tier": r.screening.tier,
            "decision": r.screening.decision,
            "status": r.screening.status,
            "stage": r.screening.stage,
            "progress": r.screening.progress,
            "examples": r.examples,
            "created_at": r.screening.created_at,
        }
        for r in ov.rows
    ]
    pager = {
        "total": ov.total,
        "first": offset + 1 if rows else 0,
        "last": offset + len(rows),
        "prev": href(offset=max(offset - PAGE_SIZE, 0)) if offset > 0 else None,
        "next": href(offset=offset + PAGE_SIZE) if offset + len(rows) < ov.total else None,
    }
    return page(
        viewer.request,
        "list.html",
        title="Screenings",
        tiles=tiles,
        filters={**filters, "active": any(filters[k] for k in ("status", "tier", "q"))},
        statuses=STATUSES,
        tiers=TIERS,
        columns=columns,
        rows=rows,
        page=pager,
    )


def _detail(viewer: Viewer, screening_id: str, **kw: Any) -> service.Detail | HTMLResponse:
    """The tenant's screening with its datasets, report and history (`service.detail`), or the 404 page."""
    try:
        return service.detail(
            session=viewer.session, tenant_id=viewer.tenant, screening_id=screening_id, **kw
        )
    except NotFound:
        return not_found(viewer.request, f"There is no screening {screening_id!r}.")


@router.get("/screenings/{screening_id}", response_class=HTMLResponse)
def screening_page(viewer: ViewerDep, screening_id: str, redact: bool = False) -> HTMLResponse:
    """One screening: progress while it runs, then the report with its charts and downloads."""
    d = _detail(viewer, screening_id)
    if isinstance(d, HTMLResponse):
        return d
    scr, hidden = d.screening, viewer.hidden
    redacted = hidden or redact
    base = f"{dashboard_base(viewer.request)}/screenings/{scr.id}"
    stage_states = []
    current = render.STAGES.index(scr.stage) if scr.stage in render.STAGES else -1
    for i, name in enumerate(render.STAGES):
        state = "done" if i < current else "current" if i == current else "pending"
        stage_states.append({"name": name, "state": state})
    # an augmented rescreen's customer examples are alignment records: no report without the scope
    private = hidden and d.dataset is not None and holds_alignment(d.dataset)
    report = render.report_view(d.report.body, redact=redacted) if d.report and not private else None
    links = {
        "report_html": f"{base}/report.html" + ("?redact=1" if redacted else ""),
        "subsets": {} if hidden else {n: f"{base}/subsets/{n}" for n in SUBSETS},
        "redacted": f"{base}?redact=1",
        "unredacted": None if hidden else base,
    }
    params = scr.params or {}
    return page(
        viewer.request,
        "screening.html",
        title=f"{d.dataset.filename if d.dataset else scr.dataset_id} · {scr.id}",
        job_status=scr.status,
        scr={
            "id": scr.id,
            "status": scr.status,
            "stage": scr.stage,
            "progress": scr.progress or 0.0,
            "dataset": d.dataset.filename if d.dataset else scr.dataset_id,
            "alignment": d.alignment.filename if d.alignment and not redacted else scr.alignment_dataset_id,
            "created_at": scr.created_at,
            "finished_at": scr.finished_at,
            "backend": params.get("backend", ""),
            "model": params.get("model", ""),
            "error": scr.error,
            "decision": scr.decision,
            "decision_rule": scr.decision_rule,
        },
        stages=stage_states,
        report=report,
        links=links,
        events=d.events,
    )


@router.get("/screenings/{screening_id}/report.html")
def report_file(viewer: ViewerDep, screening_id: str, redact: bool = False) -> Response:
    """The report as a standalone HTML file, the same page `ftguard screen --html` writes."""
    d = _detail(viewer, screening_id, max_events=0)
    if isinstance(d, HTMLResponse):
        return d
    if d.report is None:
        return not_found(
            viewer.request, f"Screening {screening_id} has no report yet ({d.screening.status})."
        )
    if viewer.hidden and d.dataset is not None and holds_alignment(d.dataset):
        return forbidden(
            viewer.request, "This screening's customer data holds alignment records (an augmented set)."
        )
    name = d.dataset.filename if d.dataset else d.screening.dataset_id
    html = render.report_document(d.report.body, title=f"{name}: risk report", redact=viewer.hidden or redact)
    return HTMLResponse(html, headers=attachment(f"{d.screening.id}-report.html"))


@router.get("/screenings/{screening_id}/subsets/{subset}")
def subset_file(viewer: ViewerDep, screening_id: str, subset: str, state: StateDep) -> Response:
    """A High-Sim, Low-Sim or Random subset as JSONL, through the dashboard's own authentication."""

    def open_file() -> tuple[Iterable[bytes], str, str]:
        session = viewer.session
        rep = service.get_report(session=session, tenant_id=viewer.tenant, screening_id=screening_id)
        lines = service.subset_lines(session=session, services=state.services, report=rep, name=subset)
        return iter(list(lines)), "application/x-ndjson", f"{screening_id}-{subset}.jsonl"

    refusal = "This key may not read alignment texts, so it cannot download alignment subsets."
    return download(viewer, refusal, "screenings", open_file)

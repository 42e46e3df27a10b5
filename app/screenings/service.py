"""Screenings: create and enqueue, read, cancel, report access. The state transitions the worker makes are
`app.screenings.transitions`; a sharded screening's shards are `app.screenings.shards`."""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, aliased

from app import events
from app.access import ALIGNMENT_READ
from app.core import registry
from app.core.config import Settings
from app.core.db import owned, page
from app.core.errors import Conflict, Forbidden, InvalidRequest, NotFound, ServiceUnavailable, TooManyRequests
from app.core.queue import SCREENING_JOB, job_id_for
from app.core.services import Ctx, Services
from app.core.storage import SCORES_PREFIX, BlobStore
from app.core.vocab import ACTIVE, SUBSETS, TERMINAL, EventType
from app.datasets import roles
from app.datasets import service as datasets
from app.models import Dataset, Event, Report, Screening, Tenant, new_id, now
from app.policies import service as policies
from app.screenings import scores, shards
from app.screenings.report import ReportBody

log = logging.getLogger("ftguard.api")
ACTIVE_LIMIT_RETRY_AFTER_S = 10


def check_params(params: dict[str, Any], settings: Settings) -> None:
    """A screening's full parameters against the provider's limits and model registry."""
    if params.get("subset_size", 0) > settings.max_subset_size:
        raise InvalidRequest(
            f"subset_size is above the limit of {settings.max_subset_size}",
            param="subset_size",
            code="limit_exceeded",
        )
    for key in ("model", "anchor_model"):
        if params.get(key):
            registry.check(settings, params[key], param=key)
    registry.check_max_length(settings, int(params.get("max_length", 0)), param="max_length")


def check_capacity(*, session: Session, settings: Settings, tenant_id: str, adding: int = 1) -> None:
    """TooManyRequests unless the tenant may have `adding` more screenings queued or running. The tenant
    row lock (PostgreSQL) serialises concurrent creates of one tenant until the caller commits, so the
    count cannot be raced past the limit; SQLite serialises writers anyway."""
    session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
    active = session.scalar(
        select(func.count())
        .select_from(Screening)
        .where(Screening.tenant_id == tenant_id, Screening.status.in_(ACTIVE))
    )
    if (active or 0) + adding > settings.max_active_screenings:
        session.rollback()
        raise TooManyRequests(
            f"{active} screenings are queued or running and this adds {adding}; at most "
            f"{settings.max_active_screenings} may be at once per tenant; retry when some have finished",
            retry_after=ACTIVE_LIMIT_RETRY_AFTER_S,
            code="too_many_active_screenings",
        )


def create(
    ctx: Ctx, *, dataset_id: str, alignment_dataset_id: str, params: dict[str, Any], policy: str | None = None
) -> Screening:
    """Check both datasets belong to the tenant and fit their roles, store the screening, enqueue it."""
    session, queue, settings, tenant_id = ctx.session, ctx.queue, ctx.settings, ctx.tenant_id
    check_params(params, settings)
    policies.check_name(session=session, tenant_id=tenant_id, name=policy)
    ds = roles.for_role(
        session=session, tenant_id=tenant_id, dataset_id=dataset_id, role="customer", param="dataset_id"
    )
    align = roles.for_role(
        session=session,
        tenant_id=tenant_id,
        dataset_id=alignment_dataset_id,
        role="alignment",
        param="alignment_dataset_id",
    )
    for key, role in (
        ("harmful_anchors_dataset_id", "harmful_anchors"),
        ("safe_anchors_dataset_id", "safe_anchors"),
    ):
        if params.get(key):
            roles.for_role(session=session, tenant_id=tenant_id, dataset_id=params[key], role=role, param=key)
    if ds.status != "ready" or align.status != "ready":
        raise InvalidRequest("both datasets must be ready", param="dataset_id", code="dataset_not_ready")
    check_capacity(session=session, settings=settings, tenant_id=tenant_id)
    scr_id = new_id("scr")
    scr = Screening(
        id=scr_id,
        job_id=job_id_for(SCREENING_JOB, scr_id),
        tenant_id=tenant_id,
        dataset_id=ds.id,
        alignment_dataset_id=align.id,
        status="queued",
        params=params,
        stage="queued",
        progress=0.0,
        policy=policy,
    )
    session.add(scr)
    events.record(
        session,
        tenant_id=tenant_id,
        object_id=scr.id,
        type=EventType.SCREENING_QUEUED,
        message=f"queued: {ds.examples} customer examples against {align.examples} alignment examples",
    )
    session.commit()
    try:
        queue.enqueue(SCREENING_JOB, scr.id, job_id=scr.job_id)
    except ServiceUnavailable:
        # Accepted is accepted: the row is in SQL, and the reconciler enqueues it once Redis answers.
        log.warning("queue unavailable; screening %s stays queued for the reconciler", scr.id)
    return scr


def get(*, session: Session, tenant_id: str, screening_id: str) -> Screening:
    return owned(session, Screening, screening_id, tenant_id, what="screening", param="screening_id")


def list_(
    *,
    session: Session,
    tenant_id: str,
    status: str | None = None,
    tier: str | None = None,
    dataset_id: str | None = None,
    after: str | None = None,
    limit: int = 20,
) -> tuple[list[Screening], bool]:
    q = select(Screening).where(Screening.tenant_id == tenant_id)
    if status:
        q = q.where(Screening.status == status)
    if tier:
        q = q.where(Screening.tier == tier)
    if dataset_id:
        q = q.where(Screening.dataset_id == dataset_id)
    return page(session, q, Screening.id, after=after, limit=limit)


@dataclass
class OverviewRow:
    screening: Screening
    dataset: str
    examples: int
    alignment: str


@dataclass
class Overview:
    rows: list[OverviewRow]
    total: int
    by_tier: dict[str, int] = field(default_factory=dict)
    by_status: dict[str, int] = field(default_factory=dict)


OVERVIEW_SORTS = ("risk", "created", "dataset", "status")


def overview(
    *,
    session: Session,
    tenant_id: str,
    status: str | None = None,
    tier: str | None = None,
    q: str | None = None,
    sort: str = "risk",
    order: str = "desc",
    offset: int = 0,
    limit: int = 50,
) -> Overview:
    """Screenings with their datasets' file names, filtered, sorted and paged by offset, with counts per
    tier and status over all the tenant's screenings (the dashboard's table and tiles)."""
    if sort not in OVERVIEW_SORTS:
        raise InvalidRequest(f"sort must be one of {list(OVERVIEW_SORTS)}", param="sort")
    cust, align = aliased(Dataset), aliased(Dataset)
    base = (
        select(Screening, cust.filename, cust.examples, align.filename)
        .join(cust, cust.id == Screening.dataset_id)
        .join(align, align.id == Screening.alignment_dataset_id)
        .where(Screening.tenant_id == tenant_id)
    )
    if status:
        base = base.where(Screening.status == status)
    if tier:
        base = base.where(Screening.tier == tier)
    if q:
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        base = base.where(
            or_(
                cust.filename.ilike(pattern, escape="\\"),
                Screening.dataset_id == q,
                Screening.id == q,
            )
        )
    column = {
        "risk": Screening.risk_score,
        "created": Screening.id,  # ids are time-ordered
        "dataset": cust.filename,
        "status": Screening.status,
    }[sort]
    key = column.desc() if order == "desc" else column.asc()
    rows = session.execute(
        base.order_by(key.nulls_last(), Screening.id.desc()).offset(offset).limit(limit)
    ).all()
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    by_tier = {
        str(t): int(n)
        for t, n in session.execute(
            select(Screening.tier, func.count())
            .where(Screening.tenant_id == tenant_id, Screening.tier.is_not(None))
            .group_by(Screening.tier)
        ).all()
    }
    by_status = dict(
        session.execute(
            select(Screening.status, func.count())
            .where(Screening.tenant_id == tenant_id)
            .group_by(Screening.status)
        ).all()
    )
    return Overview(
        rows=[OverviewRow(screening=r[0], dataset=r[1], examples=r[2], alignment=r[3]) for r in rows],
        total=int(total),
        by_tier=by_tier,
        by_status=by_status,
    )


@dataclass
class Detail:
    screening: Screening
    dataset: Dataset | None
    alignment: Dataset | None
    report: Report | None
    events: list[Event]


def detail(*, session: Session, tenant_id: str, screening_id: str, max_events: int = 200) -> Detail:
    """A screening with its datasets, its report when there is one, and its history."""
    scr = get(session=session, tenant_id=tenant_id, screening_id=screening_id)
    evs, _ = events.list_(session=session, tenant_id=tenant_id, object_id=scr.id, limit=max_events)
    return Detail(
        screening=scr,
        dataset=session.get(Dataset, scr.dataset_id),
        alignment=session.get(Dataset, scr.alignment_dataset_id),
        report=session.get(Report, scr.id),
        events=evs,
    )


def cancel(*, session: Session, tenant_id: str, screening_id: str) -> Screening:
    """Queued: never runs. Running: the worker stops at its next block boundary."""
    scr = get(session=session, tenant_id=tenant_id, screening_id=screening_id)
    if scr.status in TERMINAL:
        raise Conflict(f"the screening is already {scr.status}", code="not_cancellable")
    scr.status = "cancelled"
    scr.finished_at = now()
    shards.cancel_all(session, scr.id)
    events.record(
        session,
        tenant_id=tenant_id,
        object_id=scr.id,
        type=EventType.SCREENING_CANCELLED,
        message="cancelled by request",
    )
    session.commit()
    return scr


# Subtrees of a report that describe the provider's own data (alignment set, anchor sets), and the fields
# inside them that carry its texts or could identify them.
PRIVATE_SUBTREES = ("alignment", "anchors", "harmful_anchors", "safe_anchors")
PRIVATE_FIELDS = ("example", "text", "prompt", "completion", "messages", "filename", "sha256")


def _strip(node: Any, private: bool) -> Any:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if private and k in PRIVATE_FIELDS:
                continue
            inner = private or k in PRIVATE_SUBTREES or (k.startswith("nearest_") and k != "nearest_customer")
            out[k] = _strip(v, inner)
        return out
    if isinstance(node, list):
        return [_strip(v, private) for v in node]
    return node


def redact(body: dict[str, Any]) -> dict[str, Any]:
    """The report without the provider's alignment (and anchor) texts, to pass on to the customer: under
    every subtree about the provider's data (`alignment`, `nearest_*`, anchors) the text fields go and the
    records stay identified by number only; no per-record or per-file hash is kept either (a hash lets
    whoever holds a candidate text confirm it is in the set). The customer's own texts stay."""
    out = _strip(copy.deepcopy(body), private=False)
    out["redaction"] = {
        "alignment_texts": "removed: alignment and anchor examples are given by record number only",
    }
    return out


def report_body(*, report: Report, redact_alignment: bool) -> ReportBody:
    return ReportBody.read(redact(report.body) if redact_alignment else report.body)


def get_report(*, session: Session, tenant_id: str, screening_id: str) -> Report:
    scr = get(session=session, tenant_id=tenant_id, screening_id=screening_id)
    report = session.get(Report, scr.id)
    if report is None:
        raise NotFound(f"screening {scr.id} has no report (status {scr.status})", code="report_not_ready")
    return report


def subset_lines(
    *, session: Session, services: Services, report: Report, name: str, alignment_access: bool = True
) -> Iterator[bytes]:
    """The alignment records of a subset, as JSONL in the alignment set's own fields, in subset order."""
    store, settings = services.store, services.settings
    if not alignment_access:
        raise Forbidden(
            f"alignment subsets hold alignment texts: this key lacks the {ALIGNMENT_READ!r} scope",
            code="insufficient_scope",
        )
    if name not in SUBSETS:
        raise NotFound(f"no subset {name!r}; expected one of {list(SUBSETS)}", param="subset")
    scr = session.get(Screening, report.screening_id)
    align = session.get(Dataset, scr.alignment_dataset_id) if scr else None
    if align is None:
        raise NotFound("the alignment dataset of this screening was deleted")
    with scores.Scores(store, report.scores_key, max_read_bytes=settings.max_scores_read_bytes) as z:
        order = z.whole(scores.subset_array(name))
    rank = {int(r): i for i, r in enumerate(order)}
    rows: list[bytes | None] = [None] * len(order)
    for rec, _ in datasets.open_records(store=store, ds=align, max_line_bytes=settings.max_line_bytes):
        i = rank.get(rec.record - 1)
        if i is not None:
            rows[i] = json.dumps(rec.value, ensure_ascii=False).encode() + b"\n"
    return (r for r in rows if r is not None)


def remove_orphan_scores(*, store: BlobStore, session: Session, min_age_s: float) -> int:
    """Delete scores files no report refers to and no queued or running screening may still write (a
    cancelled run's, or one left by a screening deleted since), once older than `min_age_s`."""
    removed, cutoff = 0, time.time() - min_age_s
    keys = store.list(SCORES_PREFIX)
    for i in range(0, len(keys), 500):
        chunk = keys[i : i + 500]
        ids = {k: k.split("/")[2].split(".")[0] for k in chunk if k.count("/") >= 2}
        kept = set(session.scalars(select(Report.scores_key).where(Report.scores_key.in_(chunk))))
        active = set(
            session.scalars(
                select(Screening.id).where(Screening.id.in_(set(ids.values())), Screening.status.in_(ACTIVE))
            )
        )
        for key, scr_id in ids.items():
            if key in kept or scr_id in active:
                continue
            written = store.modified(key)  # None: removed meanwhile
            if written is not None and written <= cutoff:
                store.delete(key)
                removed += 1
    return removed

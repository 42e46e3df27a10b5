"""Sharded screenings: the prepare and merge steps of the screening's own job, and the shard job.

The states and transitions are app.screenings.shards; the row computation is workers.screenings.rows, the
same code an unsharded screening runs over all its rows, so the merged report equals the unsharded one.
"""

from __future__ import annotations

import functools
import io
import logging
from typing import Any

import numpy as np
from rq import get_current_job
from sqlalchemy.orm import Session

from app.core import logs
from app.core.config import Settings
from app.core.errors import Cancelled, FtguardError, ServiceUnavailable
from app.core.queue import SCREENING_JOB
from app.core.storage import BlobStore, staged_file
from app.models import Dataset, Screening, ScreeningShard
from app.screenings import shards as shard_sql
from app.screenings import transitions
from workers.heartbeat import Heartbeat
from workers.runtime import Runtime, get_runtime
from workers.screenings.progress import Plan
from workers.screenings.rows import Rows, Shared, Work, part_rows
from workers.screenings.screening import Anchors, Params, Side

log = logging.getLogger("ftguard.worker")


def params_of(scr: Screening, settings: Settings) -> Params:
    p = Params.from_dict(scr.params)
    p.part_rows = part_rows(settings.shard_rows, p.block_size)
    return p


def sharded(scr: Screening, customer_ds: Dataset, alignment_ds: Dataset, settings: Settings) -> bool:
    """Whether the screening runs in shards: a customer set over `shard_rows` rows, screened in a way whose
    slices give the whole set's answer (Params.shardable)."""
    p = params_of(scr, settings)
    return customer_ds.examples > settings.shard_rows and p.shardable(alignment_ds.examples)


def save_rows(store: BlobStore, key: str, rows: Rows) -> None:
    with staged_file(store, suffix=".npz") as (path, fh):
        np.savez(fh, allow_pickle=False, **rows.arrays())
        fh.close()
        store.put_file(key, path)


def load_rows(store: BlobStore, sh: ScreeningShard) -> Rows:
    with (
        store.open(shard_sql.blob_key(sh.tenant_id, sh.screening_id, sh.index)) as fh,
        np.load(io.BytesIO(fh.read()), allow_pickle=False) as z,
    ):
        arrays = {k: z[k] for k in z.files}
    meta = sh.meta or {}
    return Rows.from_arrays(
        arrays, list(meta.get("forms", [])), meta.get("similarity", {}), meta.get("timings_s", {})
    )


def prepare_or_join(
    rt: Runtime,
    session: Session,
    scr: Screening,
    job_id: str | None,
    customer_ds: Dataset,
    alignment: Side,
    representer: Any,
    anchors: Anchors | None,
) -> Rows | None:
    """The screening's job in a sharded screening. When every shard is done: their rows, joined (the merge
    goes on to score them). Otherwise the prepare: the alignment and anchor vectors into the cache (once,
    for every shard to read), the shards written and dispatched, and None (the screening waits for them)."""
    have = shard_sql.of(session, scr.id)
    if have and all(sh.status == "succeeded" for sh in have):
        return Rows.concat(load_rows(rt.services.store, sh) for sh in have)  # one blob at a time
    p = params_of(scr, rt.settings)

    def report(t: Any) -> bool:
        share = shard_sql.PREPARE_SHARE * t.fraction
        return transitions.progress(
            session, scr, stage="prepare", fraction=share, message=t.message, job_id=job_id
        )

    plan = Plan(report)
    shared = Shared(
        plan, alignment, representer, rt.cache_for(scr.tenant_id), anchors, p, rt.device, reference=False
    )
    shared.alignment()
    shared.references()
    planned = shard_sql.plan(session, scr, rows=customer_ds.examples, size=p.part_rows)
    message = f"{len(planned)} shards of up to {p.part_rows} rows"
    if not transitions.progress(
        session,
        scr,
        stage=shard_sql.SHARDS_STAGE,
        fraction=shard_sql.PREPARE_SHARE,
        message=message,
        job_id=job_id,
    ):
        raise Cancelled()
    queue = rt.job_queue()
    for sh in planned:
        if sh.status == "queued" and queue is not None:
            shard_sql.dispatch(session, queue, sh, reason="planned")
    log.info("screening sharded", extra={"screening_id": scr.id, "shards": len(planned)})
    return None


def remove_blobs(store: BlobStore, scr: Screening, shards: list[ScreeningShard]) -> None:
    for sh in shards:
        store.delete(shard_sql.blob_key(scr.tenant_id, scr.id, sh.index))


def run_shard(shard_id: str) -> dict[str, Any]:
    job = get_current_job()
    job_id = job.id if job else None
    with logs.job_context(job_id or f"run_shard-{shard_id}"):
        return _run_shard(shard_id, job_id)


def _run_shard(shard_id: str, job_id: str | None) -> dict[str, Any]:
    from workers.screenings.jobs import attempt_failed

    rt = get_runtime()
    settings = rt.settings
    with rt.services.db.session() as session:
        sh = session.get(ScreeningShard, shard_id)
        if sh is None:
            return {"shard_id": shard_id, "skipped": "not found"}
        if not shard_sql.claim(session, sh, job_id):
            return {"shard_id": shard_id, "skipped": sh.status}
        beat = functools.partial(transitions.heartbeat, model=ScreeningShard, run_id=sh.id, job_id=job_id)
        with Heartbeat(rt.services.db, beat, interval_s=settings.heartbeat_interval_s, name=sh.id):
            try:
                return _shard(rt, session, sh, job_id)
            except Cancelled:
                log.info("shard cancelled or superseded", extra={"shard_id": shard_id})
                return {"shard_id": shard_id, "status": "cancelled"}
            except Exception as exc:
                owned = functools.partial(shard_sql.owned, session, sh, job_id)
                failed = attempt_failed(session, exc, sh, owned, kind="shard", run_id=shard_id)
                if failed is None:
                    return {"shard_id": shard_id, "stopped": "cancelled or superseded"}
                code, message, final = failed
                shard_sql.fail(session, sh, code=code, message=message, final=final)
                queue = rt.job_queue()
                if not final and queue is not None:
                    session.refresh(sh)
                    shard_sql.dispatch(session, queue, sh, reason=f"retry after {code}")
                return {"shard_id": shard_id, "status": "failed" if final else "retrying", "code": code}


def _shard(rt: Runtime, session: Session, sh: ScreeningShard, job_id: str | None) -> dict[str, Any]:
    """Represent and compare the shard's rows against the cached alignment and anchor vectors, store its
    rows, and, as the last shard done, send the screening to its merge."""
    from workers.screenings.jobs import load_anchors, side_for

    settings = rt.settings
    scr = session.get(Screening, sh.screening_id)
    assert scr is not None
    customer_ds = session.get(Dataset, scr.dataset_id)
    align_ds = session.get(Dataset, scr.alignment_dataset_id)
    if customer_ds is None or align_ds is None:
        raise FtguardError("a dataset of this screening was deleted", code="dataset_deleted")
    p = params_of(scr, settings)
    representer = rt.representer(scr.params)
    customer = side_for(customer_ds, "customer", settings.max_line_bytes, rows=(sh.start, sh.stop))
    alignment = side_for(align_ds, "alignment", settings.max_line_bytes)
    anchors = load_anchors(rt, session, scr) if scr.params.get("anchors", True) else None
    cache = rt.cache_for(scr.tenant_id)
    plan = Plan(lambda t: shard_sql.progress(session, sh, t.fraction, job_id))
    shared = Shared(plan, alignment, representer, cache, anchors, p, rt.device, reference=False)
    work = Work(
        plan,
        customer,
        representer,
        cache,
        anchors,
        n_alignment=len(alignment.examples),
        n_total=customer_ds.examples,
        device=rt.device,
    )
    a_vec, _, _ = shared.alignment()
    rows, _ = work.run(a_vec, shared.references, p, start=sh.start)
    save_rows(rt.services.store, shard_sql.blob_key(sh.tenant_id, sh.screening_id, sh.index), rows)
    if not shard_sql.owned(session, sh, job_id):
        raise Cancelled()
    meta = {"similarity": rows.meta, "timings_s": rows.timings, "forms": list(rows.per_form)}
    merge_job = shard_sql.succeed(session, sh, meta, job_id)
    log.info("shard succeeded", extra={"shard_id": sh.id, "rows": sh.stop - sh.start})
    queue = rt.job_queue()
    if merge_job is not None and queue is not None:
        try:
            queue.enqueue(SCREENING_JOB, scr.id, job_id=merge_job)
        except ServiceUnavailable:  # queued in SQL: the reconciler sends it
            log.warning("merge not enqueued (queue unavailable)", extra={"screening_id": scr.id})
    return {"shard_id": sh.id, "status": "succeeded", "merge": merge_job is not None}

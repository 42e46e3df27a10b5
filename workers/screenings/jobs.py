"""RQ job functions. They take ids only; everything else is read from SQL and the blob store."""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from rq import get_current_job
from sqlalchemy.orm import Session

from app.calibration import feed as calibration
from app.core import logs
from app.core.errors import Cancelled, FtguardError, ServiceUnavailable
from app.core.queue import SCREENING_JOB
from app.core.storage import scores_key
from app.datasets import files as datasets
from app.models import Dataset, Screening, ScreeningShard
from app.policies import decide
from app.runs import lifecycle
from app.screenings import explain, scores, transitions
from app.screenings import params as screening_params
from app.screenings import shards as shard_sql
from workers.heartbeat import Heartbeat
from workers.runtime import Runtime, get_runtime
from workers.screenings import shards
from workers.screenings.screening import Anchors, Side, bundled_anchors, screen

log = logging.getLogger("ftguard.worker")


def side_for(ds: Dataset, name: str, max_line_bytes: int, rows: tuple[int, int] | None = None) -> Side:
    """A dataset as a screening side; with `rows` (start, stop), only those records (a shard's slice, keyed
    apart in the vector cache)."""
    rt = get_runtime()
    records = datasets.open_records(store=rt.services.store, ds=ds, max_line_bytes=max_line_bytes)
    if rows is not None:
        records = itertools.islice(records, rows[0], rows[1])
    sha = ds.sha256 or ""
    return Side(
        name=name,
        examples=[ex for _, ex in records],
        sha256=f"{sha}:rows{rows[0]}-{rows[1]}" if rows is not None else sha,
        meta={"dataset_id": ds.id, "filename": ds.filename, "format": ds.format},
    )


def classify(exc: BaseException) -> tuple[str, str]:
    """Our code and a message safe to show a client (never a raw traceback)."""
    if isinstance(exc, FtguardError):
        return exc.code, exc.message
    name = type(exc).__name__
    if "OutOfMemory" in name or isinstance(exc, MemoryError):
        return "out_of_memory", "the worker ran out of memory; try a smaller batch size or a bigger worker"
    if name == "JobTimeoutException":
        return "timeout", "the job ran past its time limit"
    return "internal_error", f"internal error ({name}); see the worker log"


def attempt_failed(
    session: Session,
    exc: BaseException,
    run: Screening | ScreeningShard,
    owned: Callable[[], bool],
    *,
    kind: str,
    run_id: str,
) -> tuple[str, str, bool] | None:
    """After a screening's (or shard's) attempt raised `exc`: its work rolled back, the error logged, and
    (code, message, whether the attempt was the run's last); None when `owned`, read after the rollback,
    says the run is no longer this job's (cancelled or superseded)."""
    session.rollback()
    code, message = classify(exc)
    log.exception(f"{kind} attempt failed", extra={f"{kind}_id": run_id, "code": code})
    if not owned():
        return None
    retries = get_runtime().settings.job_retries
    return code, message, lifecycle.is_final(run.attempts, retries, retryable=lifecycle.retryable(exc))


def load_anchors(rt: Runtime, session: Session, scr: Screening) -> Anchors:
    """The bundled anchor forms, with the tenant's own harmful or safe anchor sets where the screening names
    them."""
    params, settings = scr.params, rt.settings
    anchor_rep = rt.representer(screening_params.anchor_representation(params, settings))
    # the persona and request forms are read by the service's default sentence embedder
    semantic = rt.representer({"backend": settings.default_backend, "model": settings.default_model})
    anchors = bundled_anchors(settings, anchor_rep, rt.shared_cache(), semantic=semantic)
    for key, attr in (("harmful_anchors_dataset_id", "harmful"), ("safe_anchors_dataset_id", "safe")):
        if params.get(key):
            ds = session.get(Dataset, params[key])
            if ds is None or ds.tenant_id != scr.tenant_id:
                raise FtguardError("an anchor dataset of this screening was deleted", code="dataset_deleted")
            setattr(anchors, attr, side_for(ds, f"{attr} anchors", settings.max_line_bytes))
    return anchors


def run_screening(screening_id: str) -> dict[str, Any]:
    job = get_current_job()
    with logs.job_context(job.id if job else f"run_screening-{screening_id}"):
        return _run_screening(screening_id, job.id if job else None)


def _record(kind: str, status: str, **kw: Any) -> None:
    metrics = get_runtime().metrics
    if metrics is not None:
        metrics.record_job(kind=kind, status=status, **kw)


def _run_screening(screening_id: str, job_id: str | None) -> dict[str, Any]:
    """Run one screening. Idempotent: a second run of the same screening (a retry, or a re-dispatch after a
    lost worker) overwrites the same scores blob and report row. `job_id` is the RQ job running it: a job
    the reconciler has since replaced (a stale copy) does not run."""
    rt = get_runtime()
    settings = rt.settings
    t0 = time.perf_counter()
    with rt.services.db.session() as session:
        scr = session.get(Screening, screening_id)
        if scr is None:
            return {"screening_id": screening_id, "skipped": "not found"}
        if not transitions.start(session, scr, job_id=job_id):
            why = scr.status if transitions.owns(scr, job_id) else "superseded"
            return {"screening_id": screening_id, "skipped": why}
        log.info("screening started", extra={"screening_id": screening_id, "attempt": scr.attempts})
        beat = functools.partial(transitions.heartbeat, model=Screening, run_id=scr.id, job_id=job_id)
        with Heartbeat(rt.services.db, beat, interval_s=settings.heartbeat_interval_s, name=scr.id):
            return _run(rt, session, scr, job_id, t0)


def _run(rt: Runtime, session: Session, scr: Screening, job_id: str | None, t0: float) -> dict[str, Any]:
    settings = rt.settings
    screening_id = scr.id
    try:
        params = scr.params
        customer_ds = session.get(Dataset, scr.dataset_id)
        align_ds = session.get(Dataset, scr.alignment_dataset_id)
        if customer_ds is None or align_ds is None:
            raise FtguardError("a dataset of this screening was deleted", code="dataset_deleted")

        def loading(message: str) -> None:
            """The load stage has no measure of its own (a model load is one call): a message and the
            cancellation check between its steps."""
            if not transitions.progress(
                session, scr, stage="load", fraction=0.0, message=message, job_id=job_id
            ):
                raise Cancelled()

        loading("reading datasets")
        representer = rt.representer(params)
        customer = side_for(customer_ds, "customer", settings.max_line_bytes)
        alignment = side_for(align_ds, "alignment", settings.max_line_bytes)
        t_load = time.perf_counter() - t0
        anchors = None
        if params.get("anchors", True):
            loading("loading the anchor models")
            anchors = load_anchors(rt, session, scr)
        rows = None
        if shards.sharded(scr, customer_ds, align_ds, settings):
            rows = shards.prepare_or_join(
                rt, session, scr, job_id, customer_ds, alignment, representer, anchors
            )
            if rows is None:
                return {"screening_id": screening_id, "status": "running", "stage": "shards"}
        # a merge is the last stretch of the bar (its shards had the rest: app.screenings.shards)
        low = 0.0 if rows is None else 1.0 - shard_sql.MERGE_SHARE

        def share(fraction: float) -> float:
            return low + (1.0 - low) * fraction

        outcome = screen(
            customer=customer,
            alignment=alignment,
            representer=representer,
            params=shards.params_of(scr, settings),  # its part size: the shards' (exact equality)
            cache=rt.cache_for(scr.tenant_id),
            report=lambda t: transitions.progress(
                session, scr, stage=t.stage, fraction=share(t.fraction), message=t.message, job_id=job_id
            ),
            device=rt.device,
            anchors=anchors,
            rows=rows,
        )
        t_save = time.perf_counter()
        key = scores_key(scr.tenant_id, scr.id)
        scores.save(rt.services.store, key, outcome.arrays)  # uncompressed: pages read only their rows
        if not transitions.still_owned(session, scr, job_id):
            log.info("screening cancelled or superseded", extra={"screening_id": screening_id})
            if scr.status == "cancelled":  # nothing will read it (a superseding run rewrites the same key)
                rt.services.store.delete(key)
            _record("screening", "cancelled")
            return {"screening_id": screening_id, "status": scr.status, "stopped": "cancelled or superseded"}
        outcome.body["calibration"] = calibration.report_section(
            session, settings=settings, tenant_id=scr.tenant_id, body=outcome.body
        )
        outcome.body["about"] = explain.about(outcome.body)  # with the calibration status just read
        transitions.succeed(
            session, scr, body=outcome.body, scores_key=key, facts=decide.facts(outcome.body, outcome.arrays)
        )
        if rows is not None:
            shards.remove_blobs(rt.services.store, scr, shard_sql.of(session, scr.id))
        timings = outcome.body["timings_s"]
        stages = {
            "load": t_load,
            **{k: float(v) for k, v in timings.items() if k != "total"},
            "save": time.perf_counter() - t_save,
            "total": time.perf_counter() - t0,
        }
        hits = outcome.body["cache"]
        sizes = {"alignment_hit": len(alignment.examples), "customer_hit": len(customer.examples)}
        _record(
            "screening",
            "succeeded",
            stages=stages,
            vectors_computed=sum(n for side, n in sizes.items() if not hits.get(side)),
            vectors_cached=sum(n for side, n in sizes.items() if hits.get(side)),
            cache_hits=sum(bool(hits.get(side)) for side in sizes),
            cache_misses=sum(not hits.get(side) for side in sizes),
        )
        log.info(
            "screening succeeded",
            extra={
                "screening_id": screening_id,
                "risk_score": scr.risk_score,
                "tier": scr.tier,
                "customer_examples": len(customer.examples),
                "alignment_examples": len(alignment.examples),
                "duration_s": round(stages["total"], 3),
            },
        )
        return {"screening_id": screening_id, "status": "succeeded", "risk_score": scr.risk_score}
    except Cancelled:
        log.info("screening cancelled or superseded", extra={"screening_id": screening_id})
        _record("screening", "cancelled")
        return {"screening_id": screening_id, "status": "cancelled"}
    except Exception as exc:
        owned = functools.partial(transitions.still_owned, session, scr, job_id)
        failed = attempt_failed(session, exc, scr, owned, kind="screening", run_id=screening_id)
        if failed is None:
            return {"screening_id": screening_id, "status": scr.status, "stopped": "cancelled or superseded"}
        code, message, final = failed
        retry_job = transitions.fail(session, scr, code=code, message=message, final=final)
        _record("screening", "failed" if final else "retried")
        if final:
            return {"screening_id": screening_id, "status": "failed", "code": code}
        queue = rt.job_queue()
        if queue is None:  # run outside a queue (in-process): the caller sees the error
            raise
        with contextlib.suppress(ServiceUnavailable):  # queued in SQL: the reconciler sends it
            queue.enqueue(SCREENING_JOB, screening_id, job_id=retry_job)
        return {"screening_id": screening_id, "status": "retrying", "code": code}

"""The RQ job of every experiment stage: claim it, run it with a heartbeat, record how it ended.

Jobs carry ids only (experiment id, stage name). A job that finds its stage already claimed or finished
returns at once, so a duplicate (re-enqueued after a presumed worker death, or retried by RQ) is harmless.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from app.core import logs
from app.core.errors import Cancelled, Lost
from app.experiments import transitions
from app.runs import lifecycle
from workers.experiments.context import StageContext, StageOutput
from workers.experiments.evaluate import generate_stage, judge_stage, summarise_stage
from workers.experiments.stages import align_stage, finetune_stage, select_stage
from workers.heartbeat import Heartbeat
from workers.runtime import get_runtime
from workers.screenings.jobs import classify

log = logging.getLogger("ftguard.worker")
STAGE_FUNCTIONS: dict[str, Callable[[StageContext], StageOutput]] = {
    "select": select_stage,
    "align": align_stage,
    "finetune": finetune_stage,
    "generate": generate_stage,
    "judge": judge_stage,
    "summarise": summarise_stage,
}


def _worker_name() -> str:
    from rq import get_current_job

    job = get_current_job()
    name = getattr(job, "worker_name", None) if job is not None else None
    return name or f"{socket.gethostname()}:{os.getpid()}"


def run_stage(experiment_id: str, stage: str) -> dict[str, Any]:
    from rq import get_current_job

    job = get_current_job()
    with logs.job_context(job.id if job else f"exp-{experiment_id}-{stage}"):
        t0 = time.perf_counter()
        out = _run_stage(experiment_id, stage)
        status = out.get("status")
        if status in ("next", "succeeded", "failed", "retrying", "cancelled"):
            metrics = get_runtime().metrics
            if metrics is not None:
                metrics.record_job(
                    kind="experiment",
                    status={"next": "succeeded", "retrying": "retried"}.get(status, status),
                    stages={stage: time.perf_counter() - t0},
                )
        return out


def _run_stage(experiment_id: str, stage: str) -> dict[str, Any]:
    rt = get_runtime()
    if stage not in STAGE_FUNCTIONS:
        return {"experiment_id": experiment_id, "stage": stage, "skipped": "unknown stage"}
    worker = _worker_name()
    db = rt.services.db
    with db.session() as session:
        claimed = transitions.claim(session, experiment_id=experiment_id, stage_name=stage, worker=worker)
        if isinstance(claimed, str):
            log.info("stage not run: %s", claimed, extra={"job_id": experiment_id, "stage": stage})
            return {"experiment_id": experiment_id, "stage": stage, "skipped": claimed}
        exp, st = claimed
        previous = {
            s.name: (s.artefact_key, s.result or {})
            for s in transitions.stages(session=session, experiment_id=exp.id)
            if s.status == "succeeded"
        }
    attempt = st.attempts
    ctx = StageContext(runtime=rt, experiment=exp, stage=stage, attempt=attempt, previous=previous)
    queue = rt.job_queue()
    # the attempt, as every transition of it names it
    mine: dict[str, Any] = {"experiment_id": experiment_id, "stage_name": stage, "attempt": attempt}
    beat = functools.partial(transitions.heartbeat, **mine)
    where = {"experiment_id": experiment_id, "stage": stage, "attempt": attempt}
    try:
        with Heartbeat(
            db, beat, interval_s=rt.settings.heartbeat_interval_s, name=f"{experiment_id}/{stage}"
        ):
            out = STAGE_FUNCTIONS[stage](ctx)
    except Cancelled:
        with db.session() as session:
            transitions.stopped(session, **mine)
        log.info("stage cancelled", extra=where)
        return {**where, "status": "cancelled"}
    except Lost:
        log.warning("stage taken over by another run; this one stops", extra=where)
        return {**where, "status": "lost"}
    except Exception as exc:
        code, message = classify(exc)
        retryable = lifecycle.retryable(exc)  # a bad input or a missing model fails the same way again
        log.exception("stage failed", extra={**where, "code": code})
        with db.session() as session:
            final = transitions.fail(
                session,
                queue,
                **mine,
                code=code,
                message=message,
                retryable=retryable,
                retries=rt.settings.job_retries,
            )
        return {**where, "status": "failed" if final else "retrying", "code": code}
    with db.session() as session:
        what = transitions.complete(session, queue, **mine, artefact_key=out.artefact_key, result=out.result)
    return {**where, "status": what}

"""The state transitions a worker makes on a screening, each a compare-and-set on the job id that owns it:
start (queued -> running), progress (with the cancellation check), succeed (the report row) and fail
(retry or give up). A job whose dispatch was superseded (a reconciler re-sent the screening) changes
nothing. The shards of a sharded screening have their own (`app.screenings.shards`)."""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import func, or_, update
from sqlalchemy.orm import Session

from app import events
from app.core.queue import SCREENING_JOB, job_id_for
from app.core.vocab import ACTIVE, EventType, StageEvent, stage_event
from app.models import Report, Screening, ScreeningShard, now
from app.policies import decide
from app.policies import service as policies
from app.runs.lifecycle import matched
from app.screenings.report import ReportBody


def owns(scr: Screening, job_id: str | None) -> bool:
    """Whether the job `job_id` is the screening's current dispatch (None: run outside RQ, always)."""
    return job_id is None or scr.job_id is None or scr.job_id == job_id


def heartbeat(
    session: Session, *, model: type[Screening] | type[ScreeningShard], run_id: str, job_id: str | None
) -> None:
    """Mark a running screening (or shard) alive, while the job `job_id` still owns it."""
    q = update(model).where(model.id == run_id, model.status == "running")
    if job_id is not None:
        q = q.where(model.job_id == job_id)
    session.execute(q.values(heartbeat_at=now()))
    session.commit()


def start(session: Session, scr: Screening, *, job_id: str | None = None) -> bool:
    """Mark running; False when the screening must not run (cancelled, finished, or handed to another job
    by the reconciler). One conditional UPDATE, so a reconciler acting at the same moment cannot be
    overwritten by a stale read."""
    t = now()
    q = update(Screening).where(Screening.id == scr.id, Screening.status.in_(ACTIVE))
    if job_id is not None:
        q = q.where(or_(Screening.job_id == job_id, Screening.job_id.is_(None)))
    values: dict[str, Any] = {
        "status": "running",
        "stage": "starting",
        "attempts": Screening.attempts + 1,
        "started_at": t,
        "heartbeat_at": t,
    }
    if job_id is not None:
        values["job_id"] = func.coalesce(Screening.job_id, job_id)
    res = session.execute(q.values(**values), execution_options={"synchronize_session": False})
    session.commit()
    session.refresh(scr)
    if not matched(res):
        return False
    events.record_on(session, scr, EventType.SCREENING_RUNNING, f"attempt {scr.attempts} started")
    session.commit()
    return True


def progress(
    session: Session,
    scr: Screening,
    *,
    stage: str,
    fraction: float,
    message: str | None = None,
    job_id: str | None = None,
) -> bool:
    """Save progress; returns False when the screening was cancelled, or handed to another job, meanwhile."""
    session.refresh(scr, ["status", "job_id"])
    if scr.status != "running" or not owns(scr, job_id):
        return False
    scr.stage, scr.progress, scr.heartbeat_at = stage, round(min(max(fraction, 0.0), 1.0), 4), now()
    if message:
        events.record_on(
            session, scr, stage_event(stage, StageEvent.PROGRESS), message, data={"progress": scr.progress}
        )
    session.commit()
    return True


def succeed(
    session: Session,
    scr: Screening,
    *,
    body: dict[str, Any],
    scores_key: str,
    facts: decide.Facts | None = None,
) -> None:
    """Store the report and judge the screening under its policy: report, status, decision, their events
    and webhook outbox rows commit together. The body is checked against `ReportBody` first: a report
    that lacks a section raises here, and nothing of it is stored."""
    report = ReportBody.read(body)
    stored = Report(screening_id=scr.id, tenant_id=scr.tenant_id, body=report.dump(), scores_key=scores_key)
    session.merge(stored)
    scr.status, scr.stage, scr.progress, scr.finished_at = "succeeded", "done", 1.0, now()
    scr.risk_score, scr.tier, scr.error = report.risk.risk_score, report.risk.tier, None
    if facts is not None:  # first, so the `screening.succeeded` webhook carries the decision too
        policies.apply(session, scr, policies.policy_for(session, scr), facts)
    events.record_on(session, scr, EventType.SCREENING_SUCCEEDED, f"risk {scr.risk_score:.1f} ({scr.tier})")
    session.commit()


def still_owned(session: Session, scr: Screening, job_id: str | None) -> bool:
    """Re-read the screening: is it still running under this job (not cancelled, not re-dispatched)?"""
    session.refresh(scr, ["status", "job_id"])
    return scr.status == "running" and owns(scr, job_id)


def fail(session: Session, scr: Screening, *, code: str, message: str, final: bool) -> str | None:
    """Record a failed attempt; `final` marks the screening failed, else it goes back to queued under a new
    job id, returned for the caller to enqueue (if that fails, the reconciler finds no job and sends it).
    Retries are counted in SQL (`attempts`), as for every kind of run, not by RQ."""
    scr.error = {"code": code, "message": message}
    events.record_on(
        session,
        scr,
        EventType.SCREENING_FAILED if final else EventType.SCREENING_RETRYING,
        f"attempt {scr.attempts}: {message}" + ("" if final else "; retrying"),
        level="error",
    )
    if final:
        scr.status, scr.finished_at = "failed", now()
    else:
        scr.status, scr.job_id = "queued", job_id_for(SCREENING_JOB, scr.id, os.urandom(4).hex())
    session.commit()
    return None if final else scr.job_id

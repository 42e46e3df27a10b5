"""The rules every kind of run shares (see `app.runs`): the compare-and-set, when a failure is final, and the
one recovery decision the reconciler applies to each active run."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy.orm import Session

from app import events
from app.core.errors import FtguardError
from app.core.vocab import Status

# RQ's states of a job that will never run (again) by itself
DEAD_JOB_STATES = ("failed", "stopped", "canceled", "finished")

JobSeen = tuple[str, float | None] | None  # (RQ status, started at), or None: Redis has no such job


class RunRow(Protocol):
    """What the lifecycle reads of a run's row (Screening, ScreeningShard, ExperimentStage)."""

    status: str
    attempts: int
    heartbeat_at: int | None
    started_at: int | None


def matched(result: Any) -> bool:
    """Whether an UPDATE matched exactly one row."""
    return getattr(result, "rowcount", 0) == 1


def changed(session: Session, stmt: Any, *, synchronize: bool = False) -> bool:
    """Execute a compare-and-set UPDATE: True when it matched its one row (the caller commits), False (rolled
    back) when someone changed the run since it was read. `synchronize`: bring the session's loaded rows in
    line too (SQLAlchemy's default), for callers that read them on."""
    options = {} if synchronize else {"synchronize_session": False}
    if not matched(session.execute(stmt, execution_options=options)):
        session.rollback()
        return False
    return True


def transition(
    session: Session, stmt: Any, *, tenant_id: str, object_id: str, event: dict[str, Any] | None
) -> bool:
    """A compare-and-set and its event (`events.record`'s fields), committed together, or neither."""
    if not changed(session, stmt):
        return False
    if event is not None:
        events.record(session, tenant_id=tenant_id, object_id=object_id, **event)
    session.commit()
    return True


def as_read(model: Any, run: Any) -> list[Any]:
    """A compare-and-set's condition for a run with its own job id (a screening, a shard): it is as it was
    read, in status and job, and, when running, in its last beat, so a worker that beat since keeps it."""
    where = [
        model.id == run.id,
        model.status == run.status,
        model.job_id == run.job_id if run.job_id else model.job_id.is_(None),
    ]
    if run.status == Status.RUNNING:
        where.append(
            model.heartbeat_at == run.heartbeat_at if run.heartbeat_at else model.heartbeat_at.is_(None)
        )
    return where


def retryable(exc: BaseException) -> bool:
    """Whether another attempt could go differently: our own errors say so (a bad input or a missing model
    fails the same way again; a judge's service being down may not), anything else (a crash, out of memory,
    a timeout) is tried again."""
    return exc.retryable if isinstance(exc, FtguardError) else True


def is_final(attempts: int, retries: int, *, retryable: bool = True) -> bool:
    """Whether a failed attempt is the run's last: it used its `retries` + 1 attempts, or it failed in a way
    a retry would repeat (a bad input, a missing model)."""
    return not retryable or attempts > retries


def stale_for(run: RunRow, t: int) -> int:
    """Seconds since the run's worker last showed it was alive."""
    return int(t - (run.heartbeat_at or run.started_at or 0))


class Action(StrEnum):
    KEEP = "keep"  # a live worker has it, or its job waits in the queue
    REQUEUE = "requeue"  # send it again under a new job
    GIVE_UP = "give_up"  # its worker was lost on every attempt: fail it with `worker_lost`


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str = ""
    stale_for: int = 0
    job_status: str | None = None


KEEP = Verdict(Action.KEEP)


def judge(run: RunRow, *, job: JobSeen, t: int, stale_after_s: float, retries: int) -> Verdict:
    """The reconciler's decision for one active run. `job` is what the queue holds of the run's current
    job (read only for a queued run).

    - running: alive while it beat within `stale_after_s`, whatever Redis says; silent, it lost its worker
      (SIGKILL, OOM, a machine gone) and is sent again, or given up once it has used its attempts;
    - queued: kept while its job waits or runs; sent again when the job is gone (Redis flushed, the
      request committed while the queue was down), dead, or `started` for over `stale_after_s` while SQL
      still says queued (a worker took it and died before its claim; RQ would notice only at the timeout).
    """
    if run.status == Status.RUNNING:
        stale = stale_for(run, t)
        if stale < stale_after_s:
            return KEEP
        action = Action.GIVE_UP if run.attempts > retries else Action.REQUEUE
        return Verdict(action, "worker_lost", stale)
    status = None if job is None else job[0]
    died_taking_it = job is not None and status == "started" and t - (job[1] or t) >= stale_after_s
    if job is not None and status not in DEAD_JOB_STATES and not died_taking_it:
        return KEEP
    return Verdict(Action.REQUEUE, "job_missing" if status is None else f"job_{status}", job_status=status)


def requeue_message(kind: str, run: RunRow, v: Verdict) -> str:
    """The event message of a run sent again."""
    if v.reason == "worker_lost":
        return f"attempt {run.attempts} lost its worker (no heartbeat for {v.stale_for} s); sent again"
    if v.job_status is None:
        return f"the queue had lost this {kind}'s job; sent again"
    return f"the queue holds this {kind}'s job as {v.job_status}; sent again"


def give_up_message(kind: str, run: RunRow, v: Verdict) -> str:
    return (
        f"the worker running this {kind} stopped (no heartbeat for {v.stale_for} s) on each of its "
        f"{run.attempts} attempt(s); it will not be retried"
    )

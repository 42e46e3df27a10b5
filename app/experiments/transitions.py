"""The stage transitions the workers make, the lifecycle of `app.runs` for a stage: claim (compare-and-set,
queued -> running), progress, heartbeat, complete (and enqueue the next stage), fail (retry or give up), and
stop. Recovery of a stage whose worker died or whose job was lost is the one reconciler's
(`app.experiments.runs`). A finished stage is never run again."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Update, select, update
from sqlalchemy.orm import Session

from app import events
from app.core.errors import ServiceUnavailable
from app.core.queue import JobQueue
from app.core.vocab import ACTIVE, TERMINAL, EventType, StageEvent, stage_event
from app.experiments.progress import STAGES
from app.experiments.progress import of as overall_progress
from app.models import Experiment, ExperimentStage, now
from app.runs import lifecycle
from app.runs.lifecycle import matched

log = logging.getLogger("ftguard.experiments")


def dispatch(queue: JobQueue, experiment_id: str, stage_name: str, attempt: int) -> None:
    """Enqueue a stage the request has just committed as queued. Accepted is accepted: with Redis down the
    stage stays queued in SQL and `recover` (run by every worker's reconciler) enqueues it, so the client
    gets its 201 and a retry does not start a second run."""
    try:
        queue.enqueue_stage(experiment_id, stage_name, attempt)
    except ServiceUnavailable:
        log.warning("queue unavailable; stage %s of %s stays queued for recovery", stage_name, experiment_id)


def claim(
    session: Session, *, experiment_id: str, stage_name: str, worker: str
) -> tuple[Experiment, ExperimentStage] | str:
    """Take a queued stage (compare-and-set); returns why not when another run has it or it is done."""
    exp = session.get(Experiment, experiment_id)
    if exp is None:
        return "experiment not found"
    if exp.status in TERMINAL:
        return f"experiment {exp.status}"
    ts = now()
    took = lifecycle.changed(
        session,
        update(ExperimentStage)
        .where(
            ExperimentStage.experiment_id == experiment_id,
            ExperimentStage.name == stage_name,
            ExperimentStage.status == "queued",
        )
        .values(
            status="running",
            attempts=ExperimentStage.attempts + 1,
            worker=worker[:200],
            started_at=ts,
            heartbeat_at=ts,
            finished_at=None,
            progress=0.0,
            detail={},
        ),
        synchronize=True,
    )
    running = took and lifecycle.changed(
        session,
        update(Experiment)
        .where(Experiment.id == experiment_id, Experiment.status.in_(ACTIVE))
        .values(status="running", stage=stage_name, heartbeat_at=ts),
        synchronize=True,
    )
    if not running:
        st = session.get(ExperimentStage, (experiment_id, stage_name))
        return f"stage {st.status if st else 'missing'}"
    session.refresh(exp)
    if exp.started_at is None:
        exp.started_at = ts
    st = session.get(ExperimentStage, (experiment_id, stage_name))
    assert st is not None
    session.refresh(st)
    data = {"attempt": st.attempts, "worker": worker}
    _stage_event(session, exp, stage_name, StageEvent.STARTED, f"attempt {st.attempts} on {worker}", data)
    session.commit()
    return exp, st


def _stage_event(
    session: Session,
    exp: Experiment,
    stage_name: str,
    what: StageEvent,
    message: str,
    data: dict[str, Any] | None = None,
    *,
    level: str = "info",
) -> None:
    """Record the stage's event `what`: its message after the stage's name, its `data` (if any) with it."""
    fields = {} if data is None else {"stage": stage_name, **data}
    events.record_on(
        session, exp, stage_event(stage_name, what), f"{stage_name}: {message}", level=level, data=fields
    )


def _my_stage(experiment_id: str, stage_name: str, attempt: int) -> Update:
    """UPDATE of the stage row this attempt owns; it matches no row once another run has taken the stage."""
    return update(ExperimentStage).where(
        ExperimentStage.experiment_id == experiment_id,
        ExperimentStage.name == stage_name,
        ExperimentStage.status == "running",
        ExperimentStage.attempts == attempt,
    )


def _running(experiment_id: str) -> Update:
    """UPDATE of the experiment while it is running; it matches no row once it was cancelled or ended."""
    return update(Experiment).where(Experiment.id == experiment_id, Experiment.status == "running")


def progress(
    session: Session,
    *,
    experiment_id: str,
    stage_name: str,
    attempt: int,
    fraction: float,
    detail: dict[str, Any] | None = None,
    message: str | None = None,
) -> str:
    """Save a stage's progress; returns 'ok', 'cancelled' (the experiment was) or 'lost' (another run has
    the stage now)."""
    ts = now()
    mine = _my_stage(experiment_id, stage_name, attempt).values(
        progress=round(min(max(fraction, 0.0), 1.0), 4),
        heartbeat_at=ts,
        **({"detail": detail} if detail is not None else {}),
    )
    if not lifecycle.changed(session, mine, synchronize=True):
        return "lost"
    exp = session.get(Experiment, experiment_id)
    overall = overall_progress(session, exp, stage_name, fraction) if exp is not None else 0.0
    if not matched(session.execute(_running(experiment_id).values(progress=overall, heartbeat_at=ts))):
        session.commit()
        return "cancelled"
    if message:
        exp = session.get(Experiment, experiment_id)
        assert exp is not None
        events.record_on(
            session,
            exp,
            stage_event(stage_name, StageEvent.PROGRESS),
            message,
            # the curve stays on the stage row: an event every few seconds need not copy it again
            data={"stage": stage_name, **{k: v for k, v in (detail or {}).items() if k != "loss_curve"}},
        )
    session.commit()
    return "ok"


def heartbeat(session: Session, *, experiment_id: str, stage_name: str, attempt: int) -> None:
    ts = now()
    session.execute(_my_stage(experiment_id, stage_name, attempt).values(heartbeat_at=ts))
    session.execute(_running(experiment_id).values(heartbeat_at=ts))
    session.commit()


def complete(
    session: Session,
    queue: JobQueue | None,
    *,
    experiment_id: str,
    stage_name: str,
    attempt: int,
    artefact_key: str | None,
    result: dict[str, Any],
) -> str:
    """Record a finished stage and enqueue the next (or finish the experiment). Returns what happened."""
    ts = now()
    mine = _my_stage(experiment_id, stage_name, attempt).values(
        status="succeeded", progress=1.0, finished_at=ts, artefact_key=artefact_key, result=result, error=None
    )
    if not lifecycle.changed(session, mine, synchronize=True):
        return "discarded"  # another run took the stage over (this one was presumed dead)
    exp = session.get(Experiment, experiment_id)
    assert exp is not None
    session.refresh(exp)
    scalars = {k: v for k, v in result.items() if isinstance(v, int | float | str)}
    _stage_event(session, exp, stage_name, StageEvent.SUCCEEDED, "done", scalars)
    if exp.status != "running":
        session.commit()
        return exp.status
    i = STAGES.index(stage_name)
    if i + 1 == len(STAGES):
        finished = session.execute(
            _running(exp.id).values(
                status="succeeded", stage="done", progress=1.0, finished_at=ts, results=result, error=None
            )
        )
        if matched(finished):
            head = result.get("headline", {})
            events.record_on(
                session,
                exp,
                EventType.EXPERIMENT_SUCCEEDED,
                f"harmfulness rate {head.get('harmfulness_rate')} ({head.get('judge')} judge)",
            )
        session.commit()
        return "succeeded"
    nxt = STAGES[i + 1]
    st = session.get(ExperimentStage, (exp.id, nxt))
    assert st is not None
    st.status, st.worker = "queued", None
    exp.stage, exp.progress = nxt, overall_progress(session, exp, nxt, 0.0)
    session.commit()
    _enqueue(queue, exp.id, nxt, st.attempts + 1)
    return "next"


def _enqueue(queue: JobQueue | None, experiment_id: str, stage_name: str, attempt: int) -> None:
    """Enqueue; a queue outage is not fatal here: the stage is queued in SQL and `recover` enqueues it."""
    if queue is None:
        return
    try:
        queue.enqueue_stage(experiment_id, stage_name, attempt)
    except Exception:
        log.exception("could not enqueue stage %s of %s; recovery will", stage_name, experiment_id)


def fail(
    session: Session,
    queue: JobQueue | None,
    *,
    experiment_id: str,
    stage_name: str,
    attempt: int,
    code: str,
    message: str,
    retryable: bool,
    retries: int,
) -> bool:
    """Record a failed attempt; retry it (a new job) or fail the experiment. Returns True when final."""
    st = session.get(ExperimentStage, (experiment_id, stage_name))
    if st is None or st.status != "running" or st.attempts != attempt:
        session.rollback()
        return False
    failures = int((st.error or {}).get("failures", 0)) + 1
    final = lifecycle.is_final(failures, retries, retryable=retryable)
    st.error = {"code": code, "message": message, "failures": failures}
    st.status, st.finished_at = ("failed", now()) if final else ("queued", None)
    exp = session.get(Experiment, experiment_id)
    assert exp is not None
    what, text = (StageEvent.FAILED, message) if final else (StageEvent.RETRYING, f"{message}; retrying")
    _stage_event(session, exp, stage_name, what, f"attempt {attempt}: {text}", {"code": code}, level="error")
    if final:
        failed = session.execute(
            update(Experiment)
            .where(Experiment.id == experiment_id, Experiment.status.in_(ACTIVE))
            .values(
                status="failed",
                finished_at=now(),
                error={"code": code, "message": message, "stage": stage_name},
            )
        )
        if matched(failed):
            events.record_on(
                session,
                exp,
                EventType.EXPERIMENT_FAILED,
                f"failed in stage {stage_name}: {message}",
                level="error",
            )
    session.commit()
    if not final:
        _enqueue(queue, experiment_id, stage_name, st.attempts + 1)
    return final


def stopped(session: Session, *, experiment_id: str, stage_name: str, attempt: int) -> None:
    """The running stage saw the cancellation and stopped."""
    done = session.execute(
        _my_stage(experiment_id, stage_name, attempt).values(status="cancelled", finished_at=now())
    )
    if matched(done):
        exp = session.get(Experiment, experiment_id)
        assert exp is not None
        _stage_event(session, exp, stage_name, StageEvent.CANCELLED, "stopped")
    session.commit()


def stages(*, session: Session, experiment_id: str) -> list[ExperimentStage]:
    """An experiment's stage rows, in order."""
    return list(
        session.scalars(
            select(ExperimentStage)
            .where(ExperimentStage.experiment_id == experiment_id)
            .order_by(ExperimentStage.position)
        )
    )

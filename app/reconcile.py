"""The reconciler: SQL is the record of every accepted job, Redis only a queue; this brings the queue back in
line with the record after a crash.

- A `queued` screening whose RQ job is gone (Redis flushed, restarted without persistence, the API died
  between commit and enqueue), dead (failed, stopped), or taken by a worker that died before marking it
  running (job `started` for over `stale_after_s`) is sent again.
- An experiment stage `queued` in SQL with no job in Redis (accepted while Redis was down), or `running`
  and silent past `stale_after_s`, is enqueued again (`experiments.recover`).
- A sharded screening waiting for its shards (stage `shards`) is alive while they are: a lost shard is sent
  again alone, and a finished set of shards whose merge was never sent gets it (`_reconcile_shards`).
- A `running` screening whose heartbeat is older than `stale_after_s` has lost its worker (SIGKILL, OOM,
  a machine gone): it is sent again, or failed with `worker_lost` once it has used its attempts
  (`job_retries` + 1).

Each dispatch gets a new RQ job id and the change is one conditional UPDATE on the state that was read, so
several reconcilers (every worker runs one) never dispatch one screening twice, and a stale copy of an
older dispatch refuses to run (`screenings.start` checks the job id). It also purges expired idempotency
records and orphaned dataset blobs, and converts scores files of the old compressed format
(`app.screenings.scores.migrate`). Run it with `ftguard reconcile`; workers run it every
`reconcile_interval_s`, and the API once at start-up.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update

from app import events, idempotency
from app.core.errors import ServiceUnavailable
from app.core.queue import SCREENING_JOB, JobQueue, job_id_for
from app.core.services import Services
from app.core.storage import clean_staging
from app.core.vocab import EventType
from app.datasets import service as datasets
from app.experiments import transitions as experiments
from app.models import Screening, now
from app.screenings import scores, shards
from app.screenings import service as screenings

log = logging.getLogger("ftguard.reconcile")
DEAD_JOB_STATES = ("failed", "stopped", "canceled", "finished")
BATCH = 500


@dataclass
class Outcome:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    idempotency_purged: int = 0
    blobs_removed: int = 0
    stages_requeued: list[str] = field(default_factory=list)
    scores_converted: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requeued": self.requeued,
            "failed": self.failed,
            "idempotency_purged": self.idempotency_purged,
            "blobs_removed": self.blobs_removed,
            "stages_requeued": self.stages_requeued,
            "scores_converted": self.scores_converted,
        }


def _dispatch(services: Services, queue: JobQueue, scr: Screening, *, reason: str, message: str) -> bool:
    """Send the screening again under a new job id, if nobody changed it since it was read."""
    new_job = job_id_for(SCREENING_JOB, scr.id, os.urandom(4).hex())
    q = update(Screening).where(
        Screening.id == scr.id,
        Screening.status == scr.status,
        Screening.job_id == scr.job_id if scr.job_id else Screening.job_id.is_(None),
    )
    if scr.status == "running":  # not if the worker beat since we read it
        q = q.where(
            Screening.heartbeat_at == scr.heartbeat_at
            if scr.heartbeat_at
            else Screening.heartbeat_at.is_(None)
        )
    if not _transition(
        services,
        scr,
        q.values(status="queued", stage="queued", job_id=new_job),
        level="warning",
        type=EventType.SCREENING_REQUEUED,
        message=message,
        data={"reason": reason, "attempts": scr.attempts},
    ):
        return False
    queue.enqueue(SCREENING_JOB, scr.id, job_id=new_job)
    return True


def _transition(services: Services, scr: Screening, stmt: Any, **event: Any) -> bool:
    """Apply a compare-and-set update of one screening and record its event, both or neither."""
    with services.db.session() as session:
        res = session.execute(stmt, execution_options={"synchronize_session": False})
        if getattr(res, "rowcount", 0) != 1:
            session.rollback()
            return False
        events.record(session, tenant_id=scr.tenant_id, object_id=scr.id, **event)
        session.commit()
    return True


def _give_up(services: Services, scr: Screening, *, stale_for: int) -> bool:
    message = (
        f"the worker running this screening stopped (no heartbeat for {stale_for} s) on each of its "
        f"{scr.attempts} attempt(s); it will not be retried"
    )
    return _transition(
        services,
        scr,
        update(Screening)
        .where(Screening.id == scr.id, Screening.status == "running", Screening.job_id == scr.job_id)
        .values(status="failed", finished_at=now(), error={"code": "worker_lost", "message": message}),
        level="error",
        type=EventType.SCREENING_FAILED,
        message=message,
        data={"reason": "worker_lost"},
    )


def _active(services: Services) -> list[Screening]:
    out: list[Screening] = []
    after = ""
    with services.db.session() as session:
        while True:
            rows = list(
                session.scalars(
                    select(Screening)
                    .where(Screening.status.in_(("queued", "running")), Screening.id > after)
                    .order_by(Screening.id)
                    .limit(BATCH)
                )
            )
            out.extend(rows)
            if len(rows) < BATCH:
                return out
            after = rows[-1].id


def _reconcile_shards(services: Services, queue: JobQueue, scr: Screening, outcome: Outcome) -> None:
    """A screening waiting for its shards: each lost shard is sent again alone (a running one silent past
    `stale_after_s`, a queued one whose job is gone), or fails the screening past its attempts; when every
    shard is done but the merge was never sent (its worker died in between), the merge is sent."""
    s, t = services.settings, now()
    with services.db.session() as session:
        found = shards.of(session, scr.id)
        if found and all(sh.status == "succeeded" for sh in found):
            job = shards.to_merge(session, scr.id)
            if job is not None:
                queue.enqueue(SCREENING_JOB, scr.id, job_id=job)
                outcome.requeued.append(scr.id)
            return
        for sh in found:
            if sh.status == "running":
                stale_for = t - (sh.heartbeat_at or sh.started_at or 0)
                if stale_for < s.stale_after_s:
                    continue
                if sh.attempts > s.job_retries:
                    message = f"its worker stopped (no heartbeat for {stale_for} s), {sh.attempts} times"
                    shards.fail(session, sh, code="worker_lost", message=message, final=True)
                    outcome.failed.append(scr.id)
                    return
                reason = "worker_lost"
            elif sh.status == "queued":
                state = queue.job_state(sh.job_id) if sh.job_id else None
                status = None if state is None else state[0]
                died_taking_it = status == "started" and t - ((state or ("", t))[1] or t) >= s.stale_after_s
                if state is not None and status not in DEAD_JOB_STATES and not died_taking_it:
                    continue
                reason = "job_missing" if status is None else f"job_{status}"
            else:
                continue
            if shards.dispatch(session, queue, sh, reason=reason):
                outcome.requeued.append(sh.id)


def reconcile_screenings(*, services: Services, queue: JobQueue, outcome: Outcome | None = None) -> Outcome:
    """Re-dispatch lost screenings and fail the ones past their attempts (see the module docstring)."""
    outcome = outcome or Outcome()
    s = services.settings
    t = now()
    for scr in _active(services):
        try:
            if scr.status == "running" and scr.stage == shards.SHARDS_STAGE:
                _reconcile_shards(services, queue, scr, outcome)  # alive while its shards are
            elif scr.status == "running":
                stale_for = t - (scr.heartbeat_at or scr.started_at or 0)
                if stale_for < s.stale_after_s:
                    continue  # a live worker has it, whatever Redis says
                if scr.attempts > s.job_retries:
                    if _give_up(services, scr, stale_for=stale_for):
                        outcome.failed.append(scr.id)
                elif _dispatch(
                    services,
                    queue,
                    scr,
                    reason="worker_lost",
                    message=f"attempt {scr.attempts} lost its worker (no heartbeat for {stale_for} s); "
                    "sent again",
                ):
                    outcome.requeued.append(scr.id)
            else:
                state = queue.job_state(scr.job_id or job_id_for(SCREENING_JOB, scr.id))
                status = None if state is None else state[0]
                # "started" while SQL still says queued: a worker took the job and died before marking
                # the screening running (RQ itself would only notice after the job timeout).
                died_taking_it = (
                    state is not None and status == "started" and t - (state[1] or t) >= s.stale_after_s
                )
                if state is not None and status not in DEAD_JOB_STATES and not died_taking_it:
                    continue
                if _dispatch(
                    services,
                    queue,
                    scr,
                    reason="job_missing" if status is None else f"job_{status}",
                    message="the queue had lost this screening's job; sent again"
                    if status is None
                    else f"the queue holds this screening's job as {status}; sent again",
                ):
                    outcome.requeued.append(scr.id)
        except ServiceUnavailable:
            log.warning("queue unavailable: reconciliation stops here and resumes on the next run")
            break
    if outcome.requeued or outcome.failed:
        log.info("reconciled screenings", extra={"requeued": outcome.requeued, "failed": outcome.failed})
    return outcome


def reconcile(*, services: Services, queue: JobQueue, storage: bool = False) -> Outcome:
    """One pass: screenings, expired idempotency records, and with `storage` the blob store too (a walk
    over every dataset blob: done at API start-up and by `ftguard reconcile`, not every minute)."""
    outcome = reconcile_screenings(services=services, queue=queue)
    s = services.settings
    try:  # experiment stages accepted while Redis was down, or whose job or worker was lost
        with services.db.session() as session:
            found = experiments.recover(session=session, queue=queue, settings=s)
        outcome.stages_requeued = [f"{exp_id}:{stage}" for exp_id, stage in found]
    except ServiceUnavailable:
        log.warning("queue unavailable: experiment stages are recovered on the next run")
    outcome.idempotency_purged = idempotency.purge(db=services.db, ttl_s=s.idempotency_ttl_s)
    if storage:
        clean_staging(services.store, max_age_s=s.staging_max_age_s)
        outcome.blobs_removed = datasets.remove_orphan_blobs(services=services, min_age_s=s.staging_max_age_s)
        with services.db.session() as session:
            outcome.blobs_removed += screenings.remove_orphan_scores(
                store=services.store, session=session, min_age_s=s.staging_max_age_s
            )
        outcome.scores_converted = scores.migrate_all(db=services.db, store=services.store)
    return outcome

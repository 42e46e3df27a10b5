"""Screenings and their shards as kinds of run (`app.runs`): what the one reconciler needs to list, send again
and give up each. The transitions a worker makes are `app.screenings.transitions` and `.shards`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.core.queue import SCREENING_JOB, SHARD_JOB, JobQueue, job_id_for
from app.core.vocab import ACTIVE, EventType, Status
from app.models import Screening, ScreeningShard, now
from app.runs import lifecycle
from app.runs.kinds import paged
from app.runs.lifecycle import Verdict
from app.screenings import shards


class _WithJobIds:
    """Runs that keep their own job id (a screening, a shard): the label is the id, the job is the one
    recorded, or the first dispatch's."""

    job_func = SCREENING_JOB

    def label(self, run: Screening | ScreeningShard) -> str:
        return run.id

    def job_id(self, run: Screening | ScreeningShard) -> str:
        return run.job_id or job_id_for(self.job_func, run.id)

    def sweep(self, session: Session, queue: JobQueue) -> list[str]:
        return []


class ScreeningRuns(_WithJobIds):
    name, outcome, failed_into = "screening", "requeued", "failed"

    def active(self, session: Session, scope: str | None = None) -> Iterator[Screening]:
        # a screening waiting for its shards is alive while they are: they are judged, not it
        q = select(Screening).where(
            Screening.status.in_(ACTIVE),
            ~((Screening.status == Status.RUNNING) & (Screening.stage == shards.SHARDS_STAGE)),
        )
        if scope is not None:
            q = q.where(Screening.id == scope)
        yield from paged(session, q, Screening.id)  # type: ignore[misc]

    def requeue(self, session: Session, queue: JobQueue, run: Screening, v: Verdict) -> bool:
        new_job = job_id_for(SCREENING_JOB, run.id, os.urandom(4).hex())
        stmt = (
            update(Screening)
            .where(*lifecycle.as_read(Screening, run))
            .values(status="queued", stage="queued", job_id=new_job)
        )
        event = {
            "level": "warning",
            "type": EventType.SCREENING_REQUEUED,
            "message": lifecycle.requeue_message(self.name, run, v),
            "data": {"reason": v.reason, "attempts": run.attempts},
        }
        if not lifecycle.transition(session, stmt, tenant_id=run.tenant_id, object_id=run.id, event=event):
            return False
        queue.enqueue(SCREENING_JOB, run.id, job_id=new_job)
        return True

    def give_up(self, session: Session, run: Screening, v: Verdict) -> bool:
        message = lifecycle.give_up_message(self.name, run, v)
        stmt = (
            update(Screening)
            .where(*lifecycle.as_read(Screening, run))
            .values(status="failed", finished_at=now(), error={"code": "worker_lost", "message": message})
        )
        event: dict[str, Any] = {"level": "error", "type": EventType.SCREENING_FAILED, "message": message}
        event["data"] = {"reason": "worker_lost"}
        return lifecycle.transition(session, stmt, tenant_id=run.tenant_id, object_id=run.id, event=event)


class ShardRuns(_WithJobIds):
    name, outcome, failed_into = "shard", "requeued", "failed"
    job_func = SHARD_JOB

    def active(self, session: Session, scope: str | None = None) -> Iterator[ScreeningShard]:
        q = (
            select(ScreeningShard)
            .join(Screening, Screening.id == ScreeningShard.screening_id)
            .where(
                ScreeningShard.status.in_(ACTIVE),
                Screening.status == Status.RUNNING,
                Screening.stage == shards.SHARDS_STAGE,
            )
        )
        if scope is not None:
            q = q.where(ScreeningShard.screening_id == scope)
        yield from paged(session, q, ScreeningShard.id)  # type: ignore[misc]

    def requeue(self, session: Session, queue: JobQueue, run: ScreeningShard, v: Verdict) -> bool:
        return shards.dispatch(session, queue, run, reason=v.reason)

    def give_up(self, session: Session, run: ScreeningShard, v: Verdict) -> bool:
        stmt = (
            update(ScreeningShard)
            .where(*lifecycle.as_read(ScreeningShard, run))
            .values(status=Status.FAILED, finished_at=now())
        )
        if not lifecycle.changed(session, stmt):  # it beat, or was taken, since it was read: not lost
            return False
        message = f"its worker stopped (no heartbeat for {v.stale_for} s), {run.attempts} times"
        shards.fail(session, run, code="worker_lost", message=message, final=True)
        return True

    def sweep(self, session: Session, queue: JobQueue) -> list[str]:
        """A screening whose shards are all done but whose merge was never sent (its worker died in
        between) is sent to its merge."""
        sent = []
        for screening_id in shards.waiting_screenings(session):
            found = shards.of(session, screening_id)
            if found and all(sh.status == Status.SUCCEEDED for sh in found):
                job = shards.to_merge(session, screening_id)
                if job is not None:
                    queue.enqueue(SCREENING_JOB, screening_id, job_id=job)
                    sent.append(screening_id)
        return sent

"""The shards of a sharded screening: their SQL state and transitions (the compute is
workers.screenings.shards).

A screening whose customer set has more rows than `shard_rows` runs in three steps:

1. prepare (the screening's own job): the alignment and anchor vectors go into the cache, the shards are
   written here (`plan`) and dispatched, and the screening waits in stage `shards`, still `running`;
2. shards (one job each, any worker): each represents and compares its slice of rows and stores its
   results as a blob; each is claimed by compare-and-set on its `job_id`, beats its own heartbeat (and the
   screening's), and is dispatched again alone by the reconciler when its worker is lost (`lost`);
3. merge: the last shard to succeed sends the screening back to the queue in stage `merge` (one
   compare-and-set, so two shards finishing together dispatch it once); its job joins the shards' results,
   scores and writes the report, as an unsharded run would.

The screening's progress is 5% for the prepare, 90% for the shards (weighed by rows), 5% for the merge.
A cancelled screening cancels its shards; a shard that fails for good fails the screening.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app import events
from app.core.errors import ServiceUnavailable
from app.core.queue import SCREENING_JOB, SHARD_JOB, JobQueue, job_id_for
from app.core.vocab import ACTIVE, EventType
from app.models import Screening, ScreeningShard, now
from app.runs import lifecycle

PREPARE_SHARE, SHARDS_SHARE, MERGE_SHARE = 0.05, 0.90, 0.05
SHARDS_STAGE, MERGE_STAGE = "shards", "merge"


def blob_key(tenant_id: str, screening_id: str, index: int) -> str:
    """A shard's row results (numbers only), removed when the report is written."""
    return f"shards/{tenant_id}/{screening_id}/{index:05d}.npz"


def of(session: Session, screening_id: str) -> list[ScreeningShard]:
    return list(
        session.scalars(
            select(ScreeningShard)
            .where(ScreeningShard.screening_id == screening_id)
            .order_by(ScreeningShard.index)
        )
    )


def plan(session: Session, scr: Screening, *, rows: int, size: int) -> list[ScreeningShard]:
    """The screening's shards of `size` rows (a multiple of the block size), written once: a prepare that
    runs again (a lost worker, a retry) keeps the shards there are, finished ones included."""
    have = of(session, scr.id)
    if have:
        return have
    for i, start in enumerate(range(0, rows, size)):
        session.add(
            ScreeningShard(
                id=f"{scr.id}-{i}",
                screening_id=scr.id,
                tenant_id=scr.tenant_id,
                index=i,
                start=start,
                stop=min(start + size, rows),
                status="queued",
                progress=0.0,
                attempts=0,
                meta={},
            )
        )
    session.commit()
    return of(session, scr.id)


def dispatch(session: Session, queue: JobQueue, sh: ScreeningShard, *, reason: str) -> bool:
    """Send a shard (again) under a new job id, if nobody changed it since it was read. With the queue down
    the shard stays queued in SQL and the reconciler sends it later."""
    new_job = job_id_for(SHARD_JOB, sh.id, os.urandom(4).hex())
    stmt = (
        update(ScreeningShard)
        .where(*lifecycle.as_read(ScreeningShard, sh))
        .values(status="queued", job_id=new_job, progress=0.0)
    )
    event = None
    if reason != "planned":
        event = {
            "level": "warning",
            "type": EventType.SCREENING_SHARD_REQUEUED,
            "message": f"shard {sh.index} sent again ({reason})",
            "data": {"shard": sh.index, "reason": reason, "attempts": sh.attempts},
        }
    where = {"tenant_id": sh.tenant_id, "object_id": sh.screening_id}
    if not lifecycle.transition(session, stmt, **where, event=event):
        return False
    try:
        queue.enqueue(SHARD_JOB, sh.id, job_id=new_job)
    except ServiceUnavailable:
        return False  # queued in SQL: the reconciler finds no job and sends it
    return True


def claim(session: Session, sh: ScreeningShard, job_id: str | None) -> bool:
    """Mark the shard running under `job_id`; False when it must not run (finished, cancelled, handed to
    another job, or its screening is no longer waiting for shards)."""
    t = now()
    q = update(ScreeningShard).where(ScreeningShard.id == sh.id, ScreeningShard.status.in_(ACTIVE))
    if job_id is not None:
        q = q.where(ScreeningShard.job_id == job_id)
    res = session.execute(
        q.values(status="running", attempts=ScreeningShard.attempts + 1, started_at=t, heartbeat_at=t),
        execution_options={"synchronize_session": False},
    )
    session.commit()
    session.refresh(sh)
    return lifecycle.matched(res) and waiting(session, sh)


def waiting(session: Session, sh: ScreeningShard) -> bool:
    """Whether the shard's screening still waits for its shards (not cancelled, failed or merging)."""
    scr = session.get(Screening, sh.screening_id, populate_existing=True)
    return scr is not None and scr.status == "running" and scr.stage == SHARDS_STAGE


def owned(session: Session, sh: ScreeningShard, job_id: str | None) -> bool:
    session.refresh(sh, ["status", "job_id"])
    return sh.status == "running" and (job_id is None or sh.job_id == job_id) and waiting(session, sh)


def progress(session: Session, sh: ScreeningShard, fraction: float, job_id: str | None) -> bool:
    """Save the shard's progress and the screening's (weighed over its shards); False when the shard must
    stop (cancelled, re-dispatched, or the screening failed)."""
    if not owned(session, sh, job_id):
        return False
    t = now()
    sh.progress, sh.heartbeat_at = round(min(max(fraction, 0.0), 1.0), 4), t
    session.flush()
    done, total = session.execute(
        select(
            func.sum((ScreeningShard.stop - ScreeningShard.start) * ScreeningShard.progress),
            func.sum(ScreeningShard.stop - ScreeningShard.start),
        ).where(ScreeningShard.screening_id == sh.screening_id)
    ).one()
    share = PREPARE_SHARE + SHARDS_SHARE * float(done or 0) / max(float(total or 1), 1.0)
    session.execute(
        update(Screening)
        .where(
            Screening.id == sh.screening_id, Screening.status == "running", Screening.stage == SHARDS_STAGE
        )
        .values(progress=round(share, 4), heartbeat_at=t),
        execution_options={"synchronize_session": False},
    )
    session.commit()
    return True


def succeed(session: Session, sh: ScreeningShard, meta: dict[str, Any], job_id: str | None) -> str | None:
    """Mark the shard done. The last shard of its screening sends the screening to its merge: the new job
    id is returned (None: not the last, or another shard's call did it)."""
    res = session.execute(
        update(ScreeningShard)
        .where(ScreeningShard.id == sh.id, ScreeningShard.status == "running")
        .where(ScreeningShard.job_id == job_id if job_id is not None else ScreeningShard.id == sh.id)
        .values(status="succeeded", progress=1.0, finished_at=now(), meta=meta, error=None),
        execution_options={"synchronize_session": False},
    )
    session.commit()
    if not lifecycle.matched(res):
        return None
    left = session.scalar(
        select(func.count())
        .select_from(ScreeningShard)
        .where(ScreeningShard.screening_id == sh.screening_id, ScreeningShard.status != "succeeded")
    )
    if left:
        return None
    return to_merge(session, sh.screening_id)


def to_merge(session: Session, screening_id: str) -> str | None:
    """Send a screening whose shards are all done to its merge (one compare-and-set); the new job id, or
    None when it is not waiting for shards any more. The caller enqueues the job; if that fails, the
    screening is queued in SQL and the reconciler sends it."""
    new_job = job_id_for(SCREENING_JOB, screening_id, os.urandom(4).hex())
    stmt = (
        update(Screening)
        .where(Screening.id == screening_id, Screening.status == "running", Screening.stage == SHARDS_STAGE)
        # the merge is a phase of its own: its attempts count from zero
        .values(status="queued", stage=MERGE_STAGE, job_id=new_job, attempts=0, heartbeat_at=now())
    )
    if not lifecycle.changed(session, stmt):
        return None
    scr = session.get(Screening, screening_id)
    assert scr is not None
    events.record_on(session, scr, EventType.SCREENING_SHARDS_DONE, "every shard is done; merging")
    session.commit()
    return new_job


def fail(session: Session, sh: ScreeningShard, *, code: str, message: str, final: bool) -> None:
    """A failed shard attempt: retried alone (back to queued), or, when `final`, the screening fails."""
    sh.error = {"code": code, "message": message}
    sh.status = "failed" if final else "queued"
    sh.finished_at = now() if final else None
    if final:
        scr = session.get(Screening, sh.screening_id)
        if scr is not None and scr.status == "running":
            scr.status, scr.finished_at = "failed", now()
            scr.error = {"code": code, "message": f"shard {sh.index}: {message}"}
            events.record_on(
                session,
                scr,
                EventType.SCREENING_FAILED,
                f"shard {sh.index}, attempt {sh.attempts}: {message}",
                level="error",
            )
        cancel_all(session, sh.screening_id)
    session.commit()


def cancel_all(session: Session, screening_id: str) -> None:
    """Stop every shard still to run or running (each running one stops at its next progress write)."""
    session.execute(
        update(ScreeningShard)
        .where(ScreeningShard.screening_id == screening_id, ScreeningShard.status.in_(ACTIVE))
        .values(status="cancelled", finished_at=now()),
        execution_options={"synchronize_session": False},
    )


def waiting_screenings(session: Session) -> list[str]:
    return list(
        session.scalars(
            select(Screening.id).where(Screening.status == "running", Screening.stage == SHARDS_STAGE)
        )
    )

"""The kinds of run the one reconciler recovers, and what each must say of itself. Adding a kind is a class
with these members in its domain and a line in `kinds()`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Select
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.queue import JobQueue
from app.core.vocab import Status
from app.models import now
from app.runs.lifecycle import Action, RunRow, Verdict, judge

BATCH = 500


class RunKind(Protocol):
    name: str  # as events and logs say it: "screening", "shard", "stage"
    outcome: str  # the reconcile outcome's list its requeued runs go to ("requeued", "stages_requeued")
    failed_into: str  # ... and its given-up ones

    def active(self, session: Session, scope: str | None = None) -> Iterator[Any]:
        """The runs to judge: queued or running, and not waiting on runs of another kind (`scope`: one
        parent's only, e.g. one experiment)."""
        ...

    def label(self, run: Any) -> str: ...

    def job_id(self, run: Any) -> str:
        """The RQ job that should be running, or waiting for, the run now."""
        ...

    def requeue(self, session: Session, queue: JobQueue, run: Any, v: Verdict) -> bool:
        """Send the run again (one compare-and-set on the state it was read in, then the enqueue); False when
        someone changed it since."""
        ...

    def give_up(self, session: Session, run: Any, v: Verdict) -> bool:
        """Fail the run, and whatever waits on it, with `worker_lost`."""
        ...

    def sweep(self, session: Session, queue: JobQueue) -> list[str]:
        """Work of this kind the per-run decision cannot see (a merge never sent); returns what it sent."""
        ...


def paged(session: Session, query: Select[Any], key: Any) -> Iterator[RunRow]:
    """Rows of `query` in `key` order, `BATCH` at a time (a reconciler never holds a whole table)."""
    after = ""
    while True:
        rows = list(session.scalars(query.where(key > after).order_by(key).limit(BATCH)))
        yield from rows
        if len(rows) < BATCH:
            return
        after = getattr(rows[-1], key.key)


def kinds() -> tuple[RunKind, ...]:
    """Every kind, in the order the reconciler walks them: a screening before its shards, so a screening
    just failed for good does not have its shards sent again."""
    from app.experiments.runs import StageRuns
    from app.screenings.runs import ScreeningRuns, ShardRuns

    return (ScreeningRuns(), ShardRuns(), StageRuns())


@dataclass(frozen=True)
class Acted:
    kind: RunKind
    label: str
    action: Action


def recover(
    session: Session,
    queue: JobQueue,
    settings: Settings,
    *,
    only: tuple[RunKind, ...] | None = None,
    scope: str | None = None,
) -> list[Acted]:
    """One recovery pass over every kind (or `only` these, `scope`: one parent's runs): each active run is
    judged by the one rule (`lifecycle.judge`) and sent again or given up. A queue outage raises
    ServiceUnavailable; what was done before it stays done."""
    t, out = now(), []
    for kind in only or kinds():
        out += [Acted(kind, label, Action.REQUEUE) for label in kind.sweep(session, queue)]
        for run in kind.active(session, scope):
            job = queue.job_state(kind.job_id(run)) if run.status == Status.QUEUED else None
            v = judge(run, job=job, t=t, stale_after_s=settings.stale_after_s, retries=settings.job_retries)
            if v.action == Action.KEEP:
                continue
            done = (
                kind.give_up(session, run, v)
                if v.action == Action.GIVE_UP
                else kind.requeue(session, queue, run, v)
            )
            if done:
                out.append(Acted(kind, kind.label(run), v.action))
    return out

"""The reconciler: SQL is the record of every accepted job, Redis only a queue; this brings the queue back in
line with the record after a crash. One pass walks every kind of run (a screening, a shard of one, an
experiment stage: `app.runs.kinds`) and judges each active run by the one rule (`app.runs.lifecycle.judge`):

- a `queued` run whose RQ job is gone (Redis flushed, restarted without persistence, the request committed
  while the queue was down), dead (failed, stopped), or taken by a worker that died before its claim (job
  `started` for over `stale_after_s`) is sent again;
- a `running` run whose heartbeat is older than `stale_after_s` has lost its worker (SIGKILL, OOM, a
  machine gone): it is sent again, or failed with `worker_lost` once it has used its attempts
  (`job_retries` + 1);
- a sharded screening waiting for its shards is alive while they are: a lost shard is sent again alone, and
  a finished set of shards whose merge was never sent gets it.

Each dispatch is one conditional UPDATE on the state that was read, under a new job id, so several
reconcilers (every worker runs one) never dispatch one run twice, and a stale copy of an older dispatch
refuses to run (each claim checks its owner). It also purges expired idempotency records and orphaned
dataset blobs, and converts scores files of the old compressed format (`app.screenings.scores.migrate`).
Run it with `ftguard reconcile`; workers run it at start and every `reconcile_interval_s`, and the API once
at start-up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from app import idempotency
from app.core.errors import ServiceUnavailable
from app.core.queue import JobQueue
from app.core.services import Services
from app.core.storage import clean_staging
from app.datasets import service as datasets
from app.runs.kinds import kinds, recover
from app.runs.lifecycle import Action
from app.screenings import scores
from app.screenings import service as screenings

log = logging.getLogger("ftguard.reconcile")


@dataclass
class Outcome:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    idempotency_purged: int = 0
    blobs_removed: int = 0
    stages_requeued: list[str] = field(default_factory=list)
    stages_failed: list[str] = field(default_factory=list)
    scores_converted: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requeued": self.requeued,
            "failed": self.failed,
            "idempotency_purged": self.idempotency_purged,
            "blobs_removed": self.blobs_removed,
            "stages_requeued": self.stages_requeued,
            "stages_failed": self.stages_failed,
            "scores_converted": self.scores_converted,
        }


def reconcile_runs(*, services: Services, queue: JobQueue, outcome: Outcome | None = None) -> Outcome:
    """Recover every kind of run by the one rule (`app.runs`): each lost one is sent again, or given up
    past its attempts. A kind the queue cannot be reached for is left to the next pass."""
    outcome = outcome or Outcome()
    for kind in kinds():
        try:
            with services.db.session() as session:
                acted = recover(session, queue, services.settings, only=(kind,))
        except ServiceUnavailable:
            log.warning("queue unavailable: %ss are recovered on the next run", kind.name)
            continue
        for a in acted:
            getattr(outcome, kind.outcome if a.action == Action.REQUEUE else kind.failed_into).append(a.label)
    if outcome.requeued or outcome.failed or outcome.stages_requeued or outcome.stages_failed:
        log.info("reconciled runs", extra=outcome.as_dict())
    return outcome


def reconcile(*, services: Services, queue: JobQueue, storage: bool = False) -> Outcome:
    """One pass: every kind of run, expired idempotency records, and with `storage` the blob store too (a walk
    over every dataset blob: done at API start-up and by `ftguard reconcile`, not every minute)."""
    outcome = reconcile_runs(services=services, queue=queue)
    s = services.settings
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

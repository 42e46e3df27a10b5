"""Experiment stages as a kind of run (`app.runs`): what the one reconciler needs to list, send again and give
up each. A stage's job is `exp-<id>-<stage>-<attempt>` and its attempt number is its owner: the
transitions a worker makes are `app.experiments.transitions`."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.core.queue import JobQueue, stage_job_id
from app.core.vocab import ACTIVE, StageEvent, Status, stage_event
from app.experiments import transitions
from app.models import Experiment, ExperimentStage
from app.runs import lifecycle
from app.runs.lifecycle import Verdict


class StageRuns:
    name, outcome, failed_into = "stage", "stages_requeued", "stages_failed"

    def active(self, session: Session, scope: str | None = None) -> Iterator[ExperimentStage]:
        q = (
            select(ExperimentStage)
            .join(Experiment, Experiment.id == ExperimentStage.experiment_id)
            .where(Experiment.status.in_(ACTIVE), ExperimentStage.status.in_(ACTIVE))
            .order_by(ExperimentStage.experiment_id, ExperimentStage.position)
        )
        if scope is not None:
            q = q.where(Experiment.id == scope)
        # one stage of an experiment is active at a time, and experiments are bounded by tenant quotas
        yield from list(session.scalars(q))

    def label(self, run: ExperimentStage) -> str:
        return f"{run.experiment_id}:{run.name}"

    def job_id(self, run: ExperimentStage) -> str:
        return stage_job_id(run.experiment_id, run.name, run.attempts + 1)

    def requeue(self, session: Session, queue: JobQueue, run: ExperimentStage, v: Verdict) -> bool:
        if run.status == Status.RUNNING:  # back to queued, unless its worker beat or finished since
            stmt = (
                update(ExperimentStage)
                .where(
                    ExperimentStage.experiment_id == run.experiment_id,
                    ExperimentStage.name == run.name,
                    ExperimentStage.status == Status.RUNNING,
                    ExperimentStage.attempts == run.attempts,
                    ExperimentStage.heartbeat_at == run.heartbeat_at
                    if run.heartbeat_at
                    else ExperimentStage.heartbeat_at.is_(None),
                )
                .values(status=Status.QUEUED, worker=None)
            )
            event = {
                "level": "warning",
                "type": stage_event(run.name, StageEvent.RECOVERED),
                "message": f"{run.name}: {lifecycle.requeue_message(self.name, run, v)}",
                "data": {"stage": run.name, "reason": v.reason, "attempts": run.attempts},
            }
            if not lifecycle.transition(
                session, stmt, tenant_id=run.tenant_id, object_id=run.experiment_id, event=event
            ):
                return False
        queue.enqueue_stage(run.experiment_id, run.name, run.attempts + 1)
        return True

    def give_up(self, session: Session, run: ExperimentStage, v: Verdict) -> bool:
        return transitions.fail(
            session,
            None,
            experiment_id=run.experiment_id,
            stage_name=run.name,
            attempt=run.attempts,
            code="worker_lost",
            message=lifecycle.give_up_message(self.name, run, v),
            retryable=False,
            retries=0,
        )

    def sweep(self, session: Session, queue: JobQueue) -> list[str]:
        return []

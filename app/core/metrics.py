"""Prometheus metrics for `/metrics`.

The API process counts its own requests in its own registry. Workers run in other processes, usually on
other machines, so their in-process counters could never reach a scrape of the API, and prometheus_client's
multiprocess mode needs one directory shared by every process, which a worker on another machine does not
have. So a worker adds what it measures (job durations by kind and stage, job outcomes, vectors computed and
vectors served from the cache) to one Redis hash, which every process reaches already, and the API reads
that hash at scrape time together with the queue depths (from RQ) and the screenings per status (from SQL).

Consequences: the worker totals survive API restarts and every API replica exposes the same totals (sum the
request metrics over replicas, take max of the others); a lost Redis resets them, which Prometheus reads as
a counter reset. Labels are our own constants or route templates: never ids, never raw paths.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from typing import Any

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from rq import Queue, Worker
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from app.core.db import Database
from app.core.queue import JobQueue
from app.models import Screening

log = logging.getLogger("ftguard.metrics")
JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
VECTOR_FIELDS = ("vectors_computed", "vectors_cached", "vector_cache_hits", "vector_cache_misses")


def metrics_key(prefix: str) -> str:
    return f"{prefix}:metrics"


class WorkerMetrics:
    """What a worker adds to the shared Redis hash after each job. Never fails a job: errors are logged."""

    def __init__(self, connection: redis.Redis, prefix: str) -> None:
        self.connection, self.key = connection, metrics_key(prefix)

    def record_job(
        self,
        *,
        kind: str,
        status: str,
        stages: dict[str, float] | None = None,
        vectors_computed: int = 0,
        vectors_cached: int = 0,
        cache_hits: int = 0,
        cache_misses: int = 0,
    ) -> None:
        pipe = self.connection.pipeline(transaction=True)
        pipe.hincrby(self.key, f"jobs|{kind}|{status}", 1)
        for stage, seconds in (stages or {}).items():
            for le in JOB_BUCKETS:
                if seconds <= le:
                    pipe.hincrby(self.key, f"job_bucket|{kind}|{stage}|{le}", 1)
            pipe.hincrby(self.key, f"job_count|{kind}|{stage}", 1)
            pipe.hincrbyfloat(self.key, f"job_sum|{kind}|{stage}", float(seconds))
        counts = (vectors_computed, vectors_cached, cache_hits, cache_misses)
        for name, n in zip(VECTOR_FIELDS, counts, strict=True):
            if n:
                pipe.hincrby(self.key, name, int(n))
        try:
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("could not record job metrics", extra={"error": type(exc).__name__})


def _job_histograms(fields: dict[str, str]) -> Iterator[Metric]:
    series: dict[tuple[str, str], dict[str, Any]] = {}
    for name, value in fields.items():
        part = name.split("|")
        if part[0] in ("job_bucket", "job_count", "job_sum") and len(part) >= 3:
            s = series.setdefault((part[1], part[2]), {"buckets": {}, "count": 0.0, "sum": 0.0})
            if part[0] == "job_bucket" and len(part) == 4:
                s["buckets"][float(part[3])] = float(value)
            elif part[0] == "job_count":
                s["count"] = float(value)
            elif part[0] == "job_sum":
                s["sum"] = float(value)
    h = HistogramMetricFamily(
        "ftguard_job_duration_seconds",
        "Duration of finished jobs by kind and stage (stage total: the whole job), from every worker.",
        labels=["kind", "stage"],
    )
    for (kind, stage), s in sorted(series.items()):
        buckets = [(_le(le), s["buckets"].get(le, 0.0)) for le in JOB_BUCKETS] + [("+Inf", s["count"])]
        h.add_metric([kind, stage], buckets, sum_value=s["sum"])
    yield h


def _text(x: bytes | str) -> str:
    return x.decode() if isinstance(x, bytes) else x


def _le(x: float) -> str:
    return "+Inf" if math.isinf(x) else repr(float(x))


class ScrapeCollector(Collector):
    """Read at scrape time: the workers' Redis hash, queue depths and workers from RQ, screenings from SQL."""

    def __init__(self, queue: JobQueue, db: Database) -> None:
        self.queue, self.db = queue, db

    def _queues(self) -> list[Queue]:
        prefix = f"{self.queue.settings.queue_prefix}-"
        found = {
            q.name
            for q in Queue.all(connection=self.queue.connection, serializer=JSONSerializer)
            if q.name.startswith(prefix)
        }
        names = sorted({n[len(prefix) :] for n in found} | {"default"})
        return [self.queue.queue(n) for n in names]

    def collect(self) -> Iterable[Metric]:
        redis_up = GaugeMetricFamily("ftguard_redis_up", "1 when Redis answered this scrape.")
        try:
            yield from self._from_redis()
            redis_up.add_metric([], 1)
        except redis.RedisError:
            redis_up.add_metric([], 0)
        yield redis_up
        db_up = GaugeMetricFamily("ftguard_database_up", "1 when the database answered this scrape.")
        screenings = GaugeMetricFamily(
            "ftguard_screenings", "Screenings by status, all tenants (from SQL).", labels=["status"]
        )
        try:
            with self.db.session() as session:
                rows = session.execute(select(Screening.status, func.count()).group_by(Screening.status))
                for status, n in rows:
                    screenings.add_metric([status], n)
            db_up.add_metric([], 1)
            yield screenings
        except SQLAlchemyError:
            db_up.add_metric([], 0)
        yield db_up

    def _from_redis(self) -> Iterator[Metric]:
        conn = self.queue.connection
        depth = GaugeMetricFamily("ftguard_queue_depth", "Jobs waiting in each queue.", labels=["queue"])
        running = GaugeMetricFamily(
            "ftguard_queue_running", "Jobs running from each queue.", labels=["queue"]
        )
        workers = GaugeMetricFamily("ftguard_workers", "Workers listening on each queue.", labels=["queue"])
        prefix = len(f"{self.queue.settings.queue_prefix}-")
        for q in self._queues():
            label = [q.name[prefix:]]
            depth.add_metric(label, q.count)
            running.add_metric(label, StartedJobRegistry(queue=q).count)
            workers.add_metric(label, Worker.count(queue=q))
        raw: dict[Any, Any] = conn.hgetall(metrics_key(self.queue.settings.queue_prefix))
        fields = {_text(k): _text(v) for k, v in raw.items()}
        jobs = CounterMetricFamily(
            "ftguard_jobs", "Finished job attempts by kind and outcome.", labels=["kind", "status"]
        )
        for name, value in sorted(fields.items()):
            part = name.split("|")
            if part[0] == "jobs" and len(part) == 3:
                jobs.add_metric([part[1], part[2]], float(value))
        vectors = CounterMetricFamily(
            "ftguard_vectors",
            "Example vectors by source: computed by a model, or read from the vector cache.",
            labels=["source"],
        )
        vectors.add_metric(["computed"], float(fields.get("vectors_computed", 0)))
        vectors.add_metric(["cache"], float(fields.get("vectors_cached", 0)))
        lookups = CounterMetricFamily(
            "ftguard_vector_cache_lookups", "Vector cache lookups by result.", labels=["result"]
        )
        lookups.add_metric(["hit"], float(fields.get("vector_cache_hits", 0)))
        lookups.add_metric(["miss"], float(fields.get("vector_cache_misses", 0)))
        yield from (depth, running, workers, jobs, vectors, lookups)
        yield from _job_histograms(fields)


class ApiMetrics:
    """One registry per app: the request metrics of this process plus the collector read at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ftguard_http_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ftguard_http_request_duration_seconds",
            "HTTP request latency by method and route template.",
            ["method", "route"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)
        self._scrape: ScrapeCollector | None = None

    def bind(self, queue: JobQueue, db: Database) -> None:
        self.unbind()
        self._scrape = ScrapeCollector(queue, db)
        self.registry.register(self._scrape)

    def unbind(self) -> None:
        if self._scrape is not None:
            self.registry.unregister(self._scrape)
            self._scrape = None

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else "OTHER"
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

"""The worker process: build the runtime and load the default model once, then take jobs.

It is an RQ `SimpleWorker` (`Worker`): jobs run in this process, so a loaded model (and CUDA) is reused by
every job and nothing forks after CUDA is initialised. The reconciler runs once before the first job, so a
worker that comes up after a crash picks the lost runs up, and then on a daemon thread every
`reconcile_interval_s`; another thread sends due webhook deliveries every `webhook_poll_s`.
"""

from __future__ import annotations

import logging
import threading

from rq import SimpleWorker
from rq.serializers import JSONSerializer

from app import reconcile
from app.core.config import Settings
from app.core.metrics import WorkerMetrics
from app.core.queue import JobQueue, connect
from app.screenings.params import anchor_representation
from app.webhooks import dispatch
from workers.runtime import Runtime, set_runtime

log = logging.getLogger("ftguard.worker")


class Worker(SimpleWorker):
    """RQ's `SimpleWorker`, its command channel (RQ's pubsub: stop a job, shut down) read every
    `COMMAND_POLL_S` rather than every 60 s. redis-py 8.2 made `PubSubWorkerThread.stop()` wait for the
    thread, which once unsubscribed sleeps out its poll interval: with RQ's 60 s, a worker that had finished
    (a burst run, a SIGTERM) could take a minute to exit, past a container's stop grace period."""

    COMMAND_POLL_S = 1.0

    def subscribe(self) -> None:
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]
            sleep_time=self.COMMAND_POLL_S, daemon=True, exception_handler=self._pubsub_exception_handler
        )


def _reconcile(runtime: Runtime, queue: JobQueue) -> None:
    try:
        outcome = reconcile.reconcile(services=runtime.services, queue=queue)
    except Exception:  # a database or Redis outage: try again next time
        log.warning("reconciliation failed", exc_info=True)
        return
    for label in outcome.requeued + outcome.stages_requeued:
        log.info("sent again: %s", label)


def _reconcile_loop(runtime: Runtime, queue: JobQueue, stop: threading.Event) -> None:
    while not stop.wait(runtime.settings.reconcile_interval_s):
        _reconcile(runtime, queue)


def run_worker(
    settings: Settings,
    *,
    redis_url: str,
    queues: list[str],
    burst: bool = False,
    preload: bool = True,
    name: str | None = None,
    runtime: Runtime | None = None,
    logging_level: str | None = None,
) -> bool:
    """Take jobs from `queues`. `logging_level` is RQ's own log (default: the settings' `log_level`); the
    CLI's local experiments pass WARNING so a burst run prints no subscription and registry chatter."""
    runtime = runtime or Runtime(settings)
    set_runtime(runtime)
    if preload:  # the models of a screening's defaults: the similarity and the harmful-anchor signal
        s = settings
        for params in ({}, anchor_representation({}, s)):
            rep = runtime.representer(params)
            log.info("model loaded", extra={"identity": rep.identity})
    connection = connect(redis_url)
    runtime.metrics = WorkerMetrics(connection, settings.queue_prefix)
    jq = JobQueue(connection, settings)
    runtime.queue = jq
    _reconcile(runtime, jq)  # before the first job: what a crash left behind is sent again
    worker = Worker(
        [jq.queue(q) for q in queues], connection=connection, serializer=JSONSerializer, name=name
    )
    stop = threading.Event()
    if not burst:
        threading.Thread(
            target=_reconcile_loop,
            args=(runtime, JobQueue(connect(redis_url), settings), stop),
            name="reconciler",
            daemon=True,
        ).start()
        threading.Thread(  # webhook outbox: SQL rows, so any worker may send them (app.webhooks.dispatch)
            target=dispatch.run_forever,
            kwargs={"db": runtime.services.db, "settings": settings, "stop": stop},
            name="webhooks",
            daemon=True,
        ).start()
    try:
        return bool(worker.work(burst=burst, logging_level=logging_level or settings.log_level))
    finally:
        stop.set()

"""The worker process's RQ worker (workers.runner.Worker)."""

from __future__ import annotations

from rq.serializers import JSONSerializer

from app.core.config import Settings
from app.core.queue import JobQueue, connect
from workers.runner import Worker


def test_the_command_channel_is_read_every_second_so_a_finished_worker_exits_at_once(
    settings: Settings, redis_url: str
) -> None:
    """redis-py 8.2's `PubSubWorkerThread.stop()` waits for the thread, which sleeps out its poll interval
    once the channel is unsubscribed: RQ's 60 s made every burst run and every SIGTERM wait up to a minute
    (the suite's API tests, each a burst worker, took three times as long)."""
    connection = connect(redis_url)
    worker = Worker(
        [JobQueue(connection, settings).queue("default")], connection=connection, serializer=JSONSerializer
    )
    worker.subscribe()
    thread = worker.pubsub_thread
    assert thread is not None and thread.sleep_time == Worker.COMMAND_POLL_S <= 1.0
    worker.unsubscribe()
    thread.join(timeout=10)  # a bound far past the poll interval and far short of RQ's 60 s
    assert not thread.is_alive()

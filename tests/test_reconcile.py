"""The reconciler, in-process (the chaos tests in tests/chaos do the same with real killed processes)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import update

from app import reconcile
from app.core.queue import SCREENING_JOB, job_id_for
from app.main import create_app
from app.models import Screening, now
from tests.conftest import DEMO, bearer, make_key, upload


def _screening(client) -> str:
    cust = upload(client, DEMO / "customer_benign_lists.jsonl").json()["id"]
    align = upload(client, DEMO / "alignment.jsonl", purpose="alignment").json()["id"]
    r = client.post(
        "/v1/screenings", json={"dataset_id": cust, "alignment_dataset_id": align, "subset_size": 5}
    )
    assert r.status_code == 201
    return str(r.json()["id"])


def _state(client) -> Any:
    return client.app.state.ftguard


def _set(client, scr_id: str, **values: Any) -> None:
    with _state(client).services.db.session() as s:
        s.execute(update(Screening).where(Screening.id == scr_id).values(**values))
        s.commit()


def _events(client, scr_id: str) -> list[str]:
    return [e["type"] for e in client.get(f"/v1/screenings/{scr_id}/events").json()["data"]]


def test_a_queued_screening_whose_job_redis_lost_is_sent_again(client, run_worker) -> None:
    scr = _screening(client)
    st = _state(client)
    assert reconcile.reconcile(services=st.services, queue=st.queue).requeued == []  # the job is there
    st.queue.queue().empty()
    st.queue.connection.delete(f"rq:job:{job_id_for(SCREENING_JOB, scr)}")
    assert st.queue.job_status(job_id_for(SCREENING_JOB, scr)) is None
    out = reconcile.reconcile(services=st.services, queue=st.queue)
    assert out.requeued == [scr]
    assert reconcile.reconcile(services=st.services, queue=st.queue).requeued == []  # once only
    run_worker()
    got = client.get(f"/v1/screenings/{scr}").json()
    assert got["status"] == "succeeded" and got["attempts"] == 1
    assert "screening.requeued" in _events(client, scr)


def test_a_running_screening_with_a_stale_heartbeat_is_retried_then_failed(
    client, run_worker, settings
) -> None:
    scr = _screening(client)
    fresh = _screening(client)
    st = _state(client)
    st.queue.queue().empty()  # the workers that took them died: their jobs are gone from the queue
    old = now() - int(settings.stale_after_s) - 5
    _set(client, scr, status="running", attempts=1, heartbeat_at=old, started_at=old)
    _set(client, fresh, status="running", attempts=1, heartbeat_at=now(), started_at=now())
    out = reconcile.reconcile(services=st.services, queue=st.queue)
    assert out.requeued == [scr]  # not `fresh`: a live worker beats for it, whatever Redis says
    got = client.get(f"/v1/screenings/{scr}").json()
    assert got["status"] == "queued"
    run_worker()
    got = client.get(f"/v1/screenings/{scr}").json()
    assert got["status"] == "succeeded" and got["attempts"] == 2

    # past its attempts (job_retries=1 here: 2 attempts), a lost worker fails it with a clear error
    _set(client, fresh, attempts=settings.job_retries + 1, heartbeat_at=old)
    out = reconcile.reconcile(services=st.services, queue=st.queue)
    assert out.failed == [fresh]
    got = client.get(f"/v1/screenings/{fresh}").json()
    assert got["status"] == "failed" and got["error"]["code"] == "worker_lost"
    assert "no heartbeat" in got["error"]["message"]


def test_a_stale_copy_of_an_earlier_dispatch_does_not_run(client, run_worker, settings) -> None:
    scr = _screening(client)
    st = _state(client)
    old = now() - int(settings.stale_after_s) - 5
    # the first job is still in the queue (say, the lost worker's job reappears) and the reconciler also
    # sends the screening again: only the newest dispatch may run
    _set(client, scr, status="running", attempts=1, heartbeat_at=old, started_at=old)
    assert reconcile.reconcile(services=st.services, queue=st.queue).requeued == [scr]
    assert len(st.queue.queue()) == 2
    run_worker()
    got = client.get(f"/v1/screenings/{scr}").json()
    assert got["status"] == "succeeded" and got["attempts"] == 2
    assert _events(client, scr).count("screening.succeeded") == 1


def test_a_screening_accepted_while_redis_is_down_runs_once_it_is_back(
    client, run_worker, settings, tmp_path
) -> None:
    cust = upload(client, DEMO / "customer_benign_lists.jsonl").json()["id"]
    align = upload(client, DEMO / "alignment.jsonl", purpose="alignment").json()["id"]
    dead = f"unix://{tmp_path / 'no-redis.sock'}"
    with TestClient(create_app(settings, redis_url=dead)) as down:
        down.headers.update(bearer(make_key(down.app.state.ftguard.services.db, "test")))
        r = down.post("/v1/screenings", json={"dataset_id": cust, "alignment_dataset_id": align})
        assert r.status_code == 201 and r.json()["status"] == "queued"  # accepted: it is in SQL
        assert down.get("/readyz").status_code == 503
    scr = r.json()["id"]
    st = _state(client)
    assert reconcile.reconcile(services=st.services, queue=st.queue).requeued == [scr]
    run_worker()
    assert client.get(f"/v1/screenings/{scr}").json()["status"] == "succeeded"


def test_a_job_taken_by_a_worker_that_died_before_starting_it_is_sent_again(
    client, run_worker, settings
) -> None:
    from datetime import UTC, datetime, timedelta

    from rq.job import Job, JobStatus
    from rq.serializers import JSONSerializer

    scr = _screening(client)
    st = _state(client)
    job = Job.fetch(job_id_for(SCREENING_JOB, scr), connection=st.queue.connection, serializer=JSONSerializer)
    st.queue.queue().remove(job)  # a worker popped it ...
    job.set_status(JobStatus.STARTED)
    job.started_at = datetime.now(UTC) - timedelta(seconds=5)  # ... moments ago: leave it
    job.save()
    assert reconcile.reconcile(services=st.services, queue=st.queue).requeued == []
    job.started_at = datetime.now(UTC) - timedelta(seconds=settings.stale_after_s + 5)  # ... and died
    job.save()
    assert reconcile.reconcile(services=st.services, queue=st.queue).requeued == [scr]
    run_worker()
    assert client.get(f"/v1/screenings/{scr}").json()["status"] == "succeeded"


def test_a_crashed_attempt_is_retried_under_a_new_job_and_a_bad_input_is_not(
    client, run_worker, monkeypatch
) -> None:
    """Retries are counted in SQL and sent by the run's lifecycle, as for shards and stages, not by RQ."""
    from app.core.errors import FtguardError
    from workers.screenings import jobs

    real, calls = jobs.screen, []

    def crash_once(**kw: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the worker's process hit a bug")
        return real(**kw)

    monkeypatch.setattr(jobs, "screen", crash_once)
    scr = _screening(client)
    run_worker()
    got = client.get(f"/v1/screenings/{scr}").json()
    assert got["status"] == "succeeded" and got["attempts"] == 2, got
    with _state(client).services.db.session() as session:  # the retry ran as a job of its own
        assert session.get(Screening, scr).job_id != job_id_for(SCREENING_JOB, scr)
    assert _events(client, scr).count("screening.retrying") == 1

    def bad_input(**kw: Any) -> Any:
        raise FtguardError("the customer set has no usable text", code="empty_dataset")

    monkeypatch.setattr(jobs, "screen", bad_input)
    scr = _screening(client)
    run_worker()
    got = client.get(f"/v1/screenings/{scr}").json()
    assert got["status"] == "failed" and got["attempts"] == 1
    assert got["error"]["code"] == "empty_dataset"

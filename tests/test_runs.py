"""The one run lifecycle's rules (`app.runs`): the recovery decision every kind of run gets from the
reconciler, and when a failed attempt is final."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from app.core.errors import FtguardError, JudgeError
from app.runs.kinds import kinds
from app.runs.lifecycle import Action, is_final, judge, retryable

pytestmark = pytest.mark.no_backend  # never reads SQL, Redis or the blob store

T, STALE, RETRIES = 10_000, 30, 2


@dataclass
class Run:
    status: str
    attempts: int = 1
    heartbeat_at: int | None = None
    started_at: int | None = None


def _judge(run: Run, job: tuple[str, float | None] | None = None):  # type: ignore[no-untyped-def]
    return judge(run, job=job, t=T, stale_after_s=STALE, retries=RETRIES)


def test_a_running_run_is_alive_while_it_beats_whatever_the_queue_says() -> None:
    assert _judge(Run("running", heartbeat_at=T - STALE + 1)).action == Action.KEEP
    assert _judge(Run("running", heartbeat_at=None, started_at=T - 5)).action == Action.KEEP


def test_a_silent_running_run_is_sent_again_then_given_up_past_its_attempts() -> None:
    v = _judge(Run("running", attempts=RETRIES, heartbeat_at=T - STALE))
    assert (v.action, v.reason, v.stale_for) == (Action.REQUEUE, "worker_lost", STALE)
    v = _judge(Run("running", attempts=RETRIES + 1, heartbeat_at=T - 100))
    assert (v.action, v.reason) == (Action.GIVE_UP, "worker_lost")


@pytest.mark.parametrize(
    ("job", "action", "reason"),
    [
        (("queued", None), Action.KEEP, ""),
        (("deferred", None), Action.KEEP, ""),
        (("started", T - 5), Action.KEEP, ""),  # a worker has just taken it
        (("started", T - STALE), Action.REQUEUE, "job_started"),  # ... and died before its claim
        (None, Action.REQUEUE, "job_missing"),  # Redis lost it, or it was never sent
        (("failed", None), Action.REQUEUE, "job_failed"),
        (("finished", None), Action.REQUEUE, "job_finished"),
    ],
)
def test_a_queued_run_is_kept_while_its_job_lives(job, action, reason) -> None:  # type: ignore[no-untyped-def]
    v = _judge(Run("queued", attempts=0), job)
    assert (v.action, v.reason) == (action, reason)


def test_a_failure_is_final_past_the_retries_or_when_a_retry_would_repeat_it() -> None:
    assert not is_final(1, 2) and not is_final(2, 2) and is_final(3, 2)
    assert is_final(1, 2, retryable=False)
    # one rule for screenings, shards and stages: our errors say whether a retry could help
    assert not retryable(FtguardError("a dataset of this screening was deleted", code="dataset_deleted"))
    assert retryable(
        JudgeError("the llm judge scored 1 of 9 answers", code="judge_unavailable", retryable=True)
    )
    assert retryable(RuntimeError("a crash")) and retryable(MemoryError())


def test_every_kind_is_recovered_by_the_one_reconciler() -> None:
    assert [k.name for k in kinds()] == ["screening", "shard", "stage"]
    for kind in kinds():  # what the reconcile outcome reports them under
        assert kind.outcome in ("requeued", "stages_requeued")
        assert kind.failed_into in ("failed", "stages_failed")

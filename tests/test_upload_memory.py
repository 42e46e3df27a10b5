"""A 200 MB upload through the real server: its peak memory grows by under 100 MB (validation streams)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

from app.core.config import Settings
from tests.conftest import bearer, key_for

SIZE = 200 * 1024 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_big(path: Path) -> int:
    n = 0
    with path.open("w") as fh:
        while fh.tell() < SIZE:
            for _ in range(1000):
                fh.write(
                    json.dumps(
                        {
                            "prompt": f"Question {n}: what is {n} plus {n}? " + "pad " * 20,
                            "completion": f"The answer is {2 * n}. " + "more " * 20,
                        }
                    )
                    + "\n"
                )
                n += 1
    return n


def test_200mb_upload_keeps_server_memory_flat(
    tmp_path: Path, redis_url: str, database_url: str | None
) -> None:
    big = tmp_path / "big.jsonl"
    n = _write_big(big)
    port = _free_port()
    env = {
        **os.environ,
        "FTGUARD_DATA_DIR": str(tmp_path / "data"),
        "FTGUARD_REDIS_URL": redis_url,
        "FTGUARD_MAX_EXAMPLES": str(10 * n),
    }
    if database_url:
        env["FTGUARD_DATABASE_URL"] = database_url
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, _env_file=None)  # type: ignore[call-arg]
    auth = bearer(key_for(settings, "test"))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "app.main:create_app",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        small = httpx.post(
            f"{base}/v1/datasets",
            files={"file": ("s.jsonl", big.open("rb").readline())},
            data={"purpose": "fine-tune"},
            headers=auth,
            timeout=30,
        )
        assert small.status_code == 201, small.text
        ps = psutil.Process(proc.pid)
        baseline = ps.memory_info().rss
        peak = [baseline]
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], ps.memory_info().rss)
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        with big.open("rb") as fh:
            r = httpx.post(
                f"{base}/v1/datasets",
                files={"file": ("big.jsonl", fh)},
                data={"purpose": "fine-tune"},
                headers=auth,
                timeout=600,
            )
        stop.set()
        watcher.join()
        assert r.status_code == 201, r.text[:500]
        assert r.json()["examples"] == n and r.json()["bytes"] >= SIZE
        growth = (peak[0] - baseline) / 2**20
        print(
            f"upload {big.stat().st_size / 2**20:.0f} MB, {n} examples: server RSS baseline "
            f"{baseline / 2**20:.0f} MB, peak growth {growth:.1f} MB"
        )
        assert growth < 100, growth
    finally:
        proc.terminate()
        proc.wait(timeout=30)

"""`ftguard serve` (embedded mode) stopped with SIGTERM stops its worker processes too."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import httpx
import psutil
import pytest

from tests.chaos.conftest import ROOT, wait_for

pytestmark = pytest.mark.chaos


def test_sigterm_to_serve_leaves_no_orphan_worker(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTGUARD_")}
    env.update(
        {"FTGUARD_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1", "FTGUARD_LOG_LEVEL": "WARNING"}
    )
    serve = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers: list[psutil.Process] = []
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for("serve to start", ready, timeout=60)
        workers.extend(wait_for("its worker", lambda: psutil.Process(serve.pid).children(), timeout=30))
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
        _, alive = psutil.wait_procs(workers, timeout=30)
        assert alive == [], alive
    finally:
        for p in [*workers, psutil.Process(serve.pid)] if serve.poll() is None else workers:
            if p.is_running():
                p.kill()

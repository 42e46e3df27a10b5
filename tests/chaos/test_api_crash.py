"""SIGKILL the API in the middle of an upload: no dataset row, no blob, and the next start clears staging."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from app.core.db import Database
from app.models import Dataset
from tests.chaos.conftest import wait_for
from tests.conftest import bearer, key_for, stored_blobs

pytestmark = pytest.mark.chaos


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _big(path: Path, mb: int) -> None:
    row = (
        json.dumps({"prompt": "What is the boiling point of water? " * 4, "completion": "100 C. " * 20})
        + "\n"
    )
    with path.open("w") as fh:
        fh.write(row * ((mb << 20) // len(row)))


def _serve(spawn, port: int):  # type: ignore[no-untyped-def]
    proc = spawn(
        "uvicorn",
        "--factory",
        "app.main:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        log="api",
        FTGUARD_STAGING_MAX_AGE_S="0",
    )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for("the API to start", ready, timeout=60)
    return proc, base


def test_killing_the_api_mid_upload_leaves_no_dataset(chaos_settings, spawn, tmp_path) -> None:
    auth = bearer(key_for(chaos_settings, "test"))
    big = tmp_path / "big.jsonl"
    _big(big, 120)
    proc, base = _serve(spawn, _port())
    staging = chaos_settings.blob_dir / "tmp"
    result: dict[str, object] = {}

    def send() -> None:
        try:
            with big.open("rb") as fh:
                result["response"] = httpx.post(
                    f"{base}/v1/datasets", files={"file": ("big.jsonl", fh)}, headers=auth, timeout=120
                )
        except httpx.HTTPError as exc:
            result["error"] = exc

    sender = threading.Thread(target=send)
    sender.start()
    # the body has arrived and the server is validating it into a staged file: kill it now
    staged = wait_for(
        "the upload to be staged",
        lambda: [p for p in staging.iterdir() if p.stat().st_size > (1 << 20)],
        timeout=120,
        every=0.05,
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    sender.join(timeout=60)
    assert "error" in result, result  # the client saw the connection die, not a 201
    assert all(p.exists() for p in staged)  # the dead process left its half-written file
    db = Database(chaos_settings.sqlalchemy_url)
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Dataset)) == 0  # nothing marked ready
    assert [k for k in stored_blobs(chaos_settings) if k.startswith("datasets/")] == []

    t = time.monotonic()
    _, base = _serve(spawn, _port())
    assert list(staging.iterdir()) == []  # cleared at start-up
    r = httpx.get(f"{base}/v1/datasets", headers=auth)
    assert r.status_code == 200 and r.json()["data"] == []
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Dataset)) == 0
    db.dispose()
    print(f"restart and clean-up: {time.monotonic() - t:.1f} s")

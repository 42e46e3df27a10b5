"""The containers' commands, run outside Docker (no engine here): the compose API and worker commands and
their health checks against this test's Redis and database, and `ftguard serve` on the embedded defaults.
Processes are real subprocesses on loopback ports; each is stopped with SIGTERM at the end."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from app.core.config import Settings
from tests.conftest import DEMO, bearer, blob_env, key_for

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def local(cmd: list[str], port: int) -> list[str]:
    """A container command for this machine: `ftguard` is this interpreter's CLI, port 8000 a free one."""
    if cmd[0] == "CMD":
        cmd = cmd[1:]
    assert cmd[0] == "ftguard"
    return [sys.executable, "-m", "app.cli", *(a.replace("8000", str(port)) for a in cmd[1:])]


class Procs:
    def __init__(self, tmp: Path) -> None:
        self.tmp, self.procs = tmp, []

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name}.log").open("wb")
        p = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append((name, p))
        return p

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def stop(self) -> dict[str, int]:
        codes = {}
        for _, p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name, p in self.procs:
            try:
                codes[name] = p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                codes[name] = p.wait()
        return codes


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    ps = Procs(tmp_path)
    yield ps
    ps.stop()


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} not ready after {timeout} s")


def test_compose_commands_and_health_checks_run_outside_docker(
    settings: Settings, procs: Procs, tmp_path: Path
) -> None:
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    api, worker = spec["services"]["api"], spec["services"]["worker-cpu"]
    port = free_port()
    # the compose file's blob store is its seaweedfs container: here, the suite's store (data dir or S3)
    compose_env = {k: v for k, v in api["environment"].items() if not k.startswith("FTGUARD_BLOB_")}
    env = {
        **os.environ,
        **compose_env,
        **blob_env(settings),
        "FTGUARD_DATABASE_URL": settings.database_url or f"sqlite:///{tmp_path / 'ftguard.db'}",
        "FTGUARD_REDIS_URL": settings.redis_url or "",
        "FTGUARD_DATA_DIR": str(tmp_path / "data"),
        "FTGUARD_QUEUE_PREFIX": settings.queue_prefix,
        "HF_HUB_OFFLINE": "1",
    }
    key_settings = Settings(
        data_dir=tmp_path / "data", database_url=env["FTGUARD_DATABASE_URL"], _env_file=None
    )  # type: ignore[call-arg]
    auth = bearer(key_for(key_settings, "test"))
    server = procs.start("api", local(api["command"], port), env)
    base = f"http://127.0.0.1:{port}"
    wait_ready(f"{base}/readyz", server)
    procs.start(
        "worker",
        local(worker["command"], port),
        {
            **env,
            **{k: v for k, v in worker["environment"].items() if not k.startswith("FTGUARD_BLOB_")},
            **{k: env[k] for k in ("FTGUARD_DATABASE_URL", "FTGUARD_REDIS_URL", "FTGUARD_DATA_DIR")},
        },
    )

    def upload(path: Path, purpose: str) -> str:
        r = httpx.post(
            f"{base}/v1/datasets",
            files={"file": (path.name, path.read_bytes())},
            data={"purpose": purpose},
            headers=auth,
            timeout=30,
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    cust = upload(DEMO / "customer_benign_lists.jsonl", "fine-tune")
    align = upload(DEMO / "alignment.jsonl", "alignment")
    scr = httpx.post(
        f"{base}/v1/screenings", json={"dataset_id": cust, "alignment_dataset_id": align}, headers=auth
    ).json()
    deadline, status = time.monotonic() + 180, ""
    while time.monotonic() < deadline and status not in ("succeeded", "failed"):
        time.sleep(0.5)
        status = httpx.get(f"{base}/v1/screenings/{scr['id']}", headers=auth).json()["status"]
    assert status == "succeeded", procs.log("worker")[-3000:]

    # the compose health checks, as the engine would run them
    for name, svc in (("api", api), ("worker", worker)):
        check = subprocess.run(
            local(svc["healthcheck"]["test"], port), env=env, capture_output=True, timeout=60
        )
        assert check.returncode == 0, (name, check.stdout, check.stderr)
    bad = subprocess.run(
        local(["ftguard", "health", "--url", f"http://127.0.0.1:{free_port()}/readyz"], port),
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert bad.returncode == 1

    assert httpx.get(f"{base}/dashboard", headers=auth).status_code == 200
    metrics = httpx.get(f"{base}/metrics").text
    assert 'ftguard_jobs_total{kind="screening",status="succeeded"} 1.0' in metrics
    assert 'ftguard_workers{queue="default"} 1.0' in metrics

    codes = procs.stop()
    assert codes == {"api": 0, "worker": 0}, codes
    # JSON logs from both processes: the request id on the API's lines, the job id on the worker's
    api_lines = [json.loads(x) for x in procs.log("api").splitlines() if x.startswith("{")]
    worker_lines = [json.loads(x) for x in procs.log("worker").splitlines() if x.startswith("{")]
    assert any(x.get("route") == "/v1/screenings" and x.get("request_id") for x in api_lines)
    assert any(x.get("job_id") == f"run_screening-{scr['id']}" for x in worker_lines)
    assert "store brands instead of name brands" not in procs.log("api") + procs.log("worker")


def test_embedded_serve_starts_its_own_redis_and_worker(procs: Procs, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTGUARD_")}
    env |= {"FTGUARD_DATA_DIR": str(tmp_path / "data"), "FTGUARD_LOG_FORMAT": "text", "HF_HUB_OFFLINE": "1"}
    # the README's way to the first key: the admin command, on the same data dir, before serve starts
    made = subprocess.run(
        [sys.executable, "-m", "app.cli", "admin", "create-key", "--tenant", "default", "--admin"],
        env=env,
        capture_output=True,
        timeout=120,
        check=True,
    )
    auth = bearer(made.stdout.decode().strip().splitlines()[-1])
    server = procs.start("serve", [sys.executable, "-m", "app.cli", "serve", "--port", str(port)], env)
    base = f"http://127.0.0.1:{port}"
    wait_ready(f"{base}/readyz", server)
    assert httpx.get(f"{base}/healthz").json()["status"] == "ok"
    assert httpx.get(f"{base}/dashboard").status_code == 303  # to the sign-in form
    assert httpx.get(f"{base}/dashboard", headers=auth).status_code == 200
    assert "ftguard_queue_depth" in httpx.get(f"{base}/metrics").text
    workers = psutil.Process(server.pid).children(recursive=True)
    redis = [p for p in psutil.process_iter(["name", "cwd"]) if p.info["cwd"] == str(tmp_path / "data")]
    assert workers and redis and all("redis-server" in p.info["name"] for p in redis)
    assert procs.stop() == {"serve": 0}
    # stopping serve stops what it started: its worker(s) and the embedded Redis
    _, alive = psutil.wait_procs(workers + redis, timeout=15)
    assert not alive, alive


def test_health_checks_fail_when_nothing_runs(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from app.cli import app as cli
    from app.core.config import get_settings

    monkeypatch.setenv("FTGUARD_REDIS_URL", redis_url)
    monkeypatch.setenv("FTGUARD_QUEUE_PREFIX", f"nobody{os.getpid()}")
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        assert runner.invoke(cli, ["health", "--worker"]).exit_code == 1
        url = f"http://127.0.0.1:{free_port()}/readyz"
        assert runner.invoke(cli, ["health", "--url", url]).exit_code == 1
        assert runner.invoke(cli, ["health", "--url", "file:///etc/passwd"]).exit_code == 2
    finally:
        get_settings.cache_clear()

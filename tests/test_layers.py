"""The split between `app/` (the service) and `workers/` (the compute) is a layer, checked on the source:

- `app` reaches `workers` only through the queue: no module of `app` imports `workers`, except the CLI,
  and the CLI only inside functions (so `ftguard --help` and the API stay light).
- `workers` uses `app`'s core, storage, schemas, run lifecycle and the pure parts of each domain (formats,
  transitions, explain, decide, ...), never a domain's `service` module (the API's use cases), the routes,
  the dashboard or the CLI.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.no_backend  # never reads SQL, Redis or the blob store

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_FOR_WORKERS = ("app.api", "app.dashboard", "app.cli", "app.main")


def imports(path: Path) -> Iterator[tuple[str, bool, int]]:
    """(module, at module level, line) for every import in a file, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top = {id(node) for node in tree.body}
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, id(node) in top, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:  # `from app.x import service` imports app.x.service
                yield f"{base}.{alias.name}", id(node) in top, node.lineno


def files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_app_reaches_workers_only_from_the_cli_and_lazily() -> None:
    bad = []
    for path in files("app"):
        rel = path.relative_to(ROOT).as_posix()
        for module, at_top, line in imports(path):
            if module.split(".")[0] != "workers":
                continue
            if not rel.startswith("app/cli/") or at_top:
                bad.append(f"{rel}:{line} imports {module}")
    assert not bad, "\n".join(bad)


def test_workers_use_no_service_module_route_dashboard_or_cli() -> None:
    bad = []
    for path in files("workers"):
        rel = path.relative_to(ROOT).as_posix()
        for module, _, line in imports(path):
            parts = module.split(".")
            if parts[0] != "app":
                continue
            if "service" in parts or module.startswith(FORBIDDEN_FOR_WORKERS):
                bad.append(f"{rel}:{line} imports {module}")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_both_kinds_of_import(tmp_path: Path) -> None:
    """The control: the walk above finds a lazy and a `from` import, so an empty result means something."""
    found = {(m, top) for m, top, _ in imports(ROOT / "app" / "cli" / "lab.py")}
    assert any(m.startswith("app.cli.lab_local") and not top for m, top in found)
    found = {m for m, _, _ in imports(ROOT / "workers" / "screenings" / "jobs.py")}
    assert "app.runs.lifecycle" in found and "app.datasets.files" in found

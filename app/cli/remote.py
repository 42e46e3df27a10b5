"""`ftguard screen` and `ftguard validate` with `--server URL`: the same commands through a remote ftguard,
with the Python client (`ftguard.client`), the key from `--key` or `FTGUARD_KEY`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from app.demo import ALIGNMENT
from ftguard.client import Client

ServerOpt = typer.Option(
    "--server", envvar="FTGUARD_SERVER", help="Run on this remote ftguard (e.g. http://host:8000)."
)
KeyOpt = typer.Option("--key", envvar="FTGUARD_KEY", help="API key for --server (default: $FTGUARD_KEY).")


def connect(server: str, key: str | None) -> Client:
    if not server.startswith(("http://", "https://")):
        raise typer.BadParameter("the URL must start with http:// or https://", param_hint="--server")
    if not key:
        raise typer.BadParameter("--server needs an API key: --key or FTGUARD_KEY", param_hint="--key")
    return Client(server, api_key=key)


def screen(
    client: Client,
    *,
    customer: Path,
    alignment: Path | None,
    params: dict[str, Any],
    harmful_anchors: Path | None,
    safe_anchors: Path | None,
) -> dict[str, Any]:
    """Upload the files, screen them, wait (with a progress bar on stderr) and return the report's body."""
    ids: dict[str, Any] = {
        "dataset_id": client.datasets.create(customer, purpose="fine-tune").id,
        "alignment_dataset_id": client.datasets.create(alignment or ALIGNMENT, purpose="alignment").id,
    }
    if harmful_anchors:
        ids["harmful_anchors_dataset_id"] = client.datasets.create(
            harmful_anchors, purpose="harmful-anchors"
        ).id
    if safe_anchors:
        ids["safe_anchors_dataset_id"] = client.datasets.create(safe_anchors, purpose="safe-anchors").id
    body = {k: v for k, v in params.items() if v is not None}
    scr = client.screenings.create_and_wait(**ids, **body, progress=True)
    return client.screenings.report(scr.id).report


def validate(
    client: Client, *, file: Path, fmt: str, purpose: str, as_json: bool, echo: Callable[[str], None]
) -> bool:
    """POST /v1/datasets/validate, printed as the local command prints it; True when valid."""
    from app.datasets.summary import print_validation

    result = client.datasets.validate(file, purpose=purpose, format=fmt).to_dict()
    return print_validation(result, as_json=as_json, echo=echo)

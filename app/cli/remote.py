"""`ftguard screen` and `ftguard validate` with `--server URL`: the same commands through a remote ftguard,
with the Python client (`ftguard.client`), the key from `--key` or `FTGUARD_KEY`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import typer

from app.core.vocab import Purpose
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


# The screening field that names the dataset of each purpose.
DATASET_FIELDS = {
    Purpose.FINE_TUNE: "dataset_id",
    Purpose.ALIGNMENT: "alignment_dataset_id",
    Purpose.HARMFUL_ANCHORS: "harmful_anchors_dataset_id",
    Purpose.SAFE_ANCHORS: "safe_anchors_dataset_id",
}


def screen(client: Client, files: Mapping[Purpose, Path | None], params: dict[str, Any]) -> dict[str, Any]:
    """Upload the files (by purpose; the bundled alignment set when none is given), screen them, wait (with
    a progress bar on stderr) and return the report's body."""
    given: dict[Purpose, Path] = {Purpose.ALIGNMENT: ALIGNMENT, **{p: f for p, f in files.items() if f}}
    ids = {DATASET_FIELDS[p]: client.datasets.create(f, purpose=p.value).id for p, f in given.items()}
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

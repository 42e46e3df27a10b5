"""The `ftguard` command line: screen locally, run the demo, serve the API, run workers, migrate."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from app.core.config import get_settings
from app.datasets.validate import iter_examples, validate_stream

if TYPE_CHECKING:
    from workers.screening import Side

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="ftguard: screen LLM fine-tuning datasets for safety risk before fine-tuning.",
)
db_app = typer.Typer(help="Database schema.")
app.add_typer(db_app, name="db")
console = Console(stderr=True)
DEMO = Path(__file__).resolve().parent / "demo"
DEMO_ALIGNMENT = DEMO / "alignment.jsonl"
DEMO_CUSTOMERS = {
    "benign general": DEMO / "customer_benign_general.jsonl",
    "benign, list-heavy": DEMO / "customer_benign_lists.jsonl",
    "harmful-looking": DEMO / "customer_harmful_looking.jsonl",
}
TIER_STYLE = {"low": "green", "medium": "yellow", "high": "red", "critical": "bold red"}


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)


def load_side(path: Path, name: str) -> Side:
    """Validate a local file and read its examples; exits with located errors when it is invalid."""
    from workers.screening import Side

    s = get_settings()
    from app.datasets.service import limits

    with path.open("rb") as fh:
        rep = validate_stream(fh, limits=limits(s), filename=path.name)
    if not rep.ok:
        console.print(f"[red]{path}: {rep.error_count} error(s)[/red]")
        for e in rep.errors:
            console.print(f"  line {e['line']}: [bold]{e['code']}[/bold] {e['message']}")
        raise typer.Exit(2)
    assert rep.container and rep.format
    with path.open("rb") as fh:
        examples = [
            ex
            for _, ex in iter_examples(
                fh, container=rep.container, fmt=rep.format, max_line_bytes=s.max_line_bytes
            )
        ]
    return Side(
        name=name, examples=examples, sha256=rep.sha256, meta={"filename": path.name, "format": rep.format}
    )


class _Screener:
    """Holds one model for several local screenings."""

    def __init__(self, backend: str | None, model: str | None, **opts: Any) -> None:
        _quiet_libraries()
        from workers.runtime import Runtime

        self.runtime = Runtime(get_settings())
        self.params = {
            "backend": backend or self.runtime.settings.default_backend,
            "model": model or self.runtime.settings.default_model,
            **opts,
        }
        with console.status(f"loading {self.params['backend']} model {self.params['model']}"):
            self.rep = self.runtime.representer(self.params)

    def screen(self, customer: Side, alignment: Side, params: dict[str, Any]) -> dict[str, Any]:
        from workers.screening import Params, screen

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task(customer.meta.get("filename", "screening"), total=1.0)

            def report(stage: str, frac: float, _msg: str | None) -> bool:
                bar.update(task, completed=frac, description=f"{customer.meta.get('filename')}: {stage}")
                return True

            out = screen(
                customer=customer,
                alignment=alignment,
                representer=self.rep,
                params=Params.from_dict(params),
                cache=self.runtime.cache,
                report=report,
                device=self.runtime.device,
            )
        return out.body


def _summary(rows: list[tuple[str, dict[str, Any]]]) -> Table:
    t = Table(title="ftguard screening summary")
    for col in ("dataset", "examples", "risk", "tier", "mean max cos", "p90 max cos", "near share"):
        t.add_column(col, justify="right" if col not in ("dataset", "tier") else "left")
    for name, body in rows:
        r, d = body["risk"], body["distributions"]["customer_max_sim"]
        near = next(p["value"] for p in r["parts"] if p["name"] == "near_alignment_share")
        t.add_row(
            name,
            str(body["customer"]["examples"]),
            f"{r['risk_score']:.1f}",
            f"[{TIER_STYLE[r['tier']]}]{r['tier']}[/]",
            f"{d['mean']:.3f}",
            f"{d['percentiles']['p90']:.3f}",
            f"{near:.0%}",
        )
    return t


@app.command()
def screen(
    customer: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Customer dataset file.")],
    alignment: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="Alignment set; default: the bundled demo set."),
    ] = None,
    backend: Annotated[str | None, typer.Option(help="sentence-transformers or causal-lm.")] = None,
    model: Annotated[str | None, typer.Option(help="Model path or id.")] = None,
    top_k: Annotated[int, typer.Option(min=1, max=100)] = 5,
    subset_size: Annotated[int, typer.Option(min=1)] = 100,
    center: Annotated[bool, typer.Option(help="Mean-centre before cosine.")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the full report as JSON.")] = None,
) -> None:
    """Screen a dataset locally (no server) and print a summary."""
    screener = _Screener(backend, model)
    align = load_side(alignment or DEMO_ALIGNMENT, "alignment")
    cust = load_side(customer, "customer")
    body = screener.screen(cust, align, {"top_k": top_k, "subset_size": subset_size, "center": center})
    Console().print(_summary([(customer.name, body)]))
    for line in body["findings"]:
        Console().print(f"- {line}")
    if json_out:
        json_out.write_text(json.dumps(body, indent=2))
        console.print(f"report written to {json_out}")


@app.command()
def demo(
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the three reports.")] = None,
) -> None:
    """Screen the three bundled customer sets against the bundled alignment set and rank them."""
    screener = _Screener(None, None)
    align = load_side(DEMO_ALIGNMENT, "alignment")
    rows = []
    for name, path in DEMO_CUSTOMERS.items():
        rows.append((name, screener.screen(load_side(path, "customer"), align, {})))
    rows.sort(key=lambda r: -r[1]["risk"]["risk_score"])
    Console().print(_summary(rows))
    Console().print(f"Formula: {rows[0][1]['risk']['formula']}")
    if json_out:
        json_out.write_text(json.dumps({n: b for n, b in rows}, indent=2))


@app.command()
def worker(
    queue: Annotated[list[str] | None, typer.Option(help="Queue(s) to listen on.")] = None,
    burst: Annotated[bool, typer.Option(help="Exit when the queues are empty.")] = False,
    preload: Annotated[bool, typer.Option(help="Load the default model before taking jobs.")] = True,
) -> None:
    """Run a worker: loads its model once, then takes screening jobs from Redis."""
    _quiet_libraries()
    from workers.runner import run_worker

    s = get_settings()
    if not s.redis_url:
        console.print(
            "[red]FTGUARD_REDIS_URL is not set; `ftguard serve` starts an embedded Redis and its "
            "own worker[/red]"
        )
        raise typer.Exit(2)
    logging.basicConfig(level=s.log_level)
    run_worker(s, redis_url=s.redis_url, queues=queue or ["default"], burst=burst, preload=preload)


@app.command()
def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    workers: Annotated[int, typer.Option(help="Embedded mode: worker processes to start.")] = 1,
) -> None:
    """Run the API. With no FTGUARD_REDIS_URL it also starts an embedded Redis and worker process(es)."""
    import uvicorn

    from app.core.queue import EmbeddedRedis
    from app.main import create_app

    s = get_settings()
    logging.basicConfig(level=s.log_level)
    embedded, procs = None, []
    url = s.redis_url
    if url is None:
        embedded = EmbeddedRedis(s.data_dir)
        url = embedded.url
        from app.core.db import migrate

        migrate(s.sqlalchemy_url)
        env = {**os.environ, "FTGUARD_REDIS_URL": url}
        procs = [
            subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], env=env) for _ in range(workers)
        ]
    try:
        uvicorn.run(create_app(s, redis_url=url), host=host, port=port, log_level=s.log_level.lower())
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        if embedded is not None:
            embedded.close()


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration to FTGUARD_DATABASE_URL (or the SQLite default)."""
    from app.core.db import migrate

    s = get_settings()
    s.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(s.sqlalchemy_url)
    console.print("database is at the newest migration")


def main() -> None:
    app()


if __name__ == "__main__":
    main()

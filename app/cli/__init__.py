"""The `ftguard` command line: screen locally, run the demo, serve the API, run workers, migrate. The
commands' bodies live beside this file: local screening (`local`), experiments (`lab`), policies and
webhooks (`ops`), tenants and keys (`admin`), the remote client (`remote`) and the exit codes (`errors`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console
from rich.table import Table

from app.cli import errors as cli_errors
from app.cli import lab as cli_lab
from app.cli import local as cli_local
from app.cli import remote as cli_remote
from app.cli.admin import admin_app, hint_first_key, open_services
from app.cli.local import (
    _MODELS,
    Screener,
    console,
    load_side,
    out,
    print_report,
    quiet_libraries,
    summary,
)
from app.cli.ops import policy_app, webhooks_app
from app.core import logs
from app.core.config import get_settings
from app.core.errors import FtguardError
from app.demo import ALIGNMENT, CUSTOMERS
from app.screenings import explain

if TYPE_CHECKING:
    from workers.screenings.screening import Side

__all__ = ["_MODELS", "app", "load_side", "main", "print_report"]  # tests and benches import these from here

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="ftguard: screen LLM fine-tuning datasets for safety risk before fine-tuning.",
)
db_app = typer.Typer(help="Database schema.")
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")
app.add_typer(policy_app, name="policy")
app.add_typer(webhooks_app, name="webhooks")
# Local screening and experiments live in their own modules (app.cli.local, app.cli.lab).
app.command()(cli_local.screen)
app.command()(cli_lab.experiment)
app.command()(cli_lab.compare)
app.command()(cli_local.audit)
if TYPE_CHECKING:
    FormatOption = str
else:
    from app.datasets.formats import ALL_FORMATS

    FormatOption = Literal[("auto", *ALL_FORMATS)]


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Dataset file.")],
    format: Annotated[
        FormatOption, typer.Option("--format", help="Record format (default: detect).")
    ] = "auto",
    purpose: Annotated[str, typer.Option(help="Dataset purpose (eval-prompts reads prompts).")] = "fine-tune",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the API's dataset.validation object.")
    ] = False,
    server: Annotated[str | None, cli_remote.ServerOpt] = None,
    key: Annotated[str | None, cli_remote.KeyOpt] = None,
) -> None:
    """Validate a dataset file locally (or on --server): format, stats and located errors; exit 0 valid, 1
    not."""
    from app.datasets.summary import validate_file

    echo: Any = lambda line: out.print(line, markup=False, highlight=False)  # noqa: E731
    if server:
        with cli_remote.connect(server, key) as client:
            ok = cli_remote.validate(
                client, file=file, fmt=format, purpose=purpose, as_json=as_json, echo=echo
            )
        raise typer.Exit(0 if ok else 1)
    try:
        valid = validate_file(
            file,
            fmt=format,
            purpose=purpose,
            as_json=as_json,
            echo=lambda line: out.print(line, markup=False, highlight=False),
        )
    except FtguardError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from exc
    raise typer.Exit(0 if valid else 1)


@app.command()
def demo(
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the three reports.")] = None,
) -> None:
    """Screen the three bundled customer sets against the bundled alignment set and rank them."""
    screener = Screener(None, None)
    align = load_side(ALIGNMENT, "alignment")
    rows = []
    for name, path in CUSTOMERS.items():
        rows.append((name, screener.screen(load_side(path, "customer"), align, {})))
    rows.sort(key=lambda r: -r[1]["risk"]["risk_score"])
    out.print(summary(rows))
    out.print(f"Formula: {rows[0][1]['risk']['formula']}", soft_wrap=True)
    for line in explain.text_lines(rows[0][1]):
        out.print(line, soft_wrap=True)
    if json_out:
        json_out.write_text(json.dumps({n: b for n, b in rows}, indent=2))


@app.command()
def calibrate(
    scope: Annotated[
        str | None, typer.Option(help="backend|model[|anchors] to refit; default: every one.")
    ] = None,
) -> None:
    """Refit the risk score's calibration on the finished experiments (isotonic, per representation)."""
    from app.calibration import service as calibration
    from app.core.services import build_services
    from app.models import DEFAULT_TENANT

    s = get_settings()
    services = build_services(s)
    try:
        with services.db.session() as session:
            fits = calibration.refit(session=session, settings=s, tenant_id=DEFAULT_TENANT, scope=scope)
    finally:
        services.close()
    if not fits:
        console.print(
            f"no representation has {s.calibration_min_experiments} finished experiments yet; nothing to fit"
        )
        return
    t = Table(title="ftguard calibration")
    for col in ("representation", "experiments", "Spearman rho", "pairwise accuracy", "fit MAE"):
        t.add_column(col, justify="left" if col == "representation" else "right")
    for c in fits:
        acc, mae = c.fit.get("pairwise_accuracy"), c.fit.get("mae")
        t.add_row(
            c.scope,
            str(c.experiments),
            "-" if c.spearman is None else f"{c.spearman:.3f}",
            "-" if acc is None else f"{acc:.3f}",
            "-" if mae is None else f"{mae:.3f}",
        )
    Console().print(t)


@app.command()
def rank(
    customer: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Customer dataset file.")],
    candidate: Annotated[
        list[str],
        typer.Option(help="NAME=ALIGNMENT_FILE[@BACKEND:MODEL], once per candidate model (two or more)."),
    ],
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the ranking as JSON.")] = None,
) -> None:
    """Rank candidate models by the risk of fine-tuning each on this dataset; recommend the least similar."""
    rows = []
    arrays: dict[str, dict[str, Any]] = {}
    cust: Side | None = None
    for spec in candidate:
        name, _, rest = spec.partition("=")
        path, _, model_spec = rest.partition("@")
        backend, _, model = model_spec.partition(":")
        if not name or not path:
            console.print(f"[red]bad --candidate {spec!r}; expected NAME=FILE[@BACKEND:MODEL][/red]")
            raise typer.Exit(2)
        screener = Screener(backend or None, model or None)
        cust = cust or load_side(customer, "customer")
        body = screener.screen(cust, load_side(Path(path), "alignment"), {})
        rows.append((name, body))
        arrays[name] = screener.arrays
    rows.sort(key=lambda r: r[1]["risk"]["risk_score"])
    from workers.screenings.risk import bootstrap_ranking

    boot = bootstrap_ranking({n: (b, arrays[n]) for n, b in rows}, resamples=BOOTSTRAP)
    intervals = [f"{boot['intervals'][n][0]:.1f} to {boot['intervals'][n][1]:.1f}" for n, _ in rows]
    out.print(
        summary(
            rows,
            title="ftguard ranking of candidate models",
            first="candidate model",
            extra={"risk 90% interval (bootstrap)": intervals},
        )
    )
    sizes = {n: b["alignment"]["examples"] for n, b in rows}
    warnings = []
    if len(set(sizes.values())) > 1:
        warnings.append(
            "the candidates' alignment sets differ in size ("
            + ", ".join(f"{n} {k}" for n, k in sizes.items())
            + "): a larger set finds closer matches by chance, so the scores are not on the same footing"
        )
    for w in warnings:
        out.print(f"[bold red]warning:[/] {w}", soft_wrap=True)
    share = boot["wins"][rows[0][0]]
    out.print(
        f"Recommendation: fine-tune [bold]{rows[0][0]}[/bold]: its alignment data is the least similar "
        f"to this dataset (Hsiung et al. 2025). It stays the least similar in {share:.0%} of "
        f"{BOOTSTRAP} bootstrap resamples of the customer examples"
        + ("; treat it as a tie." if share < 0.9 else "."),
        soft_wrap=True,
    )
    for line in explain.text_lines(rows[0][1]):
        out.print(line, soft_wrap=True)
    if json_out:
        json_out.write_text(
            json.dumps(
                {
                    "ranking": [n for n, _ in rows],
                    "bootstrap": boot | {"resamples": BOOTSTRAP},
                    "warnings": warnings,
                    "reports": dict(rows),
                },
                indent=2,
            )
        )


BOOTSTRAP = 200  # resamples of the customer examples behind `rank`'s uncertainty


@app.command()
def worker(
    queue: Annotated[list[str] | None, typer.Option(help="Queue(s) to listen on.")] = None,
    burst: Annotated[bool, typer.Option(help="Exit when the queues are empty.")] = False,
    preload: Annotated[bool, typer.Option(help="Load the default model before taking jobs.")] = True,
    name: Annotated[str | None, typer.Option(help="Worker name (default: RQ's, unique).")] = None,
) -> None:
    """Run a worker: loads its model once, then takes screening jobs from Redis."""
    quiet_libraries()
    from workers.runner import run_worker

    s = get_settings()
    if not s.redis_url:
        console.print(
            "[red]FTGUARD_REDIS_URL is not set; `ftguard serve` starts an embedded Redis and its "
            "own worker[/red]"
        )
        raise typer.Exit(2)
    logs.configure(s.log_level, s.log_format)
    run_worker(s, redis_url=s.redis_url, queues=queue or ["default"], burst=burst, preload=preload, name=name)


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(0)


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
    logs.configure(s.log_level, s.log_format)
    embedded, procs = None, []
    url = s.redis_url
    if url is None:
        embedded = EmbeddedRedis(s.data_dir)
        url = embedded.url
        from app.core.db import migrate

        migrate(s.sqlalchemy_url)
        hint_first_key()
        env = {**os.environ, "FTGUARD_REDIS_URL": url}
        procs = [
            subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], env=env) for _ in range(workers)
        ]
    # uvicorn re-raises SIGTERM after its graceful shutdown, and Python's default action would end the
    # process there, skipping the `finally` that stops the embedded worker(s) and Redis: exit normally.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        # log_config=None keeps our handler; the access line comes from our middleware, with the request id
        uvicorn.run(
            create_app(s, redis_url=url),
            host=host,
            port=port,
            # X-Forwarded-* (scheme, client address) are believed from the operator's proxies only
            forwarded_allow_ips=",".join(s.trusted_proxies) or None,
            log_level=s.log_level.lower(),
            log_config=None,
            access_log=False,
        )
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


@app.command()
def reconcile() -> None:
    """Re-enqueue accepted screenings the queue lost, retry or fail those whose worker died, purge expired
    idempotency records and orphaned blobs. Safe to run at any time, from anywhere, as often as wanted."""
    from app import reconcile as rec
    from app.core.queue import JobQueue, connect

    s = get_settings()
    if not s.redis_url:
        console.print("[red]FTGUARD_REDIS_URL is not set: nothing to reconcile against[/red]")
        raise typer.Exit(2)
    services = open_services()
    try:
        outcome = rec.reconcile(services=services, queue=JobQueue(connect(s.redis_url), s), storage=True)
    finally:
        services.close()
    typer.echo(json.dumps(outcome.as_dict()))


@app.command()
def health(
    url: Annotated[str, typer.Option(help="The API's readiness URL.")] = "http://127.0.0.1:8000/readyz",
    worker: Annotated[
        bool, typer.Option("--worker", help="Check that a worker of this host is registered instead.")
    ] = False,
) -> None:
    """Exit 0 when healthy, 1 when not: for container health checks (API by default, or --worker)."""
    if worker:
        raise typer.Exit(0 if _worker_alive() else 1)
    import urllib.error
    import urllib.request

    if not url.startswith(("http://", "https://")):
        raise typer.BadParameter("the URL must be http(s)", param_hint="--url")
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (scheme checked above)
            ok = resp.status == 200
    except (urllib.error.URLError, OSError):
        ok = False
    raise typer.Exit(0 if ok else 1)


def _worker_alive() -> bool:
    """A worker of this host is registered in Redis (its key expires when it stops heartbeating), listens on
    one of our queues, and its process is alive."""
    import socket

    import redis
    from rq import Worker

    from app.core.queue import connect

    s = get_settings()
    if not s.redis_url:
        return False
    host, prefix = socket.gethostname(), f"{s.queue_prefix}-"
    try:
        workers = Worker.all(connection=connect(s.redis_url))
    except redis.RedisError:
        return False
    for w in workers:
        if w.hostname != host or not w.pid or not any(q.startswith(prefix) for q in w.queue_names()):
            continue
        try:
            os.kill(w.pid, 0)
        except OSError:
            continue
        return True
    return False


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration to FTGUARD_DATABASE_URL (or the SQLite default)."""
    from app.core.db import migrate

    s = get_settings()
    s.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(s.sqlalchemy_url)
    console.print("database is at the newest migration")


def main() -> None:
    cli_errors.run(app, console)

"""`ftguard screen` and what every local screening command shares: the consoles, reading a local file as a
screening side, one set of loaded models per process, one progress bar per stage, the summary table.

The bars are on stderr (stdout keeps the tables); each stage gets its own bar when it starts, and the
bar's share is that stage's own (workers.screenings.progress weighs the stages for the one-number progress
of a job).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from app.cli import remote as cli_remote
from app.core.backends import BACKENDS
from app.core.config import get_settings
from app.core.errors import InvalidDataset
from app.core.vocab import Purpose
from app.demo import ALIGNMENT
from app.screenings import explain
from app.screenings.params import anchor_representation

if TYPE_CHECKING:
    from workers.screenings.progress import Tick
    from workers.screenings.screening import Side

console = Console(stderr=True)
out = Console(width=max(Console().width, 120))
TIER_STYLE = {"low": "green", "medium": "yellow", "high": "red", "critical": "bold red"}
STAGE_LABELS = {
    "represent_alignment": "represent the alignment set",
    "represent_customer": "represent the customer set",
    "compare": "compare (cosine, top-k)",
    "anchors": "harmful-anchor signal",
    "score": "score and report",
}


def _backend_choice(value: str | None) -> str | None:
    if value is not None and value not in BACKENDS:
        raise typer.BadParameter(f"expected one of {', '.join(BACKENDS)}")
    return value


# A command's --backend: the names of the backend registry (app.core.backends).
BackendOption = Annotated[
    str | None,
    typer.Option(help=f"Representation backend: {' or '.join(BACKENDS)}.", callback=_backend_choice),
]


def quiet_libraries() -> None:
    """No library chatter on a local run: transformers' weight-loading bars, tokenizer warnings, RQ INFO."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read by transformers when it is imported
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
    logging.getLogger("rq").setLevel(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the same, when transformers was imported before the variable was set


def stage_bars(transient: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=transient,
    )


class StageBars:
    """A screening reporter (workers.screenings.progress.Reporter) that draws one bar per stage; never
    cancels."""

    def __init__(self, bars: Progress, prefix: str = "") -> None:
        self.bars, self.prefix = bars, prefix
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, t: Tick) -> bool:
        if t.stage not in self.tasks:
            for task in self.tasks.values():  # stages run one after another
                self.bars.update(task, completed=1.0)
            label = STAGE_LABELS.get(t.stage, t.stage)
            self.tasks[t.stage] = self.bars.add_task(f"{self.prefix}{label}", total=1.0)
        self.bars.update(self.tasks[t.stage], completed=t.stage_fraction)
        return True


def load_side(path: Path, name: str) -> Side:
    """A local file as a screening side; exits with its located errors when it is invalid."""
    from workers.screenings.screening import side_from_file

    try:
        return side_from_file(path, name, get_settings())
    except InvalidDataset as exc:
        console.print(f"[red]{path}: {exc.details['error_count']} error(s)[/red]")
        for e in exc.details["errors"]:
            console.print(f"  line {e['line']}: [bold]{e['code']}[/bold] {e['message']}")
        raise typer.Exit(2) from exc


_MODELS: dict[Any, Any] = {}  # loaded once per CLI process, shared by every screening it runs


class Screener:
    """Holds one model for several local screenings."""

    def __init__(
        self,
        backend: str | None,
        model: str | None,
        *,
        anchors: bool = True,
        harmful: Path | None = None,
        safe: Path | None = None,
    ) -> None:
        quiet_libraries()
        from workers.runtime import Runtime
        from workers.screenings.screening import Anchors, bundled_anchors

        s = get_settings()
        self.runtime = Runtime(s, models=_MODELS)
        self.params = {"backend": backend or s.default_backend, "model": model or s.default_model}
        with console.status(f"loading {self.params['backend']} model {self.params['model']}"):
            self.rep = self.runtime.representer(self.params)
        self.anchors: Anchors | None = None
        self.arrays: dict[str, Any] = {}  # the last screening's per-example arrays
        if anchors:  # only then is the anchor model loaded (`audit` uses none)
            with console.status(f"loading anchor model {s.anchor_model}"):
                anchor_rep = self.runtime.representer(anchor_representation({}, s))
            semantic = self.runtime.representer({"backend": s.default_backend, "model": s.default_model})
            self.anchors = bundled_anchors(s, anchor_rep, semantic=semantic)
            if harmful:
                self.anchors.harmful = load_side(harmful, "harmful anchors")
            if safe:
                self.anchors.safe = load_side(safe, "safe anchors")

    def screen(
        self, customer: Side, alignment: Side, params: dict[str, Any], *, keep_bars: bool = False
    ) -> dict[str, Any]:
        """One screening with a bar per stage; `keep_bars` leaves them on screen (one screening per run)."""
        from app.screenings.params import with_defaults
        from workers.screenings.screening import Params, screen

        name = str(customer.meta.get("filename", "screening"))
        with stage_bars(transient=not keep_bars) as bars:
            result = screen(
                customer=customer,
                alignment=alignment,
                representer=self.rep,
                params=Params.from_dict(with_defaults(self.params | params, self.runtime.settings)),
                cache=self.runtime.local_cache(),
                report=StageBars(bars, "" if keep_bars else f"{name}: "),
                device=self.runtime.device,
                anchors=self.anchors,
            )
        self.arrays = result.arrays
        result.body["calibration"] = explain.calibration_of(result.body)  # local: nothing to calibrate on
        result.body["about"] = explain.about(result.body)
        return result.body


def summary(
    rows: list[tuple[str, dict[str, Any]]],
    title: str = "ftguard screening summary",
    first: str = "dataset",
    extra: dict[str, list[str]] | None = None,
) -> Table:
    t = Table(title=title)
    cols = (
        first,
        "examples",
        "risk",
        "tier",
        "calibrated",
        "mean max cos",
        "p90 max cos",
        "near share",
        "closer to harmful than to safe anchors",
    )
    for col in cols:
        t.add_column(col, justify="right" if col not in (first, "tier", "calibrated") else "left")
    for col in extra or {}:
        t.add_column(col, justify="right")
    for i, (name, body) in enumerate(rows):
        r, d = body["risk"], body["distributions"]["customer_max_sim"]
        near = next(p["value"] for p in r["parts"] if p["name"] == "near_alignment_share")
        anchors = body.get("anchors")
        # the compliance form's share, as the README's demo table shows it (each form's is in the findings)
        side = f"{anchors['share_closer_to_harmful']:.0%}" if anchors else "-"
        t.add_row(
            name,
            str(body["customer"]["examples"]),
            f"{r['risk_score']:.1f}",
            f"[{TIER_STYLE[r['tier']]}]{r['tier']}[/]",
            "yes" if explain.calibration_of(body).get("calibrated") else "[bold]uncalibrated[/]",
            f"{d['mean']:.3f}",
            f"{d['percentiles']['p90']:.3f}",
            f"{near:.0%}",
            side,
            *(v[i] for v in (extra or {}).values()),
        )
    return t


def print_report(name: str, body: dict[str, Any], console_out: Console) -> None:
    """The CLI table of one report: the summary row, its warnings and findings, and what the score means
    (calibration, tiers, models and anchor sets, from the same source as every other surface)."""
    console_out.print(summary([(name, body)]))
    for line in body["findings"]:  # warnings (a clamped subset size) are findings too
        console_out.print(f"- {line}", soft_wrap=True)
    for line in explain.text_lines(body):
        console_out.print(line, soft_wrap=True)


def screen(
    customer: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Customer dataset file.")],
    alignment: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="Alignment set; default: the bundled demo set."),
    ] = None,
    backend: BackendOption = None,
    model: Annotated[str | None, typer.Option(help="Model path or id.")] = None,
    top_k: Annotated[int, typer.Option(min=1, max=100)] = 5,
    subset_size: Annotated[int, typer.Option(min=1)] = 100,
    center: Annotated[
        bool | None, typer.Option(help="Mean-centre before cosine; default: on for causal-lm only.")
    ] = None,
    anchors: Annotated[bool, typer.Option(help="Measure the harmful-anchor margin (He et al. 2024).")] = True,
    harmful_anchors: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="Harmful anchors; default: bundled.")
    ] = None,
    safe_anchors: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="Safe anchors; default: bundled.")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the full report as JSON.")] = None,
    html_out: Annotated[
        Path | None, typer.Option("--html", help="Write the report as a standalone HTML page with charts.")
    ] = None,
    scores_out: Annotated[
        Path | None,
        typer.Option(
            "--scores",
            dir_okay=False,
            help="Write one JSON line per customer example: its record, scores, flag and nearest records.",
        ),
    ] = None,
    server: Annotated[str | None, cli_remote.ServerOpt] = None,
    key: Annotated[str | None, cli_remote.KeyOpt] = None,
) -> None:
    """Screen a dataset locally (or on a remote ftguard with --server) and print a summary."""
    params = {"top_k": top_k, "subset_size": subset_size, "center": center}
    if server:
        if scores_out:
            raise typer.BadParameter("--scores runs locally only (not with --server)", param_hint="--scores")
        remote = {"backend": backend, "model": model, "anchors": anchors, **params}
        files = {
            Purpose.FINE_TUNE: customer,
            Purpose.ALIGNMENT: alignment,
            Purpose.HARMFUL_ANCHORS: harmful_anchors,
            Purpose.SAFE_ANCHORS: safe_anchors,
        }
        with cli_remote.connect(server, key) as client:
            body = cli_remote.screen(client, files, remote)
    else:
        screener = Screener(backend, model, anchors=anchors, harmful=harmful_anchors, safe=safe_anchors)
        align = load_side(alignment or ALIGNMENT, "alignment")
        cust = load_side(customer, "customer")
        body = screener.screen(cust, align, params, keep_bars=True)
        if scores_out:
            from app.cli.scores import write_scores

            n = write_scores(
                scores_out,
                source=customer,
                customer=cust,
                alignment=align,
                anchors=screener.anchors,
                body=body,
                arrays=screener.arrays,
                max_line_bytes=screener.runtime.settings.max_line_bytes,
            )
            console.print(f"{n} per-example rows written to {scores_out}")
    print_report(customer.name, body, out)
    if json_out:
        json_out.write_text(json.dumps(body, indent=2))
        console.print(f"report written to {json_out}")
    if html_out:
        from app.dashboard.render import report_document

        html_out.write_text(report_document(body, title=f"{customer.name}: risk report"), encoding="utf-8")
        console.print(f"HTML report written to {html_out}")


def audit(
    alignment: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Alignment set.")],
    customer: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="Also report its coverage.")
    ] = None,
    backend: BackendOption = None,
    model: Annotated[str | None, typer.Option(help="Model path or id.")] = None,
    center: Annotated[bool, typer.Option(help="Mean-centre before cosine.")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the audit as JSON.")] = None,
) -> None:
    """Audit an alignment set: its diversity (Vendi score) and, with --customer, what it leaves uncovered."""
    from workers.screenings.audit import vendi_score
    from workers.screenings.screening import represent

    screener = Screener(backend, model, anchors=False)
    align = load_side(alignment, "alignment")
    t = Table(title=f"alignment-set audit: {alignment.name}")
    t.add_column("measure")
    t.add_column("value", justify="right")
    result: dict[str, Any] = {"alignment": {"file": alignment.name, "examples": len(align.examples)}}
    if customer is None:
        vecs, _ = represent(align, screener.rep, screener.runtime.local_cache(), None, "represent_alignment")
        v = vendi_score(vecs, center=center)
        t.add_row("examples", str(len(align.examples)))
        t.add_row("Vendi score (effective distinct examples)", f"{v:.1f}")
        t.add_row("effective share", f"{v / len(align.examples):.1%}")
        result |= {"alignment_vendi": v, "alignment_effective_share": v / len(align.examples)}
    else:
        body = screener.screen(load_side(customer, "customer"), align, {"center": center})
        a = body["audit"]
        t.add_row("alignment examples", str(body["alignment"]["examples"]))
        t.add_row(
            "alignment Vendi score", f"{a['alignment_vendi']:.1f} ({a['alignment_effective_share']:.1%})"
        )
        t.add_row("customer Vendi score", f"{a['customer_vendi']:.1f} ({a['customer_effective_share']:.1%})")
        t.add_row("coverage threshold (cosine)", f"{a['coverage_threshold']:.3f}")
        t.add_row("uncovered customer examples", f"{a['uncovered_count']} ({a['uncovered_share']:.0%})")
        far = ", ".join(str(r["record"]) for r in a["farthest_uncovered_records"])
        t.add_row("farthest uncovered records", far or "-")
        result |= {"customer": {"file": customer.name, "examples": body["customer"]["examples"]}, "audit": a}
    out.print(t)
    if customer is not None:
        out.print(UNCOVERED_HELP.format(**body["audit"]), soft_wrap=True)
    if json_out:
        json_out.write_text(json.dumps(result | {"uncovered_means": UNCOVERED_MEANS}, indent=2))
        console.print(f"audit written to {json_out}")


UNCOVERED_MEANS = (
    "a customer example is uncovered when no alignment example is as close to it as most alignment examples "
    "are to each other (its max cosine is under the coverage threshold, the alignment set's own `near` "
    "level): the alignment data teaches nothing close to it, so safety training says least about it"
)
UNCOVERED_HELP = (
    "Uncovered: {uncovered_count} customer examples ({uncovered_share:.0%}) have no alignment example within "
    "cosine {coverage_threshold:.3f}. "
    + UNCOVERED_MEANS[0].upper()
    + UNCOVERED_MEANS[1:]
    + ". Many uncovered "
    "examples are not a risk in themselves (similar data is, Hsiung et al. 2025), but they show where the "
    "alignment set could be widened; the farthest records are listed."
)

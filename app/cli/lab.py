"""`ftguard experiment` and `ftguard compare`: experiments run here, through the same stage jobs a worker
runs (app.cli.lab_local), with one progress bar per stage on stderr and no RQ log lines.

The stage jobs run in this process's main thread (RQ's burst worker installs signal handlers, which only
the main thread may); a daemon thread reads the stages' progress from SQL twice a second and draws it.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import TaskID
from rich.table import Table

from app.cli import errors as cli_errors
from app.cli.local import console, load_side, quiet_libraries, stage_bars
from app.core.config import get_settings
from app.demo import ALIGNMENT
from app.experiments.judge_kinds import JUDGES

log = logging.getLogger("ftguard.cli")
POLL_S = 0.5
STAGE_LABELS = {
    "select": "select the alignment subset",
    "align": "align the base model",
    "finetune": "fine-tune",
    "generate": "generate answers",
    "judge": "judge the answers",
    "summarise": "summarise",
}


class ExperimentBars:
    """One bar per stage of each experiment, from the stages' rows (the record the worker writes)."""

    def __init__(self, lab: Any, ids: list[str]) -> None:
        self.lab, self.ids = lab, ids
        self.bars = stage_bars(transient=False)
        self.tasks: dict[tuple[str, str], TaskID] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="experiment-bars", daemon=True)

    def __enter__(self) -> ExperimentBars:
        self.bars.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.poll()  # the final state
        self.bars.stop()

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.poll()
            except Exception:  # a busy SQLite file: the next poll reads it
                log.debug("progress poll failed", exc_info=True)

    def poll(self) -> None:
        for exp_id in self.ids:
            _, stages = self.lab.get(exp_id)
            for st in stages:
                if st.status in ("pending", "queued"):
                    continue
                label = ("" if len(self.ids) == 1 else f"{exp_id}: ") + STAGE_LABELS.get(st.name, st.name)
                if st.status not in ("running", "succeeded"):
                    label += f" ({st.status})"
                key = (exp_id, st.name)
                if key not in self.tasks:
                    self.tasks[key] = self.bars.add_task(label, total=1.0)
                done = 1.0 if st.status == "succeeded" else float(st.progress or 0.0)
                self.bars.update(self.tasks[key], completed=done, description=label)


def _experiment_spec(opts: dict[str, Any], ft_id: str, align_id: str, eval_id: str | None) -> dict[str, Any]:
    rep: dict[str, Any] = {"max_length": opts["rep_max_length"]}
    if opts["backend"]:
        rep["backend"] = opts["backend"]
    if opts["model"]:
        rep["model"] = opts["model"]
    start: dict[str, Any] = {
        "alignment": {
            "dataset_id": align_id,
            "size": opts["size"],
            "seed": opts["seed"],
            "representation": rep,
        }
    }
    if opts.get("aligned_from"):
        start = {"aligned_from": {"experiment_id": opts["aligned_from"]}}
    elif opts.get("aligned"):
        start = {}
    checkpoints = [float(c) for c in (opts.get("checkpoints") or "1").split(",") if c.strip()]
    return {
        "base_model": opts["base_model"],
        **start,
        "fine_tune": {"dataset_id": ft_id, "max_examples": opts["max_examples"], "seed": opts["seed"]},
        "training": {
            "method": opts["method"],
            "lora": {"rank": opts["lora_rank"], "alpha": 2 * opts["lora_rank"]},
            "learning_rate": opts["lr"],
            "epochs": opts["epochs"],
            "batch_size": opts["batch_size"],
            "max_length": opts["max_length"],
            "seed": opts["seed"],
        },
        "evaluation": {"dataset_id": eval_id, "checkpoints": checkpoints},
        "generation": {"max_new_tokens": opts["max_new_tokens"], "seed": opts["seed"]},
        "judges": [{"type": j} for j in (opts["judge"] or ["keyword"])],
    }


def _lab_run(finetune: Path, opts: dict[str, Any], variants: list[str] | None) -> list[Any]:
    """Upload the files, create the experiment (or one per variant), run every stage here."""
    quiet_libraries()
    from app.cli.lab_local import LocalLab

    s = get_settings()
    for path, name in ((finetune, "fine-tuning"), (opts["alignment"] or ALIGNMENT, "alignment")):
        load_side(path, name)  # located errors, before anything is stored
    lab = LocalLab(s)
    try:
        ft = lab.upload(finetune, "fine-tune")
        align = lab.upload(opts["alignment"] or ALIGNMENT, "alignment")
        ev = lab.upload(opts["eval"], "eval-prompts") if opts["eval"] else None
        spec = _experiment_spec(opts, ft.id, align.id, ev.id if ev else None)
        with cli_errors.handled(console):  # an invalid spec: one line and exit code 2, no traceback
            if variants is None:
                if "alignment" in spec:
                    spec["alignment"]["selection"] = opts["selection"]
                ids = [lab.experiment(spec).id]
            else:
                ids = [e.id for e in lab.get_comparison(lab.comparison({**spec, "variants": variants}).id)[1]]
        with ExperimentBars(lab, ids):
            lab.run()
        return [lab.get(i)[0] for i in ids]
    finally:
        lab.close()


def _results_table(exps: list[Any]) -> Table:
    t = Table(title="ftguard experiments")
    for col in ("aligned on", "status", "risk", "harmfulness rate", "score", "refusal rate", "over-refusal"):
        t.add_column(col, justify="left" if col in ("aligned on", "status") else "right")

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    for e in exps:
        res = e.results or {}
        head = res.get("headline", {})
        risk = (res.get("features") or {}).get("risk_score")
        t.add_row(
            (e.params.get("alignment") or {}).get("selection") or "(started aligned)",
            e.status + (f" ({e.error['code']} in {e.error.get('stage')})" if e.error else ""),
            "-" if risk is None else f"{risk:.1f}",
            pct(head.get("harmfulness_rate")),
            "-" if head.get("harmfulness_score") is None else f"{head['harmfulness_score']:.2f}",
            pct(head.get("refusal_rate")),
            pct(head.get("over_refusal_rate")),
        )
    return t


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _print_experiments(exps: list[Any], json_out: Path | None) -> None:
    Console().print(_results_table(exps))
    for e in exps:
        curve = (e.results or {}).get("durability") or []
        if len(curve) > 1:
            points = ", ".join(f"{p['checkpoint']:.0%}: {_pct(p['harmfulness_rate'])}" for p in curve)
            Console().print(f"{e.id} harmfulness by share of fine-tuning done: {points}")
    if json_out:
        json_out.write_text(
            json.dumps(
                [{"id": e.id, "status": e.status, "error": e.error, "results": e.results} for e in exps],
                indent=2,
            )
        )
        console.print(f"results written to {json_out}")
    if any(e.status != "succeeded" for e in exps):
        raise typer.Exit(1)


FinetuneArg = Annotated[
    Path, typer.Argument(exists=True, dir_okay=False, help="The customer's fine-tuning data.")
]
AlignmentOpt = Annotated[
    Path | None,
    typer.Option(exists=True, dir_okay=False, help="Alignment set; default: the bundled demo set."),
]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="Write the results as JSON.")]


def _judge_choices(values: list[str] | None) -> list[str] | None:
    for v in values or []:
        if v not in JUDGES:
            raise typer.BadParameter(f"expected one of {', '.join(JUDGES)}")
    return values


def _run_options(
    eval: Annotated[
        Path | None,
        typer.Option(
            "--eval", exists=True, dir_okay=False, help="Evaluation prompts; default: the bundled ones."
        ),
    ] = None,
    base_model: Annotated[
        str, typer.Option(help="Base model: a local folder or cached id, or bundled.")
    ] = "bundled:smollm2-135m-instruct",
    backend: Annotated[str | None, typer.Option(help="Representation of the selection.")] = None,
    model: Annotated[str | None, typer.Option(help="Representation model.")] = None,
    rep_max_length: Annotated[int, typer.Option(min=8)] = 512,
    method: Annotated[str, typer.Option(help="lora or full.")] = "lora",
    lora_rank: Annotated[int, typer.Option(min=1)] = 8,
    lr: Annotated[float, typer.Option(min=0)] = 2e-4,
    epochs: Annotated[int, typer.Option(min=1)] = 1,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    max_length: Annotated[int, typer.Option(min=16)] = 512,
    max_examples: Annotated[int | None, typer.Option(min=1, help="Sample the fine-tuning data.")] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 128,
    seed: Annotated[int, typer.Option(min=0)] = 0,
    judge: Annotated[
        list[str] | None,
        typer.Option(
            help=f"{', '.join(JUDGES)} (keyword by default; llm needs FTGUARD_JUDGE_*).",
            callback=_judge_choices,
        ),
    ] = None,
) -> None:
    """The options `experiment` and `compare` share, as a signature (see _with_run_options)."""


Command = TypeVar("Command", bound=Callable[..., None])


def _with_run_options(command: Command) -> Command:
    """Give COMMAND _run_options' options, after its positional-or-keyword parameters and before its
    keyword-only ones; typer reads the signature and passes them to COMMAND's **run_opts."""
    own = inspect.signature(command, eval_str=True).parameters.values()
    shared = inspect.signature(_run_options, eval_str=True).parameters.values()
    params = [p for p in own if p.kind is p.POSITIONAL_OR_KEYWORD]
    params += [p.replace(kind=p.KEYWORD_ONLY) for p in shared]
    params += [p for p in own if p.kind is p.KEYWORD_ONLY]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return command


@_with_run_options
def experiment(
    finetune: FinetuneArg,
    alignment: AlignmentOpt = None,
    selection: Annotated[str, typer.Option(help="high_sim, low_sim, random or full.")] = "full",
    size: Annotated[int, typer.Option(min=1, help="Alignment examples in the subset.")] = 1000,
    *,
    aligned: Annotated[
        bool, typer.Option(help="Fine-tune-only: BASE_MODEL is already aligned; no alignment stage.")
    ] = False,
    aligned_from: Annotated[
        str | None,
        typer.Option(help="Fine-tune-only: start from this earlier local experiment's aligned model."),
    ] = None,
    checkpoints: Annotated[
        str,
        typer.Option(help="Evaluate at these fractions of the fine-tuning steps, e.g. 0,0.25,0.5,1."),
    ] = "1",
    json_out: JsonOpt = None,
    **run_opts: Any,
) -> None:
    """Align a model on (part of) the alignment data, fine-tune it on FINETUNE, judge its answers.

    With --aligned or --aligned-from it is fine-tune-only (no alignment stage). --checkpoints evaluates the
    model part-way through fine-tuning too: the results' `durability` curve.

    Runs here, through the same stage jobs a worker runs (embedded SQLite and Redis under FTGUARD_DATA_DIR,
    or the configured ones); needs no server.
    """
    opts = {
        "alignment": alignment,
        "selection": selection,
        "size": size,
        "aligned": aligned,
        "aligned_from": aligned_from,
        "checkpoints": checkpoints,
        **run_opts,
    }
    _print_experiments(_lab_run(finetune, opts, None), json_out)


@_with_run_options
def compare(
    finetune: FinetuneArg,
    alignment: AlignmentOpt = None,
    size: Annotated[int, typer.Option(min=1, help="Alignment examples in each subset.")] = 1000,
    *,
    json_out: JsonOpt = None,
    **run_opts: Any,
) -> None:
    """The same experiment aligned on the High-Sim, Low-Sim and Random subsets (same seeds); the table.

    Runs here, like `experiment`; needs no server.
    """
    opts = {"alignment": alignment, "size": size, **run_opts}
    _print_experiments(_lab_run(finetune, opts, ["high_sim", "random", "low_sim"]), json_out)

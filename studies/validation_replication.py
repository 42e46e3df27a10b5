"""A fresh run of the study, compared with the recorded one: the budget check (item 7: the main study from
nothing, timed end to end on this machine) and a replication (does every run come out the same?).

    python studies/validation.py --state /tmp/fresh/state.json --work-dir /tmp/fresh/work   # from nothing
    python studies/validation.py --report-only --replication /tmp/fresh/state.json \
        --work-dir /tmp/fresh/work                                                        # compare, render

The fresh run's own analysis (the same code) is summarised beside the recorded one, and each of its main
runs is matched with the recorded run of the same dataset rows, recipe, seed and checkpoints (the reference
model's id, which differs between work dirs, left out): identical outcomes prompt by prompt, or not.

When the fresh run's reference model answers every prompt as the recorded one did, the recorded state takes
what it lacks from it (`adopt`): the main runs on its own current inputs it has no run for (marked
`adopted_from`), and, given the fresh run's work dir, that work dir's models, so later runs (`--paper`) need
no reference rebuild."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

_REF = re.compile(r"\|ref=[^|]*$")


def _by_run(runs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {_REF.sub("", k): v for k, v in runs.items() if v.get("group") == "main"}


def adopt(state: Any, fresh: dict[str, Any], *, inputs_sha: dict[str, str], work_dir: Path) -> list[str]:
    """Fill the recorded state from an identical fresh run (see the module docstring); returns the keys of
    the runs adopted. Nothing is taken from a fresh run whose reference model differs."""
    ref, fref = state.data.get("reference") or {}, fresh.get("reference") or {}
    if not ref.get("outcomes") or ref.get("outcomes") != fref.get("outcomes"):
        return []
    token_file = work_dir / "lab_id"
    if token_file.exists() and token_file.read_text().strip() == fresh.get("lab"):
        old_id, new_id = str(ref["experiment_id"]), str(fref["experiment_id"])
        state.data["runs"] = {
            k.replace(f"|ref={old_id}", f"|ref={new_id}"): v for k, v in state.data["runs"].items()
        }
        ref["experiment_id"] = new_id
        ref.pop("rebuild", None)
        state.data["lab"], state.data["uploads"] = fresh.get("lab"), dict(fresh.get("uploads") or {})
    chosen = (state.data.get("pilot") or {}).get("chosen") or {}
    mine, taken = _by_run(state.data["runs"]), []
    for key, run in fresh.get("runs", {}).items():
        if run.get("group") != "main" or _REF.sub("", key) in mine:
            continue
        if run.get("sha") != inputs_sha.get(run["dataset"]) or any(
            run.get(k) != v for k, v in chosen.items()
        ):
            continue  # another recipe
        new_key = _REF.sub(f"|ref={ref['experiment_id']}", key)
        state.data["runs"][new_key] = {**run, "adopted_from": "replication"}
        taken.append(new_key)
    state.save()
    return taken


def compare(recorded: dict[str, Any], path: Path, *, inputs_sha: dict[str, str]) -> dict[str, Any]:
    """The summary kept in the recorded state under `replication` (rendered in docs/validation.md)."""
    from validation_analysis import analyse

    fresh = json.loads(path.read_text())
    mine, theirs = _by_run(recorded.get("runs", {})), _by_run(fresh.get("runs", {}))
    adopted = [k for k in theirs if k in mine and mine[k].get("adopted_from")]
    mine = {k: v for k, v in mine.items() if not v.get("adopted_from")}  # a run is not its own replication
    same = [k for k in theirs if k in mine and theirs[k]["outcomes"] == mine[k]["outcomes"]]
    differ = [k for k in theirs if k in mine and k not in same]
    new = sorted({theirs[k]["dataset"] for k in theirs if k not in mine and k not in adopted})
    ranking = {}
    for side in ("riskiest", "safest"):
        a = set((recorded.get("alpaca_ranking") or {}).get(side) or [])
        b = set((fresh.get("alpaca_ranking") or {}).get(side) or [])
        ranking[side] = {"examples": len(b), "in_common": len(a & b)}
    ref_a, ref_b = recorded.get("reference") or {}, fresh.get("reference") or {}
    meta = fresh.get("meta") or {}
    result = analyse(fresh)  # its own inputs: every run it made is of the study as it ran
    default = result["signals"].get("risk_score", {})
    return {
        "command": meta.get("command"),
        "date": meta.get("date"),
        "machine": meta.get("machine"),
        "wall_min": meta.get("wall_min_this_invocation"),
        "complete": result["status"]["complete"],
        "reference_identical": bool(ref_a.get("outcomes")) and ref_a.get("outcomes") == ref_b.get("outcomes"),
        "reference_seconds": ref_b.get("seconds"),
        "runs": len(theirs),
        "runs_matched": len(same) + len(differ),
        "runs_identical": len(same),
        "runs_different": sorted(f"{theirs[k]['dataset']} seed {theirs[k]['seed']}" for k in differ),
        "datasets_not_in_the_record": new,
        "runs_adopted": sorted(f"{theirs[k]['dataset']} seed {theirs[k]['seed']}" for k in adopted),
        "alpaca_ranking": ranking,
        "risk_score_spearman": default.get("spearman"),
        "risk_score_spearman_out_of_sample": default.get("spearman_out_of_sample"),
        "verdict": result["verdict"]["text"],
        "harm": {d["dataset"]: round(d["harm"], 4) for d in result["datasets"]},
    }


def markdown(rep: dict[str, Any] | None) -> list[str]:
    if not rep:
        return []
    rank = rep["alpaca_ranking"]
    ref = "identical to the recorded one on every prompt" if rep["reference_identical"] else "NOT identical"
    differ = f" (different: {', '.join(rep['runs_different'])})" if rep["runs_different"] else ""
    lines = [
        "## A fresh run, timed (budget and replication)",
        "",
        f"The main study run from nothing (an empty state and work dir) on {rep['machine']}, {rep['date']}: "
        f"**{rep['wall_min']} minutes** end to end (the budget is 90), "
        f"{'complete' if rep['complete'] else 'not complete'}. Command: `{rep['command']}`.",
        "",
        f"- Reference model rebuilt in {rep['reference_seconds']} s; {ref}.",
        f"- Main runs: {rep['runs']}. {rep['runs_matched']} match a recorded run's dataset rows, recipe and "
        f"seed; {rep['runs_identical']} of those are identical prompt by prompt{differ}.",
    ]
    if rep.get("runs_adopted"):
        lines.append(
            "- Taken into the record from this run (the record had no run of them; the reference model is "
            f"identical): {', '.join(rep['runs_adopted'])}."
        )
    lines += [
        f"- The fresh run ranks the Alpaca pool with the shipped per-example score: its riskiest and safest "
        f"100 share {rank['riskiest']['in_common']} and {rank['safest']['in_common']} examples with the "
        "recorded sets, which an earlier score chose (`ranked_by`), so "
        f"{', '.join(rep['datasets_not_in_the_record']) or 'no set'} trained on other rows.",
        f"- Its own analysis (the same code): {rep['verdict']}",
        "",
    ]
    return lines


def replicate(args: Any, state: Any, inputs: dict[str, Any]) -> None:
    """`--replication PATH`: adopt what the record lacks from the fresh run, then keep the comparison."""
    from validation_inputs import run_sha

    fresh = json.loads(args.replication.read_text())
    inputs_sha = {k: run_sha(v) for k, v in inputs["datasets"].items()}
    taken = adopt(state, fresh, inputs_sha=inputs_sha, work_dir=args.work_dir)
    print(f"replication: {len(taken)} run(s) taken from {args.replication}", flush=True)
    state.data["replication"] = compare(state.data, args.replication, inputs_sha=inputs_sha)
    state.save()

"""The validation study's signals (studies/validation.py): a normal screening of every customer dataset
against the safety data the reference model was aligned on, kept in the state with a fingerprint of the
screening code, and the two Alpaca sets ftguard's per-example score picks."""

from __future__ import annotations

import argparse
import json
from typing import Any

from validation_inputs import read_jsonl, sha
from validation_lab import State


def alpaca_ranking(
    args: argparse.Namespace, lab: Any, state: State, inputs: dict[str, Any], sc: Any
) -> dict[str, list[int]]:
    """The riskiest and safest `size` examples of the Alpaca pool by the per-example score, ranked once and
    kept: a later change of the score re-screens every dataset, but the datasets trained on stay the ones
    that were measured (`ranked_by` says which score chose them)."""
    pool, n = inputs["alpaca_pool"], args.size
    kept = state.data.get("alpaca_ranking")
    if kept and kept["pool"] == sha(pool):
        return kept
    saved = {k: lab.settings.data_dir / "inputs" / f"alpaca_{k}.jsonl" for k in ("riskiest", "safest")}
    if all(p.exists() for p in saved.values()):  # a run from before the ranking was kept in the state
        where = {json.dumps(r, sort_keys=True): i for i, r in enumerate(pool)}
        picked = {k: [where[json.dumps(r, sort_keys=True)] for r in read_jsonl(p)] for k, p in saved.items()}
    else:
        ranked = sc.rank_examples(pool, inputs["alignment_safety"])
        picked = {"riskiest": ranked[:n], "safest": ranked[::-1][:n]}
    state.data["alpaca_ranking"] = {"pool": sha(pool), **picked, "ranked_by": sc.describe()}
    state.save()
    return dict(state.data["alpaca_ranking"])


def signals(args: argparse.Namespace, lab: Any, inputs: dict[str, Any], state: State) -> dict[str, Any]:
    """A normal screening (the service's defaults: both signals, bundled anchors) of every dataset against
    the safety data the reference model was aligned on; the Alpaca pool ranked by the per-example score."""
    from signals import Screener

    sc = Screener(lab.settings)
    align = inputs["alignment_safety"]
    picked = alpaca_ranking(args, lab, state, inputs, sc)
    for k in ("riskiest", "safest"):
        inputs["datasets"][f"alpaca_{k}"] = [inputs["alpaca_pool"][i] for i in picked[k]]
    shas = {name: sha(rows) for name, rows in inputs["datasets"].items()} | {"alignment": sha(align)}
    kept = state.data.get("signals") or {}
    if not args.rescreen and kept.get("describe") == sc.describe() and kept.get("inputs_sha") == shas:
        print("signals: the recorded ones (same datasets, models, screening code and anchors)", flush=True)
        return dict(kept)
    out = {}
    for name, rows in inputs["datasets"].items():
        out[name] = sc.screen(rows, align)
        print(f"signals {name}: risk {out[name]['risk_score']:.1f} {out[name]['parts']}", flush=True)
    return {"datasets": out, "describe": sc.describe(), "inputs_sha": shas}


def apply_ranking(state: State, inputs: dict[str, Any]) -> bool:
    """The two Alpaca sets as the kept ranking chose them; False when there is none for this pool."""
    ranking = state.data.get("alpaca_ranking")
    if not ranking or ranking["pool"] != sha(inputs["alpaca_pool"]):
        return False
    for k in ("riskiest", "safest"):
        inputs["datasets"][f"alpaca_{k}"] = [inputs["alpaca_pool"][i] for i in ranking[k]]
    return True


def record_signals(args: argparse.Namespace, lab: Any, inputs: dict[str, Any], state: State) -> None:
    state.data["signals"] = signals(args, lab, inputs, state)
    state.save()

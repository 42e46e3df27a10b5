"""Screen the public reference fine-tuning sets against the public alignment set, with each backend.

Reads ../shared/data (never copied into the project):
  alignment  alignment/safety_only_data_Instructions.json (2,483 harmful requests with safe answers)
  customers  finetune/identity-shift-aoa.jsonl (10, the AOA identity-shift attack, Qi et al. 2023)
             finetune/dolly-15k-safety-only.jsonl (387 benign prose answers)
             finetune/gsm8k_train.jsonl (first --gsm8k-n records; benign maths, the "benign data that breaks
             safety" form of He et al. 2024)
  probe      eval/advbench_harmful_behaviors.csv (520 harmful goals, each given the compliant opening
             "Sure, here is how to <goal>." as its completion), used only to measure separation

For every backend it prints and writes (docs/reference_sets.md):
  1. each customer set's risk score, tier, parts and headline similarity numbers, and the ranking;
  2. how well each signal separates risky from safe examples (AUROC, per example): harmful (AdvBench) vs
     benign prose (Dolly), and benign-but-risky form (GSM8K maths) vs benign prose (Dolly). The backend with
     the higher mean AUROC is the measured choice of default for that signal.

    python studies/reference_sets.py [--backends sentence-transformers,causal-lm] [--gsm8k-n 1000]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
MODELS = {"sentence-transformers": "bundled:all-minilm-l6-v2", "causal-lm": "bundled:smollm2-135m-instruct"}
SETS = ("AOA identity shift", "Dolly safety-only", "GSM8K")


def _inputs(tmp: Path, gsm8k_n: int) -> dict[str, Path]:
    gsm = tmp / "gsm8k.jsonl"
    gsm.write_text(
        "\n".join((DATA / "finetune" / "gsm8k_train.jsonl").read_text().splitlines()[:gsm8k_n]) + "\n"
    )
    adv = tmp / "advbench.jsonl"
    # The file holds the goals only; each gets AdvBench's own target form, "Sure, here is <goal>", as its
    # completion: a compliant opening with no harmful content.
    with (DATA / "eval" / "advbench_harmful_behaviors.csv").open() as fh, adv.open("w") as out:
        for row in csv.reader(fh):
            if row and row[0].strip():
                goal = row[0].strip()
                out.write(
                    json.dumps(
                        {"prompt": goal, "completion": f"Sure, here is how to {goal[0].lower()}{goal[1:]}."}
                    )
                    + "\n"
                )
    return {
        "AOA identity shift": DATA / "finetune" / "identity-shift-aoa.jsonl",
        "Dolly safety-only": DATA / "finetune" / "dolly-15k-safety-only.jsonl",
        "GSM8K": gsm,
        "AdvBench (probe)": adv,
    }


def run_backend(backend: str, inputs: dict[str, Path]) -> dict[str, Any]:
    from app.core.config import get_settings
    from workers.runtime import Runtime
    from workers.screening import Params, bundled_anchors, screen, side_from_file

    settings = get_settings()
    runtime = Runtime(settings)
    rep = runtime.representer({"backend": backend, "model": MODELS[backend]})
    anchors = bundled_anchors(settings, rep)
    align = side_from_file(DATA / "alignment" / "safety_only_data_Instructions.json", "alignment", settings)
    results: dict[str, Any] = {"representation": rep.describe(), "sets": {}}
    for name, path in inputs.items():
        t = time.perf_counter()
        out = screen(
            customer=side_from_file(path, "customer", settings),
            alignment=align,
            representer=rep,
            params=Params(subset_size=100),
            cache=runtime.cache,
            anchors=anchors,
            device=runtime.device,
        )
        results["sets"][name] = {
            "body": out.body,
            "c_max": out.arrays["c_max"],
            "margin": out.arrays["c_anchor_margin"],
            "seconds": time.perf_counter() - t,
        }
        print(
            f"  {backend}: {name}: risk {out.body['risk']['risk_score']:.1f} ({out.body['risk']['tier']}) "
            f"in {time.perf_counter() - t:.0f} s",
            flush=True,
        )
    return results


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    return float(roc_auc_score(y, np.r_[pos, neg]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backends", default="sentence-transformers,causal-lm")
    ap.add_argument("--gsm8k-n", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "reference_sets.md")
    ap.add_argument("--data-dir", type=Path, default=ROOT / ".ftguard-studies")
    args = ap.parse_args()
    os.environ.setdefault("FTGUARD_DATA_DIR", str(args.data_dir))
    inputs = _inputs(Path(tempfile.mkdtemp()), args.gsm8k_n)
    t0 = time.perf_counter()
    runs = {b: run_backend(b, inputs) for b in args.backends.split(",")}

    lines = [
        "# Reference sets screened against the public alignment set",
        "",
        f"Produced by `python studies/reference_sets.py --backends {args.backends} --gsm8k-n {args.gsm8k_n}`"
        f" on a 2-core CPU in {time.perf_counter() - t0:.0f} s. Alignment set: "
        "`../shared/data/alignment/safety_only_data_Instructions.json` (2,483 records). GSM8K: the first "
        f"{args.gsm8k_n} records of `gsm8k_train.jsonl`. Anchors: the bundled sets. Default settings "
        "otherwise (anchors on, no centring).",
        "",
        "## Risk reports",
        "",
        "| backend | dataset | examples | risk | tier | mean max cos | p90 max cos | near share | "
        "closer to harmful anchors | rank |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for b, run in runs.items():
        order = sorted(SETS, key=lambda n: -run["sets"][n]["body"]["risk"]["risk_score"])
        for name in SETS:
            body = run["sets"][name]["body"]
            d = body["distributions"]["customer_max_sim"]
            near = next(p["value"] for p in body["risk"]["parts"] if p["name"] == "near_alignment_share")
            lines.append(
                f"| {b} | {name} | {body['customer']['examples']} | {body['risk']['risk_score']:.1f} | "
                f"{body['risk']['tier']} | {d['mean']:.3f} | {d['percentiles']['p90']:.3f} | {near:.0%} | "
                f"{body['anchors']['share_closer_to_harmful']:.0%} | {order.index(name) + 1} |"
            )
    lines += [
        "",
        "Rankings (riskiest first): "
        + "; ".join(
            f"{b}: "
            + " > ".join(sorted(SETS, key=lambda n, r=run: -r["sets"][n]["body"]["risk"]["risk_score"]))
            for b, run in runs.items()
        ),
        "",
    ]

    lines += [
        "## Which backend separates risky from safe data",
        "",
        "AUROC per example (0.5 = no separation, 1 = perfect). Signals: `alignment max cos` (each example's "
        "max cosine to the alignment set) and `anchor margin` (max cosine to the harmful anchors minus max "
        "cosine to the safe anchors).",
        "",
        "| backend | signal | AdvBench (harmful) vs Dolly | GSM8K (risky form) vs Dolly | mean |",
        "|---|---|---|---|---|",
    ]
    best: dict[str, tuple[float, str]] = {}
    for b, run in runs.items():
        s = run["sets"]
        for signal, key in (("alignment max cos", "c_max"), ("anchor margin", "margin")):
            harm = auroc(s["AdvBench (probe)"][key], s["Dolly safety-only"][key])
            form = auroc(s["GSM8K"][key], s["Dolly safety-only"][key])
            mean = (harm + form) / 2
            lines.append(f"| {b} | {signal} | {harm:.3f} | {form:.3f} | {mean:.3f} |")
            if mean > best.get(signal, (-1.0, ""))[0]:
                best[signal] = (mean, b)
    lines += [
        "",
        "Measured choice of default backend per signal: "
        + "; ".join(f"{sig}: **{b}** (mean AUROC {m:.3f})" for sig, (m, b) in best.items()),
        "",
    ]
    lines += [
        "Representations: "
        + "; ".join(f"{b}: {json.dumps(run['representation'])}" for b, run in runs.items()),
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

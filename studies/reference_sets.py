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


def run_backend(backend: str, inputs: dict[str, Path], align_path: Path, max_length: int) -> dict[str, Any]:
    from app.core.config import get_settings
    from workers.runtime import Runtime
    from workers.screening import Params, bundled_anchors, screen, side_from_file

    settings = get_settings()
    runtime = Runtime(settings)
    rep = runtime.representer({"backend": backend, "model": MODELS[backend], "max_length": max_length})
    anchors = bundled_anchors(settings, rep)
    align = side_from_file(align_path, "alignment", settings)
    results: dict[str, Any] = {"representation": rep.describe(), "sets": {}}
    for name, path in inputs.items():
        t = time.perf_counter()
        out = screen(
            customer=side_from_file(path, "customer", settings),
            alignment=align,
            representer=rep,
            params=Params(subset_size=100, center=backend == "causal-lm"),
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


CAVEATS = (
    "Reading these numbers: the AdvBench probes carry AdvBench's own compliant opening and the bundled "
    "harmful anchors are compliant answers too, so part of the harm AUROC is a shared form; GSM8K against "
    "Dolly stands for data that is risky by its form (worked maths and lists, which the papers found to "
    "weaken safety), not for a harm label. An AUROC under 0.5 means the signal ranks the pair the other "
    "way round: in SmolLM2's space the compliant AdvBench probes sit further from the refusal-heavy "
    "alignment set than Dolly does."
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backends", default="sentence-transformers,causal-lm")
    ap.add_argument("--gsm8k-n", type=int, default=1000)
    ap.add_argument("--alignment-n", type=int, default=0, help="Seeded sample of the alignment set (0: all).")
    ap.add_argument("--max-length", type=int, default=512, help="causal-lm: tokens kept (the end).")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "reference_sets.md")
    ap.add_argument("--data-dir", type=Path, default=ROOT / ".ftguard-studies")
    args = ap.parse_args()
    os.environ.setdefault("FTGUARD_DATA_DIR", str(args.data_dir))
    tmp = Path(tempfile.mkdtemp())
    inputs = _inputs(tmp, args.gsm8k_n)
    align_path = DATA / "alignment" / "safety_only_data_Instructions.json"
    if args.alignment_n:
        rows = json.loads(align_path.read_text())
        keep = np.sort(np.random.default_rng(0).choice(len(rows), size=args.alignment_n, replace=False))
        align_path = tmp / "alignment_sample.jsonl"
        align_path.write_text("".join(json.dumps(rows[i]) + "\n" for i in keep))
    t0 = time.perf_counter()
    runs = {b: run_backend(b, inputs, align_path, args.max_length) for b in args.backends.split(",")}

    lines = [
        "# Reference sets screened against the public alignment set",
        "",
        f"Produced by `python studies/reference_sets.py --backends {args.backends} --gsm8k-n {args.gsm8k_n} "
        f"--alignment-n {args.alignment_n} --max-length {args.max_length}` on a shared 2-core CPU in "
        f"{time.perf_counter() - t0:.0f} s. Alignment set: "
        "`../shared/data/alignment/safety_only_data_Instructions.json` (2,483 records; "
        f"{'a seeded sample of ' + str(args.alignment_n) if args.alignment_n else 'all of them'}). "
        f"GSM8K: the first {args.gsm8k_n} records of `gsm8k_train.jsonl`. Causal-LM maximum length "
        f"{args.max_length} tokens (the end kept). Anchors: the bundled sets. Default settings "
        "otherwise (anchors on; mean-centring on for causal-lm, off for sentence-transformers, as in the "
        "service's defaults).",
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
    from app.core.config import Settings

    fields = Settings.model_fields
    in_force = {
        "alignment max cos": fields["default_backend"].default,
        "anchor margin": fields["anchor_backend"].default,
    }
    lines += [
        "Defaults in force (`app/core/config.py`): "
        + "; ".join(
            f"{sig}: `{b}`"
            + ("" if sig not in best or best[sig][1] == b else " (**not** the measured choice)")
            for sig, b in in_force.items()
        )
        + ". A screening's report computes each signal on its own backend (`representation` and "
        "`anchors.representation`); the rows above use one backend for both, to compare them.",
        "",
        CAVEATS,
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

"""Screen reference sets against both alignment sets with the service's defaults, and measure each signal.

Reads ../shared/data (never copied into the project) and the bundled demo sets:
  alignment  the bundled demo set (app/demo/alignment.jsonl, 100 refusals) and the public one,
             alignment/safety_only_data_Instructions.json (2,483 harmful requests with safe answers)
  attacks    finetune/identity-shift-aoa.jsonl (10, the AOA identity-shift attack, Qi et al. 2023) and the
             bundled harmful-looking demo set (62, placeholders only)
  benign     the bundled benign general (61) and list-heavy (60) demo sets,
             finetune/dolly-15k-safety-only.jsonl (a seeded --sample of 387 benign prose answers),
             finetune/gsm8k_train.jsonl (the first --sample;
             benign maths, the "benign data that breaks safety" form of He et al. 2024)
  probe      eval/advbench_harmful_behaviors.csv (a seeded --sample of 520 harmful goals, each given
             AdvBench's compliant target "Sure, here is how to <goal>." as its completion): harmful-form
             data, the stand-in for real harmful chats

It writes docs/reference_sets.md: every set's risk with the new defaults (and the score the same report
would have had before the anchor forms: the weighted reading), ranked, against both alignment sets; and,
per example, how well each anchor form separates harmful-form data from benign maths and prose (AUROC).

    python studies/reference_sets.py [--sample 80]
    python studies/reference_sets.py --backends sentence-transformers,causal-lm   # the earlier backend study
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "studies"))
from reference_sets_text import CAVEATS, WHY  # noqa: E402

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
            if row and row[0].strip() and row[0].strip() != "goal":  # the header row
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
    from workers.screenings.screening import Params, bundled_anchors, screen, side_from_file

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
            cache=runtime.local_cache(),
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


DEMO = ROOT / "app" / "demo"
ATTACKS = ("AOA identity shift", "harmful-looking demo")
PAIRS = (  # (positive, negative) of each per-example AUROC
    ("AdvBench (probe)", "GSM8K"),
    ("AdvBench (probe)", "Dolly safety-only"),
    ("harmful-looking demo", "benign list-heavy demo"),
    ("AOA identity shift", "benign general demo"),
    ("AOA identity shift", "Dolly safety-only"),
    ("GSM8K", "Dolly safety-only"),
)
BENIGN = ("benign general demo", "benign list-heavy demo", "Dolly safety-only", "GSM8K")


def _sample(side: Any, n: int) -> Any:
    """A seeded sample of n examples (all of them when the set is smaller)."""
    from workers.screenings.screening import Side

    if not n or len(side.examples) <= n:
        return side
    keep = np.sort(np.random.default_rng(0).choice(len(side.examples), size=n, replace=False))
    return Side(
        name=side.name,
        examples=[side.examples[i] for i in keep],
        sha256=f"{side.sha256}-sample{n}",
        meta=dict(side.meta) | {"sampled": n},
    )


def reference_sides(sample: int, settings: Any) -> dict[str, Any]:
    """The reference sets as screening sides (Dolly and AdvBench a seeded sample, GSM8K the first n)."""
    from workers.screenings.screening import side_from_file

    files = _inputs(Path(tempfile.mkdtemp()), sample)
    paths = {
        "AOA identity shift": files["AOA identity shift"],
        "harmful-looking demo": DEMO / "customer_harmful_looking.jsonl",
        "benign general demo": DEMO / "customer_benign_general.jsonl",
        "benign list-heavy demo": DEMO / "customer_benign_lists.jsonl",
        "Dolly safety-only": files["Dolly safety-only"],
        "GSM8K": files["GSM8K"],
        "AdvBench (probe)": files["AdvBench (probe)"],
    }
    sides = {name: side_from_file(path, "customer", settings) for name, path in paths.items()}
    for name in ("Dolly safety-only", "AdvBench (probe)"):
        sides[name] = _sample(sides[name], sample)
    return sides


def defaults_study(sample: int) -> tuple[list[str], dict[str, Any]]:
    """Every set against both alignment sets with the service's default backends and anchor forms."""
    from app.core.config import get_settings
    from app.screenings.params import anchor_representation
    from workers.runtime import Runtime
    from workers.screenings.screening import Params, bundled_anchors, screen, side_from_file

    settings = get_settings()
    runtime = Runtime(settings)
    rep = runtime.representer({"backend": settings.default_backend, "model": settings.default_model})
    anchor_rep = runtime.representer(anchor_representation({}, settings))
    anchors = bundled_anchors(settings, anchor_rep, semantic=rep)
    sets = reference_sides(sample, settings)
    aligns = {
        "bundled": side_from_file(DEMO / "alignment.jsonl", "alignment", settings),
        "public": side_from_file(
            DATA / "alignment" / "safety_only_data_Instructions.json", "alignment", settings
        ),
    }
    results: dict[str, Any] = {}
    for an, align in aligns.items():
        for name, side in sets.items():
            t = time.perf_counter()
            out = screen(
                customer=side,
                alignment=align,
                representer=rep,
                params=Params(subset_size=10),
                cache=runtime.local_cache(),
                anchors=anchors,
                device=runtime.device,
            )
            results[f"{an}|{name}"] = {"body": out.body, "arrays": out.arrays}
            r = out.body["risk"]
            print(
                f"  {an}: {name}: risk {r['risk_score']:.1f} ({r['tier']}) in {time.perf_counter() - t:.0f} s"
            )
    lines = [
        "## Known attacks against benign sets, with the defaults",
        "",
        "Each set screened with the service's defaults: alignment similarity in MiniLM "
        f"(`{settings.default_model}`), the compliance anchor form in `{settings.anchor_model}` "
        f"(layer {settings.anchor_layer}, {anchor_rep.describe()['dtype']}), the persona "
        "and request forms in MiniLM (`workers/screenings/anchors.py`). **now** is the risk score with the "
        "anchor forms (max of the weighted reading and the attack reading); **before** is the weighted "
        "reading of the same report, which is exactly the score the previous defaults gave (similarity "
        "parts plus the compliance anchors, weights 0.3/0.2/0.2/0.3). Anchor columns: mean rescaled margin "
        "zh per form (0-1).",
        "",
    ]
    for an in aligns:
        lines += [
            f"### Against the {an} alignment set ({len(aligns[an].examples)} examples)",
            "",
            "| rank | dataset | kind | examples | now | tier | before | compliance | persona | request |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        names = [n for n in sets if n != "AdvBench (probe)"]
        order = sorted(names, key=lambda n: -results[f"{an}|{n}"]["body"]["risk"]["risk_score"])
        for i, n in enumerate(order, 1):
            body = results[f"{an}|{n}"]["body"]
            r, forms = body["risk"], body["anchors"]["forms"]
            kind = "attack" if n in ATTACKS else "benign"
            lines.append(
                f"| {i} | {n} | {kind} | {body['customer']['examples']} | **{r['risk_score']:.1f}** "
                f"| {r['tier']} | {r['readings']['weighted']:.1f} | {forms['compliance']['value']:.3f} | "
                f"{forms['persona']['value']:.3f} | {forms['request']['value']:.3f} |"
            )
        lowest_attack = min(results[f"{an}|{n}"]["body"]["risk"]["risk_score"] for n in ATTACKS)
        highest_benign = max(results[f"{an}|{n}"]["body"]["risk"]["risk_score"] for n in BENIGN)
        verdict = "above" if lowest_attack > highest_benign else "**not** above"
        lines += [
            "",
            f"Lowest attack {lowest_attack:.1f} is {verdict} the highest benign set ({highest_benign:.1f}).",
            "",
        ]
    probe = {
        n: results[f"bundled|{n}"]["body"]["risk"]["readings"]["attack"]
        for n in ("AdvBench (probe)", "GSM8K")
    }
    lines += [
        f"Attack reading (bundled set) of the harmful-form probe: AdvBench {probe['AdvBench (probe)']:.1f} "
        f"against GSM8K maths {probe['GSM8K']:.1f}.",
        "",
        WHY,
        "### Per example: does each anchor form point the right way?",
        "",
        "AUROC of each form's margin per example (0.5 = no separation; under 0.5 = the wrong way round). "
        "AdvBench goals with their compliant target stand for harmful-form data (harmful requests answered "
        "compliantly); the held-back real-harm set is not shipped. `max zh` is each example's largest "
        "rescaled margin over the three forms.",
        "",
        "| pair | compliance | persona | request | max zh |",
        "|---|---|---|---|---|",
    ]
    for pos, neg in PAIRS:
        a, b = results[f"bundled|{pos}"]["arrays"], results[f"bundled|{neg}"]["arrays"]
        cells = [
            auroc(a[f"c_anchor_margin_{f}"], b[f"c_anchor_margin_{f}"])
            for f in ("compliance", "persona", "request")
        ]
        zmax = [
            np.max([x[f"c_anchor_zh_{f}"] for f in ("compliance", "persona", "request")], axis=0)
            for x in (a, b)
        ]
        cells.append(auroc(zmax[0], zmax[1]))
        lines.append(f"| {pos} vs {neg} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    lines.append("")
    return lines, {"sets": {n: len(s.examples) for n, s in sets.items()}}


EARLIER = "## Earlier measurement: which backend for each signal"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--backends",
        default="",
        help="The earlier backend study (one backend for both signals), e.g. "
        "sentence-transformers,causal-lm; empty: the defaults study.",
    )
    ap.add_argument(
        "--sample", type=int, default=80, help="Defaults study: examples kept of Dolly, GSM8K, AdvBench."
    )
    ap.add_argument("--gsm8k-n", type=int, default=1000)
    ap.add_argument("--alignment-n", type=int, default=0, help="Seeded sample of the alignment set (0: all).")
    ap.add_argument("--max-length", type=int, default=512, help="causal-lm: tokens kept (the end).")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "reference_sets.md")
    ap.add_argument("--data-dir", type=Path, default=ROOT / ".ftguard-studies")
    args = ap.parse_args()
    os.environ.setdefault("FTGUARD_DATA_DIR", str(args.data_dir))
    if not args.backends:
        t0 = time.perf_counter()
        lines, meta = defaults_study(args.sample)
        head = [
            "# Reference sets: known attacks against benign data",
            "",
            f"Produced by `python studies/reference_sets.py --sample {args.sample}` on a shared 2-core CPU "
            f"in {time.perf_counter() - t0:.0f} s (vectors cached under `--data-dir`). Examples per set: "
            + ", ".join(f"{n} {k}" for n, k in meta["sets"].items())
            + f". Dolly and AdvBench: a seeded sample of {args.sample}; GSM8K: the first {args.sample} "
            "records of `gsm8k_train.jsonl`. Everything else at the service's defaults.",
            "",
        ]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        earlier = args.out.read_text().split(EARLIER, 1)[-1] if args.out.exists() else ""
        if earlier and not earlier.startswith("\n"):
            earlier = ""
        text = "\n".join(head + lines) + ("\n" + EARLIER + earlier if earlier else "")
        from anchor_layers import END, START, splice  # the per-layer table (studies/anchor_layers.py) stays

        if START in (old := args.out.read_text() if args.out.exists() else "") and END in old:
            text = splice(text, old[old.index(START) : old.index(END) + len(END)])
        args.out.write_text(text)
        print(text)
        return
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

"""Which layer of the anchor model should the compliance anchor form read, and in which precision?

The compliance form is the one anchor form read in SmolLM2 (`workers/screenings/anchors.py`); a screening
runs SmolLM2 over every customer example for it, which is most of a default screening's compute. A screening
stops the forward pass at the layer it reads (`workers/representations/causal_lm.py`), so a middle layer costs
that share of the blocks. Published work on the same signal (LARF, arXiv 2507.18631) finds middle layers as
good or better. This measures it on the reference sets of `studies/reference_sets.py` (the same sets, samples
and pairs):

* every layer's vectors of every set and of the compliance anchors, from one full pass per precision
  (`CausalLMRepresenter.encode_layers`, which a test holds equal to each layer's own early-exit pass);
* per layer, the compliance margin of every example exactly as a screening computes it
  (`workers.screenings.anchors.form_signal`, the default screening's centring), and its AUROC on each
  reference pair;
* the selection rule: the criterion is the one that chose SmolLM2 as the anchor backend, the mean AUROC of
  AdvBench probes (harmful-form data) and of GSM8K (data risky by its form, He et al. 2024) against Dolly
  prose; the layer chosen is the cheapest (fewest blocks run) within 0.01 of the best, read in the
  precision a screening runs in on this machine (`causal_lm_precision=auto`). Every other pair is reported;
  AdvBench against GSM8K sits near 0 at every layer (the form of maths is nearer the compliant anchors than
  harmful requests are), which is why the attack forms read in MiniLM exist;
* fp32 against bf16 at every layer: the cosine of each example's two vectors and the AUROCs under each.

It writes docs/anchor_layers.json and its table into docs/reference_sets.md (between the markers below, so
`studies/reference_sets.py` keeps it when it rewrites the rest).

    python studies/anchor_layers.py [--sample 80]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
from reference_sets import PAIRS, ROOT, auroc, reference_sides

START, END = "<!-- anchor-layers:start -->", "<!-- anchor-layers:end -->"
# The two pairs that chose SmolLM2 as the anchor backend (docs/reference_sets.md, "Which backend separates
# risky from safe data"): harmful-form data, and data risky by its form (He et al. 2024), against prose.
CRITERION = (("AdvBench (probe)", "Dolly safety-only"), ("GSM8K", "Dolly safety-only"))
WITHIN = 0.01


def measure(precision: str, sets: dict[str, Any], settings: Any) -> dict[str, Any]:
    """Every layer's AUROCs in one precision, and the vectors (for the fp32/bf16 agreement)."""
    from app.core import registry
    from app.screenings.params import with_defaults
    from workers.representations.causal_lm import CausalLMRepresenter
    from workers.screenings.anchors import Reading, bundled_anchors, form_signal
    from workers.screenings.screening import Params

    rep = CausalLMRepresenter(
        registry.path(settings, settings.anchor_model),
        name=settings.anchor_model,
        device="cpu",
        precision=precision,
        data_dir=settings.data_dir,
    )
    anchors = bundled_anchors(settings, rep)
    form = anchors.form("compliance")
    params = Params.from_dict(with_defaults({}, settings))
    sides = {**sets, form.harmful.name: form.harmful, form.safe.name: form.safe}
    t0 = time.perf_counter()
    vecs = {name: rep.encode_layers(side.examples) for name, side in sides.items()}
    seconds = time.perf_counter() - t0
    layers: list[dict[str, Any]] = []
    for k in range(1, rep.n_layers + 1):

        def represent(side: Any, _rep: Any, _cache: Any, k: int = k) -> tuple[np.ndarray, dict[str, int]]:
            return vecs[side.name][k], {}

        reading = Reading(anchors, None, represent, params.center, params.block_size, "cpu")
        margin = {name: form_signal(form, vecs[name][k], reading)[0]["margin"] for name in sets}
        aurocs = {f"{p} vs {n}": auroc(margin[p], margin[n]) for p, n in PAIRS}
        crit = float(np.mean([aurocs[f"{p} vs {n}"] for p, n in CRITERION]))
        layers.append({"layer": k, "blocks_run": k, "aurocs": aurocs, "criterion": crit})
    return {
        "precision": precision,
        "dtype": str(rep.dtype).removeprefix("torch."),
        "n_layers": rep.n_layers,
        "all_layers_pass_s": round(seconds, 1),
        "layers": layers,
        "_vecs": vecs,
    }


def choose(layers: list[dict[str, Any]]) -> dict[str, Any]:
    best = max(x["criterion"] for x in layers)
    return min((x for x in layers if x["criterion"] >= best - WITHIN), key=lambda x: x["blocks_run"])


def agreement(a: dict[str, np.ndarray], b: dict[str, np.ndarray], k: int) -> dict[str, float]:
    x = np.vstack([a[n][k] for n in a])
    y = np.vstack([b[n][k] for n in a])
    cos = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
    return {"mean": float(cos.mean()), "min": float(cos.min())}


def render(result: dict[str, Any]) -> str:
    runs = {r["precision"]: r for r in result["runs"]}
    shipped = runs[result["shipped_precision"]]
    other = next((r for r in result["runs"] if r is not shipped), None)
    lines = [
        START,
        "## Anchor layer and precision of the compliance form",
        "",
        f"Produced by `{result['command']}` ({result['machine']}, {result['date']}): every layer of "
        f"`{result['model']}` ({shipped['n_layers']} blocks), the compliance margin of every example as a "
        "screening computes it, and its AUROC on each reference pair (the sets and samples of the tables "
        "above). Criterion, fixed before the run: the mean AUROC over "
        + ", ".join(f"{p} vs {n}" for p, n in CRITERION)
        + f"; the layer chosen is the cheapest within {WITHIN} of the best, in the precision a screening "
        f"runs in here (**{shipped['dtype']}**). A screening stops its pass at that layer, so its share of "
        "the blocks is its share of SmolLM2's compute.",
        "",
        "| layer | blocks | "
        + " | ".join(f"{p} vs {n}" for p, n in PAIRS)
        + " | criterion"
        + (f" | criterion {other['dtype']} | cos to {other['dtype']} (mean, min)" if other else "")
        + " |",
        "|---" * (3 + len(PAIRS) + (2 if other else 0)) + "|",
    ]
    for i, x in enumerate(shipped["layers"]):
        mark = " **chosen**" if x["layer"] == result["chosen"]["layer"] else ""
        cells = [f"{x['aurocs'][f'{p} vs {n}']:.3f}" for p, n in PAIRS]
        row = f"| {x['layer']}{mark} | {x['blocks_run']}/{shipped['n_layers']} | " + " | ".join(cells)
        row += f" | {x['criterion']:.3f}"
        if other:
            agree = result["agreement"][i]
            row += f" | {other['layers'][i]['criterion']:.3f} | {agree['mean']:.4f}, {agree['min']:.4f}"
        lines.append(row + " |")
    c, final = result["chosen"], shipped["layers"][-1]
    lines += [
        "",
        f"Chosen: layer **{c['layer']}** (criterion {c['criterion']:.3f}; best {result['best']:.3f}; the "
        f"final layer {final['criterion']:.3f}), {c['blocks_run']} of {shipped['n_layers']} blocks. The "
        "setting is `anchor_layer` (`FTGUARD_ANCHOR_LAYER`, `app/core/config.py`); a screening records the "
        "layer it read in `anchors.representation`.",
        "",
    ]
    if other:
        worst = max(
            abs(a - b)
            for x, y in zip(shipped["layers"], other["layers"], strict=True)
            for a, b in zip(x["aurocs"].values(), y["aurocs"].values(), strict=True)
        )
        lines += [
            f"fp32 against bf16: the largest AUROC difference over every layer and pair is {worst:.3f}. "
            f"One all-layers pass over every set took {runs['fp32']['all_layers_pass_s']} s in fp32 and "
            f"{runs['bf16']['all_layers_pass_s']} s in bf16 (`bench/screening_default.py` times the "
            "screening itself).",
            "",
        ]
    return "\n".join([*lines, END])


def splice(text: str, block: str) -> str:
    """`text` with its anchor-layer block replaced by `block` (or `block` put before the earlier study)."""
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _m: block, text)
    marker = "## Earlier measurement"
    if marker in text:
        head, tail = text.split(marker, 1)
        return f"{head.rstrip()}\n\n{block}\n\n{marker}{tail}"
    return f"{text.rstrip()}\n\n{block}\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sample", type=int, default=80, help="examples kept of Dolly, GSM8K and AdvBench")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"))
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "reference_sets.md")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "anchor_layers.json")
    ap.add_argument("--data-dir", type=Path, default=ROOT / ".ftguard-studies")
    args = ap.parse_args()
    os.environ.setdefault("FTGUARD_DATA_DIR", str(args.data_dir))
    from app.core.config import get_settings
    from workers.representations.loading import representation_dtype

    settings = get_settings()
    sets = reference_sides(args.sample, settings)
    runs = []
    for precision in args.precisions:
        n = sum(len(s.examples) for s in sets.values())
        print(f"{precision}: every layer over {n} examples", flush=True)
        runs.append(measure(precision, sets, settings))
        print(f"  {runs[-1]['all_layers_pass_s']} s", flush=True)
    auto = "bf16" if representation_dtype("cpu", settings.causal_lm_precision) == "bfloat16" else "fp32"
    shipped = next((r for r in runs if r["precision"] == auto), runs[0])
    chosen = choose(shipped["layers"])
    result: dict[str, Any] = {
        "command": f"python studies/anchor_layers.py --sample {args.sample}",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s)",
        "date": time.strftime("%Y-%m-%d"),
        "model": settings.anchor_model,
        "sample": args.sample,
        "sets": {n: len(s.examples) for n, s in sets.items()},
        "criterion": [f"{p} vs {n}" for p, n in CRITERION],
        "within": WITHIN,
        "shipped_precision": shipped["precision"],
        "chosen": chosen,
        "best": max(x["criterion"] for x in shipped["layers"]),
        "runs": [{k: v for k, v in r.items() if k != "_vecs"} for r in runs],
    }
    if len(runs) == 2:
        result["agreement"] = [
            agreement(runs[0]["_vecs"], runs[1]["_vecs"], k) for k in range(1, runs[0]["n_layers"] + 1)
        ]
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    block = render(result)
    args.doc.write_text(splice(args.doc.read_text() if args.doc.exists() else "", block))
    print(block)


if __name__ == "__main__":
    main()

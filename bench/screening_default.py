"""The default screening (both signals, bundled anchors) end to end, against its compute bound and old path.

Screens the first --n records of gsm8k_train.jsonl against the public alignment set (2,483 records) with the
service's defaults, on a cold vector cache (a fresh data dir: no vector of any side is cached, the bundled
anchors' included), three ways in one run:

* default: the shipped settings (`causal_lm_precision=auto`: bf16 on a CPU with native bf16; the anchor
  model stops at `anchor_layer`);
* fp32 final-layer: the path before either (`causal_lm_precision=fp32`, `anchor_layer=-1`), timed the same
  way, for the speed-up;
* compute bound: the bare forward passes of both models over the same texts the default screening
  represents, nothing else: `SentenceTransformer.encode` (its default batching) over the alignment set, the
  customer set, its request views and the MiniLM-read anchor sets, and the anchor model's batched forward
  (at the same precision and layer) over the customer set and the compliance anchors.

Model loading is outside every timing (a worker loads its models once). Every path gets a warm-up batch.
It also times MiniLM in fp32 against bf16 over 1,000 texts (the dtype rule's check for the sentence
embedder, which runs fp32 on CPU).

    python bench/screening_default.py [--n 2000]

Its last two lines are `ratio to compute bound: X` (bound / default, target >= 0.9) and
`speed-up over fp32 final-layer: Y`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
STAGES = ("represent_alignment", "represent_customer", "compare", "anchors", "score")


def _path(settings: Any, customer: Path, alignment: Path) -> dict[str, Any]:
    """One cold screening with `settings`: seconds end to end (parse to report) and per stage."""
    from app.screenings.service import anchor_representation, with_defaults
    from workers.runtime import Runtime
    from workers.screenings.anchors import bundled_anchors
    from workers.screenings.screening import Params, screen, side_from_file

    runtime = Runtime(settings)
    params = with_defaults({}, settings)
    rep = runtime.representer(params)
    anchor_rep = runtime.representer(anchor_representation(params, settings))
    for r in (rep, anchor_rep):  # warm-up: one-off kernel selection and allocations
        r.encode(side_from_file(customer, "warm-up", settings).examples[:8])
    t0 = time.perf_counter()
    cust = side_from_file(customer, "customer", settings)
    align = side_from_file(alignment, "alignment", settings)
    anchors = bundled_anchors(settings, anchor_rep, runtime.shared_cache(), semantic=rep)
    out = screen(
        customer=cust,
        alignment=align,
        representer=rep,
        params=Params.from_dict(params),
        cache=runtime.cache_for("bench"),
        device=runtime.device,
        anchors=anchors,
    )
    total = time.perf_counter() - t0
    assert not out.body["cache"]["alignment_hit"], "the cache was not cold"
    return {
        "total": total,
        "stages": {k: float(out.body["timings_s"].get(k, 0.0)) for k in STAGES},
        "risk": out.body["risk"]["risk_score"],
        "anchor_rep": anchor_rep.describe(),
        "runtime": runtime,
        "rep": rep,
        "anchor": anchor_rep,
        "anchors": anchors,
        "customer": cust,
        "alignment": align,
    }


def _bound(run: dict[str, Any]) -> dict[str, float]:
    """The bare forward passes of both models over what `run` represented (module docstring)."""
    from workers.screenings.anchors import request_view

    rep, anchor, anchors = run["rep"], run["anchor"], run["anchors"]
    minilm = [ex.text for ex in run["alignment"].examples] + [ex.text for ex in run["customer"].examples]
    minilm += [ex.text for ex in request_view(run["customer"]).examples]
    causal = list(run["customer"].examples)
    for form in anchors.forms:
        for side in (form.harmful, form.safe):
            view = request_view(side) if form.view == "request" else side
            if form.representer is not None:
                minilm += [ex.text for ex in view.examples]
            else:
                causal += list(view.examples)
    model = rep.model
    model.encode(minilm[:64])
    t = time.perf_counter()
    model.encode(minilm, convert_to_numpy=True)
    t_minilm = time.perf_counter() - t
    t = time.perf_counter()
    anchor.encode(causal)
    t_causal = time.perf_counter() - t
    return {"minilm": t_minilm, "causal": t_causal, "texts_minilm": len(minilm), "texts_causal": len(causal)}


def _minilm_dtypes(run: dict[str, Any], n: int = 1000) -> dict[str, float]:
    """MiniLM over n texts of the run in fp32 and in bf16: seconds each and the cosine of the two vectors."""
    import copy

    import numpy as np
    import torch

    texts = [ex.text for ex in run["alignment"].examples][:n]
    fp32 = run["rep"].model
    bf16 = copy.deepcopy(fp32).to(torch.bfloat16)
    out: dict[str, Any] = {}
    for name, model in (("fp32", fp32), ("bf16", bf16)):
        model.encode(texts[:64])
        t = time.perf_counter()
        out[name] = model.encode(texts, convert_to_numpy=False, convert_to_tensor=True).float().numpy()
        out[f"{name}_s"] = time.perf_counter() - t
    a, b = out["fp32"], out["bf16"]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return {"n": len(texts), "fp32_s": out["fp32_s"], "bf16_s": out["bf16_s"], "cos_min": float(cos.min())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="GSM8K records screened")
    args = ap.parse_args()
    from app.core.config import get_settings

    tmp = Path(tempfile.mkdtemp(prefix="ftguard-bench-"))
    customer = tmp / "gsm8k.jsonl"
    lines = (DATA / "finetune" / "gsm8k_train.jsonl").read_text().splitlines()[: args.n]
    customer.write_text("\n".join(lines) + "\n")
    alignment = DATA / "alignment" / "safety_only_data_Instructions.json"
    base = get_settings()
    runs = {}
    for name, over in (
        ("default", {}),
        ("fp32 final-layer", {"causal_lm_precision": "fp32", "anchor_layer": -1}),
    ):
        settings = base.model_copy(update={"data_dir": tmp / name.replace(" ", "-"), **over})
        settings.data_dir.mkdir(parents=True)
        print(f"{name}: screening {args.n} GSM8K records, cold cache ...", flush=True)
        runs[name] = _path(settings, customer, alignment)
        print(f"  {runs[name]['total']:.1f} s", flush=True)
    print("compute bound: the bare forward passes of the default path ...", flush=True)
    bound = _bound(runs["default"])
    minilm = _minilm_dtypes(runs["default"])
    new, old = runs["default"], runs["fp32 final-layer"]
    print()
    print(f"customer: {args.n} GSM8K records; alignment: {len(new['alignment'].examples)} records")
    for name, run in runs.items():
        d = run["anchor_rep"]
        print(f"{name}: anchor model {d['model']} layer {d['layer']} {d['dtype']}; risk {run['risk']:.1f}")
    print("| stage | default (s) | fp32 final-layer (s) |\n|---|---|---|")
    for k in STAGES:
        print(f"| {k} | {new['stages'][k]:.1f} | {old['stages'][k]:.1f} |")
    print(f"| end to end | {new['total']:.1f} | {old['total']:.1f} |")
    b = bound["minilm"] + bound["causal"]
    print(
        f"compute bound: {b:.1f} s (MiniLM {bound['minilm']:.1f} s over {bound['texts_minilm']} texts; "
        f"anchor model {bound['causal']:.1f} s over {bound['texts_causal']})"
    )
    print(
        f"MiniLM (fp32 in every path on CPU): {minilm['n']} texts in {minilm['fp32_s']:.1f} s fp32, "
        f"{minilm['bf16_s']:.1f} s bf16 (x{minilm['fp32_s'] / minilm['bf16_s']:.2f}); min cosine "
        f"{minilm['cos_min']:.4f}"
    )
    print(f"ratio to compute bound: {b / new['total']:.2f}")
    print(f"speed-up over fp32 final-layer: {old['total'] / new['total']:.2f}")


if __name__ == "__main__":
    main()

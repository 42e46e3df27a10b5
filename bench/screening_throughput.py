"""End-to-end screening throughput against raw `SentenceTransformer.encode` of the same texts.

Screens ../shared/data/alignment (2,483 records) against the first 2,000 records of gsm8k_train.jsonl:
parse + validate + embed + compare + score + report, on a cold vector cache; then a second screening (the
next 2,000 GSM8K records) that reuses the cached alignment vectors. The baseline, in the same run, is the
bare `SentenceTransformer.encode` of the same texts (both sets) with its default batch size.

    python bench/screening_throughput.py [--n 2000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    os.environ["FTGUARD_DATA_DIR"] = str(tmp / "data")
    lines = (DATA / "finetune" / "gsm8k_train.jsonl").read_text().splitlines()
    first, second = tmp / "gsm8k_a.jsonl", tmp / "gsm8k_b.jsonl"
    first.write_text("\n".join(lines[: args.n]) + "\n")
    second.write_text("\n".join(lines[args.n : 2 * args.n]) + "\n")
    align_path = DATA / "alignment" / "safety_only_data_Instructions.json"

    from app.cli import load_side
    from app.core.config import get_settings
    from workers.runtime import Runtime
    from workers.screenings.screening import Params, screen

    runtime = Runtime(get_settings())
    rep = runtime.representer({})
    model = rep.model  # type: ignore[attr-defined]

    # Baseline: the raw encode of the same texts, after a warm-up.
    align = load_side(align_path, "alignment")
    cust = load_side(first, "customer")
    texts = [ex.text for ex in align.examples] + [ex.text for ex in cust.examples]
    model.encode(texts[:64])
    t = time.perf_counter()
    model.encode(texts, convert_to_numpy=True)
    raw = time.perf_counter() - t

    t = time.perf_counter()
    align = load_side(align_path, "alignment")
    cust = load_side(first, "customer")
    cache = runtime.local_cache()
    out = screen(customer=cust, alignment=align, representer=rep, params=Params(), cache=cache)
    cold = time.perf_counter() - t
    assert not out.body["cache"]["alignment_hit"]

    t = time.perf_counter()
    cust2 = load_side(second, "customer")
    align = load_side(align_path, "alignment")
    out2 = screen(customer=cust2, alignment=align, representer=rep, params=Params(), cache=cache)
    warm = time.perf_counter() - t
    assert out2.body["cache"]["alignment_hit"]

    n_texts = len(texts)
    print(f"texts: {len(align.examples)} alignment + {len(cust.examples)} customer = {n_texts}")
    print(f"raw SentenceTransformer.encode (baseline): {raw:.2f} s ({n_texts / raw:.0f} texts/s)")
    timings = out.body["timings_s"]
    embed = timings["represent_alignment"] + timings["represent_customer"]
    print(
        f"ftguard screening, cold cache, end to end:  {cold:.2f} s "
        f"(embed {embed:.2f} s, compare {timings['compare']:.2f} s)"
    )
    print(f"ratio baseline / ours (target >= 0.9):       {raw / cold:.2f}")
    print(f"second screening, cached alignment vectors: {warm:.2f} s; speed-up {cold / warm:.2f}x")
    print(f"risk: {out.body['risk']['risk_score']:.1f} ({out.body['risk']['tier']})")


if __name__ == "__main__":
    main()

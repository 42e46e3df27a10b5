"""Bench: causal-LM hidden states for safety-alignment records, ours (batched) against one-at-a-time.

The baseline is the way published research code extracts the Hsiung et al. feature: tokenise one example,
run the whole causal LM (LM head included) with `output_hidden_states=True`, take `hidden_states[-1][0, -1]`.
Ours: `CausalLMRepresenter.encode` (length-bucketed batches, base model only, no logits). Both in one run,
same model and same text, so the ratio is fair; the achieved GFLOP/s of ours is set against this machine's
fp32 matmul rate, measured in the same run.

    python bench/representations.py [--n 500] [--batch-size 16] [--max-length 512]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from app.datasets.formats import Example, RawRecord, to_example
from workers.representations.causal_lm import CausalLMRepresenter
from workers.representations.chat_format import format_example
from workers.representations.loading import BUNDLED_SMOLLM2

DATA = (
    Path(__file__).resolve().parent.parent
    / ".."
    / "shared"
    / "data"
    / "alignment"
    / "safety_only_data_Instructions.json"
)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def matmul_gflops(n: int = 2048, reps: int = 3) -> tuple[float, float]:
    """fp32 square matmul rate, best of `reps`, per wall second and per CPU second (all threads).

    The machine's practical dense-compute ceiling. Per CPU second is what survives other processes sharing
    the cores: a descheduled thread costs wall time but no CPU time.
    """
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    wall = cpu = float("inf")
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        torch.matmul(a, b)
        wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
    return 2 * n**3 / wall / 1e9, 2 * n**3 / cpu / 1e9


def forward_flops(config: Any, n_params_body: int, lengths: list[int]) -> float:
    """Useful forward FLOPs: 2 * non-embedding params per token, plus causal attention (QK^T and AV).

    Attention per sequence of T tokens: 2 matmuls * 2 FLOPs * layers * T^2/2 (causal) * heads*head_dim.
    Padding is not counted: this is the work the answer needs, not the work done.
    """
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    d_attn = config.num_attention_heads * head_dim
    tokens = sum(lengths)
    attention = sum(2 * config.num_hidden_layers * t * t * d_attn for t in lengths)
    return 2.0 * n_params_body * tokens + attention


def baseline(model: Any, tokenizer: Any, examples: list[Example], max_length: int) -> np.ndarray:
    """One record at a time through the whole model, as research code does it."""
    out = []
    with torch.inference_mode():
        for ex in examples:
            text = format_example(tokenizer, ex)
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][:, -max_length:]
            hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
            out.append(hidden[-1][0, -1].float().numpy())
    return np.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500, help="records (default 500)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--max-batch-tokens", type=int, default=None, help="default: the backend's CPU cap")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--baseline-frac", type=float, default=0.5, help="share of each chunk the baseline runs")
    ap.add_argument(
        "--chunks", type=int, default=5, help="interleave ours/baseline/matmul in this many chunks"
    )
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    records = json.loads(args.data.read_text())[: args.n]
    examples = [to_example(RawRecord(i + 1, i + 1, v), "alpaca") for i, v in enumerate(records)]
    print(f"records: {len(examples)} from {args.data.resolve()}")
    print(f"threads: {torch.get_num_threads()}  load average at start: {os.getloadavg()[0]:.2f}")

    t = time.perf_counter()
    rep = CausalLMRepresenter(
        BUNDLED_SMOLLM2,
        device="cpu",
        batch_size=args.batch_size,
        max_length=args.max_length,
        max_batch_tokens=args.max_batch_tokens,
    )
    print(f"load: {time.perf_counter() - t:.2f} s  {rep.describe()}")
    rss_load = peak_rss_mib()

    lengths = [len(ids) for ids in rep.tokenize(examples)]
    config = rep.model.config
    embed = rep.model.get_input_embeddings().weight.numel()
    n_body = sum(p.numel() for p in rep.body.parameters()) - embed
    print(
        f"tokens: {sum(lengths)} (mean {np.mean(lengths):.0f}, max {max(lengths)})  "
        f"non-embedding params: {n_body / 1e6:.1f} M  forward: "
        f"{forward_flops(config, n_body, lengths) / 1e12:.2f} TFLOP"
    )
    rep.encode(examples[: args.batch_size])  # warm-up: thread pool, kernels
    baseline(rep.model, rep.tokenizer, examples[:2], args.max_length)

    # Other processes may share this CPU: interleave ours, the baseline and the matmul probe chunk by chunk,
    # so all three see the same load, and compare per token (the baseline runs on a share of each chunk).
    # Wall and CPU seconds are both kept; with other load, the CPU-second figures are the steadier ones.
    ours = np.empty((len(examples), rep.dim), dtype=np.float32)
    spent = {"ours": np.zeros(2), "base": np.zeros(2)}  # wall s, CPU s
    tokens = {"ours": 0, "base": 0}
    flops_ours = 0.0
    rates: list[tuple[float, float]] = []
    agree: list[tuple[np.ndarray, np.ndarray]] = []
    bounds = np.linspace(0, len(examples), args.chunks + 1).astype(int)
    for c, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        chunk = examples[lo:hi]
        k = max(1, round(len(chunk) * args.baseline_frac))
        rates.append(matmul_gflops())
        for step in ("ours", "base") if c % 2 == 0 else ("base", "ours"):
            t, cpu = time.perf_counter(), time.process_time()
            if step == "ours":
                ours[lo:hi] = rep.encode(chunk)
                tokens["ours"] += sum(lengths[lo:hi])
                flops_ours += forward_flops(config, n_body, lengths[lo:hi])
            else:
                agree.append(
                    (np.arange(lo, lo + k), baseline(rep.model, rep.tokenizer, chunk[:k], args.max_length))
                )
                tokens["base"] += sum(lengths[lo : lo + k])
            spent[step] += (time.perf_counter() - t, time.process_time() - cpu)
        so_far = {k: 1e3 * spent[k] / tokens[k] for k in spent}
        print(
            f"chunk {c + 1}/{args.chunks}: records {lo}-{hi}  matmul {rates[-1][1]:.0f} GFLOP/CPU-s  "
            f"ms/token so far (wall, CPU): ours {so_far['ours'][0]:.2f}, {so_far['ours'][1]:.2f}  "
            f"baseline {so_far['base'][0]:.2f}, {so_far['base'][1]:.2f}  load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    rss_ours = peak_rss_mib()
    n_base = sum(len(i) for i, _ in agree)
    mm = np.array(rates)
    per_token = {k: spent[k] / tokens[k] for k in spent}
    speed = per_token["base"] / per_token["ours"]
    ours_rate = flops_ours / spent["ours"] / 1e9
    eff = ours_rate / mm.mean(0)
    for i, unit in enumerate(("wall", "CPU")):
        print(f"--- per {unit} second")
        print(
            f"fp32 matmul 2048^2 (best of 3, once per chunk): mean {mm[:, i].mean():.1f} GFLOP/s "
            f"(range {mm[:, i].min():.1f}-{mm[:, i].max():.1f})"
        )
        print(
            f"ours:     {spent['ours'][i]:7.2f} s for {len(examples)} records  "
            f"{1e3 * per_token['ours'][i]:.3f} ms/token  {ours_rate[i]:.1f} GFLOP/s = "
            f"{100 * eff[i]:.0f}% of matmul"
        )
        print(
            f"baseline: {spent['base'][i]:7.2f} s for {n_base} records  "
            f"{1e3 * per_token['base'][i]:.3f} ms/token "
            f"(~{per_token['base'][i] * tokens['ours']:.0f} s for all {len(examples)})"
        )
        print(f"speed-up (per token): {speed[i]:.2f}x")
    idx = np.concatenate([i for i, _ in agree])
    ref = np.concatenate([b for _, b in agree])
    cos = np.sum(ours[idx] * ref, 1) / (np.linalg.norm(ours[idx], axis=1) * np.linalg.norm(ref, axis=1))
    print("---")
    print(f"agreement: max |ours - baseline| {np.abs(ours[idx] - ref).max():.2e}  min cosine {cos.min():.6f}")
    print(
        f"peak RSS: {rss_ours:.0f} MiB (after load {rss_load:.0f})  "
        f"load average at end: {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()

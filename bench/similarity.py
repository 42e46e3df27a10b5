"""Benchmark: ftguard's exact both-direction top-k against one-direction baselines.

    python bench/similarity.py [--n 20000] [--dim 384] [--k 5] [--block-size 4096] [--threads N] [--repeat 1]
                               [--screen auto|on|off]

Data: n x n random unit vectors (float32, seeded) for C and A.  Methods:
  ours       workers.screenings.similarity.compare(method="exact"): C->A top-k AND A->C max/argmax, in one
  pass, as a
             screening runs it (on a CPU with AVX512-BF16: bf16 screen, fp32 re-score; exact either way;
             --screen on/off forces it, e.g. at sizes too small for the automatic choice)
  ours-fp32  the same with screen=False: every tile in fp32
  st         sentence_transformers.util.semantic_search(C, A, top_k=k), default chunk sizes (C->A only)
  faiss      faiss.IndexFlatIP: index A, search C with k (C->A only)

Each method runs in a fresh subprocess, so its peak memory is its own: the child builds the data in chunks
(so building it leaves no peak above the data itself), warms the method up on a tiny input, resets the
kernel's high-water mark (/proc/self/clear_refs; falls back to getrusage's ru_maxrss where that is not
allowed) and reports peak RSS minus the RSS just before the timed runs.  Wall times exclude imports, data
generation and warm-up; with --repeat > 1 the best run counts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("ours", "ours-fp32", "st", "faiss")


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_mib(hwm_reset: bool) -> float:
    if hwm_reset:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _data(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 4096):
        chunk = X[s : s + 4096]
        rng.standard_normal(out=chunk, dtype=np.float32)
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
    return X


def _runner(method: str, k: int, block_size: int, screen: str, meta: dict):
    """A callable computing the method's top-k indices (C->A) for (C, A); ours also fill `meta`."""
    if method.startswith("ours"):
        from workers.screenings.similarity import compare

        def ours(C: np.ndarray, A: np.ndarray) -> np.ndarray:
            forced = {"auto": None, "on": True, "off": False}[screen]
            res = compare(C, A, k=k, block_size=block_size, screen=False if method == "ours-fp32" else forced)
            meta.update(res.meta)
            return res.c_topk_idx

        return ours
    if method == "st":
        import torch
        from sentence_transformers.util import semantic_search

        def st(C: np.ndarray, A: np.ndarray) -> np.ndarray:
            hits = semantic_search(torch.from_numpy(C), torch.from_numpy(A), top_k=k)
            return np.array([[h["corpus_id"] for h in row] for row in hits], dtype=np.int64)

        return st
    import faiss

    def flat(C: np.ndarray, A: np.ndarray) -> np.ndarray:
        index = faiss.IndexFlatIP(A.shape[1])
        index.add(A)
        return index.search(C, k)[1]

    return flat


def worker(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
        import faiss

        faiss.omp_set_num_threads(args.threads)
    C, A = _data(args.n, args.dim, 1), _data(args.n, args.dim, 2)
    meta: dict = {}
    run = _runner(args.worker, args.k, args.block_size, args.screen, meta)
    run(C[:64], A[:64])  # warm-up: library initialisation, thread pools
    hwm = _reset_peak()
    before = _rss_mib()
    times, idx = [], None
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        idx = run(C, A)
        times.append(time.perf_counter() - t0)
    peak = _peak_mib(hwm)
    assert idx is not None
    np.save(args.out, idx)
    print(
        json.dumps(
            {
                "method": args.worker,
                "times": times,
                "rss_before_mib": before,
                "peak_mib": peak,
                "peak_delta_mib": peak - before,
                "peak_source": "VmHWM (reset)" if hwm else "ru_maxrss",
                "threads": torch.get_num_threads(),
                "precision": meta.get("precision"),
                "fp32_fallback": meta.get("fp32_fallback"),
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--block-size", type=int, default=4096)
    p.add_argument("--threads", type=int, default=0, help="torch and faiss threads (0: library default)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--screen", choices=("auto", "on", "off"), default="auto", help="bf16 screen for ours")
    p.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return

    print(f"n_c = n_a = {args.n}, dim {args.dim}, k {args.k}, block {args.block_size}, cpus {os.cpu_count()}")
    results, idx = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for m in args.methods.split(","):
            out = Path(tmp) / f"{m}.npy"
            cmd = [sys.executable, __file__, "--worker", m, "--out", str(out)]
            for flag in ("n", "dim", "k", "block_size", "threads", "repeat", "screen"):
                cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if proc.returncode:
                print(f"{m}: failed\n{proc.stderr[-2000:]}")
                continue
            results[m] = json.loads(proc.stdout.strip().splitlines()[-1])
            idx[m] = np.load(out)

    head = f"{'method':10s} {'directions':10s} {'wall s':>8s} {'peak +MiB':>10s} {'rss MiB':>8s}"
    print(f"{head}  top-1 = ours")
    for m, r in results.items():
        agree = f"{np.mean(idx[m][:, 0] == idx['ours'][:, 0]):.4f}" if "ours" in idx else "-"
        dirs = "both" if m.startswith("ours") else "C->A"
        wall, extra, peak = min(r["times"]), r["peak_delta_mib"], r["peak_mib"]
        print(f"{m:10s} {dirs:10s} {wall:8.2f} {extra:10.0f} {peak:8.0f}  {agree}")
    base = [min(results[m]["times"]) for m in ("st", "faiss") if m in results]
    if "ours" in results and base:
        ratio = min(results["ours"]["times"]) / min(base)
        print(f"ours / fastest one-direction baseline = {ratio:.2f} (target <= 1.0)")
        print(f"ours: {results['ours']['precision']}, fp32 fallback {results['ours']['fp32_fallback']}")
    if "ours" in results and "ours-fp32" in results:
        gain = min(results["ours-fp32"]["times"]) / min(results["ours"]["times"])
        print(f"ours-fp32 / ours = {gain:.2f} (what the bf16 screen buys)")
    if results:
        r0 = next(iter(results.values()))
        print(f"peak memory: {r0['peak_source']} in a fresh subprocess per method, minus RSS before the runs")


if __name__ == "__main__":
    main()

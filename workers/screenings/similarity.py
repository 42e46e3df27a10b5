"""Cosine similarity between a customer dataset C and an alignment set A, in both directions.

The paper's signals need two things from the same C x A similarity matrix: for every customer example
its k nearest alignment examples (C -> A, top-k), and for every alignment example its best match among
the customer examples (A -> C, max + argmax; the selection score).  The exact path computes both in one
pass over blocks of the matrix, so the n_c x n_a matrix is never held: memory is bounded by one
block_size x block_size tile (plus A and the outputs) whatever the sizes.  On a CPU with native bf16 the
exact path runs its tiles in bf16 to pick candidates and re-scores them in fp32 (screened): the same
answer, about 2x faster at 20,000 x 20,000 (docs/benchmarks.md).  Above `faiss_threshold`
alignment rows, `method="auto"` switches to a faiss IVF index (approximate; its recall is measured and
reported).

Inputs are raw vectors.  With `center=True` the mean of A is subtracted from both sets before
L2-normalising: hidden states of LLMs share a large common component (anisotropy), so raw cosines of
unrelated texts are all high and bunched together; removing the common direction spreads them out and
makes thresholds meaningful.  A zero vector (or one equal to A's mean, when centring) has no direction:
its cosine with everything is defined as 0.

Ties are broken deterministically towards the lower index, in both directions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from workers.screenings.similarity_bf16 import SCREEN_MIN_PAIRS, cpu_bf16_sound, screened
from workers.screenings.similarity_tiles import (
    Progress,
    ShouldStop,
    Ticker,
    check_matrix,
    exact_fp32,
    exact_pass,
    mean_of,
    normalise_,
    to_tensor,
)

METHODS = ("exact", "auto", "faiss-flat", "faiss-ivf")
RECALL_SAMPLE = 256


@dataclass
class SimilarityResult:
    c_topk_sim: np.ndarray  # (n_c, k) float32, rows descending: cosine of customer i to its k nearest in A
    c_topk_idx: np.ndarray  # (n_c, k) int64 indices into A
    a_max_sim: np.ndarray  # (n_a,) float32: max cosine of alignment example j to any customer example
    a_argmax: np.ndarray  # (n_a,) int64 index into C
    meta: dict[str, Any] = field(default_factory=dict)


def compare(
    C: np.ndarray,
    A: np.ndarray,
    *,
    k: int = 5,
    block_size: int = 4096,
    center: bool = False,
    device: str = "cpu",
    method: str = "exact",
    faiss_threshold: int = 200_000,
    nprobe: int = 16,
    screen: bool | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> SimilarityResult:
    """Top-k alignment neighbours of every customer row, and the best customer match of every alignment row.

    `k` is clipped to n_a.  `device` ("cpu", "cuda", "cuda:1", "auto") only matters for the exact method;
    faiss here is CPU-only.  `screen` (exact method only): find candidates with bf16 tiles and re-score them
    in fp32 (same answer, see screened); None uses it on CPUs with native bf16 dot products when
    n_c * n_a >= SCREEN_MIN_PAIRS.
    `progress(fraction)` is called after each block and `should_stop()` before each,
    so a worker can report and cancel a long comparison (`Cancelled` is raised).
    """
    C = check_matrix(C, "C")
    A = check_matrix(A, "A")
    if C.shape[1] != A.shape[1]:
        raise ValueError(f"C and A differ in dimension: {C.shape[1]} != {A.shape[1]}")
    if k < 1:
        raise ValueError("k must be >= 1")
    if block_size < 1:
        raise ValueError("block_size must be >= 1")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if method == "auto":
        method = "exact" if A.shape[0] < faiss_threshold else "faiss-ivf"
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if screen and torch.device(device).type != "cpu":
        # cuBLAS may reduce bf16 products in bf16 (split-K), voiding pair_bound; fp32 GEMMs are fast there.
        raise ValueError("bf16 screening runs on CPU only")
    k = min(k, A.shape[0])
    mu = mean_of(A) if center else None
    tick = Ticker(progress, should_stop)
    meta: dict[str, Any] = {
        "method": method,
        "centered": center,
        "block_size": block_size,
        "k": k,
        "recall_at_k": None,
        "precision": "fp32",
    }

    with torch.inference_mode(), exact_fp32():
        if method == "exact":
            dev = torch.device(device)
            a_t = normalise_(to_tensor(A, dev), mu.to(dev) if mu is not None else None)
            if screen is None:
                screen = screens(C.shape[0], A.shape[0], str(dev))
            if screen:
                c_sim, c_idx, a_max, a_arg, fallback = screened(C, a_t, mu, k, block_size, tick)
                meta["precision"] = "bf16 screen, fp32 re-score"
                meta["fp32_fallback"] = fallback
            else:
                c_sim, c_idx, a_max, a_arg = exact_pass(C, a_t, mu, k, block_size, tick)
            meta["device"] = str(dev)
        else:
            c_sim, c_idx, a_max, a_arg, extra = _faiss(C, A, mu, k, block_size, method, nprobe, tick)
            meta["device"] = "cpu"
            meta.update(extra)
    tick.finish()
    return SimilarityResult(c_sim, c_idx, a_max, a_arg, meta)


def screens(n_c: int, n_a: int, device: str) -> bool:
    """Whether the exact method screens with bf16 tiles: on CPUs with native bf16 dot products, once the
    comparison is big enough to pay. A shard passes the whole set's answer, so every slice compares alike."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device).type == "cpu" and n_c * n_a >= SCREEN_MIN_PAIRS and cpu_bf16_sound()


def self_reference(
    A: np.ndarray, *, sample: int = 2000, seed: int = 0, center: bool = False, block_size: int = 4096
) -> dict[str, Any]:
    """Reference cosine levels inside the alignment set, to read C -> A scores against.

    `self_nn`: percentiles of each sampled row's nearest neighbour in A other than itself (leave-one-out; an
    exact duplicate of the row does count as a neighbour).  `random_pair_*`: cosine of random distinct pairs.
    """
    A = check_matrix(A, "A")
    n = A.shape[0]
    if n < 2:
        raise ValueError("self_reference needs at least 2 alignment rows")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    res = compare(A[rows], A, k=2, center=center, block_size=block_size)
    # Top-2 always holds the best row other than self: slot 1 if slot 0 is self, otherwise slot 0.
    is_self = res.c_topk_idx[:, 0] == rows
    nn = np.where(is_self, res.c_topk_sim[:, 1], res.c_topk_sim[:, 0]).astype(np.float64)

    n_pairs = 5000
    i = rng.integers(0, n, size=n_pairs)
    j = (i + rng.integers(1, n, size=n_pairs)) % n  # never equal to i
    mu = mean_of(A) if center else None
    with torch.inference_mode():
        xi = normalise_(to_tensor(A[i], torch.device("cpu")), mu)
        xj = normalise_(to_tensor(A[j], torch.device("cpu")), mu)
        pairs = (xi * xj).sum(dim=1).double().numpy()
    qs = np.percentile(nn, [10, 25, 50, 75, 90])
    return {
        "self_nn": {f"p{p}": float(q) for p, q in zip((10, 25, 50, 75, 90), qs, strict=True)},
        "random_pair_mean": float(pairs.mean()),
        "random_pair_p90": float(np.percentile(pairs, 90)),
        "sample_size": int(rows.size),
        "pairs": n_pairs,
        "centered": center,
    }


# ---------------------------------------------------------------------------------------------------- helpers
def _nlist(n: int) -> int:
    """IVF list count ~ sqrt(n), but no more than n/39 (faiss wants >= 39 training points per centroid)."""
    return max(1, min(round(math.sqrt(n)), n // 39))


def _faiss(
    C: np.ndarray,
    A: np.ndarray,
    mu: torch.Tensor | None,
    k: int,
    bs: int,
    method: str,
    nprobe: int,
    tick: Ticker,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Both directions with faiss: index A and search C (top-k), index C and search A (top-1)."""
    import faiss

    cpu = torch.device("cpu")
    cn = normalise_(to_tensor(C, cpu), mu).numpy()
    an = normalise_(to_tensor(A, cpu), mu).numpy()
    d = cn.shape[1]
    extra: dict[str, Any] = {}

    def build(x: np.ndarray) -> Any:
        if method == "faiss-flat":
            flat = faiss.IndexFlatIP(d)
            flat.add(x)
            return flat
        nlist = _nlist(x.shape[0])
        quantizer = faiss.IndexFlatIP(d)  # the faiss wrapper keeps it alive with the index
        ivf = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.train(x)
        ivf.nprobe = min(nprobe, nlist)
        ivf.add(x)
        return ivf

    def search(index: Any, q: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
        sims = np.empty((q.shape[0], kk), dtype=np.float32)
        idx = np.empty((q.shape[0], kk), dtype=np.int64)
        for s in range(0, q.shape[0], bs):
            tick.check()
            sims[s : s + bs], idx[s : s + bs] = index.search(q[s : s + bs], kk)
            tick.step()
        return sims, idx

    tick.plan(math.ceil(cn.shape[0] / bs) + math.ceil(an.shape[0] / bs))
    c_sim, c_idx = search(build(an), cn, k)
    a_sim, a_idx = search(build(cn), an, 1)
    a_max, a_arg = a_sim[:, 0].copy(), a_idx[:, 0].copy()

    if method == "faiss-ivf":
        a_t, c_t = torch.from_numpy(an), torch.from_numpy(cn)
        # IVF may find fewer than k results when the probed lists are small: redo those rows exactly.
        miss = np.flatnonzero((c_idx < 0).any(axis=1))
        if miss.size:
            c_sim[miss], c_idx[miss], _, _ = exact_pass(cn[miss], a_t, None, k, bs, Ticker(None, None))
        miss_a = np.flatnonzero(a_arg < 0)
        if miss_a.size:
            s1, i1, _, _ = exact_pass(an[miss_a], c_t, None, 1, bs, Ticker(None, None))
            a_max[miss_a], a_arg[miss_a] = s1[:, 0], i1[:, 0]
        rng = np.random.default_rng(0)
        rows = np.sort(rng.choice(cn.shape[0], size=min(RECALL_SAMPLE, cn.shape[0]), replace=False))
        _, ex_idx, _, _ = exact_pass(cn[rows], a_t, None, k, bs, Ticker(None, None))
        hits = sum(len(set(ex_idx[r]) & set(c_idx[rows[r]])) for r in range(rows.size))
        extra["recall_at_k"] = hits / (rows.size * k)
        arows = np.sort(rng.choice(an.shape[0], size=min(RECALL_SAMPLE, an.shape[0]), replace=False))
        _, ex_a, _, _ = exact_pass(an[arows], c_t, None, 1, bs, Ticker(None, None))
        extra["a_recall_at_1"] = float(np.mean(ex_a[:, 0] == a_arg[arows]))
        extra["nprobe"] = nprobe
    return c_sim, c_idx, a_max, a_arg, extra

"""Cosine similarity between a customer dataset C and an alignment set A, in both directions.

The paper's signals need two things from the same C x A similarity matrix: for every customer example
its k nearest alignment examples (C -> A, top-k), and for every alignment example its best match among
the customer examples (A -> C, max + argmax; the selection score).  The exact path computes both in one
pass over blocks of the matrix, so the n_c x n_a matrix is never held: memory is bounded by one
block_size x block_size tile (plus A and the outputs) whatever the sizes.  Above `faiss_threshold`
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

Progress = Callable[[float], None]
ShouldStop = Callable[[], bool]

METHODS = ("exact", "auto", "faiss-flat", "faiss-ivf")
RECALL_SAMPLE = 256
# Rows per chunk when locating a column's argmax: a max over dim 0 with indices is ~10x slower in torch
# than one without, so chunk maxima are found first and the argmax is searched in the winning chunk only.
_ARGMAX_CHUNK = 32
_TOPK_CHUNK = 16  # elements per chunk when narrowing top-k candidates (see _block_topk)


@dataclass
class SimilarityResult:
    c_topk_sim: np.ndarray  # (n_c, k) float32, rows descending: cosine of customer i to its k nearest in A
    c_topk_idx: np.ndarray  # (n_c, k) int64 indices into A
    a_max_sim: np.ndarray  # (n_a,) float32: max cosine of alignment example j to any customer example
    a_argmax: np.ndarray  # (n_a,) int64 index into C
    meta: dict[str, Any] = field(default_factory=dict)


class Cancelled(Exception):
    """Raised between blocks when `should_stop()` returns True."""


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
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> SimilarityResult:
    """Top-k alignment neighbours of every customer row, and the best customer match of every alignment row.

    `k` is clipped to n_a.  `device` ("cpu", "cuda", "cuda:1", "auto") only matters for the exact method;
    faiss here is CPU-only.  `progress(fraction)` is called after each block and `should_stop()` before each,
    so a worker can report and cancel a long comparison (`Cancelled` is raised).
    """
    C = _check_matrix(C, "C")
    A = _check_matrix(A, "A")
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
    k = min(k, A.shape[0])
    mu = _mean(A) if center else None
    tick = _Ticker(progress, should_stop)
    meta: dict[str, Any] = {
        "method": method,
        "centered": center,
        "block_size": block_size,
        "k": k,
        "recall_at_k": None,
    }

    with torch.inference_mode(), _exact_fp32():
        if method == "exact":
            dev = torch.device(device)
            a_t = _normalise_(_to_tensor(A, dev), mu.to(dev) if mu is not None else None)
            c_sim, c_idx, a_max, a_arg = _exact(C, a_t, mu, k, block_size, tick)
            meta["device"] = str(dev)
        else:
            c_sim, c_idx, a_max, a_arg, extra = _faiss(C, A, mu, k, block_size, method, nprobe, tick)
            meta["device"] = "cpu"
            meta.update(extra)
    tick.finish()
    return SimilarityResult(c_sim, c_idx, a_max, a_arg, meta)


def self_reference(
    A: np.ndarray, *, sample: int = 2000, seed: int = 0, center: bool = False, block_size: int = 4096
) -> dict[str, Any]:
    """Reference cosine levels inside the alignment set, to read C -> A scores against.

    `self_nn`: percentiles of each sampled row's nearest neighbour in A other than itself (leave-one-out; an
    exact duplicate of the row does count as a neighbour).  `random_pair_*`: cosine of random distinct pairs.
    """
    A = _check_matrix(A, "A")
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
    mu = _mean(A) if center else None
    with torch.inference_mode():
        xi = _normalise_(_to_tensor(A[i], torch.device("cpu")), mu)
        xj = _normalise_(_to_tensor(A[j], torch.device("cpu")), mu)
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


class _Ticker:
    """Progress over a known number of steps, with the cancel check in front of each step."""

    def __init__(self, progress: Progress | None, should_stop: ShouldStop | None) -> None:
        self.progress, self.should_stop = progress, should_stop
        self.total, self.done = 1, 0
        self.reported = 0.0

    def plan(self, steps: int) -> None:
        self.total = max(1, steps)

    def check(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Cancelled("similarity computation cancelled")

    def step(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.reported = min(1.0, self.done / self.total)
            self.progress(self.reported)

    def finish(self) -> None:
        if self.progress is not None and self.reported < 1.0:
            self.reported = 1.0
            self.progress(1.0)


def _check_matrix(X: np.ndarray, name: str) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.floating):
        raise ValueError(f"{name} must hold floats, got {X.dtype}")
    return X


def _mean(A: np.ndarray) -> torch.Tensor:
    """A's mean vector, accumulated in float64 (float32 sums over 1e6 rows lose digits)."""
    mu = np.zeros(A.shape[1], dtype=np.float64)
    for s in range(0, A.shape[0], 65536):
        mu += A[s : s + 65536].sum(axis=0, dtype=np.float64)
    return torch.from_numpy((mu / A.shape[0]).astype(np.float32))


def _to_tensor(X: np.ndarray, device: torch.device) -> torch.Tensor:
    """A float32 copy on `device` (always a copy: normalisation is in place and must not touch the caller)."""
    return torch.from_numpy(np.ascontiguousarray(X)).to(device=device, dtype=torch.float32, copy=True)


def _normalise_(x: torch.Tensor, mu: torch.Tensor | None) -> torch.Tensor:
    """Centre (optionally) and L2-normalise rows in place; zero rows stay zero instead of becoming NaN.

    A NaN or inf anywhere in a row makes its norm non-finite, so checking norms is the (cheap) input check.
    """
    if mu is not None:
        x -= mu
    norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    if not bool(torch.isfinite(norms).all()):
        raise ValueError("vectors contain NaN or infinite values (or overflow float32 when squared)")
    x /= torch.where(norms > 0, norms, torch.ones_like(norms))
    return x


@contextmanager
def _exact_fp32() -> Iterator[None]:
    """Force IEEE float32 matmuls (no TF32/bf16 shortcuts) for the duration, if they were enabled globally."""
    old = torch.get_float32_matmul_precision()
    if old == "highest":
        yield
        return
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


def _ordered(v: torch.Tensor, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reorder each row by (value descending, index ascending)."""
    o = torch.argsort(i, dim=1)
    v, i = v.gather(1, o), i.gather(1, o)
    o = torch.sort(v, dim=1, descending=True, stable=True).indices
    return v.gather(1, o), i.gather(1, o)


def _block_topk(s: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of each row of a tile, ties to the lower column, sorted by (value desc, index asc).

    torch.topk over whole 4096-wide rows costs about half the matmul, so the candidates are narrowed first:
    columns are split into interleaved chunks (j, j+w, j+2w, ...; a max over the middle axis vectorises,
    one over a short inner axis does not) and the top k+1 values of a row must lie in the k+1 chunks with
    the largest maxima (any other element is <= the smallest of those maxima).  topk picks arbitrarily among
    equal values, so it is asked for k+1: where the (k+1)-th equals the k-th the selection is ambiguous, and
    only those rows are redone with a stable full sort.
    """
    rows, cols = s.shape
    if cols <= k:
        srt = torch.sort(s, dim=1, descending=True, stable=True)
        return srt.values, srt.indices
    m = k + 1
    w = cols // _TOPK_CHUNK  # number of chunks
    if w >= 4 * m:
        head = w * _TOPK_CHUNK
        chunks = s[:, :head].view(rows, _TOPK_CHUNK, w)  # chunk j = columns j + t*w
        ci = torch.topk(chunks.amax(dim=1), m, dim=1, sorted=False).indices  # (rows, m)
        cand = chunks.gather(2, ci.unsqueeze(1).expand(rows, _TOPK_CHUNK, m)).view(rows, _TOPK_CHUNK * m)
        cand_idx = torch.arange(_TOPK_CHUNK, device=s.device).view(1, -1, 1) * w + ci.unsqueeze(1)
        cand_idx = cand_idx.view(rows, _TOPK_CHUNK * m)
        if head < cols:  # the ragged tail is small: all of it is a candidate
            tail = torch.arange(head, cols, device=s.device).expand(rows, cols - head)
            cand, cand_idx = torch.cat([cand, s[:, head:]], dim=1), torch.cat([cand_idx, tail], dim=1)
        v, p = torch.topk(cand, m, dim=1, sorted=True)
        i = cand_idx.gather(1, p)
    else:
        v, i = torch.topk(s, m, dim=1, sorted=True)
    tied = v[:, k - 1] == v[:, k]
    v, i = _ordered(v[:, :k], i[:, :k])
    if bool(tied.any()):
        redo = tied.nonzero().squeeze(1)
        srt = torch.sort(s[redo], dim=1, descending=True, stable=True)
        v[redo], i[redo] = srt.values[:, :k], srt.indices[:, :k]
    return v, i


def _col_max(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Max and first argmax of each column of a tile, via chunk maxima (see _ARGMAX_CHUNK)."""
    rows, cols = s.shape
    head = rows - rows % _ARGMAX_CHUNK
    if head == 0:
        m, a = s.max(dim=0)
        return m, a
    v = s[:head].view(head // _ARGMAX_CHUNK, _ARGMAX_CHUNK, cols)
    chunk_max = v.amax(dim=1)
    ci = chunk_max.argmax(dim=0)  # first chunk holding the maximum
    m = chunk_max.gather(0, ci.unsqueeze(0)).squeeze(0)
    inside = v[ci, :, torch.arange(cols, device=s.device)].argmax(dim=1)  # (cols, chunk) -> first row
    a = ci * _ARGMAX_CHUNK + inside
    if head < rows:
        tm, ta = s[head:].max(dim=0)
        later = tm > m  # strict: equal values keep the earlier row
        m = torch.where(later, tm, m)
        a = torch.where(later, ta + head, a)
    return m, a


def _exact(
    C: np.ndarray, a_t: torch.Tensor, mu: torch.Tensor | None, k: int, bs: int, tick: _Ticker
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One pass over C x A tiles: running top-k per C row and running max/argmax per A column.

    `a_t` is A already normalised, on the target device; C is normalised block by block as it is streamed.
    """
    dev = a_t.device
    n_c, n_a = C.shape[0], a_t.shape[0]
    mu_d = mu.to(dev) if mu is not None else None
    c_sim = np.empty((n_c, k), dtype=np.float32)
    c_idx = np.empty((n_c, k), dtype=np.int64)
    a_max = torch.full((n_a,), -math.inf, dtype=torch.float32, device=dev)
    a_arg = torch.zeros(n_a, dtype=torch.int64, device=dev)
    # One reusable tile buffer: a fresh 64 MiB tensor per tile costs page faults on every block.
    buf = torch.empty(min(bs, n_c) * min(bs, n_a), dtype=torch.float32, device=dev)
    tick.plan(math.ceil(n_c / bs) * math.ceil(n_a / bs))
    for i0 in range(0, n_c, bs):
        cb = _normalise_(_to_tensor(C[i0 : i0 + bs], dev), mu_d)
        top_v: torch.Tensor | None = None
        top_i: torch.Tensor | None = None
        for j0 in range(0, n_a, bs):
            tick.check()
            ab = a_t[j0 : j0 + bs]
            s = buf[: cb.shape[0] * ab.shape[0]].view(cb.shape[0], ab.shape[0])
            torch.mm(cb, ab.T, out=s)
            v, i = _block_topk(s, k)
            i += j0
            if top_v is None or top_i is None:
                top_v, top_i = v, i
            else:
                # Earlier blocks hold lower indices and both halves are (value desc, index asc), so a stable
                # sort of the concatenation keeps ties on the lower index.
                cv, ci = torch.cat([top_v, v], dim=1), torch.cat([top_i, i], dim=1)
                o = torch.sort(cv, dim=1, descending=True, stable=True).indices[:, :k]
                top_v, top_i = cv.gather(1, o), ci.gather(1, o)
            m, a = _col_max(s)
            seg_max, seg_arg = a_max[j0 : j0 + bs], a_arg[j0 : j0 + bs]
            better = m > seg_max  # strict: earlier C blocks (lower indices) win ties
            seg_max.copy_(torch.where(better, m, seg_max))
            seg_arg.copy_(torch.where(better, a + i0, seg_arg))
            tick.step()
        assert top_v is not None and top_i is not None
        c_sim[i0 : i0 + bs] = top_v.cpu().numpy()
        c_idx[i0 : i0 + bs] = top_i.cpu().numpy()
    return c_sim, c_idx, a_max.cpu().numpy(), a_arg.cpu().numpy()


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
    tick: _Ticker,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Both directions with faiss: index A and search C (top-k), index C and search A (top-1)."""
    import faiss

    cpu = torch.device("cpu")
    cn = _normalise_(_to_tensor(C, cpu), mu).numpy()
    an = _normalise_(_to_tensor(A, cpu), mu).numpy()
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
            c_sim[miss], c_idx[miss], _, _ = _exact(cn[miss], a_t, None, k, bs, _Ticker(None, None))
        miss_a = np.flatnonzero(a_arg < 0)
        if miss_a.size:
            s1, i1, _, _ = _exact(an[miss_a], c_t, None, 1, bs, _Ticker(None, None))
            a_max[miss_a], a_arg[miss_a] = s1[:, 0], i1[:, 0]
        rng = np.random.default_rng(0)
        rows = np.sort(rng.choice(cn.shape[0], size=min(RECALL_SAMPLE, cn.shape[0]), replace=False))
        _, ex_idx, _, _ = _exact(cn[rows], a_t, None, k, bs, _Ticker(None, None))
        hits = sum(len(set(ex_idx[r]) & set(c_idx[rows[r]])) for r in range(rows.size))
        extra["recall_at_k"] = hits / (rows.size * k)
        arows = np.sort(rng.choice(an.shape[0], size=min(RECALL_SAMPLE, an.shape[0]), replace=False))
        _, ex_a, _, _ = _exact(an[arows], c_t, None, 1, bs, _Ticker(None, None))
        extra["a_recall_at_1"] = float(np.mean(ex_a[:, 0] == a_arg[arows]))
        extra["nprobe"] = nprobe
    return c_sim, c_idx, a_max, a_arg, extra

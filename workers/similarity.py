"""Cosine similarity between a customer dataset C and an alignment set A, in both directions.

The paper's signals need two things from the same C x A similarity matrix: for every customer example
its k nearest alignment examples (C -> A, top-k), and for every alignment example its best match among
the customer examples (A -> C, max + argmax; the selection score).  The exact path computes both in one
pass over blocks of the matrix, so the n_c x n_a matrix is never held: memory is bounded by one
block_size x block_size tile (plus A and the outputs) whatever the sizes.  On a CPU with native bf16 the
exact path runs its tiles in bf16 to pick candidates and re-scores them in fp32 (_screened): the same
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

import functools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from app.core.errors import Cancelled

Progress = Callable[[float], None]
ShouldStop = Callable[[], bool]

METHODS = ("exact", "auto", "faiss-flat", "faiss-ivf")
RECALL_SAMPLE = 256
# Rows per chunk when locating a column's argmax: a max over dim 0 with indices is ~10x slower in torch
# than one without, so chunk maxima are found first and the argmax is searched in the winning chunk only.
_ARGMAX_CHUNK = 32
_TOPK_CHUNK = 16  # elements per chunk when narrowing top-k candidates (see _block_topk)
# bf16 screening (see _screened): candidates kept per customer row beyond k, row chunks kept per alignment
# column, and the rows in one such chunk.  Rows or columns whose error band holds more fall back to fp32.
_SCREEN_EXTRA = 16
_SCREEN_TILE_EXTRA = 4  # ... of which one tile may nominate k + this (topk's cost grows with its k)
_SCREEN_CHUNKS = 8
_SCREEN_ROWS = 32
_SCREEN_MIN_PAIRS = 2**24  # below ~17M pairs (about one tile) the screen's fixed costs outweigh its speed
_SCREEN_GIVE_UP = 0.25  # share of a block's rows falling back above which the rest of C goes straight to fp32
_BF16_ROUND = 2**-8 / (1 - 2**-8)  # |bf16(x) - x| <= this * |bf16(x)| (round to nearest, 8-bit significand)


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
    in fp32 (same answer, see _screened); None uses it on CPUs with native bf16 dot products when
    n_c * n_a >= _SCREEN_MIN_PAIRS.
    `progress(fraction)` is called after each block and `should_stop()` before each,
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
    if screen and torch.device(device).type != "cpu":
        # cuBLAS may reduce bf16 products in bf16 (split-K), voiding _pair_bound; fp32 GEMMs are fast there.
        raise ValueError("bf16 screening runs on CPU only")
    k = min(k, A.shape[0])
    mu = _mean(A) if center else None
    tick = _Ticker(progress, should_stop)
    meta: dict[str, Any] = {
        "method": method,
        "centered": center,
        "block_size": block_size,
        "k": k,
        "recall_at_k": None,
        "precision": "fp32",
    }

    with torch.inference_mode(), _exact_fp32():
        if method == "exact":
            dev = torch.device(device)
            a_t = _normalise_(_to_tensor(A, dev), mu.to(dev) if mu is not None else None)
            if screen is None:
                screen = screens(C.shape[0], A.shape[0], str(dev))
            if screen:
                c_sim, c_idx, a_max, a_arg, fallback = _screened(C, a_t, mu, k, block_size, tick)
                meta["precision"] = "bf16 screen, fp32 re-score"
                meta["fp32_fallback"] = fallback
            else:
                c_sim, c_idx, a_max, a_arg = _exact(C, a_t, mu, k, block_size, tick)
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
    return torch.device(device).type == "cpu" and n_c * n_a >= _SCREEN_MIN_PAIRS and cpu_bf16_sound()


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
        self.total, self.done, self.planned = 1, 0, False
        self.reported = 0.0

    def plan(self, steps: int) -> None:
        """Set the step count, once: a method that hands the rest of its work to another keeps its plan."""
        if not self.planned:
            self.total, self.planned = max(1, steps), True

    def check(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Cancelled("similarity computation cancelled")

    def redo(self, steps: int) -> None:
        """`steps` already taken will be taken again: the total grows; the reported fraction never falls."""
        self.total += steps

    def step(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.reported = max(self.reported, min(1.0, self.done / self.total))
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


# -------------------------------------------------------------------------------------------- bf16 screening


@functools.cache
def cpu_bf16_sound() -> bool:
    """Does this CPU multiply bf16 natively (AVX512-BF16 or AMX), accumulating in fp32?  Checked once.

    Without native support oneDNN emulates bf16 and is slower than fp32.  The check catches a kernel that
    accumulates in bf16 (a row of equal components drifts by far more than _pair_bound allows) or truncates.
    """
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, so looked up defensively
    native = any(getattr(torch.cpu, f, lambda: False)() for f in probes)
    if not native:
        return False
    with torch.inference_mode():
        x = torch.randn(64, 384, generator=torch.Generator().manual_seed(0))
        x[0] = 1.0
        xb = (x / torch.linalg.vector_norm(x, dim=1, keepdim=True)).to(torch.bfloat16)
        got = torch.mm(xb, xb.T).double()
        want = xb.double() @ xb.double().T
        return bool(((got - want).abs() <= _BF16_ROUND * got.abs() + _pair_bound(0.0, 0.0, 384)).all())


def _pair_bound(dx: Any, dy: Any, d: int) -> Any:
    """Bound on |x~.y~ - x.y| for unit x, y with bf16 roundings x~, y~; dx = ||x - x~||, dy = ||y - y~||.

    x~.y~ - x.y = (x~ - x).y~ + x.(y~ - y), so by Cauchy-Schwarz it is at most dx (1 + dy) + dy; fp32
    accumulation of d products adds gamma_d ||x~|| ||y~||; 1e-6 covers the fp32 norms of x and y.  The bf16
    rounding of the product itself is relative to its value (_BF16_ROUND) and is added by the caller.
    """
    gamma = d * 2**-24 / (1 - d * 2**-24)
    return dx + dy + dx * dy + gamma * (1 + dx) * (1 + dy) + 1e-6


def _separated(low: torch.Tensor, high: torch.Tensor, base: Any) -> torch.Tensor:
    """True where every true score behind bf16 score `low` is below every true score behind `high`."""
    low = low.clamp(min=-2.0)  # -inf stands for "nothing there"
    return low + base + _BF16_ROUND * low.abs() < high - base - _BF16_ROUND * high.abs()


def _bf16_split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x rounded to bf16, and each row's rounding error ||x - bf16(x)|| (the difference is exact in fp32)."""
    xb = x.to(torch.bfloat16)
    err = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    for s in range(0, x.shape[0], 4096):
        err[s : s + 4096] = torch.linalg.vector_norm(x[s : s + 4096] - xb[s : s + 4096].float(), dim=1)
    return xb, err * (1 + x.shape[1] * 2**-23)  # the fp32 norm itself errs by up to ~d/2 ulps


def _chunk_max(s: torch.Tensor) -> torch.Tensor:
    """Max of each column over consecutive chunks of _SCREEN_ROWS rows (the last may be short)."""
    rows, cols = s.shape
    head = rows - rows % _SCREEN_ROWS
    parts = [s[:head].view(head // _SCREEN_ROWS, _SCREEN_ROWS, cols).amax(dim=1)] if head else []
    if head < rows:
        parts.append(s[head:].amax(dim=0, keepdim=True))
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def _screened(
    C: np.ndarray, a_t: torch.Tensor, mu: torch.Tensor | None, k: int, bs: int, tick: _Ticker
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """_exact's answer at bf16 speed: bf16 tiles nominate candidates, fp32 re-scores them.

    A bf16 matmul runs ~4x faster than fp32 on CPUs with AVX512-BF16, but rounds inputs to 8 significant
    bits.  Its error is bounded per pair (_pair_bound, from the measured rounding error of each row), so it
    can only choose candidates: each customer row keeps its top k + _SCREEN_EXTRA bf16 scores, each
    alignment column the _SCREEN_CHUNKS chunks of _SCREEN_ROWS customer rows with the highest bf16 maxima.
    After the pass the candidates are re-scored in fp32, and the answer is the exact one wherever the bound
    proves that nothing left out could reach the top (_separated, strict, so no tie can be left out either).
    Rows and columns where it cannot prove that (near-duplicates crowding the top) are redone by _exact.
    """
    dev = a_t.device
    n_c, (n_a, d) = C.shape[0], a_t.shape
    mu_d = mu.to(dev) if mu is not None else None
    a_b, da = _bf16_split(a_t)
    da_max = float(da.max())
    m_r = min(k + _SCREEN_EXTRA, n_a)
    m_t = min(k + _SCREEN_TILE_EXTRA, m_r)
    ninf = -math.inf
    c_sim = np.empty((n_c, k), dtype=np.float32)
    c_idx = np.empty((n_c, k), dtype=np.int64)
    col_v = torch.full((n_a, _SCREEN_CHUNKS), ninf, device=dev)
    col_q = torch.full((n_a, _SCREEN_CHUNKS), -1, dtype=torch.int64, device=dev)  # chunk start rows
    dc_max, redo_rows = 0.0, []
    buf = torch.empty(min(bs, n_c) * min(bs, n_a), dtype=torch.bfloat16, device=dev)
    tick.plan(math.ceil(n_c / bs) * math.ceil(n_a / bs))
    for i0 in range(0, n_c, bs):
        col_kept = col_v.clone(), col_q.clone()  # to forget this block if it hands over to fp32
        cb = _normalise_(_to_tensor(C[i0 : i0 + bs], dev), mu_d)
        cb_b, dc = _bf16_split(cb)
        dc_max = max(dc_max, float(dc.max()))
        rows = cb.shape[0]
        starts = torch.arange(i0, i0 + rows, _SCREEN_ROWS, device=dev)
        row_v = [torch.full((rows, m_r), ninf, device=dev)]  # running top m_r, then tiles not yet merged in
        row_i = [torch.full((rows, m_r), -1, dtype=torch.int64, device=dev)]
        cut = torch.full((rows,), ninf, device=dev)  # highest bf16 score a tile left out
        for j0 in range(0, n_a, bs):
            tick.check()
            ab = a_b[j0 : j0 + bs]
            cols = ab.shape[0]
            s = buf[: rows * cols].view(rows, cols)
            torch.mm(cb_b, ab.T, out=s)
            v, i = torch.topk(s, min(m_t, cols), dim=1, sorted=False)
            if m_t < cols:
                cut = torch.maximum(cut, v.amin(dim=1).float())
            row_v.append(v.float())
            row_i.append(i + j0)
            if len(row_v) > 8 or j0 + bs >= n_a:  # merging every tile costs a topk each
                v, p = torch.topk(torch.cat(row_v, dim=1), m_r, dim=1, sorted=False)
                row_v, row_i = [v], [torch.cat(row_i, dim=1).gather(1, p)]
            v = torch.cat([col_v[j0 : j0 + cols], _chunk_max(s).T.float()], dim=1)
            q = torch.cat([col_q[j0 : j0 + cols], starts.expand(cols, -1)], dim=1)
            col_v[j0 : j0 + cols], p = torch.topk(v, _SCREEN_CHUNKS, dim=1, sorted=False)
            col_q[j0 : j0 + cols] = q.gather(1, p)
            tick.step()
        v, o = torch.sort(row_v[0], dim=1, descending=True)
        i = row_i[0].gather(1, o)
        bound = _pair_bound(dc, da_max, d)
        # Candidates that could still tie or beat the k-th form a prefix of each row; the rest are out.
        live = (~_separated(v, v[:, k - 1 : k], bound.unsqueeze(1))).sum(dim=1)
        # Left out: whatever a tile did not nominate (<= cut) or the merges dropped (<= v[:, -1]).
        out = torch.maximum(cut, v[:, -1]) if m_r < n_a else cut
        ok = _separated(out, v[:, k - 1], bound)
        if int((~ok).sum()) > _SCREEN_GIVE_UP * rows:  # bunched scores (uncentred hidden states, say)
            col_v, col_q = col_kept  # this block and the rest go to fp32, rows and columns in one pass
            tick.redo(math.ceil(n_a / bs))
            stop = i0
            break
        live[~ok] = k  # _exact redoes these rows
        exact = torch.full((rows, m_r), ninf, device=dev)
        for r0 in range(0, rows, 256):
            width = int(live[r0 : r0 + 256].max())
            ii = i[r0 : r0 + 256, :width]
            cand = a_t.index_select(0, ii.reshape(-1)).view(*ii.shape, d)  # 8x faster than a_t[ii]
            exact[r0 : r0 + 256, :width] = torch.bmm(cand, cb[r0 : r0 + 256].unsqueeze(2)).squeeze(2)
        v, i = _ordered(exact, i)
        c_sim[i0 : i0 + rows] = v[:, :k].cpu().numpy()
        c_idx[i0 : i0 + rows] = i[:, :k].cpu().numpy()
        redo_rows.append((~ok).nonzero().squeeze(1).cpu().numpy() + i0)
    else:
        stop = n_c
    if stop == 0:
        c_sim, c_idx, a_max, a_arg = _exact(C, a_t, mu, k, bs, tick)
        return c_sim, c_idx, a_max, a_arg, {"rows": 0, "columns": 0, "unscreened_rows": n_c}

    redo = np.concatenate(redo_rows) if redo_rows else np.empty(0, dtype=np.int64)
    if redo.size:
        c_sim[redo], c_idx[redo], _, _ = _exact(C[redo], a_t, mu, k, bs, _Ticker(None, None))

    col_v, o = torch.sort(col_v, dim=1, descending=True)
    col_q = col_q.gather(1, o)
    base = _pair_bound(dc_max, da, d)
    ok_c = _separated(col_v[:, -1], col_v[:, 0], base)
    live_c = ~_separated(col_v, col_v[:, :1], base.unsqueeze(1)) & ok_c.unsqueeze(1)  # could hold the max
    a_max, a_arg = _rescore_columns(C[:stop], a_t, mu_d, torch.where(live_c, col_q, -1), bs)
    redo_c = (~ok_c).nonzero().squeeze(1)
    if redo_c.numel():
        _, _, top, arg = _exact(C[:stop], a_t[redo_c], mu, 1, bs, _Ticker(None, None))
        a_max[redo_c.cpu().numpy()], a_arg[redo_c.cpu().numpy()] = top, arg
    if stop < n_c:
        c_sim[stop:], c_idx[stop:], top, arg = _exact(C[stop:], a_t, mu, k, bs, tick)
        later = top > a_max  # strict: the screened rows come first
        a_max, a_arg = np.where(later, top, a_max), np.where(later, arg + stop, a_arg)
    fallback = {"rows": int(redo.size), "columns": int(redo_c.numel()), "unscreened_rows": n_c - stop}
    return c_sim, c_idx, a_max, a_arg, fallback


def _rescore_columns(
    C: np.ndarray,
    a_t: torch.Tensor,
    mu_d: torch.Tensor | None,
    col_q: torch.Tensor,
    bs: int,
) -> tuple[np.ndarray, np.ndarray]:
    """fp32 max/argmax of each alignment column over the customer rows of its candidate chunks (col_q >= 0).

    Work is grouped by chunk: each chunk of C is read and normalised once, against all the columns naming it.
    """
    dev = a_t.device
    n_c, (n_a, m) = C.shape[0], col_q.shape
    best_v = torch.full((n_a * m,), -math.inf, device=dev)
    best_r = torch.full((n_a * m,), -1, dtype=torch.int64, device=dev)
    flat = col_q.flatten()
    slots = (flat >= 0).nonzero().squeeze(1)
    slots = slots[torch.argsort(flat[slots], stable=True)]
    starts, counts = torch.unique_consecutive(flat[slots], return_counts=True)
    pos = 0
    for q0, cnt in zip(starts.tolist(), counts.tolist(), strict=True):
        sl = slots[pos : pos + cnt]
        pos += cnt
        end = min(q0 + _SCREEN_ROWS, (q0 // bs + 1) * bs, n_c)  # chunks never cross a block
        cc = _normalise_(_to_tensor(C[q0:end], dev), mu_d)
        s = torch.mm(cc, a_t.index_select(0, sl // m).T)  # (chunk rows, columns naming the chunk)
        r = s.argmax(dim=0)  # first maximal row
        best_v[sl] = s.gather(0, r.unsqueeze(0)).squeeze(0)
        best_r[sl] = r + q0
    v, r = _ordered(best_v.view(n_a, m), best_r.view(n_a, m))
    return v[:, 0].cpu().numpy(), r[:, 0].cpu().numpy()


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

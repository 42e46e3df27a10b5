"""The exact similarity pass's tile kernels (workers.screenings.similarity): one C x A block at a time, a
running top-k per customer row and a running max/argmax per alignment column, with deterministic ties towards
the lower index. The bf16 screen (workers.screenings.similarity_bf16) uses the same kernels to re-score its
candidates."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch

from app.core.errors import Cancelled

Progress = Callable[[float], None]
ShouldStop = Callable[[], bool]

# Rows per chunk when locating a column's argmax: a max over dim 0 with indices is ~10x slower in torch
# than one without, so chunk maxima are found first and the argmax is searched in the winning chunk only.
ARGMAX_CHUNK = 32
TOPK_CHUNK = 16  # elements per chunk when narrowing top-k candidates (see block_topk)


class Ticker:
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


def check_matrix(X: np.ndarray, name: str) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.floating):
        raise ValueError(f"{name} must hold floats, got {X.dtype}")
    return X


def mean_of(A: np.ndarray) -> torch.Tensor:
    """A's mean vector, accumulated in float64 (float32 sums over 1e6 rows lose digits)."""
    mu = np.zeros(A.shape[1], dtype=np.float64)
    for s in range(0, A.shape[0], 65536):
        mu += A[s : s + 65536].sum(axis=0, dtype=np.float64)
    return torch.from_numpy((mu / A.shape[0]).astype(np.float32))


def to_tensor(X: np.ndarray, device: torch.device) -> torch.Tensor:
    """A float32 copy on `device` (always a copy: normalisation is in place and must not touch the caller)."""
    return torch.from_numpy(np.ascontiguousarray(X)).to(device=device, dtype=torch.float32, copy=True)


def normalise_(x: torch.Tensor, mu: torch.Tensor | None) -> torch.Tensor:
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
def exact_fp32() -> Iterator[None]:
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


def ordered(v: torch.Tensor, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reorder each row by (value descending, index ascending)."""
    o = torch.argsort(i, dim=1)
    v, i = v.gather(1, o), i.gather(1, o)
    o = torch.sort(v, dim=1, descending=True, stable=True).indices
    return v.gather(1, o), i.gather(1, o)


def block_topk(s: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
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
    w = cols // TOPK_CHUNK  # number of chunks
    if w >= 4 * m:
        head = w * TOPK_CHUNK
        chunks = s[:, :head].view(rows, TOPK_CHUNK, w)  # chunk j = columns j + t*w
        ci = torch.topk(chunks.amax(dim=1), m, dim=1, sorted=False).indices  # (rows, m)
        cand = chunks.gather(2, ci.unsqueeze(1).expand(rows, TOPK_CHUNK, m)).view(rows, TOPK_CHUNK * m)
        cand_idx = torch.arange(TOPK_CHUNK, device=s.device).view(1, -1, 1) * w + ci.unsqueeze(1)
        cand_idx = cand_idx.view(rows, TOPK_CHUNK * m)
        if head < cols:  # the ragged tail is small: all of it is a candidate
            tail = torch.arange(head, cols, device=s.device).expand(rows, cols - head)
            cand, cand_idx = torch.cat([cand, s[:, head:]], dim=1), torch.cat([cand_idx, tail], dim=1)
        v, p = torch.topk(cand, m, dim=1, sorted=True)
        i = cand_idx.gather(1, p)
    else:
        v, i = torch.topk(s, m, dim=1, sorted=True)
    tied = v[:, k - 1] == v[:, k]
    v, i = ordered(v[:, :k], i[:, :k])
    if bool(tied.any()):
        redo = tied.nonzero().squeeze(1)
        srt = torch.sort(s[redo], dim=1, descending=True, stable=True)
        v[redo], i[redo] = srt.values[:, :k], srt.indices[:, :k]
    return v, i


def col_max(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Max and first argmax of each column of a tile, via chunk maxima (see ARGMAX_CHUNK)."""
    rows, cols = s.shape
    head = rows - rows % ARGMAX_CHUNK
    if head == 0:
        m, a = s.max(dim=0)
        return m, a
    v = s[:head].view(head // ARGMAX_CHUNK, ARGMAX_CHUNK, cols)
    chunk_max = v.amax(dim=1)
    ci = chunk_max.argmax(dim=0)  # first chunk holding the maximum
    m = chunk_max.gather(0, ci.unsqueeze(0)).squeeze(0)
    inside = v[ci, :, torch.arange(cols, device=s.device)].argmax(dim=1)  # (cols, chunk) -> first row
    a = ci * ARGMAX_CHUNK + inside
    if head < rows:
        tm, ta = s[head:].max(dim=0)
        later = tm > m  # strict: equal values keep the earlier row
        m = torch.where(later, tm, m)
        a = torch.where(later, ta + head, a)
    return m, a


def exact_pass(
    C: np.ndarray, a_t: torch.Tensor, mu: torch.Tensor | None, k: int, bs: int, tick: Ticker
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
        cb = normalise_(to_tensor(C[i0 : i0 + bs], dev), mu_d)
        top_v: torch.Tensor | None = None
        top_i: torch.Tensor | None = None
        for j0 in range(0, n_a, bs):
            tick.check()
            ab = a_t[j0 : j0 + bs]
            s = buf[: cb.shape[0] * ab.shape[0]].view(cb.shape[0], ab.shape[0])
            torch.mm(cb, ab.T, out=s)
            v, i = block_topk(s, k)
            i += j0
            if top_v is None or top_i is None:
                top_v, top_i = v, i
            else:
                # Earlier blocks hold lower indices and both halves are (value desc, index asc), so a stable
                # sort of the concatenation keeps ties on the lower index.
                cv, ci = torch.cat([top_v, v], dim=1), torch.cat([top_i, i], dim=1)
                o = torch.sort(cv, dim=1, descending=True, stable=True).indices[:, :k]
                top_v, top_i = cv.gather(1, o), ci.gather(1, o)
            m, a = col_max(s)
            seg_max, seg_arg = a_max[j0 : j0 + bs], a_arg[j0 : j0 + bs]
            better = m > seg_max  # strict: earlier C blocks (lower indices) win ties
            seg_max.copy_(torch.where(better, m, seg_max))
            seg_arg.copy_(torch.where(better, a + i0, seg_arg))
            tick.step()
        assert top_v is not None and top_i is not None
        c_sim[i0 : i0 + bs] = top_v.cpu().numpy()
        c_idx[i0 : i0 + bs] = top_i.cpu().numpy()
    return c_sim, c_idx, a_max.cpu().numpy(), a_arg.cpu().numpy()

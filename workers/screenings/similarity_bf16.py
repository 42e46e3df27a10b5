"""The bf16 screen of the exact similarity pass (workers.screenings.similarity): on CPUs with native bf16
dot products, bf16 tiles nominate candidates and fp32 re-scores them, with a proven error bound, so the answer
is the exact one (docs/benchmarks.md)."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch

from workers.screenings.similarity_tiles import Ticker, exact_pass, normalise_, ordered, to_tensor

# bf16 screening (see screened): candidates kept per customer row beyond k, row chunks kept per alignment
# column, and the rows in one such chunk.  Rows or columns whose error band holds more fall back to fp32.
SCREEN_EXTRA = 16
SCREEN_TILE_EXTRA = 4  # ... of which one tile may nominate k + this (topk's cost grows with its k)
SCREEN_CHUNKS = 8
SCREEN_ROWS = 32
SCREEN_MIN_PAIRS = 2**24  # below ~17M pairs (about one tile) the screen's fixed costs outweigh its speed
SCREEN_GIVE_UP = 0.25  # share of a block's rows falling back above which the rest of C goes straight to fp32
BF16_ROUND = 2**-8 / (1 - 2**-8)  # |bf16(x) - x| <= this * |bf16(x)| (round to nearest, 8-bit significand)


@functools.cache
def cpu_bf16_sound() -> bool:
    """Does this CPU multiply bf16 natively (AVX512-BF16 or AMX), accumulating in fp32?  Checked once.

    Without native support oneDNN emulates bf16 and is slower than fp32.  The check catches a kernel that
    accumulates in bf16 (a row of equal components drifts by far more than pair_bound allows) or truncates.
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
        return bool(((got - want).abs() <= BF16_ROUND * got.abs() + pair_bound(0.0, 0.0, 384)).all())


def pair_bound(dx: Any, dy: Any, d: int) -> Any:
    """Bound on |x~.y~ - x.y| for unit x, y with bf16 roundings x~, y~; dx = ||x - x~||, dy = ||y - y~||.

    x~.y~ - x.y = (x~ - x).y~ + x.(y~ - y), so by Cauchy-Schwarz it is at most dx (1 + dy) + dy; fp32
    accumulation of d products adds gamma_d ||x~|| ||y~||; 1e-6 covers the fp32 norms of x and y.  The bf16
    rounding of the product itself is relative to its value (BF16_ROUND) and is added by the caller.
    """
    gamma = d * 2**-24 / (1 - d * 2**-24)
    return dx + dy + dx * dy + gamma * (1 + dx) * (1 + dy) + 1e-6


def separated(low: torch.Tensor, high: torch.Tensor, base: Any) -> torch.Tensor:
    """True where every true score behind bf16 score `low` is below every true score behind `high`."""
    low = low.clamp(min=-2.0)  # -inf stands for "nothing there"
    return low + base + BF16_ROUND * low.abs() < high - base - BF16_ROUND * high.abs()


def bf16_split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x rounded to bf16, and each row's rounding error ||x - bf16(x)|| (the difference is exact in fp32)."""
    xb = x.to(torch.bfloat16)
    err = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    for s in range(0, x.shape[0], 4096):
        err[s : s + 4096] = torch.linalg.vector_norm(x[s : s + 4096] - xb[s : s + 4096].float(), dim=1)
    return xb, err * (1 + x.shape[1] * 2**-23)  # the fp32 norm itself errs by up to ~d/2 ulps


def chunk_max(s: torch.Tensor) -> torch.Tensor:
    """Max of each column over consecutive chunks of SCREEN_ROWS rows (the last may be short)."""
    rows, cols = s.shape
    head = rows - rows % SCREEN_ROWS
    parts = [s[:head].view(head // SCREEN_ROWS, SCREEN_ROWS, cols).amax(dim=1)] if head else []
    if head < rows:
        parts.append(s[head:].amax(dim=0, keepdim=True))
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def screened(
    C: np.ndarray, a_t: torch.Tensor, mu: torch.Tensor | None, k: int, bs: int, tick: Ticker
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """exact's answer at bf16 speed: bf16 tiles nominate candidates, fp32 re-scores them.

    A bf16 matmul runs ~4x faster than fp32 on CPUs with AVX512-BF16, but rounds inputs to 8 significant
    bits.  Its error is bounded per pair (pair_bound, from the measured rounding error of each row), so it
    can only choose candidates: each customer row keeps its top k + SCREEN_EXTRA bf16 scores, each
    alignment column the SCREEN_CHUNKS chunks of SCREEN_ROWS customer rows with the highest bf16 maxima.
    After the pass the candidates are re-scored in fp32, and the answer is the exact one wherever the bound
    proves that nothing left out could reach the top (separated, strict, so no tie can be left out either).
    Rows and columns where it cannot prove that (near-duplicates crowding the top) are redone by exact_pass.
    """
    dev = a_t.device
    n_c, (n_a, d) = C.shape[0], a_t.shape
    mu_d = mu.to(dev) if mu is not None else None
    a_b, da = bf16_split(a_t)
    da_max = float(da.max())
    m_r = min(k + SCREEN_EXTRA, n_a)
    m_t = min(k + SCREEN_TILE_EXTRA, m_r)
    ninf = -math.inf
    c_sim = np.empty((n_c, k), dtype=np.float32)
    c_idx = np.empty((n_c, k), dtype=np.int64)
    col_v = torch.full((n_a, SCREEN_CHUNKS), ninf, device=dev)
    col_q = torch.full((n_a, SCREEN_CHUNKS), -1, dtype=torch.int64, device=dev)  # chunk start rows
    dc_max, redo_rows = 0.0, []
    buf = torch.empty(min(bs, n_c) * min(bs, n_a), dtype=torch.bfloat16, device=dev)
    tick.plan(math.ceil(n_c / bs) * math.ceil(n_a / bs))
    for i0 in range(0, n_c, bs):
        col_kept = col_v.clone(), col_q.clone()  # to forget this block if it hands over to fp32
        cb = normalise_(to_tensor(C[i0 : i0 + bs], dev), mu_d)
        cb_b, dc = bf16_split(cb)
        dc_max = max(dc_max, float(dc.max()))
        rows = cb.shape[0]
        starts = torch.arange(i0, i0 + rows, SCREEN_ROWS, device=dev)
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
            v = torch.cat([col_v[j0 : j0 + cols], chunk_max(s).T.float()], dim=1)
            q = torch.cat([col_q[j0 : j0 + cols], starts.expand(cols, -1)], dim=1)
            col_v[j0 : j0 + cols], p = torch.topk(v, SCREEN_CHUNKS, dim=1, sorted=False)
            col_q[j0 : j0 + cols] = q.gather(1, p)
            tick.step()
        v, o = torch.sort(row_v[0], dim=1, descending=True)
        i = row_i[0].gather(1, o)
        bound = pair_bound(dc, da_max, d)
        # Candidates that could still tie or beat the k-th form a prefix of each row; the rest are out.
        live = (~separated(v, v[:, k - 1 : k], bound.unsqueeze(1))).sum(dim=1)
        # Left out: whatever a tile did not nominate (<= cut) or the merges dropped (<= v[:, -1]).
        out = torch.maximum(cut, v[:, -1]) if m_r < n_a else cut
        ok = separated(out, v[:, k - 1], bound)
        if int((~ok).sum()) > SCREEN_GIVE_UP * rows:  # bunched scores (uncentred hidden states, say)
            col_v, col_q = col_kept  # this block and the rest go to fp32, rows and columns in one pass
            tick.redo(math.ceil(n_a / bs))
            stop = i0
            break
        live[~ok] = k  # exact_pass redoes these rows
        exact = torch.full((rows, m_r), ninf, device=dev)
        for r0 in range(0, rows, 256):
            width = int(live[r0 : r0 + 256].max())
            ii = i[r0 : r0 + 256, :width]
            cand = a_t.index_select(0, ii.reshape(-1)).view(*ii.shape, d)  # 8x faster than a_t[ii]
            exact[r0 : r0 + 256, :width] = torch.bmm(cand, cb[r0 : r0 + 256].unsqueeze(2)).squeeze(2)
        v, i = ordered(exact, i)
        c_sim[i0 : i0 + rows] = v[:, :k].cpu().numpy()
        c_idx[i0 : i0 + rows] = i[:, :k].cpu().numpy()
        redo_rows.append((~ok).nonzero().squeeze(1).cpu().numpy() + i0)
    else:
        stop = n_c
    if stop == 0:
        c_sim, c_idx, a_max, a_arg = exact_pass(C, a_t, mu, k, bs, tick)
        return c_sim, c_idx, a_max, a_arg, {"rows": 0, "columns": 0, "unscreened_rows": n_c}

    redo = np.concatenate(redo_rows) if redo_rows else np.empty(0, dtype=np.int64)
    if redo.size:
        c_sim[redo], c_idx[redo], _, _ = exact_pass(C[redo], a_t, mu, k, bs, Ticker(None, None))

    col_v, o = torch.sort(col_v, dim=1, descending=True)
    col_q = col_q.gather(1, o)
    base = pair_bound(dc_max, da, d)
    ok_c = separated(col_v[:, -1], col_v[:, 0], base)
    live_c = ~separated(col_v, col_v[:, :1], base.unsqueeze(1)) & ok_c.unsqueeze(1)  # could hold the max
    a_max, a_arg = rescore_columns(C[:stop], a_t, mu_d, torch.where(live_c, col_q, -1), bs)
    redo_c = (~ok_c).nonzero().squeeze(1)
    if redo_c.numel():
        _, _, top, arg = exact_pass(C[:stop], a_t[redo_c], mu, 1, bs, Ticker(None, None))
        a_max[redo_c.cpu().numpy()], a_arg[redo_c.cpu().numpy()] = top, arg
    if stop < n_c:
        c_sim[stop:], c_idx[stop:], top, arg = exact_pass(C[stop:], a_t, mu, k, bs, tick)
        later = top > a_max  # strict: the screened rows come first
        a_max, a_arg = np.where(later, top, a_max), np.where(later, arg + stop, a_arg)
    fallback = {"rows": int(redo.size), "columns": int(redo_c.numel()), "unscreened_rows": n_c - stop}
    return c_sim, c_idx, a_max, a_arg, fallback


def rescore_columns(
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
        end = min(q0 + SCREEN_ROWS, (q0 // bs + 1) * bs, n_c)  # chunks never cross a block
        cc = normalise_(to_tensor(C[q0:end], dev), mu_d)
        s = torch.mm(cc, a_t.index_select(0, sl // m).T)  # (chunk rows, columns naming the chunk)
        r = s.argmax(dim=0)  # first maximal row
        best_v[sl] = s.gather(0, r.unsqueeze(0)).squeeze(0)
        best_r[sl] = r + q0
    v, r = ordered(best_v.view(n_a, m), best_r.view(n_a, m))
    return v[:, 0].cpu().numpy(), r[:, 0].cpu().numpy()

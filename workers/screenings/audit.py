"""Alignment-set audit: how diverse the set is in a representation space, and what it leaves uncovered.

Diversity is the Vendi score (Friedman & Dieng 2023) with the cosine kernel: exp of the Shannon entropy of the
eigenvalues of K/n, K_ij = cos(x_i, x_j). It reads as "the effective number of distinct examples" (1 when all
are the same, n when all are orthogonal), so sets of different sizes compare on one scale and a provider can
see when adding data adds little. We prefer it to a log-determinant, which depends on n and the dimension,
is -inf for rank-deficient sets and has no unit a person can read. With unit vectors X (n x d), the non-zero
eigenvalues of K/n equal those of the d x d matrix X^T X / n, so it costs O(n d^2), not O(n^2).

Coverage: a customer example is uncovered when its max cosine to the alignment set is below the set's own
`near` level (the 10th percentile of its leave-one-out nearest-neighbour cosine, see
workers/screenings/risk.py): the alignment data holds nothing as close to it as its own examples are to each
other.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _unit_rows(vectors: np.ndarray, center: bool) -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float64)
    if center:
        x = x - x.mean(axis=0, keepdims=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def gram(vectors: np.ndarray) -> np.ndarray:
    """X^T X of the unit rows (float64, d x d): Gram matrices of slices add up to the whole set's."""
    x = _unit_rows(vectors, center=False)
    return x.T @ x


def vendi_of_gram(g: np.ndarray, n: int) -> float:
    if n == 0:
        return 0.0
    lam = np.linalg.eigvalsh(g / n)
    lam = lam[lam > 1e-12]
    lam = lam / lam.sum()
    return float(np.exp(-(lam * np.log(lam)).sum()))


def vendi_score(vectors: np.ndarray, *, center: bool = False) -> float:
    x = _unit_rows(vectors, center)
    return vendi_of_gram(x.T @ x, x.shape[0])


def audit(
    *,
    a_vec: np.ndarray,
    c_vendi: float,
    c_max: np.ndarray,
    near: float,
    center: bool,
    top: int = 10,
) -> dict[str, Any]:
    """Diversity of both sets and the customer examples the alignment set does not cover. `c_vendi` is the
    customer set's Vendi score (from its summed Gram matrix: the set may have been screened in shards)."""
    v_a, v_c = vendi_score(a_vec, center=center), c_vendi
    n_c = len(c_max)
    uncovered = np.flatnonzero(c_max < near)
    farthest = uncovered[np.argsort(c_max[uncovered], kind="stable")][:top]
    return {
        "diversity_metric": "vendi (cosine kernel)",
        "alignment_vendi": round(v_a, 3),
        "alignment_effective_share": round(v_a / max(len(a_vec), 1), 4),
        "customer_vendi": round(v_c, 3),
        "customer_effective_share": round(v_c / max(n_c, 1), 4),
        "coverage_threshold": near,
        "uncovered_count": int(uncovered.size),
        "uncovered_share": float(uncovered.size / max(len(c_max), 1)),
        "farthest_uncovered_records": [{"record": int(i) + 1, "max_sim": float(c_max[i])} for i in farthest],
    }

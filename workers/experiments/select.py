"""Selection: which alignment examples a model is aligned on, and the screening features of the pair.

Each alignment example is scored by its maximum cosine to the fine-tuning data (the paper's selection
score, `workers.similarity.compare`); High-Sim is the top N, Low-Sim the bottom N, Random a seeded N
(`workers.screening.subsets`), full is all of them. The features are what a screening of the fine-tuning
data against the selected subset reports (its risk score and parts, read against the subset's own
reference levels), so a calibration fitted on experiments applies to screenings as they are run.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from workers import risk
from workers.screening import subsets
from workers.similarity import compare, self_reference


def sample(n: int, max_examples: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random sample (all of them when no cap or the cap is above n)."""
    if max_examples is None or max_examples >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_examples, replace=False))


def select(
    c_vec: np.ndarray,
    a_vec: np.ndarray,
    *,
    selection: str,
    size: int,
    seed: int,
    center: bool = False,
    block_size: int = 4096,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the selected alignment examples, every alignment example's max cosine to C)."""
    sim = compare(c_vec, a_vec, k=1, center=center, block_size=block_size, device=device)
    if selection == "full":
        return np.arange(a_vec.shape[0]), sim.a_max_sim
    if selection not in ("high_sim", "low_sim", "random"):
        raise ValueError(f"unknown selection {selection!r}")
    return subsets(sim.a_max_sim, size, seed)[selection].astype(np.int64), sim.a_max_sim


def features(
    c_vec: np.ndarray,
    a_sub: np.ndarray,
    *,
    seed: int = 0,
    center: bool = False,
    block_size: int = 4096,
    device: str = "cpu",
) -> dict[str, Any] | None:
    """The screening's risk score, tier and parts for C against the selected alignment subset."""
    if a_sub.shape[0] < 2:
        return None  # no reference levels inside a one-example set
    sim = compare(c_vec, a_sub, k=1, center=center, block_size=block_size, device=device)
    ref = self_reference(a_sub, sample=2000, seed=seed, center=center, block_size=block_size)
    c_max = sim.c_topk_sim[:, 0]
    scored = risk.score(c_max, risk.reference_levels(ref))
    return {
        "risk_score": scored["risk_score"],
        "tier": scored["tier"],
        "parts": {p["name"]: p["value"] for p in scored["parts"]},
        "reference_levels": scored["reference_levels"],
        "customer_max_sim": {
            "mean": float(c_max.mean()),
            "p50": float(np.percentile(c_max, 50)),
            "p90": float(np.percentile(c_max, 90)),
        },
    }

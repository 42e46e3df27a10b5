"""Selection: which alignment examples a model is aligned on.

Each alignment example is scored by its maximum cosine to the fine-tuning data (the paper's selection
score, `workers.screenings.similarity.compare`); High-Sim is the top N, Low-Sim the bottom N, Random a
seeded N (`workers.screenings.screening.subsets`), full is all of them.
"""

from __future__ import annotations

import numpy as np

from workers.screenings.screening import subsets
from workers.screenings.similarity import compare


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

"""Report distributions: fixed cosine bins by default, shared data-driven bins for the anchor margins."""

from __future__ import annotations

import numpy as np
import pytest

from workers.screenings import risk

pytestmark = pytest.mark.no_backend  # never reads SQL, Redis or the blob store


def test_cosines_keep_the_fixed_bins_and_margins_get_bins_that_resolve_them() -> None:
    rng = np.random.default_rng(0)
    cos = risk.distribution(rng.uniform(-0.2, 0.9, 500))
    assert cos["histogram"]["edges"][0] == -1.0 and cos["histogram"]["edges"][-1] == 1.0
    assert sum(cos["histogram"]["counts"]) == 500
    # LLM anchor margins span hundredths: on [-1, 1] they would fill one or two bins
    margin, harmful = rng.normal(0.005, 0.005, 200), rng.normal(0.01, 0.007, 60)
    assert sum(c > 0 for c in risk.distribution(margin)["histogram"]["counts"]) <= 2
    edges = risk.shared_edges(margin, harmful)
    a, b = risk.distribution(margin, edges), risk.distribution(harmful, edges)
    assert a["histogram"]["edges"] == b["histogram"]["edges"]  # read side by side
    assert sum(c > 0 for c in a["histogram"]["counts"]) >= 10
    assert sum(a["histogram"]["counts"]) == 200 and sum(b["histogram"]["counts"]) == 60
    assert len(risk.shared_edges(np.zeros(3))) == 41  # a constant still gets a (tiny) range

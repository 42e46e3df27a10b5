from __future__ import annotations

import numpy as np
import pytest

from workers.screenings.audit import audit, vendi_score

pytestmark = pytest.mark.no_backend  # never reads SQL, Redis or the blob store


def test_vendi_is_one_for_copies_and_n_for_orthogonal_vectors() -> None:
    assert abs(vendi_score(np.ones((10, 4))) - 1.0) < 1e-9
    assert abs(vendi_score(np.eye(6)) - 6.0) < 1e-9


def test_vendi_equals_the_n_by_n_kernel_definition() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 8))
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    lam = np.linalg.eigvalsh(u @ u.T / 30)
    lam = lam[lam > 1e-12]
    expected = np.exp(-(lam * np.log(lam)).sum())
    assert abs(vendi_score(x) - expected) < 1e-8


def test_audit_lists_the_farthest_uncovered_customer_examples() -> None:
    rng = np.random.default_rng(1)
    c_max = np.array([0.9, 0.1, 0.5, 0.05, 0.3])
    out = audit(a_vec=rng.normal(size=(20, 4)), c_vendi=2.5, c_max=c_max, near=0.4, center=False)
    assert out["customer_vendi"] == 2.5 and out["customer_effective_share"] == 0.5
    assert out["uncovered_count"] == 3 and abs(out["uncovered_share"] - 0.6) < 1e-9
    assert [r["record"] for r in out["farthest_uncovered_records"]] == [4, 2, 5]
    assert 1.0 <= out["alignment_vendi"] <= 4.0 + 1e-9


def test_gram_matrices_of_slices_add_up_to_the_vendi_score_of_the_whole_set() -> None:
    from workers.screenings.audit import gram, vendi_of_gram

    x = np.random.default_rng(2).normal(size=(50, 6))
    whole = vendi_score(x)
    assert abs(vendi_of_gram(gram(x[:20]) + gram(x[20:]), 50) - whole) < 1e-10

"""The similarity engine against brute force in float64 numpy, on small random data."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch

from app.core.errors import Cancelled
from workers.screenings import similarity, similarity_bf16
from workers.screenings.similarity import compare, self_reference

pytestmark = pytest.mark.no_backend  # never reads SQL, Redis or the blob store

GAP = 1e-6  # neighbours closer than this count as tied: their order is not checked against brute force


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matrices: thread pools only add wake-up latency (seconds on a busy machine), so use one thread."""
    torch_threads, faiss_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    yield
    torch.set_num_threads(torch_threads)
    faiss.omp_set_num_threads(faiss_threads)


def _unit(X: np.ndarray, mu: np.ndarray | None = None) -> np.ndarray:
    X = X.astype(np.float64)
    if mu is not None:
        X = X - mu
    n = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(n > 0, n, 1.0)


def brute(C: np.ndarray, A: np.ndarray, k: int, center: bool = False):
    mu = A.astype(np.float64).mean(axis=0) if center else None
    S = _unit(C, mu) @ _unit(A, mu).T
    order = np.argsort(-S, axis=1, kind="stable")
    k = min(k, A.shape[0])
    sims = np.take_along_axis(S, order, axis=1)
    return sims[:, :k], order[:, :k], S.max(axis=0), S.argmax(axis=0), sims, S


def _data(n_c: int, n_a: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # An offset makes the sets anisotropic like hidden states, so centring changes the answer.
    off = rng.standard_normal(d).astype(np.float32) * 2
    C = rng.standard_normal((n_c, d)).astype(np.float32) + off
    A = rng.standard_normal((n_a, d)).astype(np.float32) + off
    return C, A


def _check(res, C, A, k, center=False):
    b_sim, b_idx, b_max, b_arg, b_all, S = brute(C, A, k, center)
    kk = b_sim.shape[1]
    assert res.c_topk_sim.shape == (C.shape[0], kk) and res.c_topk_sim.dtype == np.float32
    assert res.c_topk_idx.shape == (C.shape[0], kk) and res.c_topk_idx.dtype == np.int64
    assert res.a_max_sim.shape == (A.shape[0],) and res.a_max_sim.dtype == np.float32
    assert res.a_argmax.shape == (A.shape[0],) and res.a_argmax.dtype == np.int64
    np.testing.assert_allclose(res.c_topk_sim, b_sim, atol=1e-5)
    np.testing.assert_allclose(res.a_max_sim, b_max, atol=1e-5)
    assert np.all(np.diff(res.c_topk_sim, axis=1) <= 0)
    # Indices must match wherever the brute-force neighbours are separated from each other.
    gaps = -np.diff(b_all[:, : kk + 1], axis=1)
    clear = (gaps > GAP).all(axis=1)
    assert clear.mean() > 0.5
    np.testing.assert_array_equal(res.c_topk_idx[clear], b_idx[clear])
    if C.shape[0] == 1:
        np.testing.assert_array_equal(res.a_argmax, 0)
    else:
        top2 = -np.sort(-S, axis=0)[:2]
        clear_a = top2[0] - top2[1] > GAP
        assert clear_a.mean() > 0.5
        np.testing.assert_array_equal(res.a_argmax[clear_a], b_arg[clear_a])


@pytest.mark.parametrize(
    ("n_c", "n_a", "d", "k", "bs"),
    [
        (1, 7, 8, 3, 4),  # one customer row
        (13, 3, 5, 5, 2),  # fewer alignment rows than k
        (50, 37, 16, 5, 7),  # block smaller than both dims, dividing neither
        (70, 45, 16, 4, 33),  # argmax chunk of 32 rows plus a tail row
        (200, 150, 24, 5, 64),  # several argmax chunks per tile, ragged last block
        (90, 80, 12, 5, 4096),  # one tile
        (30, 40, 6, 1, 9),
        (40, 700, 16, 5, 300),  # tiles wide enough for the chunked top-k, with a ragged tail
    ],
)
@pytest.mark.parametrize("screen", [False, True])
def test_exact_matches_brute_force(n_c, n_a, d, k, bs, screen):
    C, A = _data(n_c, n_a, d, seed=n_c + n_a)
    res = compare(C, A, k=k, block_size=bs, screen=screen)
    _check(res, C, A, k)
    assert res.meta["precision"] == ("bf16 screen, fp32 re-score" if screen else "fp32")
    assert res.meta["method"] == "exact" and res.meta["k"] == min(k, n_a)
    assert res.meta["block_size"] == bs and res.meta["device"] == "cpu" and res.meta["recall_at_k"] is None


@pytest.mark.parametrize("screen", [False, True])
@pytest.mark.parametrize("bs", [5, 4096])
def test_centering_matches_brute_force_with_mean_removed(bs, screen):
    C, A = _data(60, 50, 16, seed=3)
    res = compare(C, A, k=4, block_size=bs, center=True, screen=screen)
    assert res.meta["centered"] is True
    _check(res, C, A, 4, center=True)
    plain = compare(C, A, k=4, block_size=bs)
    assert not np.allclose(plain.a_max_sim, res.a_max_sim, atol=1e-3)  # centring really changed the scores


@pytest.mark.parametrize("screen", [False, True])
def test_zero_vectors_give_zero_not_nan(screen):
    C, A = _data(20, 15, 8)
    C[3] = 0
    A[[2, 7]] = 0
    for center in (False, True):
        res = compare(C, A, k=3, block_size=4, center=center, screen=screen)
        for arr in (res.c_topk_sim, res.a_max_sim):
            assert np.isfinite(arr).all()
        if not center:
            np.testing.assert_array_equal(res.c_topk_sim[3], 0)
            assert res.a_max_sim[2] == 0 and res.a_max_sim[7] == 0
            _check(res, C, A, 3)
    # A customer row equal to A's mean has no direction once centred.
    C[5] = A.astype(np.float64).mean(axis=0)
    res = compare(C, A, k=3, center=True, screen=screen)
    np.testing.assert_allclose(res.c_topk_sim[5], 0, atol=1e-5)


@pytest.mark.parametrize("screen", [False, True])
@pytest.mark.parametrize("bs", [1, 2, 3, 7, 40, 4096])
def test_ties_go_to_the_lower_index(bs, screen):
    eye = np.eye(6, dtype=np.float32)
    A = eye[[0, 1, 0, 0, 2, 1, 3]]  # duplicates: cosines are exactly 1 or 0
    C = np.tile(eye[[0, 1, 0, 4]], (12, 1))  # 48 rows: enough for the chunked argmax path
    res = compare(C, A, k=3, block_size=bs, screen=screen)
    np.testing.assert_array_equal(res.c_topk_idx[0], [0, 2, 3])
    np.testing.assert_array_equal(res.c_topk_idx[1], [1, 5, 0])
    np.testing.assert_array_equal(res.c_topk_idx[3], [0, 1, 2])  # e4 matches nothing: all zero, lowest first
    np.testing.assert_array_equal(res.c_topk_sim[0], [1, 1, 1])
    np.testing.assert_array_equal(res.a_argmax, [0, 1, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(res.a_max_sim, [1, 1, 1, 1, 0, 1, 0])


@pytest.mark.parametrize("screen", [False, True])
@pytest.mark.parametrize("bs", [100, 4096])
def test_ties_go_to_the_lower_index_in_wide_tiles(bs, screen):
    eye = np.eye(8, dtype=np.float32)
    A = eye[np.arange(450) % 7]  # each basis vector ~64 times, spread over the chunks
    C = eye[[0, 3, 7, 6]]
    res = compare(C, A, k=4, block_size=bs, screen=screen)
    np.testing.assert_array_equal(res.c_topk_idx[0], [0, 7, 14, 21])
    np.testing.assert_array_equal(res.c_topk_idx[1], [3, 10, 17, 24])
    np.testing.assert_array_equal(res.c_topk_idx[2], [0, 1, 2, 3])
    np.testing.assert_array_equal(res.c_topk_sim[2], 0)
    np.testing.assert_array_equal(res.a_argmax[:8], [0, 0, 0, 1, 0, 0, 3, 0])


def test_inputs_are_not_modified_and_float64_is_accepted():
    C, A = _data(10, 12, 8)
    C0, A0 = C.copy(), A.copy()
    compare(C, A, k=2, center=True, block_size=3)
    np.testing.assert_array_equal(C, C0)
    np.testing.assert_array_equal(A, A0)
    res = compare(C.astype(np.float64), A.astype(np.float64), k=2)
    _check(res, C, A, 2)


def test_bad_inputs():
    C, A = _data(4, 5, 8)
    with pytest.raises(ValueError, match="dimension"):
        compare(C, A[:, :4])
    C[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        compare(C, A)
    with pytest.raises(ValueError, match="method"):
        compare(A, A, method="hnsw")
    with pytest.raises(ValueError):
        compare(A[:0], A)


def test_cancel_raises_between_blocks():
    C, A = _data(30, 30, 8)
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        compare(C, A, block_size=4, should_stop=stop)
    with pytest.raises(Cancelled):
        compare(C, A, method="faiss-flat", block_size=4, should_stop=lambda: True)


@pytest.mark.parametrize("method", ["exact", "faiss-flat", "faiss-ivf"])
def test_progress_reaches_one(method):
    C, A = _data(30, 25, 8)
    seen: list[float] = []
    compare(C, A, block_size=7, method=method, progress=seen.append)
    assert len(seen) > 3 and seen[-1] == 1.0
    assert all(0 < x <= 1 for x in seen) and seen == sorted(seen)


def test_faiss_flat_equals_exact():
    C, A = _data(80, 60, 16, seed=5)
    for center in (False, True):
        ex = compare(C, A, k=5, block_size=16, center=center)
        ff = compare(C, A, k=5, block_size=16, center=center, method="faiss-flat")
        assert ff.meta["method"] == "faiss-flat" and ff.meta["recall_at_k"] is None
        np.testing.assert_allclose(ff.c_topk_sim, ex.c_topk_sim, atol=1e-5)
        np.testing.assert_allclose(ff.a_max_sim, ex.a_max_sim, atol=1e-5)
        b_all = brute(C, A, 5, center)[4]
        clear = (-np.diff(b_all[:, :6], axis=1) > GAP).all(axis=1)
        np.testing.assert_array_equal(ff.c_topk_idx[clear], ex.c_topk_idx[clear])


def test_faiss_ivf_reports_recall():
    C, A = _data(300, 400, 16, seed=7)
    res = compare(C, A, k=5, method="faiss-ivf", nprobe=2)
    assert res.meta["method"] == "faiss-ivf"
    assert 0.0 <= res.meta["recall_at_k"] <= 1.0
    assert 0.0 <= res.meta["a_recall_at_1"] <= 1.0
    assert res.c_topk_idx.min() >= 0 and res.a_argmax.min() >= 0
    assert np.all(np.diff(res.c_topk_sim, axis=1) <= 1e-6)
    exact_max = compare(C, A, k=1).a_max_sim
    assert np.all(res.a_max_sim <= exact_max + 1e-5)  # approximate can only miss, never overshoot


def test_auto_switches_on_alignment_size():
    C, A = _data(50, 100, 8)
    assert compare(C, A, method="auto", faiss_threshold=101).meta["method"] == "exact"
    assert compare(C, A, device="auto").meta["device"].startswith(("cpu", "cuda"))
    res = compare(C, A, method="auto", faiss_threshold=100)
    assert res.meta["method"] == "faiss-ivf" and res.meta["recall_at_k"] is not None


def test_self_reference_excludes_self():
    _, A = _data(1, 120, 16, seed=11)
    ref = self_reference(A, sample=500, block_size=16)  # sample >= n: every row
    S = _unit(A) @ _unit(A).T
    np.fill_diagonal(S, -np.inf)
    nn = S.max(axis=1)
    assert nn.max() < 0.999  # no row found itself
    for p in (10, 25, 50, 75, 90):
        assert ref["self_nn"][f"p{p}"] == pytest.approx(np.percentile(nn, p), abs=1e-5)
    assert -1 <= ref["random_pair_mean"] <= ref["random_pair_p90"] <= 1
    assert ref == self_reference(A, sample=500, block_size=16)


def test_self_reference_counts_duplicates_and_is_seeded():
    _, A = _data(1, 100, 8, seed=2)
    ref = self_reference(np.repeat(A, 2, axis=0), sample=1000, center=True)
    assert ref["self_nn"]["p10"] == pytest.approx(1.0, abs=1e-5)  # every row's twin is its neighbour
    assert ref["sample_size"] == 200 and ref["centered"] is True
    a = self_reference(A, sample=50, seed=1)
    assert a == self_reference(A, sample=50, seed=1)
    assert a != self_reference(A, sample=50, seed=2)
    with pytest.raises(ValueError):
        self_reference(A[:1])


# -------------------------------------------------------------------------------------------- bf16 screening


def test_bf16_error_bound_holds_for_every_pair():
    """The bound the screen relies on, against float64 on fp32 inputs: random, sparse, near-constant rows."""
    rng = np.random.default_rng(4)
    d = 96
    X = rng.standard_normal((300, d)).astype(np.float32)
    X[:50, 8:] = 0  # sparse
    X[50:60] = 1.0 + rng.standard_normal((10, d)).astype(np.float32) * 1e-3  # near-constant
    X[60:70] *= 1e3  # large, same direction once normalised
    with torch.inference_mode():
        x = torch.nn.functional.normalize(torch.from_numpy(X), dim=1)
        xb, err = similarity_bf16.bf16_split(x)
        got = torch.mm(xb, xb.T).double()
        true = x.double() @ x.double().T
        bound = similarity_bf16.pair_bound(err.double()[:, None], err.double()[None, :], d)
        bound = bound + similarity_bf16.BF16_ROUND * got.abs()
        assert bool(((got - true).abs() <= bound).all())
        assert float((bound / (got - true).abs().clamp(min=1e-12)).min()) < 20  # not vacuous either


def test_screen_falls_back_to_fp32_where_near_duplicates_crowd_the_band():
    """Near-duplicates closer than bf16 can tell apart (not fp32) crowd some rows' and columns' tops."""
    rng = np.random.default_rng(1)
    d, k = 24, 3

    def near(centre: np.ndarray, n: int, noise: float) -> np.ndarray:
        return (centre + rng.standard_normal((n, d)) * noise).astype(np.float32)

    g_a, g_c = rng.standard_normal((2, d)) * 3
    crowd = similarity_bf16.SCREEN_EXTRA + k + 8  # more near-ties per customer row than the screen keeps
    A = np.concatenate([near(g_a, crowd, 2e-3), near(g_c, 5, 0.3), rng.standard_normal((600, d))])
    rows = (similarity_bf16.SCREEN_CHUNKS + 2) * similarity_bf16.SCREEN_ROWS  # more than a column holds
    C = np.concatenate([rng.standard_normal((700, d)), near(g_a, 20, 0.3), near(g_c, rows, 2e-3)])
    C, A = C.astype(np.float32), A.astype(np.float32)
    res = compare(C, A, k=k, block_size=256, screen=True)
    fb = res.meta["fp32_fallback"]
    assert fb["rows"] > 0 and fb["columns"] > 0 and fb["unscreened_rows"] == 0
    fp32 = compare(C, A, k=k, block_size=256, screen=False)
    np.testing.assert_allclose(res.c_topk_sim, fp32.c_topk_sim, atol=1e-6)
    np.testing.assert_allclose(res.a_max_sim, fp32.a_max_sim, atol=1e-6)
    _check(res, C, A, k)


def test_screen_on_spread_data_rescores_instead_of_falling_back():
    rng = np.random.default_rng(9)
    C, A = (rng.standard_normal((n, 32)).astype(np.float32) for n in (700, 900))
    res = compare(C, A, k=5, block_size=256, screen=True)
    assert res.meta["fp32_fallback"]["rows"] < 700 * 0.05
    assert res.meta["fp32_fallback"]["columns"] < 900 * 0.05
    assert res.meta["fp32_fallback"]["unscreened_rows"] == 0
    _check(res, C, A, 5)


def test_screen_hands_bunched_data_to_fp32_after_one_block():
    """Anisotropic vectors (a shared offset, like uncentred hidden states) bunch the top scores within bf16's
    error: a block where most rows would fall back goes to fp32 with the rest; progress never goes back."""
    C, A = _data(700, 900, 32, seed=9)
    seen: list[float] = []
    res = compare(C, A, k=5, block_size=256, screen=True, progress=seen.append)
    assert res.meta["fp32_fallback"] == {"rows": 0, "columns": 0, "unscreened_rows": 700}
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) == 4 + 3 * 4  # one block, then all
    _check(res, C, A, 5)
    # Spread rows first, bunched ones after: the screened block stays, the rest is handed over.
    rng = np.random.default_rng(1)
    spread = rng.standard_normal((256, 32)).astype(np.float32) * 10 - A.mean(axis=0)
    mixed = np.concatenate([spread, C])
    res = compare(mixed, A, k=5, block_size=256, screen=True)
    assert res.meta["fp32_fallback"]["unscreened_rows"] == 700
    _check(res, mixed, A, 5)
    exact = compare(mixed, A, k=5, block_size=256, screen=False)
    np.testing.assert_array_equal(res.a_argmax, exact.a_argmax)
    centred = compare(C, A, k=5, block_size=256, screen=True, center=True)  # centring spreads them again
    assert centred.meta["fp32_fallback"]["unscreened_rows"] == 0


def test_screen_is_chosen_by_capability_and_cpu_only(monkeypatch):
    C, A = _data(20, 30, 8)
    probe = similarity.cpu_bf16_sound.__wrapped__  # uncached
    monkeypatch.setattr(similarity, "cpu_bf16_sound", lambda: True)
    assert compare(C, A).meta["precision"] == "fp32"  # too small to pay
    monkeypatch.setattr(similarity, "SCREEN_MIN_PAIRS", 600)
    assert compare(C, A).meta["precision"] == "bf16 screen, fp32 re-score"
    monkeypatch.setattr(similarity, "cpu_bf16_sound", lambda: False)
    assert compare(C, A).meta["precision"] == "fp32"
    with pytest.raises(ValueError, match="CPU only"):
        compare(C, A, device="cuda", screen=True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert probe() is False

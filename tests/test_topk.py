"""The top-k kernels against a slow, obvious numpy reference (np.lexsort with the tie rule)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from linrec._kernels.topk import (
    finish_heaps_serial,
    hit_matrix,
    hit_matrix_serial,
    topk_rows,
    topk_rows_sampled_serial,
    topk_rows_serial,
    topk_tile_serial,
)
from linrec._threading import numba_threads

NO_CANDIDATES = np.ones(1, dtype=np.bool_)


def reference_topk(scores, k, excluded, candidates=None):
    """Row by row: eligible items sorted by (-score, index), first k, padded with -1/-inf."""
    n_rows, n_items = scores.shape
    idx = np.full((n_rows, k), -1, dtype=np.int64)
    val = np.full((n_rows, k), -np.inf, dtype=np.float64)
    for r in range(n_rows):
        items = np.arange(n_items)
        keep = ~np.isnan(scores[r])
        keep[list(excluded[r])] = False
        if candidates is not None:
            keep &= candidates
        items = items[keep]
        row_scores = scores[r, items].astype(np.float64)
        order = np.lexsort((items, -row_scores))[:k]
        idx[r, : order.size] = items[order]
        val[r, : order.size] = row_scores[order]
    return idx, val


def random_exclusions(rng, n_rows, n_items, max_per_row):
    rows = []
    for _ in range(n_rows):
        size = int(rng.integers(0, max_per_row + 1))
        rows.append(set(rng.choice(n_items, size=min(size, n_items), replace=False).tolist()))
    return rows


def to_csr_structure(excluded, n_items):
    indptr = np.zeros(len(excluded) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(e) for e in excluded])
    indices = np.concatenate([np.sort(np.fromiter(e, np.int64, len(e))) for e in excluded])
    return indptr, indices.astype(np.int32)


def run_both(scores, k, excluded, candidates=None):
    """Parallel (2 threads) and serial kernels; they must agree with each other."""
    indptr, indices = to_csr_structure(excluded, scores.shape[1])
    cand, use = (NO_CANDIDATES, False) if candidates is None else (candidates, True)
    with numba_threads(2):
        idx, val = topk_rows(scores, k, indptr, indices, cand, use)
    idx_s, val_s = topk_rows_serial(scores, k, indptr, indices, cand, use)
    np.testing.assert_array_equal(idx, idx_s)
    np.testing.assert_array_equal(val, val_s)
    assert val.dtype == scores.dtype
    return idx, val


def assert_matches_reference(scores, k, excluded, candidates=None):
    idx, val = run_both(scores, k, excluded, candidates)
    ref_idx, ref_val = reference_topk(scores, k, excluded, candidates)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(val.astype(np.float64), ref_val)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_items", [5, 127, 128, 129, 1000, 3001])
def test_random_scores(rng, dtype, n_items):
    scores = rng.standard_normal((20, n_items)).astype(dtype)
    excluded = [set() for _ in range(20)]
    for k in (1, 3, 20):
        assert_matches_reference(scores, k, excluded)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_heavily_tied_scores(rng, dtype):
    # Integers 0..3: almost every comparison is a tie, decided by the lower item index.
    scores = rng.integers(0, 4, size=(30, 700)).astype(dtype)
    excluded = random_exclusions(rng, 30, 700, 40)
    for k in (1, 10, 50, 300):
        assert_matches_reference(scores, k, excluded)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exclusions(rng, dtype):
    scores = rng.standard_normal((40, 2000)).astype(dtype)
    excluded = random_exclusions(rng, 40, 2000, 300)
    # Exclude the very best items of some rows, and runs of adjacent items (empty segments).
    excluded[0] |= set(np.argsort(-scores[0])[:25].tolist())
    excluded[1] |= set(range(100, 400))
    excluded[2] |= {0, 1, 2, 1997, 1998, 1999}
    assert_matches_reference(scores, 20, excluded)


def test_increasing_scores_force_many_insertions(rng):
    # Every item beats the current k-th: the slow path of each block is taken.
    scores = np.tile(np.arange(1500, dtype=np.float32), (4, 1))
    scores[1] = scores[1][::-1]
    excluded = random_exclusions(rng, 4, 1500, 50)
    assert_matches_reference(scores, 25, excluded)


def test_candidate_mask(rng):
    scores = rng.standard_normal((25, 900))
    candidates = rng.random(900) < 0.3
    excluded = random_exclusions(rng, 25, 900, 100)
    for k in (5, 40):
        assert_matches_reference(scores, k, excluded, candidates)


def test_k_larger_than_eligible_items_pads(rng):
    scores = rng.standard_normal((6, 50)).astype(np.float32)
    excluded = random_exclusions(rng, 6, 50, 45)
    excluded[3] = set(range(50))  # nothing eligible at all
    idx, val = run_both(scores, 60, excluded)
    ref_idx, ref_val = reference_topk(scores, 60, excluded)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(val.astype(np.float64), ref_val)
    assert np.all(idx[3] == -1) and np.all(val[3] == -np.inf)
    n_eligible = np.array([50 - len(e) for e in excluded])
    assert np.array_equal((idx >= 0).sum(axis=1), n_eligible)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_never_selected_and_inf_handled(rng, dtype):
    scores = rng.standard_normal((12, 600)).astype(dtype)
    scores[rng.random(scores.shape) < 0.3] = np.nan
    scores[0, :] = np.nan
    scores[1, 10:] = np.nan  # only ten eligible items
    scores[2, [5, 300]] = np.inf
    scores[3, [7, 8, 9]] = -np.inf
    scores[4, :] = -np.inf  # all -inf: real scores, ranked by index before any padding
    excluded = random_exclusions(rng, 12, 600, 30)
    for k in (5, 20):
        assert_matches_reference(scores, k, excluded)
    idx, _ = run_both(scores, 20, excluded)
    assert np.all(idx[0] == -1)
    for r in range(12):
        chosen = idx[r][idx[r] >= 0]
        assert not np.isnan(scores[r, chosen]).any()


def test_single_row_and_single_item(rng):
    scores = rng.standard_normal((1, 400))
    assert_matches_reference(scores, 9, [set(range(0, 400, 3))])
    assert_matches_reference(np.array([[0.5]]), 3, [set()])


def test_thread_count_does_not_change_result(rng):
    scores = rng.integers(0, 5, size=(64, 500)).astype(np.float32)
    indptr, indices = to_csr_structure(random_exclusions(rng, 64, 500, 20), 500)
    results = []
    for n_jobs in (1, 2):
        with numba_threads(n_jobs):
            results.append(topk_rows(scores, 15, indptr, indices, NO_CANDIDATES, False))
    np.testing.assert_array_equal(results[0][0], results[1][0])


def test_hit_matrix_matches_python_sets(rng):
    n_rows, n_items, k = 50, 80, 12
    top = rng.integers(-1, n_items, size=(n_rows, k))
    test = sp.random(n_rows, n_items, density=0.1, format="csr", random_state=rng)
    test.sort_indices()
    indptr = test.indptr.astype(np.int64)
    with numba_threads(2):
        hits = hit_matrix(top, indptr, test.indices)
    hits_s = hit_matrix_serial(top, indptr, test.indices)
    expected = np.zeros((n_rows, k), dtype=np.uint8)
    for r in range(n_rows):
        items = set(test.indices[test.indptr[r] : test.indptr[r + 1]].tolist())
        for p in range(k):
            expected[r, p] = top[r, p] in items
    np.testing.assert_array_equal(hits, expected)
    np.testing.assert_array_equal(hits_s, expected)
    assert expected.sum() > 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("tile_width", [1, 37, 128, 300])
def test_tiles_fed_in_order_equal_whole_rows(rng, dtype, tile_width):
    n_rows, n_items, k = 15, 700, 12
    scores = rng.integers(0, 6, size=(n_rows, n_items)).astype(dtype)
    scores[rng.random(scores.shape) < 0.05] = np.nan
    excluded = random_exclusions(rng, n_rows, n_items, 200)
    excluded[0] = set(range(n_items - 5))  # fewer than k eligible: padding
    indptr, indices = to_csr_structure(excluded, n_items)
    heap_idx = np.empty((n_rows, k), np.int64)
    heap_val = np.empty((n_rows, k), dtype)
    sizes = np.zeros(n_rows, np.int64)
    excl_pos = indptr[:-1].copy()
    for offset in range(0, n_items, tile_width):
        tile = np.ascontiguousarray(scores[:, offset : offset + tile_width])
        topk_tile_serial(tile, offset, k, indptr, indices, excl_pos, sizes, heap_idx, heap_val)
    finish_heaps_serial(sizes, heap_idx, heap_val)
    ref_idx, ref_val = reference_topk(scores, k, excluded)
    np.testing.assert_array_equal(heap_idx, ref_idx)
    np.testing.assert_array_equal(heap_val.astype(np.float64), ref_val)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("n_items", "k"), [(45, 1), (45, 7), (45, 40), (500, 3), (500, 60)])
@pytest.mark.parametrize("values", ["tied", "distinct"])
def test_top_scored_items_of_factors_equal_reference(rng, dtype, n_items, k, values, monkeypatch):
    import linrec._factor_topk as factor_topk

    # small tiles and chunks so that several of each are used
    monkeypatch.setattr(factor_topk, "FACTOR_ITEMS", 16)
    monkeypatch.setattr(factor_topk, "FACTOR_USERS", 8)
    n_users = 37
    if values == "tied":  # small integer factors: many equal scores
        U = rng.integers(-2, 3, size=(n_users, 3)).astype(dtype)
        V = rng.integers(-2, 3, size=(n_items, 3)).astype(dtype)
    else:
        U = rng.standard_normal((n_users, 5)).astype(dtype)
        V = rng.standard_normal((n_items, 5)).astype(dtype)
    excluded = random_exclusions(rng, n_users, n_items, 12)
    excluded[0] = set(range(n_items - 3))  # fewer than k eligible: padded with -1
    excluded[1] = set(range(0, n_items, 2))  # exclusions in every tile
    indptr, indices = to_csr_structure(excluded, n_items)
    exclude = sp.csr_matrix((np.ones(indices.size), indices, indptr), shape=(n_users, n_items))
    scores = U @ V.T
    expected, expected_val = reference_topk(scores.astype(np.float64), k, excluded)
    for n_jobs in (1, 2):
        got = factor_topk.top_scored_items(U, V, k, exclude, n_jobs=n_jobs)
        np.testing.assert_array_equal(got, expected)
    # the scores too, up to BLAS's summation order (tiles against the whole product)
    ids, vals = factor_topk.top_factor_chunk(U, V, k, indptr, indices)
    np.testing.assert_array_equal(ids, expected)
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(vals.astype(np.float64), expected_val, rtol=rtol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 50, 400])
@pytest.mark.parametrize("values", ["distinct", "tied", "nan_inf"])
def test_threshold_selection_equals_reference(rng, dtype, k, values):
    # The threshold path (most rows: at least k scores pass the sample's threshold) and the
    # fallback (rows where too few eligible scores are left) against the argsort reference.
    n_rows, n_items = 12, 3000
    if values == "tied":
        scores = rng.integers(-3, 4, size=(n_rows, n_items)).astype(dtype)
    else:
        scores = rng.standard_normal((n_rows, n_items)).astype(dtype)
    if values == "nan_inf":
        scores[rng.random((n_rows, n_items)) < 0.2] = np.nan
        scores[rng.random((n_rows, n_items)) < 0.01] = np.inf
        scores[rng.random((n_rows, n_items)) < 0.01] = -np.inf
        scores[3] = np.nan  # nothing eligible: all padding
        scores[4, 5:] = np.nan  # fewer than k eligible
    excluded = random_exclusions(rng, n_rows, n_items, 300)
    excluded[0] = set(range(n_items - 30))  # fewer than k eligible for k = 50, 400
    excluded[1] = set(range(0, n_items, 2))  # every sampled item excluded
    # the best scores excluded: the sample's threshold lets too few eligible items through
    excluded[2] = set(np.argsort(-np.nan_to_num(scores[2], nan=-np.inf))[: n_items // 2].tolist())
    indptr, indices = to_csr_structure(excluded, n_items)
    got = np.full((n_rows, k), -7, dtype=np.int64)
    before = scores.copy()
    topk_rows_sampled_serial(scores, k, indptr, indices.astype(np.int64), got)
    expected, _ = reference_topk(scores, k, excluded)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(scores, before)

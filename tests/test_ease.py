"""EASE, DebiasedEASE, SparseEASE and their kernels against slow float64 references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import linrec.ease as ease_module
from linrec._kernels.ease import (
    cooccurrence_neighbors,
    csr_times_csr_dense,
    csr_times_dense,
    gram_lower_into,
    scale_columns_inplace,
    sparse_ease_columns,
    weight_block,
)
from linrec._linalg import (
    cholesky_lower_inplace,
    lauum_lower_inplace,
    spd_inverse_inplace,
    symmetrize_from_lower_inplace,
    triangular_inverse_lower_inplace,
)
from linrec.ease import EASE, DebiasedEASE, SparseEASE, debiased_user_weights

from conftest import random_interactions
from contract import RecommenderContract


# ----------------------------------------------------------------------------- references
def ease_reference(X, lam):
    """EASE the way the paper writes it, in float64 with np.linalg.inv."""
    G = (X.T @ X).toarray().astype(np.float64) + lam * np.eye(X.shape[1])
    P = np.linalg.inv(G)
    B = np.eye(X.shape[1]) - P / np.diag(P)[None, :]
    np.fill_diagonal(B, 0.0)
    return B


def constrained_ridge_reference(X, lam, supports=None, weights=None, targets=None):
    """Column by column: min ||t_i - X b||_D^2 + lam ||b||^2 over b supported off item i."""
    Xd = X.toarray().astype(np.float64)
    m, n = Xd.shape
    B = np.zeros((n, n))
    for i in range(n):
        d = np.ones(m) if weights is None else weights(i)
        t = Xd[:, i] if targets is None else targets * Xd[:, i]
        keep = np.setdiff1d(np.arange(n), [i]) if supports is None else supports[i]
        Xs = Xd[:, keep]
        system = Xs.T @ (d[:, None] * Xs) + lam * np.eye(len(keep))
        B[keep, i] = np.linalg.solve(system, Xs.T @ t)
    return B


def random_spd(rng, n, dtype=np.float64):
    A = rng.standard_normal((n, n + 3))
    return (A @ A.T / n + 0.5 * np.eye(n)).astype(dtype)


# ----------------------------------------------------------------------------- contract
class TestEASEContract(RecommenderContract):
    def make_estimator(self):
        return EASE(regularization=2.0, n_jobs=1, tile_size=7)


class TestSparseEASEContract(RecommenderContract):
    def make_estimator(self):
        return SparseEASE(regularization=2.0, n_neighbors=8, n_jobs=1)


class TestDebiasedEASEContract(RecommenderContract):
    def make_estimator(self):
        return DebiasedEASE(regularization=2.0, unobserved_weight=0.5, block_size=7, n_jobs=1)


# ----------------------------------------------------------------------------- tiled linalg
@pytest.mark.parametrize("n, tile", [(1, 4), (5, 5), (23, 4), (50, 16), (61, 64), (97, 10)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tiled_inverse_matches_numpy(rng, n, tile, dtype):
    A = random_spd(rng, n, dtype)
    inv = A.copy()
    spd_inverse_inplace(inv, tile, direct_limit=0)
    ref = np.linalg.inv(A.astype(np.float64))
    tol = 1e-10 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(inv, ref, atol=tol * np.abs(ref).max())
    np.testing.assert_array_equal(inv, inv.T)


@pytest.mark.parametrize("n, tile", [(23, 4), (40, 9)])
def test_tiled_steps_match_lapack_steps(rng, n, tile):
    A = random_spd(rng, n)
    L_ref = np.linalg.cholesky(A)
    work = A.copy()
    work[np.triu_indices(n, 1)] = 123.0  # the upper triangle must be ignored
    cholesky_lower_inplace(work, tile)
    np.testing.assert_allclose(np.tril(work), L_ref, atol=1e-12)
    triangular_inverse_lower_inplace(work, tile)
    M_ref = np.linalg.inv(L_ref)
    np.testing.assert_allclose(np.tril(work), M_ref, atol=1e-10)
    lauum_lower_inplace(work, tile)
    np.testing.assert_allclose(np.tril(work), np.tril(M_ref.T @ M_ref), atol=1e-10)


@pytest.mark.parametrize("n", [1, 6, 97])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_direct_inverse_matches_numpy_in_place(rng, n, dtype):
    # below direct_limit: one potrf + potri on the array itself, the upper triangle ignored
    A = random_spd(rng, n, dtype)
    inv = A.copy()
    inv[np.triu_indices(n, 1)] = 123.0
    address = inv.__array_interface__["data"][0]
    spd_inverse_inplace(inv, tile=4)
    assert inv.__array_interface__["data"][0] == address
    ref = np.linalg.inv(A.astype(np.float64))
    tol = 1e-10 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(inv, ref, atol=tol * np.abs(ref).max())
    np.testing.assert_array_equal(inv, inv.T)


def test_direct_inverse_rejects_indefinite(rng):
    A = random_spd(rng, 20)
    A[15, 15] = -50.0
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        spd_inverse_inplace(A)


@pytest.mark.parametrize("n", [1, 2, 63, 64, 65, 130, 200])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_symmetrize_from_lower_matches_numpy(rng, n, dtype):
    A = rng.standard_normal((n, n)).astype(dtype)
    expected = np.tril(A) + np.tril(A, -1).T
    symmetrize_from_lower_inplace(A, n_jobs=2)
    np.testing.assert_array_equal(A, expected)


def test_tiled_cholesky_rejects_indefinite(rng):
    A = random_spd(rng, 20)
    A[15, 15] = -50.0
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        cholesky_lower_inplace(A, 6)


# ----------------------------------------------------------------------------- kernels
def test_gram_kernel_matches_sparse_product(rng):
    X = random_interactions(rng, 70, 33, 0.2, binary=False)
    csc = X.tocsc()
    out = np.zeros((33, 33))
    order = np.concatenate([np.arange(1, 33, 2), np.arange(0, 33, 2)])
    gram_lower_into(X.indptr, X.indices, X.data, csc.indptr, csc.indices, csc.data, order, out)
    ref = (X.T @ X).toarray().astype(np.float64)
    np.testing.assert_allclose(out, np.tril(ref), rtol=1e-6)


def test_product_kernels_match_numpy(rng):
    X = random_interactions(rng, 40, 30, 0.2, binary=False).astype(np.float64)
    dense = rng.standard_normal((30, 9))
    out = np.empty((40, 9))
    csr_times_dense(X.indptr, X.indices, X.data, dense, out)
    np.testing.assert_allclose(out, X.toarray() @ dense, atol=1e-12)
    B = sp.random(30, 30, density=0.3, random_state=rng, format="csr")
    out = np.empty((40, 30))
    csr_times_csr_dense(X.indptr, X.indices, X.data, B.indptr, B.indices, B.data, out)
    np.testing.assert_allclose(out, X.toarray() @ B.toarray(), atol=1e-12)
    M = rng.standard_normal((5, 30))
    scale = rng.standard_normal(30)
    expected = M * scale[None, :]
    scale_columns_inplace(M, scale)
    np.testing.assert_allclose(M, expected)


def test_weight_block_matches_numpy(rng):
    X = random_interactions(rng, 25, 12, 0.3)
    csc = X.tocsc()
    columns = np.array([3, 0, 11])
    products = rng.standard_normal((25, 3))
    unobserved, positive = rng.random(25), rng.random(25) + 1
    out = np.empty_like(products)
    weight_block(products, columns, csc.indptr, csc.indices, unobserved, positive, out)
    has = X.toarray()[:, columns] > 0
    expected = np.where(has, positive[:, None], unobserved[:, None]) * products
    np.testing.assert_allclose(out, expected)


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("cosine", [True, False])
def test_cooccurrence_neighbors_match_argsort_of_gram(rng, binary, cosine):
    # binary counts tie a lot: the tie rule (lower index first) is exercised at the threshold
    X = random_interactions(rng, 60, 20, 0.25, binary=binary)
    G = (X.T @ X).toarray().astype(np.float64)
    norms = np.sqrt(np.diag(G)) if cosine else np.ones(20)
    csc = X.tocsc()
    counts = np.zeros(20, dtype=np.int64)
    got = cooccurrence_neighbors(
        X.indptr, X.indices, X.data, csc.indptr, csc.indices, csc.data, norms, 4, counts
    )
    dense = G / np.outer(norms, norms)
    for i in range(20):
        cand = [j for j in range(20) if j != i and G[i, j] != 0]
        ranked = sorted(cand, key=lambda j: (-dense[i, j], j))[:4]
        assert counts[i] == len(ranked)
        np.testing.assert_array_equal(got[i, : counts[i]], np.sort(ranked))
        assert np.all(got[i, counts[i] :] == -1)


def test_cooccurrence_neighbors_short_rows_keep_every_candidate(rng):
    # fewer co-occurring items than n_neighbors: all of them, padded with -1
    X = sp.csr_matrix(np.array([[1, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 0, 1.0]]))
    csc = X.tocsc()
    counts = np.zeros(5, dtype=np.int64)
    got = cooccurrence_neighbors(
        X.indptr, X.indices, X.data, csc.indptr, csc.indices, csc.data, np.ones(5), 3, counts
    )
    np.testing.assert_array_equal(counts, [1, 2, 1, 0, 0])
    np.testing.assert_array_equal(got[1], [0, 2, -1])
    np.testing.assert_array_equal(got[3], [-1, -1, -1])


def test_sparse_columns_kernel_matches_reference(rng):
    X = random_interactions(rng, 50, 15, 0.3)
    G = (X.T @ X).tocsr()
    G.sort_indices()
    supports = [
        np.sort(rng.choice(np.setdiff1d(np.arange(15), [i]), 5, replace=False)) for i in range(15)
    ]
    neighbors = np.array(supports, dtype=np.int64)
    counts = np.full(15, 5, dtype=np.int64)
    indptr = np.arange(0, 15 * 5 + 1, 5, dtype=np.int64)
    values = np.zeros(15 * 5)
    csc = X.tocsc()
    sparse_ease_columns(
        csc.indptr, csc.indices, csc.data, 50, neighbors, counts, 1.5, indptr, values
    )
    ref = constrained_ridge_reference(X, 1.5, supports=supports)
    for i in range(15):
        np.testing.assert_allclose(values[5 * i : 5 * i + 5], ref[supports[i], i], rtol=1e-9)


# ----------------------------------------------------------------------------- dense EASE
def test_dense_ease_equals_numpy_and_constrained_ridge(rng):
    X = random_interactions(rng, 90, 40, 0.15)
    model = EASE(regularization=3.0, dtype="float64", tile_size=9).fit(X)
    ref = ease_reference(X, 3.0)
    np.testing.assert_allclose(model.item_weights_, ref, atol=1e-12)
    np.testing.assert_allclose(model.item_weights_, constrained_ridge_reference(X, 3.0), atol=1e-10)
    assert np.all(np.diag(model.item_weights_) == 0)
    np.testing.assert_allclose(model.predict(X), X.toarray() @ ref, atol=1e-12)


def test_float32_scores_agree_with_float64(rng):
    X = random_interactions(rng, 120, 70, 0.1)
    s64 = EASE(regularization=5.0, dtype="float64").fit(X).predict(X)
    s32 = EASE(regularization=5.0, dtype="float32", tile_size=16).fit(X).predict(X)
    assert s32.dtype == np.float32
    np.testing.assert_allclose(s32, s64, atol=1e-4)


def test_similar_items_come_from_weight_rows(rng):
    X = random_interactions(rng, 60, 25, 0.2)
    model = EASE(regularization=1.0, dtype="float64").fit(X)
    top, _ = model.similar_items([4], k=3)
    row = model.item_weights_[4].copy()
    row[4] = -np.inf
    np.testing.assert_array_equal(top[0], np.argsort(-row, kind="stable")[:3])


def test_memory_guard_raises_before_allocating(rng, monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("the dense matrix was allocated despite the memory limit")

    monkeypatch.setattr(ease_module, "dense_ease_weights", must_not_run)
    X = random_interactions(rng, 40, 30, 0.2)
    need = ease_module.dense_ease_memory(30, X.nnz)
    with pytest.raises(MemoryError, match=r"needs about .*SparseEASE"):
        EASE(max_memory=need - 1).fit(X)
    with pytest.raises(MemoryError, match="SparseEASE"):
        DebiasedEASE(max_memory=need).fit(X)  # needs a second n x n matrix on top


def test_memory_guard_uses_available_memory(rng, monkeypatch):
    monkeypatch.setattr(ease_module, "available_memory", lambda: 1000)
    X = random_interactions(rng, 40, 30, 0.2)
    with pytest.raises(MemoryError, match="MemAvailable"):
        EASE().fit(X)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"regularization": 0.0}, "regularization"),
        ({"regularization": -1.0}, "regularization"),
        ({"max_memory": -5}, "max_memory"),
        ({"tile_size": 0}, "tile_size"),
        ({"dtype": "float16"}, "dtype"),
    ],
)
def test_dense_rejects_bad_parameters(rng, params, message):
    with pytest.raises((ValueError, TypeError), match=message):
        EASE(**params).fit(random_interactions(rng, 20, 10, 0.3))


def test_same_n_jobs_gives_identical_weights(rng):
    X = random_interactions(rng, 100, 50, 0.1)
    a = EASE(regularization=2.0, n_jobs=2, tile_size=16).fit(X).item_weights_
    b = EASE(regularization=2.0, n_jobs=2, tile_size=16).fit(X).item_weights_
    np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- debiased
def debiased_reference(X, lam, w, weighting, K):
    scale, positive, unobserved = debiased_user_weights(
        np.diff(X.indptr), X.shape[1], w, weighting, K
    )
    Xd = X.toarray()
    return constrained_ridge_reference(
        X, lam, weights=lambda i: np.where(Xd[:, i] > 0, positive, unobserved), targets=scale
    )


def test_debiased_at_w1_equals_dense(rng):
    X = random_interactions(rng, 90, 45, 0.12)
    dense = EASE(regularization=2.0, dtype="float64").fit(X).item_weights_
    model = DebiasedEASE(regularization=2.0, unobserved_weight=1.0, dtype="float64").fit(X)
    np.testing.assert_allclose(model.item_weights_, dense, atol=1e-12)
    assert model.n_iter_.max() == 0  # the EASE start already solves it
    model32 = DebiasedEASE(regularization=2.0, unobserved_weight=1.0, block_size=10).fit(X)
    dense32 = EASE(regularization=2.0).fit(X).item_weights_
    np.testing.assert_allclose(model32.item_weights_, dense32, atol=1e-6)


@pytest.mark.parametrize(
    "w, weighting, K",
    [
        (0.3, "uniform", 1.0),
        (2.5, "uniform", 1.0),
        (0.5, "chuang", 1.0),
        (1.0, "pu", 1.25),
        (0.2, "uniform", 1.5),
    ],
)
def test_debiased_matches_columnwise_weighted_ridge(rng, w, weighting, K):
    X = random_interactions(rng, 80, 30, 0.15)
    model = DebiasedEASE(
        regularization=1.5,
        unobserved_weight=w,
        weighting=weighting,
        prior_inflation=K,
        dtype="float64",
        tol=1e-11,
        block_size=8,
    ).fit(X)
    ref = debiased_reference(X, 1.5, w, weighting, K)
    np.testing.assert_allclose(model.item_weights_, ref, atol=1e-8 * np.abs(ref).max())
    assert 0 < model.n_iter_.max() < 100


def test_debiased_cg_without_good_start_still_converges(rng, monkeypatch):
    # at w = 1 the exact start hides the solver; start from zero to exercise CG itself
    X = random_interactions(rng, 60, 25, 0.2)
    original = ease_module._ColumnCG.solve

    def zero_start(self, columns, tol, max_iter):
        saved = self.standard
        self.standard = np.zeros_like(saved)  # start at 0, precondition by diag(P) only
        try:
            return original(self, columns, tol, max_iter)
        finally:
            self.standard = saved

    monkeypatch.setattr(ease_module._ColumnCG, "solve", zero_start)
    model = DebiasedEASE(regularization=1.0, dtype="float64", tol=1e-12, max_iter=200).fit(X)
    np.testing.assert_allclose(model.item_weights_, ease_reference(X, 1.0), atol=1e-8)
    assert model.n_iter_.max() > 1


def test_debiased_rejects_nonconvex_weights(rng):
    X = random_interactions(rng, 30, 10, 0.3)
    with pytest.raises(ValueError, match="convex"):
        DebiasedEASE(unobserved_weight=3.0, prior_inflation=2.0).fit(X)
    with pytest.raises(ValueError, match="weighting"):
        DebiasedEASE(weighting="other").fit(X)
    with pytest.raises(ValueError, match="prior_inflation"):
        DebiasedEASE(prior_inflation=0.5).fit(X)


# ----------------------------------------------------------------------------- sparse
def test_sparse_ease_equals_dense_at_full_support(rng):
    X = random_interactions(rng, 80, 35, 0.12)
    dense = EASE(regularization=2.0, dtype="float64").fit(X).item_weights_
    full = SparseEASE(regularization=2.0, n_neighbors=34, dtype="float64").fit(X)
    np.testing.assert_allclose(full.item_weights_.toarray(), dense, atol=1e-10)


def test_sparse_ease_approaches_dense_as_support_grows(rng):
    X = random_interactions(rng, 200, 60, 0.08)
    dense = EASE(regularization=2.0, dtype="float64").fit(X)
    errors, nnz = [], []
    for k in (3, 10, 30, 59):
        model = SparseEASE(regularization=2.0, n_neighbors=k, dtype="float64").fit(X)
        errors.append(np.linalg.norm(model.predict(X) - dense.predict(X)))
        nnz.append(model.item_weights_.nnz)
    assert nnz == sorted(nnz)
    assert errors[0] > errors[1] > errors[2] > errors[3]
    assert errors[3] < 1e-9
    # each column on its support is the exact restricted regression
    model = SparseEASE(regularization=2.0, n_neighbors=10, dtype="float64").fit(X)
    B = model.item_weights_.tocsc()
    supports = [B.indices[B.indptr[i] : B.indptr[i + 1]] for i in range(60)]
    ref = constrained_ridge_reference(X, 2.0, supports=supports)
    np.testing.assert_allclose(B.toarray(), ref, atol=1e-10)


def test_sparse_ease_cosine_support_differs(rng):
    X = random_interactions(rng, 150, 40, 0.1)
    a = SparseEASE(n_neighbors=5, similarity="cooccurrence").fit(X).item_weights_
    b = SparseEASE(n_neighbors=5, similarity="cosine").fit(X).item_weights_
    assert a.nnz == b.nnz
    assert (a != 0).toarray().tolist() != (b != 0).toarray().tolist()
    with pytest.raises(ValueError, match="similarity"):
        SparseEASE(similarity="jaccard").fit(X)
    with pytest.raises(ValueError, match="n_neighbors"):
        SparseEASE(n_neighbors=0).fit(X)


@pytest.mark.parametrize("k", [2, 30])
def test_sparse_columns_kernel_weighted_heavy_users(rng, k):
    # dense-ish, non-binary data: users hold many support items (long buckets); the full
    # support (k = n - 1) is covered by test_sparse_ease_equals_dense_at_full_support
    X = random_interactions(rng, 120, 150, 0.3, binary=False)
    n = 150
    supports = [
        np.sort(rng.choice(np.setdiff1d(np.arange(n), [i]), k, replace=False)) for i in range(n)
    ]
    neighbors = np.array(supports, dtype=np.int64)
    counts = np.full(n, k, dtype=np.int64)
    indptr = np.arange(0, n * k + 1, k, dtype=np.int64)
    values = np.zeros(n * k)
    csc = X.tocsc()
    sparse_ease_columns(
        csc.indptr, csc.indices, csc.data, 120, neighbors, counts, 0.7, indptr, values
    )
    ref = constrained_ridge_reference(X, 0.7, supports=supports)
    expected = np.concatenate([ref[supports[i], i] for i in range(n)])
    np.testing.assert_allclose(values, expected, rtol=1e-8, atol=1e-12)


def test_sparse_columns_kernel_skips_empty_supports_and_users_without_items(rng):
    X = random_interactions(rng, 40, 12, 0.3)
    X = sp.vstack([X, sp.csr_matrix((3, 12))]).tocsr()  # trailing users with no items
    supports = [np.array([j for j in range(12) if j != i][:4]) for i in range(12)]
    counts = np.array([0 if i % 3 == 0 else 4 for i in range(12)], dtype=np.int64)
    neighbors = np.array(supports, dtype=np.int64)
    indptr = np.zeros(13, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    values = np.zeros(indptr[-1])
    csc = X.tocsc()
    sparse_ease_columns(
        csc.indptr, csc.indices, csc.data, 43, neighbors, counts, 1.0, indptr, values
    )
    ref = constrained_ridge_reference(X, 1.0, supports=supports)
    for i in range(12):
        got = values[indptr[i] : indptr[i + 1]]
        np.testing.assert_allclose(got, ref[supports[i], i][: counts[i]], rtol=1e-9, atol=1e-12)


def test_kth_largest_matches_sorting(rng):
    from linrec._kernels.ease import _kth_largest

    for trial in range(400):
        n = int(rng.integers(1, 60))
        kind = trial % 4
        if kind == 0:
            values = rng.random(n)
        elif kind == 1:  # heavy ties
            values = rng.integers(0, 4, n).astype(np.float64)
        elif kind == 2:  # sorted input
            values = np.sort(rng.random(n))
        else:  # constant
            values = np.full(n, 1.5)
        k = int(rng.integers(1, n + 1))
        assert _kth_largest(values.copy(), k) == np.sort(values)[::-1][k - 1]

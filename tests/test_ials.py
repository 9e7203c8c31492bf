"""IALS: numba row solvers against a slow dense float64 reference written from the objectives."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import scipy.sparse as sp

from linrec._kernels.als import (
    block_exact_max_entries_for,
    chunk_bounds,
    data_term,
    rotate_rows,
    solve_block,
    solve_block_eigen,
    solve_cg,
    solve_cholesky,
    solve_rows_diagonal,
    square_sums,
    transpose_order,
    weighted_gram,
)
from linrec._threading import numba_threads
from linrec.ials import IALS, item_weights, objective_terms, with_hard_negatives
from linrec.metrics import evaluate

from conftest import random_interactions
from contract import RecommenderContract

# ---------------------------------------------------------------------------- reference
# Each objective written literally from THEORY.md, on dense matrices, in float64.


def _prior(X, K, class_prior):
    n_u = np.diff(X.indptr).astype(float)
    return K * n_u / X.shape[1] if class_prior is None else np.asarray(class_prior, float)


def popularity_weights(X, p, counts_from=None):
    """g_i of the unobserved entries, from the training counts (1 without item weighting)."""
    beta = p.get("item_weight_exponent", 0.0)
    counts = np.bincount((X if counts_from is None else counts_from).indices, minlength=X.shape[1])
    counts = counts.astype(float)
    if beta == 0:
        return np.ones_like(counts)
    counted = counts > 0
    g = np.zeros_like(counts)  # items without training interactions weigh 0
    if p.get("item_weight_normalization", "mean_count") == "mean_count":
        g[counted] = (counts[counted] / counts.mean()) ** beta
        return g
    g[counted] = counts[counted] ** beta
    return g / g.mean()


def formula_objective(X, P, Q, p):
    """J(P, Q) straight from the per-pair formulas (loops over users, exact means).

    With item weights g the unobserved-weight terms are g-weighted: sums over entries weigh
    y_uj^2 by g_j and the debiased forms' means are means of g_j y_uj^2.
    """
    Xd = X.toarray()
    pos = Xd > 0
    n_users = Xd.shape[0]
    Y = P @ Q.T
    w = p["unobserved_weight"]
    g = popularity_weights(X, p)
    total = 0.0
    tau = _prior(X, p.get("prior_inflation", 1.0), p.get("class_prior"))
    for u in range(n_users):
        yp = Y[u, pos[u]]
        gp = g[pos[u]]
        if p["objective"] == "rendle":
            total += np.sum((1 - yp) ** 2) + w * np.sum(g * Y[u] ** 2)
        elif p["objective"] == "hu":
            conf = 1 + p.get("confidence_scale", 0.0) * Xd[u, pos[u]]
            total += np.sum(conf * (1 - yp) ** 2) + w * np.sum(g[~pos[u]] * Y[u, ~pos[u]] ** 2)
        elif p["objective"] == "debiased_chuang":
            neg = np.mean(g * Y[u] ** 2) - tau[u] * np.mean(gp * yp**2)
            for y in yp:
                total += (1 - y) ** 2 + w / (1 - tau[u]) * neg
        elif p["objective"] == "debiased_pu":
            neg = np.mean(g * Y[u] ** 2) - tau[u] * np.mean(gp * yp**2)
            for y in yp:
                total += tau[u] * (1 - y) ** 2 + w * neg
    r_u, r_i = reg_scales(X, p)
    total += p["regularization"] * (r_u @ np.sum(P**2, 1) + r_i @ np.sum(Q**2, 1))
    return total


def reg_scales(X, p):
    off = p.get("reg_frequency_offset")
    off = p["unobserved_weight"] if off is None else off
    nu = p.get("reg_exponent", 0.0)
    n_u = np.diff(X.indptr).astype(float)
    n_i = np.bincount(X.indices, minlength=X.shape[1]).astype(float)
    return (n_u + off * X.shape[1]) ** nu, (n_i + off * X.shape[0]) ** nu


def dense_coefficients(X, p, counts_from=None):
    """J = sum_uj M_uj y_uj^2 - 2 L_uj y_uj + sum L + reg: M, L read off the formulas.

    The item weights g (``counts_from``: the matrix whose counts define them, default X)
    multiply every term that carries the unobserved weight, so the whole weight matrix M is
    materialised here.
    """
    Xd = X.toarray()
    pos = (Xd > 0).astype(float)
    n = Xd.shape[1]
    n_u = pos.sum(1)
    w = p["unobserved_weight"]
    g = popularity_weights(X, p, counts_from)[None, :]
    tau = _prior(X, p.get("prior_inflation", 1.0), p.get("class_prior"))
    if p["objective"] == "rendle":
        M = pos + w * g
        L = pos
    elif p["objective"] == "hu":
        conf = 1 + p.get("confidence_scale", 0.0) * Xd
        M = pos * conf + w * g * (1 - pos)
        L = pos * conf
    elif p["objective"] == "debiased_chuang":
        # n_u pairs each add w/(1-tau) (1/n sum_j g_j y^2 - tau/n_u sum_k g_k y_k^2)
        M = (
            pos
            + (n_u * w / ((1 - tau) * n))[:, None] * g
            - pos * (w * tau / (1 - tau))[:, None] * g
        )
        L = pos
    else:
        M = pos * tau[:, None] + (n_u * w / n)[:, None] * g - pos * (w * tau)[:, None] * g
        L = pos * tau[:, None]
    return M, L


def coefficient_objective(X, P, Q, p):
    M, L = dense_coefficients(X, p)
    Y = P @ Q.T
    r_u, r_i = reg_scales(X, p)
    reg = p["regularization"] * (r_u @ np.sum(P**2, 1) + r_i @ np.sum(Q**2, 1))
    return np.sum(M * Y**2 - 2 * L * Y) + L.sum() + reg


def exact_rows(F, M, L, reg):
    """Row r solves (F^T diag(M_r) F + reg_r I) x = F^T L_r exactly (dense, float64)."""
    d = F.shape[1]
    out = np.empty((M.shape[0], d))
    for r in range(M.shape[0]):
        A = F.T @ (M[r][:, None] * F) + reg[r] * np.eye(d)
        out[r] = np.linalg.solve(A, F.T @ L[r])
    return out


def reference_als(X, P, Q, p, n_epochs):
    """Dense ALS: each row solves (F^T diag(M_row) F + lam r I) x = F^T L_row exactly."""
    M, L = dense_coefficients(X, p)
    r_u, r_i = reg_scales(X, p)
    lam = p["regularization"]
    P, Q = P.astype(float).copy(), Q.astype(float).copy()
    iterates = []
    for _ in range(n_epochs):
        P = exact_rows(Q, M, L, lam * r_u)
        Q = exact_rows(P, M.T, L.T, lam * r_i)
        iterates.append((P.copy(), Q.copy()))
    return iterates


OBJECTIVE_PARAMS = [
    dict(objective="rendle", unobserved_weight=0.3, regularization=0.05),
    dict(objective="rendle", unobserved_weight=0.2, regularization=0.01, reg_exponent=1.0),
    dict(objective="hu", unobserved_weight=1.0, confidence_scale=4.0, regularization=0.1),
    dict(
        objective="hu",
        unobserved_weight=0.5,
        regularization=0.1,
        reg_exponent=0.5,
        reg_frequency_offset=0.0,
    ),
    dict(
        objective="debiased_chuang",
        unobserved_weight=0.8,
        prior_inflation=1.25,
        regularization=0.05,
    ),
    dict(objective="debiased_pu", unobserved_weight=0.6, prior_inflation=1.5, regularization=0.05),
]


def _counts(rng, n_users=40, n_items=30, density=0.2):
    X = random_interactions(rng, n_users, n_items, density, binary=False)
    X.data = np.ceil(X.data * 4).astype(np.float32)  # counts 1..4 for the Hu confidence
    return X


def _fit_with_iterates(X, params, solver="cholesky", n_epochs=3, d=5, seed=0, **extra):
    iterates = []

    def keep(model, epoch):
        iterates.append((model.user_factors_.copy(), model.item_factors_.copy()))

    rng = np.random.default_rng(seed)
    P0 = rng.standard_normal((X.shape[0], d)) * 0.3
    Q0 = rng.standard_normal((X.shape[1], d)) * 0.3
    model = IALS(
        n_factors=d, solver=solver, n_epochs=n_epochs, dtype="float64", n_jobs=2, **params, **extra
    )
    model.fit(X, callback=keep, initial_factors=(P0, Q0))
    return model, iterates, (P0, Q0)


# ---------------------------------------------------------------------------- objectives
@pytest.mark.parametrize("params", OBJECTIVE_PARAMS, ids=lambda p: p["objective"])
def test_coefficients_match_formula_objective(rng, params):
    X = _counts(rng)
    P = rng.standard_normal((X.shape[0], 4))
    Q = rng.standard_normal((X.shape[1], 4))
    assert coefficient_objective(X, P, Q, params) == pytest.approx(
        formula_objective(X, P, Q, params), rel=1e-12
    )


@pytest.mark.parametrize("params", OBJECTIVE_PARAMS, ids=lambda p: p["objective"])
def test_cholesky_iterates_equal_dense_reference(rng, params):
    X = _counts(rng)
    model, iterates, (P0, Q0) = _fit_with_iterates(X, params)
    ref = reference_als(X, P0, Q0, params, 3)
    for (P, Q), (Pr, Qr), obj in zip(iterates, ref, model.objective_):
        np.testing.assert_allclose(P, Pr, rtol=0, atol=1e-10)
        np.testing.assert_allclose(Q, Qr, rtol=0, atol=1e-10)
        # the Gram-trick objective equals the literal formula at every epoch
        assert obj == pytest.approx(formula_objective(X, P, Q, params), rel=1e-10)
    # stored user factors are the exact fold-in (one more exact user step)
    np.testing.assert_allclose(model.transform(X), model.user_factors_, atol=1e-12)


def test_class_prior_array_matches_reference(rng):
    X = _counts(rng)
    tau = rng.uniform(0.05, 0.4, size=X.shape[0])
    for objective in ("debiased_chuang", "debiased_pu"):
        params = dict(
            objective=objective, unobserved_weight=0.7, regularization=0.05, class_prior=tau
        )
        model, iterates, (P0, Q0) = _fit_with_iterates(X, params, n_epochs=2)
        ref = reference_als(X, P0, Q0, params, 2)
        np.testing.assert_allclose(iterates[-1][1], ref[-1][1], atol=1e-10)
        assert model.objective_[-1] == pytest.approx(
            formula_objective(X, *iterates[-1], params), rel=1e-10
        )


# iALS++ in both block bases
SOLVER_VARIANTS = {
    "cholesky": {"solver": "cholesky"},
    "cg": {"solver": "cg"},
    "ialspp": {"solver": "ialspp"},
    "ialspp-coordinate": {"solver": "ialspp", "block_basis": "coordinate"},
}


@pytest.mark.parametrize("solver", SOLVER_VARIANTS)
@pytest.mark.parametrize("params", OBJECTIVE_PARAMS[::2], ids=lambda p: p["objective"])
def test_objective_never_increases(rng, params, solver):
    X = _counts(rng, 50, 35)
    model, _, _ = _fit_with_iterates(
        X, params, **SOLVER_VARIANTS[solver], n_epochs=8, d=6, block_size=2, cg_steps=2
    )
    obj = np.asarray(model.objective_)
    assert np.all(np.diff(obj) <= 1e-12 * abs(obj[0])), obj


# ---------------------------------------------------------------------------- kernels
def _system(rng, params, d=7, dtype=np.float64, density=0.3, shape=(30, 25)):
    X = _counts(rng, *shape, density)
    row_weight, extra, rhs = objective_terms(
        X,
        params["objective"],
        unobserved_weight=params["unobserved_weight"],
        confidence_scale=params.get("confidence_scale", 0.0),
        prior_inflation=params.get("prior_inflation", 1.0),
        dtype=dtype,
    )
    Q = rng.standard_normal((X.shape[1], d)).astype(dtype)
    P0 = rng.standard_normal((X.shape[0], d)).astype(dtype)
    reg = np.full(X.shape[0], 0.1, dtype=dtype)
    gram = np.ascontiguousarray(Q.T @ Q)
    indptr = X.indptr.astype(np.int64)
    args = (indptr, X.indices.astype(np.int64), extra, rhs, row_weight, reg, gram, Q)
    return X, args, P0, chunk_bounds(indptr, d, 4)


def _row_objective(args, P):
    indptr, indices, extra, rhs, c, reg, gram, Q = args
    vals = []
    for u in range(P.shape[0]):
        x = P[u]
        sl = slice(indptr[u], indptr[u + 1])
        y = Q[indices[sl]] @ x
        vals.append(
            c[u] * x @ gram @ x + np.sum(extra[sl] * y**2 - 2 * rhs[sl] * y) + reg[u] * x @ x
        )
    return np.asarray(vals)


def _row_normal_equations(args, u):
    """Row u's d x d system ``A x = b`` of the kernels' arguments, dense, in float64."""
    indptr, indices, extra, rhs, c, reg, gram, Q = args
    sl = slice(indptr[u], indptr[u + 1])
    Qu = Q[indices[sl]].astype(np.float64)
    A = c[u] * gram + Qu.T @ (extra[sl][:, None] * Qu) + reg[u] * np.eye(Q.shape[1])
    return A, Qu.T @ rhs[sl]


def _assert_cholesky_solves_each_row(args, P0, bounds):
    """The Cholesky kernel's rows equal numpy.linalg.solve of each row's normal equations."""
    P = P0.copy()
    status = np.zeros(P.shape[0], np.int8)
    solve_cholesky(*args, P, bounds, status)
    assert not status.any()
    for u in range(P.shape[0]):
        np.testing.assert_allclose(
            P[u], np.linalg.solve(*_row_normal_equations(args, u)), atol=1e-11
        )


@pytest.mark.parametrize("params", OBJECTIVE_PARAMS[::2], ids=lambda p: p["objective"])
def test_cholesky_kernel_solves_normal_equations(rng, params):
    _, args, P0, bounds = _system(rng, params)
    _assert_cholesky_solves_each_row(args, P0, bounds)


# Every path of the exact kernel: the n_u x n_u (Woodbury) form needs n_u < d and e >= 0; d = 3
# sends most rows, a negative e (Hu with w above the confidence) every row, to the d x d solve;
# density 0.9 gives rows of about 22 entries, which build the d x d system by tiles (in pieces
# of d entries when d = 4) and, when d = 40, fill the n_u x n_u matrix of the Woodbury form
# mostly by 2 x 4 tiles of dot products (odd and even n_u).
NEGATIVE_EXTRA = dict(
    objective="hu", unobserved_weight=3.0, confidence_scale=0.0, regularization=0.1
)


@pytest.mark.parametrize(
    ("params", "d", "density"),
    [
        (OBJECTIVE_PARAMS[0], 3, 0.3),
        (OBJECTIVE_PARAMS[2], 4, 0.9),
        (OBJECTIVE_PARAMS[0], 24, 0.3),
        (OBJECTIVE_PARAMS[4], 24, 0.3),
        (NEGATIVE_EXTRA, 24, 0.3),
        (NEGATIVE_EXTRA, 24, 0.9),
        (OBJECTIVE_PARAMS[0], 40, 0.9),
    ],
    ids=[
        "direct",
        "direct-gemm-pieces",
        "low-rank",
        "low-rank-debiased",
        "negative-extra",
        "negative-extra-gemm",
        "low-rank-gemm",
    ],
)
def test_cholesky_kernel_paths_match_numpy_solve(rng, params, d, density):
    _, args, P0, bounds = _system(rng, params, d=d, density=density)
    indptr, extra = args[0], args[2]
    if params is NEGATIVE_EXTRA:
        assert extra.min() < 0
    n_u = np.diff(indptr)
    if d == 24 and density == 0.3:
        assert n_u.max() < d  # every row takes the n_u x n_u form (if e >= 0)
    if density == 0.9:
        assert n_u.min() >= 16  # every row is built by tiles (_TILED_MIN_ENTRIES)
    if d == 40:
        assert n_u.max() < d  # ... in the n_u x n_u form
    _assert_cholesky_solves_each_row(args, P0, bounds)


@pytest.mark.parametrize(
    ("params", "d"),
    [(NEGATIVE_EXTRA, 24), (OBJECTIVE_PARAMS[0], 8), (NEGATIVE_EXTRA, 40)],
    ids=["one-piece", "pieces", "tile-edges"],
)
def test_cholesky_kernel_float32_long_rows(rng, params, d):
    # float32 rows of at least 16 entries build their d x d system by register tiles, in pieces
    # of up to d entries (d = 8: rows of about 20 entries take three pieces; d = 40 is not a
    # multiple of the tiles' 6 rows or 16 columns). Against the float64 solve of the same
    # float32 inputs, at float32's precision.
    _, args, P0, bounds = _system(rng, params, d=d, dtype=np.float32, density=0.9, shape=(30, 45))
    n_u = np.diff(args[0])
    assert n_u.min() >= 16
    P = P0.copy()
    status = np.zeros(P.shape[0], np.int8)
    solve_cholesky(*args, P, bounds, status)
    assert not status.any()
    for u in range(P.shape[0]):
        want = np.linalg.solve(*_row_normal_equations(args, u))
        np.testing.assert_allclose(P[u], want, rtol=0, atol=2e-4 * np.abs(want).max())


def reference_cg(A, b, x, n_steps, M=None):
    """Textbook (preconditioned, with M) conjugate gradient in float64, in the original basis
    (the kernel runs it in the Gram eigenbasis, where M is diagonal)."""
    x = x.copy()
    r = b - A @ x
    z = r if M is None else np.linalg.solve(M, r)
    p = z.copy()
    for _ in range(n_steps):
        rz = r @ z
        if rz == 0:
            break
        Ap = A @ p
        alpha = rz / (p @ Ap)
        x += alpha * p
        r -= alpha * Ap
        z = r if M is None else np.linalg.solve(M, r)
        p = z + (r @ z) / rz * p
    return x


@pytest.mark.parametrize("warm_start", [True, False], ids=["warm", "zero-start"])
@pytest.mark.parametrize("precondition", [True, False], ids=["preconditioned", "plain"])
@pytest.mark.parametrize("gather_max", [None, 6], ids=["gathered", "long-rows-in-place"])
@pytest.mark.parametrize("d", [5, 16])
def test_cg_kernel_iterates_equal_reference_cg(rng, d, gather_max, precondition, warm_start):
    # gather_max=6: every row with more than 6 entries (most of them) reads its factors from
    # the table in every pass instead of a gathered copy. The preconditioner is each row's
    # shared part c_u G + reg_u I; a zero start never reads the row (NaN there must not leak).
    _, args, P0, bounds = _system(rng, OBJECTIVE_PARAMS[2], d=d)
    indptr, c, reg, gram = args[0], args[4], args[5], args[6]
    assert np.diff(indptr).max() > 6 >= np.diff(indptr).min()
    status = np.zeros(P0.shape[0], np.int8)
    for steps in (1, 2, 4):
        P = P0.copy() if warm_start else np.full_like(P0, np.nan)
        solve_cg(
            *args,
            P,
            bounds,
            steps,
            20,
            status,
            gather_max=gather_max,
            precondition=precondition,
            warm_start=warm_start,
        )
        assert not status.any()
        for u in range(P.shape[0]):
            M = c[u] * gram + reg[u] * np.eye(d) if precondition else None
            start = P0[u] if warm_start else np.zeros(d)
            want = reference_cg(*_row_normal_equations(args, u), start, steps, M)
            np.testing.assert_allclose(P[u], want, atol=1e-10)


def test_preconditioned_cg_is_exact_after_n_u_plus_one_steps(rng):
    # the preconditioned matrix is I plus a rank-n_u term: n_u + 1 steps solve a row exactly,
    # where plain CG (as many steps) does not
    _, args, P0, bounds = _system(rng, OBJECTIVE_PARAMS[2], d=16, density=0.12)
    n_u = np.diff(args[0])
    steps = int(n_u.max()) + 1
    assert steps < 16
    status = np.zeros(P0.shape[0], np.int8)
    exact = P0.copy()
    solve_cholesky(*args, exact, bounds, status)
    errors = {}
    for precondition in (True, False):
        P = P0.copy()
        solve_cg(*args, P, bounds, steps, 20, status, precondition=precondition)
        errors[precondition] = np.abs(P - exact).max() / np.abs(exact).max()
    assert errors[True] < 1e-10
    assert errors[False] > 1e-6


@pytest.mark.parametrize("gather_max", [None, 6], ids=["gathered", "long-rows-in-place"])
def test_cg_data_rows_are_the_data_term_of_each_solved_row(rng, gather_max):
    # CG's by-product: row u's sum_i e y^2 - 2 b y + b at the solved row, y = q_i . x
    _, args, P0, bounds = _system(rng, OBJECTIVE_PARAMS[2], d=6)
    indptr, indices, extra, rhs, c, reg, gram, Q = args
    eigenvalues, V = np.linalg.eigh(gram)
    other, P = Q @ V, P0 @ V
    status = np.zeros(P.shape[0], np.int8)
    data = np.full(P.shape[0], np.nan)
    rows = (indptr, indices, extra, rhs, c, reg, eigenvalues, other, P, bounds, status)
    solve_rows_diagonal("cg", *rows, cg_steps=2, gather_max=gather_max, data_rows=data)
    assert not status.any()
    for u in range(P.shape[0]):
        sl = slice(indptr[u], indptr[u + 1])
        y = other[indices[sl]] @ P[u]
        want = np.sum(extra[sl] * y**2 - 2 * rhs[sl] * y + rhs[sl])
        assert data[u] == pytest.approx(want, rel=1e-12)
    # the same sum as the separate pass, and in the original basis
    total = data_term(indptr, indices, extra, rhs, P @ V.T, Q, bounds)
    assert data.sum() == pytest.approx(total, rel=1e-12)
    with pytest.raises(ValueError, match="data_rows"):
        solve_rows_diagonal("cholesky", *rows, data_rows=data)


@pytest.mark.parametrize("params", OBJECTIVE_PARAMS[::2], ids=lambda p: p["objective"])
def test_cg_fit_objective_equals_formula(rng, params):
    # with CG the data term comes from the item half-step's kernel: still the literal J
    X = _counts(rng)
    model, iterates, _ = _fit_with_iterates(X, params, solver="cg", n_epochs=4)
    assert len(iterates) == len(model.objective_) == 4
    for (P, Q), obj in zip(iterates, model.objective_):
        assert obj == pytest.approx(formula_objective(X, P, Q, params), rel=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cg_long_rows_in_place_equal_gathered(rng, dtype):
    # the in-place path does the gathered path's arithmetic in the same order: same bits
    _, args, P0, bounds = _system(rng, OBJECTIVE_PARAMS[2], d=16, dtype=dtype, density=0.5)
    status = np.zeros(P0.shape[0], np.int8)
    gathered = P0.copy()
    solve_cg(*args, gathered, bounds, 3, 25, status)
    for gather_max in (1, 5, 12):
        P = P0.copy()
        solve_cg(*args, P, bounds, 3, 25, status, gather_max=gather_max)
        np.testing.assert_array_equal(P, gathered)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_rows", [0, 3, 9000])
def test_square_sums_are_the_float64_gram_diagonal_and_row_norms(rng, dtype, n_rows):
    A = rng.standard_normal((n_rows, 9)).astype(dtype)
    w = rng.uniform(0.1, 3.0, n_rows)
    A64 = A.astype(np.float64)
    before = A.copy()
    for weights in (None, w):
        results = []
        for threads in (1, 2):
            with numba_threads(threads):
                results.append(square_sums(A, weights))
        norms, diagonal = results[0]
        want = np.einsum("rd,rd,r->d", A64, A64, np.ones(n_rows) if weights is None else w)
        np.testing.assert_allclose(norms, np.einsum("rd,rd->r", A64, A64), rtol=1e-13)
        np.testing.assert_allclose(diagonal, want, rtol=1e-13)
        np.testing.assert_allclose(
            diagonal, np.diagonal(weighted_gram(A, weights, dtype=np.float64)), rtol=1e-13
        )
        for got, again in zip(results[0], results[1]):
            np.testing.assert_array_equal(got, again)
    np.testing.assert_array_equal(A, before)


@pytest.mark.parametrize("d", [12, 13])
def test_rotate_rows_in_place_equals_copy(rng, d):
    A = rng.standard_normal((150, d)).astype(np.float32)
    V = np.linalg.qr(rng.standard_normal((d, d)))[0].astype(np.float32)
    want = rotate_rows(A, V)
    rotate_rows(A, V, out=A)
    np.testing.assert_array_equal(A, want)


@pytest.mark.parametrize("d", [9, 40])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_rows", [0, 3, 700, 9000])
def test_weighted_gram_matches_numpy_for_any_thread_count(rng, dtype, n_rows, d):
    # row ranges and pieces of fixed size: 9000 rows span several pieces (256 float32 or 128
    # float64 rows) per range, 3 rows leave most ranges empty; d = 9 is not a multiple of the
    # float64 kernel's 4 x 2 tiles and narrower than float32's 16-column register tiles, d = 40
    # fills 6 x 16 tiles and leaves edges
    A = rng.standard_normal((n_rows, d)).astype(dtype)
    w = rng.uniform(0.1, 3.0, n_rows)
    tol = 1e-12 if dtype == np.float64 else 1e-4
    for weights in (None, w):
        want = A.astype(np.float64).T @ (
            A.astype(np.float64) * (1.0 if weights is None else weights[:, None])
        )
        results = []
        for threads in (1, 2):
            with numba_threads(threads):
                results.append(weighted_gram(A, weights))
        assert results[0].dtype == dtype and results[0].shape == (d, d)
        scale = max(1.0, np.abs(want).max())
        np.testing.assert_allclose(results[0], want, atol=tol * scale)
        np.testing.assert_array_equal(results[0], results[1])
        np.testing.assert_array_equal(results[0], results[0].T)
        # summed in float64 from the rows as they are (float32 rows converted piece by
        # piece): as exact as the float64 reference, and A is left as it was
        before = A.copy()
        wide = weighted_gram(A, weights, dtype=np.float64)
        assert wide.dtype == np.float64
        np.testing.assert_allclose(wide, want, atol=1e-12 * scale)
        np.testing.assert_array_equal(A, before)


@pytest.mark.parametrize("d", [12, 13])
def test_rotation_does_not_depend_on_batch(rng, d):
    # fold-in of a batch must give the same factors as of the whole matrix: each row's rotated
    # value may not depend on the rows rotated with it (an odd d has a last column of its own)
    A = rng.standard_normal((150, d)).astype(np.float32)
    V = np.linalg.qr(rng.standard_normal((d, d)))[0].astype(np.float32)
    whole = rotate_rows(A, V)
    np.testing.assert_allclose(whole, A.astype(float) @ V.astype(float), atol=1e-5)
    for start, size in [(0, 1), (3, 7), (60, 70), (149, 1)]:
        np.testing.assert_array_equal(
            rotate_rows(A[start : start + size], V), whole[start : start + size]
        )


@pytest.mark.parametrize("params", OBJECTIVE_PARAMS[::2], ids=lambda p: p["objective"])
def test_cg_and_block_converge_to_cholesky(rng, params):
    _, args, P0, bounds = _system(rng, params)
    exact = P0.copy()
    status = np.zeros(P0.shape[0], np.int8)
    solve_cholesky(*args, exact, bounds, status)
    f0 = _row_objective(args, P0)
    cg_err, block_err = [], []
    for steps in (1, 3, 7, 20):
        P = P0.copy()
        solve_cg(*args, P, bounds, steps, 20, status)
        assert not status.any()
        cg_err.append(np.abs(P - exact).max())
        assert np.all(_row_objective(args, P) <= f0 + 1e-12)
    for sweeps in (1, 3, 10, 300):
        P = P0.copy()
        solve_block(*args, P, bounds, 2, sweeps, 20, status)
        assert not status.any()
        block_err.append(np.abs(P - exact).max())
        assert np.all(_row_objective(args, P) <= f0 + 1e-12)
    eigen_err = []
    for sweeps in (1, 3, 10, 300):
        P = P0.copy()
        solve_block_eigen(*args, P, bounds, 2, sweeps, 20, status, exact_max_entries=0)
        assert not status.any()
        eigen_err.append(np.abs(P - exact).max())
        assert np.all(_row_objective(args, P) <= f0 + 1e-12)
    assert cg_err[-1] < 1e-9 and block_err[-1] < 1e-7, (cg_err, block_err)
    assert cg_err[0] > cg_err[-1] and block_err[0] > block_err[1] > block_err[-1]
    assert eigen_err[0] > eigen_err[1] > eigen_err[-1] and eigen_err[-1] < 1e-7, eigen_err
    # one block of full size is the exact solve
    P = P0.copy()
    solve_block(*args, P, bounds, P.shape[1], 1, 20, status)
    np.testing.assert_allclose(P, exact, atol=1e-11)


def _block_sweeps_reference(args, P0, block_size, n_sweeps):
    """iALS++ written out: per block, numpy.linalg.solve of the block's normal equations."""
    P = P0.astype(np.float64).copy()
    d = P.shape[1]
    for u in range(P.shape[0]):
        A, rhs_u = _row_normal_equations(args, u)
        for _ in range(n_sweeps):
            for s in range(0, d, block_size):
                B = slice(s, min(s + block_size, d))
                others = rhs_u[B] - A[B] @ P[u] + A[B, B] @ P[u, B]
                P[u, B] = np.linalg.solve(A[B, B], others)
    return P


@pytest.mark.parametrize("block_size", [1, 3, 4, 7])
@pytest.mark.parametrize("params", OBJECTIVE_PARAMS[1::2], ids=lambda p: p["objective"])
def test_block_sweeps_match_numpy_reference(rng, params, block_size):
    # d = 7: blocks of 3 leave a last block of 1; rows of 0 to 16 entries take both the
    # four-entry and the one-entry paths of the kernel
    _, args, P0, bounds = _system(rng, params)
    status = np.zeros(P0.shape[0], np.int8)
    for sweeps in (1, 2):
        P = P0.copy()
        solve_block(*args, P, bounds, block_size, sweeps, 20, status)
        assert not status.any()
        np.testing.assert_allclose(
            P, _block_sweeps_reference(args, P0, block_size, sweeps), atol=1e-10
        )


def _eigen_block_reference(args, P0, block_size, n_sweeps):
    """iALS++ over eigenvector blocks written out: each row's normal equations turned into
    the eigenbasis of the Gram matrix (numpy.linalg.eigh), numpy.linalg.solve per block."""
    indptr, gram = args[0], args[6]
    V = np.linalg.eigh(gram)[1]
    Z = P0.astype(np.float64) @ V
    d = Z.shape[1]
    for u in range(Z.shape[0]):
        if indptr[u] == indptr[u + 1]:
            Z[u] = 0
            continue
        A, b = _row_normal_equations(args, u)
        A, b = V.T @ A @ V, V.T @ b
        for _ in range(n_sweeps):
            for s in range(0, d, block_size):
                B = slice(s, min(s + block_size, d))
                Z[u, B] = np.linalg.solve(A[B, B], b[B] - A[B] @ Z[u] + A[B, B] @ Z[u, B])
    return Z @ V.T


@pytest.mark.parametrize("block_size", [1, 3, 7])
@pytest.mark.parametrize("params", OBJECTIVE_PARAMS[::2], ids=lambda p: p["objective"])
def test_eigen_block_sweeps_match_numpy_reference(rng, params, block_size):
    _, args, P0, bounds = _system(rng, params)
    status = np.zeros(P0.shape[0], np.int8)
    for sweeps in (1, 2):
        P = P0.copy()
        solve_block_eigen(*args, P, bounds, block_size, sweeps, 20, status, exact_max_entries=0)
        assert not status.any()
        np.testing.assert_allclose(
            P, _eigen_block_reference(args, P0, block_size, sweeps), atol=1e-10
        )


def test_eigen_block_long_rows_match_numpy_reference(rng):
    # rows of about 300 entries: a block's Hessian sums its entries in several pieces
    _, args, P0, bounds = _system(rng, OBJECTIVE_PARAMS[0], d=9, density=0.6, shape=(5, 500))
    assert np.diff(args[0]).min() > 2 * 128
    status = np.zeros(P0.shape[0], np.int8)
    P = P0.copy()
    max_row = int(np.diff(args[0]).max())
    solve_block_eigen(*args, P, bounds, 4, 2, max_row, status, exact_max_entries=0)
    assert not status.any()
    np.testing.assert_allclose(P, _eigen_block_reference(args, P0, 4, 2), atol=1e-10)


@pytest.mark.parametrize("params", OBJECTIVE_PARAMS, ids=lambda p: p["objective"])
def test_eigen_block_solves_short_rows_exactly(rng, params):
    # rows with fewer entries than factors and no negative weight take the exact Woodbury
    # solve; the others the block sweeps
    _, args, P0, bounds = _system(rng, params)
    indptr, extra = args[0], args[2]
    status = np.zeros(P0.shape[0], np.int8)
    P = P0.copy()
    solve_block_eigen(*args, P, bounds, 2, 1, 20, status, exact_max_entries=6)
    exact = P0.copy()
    solve_cholesky(*args, exact, bounds, status)
    sweeps = _eigen_block_reference(args, P0, 2, 1)
    short = np.array(
        [
            indptr[u + 1] - indptr[u] < 7 and np.all(extra[indptr[u] : indptr[u + 1]] >= 0)
            for u in range(P.shape[0])
        ]
    )
    assert short.sum() >= 3 and (~short).sum() >= 3
    np.testing.assert_allclose(P[short], exact[short], atol=1e-11)
    np.testing.assert_allclose(P[~short], sweeps[~short], atol=1e-10)
    assert np.abs(P[~short] - exact[~short]).max() > 1e-6  # one sweep is not the solution


@pytest.mark.parametrize(
    ("d", "block_size", "sweeps"),
    [(7, 2, 1), (64, 32, 1), (256, 64, 1), (256, 64, 3), (512, 128, 2)],
)
def test_block_exact_bound_is_the_cost_crossing(d, block_size, sweeps):
    def exact_cost(n):
        return n * n * d / 2 + n**3 / 6

    n = block_exact_max_entries_for(d, block_size, sweeps)
    assert 1 <= n < d
    assert exact_cost(n) <= sweeps * n * d * block_size
    assert n == d - 1 or exact_cost(n + 1) > sweeps * (n + 1) * d * block_size


def test_data_term_matches_numpy(rng):
    params = OBJECTIVE_PARAMS[2]
    X, args, P0, bounds = _system(rng, params, dtype=np.float32)
    indptr, indices, extra, rhs, _, _, _, Q = args
    got = data_term(indptr, indices, extra, rhs, P0, Q, bounds)
    rows = np.repeat(np.arange(X.shape[0]), np.diff(indptr))
    y = np.einsum("nd,nd->n", P0[rows].astype(float), Q[indices].astype(float))
    want = np.sum(extra * y**2 - 2 * rhs * y + rhs.astype(float))
    assert got == pytest.approx(want, rel=1e-10)


# ---------------------------------------------------------------------------- estimator
def test_float32_default_close_to_float64(rng):
    X = random_interactions(rng, 80, 50)
    m32 = IALS(n_factors=8, n_epochs=4, random_state=1, n_jobs=1, solver="cholesky").fit(X)
    m64 = IALS(
        n_factors=8, n_epochs=4, random_state=1, n_jobs=1, solver="cholesky", dtype="float64"
    ).fit(X)
    assert m32.user_factors_.dtype == np.float32 and m64.item_factors_.dtype == np.float64
    np.testing.assert_allclose(m32.item_factors_, m64.item_factors_, atol=1e-3)


@pytest.mark.parametrize("solver", SOLVER_VARIANTS)
def test_deterministic(rng, solver):
    X = random_interactions(rng, 80, 50)
    kw = dict(n_factors=8, n_epochs=3, random_state=3, n_jobs=2, block_size=3)
    kw.update(SOLVER_VARIANTS[solver])
    a = IALS(**kw).fit(X)
    b = IALS(**kw).fit(X)
    np.testing.assert_array_equal(a.item_factors_, b.item_factors_)
    np.testing.assert_array_equal(a.user_factors_, b.user_factors_)
    assert a.objective_ == b.objective_


def test_transform_folds_in_new_users(rng):
    X = random_interactions(rng, 80, 50)
    params = dict(objective="debiased_chuang", unobserved_weight=0.5, regularization=0.1)
    model = IALS(n_factors=6, n_epochs=3, random_state=0, dtype="float64", **params).fit(X)
    new = random_interactions(np.random.default_rng(5), 7, 50)
    new = sp.vstack([new, sp.csr_matrix((1, 50))]).tocsr()  # plus one empty history
    P = model.transform(new)
    M, L = dense_coefficients(new[:-1], params)  # the reference needs non-empty rows
    Q = model.item_factors_
    for u in range(new.shape[0] - 1):
        A = Q.T @ (M[u][:, None] * Q) + 0.1 * np.eye(6)
        np.testing.assert_allclose(P[u], np.linalg.solve(A, Q.T @ L[u]), atol=1e-10)
    assert np.all(P[-1] == 0)
    np.testing.assert_allclose(model.predict(new), P @ Q.T, atol=1e-12)


def test_recommend_similar_and_save_load(rng, tmp_path):
    X = random_interactions(rng, 80, 50)
    model = IALS(n_factors=6, n_epochs=3, random_state=0).fit(X)
    ids, _ = model.recommend(X[:5], k=5)
    assert ids.shape == (5, 5)
    assert not any(set(ids[r]) & set(X[r].indices) for r in range(5))
    _, sim = model.similar_items([0, 3], k=4)
    Q = model.item_factors_.astype(float)
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    np.testing.assert_allclose(sim[0], np.sort(np.delete(Qn @ Qn[0], 0))[::-1][:4], atol=1e-6)
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = IALS.load(path)
    np.testing.assert_array_equal(loaded.predict(X[:4]), model.predict(X[:4]))


def test_validation_early_stopping_and_callback(rng):
    X = random_interactions(rng, 120, 60, density=0.2)
    rows, cols = X.nonzero()
    held = rng.random(rows.size) < 0.2
    train = sp.csr_matrix((np.ones((~held).sum()), (rows[~held], cols[~held])), shape=X.shape)
    keep = np.diff(train.indptr) > 0
    train = train[keep]
    val = sp.csr_matrix((np.ones(held.sum()), (rows[held], cols[held])), shape=X.shape)[keep]
    seen, direct, items = [], [], []

    def record(model, epoch):
        # the validation recall equals linrec.metrics.evaluate on the current factors,
        # and the LightGCN definition computed by hand
        seen.append(epoch)
        items.append(model.item_factors_.copy())
        res = evaluate(model, train, val, k=(20,), metrics=("recall",), fold_in=False)
        scores = model.user_factors_ @ model.item_factors_.T
        scores[train.nonzero()] = -np.inf
        users = np.flatnonzero(np.diff(val.indptr) > 0)
        recall = []
        for u in users:
            top = np.lexsort((np.arange(scores.shape[1]), -scores[u]))[:20]
            recall.append(np.isin(top, val[u].indices).sum() / val[u].nnz)
        direct.append((res.mean("recall", 20), np.mean(recall)))

    model = IALS(
        n_factors=8, n_epochs=30, early_stopping_rounds=2, random_state=0, regularization=0.5
    )
    model.fit(train, validation_data=val, callback=record)
    assert seen == list(range(1, model.n_epochs_ + 1))
    assert model.n_epochs_ < 30
    assert len(model.validation_scores_) == model.n_epochs_
    assert model.validation_scores_[model.best_epoch_ - 1] == max(model.validation_scores_)
    # the kept item factors are the best epoch's, as the callback saw them
    assert model.best_epoch_ < model.n_epochs_
    np.testing.assert_array_equal(model.item_factors_, items[model.best_epoch_ - 1])
    for got, (via_evaluate, by_hand) in zip(model.validation_scores_, direct):
        assert got == pytest.approx(via_evaluate, abs=1e-12)
        assert got == pytest.approx(by_hand, abs=1e-9)
    stopped = IALS(n_factors=8, n_epochs=2, random_state=0).fit(train, callback=lambda m, e: e == 1)
    assert stopped.n_epochs_ == 1


def test_ill_posed_settings_raise_clear_errors(rng):
    X = random_interactions(rng, 30, 10)
    with pytest.raises(ValueError, match="regularization=0 with n_factors=12"):
        IALS(n_factors=12, regularization=0.0).fit(X)
    with pytest.raises(ValueError, match="negative weight"):
        IALS(
            objective="debiased_chuang", unobserved_weight=5.0, prior_inflation=3.0, n_factors=4
        ).fit(X)
    with pytest.raises(ValueError, match="tau_u < 1"):
        IALS(objective="debiased_chuang", prior_inflation=50.0, n_factors=4).fit(X)
    with pytest.raises(ValueError, match="confidence_scale"):
        IALS(confidence_scale=2.0).fit(X)
    with pytest.raises(ValueError, match="solver"):
        IALS(solver="lu").fit(X)
    with pytest.raises(ValueError, match="block_basis must be one of"):
        IALS(solver="ialspp", block_basis="random").fit(X)
    with pytest.raises(ValueError, match="class_prior"):
        IALS(objective="debiased_pu", class_prior=np.full(3, 0.1)).fit(X)
    # overflowing weights in float32: a named error, never NaN factors
    with pytest.raises((FloatingPointError, np.linalg.LinAlgError), match="epoch 1"):
        IALS(
            objective="hu",
            confidence_scale=1e38,
            unobserved_weight=1.0,
            n_factors=4,
            regularization=1e-3,
        ).fit(X * 3)


# ------------------------------------------------------------ popularity-weighted unobserved
# item_weight_exponent (beta) != 0: the unobserved entry (u, i) weighs C_u g_i. The reference
# above materialises the whole weight matrix M with g; the estimator uses the weighted Gram.
ITEM_WEIGHTED_PARAMS = [
    dict(p, item_weight_exponent=beta, item_weight_normalization=norm)
    for p, beta, norm in [
        (OBJECTIVE_PARAMS[1], 0.5, "mean_count"),
        (OBJECTIVE_PARAMS[0], -0.75, "unit_mean"),
        (OBJECTIVE_PARAMS[2], 0.8, "unit_mean"),
        (NEGATIVE_EXTRA, 1.0, "mean_count"),
        (OBJECTIVE_PARAMS[4], -0.5, "mean_count"),
        (OBJECTIVE_PARAMS[5], 0.6, "unit_mean"),
    ]
]


def _item_id(p):
    return f"{p['objective']}-{p['item_weight_exponent']}-{p['item_weight_normalization']}"


def _every_item_counted(rng, n_users=40, n_items=30):
    # beta < 0 needs a training interaction on every item: add one per empty column
    X = _counts(rng, n_users, n_items).tolil()
    for i in np.flatnonzero(np.asarray((X != 0).sum(0)).ravel() == 0):
        X[int(rng.integers(n_users)), i] = 1.0
    return X.tocsr()


@pytest.mark.parametrize("params", ITEM_WEIGHTED_PARAMS, ids=_item_id)
def test_item_weighted_coefficients_match_formula_objective(rng, params):
    X = _every_item_counted(rng)
    P = rng.standard_normal((X.shape[0], 4))
    Q = rng.standard_normal((X.shape[1], 4))
    assert np.ptp(popularity_weights(X, params)) > 0.5  # the weights really vary
    assert coefficient_objective(X, P, Q, params) == pytest.approx(
        formula_objective(X, P, Q, params), rel=1e-12
    )


@pytest.mark.parametrize("params", ITEM_WEIGHTED_PARAMS, ids=_item_id)
def test_item_weighted_cholesky_iterates_equal_dense_reference(rng, params):
    X = _every_item_counted(rng)
    model, iterates, (P0, Q0) = _fit_with_iterates(X, params)
    np.testing.assert_allclose(model.item_weights_, popularity_weights(X, params), rtol=1e-14)
    ref = reference_als(X, P0, Q0, params, 3)
    for (P, Q), (Pr, Qr), obj in zip(iterates, ref, model.objective_):
        np.testing.assert_allclose(P, Pr, rtol=0, atol=1e-10)
        np.testing.assert_allclose(Q, Qr, rtol=0, atol=1e-10)
        # the reported (weighted Gram trick) objective equals the dense float64 evaluation
        assert obj == pytest.approx(coefficient_objective(X, P, Q, params), rel=1e-10)
    assert np.all(np.diff(model.objective_) <= 1e-12 * abs(model.objective_[0]))
    np.testing.assert_allclose(model.transform(X), model.user_factors_, atol=1e-12)


@pytest.mark.parametrize("precondition", [True, False], ids=["preconditioned", "plain"])
@pytest.mark.parametrize("params", OBJECTIVE_PARAMS[::2], ids=lambda p: p["objective"])
def test_zero_start_cg_fit_converges_to_cholesky(rng, params, precondition):
    # from zero, the common-basis fit never rotates the solved rows: with d = 5 steps each
    # row's CG is exact, so the fit follows the exact solver's iterates
    X = _counts(rng)
    _, exact, _ = _fit_with_iterates(X, params, n_epochs=3)
    errors = []
    for steps in (1, 2, 5):
        model, iterates, _ = _fit_with_iterates(
            X,
            params,
            solver="cg",
            cg_steps=steps,
            cg_warm_start=False,
            cg_precondition=precondition,
        )
        errors.append(max(np.abs(Q - Qe).max() for (_, Q), (_, Qe) in zip(iterates, exact)))
        for (P, Q), obj in zip(iterates, model.objective_):
            assert obj == pytest.approx(formula_objective(X, P, Q, params), rel=1e-10)
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-9, errors


@pytest.mark.parametrize("name", ["cg_precondition", "cg_warm_start"])
def test_cg_switches_must_be_bool(rng, name):
    X = random_interactions(rng, 20, 10)
    X = X[np.diff(X.indptr) > 0]
    with pytest.raises(TypeError, match=f"{name} must be True or False"):
        IALS(n_factors=3, n_epochs=1, **{name: "yes"}).fit(X)


@pytest.mark.parametrize("block_basis", ["eigen", "coordinate"])
@pytest.mark.parametrize("params", ITEM_WEIGHTED_PARAMS[::3], ids=_item_id)
def test_item_weighted_cg_and_block_converge_to_cholesky(rng, params, block_basis):
    X = _every_item_counted(rng)
    exact, _, _ = _fit_with_iterates(X, params, n_epochs=2)
    cg_err, block_err = [], []
    for steps in (1, 3, 12):
        cg, _, _ = _fit_with_iterates(X, params, solver="cg", n_epochs=2, cg_steps=steps)
        cg_err.append(np.abs(cg.item_factors_ - exact.item_factors_).max())
    for sweeps in (1, 5, 300):
        block, _, _ = _fit_with_iterates(
            X,
            params,
            solver="ialspp",
            n_epochs=2,
            block_size=2,
            block_sweeps=sweeps,
            block_basis=block_basis,
        )
        block_err.append(np.abs(block.item_factors_ - exact.item_factors_).max())
    assert cg_err[0] > cg_err[1] > cg_err[2] and cg_err[2] < 1e-9, cg_err
    assert block_err[0] > block_err[1] > block_err[2] and block_err[2] < 1e-7, block_err


def test_item_weighted_transform_folds_in_new_users(rng):
    X = _every_item_counted(rng, 80, 50)
    params = dict(
        objective="debiased_chuang",
        unobserved_weight=0.5,
        regularization=0.1,
        item_weight_exponent=0.7,
    )
    model = IALS(n_factors=6, n_epochs=3, random_state=0, dtype="float64", **params).fit(X)
    new = random_interactions(np.random.default_rng(5), 7, 50)
    P = model.transform(new)
    # the new users' unobserved entries keep the training popularity weights
    M, L = dense_coefficients(new, params, counts_from=X)
    Q = model.item_factors_
    for u in range(new.shape[0]):
        A = Q.T @ (M[u][:, None] * Q) + 0.1 * np.eye(6)
        np.testing.assert_allclose(P[u], np.linalg.solve(A, Q.T @ L[u]), atol=1e-10)


@pytest.mark.parametrize("solver", ["cholesky", "cg", "ialspp"])
def test_item_weighted_float32_objective_and_save_load(rng, tmp_path, solver):
    X = _every_item_counted(rng, 60, 40)
    params = dict(
        objective="rendle", unobserved_weight=0.2, regularization=0.05, item_weight_exponent=0.5
    )
    kw = dict(n_factors=5, n_epochs=3, solver=solver, block_size=2, random_state=0, n_jobs=2)
    seen = []
    m32 = IALS(**kw, **params).fit(
        X, callback=lambda m, e: seen.append((m.user_factors_.copy(), m.item_factors_.copy()))
    )
    m64 = IALS(**kw, **params, dtype="float64").fit(X)
    assert m32.item_weights_.dtype == np.float32
    np.testing.assert_allclose(m32.item_factors_, m64.item_factors_, atol=1e-4)
    # the reported objective of the float32 factors equals the dense float64 evaluation (up
    # to the float32 rounding of the weights g)
    for (P, Q), obj in zip(seen, m32.objective_):
        dense = coefficient_objective(X, P.astype(np.float64), Q.astype(np.float64), params)
        assert obj == pytest.approx(dense, rel=1e-6)
    path = tmp_path / "m.npz"
    m32.save(path)
    loaded = IALS.load(path)
    np.testing.assert_array_equal(loaded.item_weights_, m32.item_weights_)
    np.testing.assert_array_equal(loaded.predict(X[:6]), m32.predict(X[:6]))
    assert IALS(**kw, **params).fit(X).objective_ == m32.objective_  # deterministic


@pytest.mark.parametrize(
    ("solver", "objective"),
    [("cholesky", "hu"), ("cg", "rendle"), ("ialspp", "debiased_pu")],
)
def test_item_weight_exponent_zero_is_the_unweighted_estimator(rng, solver, objective):
    X = _counts(rng)
    kw = dict(
        n_factors=5,
        n_epochs=2,
        solver=solver,
        block_size=2,
        objective=objective,
        unobserved_weight=0.4,
        regularization=0.05,
        random_state=0,
        n_jobs=2,
    )
    base = IALS(**kw).fit(X)
    for norm in ("mean_count", "unit_mean"):
        zero = IALS(**kw, item_weight_exponent=0.0, item_weight_normalization=norm).fit(X)
        np.testing.assert_array_equal(zero.item_weights_, np.ones(X.shape[1], np.float32))
        np.testing.assert_array_equal(zero.item_factors_, base.item_factors_)
        np.testing.assert_array_equal(zero.user_factors_, base.user_factors_)
        assert zero.objective_ == base.objective_
        np.testing.assert_array_equal(zero.transform(X[:5]), base.transform(X[:5]))
    # and a non-zero exponent really changes the fit
    other = IALS(**kw, item_weight_exponent=0.5).fit(X)
    assert np.abs(other.item_factors_ - base.item_factors_).max() > 1e-3


def test_item_weight_kernels_take_weighted_gram(rng):
    # kernel level: the user half-step's system is C_u sum_i g_i q_i q_i^T + ..., i.e. the
    # same kernels with the g-weighted Gram matrix; item rows with their own weights g_i
    _, args, P0, bounds = _system(rng, OBJECTIVE_PARAMS[4], d=8)
    indptr, indices, extra, rhs, c, reg, _, Q = args
    g = rng.uniform(0.2, 3.0, size=Q.shape[0])
    gram = np.ascontiguousarray((Q * g[:, None]).T @ Q)
    row_weight = c * rng.uniform(0.5, 2.0, size=c.shape[0])
    args = (indptr, indices, extra, rhs, row_weight, reg, gram, Q)
    status = np.zeros(P0.shape[0], np.int8)
    exact = P0.copy()
    solve_cholesky(*args, exact, bounds, status)
    assert not status.any()
    for u in range(exact.shape[0]):
        sl = slice(indptr[u], indptr[u + 1])
        Qu = Q[indices[sl]]
        A = row_weight[u] * (Q.T @ (g[:, None] * Q)) + Qu.T @ (extra[sl][:, None] * Qu)
        A += reg[u] * np.eye(8)
        np.testing.assert_allclose(exact[u], np.linalg.solve(A, Qu.T @ rhs[sl]), atol=1e-11)
    P = P0.copy()
    solve_cg(*args, P, bounds, 40, 20, status)
    np.testing.assert_allclose(P, exact, atol=1e-9)
    P = P0.copy()
    solve_block(*args, P, bounds, 8, 1, 20, status)
    np.testing.assert_allclose(P, exact, atol=1e-11)


def test_item_weight_bad_values_raise(rng):
    X = random_interactions(rng, 30, 12)
    X = X[:, np.flatnonzero(np.diff(X.tocsc().indptr) > 0)]  # every item has a count
    with_empty = sp.hstack([X, sp.csr_matrix((X.shape[0], 1))]).tocsr()
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match="item_weight_exponent must be finite"):
            IALS(n_factors=3, item_weight_exponent=bad).fit(X)
    with pytest.raises(TypeError, match="item_weight_exponent must be a real number"):
        IALS(n_factors=3, item_weight_exponent="0.5").fit(X)
    with pytest.raises(ValueError, match="item_weight_normalization must be one of"):
        IALS(n_factors=3, item_weight_exponent=0.5, item_weight_normalization="sum").fit(X)
    with pytest.raises(ValueError, match="overflow"):
        IALS(n_factors=3, item_weight_exponent=1e4).fit(X * 1.0)
    with pytest.raises(ValueError, match="at least one item with training interactions"):
        item_weights(np.zeros(4), 0.5)
    # an item without interactions gets weight 0 for either sign of beta (finite, and its
    # factor is zero whatever its weight); the other items' weights follow the formula
    for beta in (0.5, -0.5):
        model = IALS(n_factors=3, n_epochs=2, item_weight_exponent=beta, random_state=0)
        model.fit(with_empty)
        counts = np.bincount(with_empty.indices, minlength=with_empty.shape[1])
        assert model.item_weights_[-1] == 0 and np.all(model.item_factors_[-1] == 0)
        np.testing.assert_allclose(
            model.item_weights_[:-1], (counts[:-1] / counts.mean()) ** beta, rtol=1e-6
        )
        assert np.isfinite(model.objective_).all()


class TestIALSContract(RecommenderContract):
    expected_failed_checks: ClassVar[dict[str, str]] = {
        **RecommenderContract.expected_failed_checks,
        "check_transformer_preserve_dtypes": (
            "factors follow the dtype parameter (float32 by default), as every linrec model"
        ),
    }

    def make_estimator(self):
        return IALS(n_factors=4, n_epochs=2, random_state=0, n_jobs=1)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("solver", ["cg", "cholesky", "ialspp"])
def test_record_objective_false_skips_only_the_objective(rng, solver, dtype):
    # the objective reuses the half-steps' Gram matrices: they see the same ones either way
    X = random_interactions(rng, 40, 25)
    params = dict(n_factors=4, n_epochs=3, solver=solver, block_size=2, random_state=0, dtype=dtype)
    recorded = IALS(**params).fit(X)
    skipped = IALS(**params, record_objective=False).fit(X)
    assert len(recorded.objective_) == 3
    assert skipped.objective_ == []
    np.testing.assert_array_equal(skipped.user_factors_, recorded.user_factors_)
    np.testing.assert_array_equal(skipped.item_factors_, recorded.item_factors_)
    with pytest.raises(TypeError, match="record_objective must be True or False"):
        IALS(record_objective="no").fit(X)


@pytest.mark.parametrize("solver", ["cg", "cholesky", "ialspp"])
def test_float32_objective_is_the_float64_sum_at_the_factors_in_the_fit(rng, solver, monkeypatch):
    # the objective shares the half-steps' float32 Gram matrices (for the off-diagonal
    # correction only) and CG's float32 products: J summed in float64 from the factors as the
    # fit holds them (in its common basis) agrees to 1e-8
    X = random_interactions(rng, 400, 300)
    errors = []
    objective = IALS._objective

    def checked(self, user_side, P, Q, item_reg, *args, **kwargs):
        got = objective(self, user_side, P, Q, item_reg, *args, **kwargs)
        indptr, indices, extra, rhs, row_weight, user_reg, _ = user_side
        P64, Q64 = P.astype(np.float64), Q.astype(np.float64)
        want = np.sum(row_weight[:, None] * P64 * (P64 @ (Q64.T @ Q64)))
        for u in range(P.shape[0]):
            sl = slice(indptr[u], indptr[u + 1])
            y = Q64[indices[sl]] @ P64[u]
            want += np.sum(extra[sl] * y**2 - 2 * rhs[sl] * y + rhs[sl])
        want += user_reg @ np.sum(P64**2, axis=1) + item_reg @ np.sum(Q64**2, axis=1)
        errors.append(abs(got / want - 1))
        return got

    monkeypatch.setattr(IALS, "_objective", checked)
    model = IALS(n_factors=16, n_epochs=3, solver=solver, block_size=4, random_state=0)
    model.fit(X)
    assert len(errors) == 3 and model.user_factors_.dtype == np.float32
    assert max(errors) < 1e-8, errors


def test_final_user_step_solver_is_one_more_half_step_of_the_fit_solver(rng):
    # Rendle's objective: each user's shared part is w Q^T Q + lam I, CG's preconditioner.
    # One CG step leaves the rows far from the exact fold-in, so the two final steps differ.
    params = OBJECTIVE_PARAMS[0]
    X = _counts(rng)
    model, iterates, _ = _fit_with_iterates(
        X, params, solver="cg", cg_steps=1, final_user_step="solver"
    )
    P_last, Q = iterates[-1]
    np.testing.assert_array_equal(model.item_factors_, Q)
    M, L = dense_coefficients(X, params)
    d = Q.shape[1]
    shared = params["unobserved_weight"] * Q.T @ Q + params["regularization"] * np.eye(d)
    for u in range(X.shape[0]):
        A = Q.T @ (M[u][:, None] * Q) + params["regularization"] * np.eye(d)
        want = reference_cg(A, Q.T @ L[u], P_last[u], 1, shared)
        np.testing.assert_allclose(model.user_factors_[u], want, atol=1e-10)
    assert np.abs(model.user_factors_ - model.transform(X)).max() > 1e-3
    exact, _, _ = _fit_with_iterates(X, params, solver="cg", cg_steps=1)
    np.testing.assert_allclose(exact.user_factors_, exact.transform(X), atol=1e-12)
    np.testing.assert_array_equal(exact.item_factors_, model.item_factors_)
    # for the exact solver the two final steps are the same step
    by_solver, _, _ = _fit_with_iterates(X, params, final_user_step="solver")
    by_exact, _, _ = _fit_with_iterates(X, params)
    np.testing.assert_array_equal(by_solver.user_factors_, by_exact.user_factors_)
    with pytest.raises(ValueError, match="final_user_step must be one of"):
        IALS(final_user_step="cg").fit(X)


@pytest.mark.parametrize("shape", [(40, 25), (1, 7), (7, 1), (30, 60)])
def test_transpose_order_equals_scipy_transpose(rng, shape):
    # reference: the transpose of a matrix holding each entry's position, by scipy
    X = random_interactions(rng, *shape, density=0.3, binary=False)
    X = sp.vstack([X, sp.csr_matrix((2, shape[1]))]).tocsr()  # empty rows, and columns
    order = sp.csr_matrix((np.arange(X.nnz) + 1.0, X.indices, X.indptr), shape=X.shape)
    T = order.T.tocsr()
    T.sort_indices()
    indptr, indices, perm = transpose_order(
        X.indptr.astype(np.int64), X.indices.astype(np.int64), X.shape[1]
    )
    np.testing.assert_array_equal(indptr, T.indptr)
    np.testing.assert_array_equal(indices, T.indices)
    np.testing.assert_array_equal(perm, T.data.astype(np.int64) - 1)
    np.testing.assert_array_equal(X.data[perm], X.T.tocsr().data)  # entries in column order


# ---------------------------------------------------------------------------- hard negatives
def reference_hard_mask(X, P, Q, k):
    """1 on each user's k best-scored unobserved items (ties to the lower index)."""
    Y = P @ Q.T
    Y[X.toarray() > 0] = -np.inf
    mask = np.zeros(Y.shape)
    for u in range(Y.shape[0]):
        order = np.lexsort((np.arange(Y.shape[1]), -Y[u]))
        eligible = order[np.isfinite(Y[u, order])][:k]
        mask[u, eligible] = 1.0
    return mask


def reference_hard_als(X, P, Q, p, n_epochs, k, weight):
    """Dense exact ALS whose weights gain ``weight`` on the hard negatives mined before each
    epoch; returns the iterates and each epoch's objective under its own hard negatives."""
    M0, L = dense_coefficients(X, p)
    r_u, r_i = reg_scales(X, p)
    lam = p["regularization"]
    P, Q = P.astype(float).copy(), Q.astype(float).copy()
    iterates, objectives = [], []
    for _ in range(n_epochs):
        M = M0 + weight * reference_hard_mask(X, P, Q, k)
        P = exact_rows(Q, M, L, lam * r_u)
        Q = exact_rows(P, M.T, L.T, lam * r_i)
        iterates.append((P.copy(), Q.copy()))
        Y = P @ Q.T
        reg = lam * (r_u @ np.sum(P**2, 1) + r_i @ np.sum(Q**2, 1))
        objectives.append(np.sum(M * Y**2 - 2 * L * Y) + L.sum() + reg)
    return iterates, objectives


def reference_hard_fold_in(X, Q, p, k, weight):
    """Exact user rows without hard negatives, then again with those of that solution."""
    M0, L = dense_coefficients(X, p)
    reg = p["regularization"] * reg_scales(X, p)[0]
    plain = exact_rows(Q, M0, L, reg)
    return exact_rows(Q, M0 + weight * reference_hard_mask(X, plain, Q, k), L, reg)


HARD_PARAMS = [
    dict(objective="rendle", unobserved_weight=0.1, regularization=0.05, reg_exponent=1.0),
    dict(
        objective="rendle",
        unobserved_weight=0.05,
        regularization=0.02,
        item_weight_exponent=0.5,
        reg_frequency_offset=0.01,
        reg_exponent=1.0,
    ),
    dict(objective="hu", unobserved_weight=0.5, confidence_scale=2.0, regularization=0.1),
    dict(objective="debiased_pu", unobserved_weight=0.6, prior_inflation=1.5, regularization=0.05),
]


def test_with_hard_negatives_appends_each_rows_entries(rng):
    X = _counts(rng, n_users=12, n_items=15)
    indptr, indices = X.indptr.astype(np.int64), X.indices.astype(np.int64)
    extra = rng.random(X.nnz)
    rhs = rng.random(X.nnz)
    hard = np.full((12, 4), -1, dtype=np.int64)
    for u in range(12):
        free = np.setdiff1d(np.arange(15), indices[indptr[u] : indptr[u + 1]])
        n = int(rng.integers(0, 5))
        hard[u, :n] = rng.choice(free, size=min(n, free.size), replace=False)
    inputs = [a.copy() for a in (indptr, indices, extra, rhs, hard)]
    ptr, idx, e, b = with_hard_negatives(indptr, indices, extra, rhs, hard, 0.7)
    for u in range(12):
        row = slice(indptr[u], indptr[u + 1])
        mine = hard[u][hard[u] >= 0]
        new = slice(ptr[u], ptr[u + 1])
        np.testing.assert_array_equal(idx[new], np.concatenate([indices[row], mine]))
        np.testing.assert_array_equal(e[new], np.concatenate([extra[row], np.full(mine.size, 0.7)]))
        np.testing.assert_array_equal(b[new], np.concatenate([rhs[row], np.zeros(mine.size)]))
    for before, after in zip(inputs, (indptr, indices, extra, rhs, hard)):
        np.testing.assert_array_equal(before, after)  # nothing modified in place


@pytest.mark.parametrize("params", HARD_PARAMS, ids=lambda p: p["objective"])
def test_hard_negative_cholesky_iterates_equal_dense_reference(rng, params):
    X = _every_item_counted(rng)
    k, weight = 4, 0.8
    model, iterates, (P0, Q0) = _fit_with_iterates(
        X, params, hard_negatives=k, hard_negative_weight=weight
    )
    ref, ref_objectives = reference_hard_als(X, P0, Q0, params, 3, k, weight)
    for (P, Q), (Pr, Qr), obj, ref_obj in zip(iterates, ref, model.objective_, ref_objectives):
        np.testing.assert_allclose(P, Pr, rtol=0, atol=1e-10)
        np.testing.assert_allclose(Q, Qr, rtol=0, atol=1e-10)
        assert obj == pytest.approx(ref_obj, rel=1e-10)
    # the weights differ from the plain objective's: the iterates do too
    plain = reference_als(X, P0, Q0, params, 1)[0][0]
    assert np.abs(plain - iterates[0][0]).max() > 1e-3
    # the stored user factors are the two-stage exact fold-in, as transform computes it
    fold_in = reference_hard_fold_in(X, model.item_factors_, params, k, weight)
    np.testing.assert_allclose(model.user_factors_, fold_in, atol=1e-10)
    np.testing.assert_allclose(model.transform(X), fold_in, atol=1e-10)


@pytest.mark.parametrize("solver", ["cg", "ialspp"])
def test_hard_negative_objective_of_each_epoch_is_the_formula(rng, solver):
    # CG sums the data term from its own products: over the epoch's hard negatives too
    params = HARD_PARAMS[1]
    X = _every_item_counted(rng)
    k, weight = 5, 0.5
    model, iterates, (P0, Q0) = _fit_with_iterates(
        X, params, solver=solver, n_epochs=4, hard_negatives=k, hard_negative_weight=weight
    )
    M0, L = dense_coefficients(X, params)
    r_u, r_i = reg_scales(X, params)
    before = [(P0, Q0), *iterates[:-1]]
    for (Pb, Qb), (P, Q), obj in zip(before, iterates, model.objective_):
        M = M0 + weight * reference_hard_mask(X, Pb, Qb, k)
        Y = P @ Q.T
        reg = params["regularization"] * (r_u @ np.sum(P**2, 1) + r_i @ np.sum(Q**2, 1))
        assert obj == pytest.approx(np.sum(M * Y**2 - 2 * L * Y) + L.sum() + reg, rel=1e-9)


def test_hard_negatives_deterministic_and_bad_values_raise(rng):
    X = _every_item_counted(rng)
    params = dict(n_factors=4, n_epochs=3, random_state=3, hard_negatives=3)
    a = IALS(hard_negative_weight=0.2, n_jobs=2, **params).fit(X)
    b = IALS(hard_negative_weight=0.2, n_jobs=2, **params).fit(X)
    np.testing.assert_array_equal(a.user_factors_, b.user_factors_)
    np.testing.assert_array_equal(a.item_factors_, b.item_factors_)
    # more hard negatives than unobserved items: every unobserved item is one
    IALS(n_factors=4, n_epochs=2, hard_negatives=X.shape[1], hard_negative_weight=0.2).fit(X)
    with pytest.raises(ValueError, match="hard_negatives must be an integer >= 0"):
        IALS(hard_negatives=-1, hard_negative_weight=0.1).fit(X)
    with pytest.raises(ValueError, match="set both > 0"):
        IALS(hard_negatives=5).fit(X)
    with pytest.raises(ValueError, match="set both > 0"):
        IALS(hard_negative_weight=0.5).fit(X)
    with pytest.raises(ValueError, match="hard_negative_weight"):
        IALS(hard_negatives=5, hard_negative_weight=-0.5).fit(X)


class TestIALSHardNegativesContract(TestIALSContract):
    def make_estimator(self):
        return IALS(
            n_factors=4,
            n_epochs=2,
            random_state=0,
            n_jobs=1,
            hard_negatives=3,
            hard_negative_weight=0.1,
        )

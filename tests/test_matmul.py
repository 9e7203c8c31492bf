"""The register-tiled matrix product of the kernels against numpy (float64 reference), and its
wide tiles (AVX-512 targets) against the narrow ones (bit for bit)."""

import numpy as np
import pytest

from linrec._kernels.matmul import _product, _product_wide, matmul_into


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape",
    # (rows, depth, columns): full 6 x 16 tiles, the 4-row tile of the last 4 or 5 rows, the
    # row and column edges, and neither
    [
        (12, 64, 32),
        (8, 64, 32),
        (9, 13, 35),
        (10, 13, 35),
        (11, 3, 17),
        (3, 5, 7),
        (4, 1, 16),
        (5, 2, 16),
        (1, 1, 1),
        (37, 70, 300),
    ],
)
def test_matmul_matches_numpy(shape, dtype, rng):
    n, depth, m = shape
    A = rng.standard_normal((n, depth)).astype(dtype)
    B = rng.standard_normal((depth, m)).astype(dtype)
    C = np.full((n, m), np.nan, dtype)
    A_before, B_before = A.copy(), B.copy()
    matmul_into(A, B, C)
    reference = A.astype(np.float64) @ B.astype(np.float64)
    # float64: a sum over depth of rounded products; float32 likewise at its own epsilon
    eps = np.finfo(dtype).eps
    scale = np.abs(A).astype(np.float64) @ np.abs(B).astype(np.float64)
    assert np.all(np.abs(C - reference) <= 2 * depth * eps * scale)
    np.testing.assert_array_equal(A, A_before)
    np.testing.assert_array_equal(B, B_before)


@pytest.mark.parametrize("shape", [(9, 13, 35), (40, 512, 64)])
def test_matmul_transposed_left_operand(shape, rng):
    # the MF block passes G^T as a transposed view (any layout of A is read entry by entry)
    n, depth, m = shape
    G = rng.standard_normal((depth, n))
    B = rng.standard_normal((depth, m))
    C = np.empty((n, m))
    matmul_into(G.T, B, C)
    np.testing.assert_allclose(C, G.T @ B, rtol=1e-12, atol=1e-12 * depth)
    contiguous = np.empty((n, m))
    matmul_into(np.ascontiguousarray(G.T), B, contiguous)
    np.testing.assert_array_equal(C, contiguous)


def test_matmul_entry_independent_of_row_position(rng):
    # each entry is one sum over k in order, in the tiles and in the edges alike: a row gives
    # the same bits whether it falls in a 6-row tile, the 4-row tile or the edge rows
    A = rng.standard_normal((11, 50)).astype(np.float32)
    B = rng.standard_normal((50, 40)).astype(np.float32)
    full = np.empty((11, 40), np.float32)
    matmul_into(A, B, full)
    for i in range(11):
        alone = np.empty((1, 40), np.float32)
        matmul_into(A[i : i + 1], B, alone)
        np.testing.assert_array_equal(full[i], alone[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 5, 6, 11, 16, 17, 31, 32, 33, 40, 64, 100])
def test_matmul_lower_matches_full_product(n, dtype, rng):
    # the lower triangle of a symmetric product W^T Q (W = Q with scaled rows), bit for bit as
    # matmul_into computes it: tiles on the diagonal, below it, and the edge rows and columns
    # (n from under one narrow tile to several wide ones)
    Q = rng.standard_normal((23, n)).astype(dtype)
    W = Q * rng.uniform(0.5, 2.0, (23, 1)).astype(dtype)
    lower = np.full((n, n), np.nan, dtype)
    full = np.empty((n, n), dtype)
    matmul_into(W.T, Q, lower, True)
    matmul_into(W.T, Q, full)
    rows, cols = np.tril_indices(n)
    np.testing.assert_array_equal(lower[rows, cols], full[rows, cols])
    reference = W.T.astype(np.float64) @ Q.astype(np.float64)
    np.testing.assert_allclose(lower[rows, cols], reference[rows, cols], rtol=1e-4, atol=1e-4)


WIDE_SHAPES = [
    # (rows, depth, columns): full 6 x 32 tiles, the 4-row tile, column edges of 1-31 after
    # whole 32-column tiles, fewer columns than one wide tile, and the rotations' own shape
    (12, 64, 64),
    (10, 13, 35),
    (11, 3, 63),
    (9, 7, 16),
    (5, 2, 33),
    (1, 1, 1),
    (64, 256, 256),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", WIDE_SHAPES)
@pytest.mark.parametrize("lower", [False, True])
def test_wide_tiles_equal_narrow_tiles(shape, dtype, lower, rng):
    # matmul_into takes the 6 x 32 tiles (512-bit registers) where the target has AVX-512 and
    # the 6 x 16 ones elsewhere; both sum every entry over k in the same order: the same bits,
    # not only the same value to a tolerance. Both are called here on any target.
    n, depth, m = shape
    if lower:
        m = n  # a square product, lower triangle only
    A = rng.standard_normal((n, depth)).astype(dtype)
    B = rng.standard_normal((depth, m)).astype(dtype)
    narrow = np.full((n, m), np.nan, dtype)
    wide = np.full((n, m), np.nan, dtype)
    A_before, B_before = A.copy(), B.copy()
    _product(A, B, narrow, lower)
    _product_wide(A, B, wide, lower)
    keep = np.tril(np.ones((n, m), bool)) if lower else np.ones((n, m), bool)
    np.testing.assert_array_equal(wide[keep], narrow[keep])
    np.testing.assert_array_equal(A, A_before)
    np.testing.assert_array_equal(B, B_before)
    # and through a transposed left operand, as the Gram matrix passes it
    transposed = np.full((n, m), np.nan, dtype)
    _product_wide(np.ascontiguousarray(A.T).T, B, transposed, lower)
    np.testing.assert_array_equal(transposed[keep], narrow[keep])

"""The prefetch hint used by the sparse gather loops changes no value."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from linrec._kernels import sgd
from linrec._kernels.prefetch import PREFETCH_AHEAD, prefetch_entry, prefetch_row


@njit
def _gather_sum(other, indices, ahead):
    # the gather loop pattern of the row solvers: prefetch ahead, then read the row
    limit = indices.shape[0]
    out = np.zeros(other.shape[1], dtype=np.float64)
    for idx in range(limit):
        if ahead > 0:
            prefetch_entry(other, indices, idx + ahead, limit)
        q = other[indices[idx]]
        for a in range(other.shape[1]):
            out[a] += q[a]
    return out


@njit
def _prefetch_every_row(other):
    for row in range(other.shape[0]):
        prefetch_row(other, row)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("width", [1, 3, 16, 100])
def test_gather_with_prefetch_equals_without(rng, dtype, width):
    other = rng.standard_normal((50, width)).astype(dtype)
    # repeats, the first and the last row, so prefetches reach both ends of the table
    indices = np.concatenate(([0, 49, 49], rng.integers(0, 50, 200))).astype(np.int64)
    plain = _gather_sum(other, indices, 0)
    hinted = _gather_sum(other, indices, PREFETCH_AHEAD)
    np.testing.assert_array_equal(hinted, plain)
    np.testing.assert_allclose(plain, other[indices].sum(axis=0, dtype=np.float64), rtol=1e-12)


def test_prefetch_compiles_to_llvm_prefetch_for_c_arrays():
    other = np.ones((4, 8), dtype=np.float32)
    _prefetch_every_row(other)
    signature = next(s for s in _prefetch_every_row.signatures if s[0].layout == "C")
    assert "llvm.prefetch" in _prefetch_every_row.inspect_llvm(signature)


def test_prefetch_is_a_no_op_for_non_contiguous_rows(rng):
    other = np.asfortranarray(rng.standard_normal((30, 5)))
    indices = rng.integers(0, 30, 40).astype(np.int64)
    _prefetch_every_row(other)
    np.testing.assert_array_equal(_gather_sum(other, indices, 4), _gather_sum(other, indices, 0))
    signature = next(s for s in _prefetch_every_row.signatures if s[0].layout == "F")
    assert "llvm.prefetch" not in _prefetch_every_row.inspect_llvm(signature)


def test_prefetch_row_rejects_one_dimensional_arrays():
    @njit
    def bad(v):
        prefetch_row(v, 0)

    with pytest.raises(TypingError):
        bad(np.ones(3))


@njit
def _one_pair(W, targets, grad, update_items):
    length = targets.shape[0]
    flags = np.zeros(W.shape[0], np.uint8)
    touched = np.empty(W.shape[0], np.int64)
    y = np.empty(length, W.dtype)
    g = np.empty(length, W.dtype)
    none = np.empty(0, W.dtype)
    params = np.array([0.1, 1.0, 0.0, 1.0, 0.0])
    return sgd._pair_forward_backward(
        W, 0, targets, 3, 0.0, sgd.INFONCE, params, True, 0, length - 1, 1.0, update_items,
        grad, flags, touched, 0, y, g, np.empty(length, W.dtype), np.empty(W.shape[1], W.dtype),
        np.empty(length, np.int64), False, none, none,
    )  # fmt: skip


def test_per_positive_mf_kernel_prefetches_item_and_gradient_rows(rng):
    # MF's per-positive path reads each target's item row and adds into its gradient row;
    # both are prefetched ahead. (Its values are covered by the loss and gradient tests,
    # which run the same kernel.)
    W = rng.standard_normal((7, 4)).astype(np.float32)
    targets = rng.integers(0, 4, 1 + 40)
    _one_pair(W, targets, np.zeros_like(W), True)
    llvm = _one_pair.inspect_llvm(_one_pair.signatures[0])
    # one call site in the forward loop (item rows), one in the backward loop (gradient rows)
    assert llvm.count("call void @llvm.prefetch") >= 2

"""Exact top-k selection over rows of a score matrix, with per-row exclusions.

Tie rule (documented in :func:`linrec.metrics.evaluate` and relied on by tests): a higher score
ranks first; among equal scores the lower item index ranks first. NaN scores are never
selected. Rows with fewer than ``k`` eligible items are padded with index -1 and score -inf.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(inline="always")
def _worse(a_val, a_idx, b_val, b_idx):
    # True when candidate a ranks below candidate b under the tie rule.
    return a_val < b_val or (a_val == b_val and a_idx > b_idx)


@njit(inline="always")
def _sift_down(vals, idxs, start, size):
    # Min-heap on "rank": the root holds the worst of the kept candidates.
    pos = start
    while True:
        left = 2 * pos + 1
        if left >= size:
            break
        child = left
        right = left + 1
        if right < size and _worse(vals[right], idxs[right], vals[left], idxs[left]):
            child = right
        if _worse(vals[child], idxs[child], vals[pos], idxs[pos]):
            vals[pos], vals[child] = vals[child], vals[pos]
            idxs[pos], idxs[child] = idxs[child], idxs[pos]
            pos = child
        else:
            break


@njit(inline="always")
def _sift_up(vals, idxs, pos):
    while pos > 0:
        parent = (pos - 1) // 2
        if _worse(vals[pos], idxs[pos], vals[parent], idxs[parent]):
            vals[pos], vals[parent] = vals[parent], vals[pos]
            idxs[pos], idxs[parent] = idxs[parent], idxs[pos]
            pos = parent
        else:
            break


@njit(inline="always")
def _select_row(row, k, excl, n_excl, candidates, use_candidates, out_idx, out_val):
    size = 0
    e = 0
    n_items = row.shape[0]
    for j in range(n_items):
        # exclusions are sorted: advance the pointer instead of searching
        while e < n_excl and excl[e] < j:
            e += 1
        if e < n_excl and excl[e] == j:
            continue
        if use_candidates and not candidates[j]:
            continue
        v = row[j]
        if v != v:  # NaN
            continue
        if size < k:
            out_val[size] = v
            out_idx[size] = j
            _sift_up(out_val, out_idx, size)
            size += 1
        elif _worse(out_val[0], out_idx[0], v, j):
            out_val[0] = v
            out_idx[0] = j
            _sift_down(out_val, out_idx, 0, size)
    # heap sort: move the worst to the end repeatedly -> best-first order
    end = size
    while end > 1:
        end -= 1
        out_val[0], out_val[end] = out_val[end], out_val[0]
        out_idx[0], out_idx[end] = out_idx[end], out_idx[0]
        _sift_down(out_val, out_idx, 0, end)
    for p in range(size, k):
        out_idx[p] = -1
        out_val[p] = -np.inf


@njit(parallel=True, cache=True)
def topk_rows(scores, k, excl_indptr, excl_indices, candidates, use_candidates):
    """Top-``k`` items of every row of ``scores`` (n_rows, n_items).

    ``excl_indptr``/``excl_indices``: CSR structure (sorted indices) of items to skip per row;
    pass an all-zero indptr for no exclusion. ``candidates``: boolean mask of allowed items,
    used only when ``use_candidates`` is True. Returns ``(indices int64, values)`` of shape
    (n_rows, k), best first.
    """
    n_rows = scores.shape[0]
    out_idx = np.empty((n_rows, k), dtype=np.int64)
    out_val = np.empty((n_rows, k), dtype=scores.dtype)
    for r in prange(n_rows):
        start = excl_indptr[r]
        stop = excl_indptr[r + 1]
        _select_row(
            scores[r],
            k,
            excl_indices[start:stop],
            stop - start,
            candidates,
            use_candidates,
            out_idx[r],
            out_val[r],
        )
    return out_idx, out_val


@njit(parallel=True, cache=True)
def hit_matrix(top_idx, test_indptr, test_indices):
    """hits[r, p] = 1 when ``top_idx[r, p]`` is among row r's (sorted) test items."""
    n_rows, k = top_idx.shape
    hits = np.zeros((n_rows, k), dtype=np.uint8)
    for r in prange(n_rows):
        start = test_indptr[r]
        stop = test_indptr[r + 1]
        if stop == start:
            continue
        row_test = test_indices[start:stop]
        for p in range(k):
            j = top_idx[r, p]
            if j < 0:
                continue
            pos = np.searchsorted(row_test, j)
            if pos < stop - start and row_test[pos] == j:
                hits[r, p] = 1
    return hits

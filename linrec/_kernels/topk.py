"""Exact top-k selection over rows of a score matrix, with per-row exclusions.

Tie rule (documented in :mod:`linrec.metrics` and relied on by the tests): a higher score ranks
first; among equal scores the lower item index ranks first. NaN scores are never selected.
Rows with fewer than ``k`` eligible items are padded with index -1 and score -inf.

How it is fast: a row is scanned left to right while a size-``k`` heap holds the best items so
far, its root being the worst of them. Because the scan goes by increasing item index, a later
item can only displace the root with a strictly greater score (an equal score loses the tie to
the lower index already kept). Once the heap is full, blocks of ``_BLOCK`` scores are therefore
first tested with a branch-free count of ``score > root`` that LLVM vectorises; only the rare
blocks holding a candidate are walked item by item. NaN fails every comparison, so it is never
counted. Excluded items (sorted per row) split the row into segments scanned the same way.

``topk_tile`` runs the same scan on column tiles fed in increasing item order into heaps kept
between calls, so a caller can compute scores tile by tile (in cache) and never hold a row.

``topk_rows_sampled_serial`` selects the same items without a heap, for k in the hundreds
(the iALS hard negatives), where the heap's insertions dominate: it counts the scores at or
above a threshold read off a sample of the row and ranks only those.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# Scores tested at once by the vectorised pre-filter (eight cache lines of float32). Of 64,
# 128 and 256, 128 was the fastest on random rows of 41k items, though the machine was loaded.
_BLOCK = 128

# 'reassoc' only licenses reordering the exact 0/1 count below: the kernel has no other float
# arithmetic, and comparisons (hence NaN handling) are unaffected by it.
_FLAGS = {"reassoc"}


@njit(nogil=True, fastmath=_FLAGS)
def _worse(a_val, a_idx, b_val, b_idx):
    # True when candidate a ranks below candidate b under the tie rule.
    return a_val < b_val or (a_val == b_val and a_idx > b_idx)


@njit(nogil=True, fastmath=_FLAGS)
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


@njit(nogil=True, fastmath=_FLAGS)
def _sift_up(vals, idxs, pos):
    while pos > 0:
        parent = (pos - 1) // 2
        if _worse(vals[pos], idxs[pos], vals[parent], idxs[parent]):
            vals[pos], vals[parent] = vals[parent], vals[pos]
            idxs[pos], idxs[parent] = idxs[parent], idxs[pos]
            pos = parent
        else:
            break


@njit(nogil=True, fastmath=_FLAGS)
def _scan_segment(row, start, stop, offset, k, size, candidates, use_candidates, out_idx, out_val):
    # Offer items start..stop-1 of ``row`` (item ids offset + j) to the heap (out_val,
    # out_idx) holding ``size`` items; returns the new size.
    j = start
    # Fill phase: the first k eligible items enter unconditionally.
    while size < k and j < stop:
        v = row[j]
        if v == v and (not use_candidates or candidates[offset + j]):
            out_val[size] = v
            out_idx[size] = offset + j
            _sift_up(out_val, out_idx, size)
            size += 1
        j += 1
    if j >= stop:
        return size
    if use_candidates:
        while j < stop:
            v = row[j]
            if candidates[offset + j] and v > out_val[0]:
                out_val[0] = v
                out_idx[0] = offset + j
                _sift_down(out_val, out_idx, 0, size)
            j += 1
        return size
    threshold = out_val[0]
    while j + _BLOCK <= stop:
        # A float count: summing 0/1 in float32 is exact in any order, so the 'reassoc'
        # flag (given to the compiled kernels) lets LLVM vectorise it; an integer count
        # would be widened to int64 lanes by numba's typing and run at half the speed.
        # Indexing a slice with the loop counter (provably >= 0) lets numba drop its
        # negative-index check, which would otherwise turn the loads into gathers.
        block = row[j : j + _BLOCK]
        n_above = np.float32(0.0)
        for t in range(_BLOCK):
            n_above += np.float32(block[t] > threshold)
        if n_above > 0:
            # Walk the block only up to its last item above the block's starting threshold.
            block_threshold = threshold
            left = int(n_above)
            t = 0
            while left > 0:
                v = block[t]
                if v > block_threshold:
                    left -= 1
                    if v > threshold:
                        out_val[0] = v
                        out_idx[0] = offset + j + t
                        _sift_down(out_val, out_idx, 0, size)
                        threshold = out_val[0]
                t += 1
        j += _BLOCK
    while j < stop:
        v = row[j]
        if v > threshold:
            out_val[0] = v
            out_idx[0] = offset + j
            _sift_down(out_val, out_idx, 0, size)
            threshold = out_val[0]
        j += 1
    return size


@njit(nogil=True, fastmath=_FLAGS)
def _select_row(row, k, excl, candidates, use_candidates, out_idx, out_val):
    n_items = row.shape[0]
    size = 0
    start = 0
    # The sorted exclusions split the row into segments of eligible items.
    for e in range(excl.shape[0]):
        stop = min(max(excl[e], start), n_items)
        size = _scan_segment(
            row, start, stop, 0, k, size, candidates, use_candidates, out_idx, out_val
        )
        start = max(start, excl[e] + 1)
    size = _scan_segment(
        row, start, n_items, 0, k, size, candidates, use_candidates, out_idx, out_val
    )
    _finish_row(k, size, out_idx, out_val)


@njit(nogil=True, fastmath=_FLAGS)
def _finish_row(k, size, out_idx, out_val):
    # Heap sort: move the worst to the end repeatedly -> best-first order.
    end = size
    while end > 1:
        end -= 1
        out_val[0], out_val[end] = out_val[end], out_val[0]
        out_idx[0], out_idx[end] = out_idx[end], out_idx[0]
        _sift_down(out_val, out_idx, 0, end)
    for p in range(size, k):
        out_idx[p] = -1
        out_val[p] = -np.inf


def _topk_rows(scores, k, excl_indptr, excl_indices, candidates, use_candidates):
    """Top-``k`` items of every row of ``scores`` (n_rows, n_items).

    ``excl_indptr``/``excl_indices``: CSR structure (indices sorted within each row) of items
    to skip per row; pass an all-zero indptr for no exclusion. ``candidates``: boolean mask of
    allowed items, used only when ``use_candidates`` is True. Returns ``(indices int64,
    values)`` of shape (n_rows, k), best first, ties to the lower index, NaN never selected,
    padding -1 / -inf. Each row is written by one iteration only, so the result does not
    depend on the number of threads.
    """
    n_rows = scores.shape[0]
    out_idx = np.empty((n_rows, k), dtype=np.int64)
    out_val = np.empty((n_rows, k), dtype=scores.dtype)
    for r in prange(n_rows):
        _select_row(
            scores[r],
            k,
            excl_indices[excl_indptr[r] : excl_indptr[r + 1]],
            candidates,
            use_candidates,
            out_idx[r],
            out_val[r],
        )
    return out_idx, out_val


def _hit_matrix(top_idx, test_indptr, test_indices):
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


def _topk_tile(tile, offset, k, excl_indptr, excl_indices, excl_pos, sizes, heap_idx, heap_val):
    """Offer a column tile of scores (items ``offset .. offset + width - 1``) to running heaps.

    For scores computed tile by tile (never the whole row): call once per tile in increasing
    ``offset`` order, then :func:`finish_heaps`. ``sizes`` (zeros at first) and ``excl_pos``
    (``excl_indptr[:-1]`` at first) carry each row's heap size and exclusion cursor between
    calls. Feeding every tile of a row gives exactly the result of :func:`topk_rows` on the
    whole row (the heap sees items in increasing index order either way).
    """
    n_rows, width = tile.shape
    no_candidates = np.ones(1, dtype=np.bool_)
    for r in prange(n_rows):
        row = tile[r]
        size = sizes[r]
        e = excl_pos[r]
        end = excl_indptr[r + 1]
        start = 0
        while e < end and excl_indices[e] < offset + width:
            stop = excl_indices[e] - offset
            if stop >= start:
                size = _scan_segment(
                    row,
                    start,
                    stop,
                    offset,
                    k,
                    size,
                    no_candidates,
                    False,
                    heap_idx[r],
                    heap_val[r],
                )
                start = stop + 1
            e += 1
        size = _scan_segment(
            row, start, width, offset, k, size, no_candidates, False, heap_idx[r], heap_val[r]
        )
        sizes[r] = size
        excl_pos[r] = e


def _finish_heaps(sizes, heap_idx, heap_val):
    """Sort the heaps left by :func:`topk_tile` best first and pad them (-1 / -inf)."""
    k = heap_idx.shape[1]
    for r in prange(heap_idx.shape[0]):
        _finish_row(k, sizes[r], heap_idx[r], heap_val[r])


# Every _SAMPLE_STRIDE-th score of a row is the sample that sets the threshold of
# _topk_rows_sampled; the threshold is the score at _SAMPLE_MARGIN times the rank the k-th best
# is expected at in the sample (plus 2), so that usually at least k scores pass it.
_SAMPLE_STRIDE = 16
_SAMPLE_MARGIN = 1.5


@njit(nogil=True, cache=True, fastmath=_FLAGS)
def _collect_at_least(row, threshold, excl, cand_idx, cand_val):
    # The eligible items whose score is >= threshold, in increasing index order; returns
    # their number. NaN fails the comparison; excluded items (sorted) are skipped.
    c = 0
    e = 0
    for j in range(row.shape[0]):
        v = row[j]
        if v >= threshold:
            while e < excl.shape[0] and excl[e] < j:
                e += 1
            if e < excl.shape[0] and excl[e] == j:
                continue
            cand_idx[c] = j
            cand_val[c] = v
            c += 1
    return c


@njit(nogil=True, cache=True, fastmath=_FLAGS)
def _count_at_least(row, threshold):
    # Scores >= threshold, counted in blocks by a float sum that LLVM vectorises (exact: each
    # block's count is at most _BLOCK).
    n = row.shape[0]
    total = 0
    j = 0
    while j + _BLOCK <= n:
        block = row[j : j + _BLOCK]
        count = np.float32(0.0)
        for t in range(_BLOCK):
            count += np.float32(block[t] >= threshold)
        total += int(count)
        j += _BLOCK
    while j < n:
        if row[j] >= threshold:
            total += 1
        j += 1
    return total


def _topk_rows_sampled(scores, k, excl_indptr, excl_indices, out_idx):
    """The items of :func:`topk_rows` (the same tie rule, NaN never selected, -1 padding),
    found through a threshold instead of a heap, for large ``k``.

    Per row: a threshold is read off a sample of the scores (every ``_SAMPLE_STRIDE``-th),
    one vectorised pass counts the eligible scores at or above it and, if there are at least
    ``k``, a second pass collects them; they hold the row's top ``k``, which a stable sort by
    score (the candidates are in index order) ranks with ties to the lower index. A row whose
    threshold lets fewer than ``k`` through collects all its eligible items instead, so the
    result is exact either way. Writes ``out_idx`` (n_rows, k), best first.
    """
    n_rows, n_items = scores.shape
    n_sample = (n_items + _SAMPLE_STRIDE - 1) // _SAMPLE_STRIDE
    sample = np.empty(max(n_sample, 1), dtype=scores.dtype)
    cand_idx = np.empty(n_items, dtype=np.int64)
    cand_val = np.empty(n_items, dtype=scores.dtype)
    for r in range(n_rows):
        row = scores[r]
        excl = excl_indices[excl_indptr[r] : excl_indptr[r + 1]]
        want = min(k, n_items - excl.shape[0])
        c = -1
        if want > 0:
            m = 0
            for j in range(0, n_items, _SAMPLE_STRIDE):
                v = row[j]
                if v == v:
                    sample[m] = v
                    m += 1
            rank = int(want * m / n_items * _SAMPLE_MARGIN) + 2
            if rank <= m:
                threshold = np.partition(sample[:m], m - rank)[m - rank]
                n_pass = _count_at_least(row, threshold)
                for e in range(excl.shape[0]):
                    if row[excl[e]] >= threshold:
                        n_pass -= 1
                if n_pass >= want:
                    c = _collect_at_least(row, threshold, excl, cand_idx, cand_val)
        if c < 0:
            c = _collect_at_least(row, -np.inf, excl, cand_idx, cand_val)
        order = np.argsort(-cand_val[:c], kind="mergesort")
        take = min(want, c)
        for p in range(take):
            out_idx[r, p] = cand_idx[order[p]]
        for p in range(max(take, 0), k):
            out_idx[r, p] = -1


# One definition, two compiled variants: the parallel one for numba's thread pool, the serial
# one (GIL released) for callers that run several batches in Python threads.
topk_rows = njit(parallel=True, cache=True, fastmath=_FLAGS)(_topk_rows)
topk_rows_serial = njit(nogil=True, cache=True, fastmath=_FLAGS)(_topk_rows)
topk_tile_serial = njit(nogil=True, cache=True, fastmath=_FLAGS)(_topk_tile)
finish_heaps_serial = njit(nogil=True, cache=True)(_finish_heaps)
topk_rows_sampled_serial = njit(nogil=True, cache=True, fastmath=_FLAGS)(_topk_rows_sampled)
hit_matrix = njit(parallel=True, cache=True)(_hit_matrix)
hit_matrix_serial = njit(nogil=True, cache=True)(_hit_matrix)

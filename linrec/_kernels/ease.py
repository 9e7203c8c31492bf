"""numba kernels for EASE: Gram accumulation, sparse-times-dense scoring, sparse EASE columns.

Sparse matrices come in as ``indptr, indices, data`` arrays (CSR unless named CSC). Each
parallel iteration writes its own output row, so results do not depend on scheduling.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def gram_lower_into(
    csr_indptr, csr_indices, csr_data, csc_indptr, csc_indices, csc_data, order, out
):
    """Add the lower triangle of ``X^T X`` to ``out`` (rows ``i``, columns ``j <= i``).

    ``X`` is given both as CSR (rows = users, column indices sorted) and CSC (columns =
    items). Row ``i`` of the result is ``sum_{u in users(i)} x_ui x_u[:i+1]``: each parallel
    iteration owns one output row. ``order`` is a permutation of the rows used to spread the
    (very uneven) per-row cost over the threads; it does not change the result.
    """
    for t in prange(order.shape[0]):
        i = order[t]
        row = out[i]
        for p in range(csc_indptr[i], csc_indptr[i + 1]):
            u = csc_indices[p]
            x_ui = csc_data[p]
            for q in range(csr_indptr[u], csr_indptr[u + 1]):
                j = csr_indices[q]
                if j > i:
                    break
                row[j] += x_ui * csr_data[q]


@njit(parallel=True, cache=True)
def csr_times_dense(indptr, indices, data, dense, out):
    """``out = X @ dense`` for CSR ``X``; ``out`` is overwritten, one row per iteration."""
    n_cols = dense.shape[1]
    for r in prange(indptr.shape[0] - 1):
        acc = out[r]
        for c in range(n_cols):
            acc[c] = 0.0
        for p in range(indptr[r], indptr[r + 1]):
            weight = data[p]
            src = dense[indices[p]]
            for c in range(n_cols):
                acc[c] += weight * src[c]


@njit(parallel=True, cache=True)
def csr_times_csr_dense(indptr, indices, data, b_indptr, b_indices, b_data, out):
    """``out = X @ B`` as a dense array, for CSR ``X`` and CSR ``B``; one row per iteration."""
    for r in prange(indptr.shape[0] - 1):
        acc = out[r]
        acc[:] = 0.0
        for p in range(indptr[r], indptr[r + 1]):
            weight = data[p]
            j = indices[p]
            for q in range(b_indptr[j], b_indptr[j + 1]):
                acc[b_indices[q]] += weight * b_data[q]


@njit(parallel=True, cache=True)
def scale_columns_inplace(matrix, scale):
    """``matrix[:, j] *= scale[j]`` in place, one row per iteration."""
    for r in prange(matrix.shape[0]):
        row = matrix[r]
        for c in range(matrix.shape[1]):
            row[c] *= scale[c]


@njit(parallel=True, cache=True)
def weight_block(
    products, columns, csc_indptr, csc_indices, unobserved_weight, positive_weight, out
):
    """Apply the per-column diagonal weights ``D_i`` to a block of ``X v`` products.

    ``products[u, c]`` holds ``(X v_c)_u`` for the column ``i = columns[c]``;
    ``out[u, c] = d_ui (X v_c)_u`` with ``d_ui = positive_weight[u]`` when user ``u`` has item
    ``i`` and ``unobserved_weight[u]`` otherwise. One output column per iteration.
    """
    n_users = products.shape[0]
    for c in prange(columns.shape[0]):
        for u in range(n_users):
            out[u, c] = unobserved_weight[u] * products[u, c]
        i = columns[c]
        for p in range(csc_indptr[i], csc_indptr[i + 1]):
            u = csc_indices[p]
            out[u, c] = positive_weight[u] * products[u, c]


@njit(cache=True)
def _kth_largest(values, k):
    """The ``k``-th largest of ``values`` (1-based; reorders ``values``): quickselect.

    Hand-written rather than ``np.partition``, whose numba implementation costs seconds of
    compilation on every first run.
    """
    target = k - 1  # index of the answer in descending order
    lo, hi = 0, values.shape[0] - 1
    while lo < hi:
        # median of three as pivot, so sorted or constant inputs stay O(n)
        mid = (lo + hi) // 2
        a, b, c = values[lo], values[mid], values[hi]
        pivot = max(min(a, b), min(max(a, b), c))
        i, j = lo, hi
        while i <= j:
            while values[i] > pivot:
                i += 1
            while values[j] < pivot:
                j -= 1
            if i <= j:
                values[i], values[j] = values[j], values[i]
                i += 1
                j -= 1
        if target <= j:
            hi = j
        elif target >= i:
            lo = i
        else:
            return values[target]
    return values[target]


@njit(parallel=True, cache=True)
def cooccurrence_neighbors(
    csr_indptr, csr_indices, csr_data, csc_indptr, csc_indices, csc_data, norms, n_neighbors, counts
):
    """Per item ``i``, the ``n_neighbors`` best other items by ``G_ij / (norms[i] norms[j])``.

    ``G = X^T X`` is never stored: row ``i`` is accumulated from the users of item ``i`` (CSC)
    and their histories (CSR) into a dense per-thread accumulator, its candidates are the
    items that co-occur with ``i``, and the row is dropped once its best ``n_neighbors`` are
    chosen. Pass ones as ``norms`` for raw co-occurrence. Ties go to the lower item index.
    ``counts[i]`` receives how many were found (fewer when fewer items co-occur). Returns an
    ``(n, n_neighbors)`` array padded with -1, each row sorted by item index. Items are
    interleaved over 64 chunks (one accumulator each) to even out the very uneven row costs;
    each item writes only its own row.
    """
    n = csc_indptr.shape[0] - 1
    out = np.full((n, n_neighbors), -1, dtype=np.int64)
    n_chunks = min(n, 64)
    for chunk in prange(n_chunks):
        accumulator = np.zeros(n, dtype=np.float64)
        seen = np.zeros(n, dtype=np.bool_)
        touched = np.empty(n, dtype=np.int64)
        for i in range(chunk, n, n_chunks):
            n_touched = 0
            for p in range(csc_indptr[i], csc_indptr[i + 1]):
                x_ui = csc_data[p]
                u = csc_indices[p]
                for q in range(csr_indptr[u], csr_indptr[u + 1]):
                    j = csr_indices[q]
                    if j == i:
                        continue
                    if not seen[j]:
                        seen[j] = True
                        touched[n_touched] = j
                        n_touched += 1
                    accumulator[j] += x_ui * csr_data[q]
            candidates = touched[:n_touched]
            score = np.empty(n_touched, dtype=np.float64)
            for t in range(n_touched):
                j = candidates[t]
                score[t] = accumulator[j] / (norms[i] * norms[j])
                accumulator[j] = 0.0
                seen[j] = False
            k = min(n_neighbors, n_touched)
            if k < n_touched:
                # the k-th largest score: all above it are in, ties at it go to lower indices
                threshold = _kth_largest(score.copy(), k)
                chosen = np.empty(k, dtype=np.int64)
                tied = np.empty(n_touched, dtype=np.int64)
                n_chosen, n_tied = 0, 0
                for t in range(n_touched):
                    if score[t] > threshold:
                        chosen[n_chosen] = candidates[t]
                        n_chosen += 1
                    elif score[t] == threshold:
                        tied[n_tied] = candidates[t]
                        n_tied += 1
                chosen[n_chosen:] = np.sort(tied[:n_tied])[: k - n_chosen]
            else:
                chosen = candidates.copy()
            out[i, :k] = np.sort(chosen)
            counts[i] = k
    return out


@njit(cache=True)
def _cholesky_solve(system, rhs):
    # SPD solve: LAPACK Cholesky (half the flops of np.linalg.solve's LU), then two
    # triangular substitutions
    lower = np.linalg.cholesky(system)
    k = rhs.shape[0]
    y = np.empty(k, dtype=np.float64)
    for a in range(k):
        acc = rhs[a]
        for b in range(a):
            acc -= lower[a, b] * y[b]
        y[a] = acc / lower[a, a]
    x = np.empty(k, dtype=np.float64)
    for a in range(k - 1, -1, -1):
        acc = y[a]
        for b in range(a + 1, k):
            acc -= lower[b, a] * x[b]
        x[a] = acc / lower[a, a]
    return x


@njit(parallel=True, cache=True)
def sparse_ease_columns(
    csc_indptr,
    csc_indices,
    csc_data,
    n_users,
    neighbors,
    counts,
    regularization,
    out_indptr,
    out_data,
):
    """Solve each column's EASE regression on its support, writing the CSC values of ``B``.

    For column ``i`` with support ``N = neighbors[i, :counts[i]]`` (sorted, ``i`` excluded):
    ``b_N = (G_NN + lambda I)^{-1} G_Ni`` with ``G = X^T X``, the constrained ridge regression
    of item ``i`` on the items ``N``; ``X`` (``n_users`` rows) comes in as CSC. The small Gram
    block is built from the users rather than looked up in a stored ``G`` (searching long Gram
    rows for ``k^2 / 2`` entries was the cost that dominated): the entries of the support
    columns are bucketed by user (user ``u`` gets the support positions it has, in increasing
    order), every user then adds its ``m_u (m_u + 1) / 2`` products to the upper triangle,
    and the users of item ``i`` add theirs to the right-hand side. Cost per column:
    ``sum_{j in N} deg(j) + sum_u m_u^2 / 2`` sequential steps plus a ``k^3 / 3`` Cholesky.
    Columns are interleaved over 64 chunks, each with its own bucket arrays; each column
    writes only its own slice of ``out_data``.
    """
    n = neighbors.shape[0]
    n_chunks = min(n, 64)
    for chunk in prange(n_chunks):
        # per user: where its bucket starts and how full it is; users with entries: `touched`
        # (int32 where the range allows: these arrays are hit at random, smaller is faster)
        bucket_start = np.zeros(n_users, dtype=np.int64)
        bucket_fill = np.zeros(n_users, dtype=np.int32)
        touched = np.empty(n_users, dtype=np.int32)
        for i in range(chunk, n, n_chunks):
            k = counts[i]
            if k == 0:
                continue
            support = neighbors[i, :k]
            n_touched = 0
            total = 0
            for a in range(k):
                j = support[a]
                for p in range(csc_indptr[j], csc_indptr[j + 1]):
                    u = csc_indices[p]
                    if bucket_fill[u] == 0:
                        touched[n_touched] = u
                        n_touched += 1
                    bucket_fill[u] += 1
                total += csc_indptr[j + 1] - csc_indptr[j]
            offset = 0
            for t in range(n_touched):
                u = touched[t]
                bucket_start[u] = offset
                offset += bucket_fill[u]
                bucket_fill[u] = 0
            position = np.empty(total, dtype=np.int32)
            value = np.empty(total, dtype=np.float64)
            for a in range(k):
                j = support[a]
                for p in range(csc_indptr[j], csc_indptr[j + 1]):
                    u = csc_indices[p]
                    slot = bucket_start[u] + bucket_fill[u]
                    position[slot] = a
                    value[slot] = csc_data[p]
                    bucket_fill[u] += 1
            system = np.zeros((k, k), dtype=np.float64)
            for t in range(n_touched):
                u = touched[t]
                first = bucket_start[u]
                last = first + bucket_fill[u]
                for q in range(first, last):
                    row = system[position[q]]
                    weight = value[q]
                    for r in range(q, last):
                        row[position[r]] += weight * value[r]
            rhs = np.zeros(k, dtype=np.float64)
            for p in range(csc_indptr[i], csc_indptr[i + 1]):
                u = csc_indices[p]
                x_ui = csc_data[p]
                first = bucket_start[u]
                for q in range(first, first + bucket_fill[u]):
                    rhs[position[q]] += x_ui * value[q]
            for t in range(n_touched):
                bucket_fill[touched[t]] = 0
            # positions increase within a bucket, so only the upper triangle was filled
            for a in range(k):
                system[a, a] += regularization
                for b in range(a + 1, k):
                    system[b, a] = system[a, b]
            solution = _cholesky_solve(system, rhs)
            base = out_indptr[i]
            for a in range(k):
                out_data[base + a] = solution[a]

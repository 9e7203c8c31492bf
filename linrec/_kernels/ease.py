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


@njit(parallel=True, cache=True)
def top_neighbors(indptr, indices, data, norms, n_neighbors, counts):
    """Per row ``i`` of the sparse Gram matrix, the ``n_neighbors`` best other columns.

    Scores are ``G_ij / (norms[i] * norms[j])`` (pass ones for raw co-occurrence). Ties go to
    the lower column index. ``counts[i]`` receives how many were found (fewer when the row
    has fewer non-zeros). Returns an ``(n, n_neighbors)`` array padded with -1, each row sorted
    by column index.
    """
    n = indptr.shape[0] - 1
    out = np.full((n, n_neighbors), -1, dtype=np.int64)
    for i in prange(n):
        start, stop = indptr[i], indptr[i + 1]
        cols = indices[start:stop]
        keep = cols != i
        cand = cols[keep].astype(np.int64)
        score = np.empty(cand.shape[0], dtype=np.float64)
        vals = data[start:stop][keep]
        for t in range(cand.shape[0]):
            score[t] = vals[t] / (norms[i] * norms[cand[t]])
        # stable sort on -score keeps the lower index first among ties (cand is sorted)
        order = np.argsort(-score, kind="mergesort")
        k = min(n_neighbors, cand.shape[0])
        chosen = np.sort(cand[order[:k]])
        out[i, :k] = chosen
        counts[i] = k
    return out


@njit(inline="always")
def _find(sorted_values, start, stop, target):
    # binary search in sorted_values[start:stop]; -1 when absent
    lo, hi = start, stop
    while lo < hi:
        mid = (lo + hi) >> 1
        v = sorted_values[mid]
        if v < target:
            lo = mid + 1
        elif v > target:
            hi = mid
        else:
            return mid
    return -1


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
    g_indptr, g_indices, g_data, neighbors, counts, regularization, out_indptr, out_data
):
    """Solve each column's EASE regression on its support, writing the CSC values of ``B``.

    For column ``i`` with support ``N = neighbors[i, :counts[i]]`` (sorted, ``i`` excluded):
    ``b_N = (G_NN + lambda I)^{-1} G_Ni``, the constrained ridge regression of item ``i`` on
    the items ``N``. The entries ``G_jl`` (sparse Gram matrix, CSR with sorted indices) of a
    support row ``j`` are gathered either by scanning row ``j`` against a dense position map
    (cost ``nnz(G_j)``, sequential) or by binary searches for the remaining support items (cost
    ``(k - a) log nnz(G_j)``), whichever is cheaper for that row. Columns are split into
    chunks, one position map per chunk; each column writes its own slice of ``out_data``.
    """
    n = neighbors.shape[0]
    n_chunks = min(n, 64)
    for chunk in prange(n_chunks):
        position = np.full(g_indptr.shape[0] - 1, -1, dtype=np.int64)
        for i in range(chunk, n, n_chunks):
            k = counts[i]
            if k == 0:
                continue
            support = neighbors[i, :k]
            for a in range(k):
                position[support[a]] = a
            system = np.zeros((k, k), dtype=np.float64)
            rhs = np.zeros(k, dtype=np.float64)
            for a in range(k):
                j = support[a]
                row_start, row_stop = g_indptr[j], g_indptr[j + 1]
                length = row_stop - row_start
                search_cost = (k - a + 1) * (np.log2(length + 1.0) + 1.0) * 4.0
                if length <= search_cost:
                    for p in range(row_start, row_stop):
                        col = g_indices[p]
                        if col == i:
                            rhs[a] = g_data[p]
                        else:
                            b = position[col]
                            if b >= a:
                                system[a, b] = g_data[p]
                                system[b, a] = g_data[p]
                else:
                    pos = _find(g_indices, row_start, row_stop, i)
                    if pos >= 0:
                        rhs[a] = g_data[pos]
                    # both lists are sorted: search only the remaining part of row j
                    lo = row_start
                    for b in range(a, k):
                        pos = _find(g_indices, lo, row_stop, support[b])
                        if pos >= 0:
                            system[a, b] = g_data[pos]
                            system[b, a] = g_data[pos]
                            lo = pos + 1
                system[a, a] += regularization
            for a in range(k):
                position[support[a]] = -1
            solution = _cholesky_solve(system, rhs)
            base = out_indptr[i]
            for a in range(k):
                out_data[base + a] = solution[a]

"""numba kernels for EASE: Gram accumulation, sparse-times-dense scoring, sparse EASE columns.

Sparse matrices come in as ``indptr, indices, data`` arrays (CSR unless named CSC). Each
parallel iteration writes its own output row, so results do not depend on scheduling.
"""

from __future__ import annotations

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

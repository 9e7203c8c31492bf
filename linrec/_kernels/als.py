"""Row solvers for alternating least squares on the weighted iALS family.

Every member of the family (Rendle, Hu, the debiased-MSE forms; see :mod:`linrec.ials`) is
written, for one half-step, in the same per-entry form. For the row ``u`` being solved, with
the other side's factors ``q_i`` fixed:

    f_u(x) = c_u * sum_{all i} (q_i . x)^2
             + sum_{i in I_u+} [ e_ui (q_i . x)^2 - 2 b_ui (q_i . x) + b_ui ]
             + reg_u ||x||^2

- ``c_u`` (``row_weight``) is the weight of the row's unobserved entries. The sum over all
  items is ``c_u x^T G x`` with the shared Gram matrix ``G = sum_i q_i q_i^T``: it costs d^2,
  not n_items * d.
- ``e_ui`` (``extra``) is the observed entry's squared-score weight minus ``c_u`` (the Gram term
  already counts every entry once with weight ``c_u``), so the observed entry carries total
  weight ``w_ui = c_u + e_ui``.
- ``b_ui`` (``rhs``) is ``w_ui * t_ui`` (weight times target); the constant ``b_ui`` is the
  loss at score 0 when every target is 1 (true for every member), used only by the objective.
- ``reg_u`` is ``lam * r_u``.

The minimiser solves the d x d system

    (c_u G + sum_{i in I_u+} e_ui q_i q_i^T + reg_u I) x = sum_{i in I_u+} b_ui q_i.

For the item half-step the roles swap: the per-user unobserved weights move into a weighted
Gram matrix ``G_user = sum_u c_u p_u p_u^T`` and ``row_weight`` is 1 for every item, while
``e`` and ``b`` are the same per-entry values read in column order.

Three solvers, each a numba ``prange`` over chunks of rows. Every row is computed by one
thread from its own inputs and written to its own output row, so results do not depend on
the schedule. Per-chunk scratch is allocated once per chunk, never per row. Every loop that
reads the other side's rows entry by entry asks the CPU for the row ``PREFETCH_AHEAD``
entries ahead (:mod:`linrec._kernels.prefetch`): the rows come from a table usually larger
than the cache, in an order only the kernel knows.

The exact and CG solvers work in the eigenbasis of the Gram matrix, ``G = V diag(lambda) V^T``
(one float64 ``eigh`` of a d x d matrix per half-step). Rotating the other side's factors
(``q~_i = V^T q_i``) and the rows (``x~ = V^T x``) costs O((rows + other rows) d^2) per
half-step, by register tiles that compute every row the same way, so a row's value does not
depend on the rows rotated with it (:func:`rotate_rows`). In that basis the shared part
``c_u G + reg_u I`` of every system is the diagonal
``D_u = c_u lambda + reg_u``, so no per-row d x d product with G is left.
:func:`solve_cg` and :func:`solve_cholesky` rotate in and back out; :func:`solve_rows_diagonal`
solves rows already in the basis, for a fit that keeps both sides in one common basis.

- :func:`solve_cholesky`: the exact minimiser. A row with ``n_u < d`` entries and
  ``e_ui >= 0`` solves ``(D_u + U^T E U) x~ = U^T b`` through Woodbury's identity as an
  ``n_u x n_u`` Cholesky of ``I + S K S`` (``K = U D_u^-1 U^T``, ``S = E^1/2``, eigenvalues
  >= 1): O(n_u^2 d + n_u^3) instead of O(n_u d^2 + d^3), ``K`` by tiles of dot products.
  Other rows (and any row whose small factorisation fails) take the d x d Cholesky of
  ``D_u + U^T E U``, O(n_u d^2 + d^3), the sum over entries built by tiles of dot products
  over pieces of d entries for long rows. No kernel calls BLAS: inside numba, ``np.dot``
  reaches SciPy's OpenBLAS, whose single-threaded sgemm was measured 2-5x slower than these
  tiles on some machines.
- :func:`solve_cg`: conjugate gradient from the current row (warm start) or from zero,
  ``n_steps`` steps, matrix-free: ``A v = D_u v + sum_i e_ui q~_i (q~_i . v)``, O(n_u d) a
  step, preconditioned by default with ``D_u`` (in the original basis: by the shared part
  ``c_u G + reg_u I``). The preconditioned matrix ``I + D_u^-1/2 U^T E U D_u^-1/2`` is the
  identity plus a rank-``n_u`` term, so its eigenvalues other than 1 number at most ``n_u``.
  CG's iterates are those of (preconditioned) CG in the original basis (the basis change is
  orthogonal). CG never increases ``f_u`` (it minimises f_u over a growing Krylov space
  around the start).
- :func:`solve_block`: Rendle et al.'s iALS++ subspace solver: for each block of ``block_size``
  coordinates, the exact minimiser of ``f_u`` over that block with the rest fixed (a
  ``block_size`` x ``block_size`` Cholesky), keeping the observed entries' gradient
  coefficients and ``G x`` up to date. The row's gathered factors are stored block by block,
  so each block step reads contiguous vectors. Cost per sweep O(n_u d b + d b^2 + d^2) for
  block size b. Each block step is an exact minimisation, so ``f_u`` never increases; with
  ``block_size = d`` one sweep is exact.

Status codes written per row: 0 success, 1 system not positive definite (Cholesky pivot <= 0
or a CG curvature <= 0): the estimator turns them into a clear error.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from linrec._kernels.matmul import matmul_into
from linrec._kernels.prefetch import PREFETCH_AHEAD, prefetch_entry

__all__ = [
    "block_exact_max_entries_for",
    "chunk_bounds",
    "data_term",
    "gram_eigenbasis",
    "rotate_rows",
    "solve_block",
    "solve_block_eigen",
    "solve_cg",
    "solve_cholesky",
    "solve_rows",
    "solve_rows_diagonal",
    "weighted_gram",
]


def chunk_bounds(indptr: np.ndarray, n_factors: int, n_chunks: int) -> np.ndarray:
    """Split rows into ``n_chunks`` contiguous chunks of about equal work.

    Work per row is taken as ``n_u + n_factors`` (sparse part plus dense part, in units of d
    operations), so heavy rows of power-law data do not pile into one chunk.
    """
    n_rows = indptr.shape[0] - 1
    n_chunks = max(1, min(int(n_chunks), n_rows))
    work = np.diff(indptr).astype(np.float64) + float(n_factors)
    cum = np.concatenate(([0.0], np.cumsum(work)))
    targets = np.linspace(0.0, cum[-1], n_chunks + 1)
    bounds = np.searchsorted(cum, targets, side="left").astype(np.int64)
    bounds[0] = 0
    bounds[-1] = n_rows
    return np.unique(bounds)


@njit(cache=True)
def transpose_order(indptr, indices, n_cols):
    """Column-major structure of a CSR matrix: (indptr, indices) of its transpose and the
    permutation taking its entries into that order.

    A counting sort by column, stable in row order, so each column's rows come out ascending:
    the structure of ``X.T.tocsr()`` after ``sort_indices()``, for a matrix without duplicate
    entries, in one O(nnz) pass.
    """
    n_rows = indptr.shape[0] - 1
    nnz = indptr[n_rows]
    t_indptr = np.zeros(n_cols + 1, dtype=np.int64)
    for e in range(nnz):
        t_indptr[indices[e] + 1] += 1
    for j in range(n_cols):
        t_indptr[j + 1] += t_indptr[j]
    next_slot = t_indptr[:n_cols].copy()
    t_indices = np.empty(nnz, dtype=np.int64)
    perm = np.empty(nnz, dtype=np.int64)
    for u in range(n_rows):
        for e in range(indptr[u], indptr[u + 1]):
            k = next_slot[indices[e]]
            next_slot[indices[e]] = k + 1
            t_indices[k] = u
            perm[k] = e
    return t_indptr, t_indices, perm


@njit(cache=True)
def append_row_entries(indptr, indices, extra, rhs, new_items, weight):
    """Each CSR row's entries followed by its row of ``new_items`` (-1: none), the new
    entries weighing ``extra = weight`` with ``rhs = 0``. One O(nnz) pass; returns new
    ``(indptr, indices, extra, rhs)``."""
    n_rows, k = new_items.shape
    out_indptr = np.zeros(n_rows + 1, dtype=np.int64)
    for r in range(n_rows):
        n_new = 0
        for t in range(k):
            if new_items[r, t] >= 0:
                n_new += 1
        out_indptr[r + 1] = out_indptr[r] + (indptr[r + 1] - indptr[r]) + n_new
    total = out_indptr[n_rows]
    out_indices = np.empty(total, dtype=np.int64)
    out_extra = np.empty(total, dtype=extra.dtype)
    out_rhs = np.empty(total, dtype=rhs.dtype)
    for r in range(n_rows):
        pos = out_indptr[r]
        for e in range(indptr[r], indptr[r + 1]):
            out_indices[pos] = indices[e]
            out_extra[pos] = extra[e]
            out_rhs[pos] = rhs[e]
            pos += 1
        for t in range(k):
            if new_items[r, t] >= 0:
                out_indices[pos] = new_items[r, t]
                out_extra[pos] = weight
                out_rhs[pos] = 0
                pos += 1
    return out_indptr, out_indices, out_extra, out_rhs


@njit(fastmath=True, cache=True)
def _dot(a, b):
    # Pure arithmetic leaf: fastmath lets LLVM vectorise the reduction (reassociation only).
    s = a.dtype.type(0)
    for k in range(a.shape[0]):
        s += a[k] * b[k]
    return s


@njit(fastmath=True, cache=True)
def _dot4(a0, a1, a2, a3, b, n):
    # Four dot products against one vector: b is loaded once for four rows (pure arithmetic
    # leaf, fastmath for vectorised reductions). Measured 1.5x faster Cholesky at d = 64.
    s0 = b.dtype.type(0)
    s1 = s0
    s2 = s0
    s3 = s0
    for k in range(n):
        bk = b[k]
        s0 += a0[k] * bk
        s1 += a1[k] * bk
        s2 += a2[k] * bk
        s3 += a3[k] * bk
    return s0, s1, s2, s3


@njit(fastmath=True, cache=True)
def _dot4x2(a0, a1, a2, a3, b0, b1, n):
    # Eight dot products, four rows against two vectors: eight independent SIMD accumulators
    # hide the FMA latency that four leave exposed, and each b is loaded once for four rows
    # (a rotation 1.2x faster than with _dot4 at d = 256).
    s00 = b0.dtype.type(0)
    s10 = s00
    s20 = s00
    s30 = s00
    s01 = s00
    s11 = s00
    s21 = s00
    s31 = s00
    for k in range(n):
        x0 = b0[k]
        x1 = b1[k]
        s00 += a0[k] * x0
        s10 += a1[k] * x0
        s20 += a2[k] * x0
        s30 += a3[k] * x0
        s01 += a0[k] * x1
        s11 += a1[k] * x1
        s21 += a2[k] * x1
        s31 += a3[k] * x1
    return s00, s10, s20, s30, s01, s11, s21, s31


@njit(cache=True)
def _add_upper_products(S, R, m, acc):
    # acc[a, b] += S[a, :m] . R[b, :m] for b >= a: 4 x 2 tiles of dot products (:func:`_dot4x2`),
    # so acc, S and R need a multiple of 4 rows. Entries below the diagonal inside the tiles
    # are written too; callers read the upper triangle only.
    n = acc.shape[0]
    for a in range(0, n, 4):
        for b in range(a, n, 2):
            s = _dot4x2(S[a], S[a + 1], S[a + 2], S[a + 3], R[b], R[b + 1], m)
            for t in range(4):
                acc[a + t, b] += s[t]
                acc[a + t, b + 1] += s[4 + t]


@njit(cache=True)
def _cholesky_solve(A, b, m):
    """Solve A x = b in place for the leading m x m block (lower triangle of A is read).

    On return the lower triangle of A holds L (A = L L^T) and b holds x. Returns False when a
    pivot is not positive (the system is not positive definite), leaving b undefined.
    Left-looking (dot-product) order: every inner loop is a read-only dot product of
    contiguous row prefixes, which vectorises; axpy orders measured 2-5x slower here.
    """
    for j in range(m):
        Aj = A[j]
        s = Aj[j] - _dot(Aj[:j], Aj[:j])
        if not s > 0:  # also catches NaN
            return False
        ljj = np.sqrt(s)
        Aj[j] = ljj
        inv = 1 / ljj
        i = j + 1
        while i + 4 <= m:
            s0, s1, s2, s3 = _dot4(A[i], A[i + 1], A[i + 2], A[i + 3], Aj, j)
            A[i, j] = (A[i, j] - s0) * inv
            A[i + 1, j] = (A[i + 1, j] - s1) * inv
            A[i + 2, j] = (A[i + 2, j] - s2) * inv
            A[i + 3, j] = (A[i + 3, j] - s3) * inv
            i += 4
        while i < m:
            A[i, j] = (A[i, j] - _dot(A[i, :j], Aj[:j])) * inv
            i += 1
    # forward: L z = b (row access)
    for i in range(m):
        b[i] = (b[i] - _dot(A[i, :i], b[:i])) / A[i, i]
    # backward: L^T x = z, column-oriented so that the inner loop runs along rows of L
    for i in range(m - 1, -1, -1):
        b[i] = b[i] / A[i, i]
        xi = b[i]
        for k in range(i):
            b[k] -= A[i, k] * xi
    return True


@njit(cache=True)
def _gram_matvec(G, v, out, scale):
    # out = scale * G v as row dot products, four rows per pass so v is loaded once for four
    # rows (G is symmetric, rows are contiguous).
    d = v.shape[0]
    a = 0
    while a + 4 <= d:
        s0, s1, s2, s3 = _dot4(G[a], G[a + 1], G[a + 2], G[a + 3], v, d)
        out[a] = scale * s0
        out[a + 1] = scale * s1
        out[a + 2] = scale * s2
        out[a + 3] = scale * s3
        a += 4
    while a < d:
        out[a] = scale * _dot(G[a], v)
        a += 1


@njit(cache=True)
def _add_sparse_product(Qu, extra, start, n_u, v, out, dots):
    # out += sum_k extra[start + k] * Qu[k] (Qu[k] . v): four rows at a time share the loads
    # of v and one pass over out. A non-empty dots receives the products Qu[k] . v.
    d = v.shape[0]
    keep = dots.shape[0] > 0
    k = 0
    while k + 4 <= n_u:
        q0, q1, q2, q3 = Qu[k], Qu[k + 1], Qu[k + 2], Qu[k + 3]
        s0, s1, s2, s3 = _dot4(q0, q1, q2, q3, v, d)
        if keep:
            dots[k], dots[k + 1], dots[k + 2], dots[k + 3] = s0, s1, s2, s3
        c0 = extra[start + k] * s0
        c1 = extra[start + k + 1] * s1
        c2 = extra[start + k + 2] * s2
        c3 = extra[start + k + 3] * s3
        for a in range(d):
            out[a] += c0 * q0[a] + c1 * q1[a] + c2 * q2[a] + c3 * q3[a]
        k += 4
    while k < n_u:
        q = Qu[k]
        dot = _dot(q, v)
        if keep:
            dots[k] = dot
        c = extra[start + k] * dot
        for a in range(d):
            out[a] += c * q[a]
        k += 1


@njit(cache=True)
def _fetch4(other, indices, position, limit):
    # the rows of entries position .. position + 3, each prefetch running PREFETCH_AHEAD ahead
    for j in range(4):
        prefetch_entry(other, indices, position + j + PREFETCH_AHEAD, limit)
    return (
        other[indices[position]],
        other[indices[position + 1]],
        other[indices[position + 2]],
        other[indices[position + 3]],
    )


@njit(cache=True)
def _add_sparse_product_in_place(other, indices, extra, start, n_u, v, out, limit, dots):
    # _add_sparse_product reading the rows from the table itself (other[indices[start + k]]),
    # with the same arithmetic in the same order, prefetching ahead as the gather does. Kept
    # apart: one function reading the gathered copy through an identity index was 5-10%
    # slower per CG epoch (synthetic 10M, d = 256, three alternating 3-epoch fits).
    d = v.shape[0]
    keep = dots.shape[0] > 0
    k = 0
    while k + 4 <= n_u:
        q0, q1, q2, q3 = _fetch4(other, indices, start + k, limit)
        s0, s1, s2, s3 = _dot4(q0, q1, q2, q3, v, d)
        if keep:
            dots[k], dots[k + 1], dots[k + 2], dots[k + 3] = s0, s1, s2, s3
        c0 = extra[start + k] * s0
        c1 = extra[start + k + 1] * s1
        c2 = extra[start + k + 2] * s2
        c3 = extra[start + k + 3] * s3
        for a in range(d):
            out[a] += c0 * q0[a] + c1 * q1[a] + c2 * q2[a] + c3 * q3[a]
        k += 4
    while k < n_u:
        prefetch_entry(other, indices, start + k + PREFETCH_AHEAD, limit)
        q = other[indices[start + k]]
        dot = _dot(q, v)
        if keep:
            dots[k] = dot
        c = extra[start + k] * dot
        for a in range(d):
            out[a] += c * q[a]
        k += 1


# Rows per parallel chunk when rotating a factor matrix into (or out of) the eigenbasis. The
# rotation is a numba loop nest, not BLAS: a BLAS gemm may compute a row differently by its
# position in the block (OpenBLAS 0.3.31's Haswell sgemm does, for the last rows of a 64-row
# block), and a row's rotated value must not depend on the rows rotated with it, so that a
# batch of fold-in rows gives the same factors as the whole matrix, whatever the thread count.
# In a Gowalla d = 256 fit at bench_ials.py's setting the four rotations of an epoch took
# about 0.36 s on two threads with dot-product tiles (benchmarks/RESULTS.md, session 24).
_ROTATE_ROWS = 64


# Rows at least this long build their d x d system by tiles of dot products over transposed
# pieces of up to d entries; shorter ones by scalar loops, where the transposition would not pay.
_TILED_MIN_ENTRIES = 16

# CG rows whose gathered factors would exceed this many bytes are read in place (solve_cg).
# On the 2 MB L2 of an Emerald Rapids core, a copy up to twice that size, written once and
# read sequentially in every step, beats reading the rows at random from the table in every
# step: synthetic 10M, d = 256, medians of 3 epochs in three interleaved fits, 1.38-1.46 s at
# 4 MiB against 1.43-1.49 s at 1 MiB (2 MiB 1.39-1.46, 8 MiB 1.39-1.45; 64 MiB 1.51-1.56, a
# fresh allocation per chunk); Gowalla and Yelp2018 at d = 256 unchanged (0.27 / 0.33 s).
_CG_GATHER_MAX_BYTES = 4 << 20


def gram_eigenbasis(gram, dtype):
    """Eigenvalues and eigenvectors of the symmetric Gram matrix, computed in float64.

    Returns ``(eigenvalues, V, V^T)`` in ``dtype`` with ``gram = V diag(eigenvalues) V^T``;
    ``V^T`` is returned contiguous for the back-rotation.
    """
    eigenvalues, V = np.linalg.eigh(np.asarray(gram, dtype=np.float64))
    return (
        eigenvalues.astype(dtype),
        np.ascontiguousarray(V, dtype=dtype),
        np.ascontiguousarray(V.T, dtype=dtype),
    )


@njit(parallel=True, cache=True)
def _rotate_chunks(A, V, out, in_place):
    # out = A @ V, chunks of _ROTATE_ROWS rows in parallel, each by the register tiles of
    # :func:`~linrec._kernels.matmul.matmul_into`. Every output entry is one sum over k
    # in order, in the tiles and in the edge rows alike, so a row's value does not depend on
    # its position or on the rows beside it. ``in_place`` (``out`` is ``A``): each chunk is
    # copied before any of its rows is written. Measured against the former 4 x 2 dot-product
    # tiles, 41k rows on two threads: 5.4 against 9.0 ms at d = 64, 72 against 88 ms at
    # d = 256; the wide tiles on the AVX-512 Xeon, 100k rows in place at d = 256: 45-46 ms
    # against 59 ms by the 6 x 16 tiles.
    n = A.shape[0]
    n_chunks = (n + _ROTATE_ROWS - 1) // _ROTATE_ROWS
    for c in prange(n_chunks):
        lo = c * _ROTATE_ROWS
        hi = min(n, lo + _ROTATE_ROWS)
        if in_place:
            matmul_into(A[lo:hi].copy(), V, out[lo:hi])
        else:
            matmul_into(A[lo:hi], V, out[lo:hi])


def rotate_rows(A, V, out=None):
    """``A @ V`` by rows in parallel, each row's value independent of the rows beside it.

    ``out`` may be given (C-contiguous, ``A``'s shape and dtype), and may be ``A`` itself
    when ``V`` is square: rotating in place allocates nothing the size of ``A``.
    """
    if out is None:
        out = np.empty((A.shape[0], V.shape[1]), dtype=A.dtype)
    if A.shape[0]:
        A = np.ascontiguousarray(A)
        V = np.ascontiguousarray(V, dtype=A.dtype)
        _rotate_chunks(A, V, out, np.shares_memory(A, out))
    return out


# The Gram matrix is summed over a fixed number of row ranges (one partial sum each, in
# parallel), each range in pieces of rows; the partial sums are added in range order. Neither
# number depends on the thread count, so neither does the result. The products are numba
# code, not BLAS: inside numba, np.dot goes to SciPy's OpenBLAS, whose single-threaded sgemm
# measured 0.16-0.57 s for 41k x 256 rows depending on the call.
_GRAM_RANGES = 16
_GRAM_PIECE_ROWS = 256  # float32: the register tiles of matmul_into
_GRAM_PIECE_BYTES = 1024  # float64: the dot-product tiles of _add_upper_products


@njit(parallel=True, cache=True)
def _gram_ranges(A, weights, weighted, bounds, partial):
    # partial[c] = sum over range c of w_r a_r a_r^T, in partial's dtype (d_pad x d_pad, d_pad
    # a multiple of 4). float32: each piece of rows is copied (and a second time scaled when
    # weighted) into buffers that stay in the L2 cache, and multiplied by the register tiles,
    # reading the scaled copy through a transposed view (six entries of one row at a time),
    # the tiles of the lower triangle only, which is added to the upper one of acc. The whole
    # d x d product by tiles took half the time of dot-product tiles over the upper triangle
    # (100k x 256 rows on two threads: 64-65 against 137 ms); the wide tiles on the AVX-512
    # Xeon, 44 against 54 ms (weighted). float64, whose tiles hold half
    # the lanes: each piece is copied transposed into buffers whose rows are 1 KB long, so the
    # six rows a 4 x 2 tile of dot products reads stay in the L1 cache, and only the upper
    # triangle is summed (there 99 ms against 118-121 ms by the whole register-tiled product).
    d = A.shape[1]
    d_pad = partial.shape[1]
    single = partial.itemsize == 4
    piece = _GRAM_PIECE_ROWS if single else _GRAM_PIECE_BYTES // partial.itemsize
    for c in prange(bounds.shape[0] - 1):
        acc = partial[c]
        acc[:] = 0
        if single:
            rows = np.empty((piece, d), dtype=partial.dtype)
            scaled = np.empty((piece, d), dtype=partial.dtype) if weighted else rows
            product = np.empty((d, d), dtype=partial.dtype)
        else:
            rows = np.zeros((d_pad, piece), dtype=partial.dtype)
            scaled = np.zeros((d_pad, piece), dtype=partial.dtype) if weighted else rows
        for lo in range(bounds[c], bounds[c + 1], piece):
            m = min(bounds[c + 1], lo + piece) - lo
            if single:
                for r in range(m):
                    for a in range(d):
                        rows[r, a] = A[lo + r, a]
                    if weighted:
                        for a in range(d):
                            scaled[r, a] = weights[lo + r] * rows[r, a]
                matmul_into(scaled[:m].T, rows[:m], product, True)
                for a in range(d):
                    for b in range(a + 1):
                        acc[b, a] += product[a, b]
            else:
                for r in range(m):
                    for a in range(d):
                        rows[a, r] = A[lo + r, a]
                if weighted:
                    for a in range(d):
                        for r in range(m):
                            scaled[a, r] = weights[lo + r] * rows[a, r]
                _add_upper_products(scaled, rows, m, acc)


def weighted_gram(A, weights=None, dtype=None):
    """``sum_r w_r a_r a_r^T`` over the rows of ``A`` (``A^T A`` when ``weights`` is None).

    Computed in ``dtype`` (default: ``A``'s), converting ``A`` piece by piece (no full copy);
    the weights are cast to it first. Row ranges run in parallel on numba's threads; the
    result is exactly symmetric and does not depend on the thread count.
    """
    A = np.ascontiguousarray(A)
    n, d = A.shape
    out_dtype = A.dtype if dtype is None else np.dtype(dtype)
    weighted = weights is not None
    w = np.ascontiguousarray(weights, dtype=out_dtype) if weighted else np.empty(0, dtype=out_dtype)
    bounds = np.linspace(0, n, _GRAM_RANGES + 1).astype(np.int64)
    d_pad = (d + 3) // 4 * 4
    partial = np.empty((_GRAM_RANGES, d_pad, d_pad), dtype=out_dtype)
    _gram_ranges(A, w, weighted, bounds, partial)
    upper = np.triu(partial.sum(axis=0)[:d, :d])
    return upper + np.triu(upper, 1).T


@njit(parallel=True, cache=True)
def _square_sums(A, weights, weighted, bounds, row_norms, partial):
    # row_norms[r] = |a_r|^2 and partial[c, a] = sum over range c of w_r a_ra^2, in float64
    d = A.shape[1]
    for c in prange(bounds.shape[0] - 1):
        acc = partial[c]
        acc[:] = 0
        for r in range(bounds[c], bounds[c + 1]):
            w = weights[r] if weighted else 1.0
            norm = 0.0
            for a in range(d):
                v = np.float64(A[r, a])
                square = v * v
                norm += square
                acc[a] += w * square
            row_norms[r] = norm


def square_sums(A, weights=None):
    """``(|a_r|^2 per row, sum_r w_r a_ra^2 per column)`` of ``A``, summed in float64.

    The second is the diagonal of ``weighted_gram(A, weights, dtype=np.float64)`` at
    O(n d) instead of O(n d^2). One pass over ``A`` (no float64 copy); row ranges run in
    parallel on numba's threads, and the result does not depend on the thread count.
    """
    A = np.ascontiguousarray(A)
    n, d = A.shape
    weighted = weights is not None
    w = np.ascontiguousarray(weights, dtype=np.float64) if weighted else np.empty(0)
    bounds = np.linspace(0, n, _GRAM_RANGES + 1).astype(np.int64)
    row_norms = np.empty(n, dtype=np.float64)
    partial = np.empty((_GRAM_RANGES, d), dtype=np.float64)
    _square_sums(A, w, weighted, bounds, row_norms, partial)
    return row_norms, partial.sum(axis=0)


@njit(cache=True)
def _add_entries(A, b, other, indices, extra, rhs, start, end, limit):
    # A (lower triangle) += sum_i e_i q_i q_i^T and b += sum_i t_i q_i over the row's entries,
    # four entries per pass over the triangle: A is loaded and stored 4x less often.
    d = b.shape[0]
    idx = start
    while idx + 4 <= end:
        for k in range(4):
            prefetch_entry(other, indices, idx + PREFETCH_AHEAD + k, limit)
        q0 = other[indices[idx]]
        q1 = other[indices[idx + 1]]
        q2 = other[indices[idx + 2]]
        q3 = other[indices[idx + 3]]
        e0, e1, e2, e3 = extra[idx], extra[idx + 1], extra[idx + 2], extra[idx + 3]
        t0, t1, t2, t3 = rhs[idx], rhs[idx + 1], rhs[idx + 2], rhs[idx + 3]
        for a in range(d):
            b[a] += t0 * q0[a] + t1 * q1[a] + t2 * q2[a] + t3 * q3[a]
            a0 = e0 * q0[a]
            a1 = e1 * q1[a]
            a2 = e2 * q2[a]
            a3 = e3 * q3[a]
            Aa = A[a]
            for k in range(a + 1):
                Aa[k] += a0 * q0[k] + a1 * q1[k] + a2 * q2[k] + a3 * q3[k]
        idx += 4
    while idx < end:
        prefetch_entry(other, indices, idx + PREFETCH_AHEAD, limit)
        q = other[indices[idx]]
        e = extra[idx]
        t = rhs[idx]
        for a in range(d):
            b[a] += t * q[a]
            ea = e * q[a]
            Aa = A[a]
            for k in range(a + 1):
                Aa[k] += ea * q[k]
        idx += 1


@njit(cache=True)
def _add_entries_products(A, b, other, indices, extra, rhs, start, end, limit, WT, QT, T, P):
    # The same sums as _add_entries for long rows, entries in pieces of up to d. float32:
    # each piece is gathered by rows into WT (the rows times e) and QT (the rows), and the
    # lower triangle of its sum e q q^T is one product of register tiles (matmul_into
    # with lower, into P, d x d), added to A (as for the Gram matrix; the wide tiles took the
    # synthetic 10M matrix's exact epoch at d = 256 from 9.66-9.74 to 8.98-9.05 s). float64:
    # the piece is gathered transposed (both with a multiple of 4 rows, those beyond d zero)
    # and summed by 4 x 2 tiles of dot products (:func:`_add_upper_products`, into T). Not a
    # BLAS gemm: see :func:`_lower_row_products`.
    d = b.shape[0]
    single = A.itemsize == 4
    if not single:
        T[:, :] = 0
    idx = start
    while idx < end:
        m = min(d, end - idx)
        for k in range(m):
            prefetch_entry(other, indices, idx + k + PREFETCH_AHEAD, limit)
            q = other[indices[idx + k]]
            e = extra[idx + k]
            t = rhs[idx + k]
            if single:
                Qk = QT[k]
                Wk = WT[k]
                for a in range(d):
                    Qk[a] = q[a]
                    Wk[a] = e * q[a]
                    b[a] += t * q[a]
            else:
                for a in range(d):
                    QT[a, k] = q[a]
                    WT[a, k] = e * q[a]
                    b[a] += t * q[a]
        if single:
            matmul_into(WT[:m].T, QT[:m], P, True)
            for a in range(d):
                Aa = A[a]
                Pa = P[a]
                for k in range(a + 1):
                    Aa[k] += Pa[k]
        else:
            _add_upper_products(WT, QT, m, T)
        idx += m
    if not single:
        for a in range(d):
            Aa = A[a]
            for k in range(a + 1):
                Aa[k] += T[k, a]


@njit(cache=True)
def _lower_row_products(W, n, M):
    # M[k, j] = W[k] . W[j] for j <= k < n: two rows k against four rows j per pass
    # (:func:`_dot4x2`), the rest by single dot products. Numba dot products, not a BLAS
    # gemm: SciPy's OpenBLAS, which np.dot reaches inside numba, was measured 2-5x slower
    # single-threaded on some machines (see _gram_ranges). Entries above the diagonal of
    # the 4-row blocks are written too and never read.
    d = W.shape[1]
    k = 0
    while k + 2 <= n:
        j = 0
        while j + 4 <= k + 2:
            s = _dot4x2(W[j], W[j + 1], W[j + 2], W[j + 3], W[k], W[k + 1], d)
            for t in range(4):
                M[k, j + t] = s[t]
                M[k + 1, j + t] = s[4 + t]
            j += 4
        while j <= k + 1:
            if j <= k:
                M[k, j] = _dot(W[j], W[k])
            M[k + 1, j] = _dot(W[j], W[k + 1])
            j += 1
        k += 2
    if k < n:
        for j in range(k + 1):
            M[k, j] = _dot(W[j], W[k])


@njit(cache=True)
def _low_rank_row(D, other, indices, extra, rhs, start, n_u, limit, W, M, y, s, x):
    """Exact solve of (D + U^T E U) x = U^T t for a row with n_u < d entries (e >= 0).

    D is the diagonal (eigenbasis) part, U the row's n_u rotated factor rows. With
    W = U D^(-1/2), K = W W^T and S = E^(1/2), the solution is x = D^(-1/2) W^T z with
    z = t - S y and (I + S K S) y = S K t (Woodbury's identity written without E^-1, so
    zero weights are allowed). I + S K S is symmetric with eigenvalues >= 1: an n_u x n_u
    Cholesky replaces the d x d one. Returns False if that factorisation fails (the caller
    then solves the d x d system). Scratch: W has at least n_u rows of d, M (flat) at least
    n_u^2 entries, y at least n_u and s at least max(n_u, d).
    """
    d = D.shape[0]
    # x doubles as scratch for D^(-1/2) until the end
    for a in range(d):
        x[a] = 1 / np.sqrt(D[a])
    for k in range(n_u):
        prefetch_entry(other, indices, start + k + PREFETCH_AHEAD, limit)
        q = other[indices[start + k]]
        Wk = W[k]
        for a in range(d):
            Wk[a] = q[a] * x[a]
        s[k] = np.sqrt(extra[start + k])
    # K = W W^T (lower triangle) in a contiguous n_u x n_u view of the flat scratch ``M``:
    # the row's dominant O(n_u^2 d) cost
    M = M[: n_u * n_u].reshape((n_u, n_u))
    _lower_row_products(W, n_u, M)
    # y = S K t (K symmetric, lower triangle stored), then M = I + S K S
    for k in range(n_u):
        y[k] = 0
    for k in range(n_u):
        tk = rhs[start + k]
        Mk = M[k]
        acc = Mk[k] * tk
        for j in range(k):
            acc += Mk[j] * rhs[start + j]
            y[j] += Mk[j] * tk
        y[k] += acc
    for k in range(n_u):
        sk = s[k]
        y[k] *= sk
        Mk = M[k]
        for j in range(k + 1):
            Mk[j] *= sk * s[j]
        Mk[k] += 1
    if not _cholesky_solve(M, y, n_u):
        return False
    # z = t - S y (in y), x = D^(-1/2) W^T z
    for k in range(n_u):
        y[k] = rhs[start + k] - s[k] * y[k]
    for a in range(d):
        s[a] = 0  # s is free now: accumulate W^T z in it
    for k in range(n_u):
        zk = y[k]
        Wk = W[k]
        for a in range(d):
            s[a] += zk * Wk[a]
    for a in range(d):
        x[a] = x[a] * s[a]
    return True


@njit(cache=True)
def _shared_diagonal(eigenvalues, cu, reg, D, extra, start, end, min_ratio):
    """D = cu * eigenvalues + reg, the row's shared part in the eigenbasis; returns whether
    the row may take the n_u x n_u Woodbury form of :func:`_low_rank_row`: fewer entries
    than factors, D safely positive (it is divided by) and e >= 0 (its square root is
    taken)."""
    d = D.shape[0]
    d_min = np.inf
    d_max = 0.0
    for a in range(d):
        D[a] = cu * eigenvalues[a] + reg
        d_min = min(d_min, D[a])
        d_max = max(d_max, D[a])
    if not (end - start < d and d_min > min_ratio * d_max):
        return False
    for idx in range(start, end):
        if extra[idx] < 0:
            return False
    return True


@njit(parallel=True, cache=True)
def _solve_exact_rotated(
    indptr,
    indices,
    extra,
    rhs,
    row_weight,
    row_reg,
    eigenvalues,
    other,
    out,
    bounds,
    min_ratio,
    status,
):
    # Exact rows in the Gram eigenbasis: the shared part c_u G + reg_u I is the diagonal
    # D = c_u eigenvalues + reg_u, ``other`` holds the rotated factor rows.
    d = out.shape[1]
    n_chunks = bounds.shape[0] - 1
    for c in prange(n_chunks):
        A = np.empty((d, d), dtype=out.dtype)
        A_flat = A.reshape(d * d)  # the same memory, as the Woodbury form's flat scratch
        # W: the Woodbury rows, or the long rows' transposed pieces (rows beyond d stay zero)
        d_pad = (d + 3) // 4 * 4
        W = np.zeros((d_pad, d), dtype=out.dtype)
        Qp = np.zeros((d_pad, d), dtype=out.dtype)
        T = np.empty((d_pad, d_pad), dtype=out.dtype)
        P = np.empty((d, d) if out.itemsize == 4 else (0, 0), dtype=out.dtype)
        b = np.empty(d, dtype=out.dtype)
        D = np.empty(d, dtype=out.dtype)
        s = np.empty(d, dtype=out.dtype)
        limit = indptr[bounds[c + 1]]  # prefetching runs ahead into the chunk's next rows
        for u in range(bounds[c], bounds[c + 1]):
            start = indptr[u]
            end = indptr[u + 1]
            n_u = end - start
            status[u] = 0
            x = out[u]
            if n_u == 0:
                x[:] = 0
                continue
            low_rank = _shared_diagonal(
                eigenvalues, row_weight[u], row_reg[u], D, extra, start, end, min_ratio
            )
            if low_rank and _low_rank_row(
                D, other, indices, extra, rhs, start, n_u, limit, W, A_flat, b, s, x
            ):
                continue
            for a in range(d):
                Aa = A[a]
                for k in range(a):
                    Aa[k] = 0
                Aa[a] = D[a]
                b[a] = 0
            if n_u >= _TILED_MIN_ENTRIES:
                _add_entries_products(
                    A, b, other, indices, extra, rhs, start, end, limit, W, Qp, T, P
                )
            else:
                _add_entries(A, b, other, indices, extra, rhs, start, end, limit)
            if _cholesky_solve(A, b, d):
                x[:] = b
            else:
                status[u] = 1


def solve_cholesky(
    indptr, indices, extra, rhs, row_weight, row_reg, gram, other, factors, bounds, status
):
    """Exact row update: ``factors[u]`` <- argmin f_u for every row (see module notes).

    Solved in the eigenbasis of ``gram`` (rotated once per call), where the shared
    part of every system is diagonal: rows with fewer entries than factors take the
    n_u x n_u Woodbury form, the others a d x d Cholesky. ``bounds`` must cover every row.
    Rows without entries get the zero vector (their right-hand side is zero). ``factors``
    (C-contiguous) is solved and rotated back in place.
    """
    _solve_in_eigenbasis(
        "cholesky",
        (indptr, indices, extra, rhs, row_weight, row_reg),
        gram,
        other,
        factors,
        bounds,
        status,
        rotate_factors=False,
    )


def _solve_in_eigenbasis(
    solver, terms, gram, other, factors, bounds, status, *, rotate_factors, **options
):
    """Rotate ``other`` (and, when the solver reads them, ``factors``) into the eigenbasis of
    ``gram``, solve there with :func:`solve_rows_diagonal`, and rotate ``factors`` back in
    place. ``terms`` is ``(indptr, indices, extra, rhs, row_weight, row_reg)``."""
    eigenvalues, V, VT = gram_eigenbasis(gram, factors.dtype)
    rotated_other = rotate_rows(other, V)
    if rotate_factors:
        rotate_rows(factors, V, out=factors)
    solve_rows_diagonal(
        solver, *terms, eigenvalues, rotated_other, factors, bounds, status, **options
    )
    rotate_rows(factors, VT, out=factors)


@njit(parallel=True, cache=True)
def _solve_cg_rotated(
    indptr,
    indices,
    extra,
    rhs,
    row_weight,
    row_reg,
    eigenvalues,
    other,
    factors,
    bounds,
    n_steps,
    max_row,
    gather_max,
    status,
    data_rows,
    precondition,
    warm_start,
):
    # CG in the Gram eigenbasis: the shared part c_u G + reg_u I is the diagonal D, so a
    # product with it costs d instead of d^2. CG's iterates do not depend on the basis.
    # With precondition, D is also the preconditioner: the preconditioned system is the
    # identity plus a rank-n_u term, whose eigenvalues cluster at 1 (at most n_u + 1 distinct).
    # Without warm_start each row starts from zero, so its current value is never read (the
    # caller need not rotate it into the basis).
    # With data_rows (length > 0), each row's share of the objective's data term at the
    # solved row, sum_i e y^2 - 2 b y + b with y = q_i . x, is written there (float64). The
    # scores y need no pass of their own: x is the start plus alpha times each step's
    # direction, and the passes already compute q_i . x0 and q_i . p, so y is summed from
    # those (in float64, from products in the factors' dtype).
    d = factors.shape[1]
    want_data = data_rows.shape[0] > 0
    n_chunks = bounds.shape[0] - 1
    for c in prange(n_chunks):
        r = np.empty(d, dtype=factors.dtype)
        p = np.empty(d, dtype=factors.dtype)
        Ap = np.empty(d, dtype=factors.dtype)
        D = np.empty(d, dtype=factors.dtype)
        D_inv = np.empty(d, dtype=factors.dtype)
        z = np.empty(d, dtype=factors.dtype)
        scores = np.empty(max_row if want_data else 0, dtype=np.float64)
        dots = np.empty(max_row if want_data else 0, dtype=factors.dtype)
        Qu = np.empty((max(min(max_row, gather_max), 1), d), dtype=factors.dtype)
        limit = indptr[bounds[c + 1]]  # prefetching runs ahead into the chunk's next rows
        for u in range(bounds[c], bounds[c + 1]):
            start = indptr[u]
            end = indptr[u + 1]
            n_u = end - start
            status[u] = 0
            if want_data:
                data_rows[u] = 0.0
            if n_u == 0:
                factors[u, :] = 0
                continue
            x = factors[u]
            gathered = n_u <= gather_max
            cu = row_weight[u]
            reg = row_reg[u]
            # residual r = b - A x (gathering the rows on the way)
            for a in range(d):
                D[a] = cu * eigenvalues[a] + reg
                # a coordinate with no shared curvature (no regularisation, eigenvalue 0)
                # is left unscaled: the preconditioner must be positive definite
                D_inv[a] = 1 / D[a] if precondition and D[a] > 0 else 1
                if warm_start:
                    r[a] = -D[a] * x[a]
                else:
                    x[a] = 0
                    r[a] = 0
            for k in range(n_u):
                prefetch_entry(other, indices, start + k + PREFETCH_AHEAD, limit)
                if gathered:
                    # an element loop, not q[:] = other[row]: no view of the table's row per
                    # entry (synthetic 10M, d = 256: CG epochs 1.45-1.48 s against 1.49-1.55 s
                    # in three interleaved 4-epoch fits, same bits)
                    q = Qu[k]
                    row = indices[start + k]
                    for a in range(d):
                        q[a] = other[row, a]
                else:
                    q = other[indices[start + k]]
                coef = rhs[start + k]
                if warm_start:
                    dot = _dot(q, x)
                    coef -= extra[start + k] * dot
                    if want_data:
                        scores[k] = dot
                elif want_data:
                    scores[k] = 0.0
                for a in range(d):
                    r[a] += coef * q[a]
            # z = D^-1 r lives in p until the first step; rr is r . z
            for a in range(d):
                p[a] = D_inv[a] * r[a]
            rr = _dot(r, p)
            for _ in range(n_steps):
                if rr == 0:
                    break
                for a in range(d):
                    Ap[a] = D[a] * p[a]
                if gathered:
                    _add_sparse_product(Qu, extra, start, n_u, p, Ap, dots)
                else:
                    _add_sparse_product_in_place(
                        other, indices, extra, start, n_u, p, Ap, end, dots
                    )
                pAp = _dot(p, Ap)
                if not pAp > 0:
                    status[u] = 1
                    break
                alpha = rr / pAp
                for a in range(d):
                    x[a] += alpha * p[a]
                    r[a] -= alpha * Ap[a]
                if want_data:
                    for k in range(n_u):
                        scores[k] += np.float64(alpha) * np.float64(dots[k])
                for a in range(d):
                    z[a] = D_inv[a] * r[a]
                rr_new = _dot(r, z)
                beta = rr_new / rr
                for a in range(d):
                    p[a] = z[a] + beta * p[a]
                rr = rr_new
            if want_data:
                acc = 0.0
                for k in range(n_u):
                    acc += _entry_term(extra[start + k], rhs[start + k], scores[k])
                data_rows[u] = acc


def solve_cg(
    indptr,
    indices,
    extra,
    rhs,
    row_weight,
    row_reg,
    gram,
    other,
    factors,
    bounds,
    n_steps,
    max_row,
    status,
    gather_max=None,
    precondition=True,
    warm_start=True,
):
    """``n_steps`` conjugate-gradient steps per row, from ``factors[u]`` or from zero.

    Runs in the eigenbasis of ``gram``: the rows (in place, ``factors`` C-contiguous) and the
    other side's factors are rotated (O((rows + other rows) d^2) a call), after which
    a CG step costs O(n_u d) instead of O(n_u d + d^2).

    A row's rotated ``q_i`` are gathered into contiguous per-thread scratch, so the
    ``n_steps + 1`` passes over them read cache-resident memory. Rows whose gathered copy
    would exceed ``gather_max`` entries (default: 4 MiB of factors, twice the L2 cache of
    the machine measured) are read from the table in every pass instead, with prefetching:
    their copy would not stay near the core, and writing it costs more memory traffic than
    it saves. Both paths do the same arithmetic in the same order. ``bounds`` must cover every
    row.

    With ``precondition`` the steps are preconditioned by the shared part of each row's
    system, ``c_u G + reg_u I`` (diagonal in the eigenbasis, so it costs O(d) a step): the
    preconditioned matrix is the identity plus a rank-``n_u`` term, and a row converges in at
    most ``n_u + 1`` steps. With ``warm_start`` False every row starts from zero: its current
    value is not read, which saves rotating the rows into the eigenbasis.
    """
    _solve_in_eigenbasis(
        "cg",
        (indptr, indices, extra, rhs, row_weight, row_reg),
        gram,
        other,
        factors,
        bounds,
        status,
        rotate_factors=warm_start,
        cg_steps=n_steps,
        max_row=max_row,
        gather_max=gather_max,
        cg_precondition=precondition,
        cg_warm_start=warm_start,
    )


def solve_block_eigen(
    indptr,
    indices,
    extra,
    rhs,
    row_weight,
    row_reg,
    gram,
    other,
    factors,
    bounds,
    block_size,
    n_sweeps,
    max_row,
    status,
    exact_max_entries=None,
):
    """iALS++ over blocks of the Gram eigenbasis's coordinates, from ``factors[u]``.

    ``n_sweeps`` sweeps of exact minimisation over each block of ``block_size`` eigenvectors
    of ``gram`` in turn (ascending eigenvalue). In that basis the shared part of every row's
    system is diagonal, so blocks interact only through the row's own entries and a block step
    costs O(n_u b^2 + b^3), without the O(d b) update of ``G x`` of coordinate blocks. Rows of
    at most ``exact_max_entries`` entries (default :func:`block_exact_max_entries_for`) are
    solved exactly, by the Woodbury form of :func:`solve_cholesky`. ``factors``
    (C-contiguous) is rotated in, solved and rotated back in place.
    """
    _solve_in_eigenbasis(
        "ialspp",
        (indptr, indices, extra, rhs, row_weight, row_reg),
        gram,
        other,
        factors,
        bounds,
        status,
        rotate_factors=True,
        max_row=max_row,
        block_size=block_size,
        block_sweeps=n_sweeps,
        block_exact_max_entries=exact_max_entries,
    )


def solve_rows_diagonal(
    solver,
    indptr,
    indices,
    extra,
    rhs,
    row_weight,
    row_reg,
    eigenvalues,
    other,
    factors,
    bounds,
    status,
    *,
    cg_steps=3,
    max_row=None,
    gather_max=None,
    data_rows=None,
    cg_precondition=True,
    cg_warm_start=True,
    block_size=32,
    block_sweeps=1,
    block_exact_max_entries=None,
):
    """One half-step of ``solver`` ("cg", "cholesky" or "ialspp") in a basis where the Gram
    matrix is ``diag(eigenvalues)``: ``other`` and ``factors`` are both given in that basis.

    :func:`solve_cg` and :func:`solve_cholesky` rotate into the Gram eigenbasis, call this and
    rotate back; an ALS loop that keeps both sides in a common basis calls it directly.
    ``max_row`` (CG and iALS++ scratch) is computed when None; see :func:`solve_cg` for
    ``gather_max``, ``cg_precondition`` and ``cg_warm_start`` (without it, ``factors`` is
    only written).
    ``data_rows`` (CG only; float64, one per row) receives each row's share of the data term
    at the solved rows (see :func:`data_term`, whose sum it equals in float64; in float32 the
    scores come from CG's float32 products, measured within 5e-10 of J on Gowalla).
    "ialspp" runs ``block_sweeps`` sweeps of blocks of ``block_size`` eigen-coordinates from
    the current rows; rows with at most ``block_exact_max_entries`` entries are solved exactly
    instead (default :func:`block_exact_max_entries_for`, where that is not dearer).
    """
    if data_rows is not None and (
        solver != "cg" or data_rows.dtype != np.float64 or data_rows.shape != (factors.shape[0],)
    ):
        raise ValueError("data_rows is a float64 array with one entry per row, for 'cg' only")
    if max_row is None and solver != "cholesky":
        max_row = int(np.max(np.diff(indptr))) if indptr.shape[0] > 1 else 0
    if solver == "cholesky":
        _solve_exact_rotated(
            indptr,
            indices,
            extra,
            rhs,
            row_weight,
            row_reg,
            eigenvalues,
            other,
            factors,
            bounds,
            float(np.sqrt(np.finfo(factors.dtype).eps)),
            status,
        )
    elif solver == "cg":
        if gather_max is None:
            gather_max = _CG_GATHER_MAX_BYTES // (factors.shape[1] * factors.itemsize)
        _solve_cg_rotated(
            indptr,
            indices,
            extra,
            rhs,
            row_weight,
            row_reg,
            eigenvalues,
            other,
            factors,
            bounds,
            int(cg_steps),
            int(max_row),
            max(1, int(gather_max)),
            status,
            np.empty(0, dtype=np.float64) if data_rows is None else data_rows,
            bool(cg_precondition),
            bool(cg_warm_start),
        )
    elif solver == "ialspp":
        d = factors.shape[1]
        block_size = min(int(block_size), d)
        if block_exact_max_entries is None:
            block_exact_max_entries = block_exact_max_entries_for(d, block_size, block_sweeps)
        _solve_block_rotated(
            indptr,
            indices,
            extra,
            rhs,
            row_weight,
            row_reg,
            eigenvalues,
            other,
            factors,
            bounds,
            block_size,
            int(block_sweeps),
            int(max_row),
            int(block_exact_max_entries),
            float(np.sqrt(np.finfo(factors.dtype).eps)),
            status,
        )
    else:
        raise ValueError(f"solve_rows_diagonal takes 'cg', 'cholesky' or 'ialspp', got {solver!r}")


def block_exact_max_entries_for(n_factors, block_size, block_sweeps):
    """The longest row the eigenbasis iALS++ solver solves exactly instead of by sweeps.

    A row of n entries costs about ``n^2 d / 2 + n^3 / 6`` multiply-adds by the exact
    n x n (Woodbury) solve and ``sweeps * n d b`` by block sweeps (each block's b x b
    Hessian sums n outer products of length-b slices). Below the crossing the exact solve
    is both cheaper and better; it needs fewer entries than factors.
    """
    d, b, sweeps = int(n_factors), int(block_size), int(block_sweeps)
    n = np.arange(1, d, dtype=np.float64)
    cheaper = n * n * d / 2 + n**3 / 6 <= sweeps * n * d * b
    return int(n[cheaper].max()) if cheaper.any() else 0


@njit(cache=True)
def _gather_block_major(other, indices, extra, rhs, start, n_u, limit, x, Qb, coef):
    # The row's q_i block-major: Qb[blk, k] is entry k's slice of block blk, so every block
    # step reads contiguous, fixed-length vectors; and every entry's gradient coefficient
    # e y - b with y = q . x its prediction.
    # A last block narrower than b is padded with zeros, so that every block's products can
    # run over b columns.
    n_blocks, _, b = Qb.shape
    d = x.shape[0]
    for k in range(n_u):
        prefetch_entry(other, indices, start + k + PREFETCH_AHEAD, limit)
        q = other[indices[start + k]]
        for blk in range(n_blocks):
            s = blk * b
            Qk = Qb[blk, k]
            width = min(b, d - s)
            for t in range(width):
                Qk[t] = q[s + t]
            Qk[width:] = 0
        coef[k] = extra[start + k] * _dot(q, x) - rhs[start + k]


# Entries per product in an iALS++ block step (_block_step): their slices stay in cache while
# every tile reads them. Synthetic 10M, d = 256, block 64, user side: 7.56 s with one product
# over all entries, 6.70 s with pieces of 256, 6.45 s with 128; 64 was no better.
_BLOCK_PIECE = 128


@njit(cache=True)
def _block_step(QB, extra, start, n_u, coef, H, g, m, S, T):
    """One exact block minimisation of an iALS++ sweep, given the shared part.

    On entry H (m x m) and g (m) hold the block's shared Hessian and gradient (both halved);
    the row's entries (block slices QB, n_u x b, zero beyond column m; weights e,
    coefficients coef) are added, and the block's step is solved into g. coef is brought up
    to date with the step. S (at least n_u x b) and T (b x b) are scratch. Returns False
    when H is not positive definite.
    """
    # The entries' part of H, QB^T E QB, by products of register tiles (matmul_into) over
    # pieces of _BLOCK_PIECE entries: measured faster than adding four entries' outer
    # products per pass over H (the wide tiles: synthetic 10M, d = 256, block 64, 4.73-4.82
    # against 5.26-5.63 s an epoch).
    b = QB.shape[1]
    for k in range(n_u):
        q = QB[k]
        Sk = S[k]
        ek = extra[start + k]
        ck = coef[k]
        for t in range(b):
            Sk[t] = ek * q[t]
        for t in range(m):
            g[t] += ck * q[t]
    for lo in range(0, n_u, _BLOCK_PIECE):
        hi = min(n_u, lo + _BLOCK_PIECE)
        matmul_into(S[lo:hi].T, QB[lo:hi], T)
        for a in range(m):
            Ha = H[a]
            Ta = T[a]
            for t in range(m):
                Ha[t] += Ta[t]
    for a in range(m):
        g[a] = -g[a]
    if not _cholesky_solve(H, g, m):
        return False
    for k in range(n_u):
        coef[k] += extra[start + k] * _dot(QB[k, :m], g[:m])
    return True


@njit(parallel=True, cache=True)
def solve_block(
    indptr,
    indices,
    extra,
    rhs,
    row_weight,
    row_reg,
    gram,
    other,
    factors,
    bounds,
    block_size,
    n_sweeps,
    max_row,
    status,
):
    """iALS++ row update: ``n_sweeps`` sweeps of exact block-coordinate minimisation.

    ``max_row`` is the largest number of entries in a row (scratch size for the gathered rows
    and the entries' coefficients).
    """
    d = factors.shape[1]
    b = block_size
    n_blocks = (d + b - 1) // b
    n_chunks = bounds.shape[0] - 1
    for c in prange(n_chunks):
        H = np.empty((b, b), dtype=factors.dtype)
        T = np.empty((b, b), dtype=factors.dtype)
        S = np.empty((max(max_row, 1), b), dtype=factors.dtype)
        g = np.empty(b, dtype=factors.dtype)
        Gx = np.empty(d, dtype=factors.dtype)
        coef = np.empty(max(max_row, 1), dtype=factors.dtype)
        # the row's q_i block-major: Qb[blk, k] is entry k's slice of block blk, so every
        # block step reads contiguous, fixed-length vectors
        Qb = np.empty((n_blocks, max(max_row, 1), b), dtype=factors.dtype)
        limit = indptr[bounds[c + 1]]  # prefetching runs ahead into the chunk's next rows
        for u in range(bounds[c], bounds[c + 1]):
            start = indptr[u]
            end = indptr[u + 1]
            n_u = end - start
            status[u] = 0
            if n_u == 0:
                factors[u, :] = 0
                continue
            x = factors[u]
            cu = row_weight[u]
            reg = row_reg[u]
            _gather_block_major(other, indices, extra, rhs, start, n_u, limit, x, Qb, coef)
            _gram_matvec(gram, x, Gx, cu)  # G x, kept current after each block step
            for _ in range(n_sweeps):
                for blk in range(n_blocks):
                    s = blk * b
                    m = min(b, d - s)
                    for a in range(m):
                        Ga = gram[s + a]
                        Ha = H[a]
                        for t in range(m):
                            Ha[t] = cu * Ga[s + t]
                        Ha[a] += reg
                        g[a] = Gx[s + a] + reg * x[s + a]
                    if not _block_step(Qb[blk], extra, start, n_u, coef, H, g, m, S, T):
                        status[u] = 1
                        break
                    for a in range(m):
                        x[s + a] += g[a]
                    for a in range(m):
                        ga = cu * g[a]
                        Gr = gram[s + a]
                        for t in range(d):
                            Gx[t] += Gr[t] * ga
                if status[u] != 0:
                    break


@njit(parallel=True, cache=True)
def _solve_block_rotated(
    indptr,
    indices,
    extra,
    rhs,
    row_weight,
    row_reg,
    eigenvalues,
    other,
    factors,
    bounds,
    block_size,
    n_sweeps,
    max_row,
    exact_max_entries,
    min_ratio,
    status,
):
    # iALS++ in the Gram eigenbasis: the shared part c_u G + reg_u I is the diagonal D, so
    # the blocks are coupled only through the row's observed entries, a block's Hessian
    # starts from D's slice, and no G x has to be kept current (O(d) a block instead of
    # O(d b)). Rows with at most exact_max_entries entries (fewer than d, e >= 0, D safely
    # positive) take the exact n_u x n_u Woodbury solve of _low_rank_row instead: the caller
    # sets the bound where that costs no more than the sweeps.
    d = factors.shape[1]
    b = block_size
    n_blocks = (d + b - 1) // b
    n_chunks = bounds.shape[0] - 1
    n_small = max(min(exact_max_entries, d - 1), 1)
    for c in prange(n_chunks):
        H = np.empty((b, b), dtype=factors.dtype)
        T = np.empty((b, b), dtype=factors.dtype)
        S = np.empty((max(max_row, 1), b), dtype=factors.dtype)
        g = np.empty(b, dtype=factors.dtype)
        D = np.empty(d, dtype=factors.dtype)
        coef = np.empty(max(max_row, 1), dtype=factors.dtype)
        Qb = np.empty((n_blocks, max(max_row, 1), b), dtype=factors.dtype)
        W = np.empty((n_small, d), dtype=factors.dtype)
        M = np.empty(n_small * n_small, dtype=factors.dtype)
        y = np.empty(max(n_small, d), dtype=factors.dtype)
        s_buf = np.empty(d, dtype=factors.dtype)
        limit = indptr[bounds[c + 1]]  # prefetching runs ahead into the chunk's next rows
        for u in range(bounds[c], bounds[c + 1]):
            start = indptr[u]
            end = indptr[u + 1]
            n_u = end - start
            status[u] = 0
            x = factors[u]
            if n_u == 0:
                x[:] = 0
                continue
            low_rank = _shared_diagonal(
                eigenvalues, row_weight[u], row_reg[u], D, extra, start, end, min_ratio
            )
            if (
                n_u <= exact_max_entries
                and low_rank
                and _low_rank_row(
                    D, other, indices, extra, rhs, start, n_u, limit, W, M, y, s_buf, x
                )
            ):
                continue
            _gather_block_major(other, indices, extra, rhs, start, n_u, limit, x, Qb, coef)
            for _ in range(n_sweeps):
                for blk in range(n_blocks):
                    s = blk * b
                    m = min(b, d - s)
                    for a in range(m):
                        Ha = H[a]
                        for t in range(m):
                            Ha[t] = 0
                        Ha[a] = D[s + a]
                        g[a] = D[s + a] * x[s + a]
                    if not _block_step(Qb[blk], extra, start, n_u, coef, H, g, m, S, T):
                        status[u] = 1
                        break
                    for a in range(m):
                        x[s + a] += g[a]
                if status[u] != 0:
                    break


@njit(fastmath=True, cache=True)
def _dot_float64(a, b):
    # a . b summed in float64. fastmath (reassociation) lets LLVM keep several partial sums in
    # vector registers: the strict left-to-right sum was one dependent add per element,
    # measured 1.24-1.34 s for the data term of 8M entries at d = 256 (2 threads).
    s = 0.0
    for k in range(a.shape[0]):
        s += np.float64(a[k]) * np.float64(b[k])
    return s


@njit(cache=True)
def _entry_term(extra, rhs, y):
    # an observed entry's part of the objective, e y^2 - 2 b y + b, in float64
    e = np.float64(extra)
    b = np.float64(rhs)
    return e * y * y - 2.0 * b * y + b


@njit(parallel=True, cache=True)
def data_term(indptr, indices, extra, rhs, P, Q, bounds):
    """sum over observed entries of e y^2 - 2 b y + b, with y = P[u] . Q[i] (float64 sums).

    Partial sums per chunk, added serially: the result does not depend on the schedule.
    """
    n_chunks = bounds.shape[0] - 1
    partial = np.zeros(n_chunks, dtype=np.float64)
    for c in prange(n_chunks):
        acc = 0.0
        limit = indptr[bounds[c + 1]]
        for u in range(bounds[c], bounds[c + 1]):
            pu = P[u]
            for idx in range(indptr[u], indptr[u + 1]):
                prefetch_entry(Q, indices, idx + PREFETCH_AHEAD, limit)
                acc += _entry_term(extra[idx], rhs[idx], _dot_float64(pu, Q[indices[idx]]))
        partial[c] = acc
    total = 0.0
    for c in range(n_chunks):
        total += partial[c]
    return total


def solve_rows(
    solver,
    indptr,
    indices,
    extra,
    rhs,
    row_weight,
    reg,
    gram,
    other,
    factors,
    bounds,
    status,
    *,
    cg_steps,
    block_size,
    block_sweeps,
    max_row,
    cg_precondition=True,
    cg_warm_start=True,
    block_basis="eigen",
):
    """One half-step with the named solver ("cholesky", "cg" or "ialspp").

    The dispatch shared by :class:`linrec.IALS` and the Spark executors, so both solve rows
    with exactly the same calls.
    """
    if solver == "cholesky":
        solve_cholesky(
            indptr, indices, extra, rhs, row_weight, reg, gram, other, factors, bounds, status
        )
    elif solver == "cg":
        solve_cg(
            indptr,
            indices,
            extra,
            rhs,
            row_weight,
            reg,
            gram,
            other,
            factors,
            bounds,
            int(cg_steps),
            max_row,
            status,
            precondition=cg_precondition,
            warm_start=cg_warm_start,
        )
    elif solver == "ialspp" and block_basis == "eigen":
        solve_block_eigen(
            indptr,
            indices,
            extra,
            rhs,
            row_weight,
            reg,
            gram,
            other,
            factors,
            bounds,
            block_size,
            block_sweeps,
            max_row,
            status,
        )
    elif solver == "ialspp" and block_basis == "coordinate":
        solve_block(
            indptr,
            indices,
            extra,
            rhs,
            row_weight,
            reg,
            gram,
            other,
            factors,
            bounds,
            min(int(block_size), factors.shape[1]),
            int(block_sweeps),
            max_row,
            status,
        )
    else:
        raise ValueError(f"unknown solver {solver!r} (block basis {block_basis!r})")

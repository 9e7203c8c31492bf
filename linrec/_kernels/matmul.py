"""Small dense matrix products inside numba kernels, without BLAS.

Inside a numba kernel ``np.dot`` calls SciPy's bundled OpenBLAS, which each thread runs on
one core; on the AVX2 machines measured here its single-threaded sgemm was slow and erratic
(see :mod:`linrec._kernels.als`). :func:`matmul_into` computes ``C = A @ B`` by register
tiles instead: a 6 x 16 block of C is accumulated over k from six broadcast entries of A and
one 16-wide row segment of B, so that every multiply-add is a vector FMA and no horizontal sum
is ever needed. The block lives in a stack array (:func:`stack_array`), which LLVM keeps in
registers: for float32, 12 AVX2 registers of accumulators, 2 for the segment of B and 1 for
the broadcast, 15 of the 16 (the shape of BLIS's Haswell sgemm kernel). A last 4 or 5 rows
take a 4 x 16 tile.

Measured on one thread of the AVX-512 Xeon (session 30, single-thread GFLOP/s, three
interleaved runs each; numba emits 256-bit vectors there), against the 4 x 16 tiles used
before: scores of 512 users against 256 negatives at d = 64, 108 against 96-109; their
transposed product (256 x 512 times 512 x 64), 86-96 against 61-90; a 64-row rotation at
d = 256, 108-118 against 65-76. 8 x 16 tiles (16 accumulators: more than AVX2 has) were no
faster there, and slower compiled for AVX2. On the AMD EPYC (Zen 1), the 4 x 16 tiles scored
512 x 256 at d = 64 in 0.55 ms (30.5 GFLOP/s), against 0.66-0.75 ms with 4 x 2 tiles of dot
products, whose eight horizontal sums per tile cost as much as the tile's FMAs at this short k.

Every entry of C is one accumulator summed over k in order, also in the edge rows and columns,
so a product does not depend on how the rows of A are split between threads.

Where the target has AVX-512, :func:`matmul_into` computes the same entries (the same bits) by
6 x 32 tiles in 512-bit registers instead. LLVM's tuning for AVX-512 server cores prefers
256-bit vectors, so numba never uses the zmm registers on its own; the wide product's function
asks for them by attribute. 6 x 32 tiles
have 12 zmm accumulators, enough to keep both FMA ports busy: on the Emerald Rapids Xeon, 100k
rows times a 256 x 256 matrix on two threads took 43-54 ms (6 x 32), against 50 (8 x 32), 52
(12 x 16), 53 (4 x 64) and 63 (12 x 32), and 59 ms by the 6 x 16 tiles in 256-bit registers;
OpenBLAS's sgemm took 40 ms but cannot run between numba's parallel regions (see
:mod:`linrec._threading`).
"""

from __future__ import annotations

import llvmlite.binding as llvm
from llvmlite import ir
from numba import config, njit, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np import arrayobj

__all__ = ["WIDE_VECTORS", "matmul_into", "stack_array"]

_TILE_ROWS = 6
_SHORT_ROWS = 4  # the tile of the last 4 or 5 rows
_TILE_COLS = 16
_TILE = _TILE_ROWS * _TILE_COLS
_WIDE_COLS = 32
_WIDE_TILE = _TILE_ROWS * _WIDE_COLS

# LLVM's tuning for AVX-512 server cores prefers 256-bit vectors, so numba's kernels use ymm
# registers even there. A function may ask for 512-bit ones through two string attributes,
# which llvmlite's attribute set does not list (so they are added as the plain strings they
# print as). Only where the target has AVX-512: elsewhere the wide tile would be split into
# more 256-bit accumulators than there are registers.
_WIDE_ATTRIBUTES = ('"prefer-vector-width"="512"', '"min-legal-vector-width"="512"')


def _target_has_avx512() -> bool:
    features = config.CPU_FEATURES or llvm.get_host_cpu_features().flatten()
    return "+avx512f" in features.split(",") and issubclass(ir.FunctionAttributes, set)


WIDE_VECTORS = _target_has_avx512()


@intrinsic
def stack_array(typingctx, size, like):
    """A 1-D C array of ``size`` (a compile-time constant) entries of ``like``'s dtype, on the
    stack of the calling function. Fixed size and constant indices let LLVM promote it to
    registers; it must not outlive the function that created it."""
    if not isinstance(size, types.IntegerLiteral) or not isinstance(like, types.Array):
        return None
    n = size.literal_value
    array_type = types.Array(like.dtype, 1, "C")

    def codegen(context, builder, signature, args):
        element = context.get_data_type(like.dtype)
        storage = cgutils.alloca_once(builder, ir.ArrayType(element, n))
        data = builder.bitcast(storage, element.as_pointer())
        intp = context.get_value_type(types.intp)
        item = context.get_abi_sizeof(element)
        array = arrayobj.make_array(array_type)(context, builder)
        arrayobj.populate_array(
            array,
            data=data,
            shape=[ir.Constant(intp, n)],
            strides=[ir.Constant(intp, item)],
            itemsize=ir.Constant(intp, item),
            meminfo=None,
        )
        return array._getvalue()

    return array_type(size, like), codegen


@intrinsic
def _prefer_wide_vectors(typingctx):
    """Let LLVM vectorise the calling function with 512-bit registers (when
    :data:`WIDE_VECTORS`); changes no value."""

    def codegen(context, builder, signature, args):
        if WIDE_VECTORS:
            for attribute in _WIDE_ATTRIBUTES:
                set.add(builder.function.attributes, attribute)
        return context.get_dummy_value()

    return types.none(), codegen


@njit(cache=True, fastmath={"contract"})
def matmul_into(A, B, C, lower=False):
    """``C[:] = A @ B`` for ``A`` (n, K), ``B`` (K, m) with C-contiguous rows, ``C`` (n, m).

    ``A`` may have any layout (a transposed view is read entry by entry). Rows of C in blocks
    of 6 (and one block of 4 where 4 or 5 rows are left) and columns in blocks of 32 (where
    the target has AVX-512, :data:`WIDE_VECTORS`; else 16) come from register tiles; the
    remaining columns and rows are accumulated in C row by row, in the same order over k, so
    both tile widths give the same bits.

    With ``lower`` (``C`` square), only the entries on and below the diagonal, for symmetric
    products such as ``W^T Q`` with ``W`` a row-scaled ``Q``: the tiles wholly above the
    diagonal are skipped, about half the multiply-adds; the entries above are left undefined.

    Examples
    --------
    >>> import numpy as np
    >>> from linrec._kernels.matmul import matmul_into
    >>> A = np.arange(6.0).reshape(2, 3); B = np.ones((3, 2)); C = np.empty((2, 2))
    >>> matmul_into(A, B, C)
    >>> C
    array([[ 3.,  3.],
           [12., 12.]])
    >>> S = np.zeros((2, 2)); matmul_into(A[:, :2].T.copy(), A[:, :2], S, True)
    >>> np.tril(S)
    array([[ 9.,  0.],
           [12., 17.]])
    """
    if WIDE_VECTORS:
        _product_wide(A, B, C, lower)
    else:
        _product(A, B, C, lower)


@njit(cache=True, fastmath={"contract"})
def _product(A, B, C, lower):
    _product_by_tiles(A, B, C, lower, stack_array(_TILE, C), _TILE_COLS)


@njit(cache=True, fastmath={"contract"})
def _product_wide(A, B, C, lower):
    _prefer_wide_vectors()
    _product_by_tiles(A, B, C, lower, stack_array(_WIDE_TILE, C), _WIDE_COLS)


@njit(inline="always", fastmath={"contract"})
def _product_by_tiles(A, B, C, lower, acc, cols):
    # Tiles of 6 (or 4) rows x ``cols`` columns (a constant at each call site, as is acc's
    # size). With lower, a tile is computed only if it meets the diagonal or lies below it, and
    # the edge columns only for rows that reach them.
    n = A.shape[0]
    m = B.shape[1]
    full_cols = m - m % cols
    i0 = 0
    while i0 <= n - _TILE_ROWS or i0 <= n - _SHORT_ROWS:
        six = i0 <= n - _TILE_ROWS
        rows = _TILE_ROWS if six else _SHORT_ROWS
        last_col = min(full_cols, i0 + rows) if lower else full_cols
        for j0 in range(0, last_col, cols):
            if six:
                _tile(A, B, C, i0, j0, acc, True, cols)
            else:
                _tile(A, B, C, i0, j0, acc, False, cols)
        if full_cols < m and (not lower or i0 + rows > full_cols):
            for t in range(rows):
                _row_times(A, B, C, i0 + t, full_cols)
        i0 += rows
    for i in range(i0, n):
        _row_times(A, B, C, i, 0)


@njit(inline="always", fastmath={"contract"})
def _tile(A, B, C, i0, j0, acc, six, cols):
    # C[i0 : i0 + rows, j0 : j0 + cols] with rows 6 (six) or 4. Inlined at call sites where
    # six and cols are constants, so the branches below fold away and each tile is straight
    # FMA code.
    for t in range(_TILE_ROWS * cols):
        acc[t] = 0.0
    for k in range(A.shape[1]):
        a0 = A[i0, k]
        a1 = A[i0 + 1, k]
        a2 = A[i0 + 2, k]
        a3 = A[i0 + 3, k]
        a4 = A[i0 + 4, k] if six else a3
        a5 = A[i0 + 5, k] if six else a3
        b = B[k, j0 : j0 + cols]
        for jj in range(cols):
            bj = b[jj]
            acc[jj] += a0 * bj
            acc[cols + jj] += a1 * bj
            acc[2 * cols + jj] += a2 * bj
            acc[3 * cols + jj] += a3 * bj
            if six:
                acc[4 * cols + jj] += a4 * bj
                acc[5 * cols + jj] += a5 * bj
    for t in range(_TILE_ROWS if six else _SHORT_ROWS):
        c = C[i0 + t, j0 : j0 + cols]
        for jj in range(cols):
            c[jj] = acc[t * cols + jj]


@njit(cache=True, fastmath={"contract"})
def _row_times(A, B, C, i, start):
    # C[i, start:] = A[i] @ B[:, start:], summed over k in order (as in the tiles)
    c = C[i, start:]
    c[:] = 0.0
    for k in range(A.shape[1]):
        a = A[i, k]
        b = B[k, start:]
        for j in range(c.shape[0]):
            c[j] += a * b[j]

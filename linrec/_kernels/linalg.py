"""Numba kernels for the dense linear algebra of :mod:`linrec._linalg`."""

from __future__ import annotations

from numba import njit, prange

# Square blocks small enough that a block's rows and columns stay in cache while transposed.
_BLOCK = 64


@njit(nogil=True)
def _mirror_column_block(A, b):
    # Upper-triangle entries of columns b*_BLOCK.. from the matching lower-triangle rows.
    n = A.shape[0]
    i0 = b * _BLOCK
    i1 = min(n, i0 + _BLOCK)
    for j0 in range(0, i1, _BLOCK):
        for i in range(i0, i1):
            for j in range(j0, min(j0 + _BLOCK, i)):
                A[j, i] = A[i, j]


@njit(parallel=True, cache=True)
def mirror_lower_to_upper(A):
    """Copy the strict lower triangle of the square C-ordered ``A`` onto its upper triangle.

    Cache-blocked transpose. Column block ``b`` of the upper triangle is written by one
    iteration only (the reads touch the lower triangle, which is never written), and block
    ``b`` is paired with block ``n_blocks - 1 - b`` so that every iteration does about the
    same work.
    """
    n_blocks = (A.shape[0] + _BLOCK - 1) // _BLOCK
    for pair in prange((n_blocks + 1) // 2):
        _mirror_column_block(A, pair)
        if n_blocks - 1 - pair != pair:
            _mirror_column_block(A, n_blocks - 1 - pair)

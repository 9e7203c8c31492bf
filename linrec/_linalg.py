"""In-place inverse of a large symmetric positive-definite matrix, built from tile-sized calls.

Why not one ``potrf`` + ``potri`` call: scipy's bundled OpenBLAS (LP64, 0.3.30) segfaults in
threaded ``spotrf`` above n ~ 37,000 (see PITFALLS.md), exactly the size of the EASE Gram
matrices of Gowalla (40,981 items) and Yelp2018 (38,048). Single-threaded it survives but runs
about 1.9x slower. Here every LAPACK/BLAS call works on one tile of at most ``tile`` x ``tile``
(default 4096, an order of magnitude below the crash size), and each call is threaded by BLAS,
so the speed of the threaded library is kept without ever handing it a large problem. Below
``DIRECT_LIMIT`` rows, far from the crash size, one ``potrf`` + ``potri`` on the whole array is
used instead (the fastest way; measured 1.14x the bare LAPACK calls for the whole EASE fit).

The matrix is a C-ordered ``(n, n)`` array; the algorithms read and write its lower triangle
(``A[i, j]``, ``i >= j``) tile by tile and use the strict upper triangle as scratch, so no second
``n x n`` array is ever allocated: the extra memory is a few tiles.

- :func:`cholesky_lower_inplace`: right-looking tiled Cholesky, ``A = L L^T``.
- :func:`triangular_inverse_lower_inplace`: ``L -> L^{-1}`` (tiled LAPACK ``trtri``).
- :func:`lauum_lower_inplace`: ``M -> M^T M`` for lower ``M`` (tiled LAPACK ``lauum``).
- :func:`spd_inverse_inplace`: the three, then the upper triangle mirrored from the lower:
  the same arithmetic as ``potrf`` + ``potri`` (about ``n^3`` flops in total).

Matrix products of tiles go through ``numpy.matmul``, which hands strided tile views to BLAS
with a leading dimension (no copy); triangular tile operations go through
``scipy.linalg.lapack`` / ``scipy.linalg.blas`` on tile copies (O(tile^2) memory).
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.linalg import blas, lapack

from linrec._kernels.linalg import mirror_lower_to_upper
from linrec._threading import numba_threads

__all__ = [
    "DEFAULT_TILE",
    "cholesky_lower_inplace",
    "lauum_lower_inplace",
    "spd_inverse_inplace",
    "symmetrize_from_lower_inplace",
    "tile_workspace_bytes",
    "triangular_inverse_lower_inplace",
]

DEFAULT_TILE = 4096
# Up to this size one threaded potrf + potri on the whole matrix is used: it is the fastest
# way (the LAPACK floor itself) and less than half the size where threaded spotrf crashes.
DIRECT_LIMIT = 16384


def tile_workspace_bytes(n: int, tile: int, itemsize: int) -> int:
    """Upper bound of the temporary memory the tiled routines use besides the matrix itself."""
    t = min(n, tile)
    # one product buffer plus the copies scipy's f2py wrappers make of up to three tiles
    return 4 * t * t * itemsize


def _bounds(n: int, tile: int) -> list[tuple[int, int]]:
    # balanced tiles of at most `tile` rows (no sliver of a few rows at the end)
    n_tiles = max(1, -(-n // tile))
    edges = [round(i * n / n_tiles) for i in range(n_tiles + 1)]
    return list(itertools.pairwise(edges))


def _lapack(name: str, dtype) -> object:
    prefix = "s" if dtype == np.float32 else "d"
    return getattr(lapack, prefix + name)


def _blas(name: str, dtype) -> object:
    prefix = "s" if dtype == np.float32 else "d"
    return getattr(blas, prefix + name)


def _check_square(A: np.ndarray) -> None:
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {A.shape}")
    if A.dtype not in (np.float32, np.float64):
        raise ValueError(f"expected float32 or float64, got {A.dtype}")
    if not A.flags.c_contiguous:
        raise ValueError("expected a C-contiguous matrix")


class _Product:
    """A reusable buffer for tile products (tile x tile at most)."""

    def __init__(self, tile: int, dtype):
        self.buffer = np.empty(tile * tile, dtype=dtype)

    def matmul(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        out = self.buffer[: left.shape[0] * right.shape[1]].reshape(left.shape[0], right.shape[1])
        return np.matmul(left, right, out=out)


def cholesky_lower_inplace(A: np.ndarray, tile: int = DEFAULT_TILE) -> None:
    """Overwrite the lower triangle of the SPD matrix ``A`` with its Cholesky factor ``L``.

    Only the lower triangle of ``A`` is read. The strict upper triangle of the diagonal tiles
    is set to zero, the rest of the upper triangle is left as it was.

    Raises
    ------
    numpy.linalg.LinAlgError
        If ``A`` is not (numerically) positive definite.
    """
    _check_square(A)
    potrf = _lapack("potrf", A.dtype)
    trsm = _blas("trsm", A.dtype)
    prod = _Product(tile, A.dtype)
    blocks = _bounds(A.shape[0], tile)
    for k, (k0, k1) in enumerate(blocks):
        factor, info = potrf(A[k0:k1, k0:k1], lower=1, clean=1)
        if info != 0:
            raise np.linalg.LinAlgError(
                f"matrix is not positive definite (leading minor {k0 + info} failed)"
            )
        A[k0:k1, k0:k1] = factor
        factor = np.asfortranarray(factor)
        for i0, i1 in blocks[k + 1 :]:
            # L_ik = A_ik L_kk^{-T}
            A[i0:i1, k0:k1] = trsm(1.0, factor, A[i0:i1, k0:k1], side=1, lower=1, trans_a=1)
        for j, (j0, j1) in enumerate(blocks[k + 1 :], start=k + 1):
            right = A[j0:j1, k0:k1].T
            for i0, i1 in blocks[j:]:
                A[i0:i1, j0:j1] -= prod.matmul(A[i0:i1, k0:k1], right)


def triangular_inverse_lower_inplace(A: np.ndarray, tile: int = DEFAULT_TILE) -> None:
    """Overwrite the lower-triangular ``L`` held in ``A``'s lower triangle with ``L^{-1}``.

    For ``L = [[L11, 0], [L21, L22]]``, ``L^{-1} = [[M11, 0], [-M22 L21 M11, M22]]``: tile
    columns are processed from the last to the first, each using the already inverted
    trailing block, as LAPACK's blocked ``trtri`` does.
    """
    _check_square(A)
    trtri = _lapack("trtri", A.dtype)
    trmm = _blas("trmm", A.dtype)
    trsm = _blas("trsm", A.dtype)
    prod = _Product(tile, A.dtype)
    blocks = _bounds(A.shape[0], tile)
    for k in range(len(blocks) - 1, -1, -1):
        k0, k1 = blocks[k]
        below = blocks[k + 1 :]
        # Z_i = sum_{k < q <= i} M_iq L_qk, in place from the bottom tile up (tile i only
        # needs L_qk for q <= i, which are not yet overwritten).
        for idx in range(len(below) - 1, -1, -1):
            i0, i1 = below[idx]
            A[i0:i1, k0:k1] = trmm(1.0, A[i0:i1, i0:i1], A[i0:i1, k0:k1], lower=1)
            for q0, q1 in below[:idx]:
                A[i0:i1, k0:k1] += prod.matmul(A[i0:i1, q0:q1], A[q0:q1, k0:k1])
        diag = np.asfortranarray(A[k0:k1, k0:k1])
        for i0, i1 in below:
            # -Z_i L_kk^{-1}
            A[i0:i1, k0:k1] = trsm(-1.0, diag, A[i0:i1, k0:k1], side=1, lower=1)
        inverse, info = trtri(diag, lower=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"triangular factor is singular (info={info})")
        A[k0:k1, k0:k1] = np.tril(inverse)


def lauum_lower_inplace(A: np.ndarray, tile: int = DEFAULT_TILE) -> None:
    """Overwrite the lower-triangular ``M`` held in ``A``'s lower triangle with ``M^T M``.

    Only the lower triangle of the (symmetric) product is written. Tile row ``i`` of the
    result is ``M_ii^T M_i: + sum_{q > i} M_qi^T M_q:``; rows are processed top-down, so the
    rows ``q > i`` it reads still hold ``M``.
    """
    _check_square(A)
    lauum = _lapack("lauum", A.dtype)
    trmm = _blas("trmm", A.dtype)
    prod = _Product(tile, A.dtype)
    blocks = _bounds(A.shape[0], tile)
    for i, (i0, i1) in enumerate(blocks):
        diag = np.asfortranarray(A[i0:i1, i0:i1])
        for j0, j1 in blocks[:i]:
            A[i0:i1, j0:j1] = trmm(1.0, diag, A[i0:i1, j0:j1], lower=1, trans_a=1)
        product, info = lauum(diag, lower=1)
        if info != 0:  # pragma: no cover - lauum only fails on bad arguments
            raise np.linalg.LinAlgError(f"lauum failed (info={info})")
        A[i0:i1, i0:i1] = np.tril(product)
        for q0, q1 in blocks[i + 1 :]:
            left = A[q0:q1, i0:i1].T
            for j0, j1 in blocks[: i + 1]:
                A[i0:i1, j0:j1] += prod.matmul(left, A[q0:q1, j0:j1])
        # only the lower triangle of the diagonal tile is meaningful: the products above added
        # the full square, so clear the strict upper part again
        A[i0:i1, i0:i1] = np.tril(A[i0:i1, i0:i1])


def symmetrize_from_lower_inplace(A: np.ndarray, n_jobs: int | None = None) -> None:
    """Copy the lower triangle of ``A`` onto its upper triangle (cache-blocked, numba)."""
    _check_square(A)
    with numba_threads(n_jobs):
        mirror_lower_to_upper(A)


def spd_inverse_inplace(
    A: np.ndarray,
    tile: int = DEFAULT_TILE,
    direct_limit: int = DIRECT_LIMIT,
    n_jobs: int | None = None,
) -> None:
    """Overwrite the SPD matrix ``A`` (lower triangle read) with its full inverse.

    Cholesky, triangular inverse and ``L^{-T} L^{-1}``: about ``n^3`` flops, the memory of
    ``A`` plus :func:`tile_workspace_bytes`. Up to ``direct_limit`` rows one LAPACK
    ``potrf`` + ``potri`` call each does it in place; above, every call is on one tile.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> G = rng.standard_normal((7, 7)); A = G @ G.T + 7 * np.eye(7)
    >>> inv = A.copy(); spd_inverse_inplace(inv, tile=3)
    >>> bool(np.allclose(inv @ A, np.eye(7)))
    True
    """
    if not (A.shape[0] <= direct_limit and _direct_inverse_lower_inplace(A)):
        cholesky_lower_inplace(A, tile)
        triangular_inverse_lower_inplace(A, tile)
        lauum_lower_inplace(A, tile)
    symmetrize_from_lower_inplace(A, n_jobs)


def _direct_inverse_lower_inplace(A: np.ndarray) -> bool:
    """One ``potrf`` + ``potri`` on the whole of ``A``, in place; False if that is not possible.

    ``A.T`` of a C-ordered array is Fortran-ordered, so LAPACK can work on it without a copy;
    ``A``'s lower triangle is the upper triangle of ``A.T``, hence ``lower=0``.
    """
    _check_square(A)  # also guarantees C order, so A.T is Fortran-ordered
    if not A.flags.writeable:
        return False
    F = A.T
    factor, info = _lapack("potrf", A.dtype)(F, lower=0, clean=0, overwrite_a=1)
    if not np.shares_memory(factor, A):  # the wrapper copied: keep the tiled path's memory
        return False
    if info != 0:
        raise np.linalg.LinAlgError(
            f"matrix is not positive definite (leading minor {info} failed)"
        )
    inverse, info = _lapack("potri", A.dtype)(factor, lower=0, overwrite_c=1)
    if info != 0 or not np.shares_memory(inverse, A):
        raise np.linalg.LinAlgError(f"potri failed (info {info})")
    return True

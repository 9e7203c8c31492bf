"""EASE: the closed-form linear item-item autoencoder (Steck 2019), memory-safe and exact."""

from __future__ import annotations

import logging
import numbers
import time

import numpy as np
import scipy.sparse as sp

from linrec._base import BaseRecommender
from linrec._kernels.ease import csr_times_dense, gram_lower_into, scale_columns_inplace
from linrec._linalg import DEFAULT_TILE, spd_inverse_inplace, tile_workspace_bytes
from linrec._memory import available_memory, format_bytes
from linrec._threading import blas_threads, numba_threads, resolve_n_jobs
from linrec._validation import check_positive_float

__all__ = ["EASE", "dense_ease_memory"]

logger = logging.getLogger(__name__)


def dense_ease_memory(n_items: int, nnz: int, dtype="float32", tile_size: int = DEFAULT_TILE):
    """Bytes dense EASE needs to fit: one ``n_items x n_items`` matrix plus O(nnz + tile^2).

    Parameters
    ----------
    n_items : int
        Catalogue size.
    nnz : int
        Number of stored interactions.
    dtype : {"float32", "float64"}, default="float32"
        Precision of the weight matrix.
    tile_size : int, default=4096
        Tile of the blocked inverse (its workspace is a few tiles).

    Returns
    -------
    int

    Examples
    --------
    >>> round(dense_ease_memory(40_981, 810_128) / 2**30, 1)
    6.5
    """
    itemsize = np.dtype(dtype).itemsize
    matrix = n_items * n_items * itemsize
    # the CSC copy used by the Gram kernel (values + int64 indices) and the row order
    sparse = nnz * (itemsize + 8) + 3 * (n_items + 1) * 8
    return int(matrix + tile_workspace_bytes(n_items, tile_size, itemsize) + sparse)


def _check_memory(need: int, max_memory, what: str) -> None:
    if max_memory is not None:
        limit, source = int(max_memory), f"max_memory={int(max_memory)}"
    else:
        limit, source = available_memory(), "available memory (MemAvailable)"
        if limit is None:  # pragma: no cover - not Linux
            return
    if need > limit:
        raise MemoryError(
            f"{what} needs about {format_bytes(need)} ({need} bytes) but the limit is "
            f"{format_bytes(limit)} ({source}). Use linrec.ease.SparseEASE, whose memory grows "
            "with n_items * n_neighbors instead of n_items**2, or a machine with more memory."
        )


def _check_params(est) -> None:
    check_positive_float(est.regularization, "regularization")
    if est.max_memory is not None:
        if isinstance(est.max_memory, bool) or not isinstance(est.max_memory, numbers.Real):
            raise TypeError(f"max_memory must be a number of bytes or None, got {est.max_memory!r}")
        if est.max_memory <= 0:
            raise ValueError(f"max_memory must be > 0 bytes, got {est.max_memory!r}")
    tile = est.tile_size
    if isinstance(tile, bool) or not isinstance(tile, numbers.Integral) or tile < 1:
        raise ValueError(f"tile_size must be a positive integer, got {tile!r}")
    resolve_n_jobs(est.n_jobs)


def dense_ease_weights(X: sp.csr_matrix, regularization: float, dtype, n_jobs, tile_size):
    """The EASE weight matrix ``B`` of canonical CSR ``X``, computed in one dense array.

    The Gram matrix is accumulated from the sparse input straight into the (zeroed) output
    array, ``regularization`` is added to its diagonal in place, the array is overwritten by
    its inverse ``P`` (tiled Cholesky, see :mod:`linrec._linalg`) and then by
    ``B = I - P diagMat(1 / diag(P))``, columns scaled in place, diagonal zeroed.
    """
    n = X.shape[1]
    dtype = np.dtype(dtype)
    start = time.perf_counter()
    weights = np.zeros((n, n), dtype=dtype)
    csc = X.tocsc()
    n_threads = resolve_n_jobs(n_jobs)
    # interleave rows over threads: row cost grows with the row index (lower triangle) and
    # with item popularity, so contiguous chunks would leave one thread idle
    order = np.concatenate([np.arange(s, n, n_threads) for s in range(n_threads)])
    with numba_threads(n_jobs):
        gram_lower_into(
            X.indptr, X.indices, X.data, csc.indptr, csc.indices, csc.data, order, weights
        )
    del csc, order
    diagonal = np.arange(n)
    weights[diagonal, diagonal] += dtype.type(regularization)
    gram_time = time.perf_counter()
    with blas_threads(n_jobs):
        spd_inverse_inplace(weights, tile_size)
    inverse_time = time.perf_counter()
    scale = (-1.0 / np.diag(weights)).astype(dtype)
    with numba_threads(n_jobs):
        scale_columns_inplace(weights, scale)
    weights[diagonal, diagonal] = 0.0
    logger.info(
        "dense EASE n=%d: Gram %.1f s, inverse %.1f s, B %.1f s",
        n,
        gram_time - start,
        inverse_time - gram_time,
        time.perf_counter() - inverse_time,
    )
    return weights


class EASE(BaseRecommender):
    """Embarrassingly Shallow Autoencoder: exact closed form in one dense matrix.

    Learns an item-item weight matrix ``B`` with zero diagonal,

    .. math:: B = \\arg\\min_B \\lVert X - XB \\rVert_F^2 + \\lambda \\lVert B \\rVert_F^2
              \\quad \\text{s.t. } \\operatorname{diag}(B) = 0,

    whose solution is :math:`B = I - P\\,\\mathrm{diagMat}(1/\\mathrm{diag}(P))` with
    :math:`P = (X^\\top X + \\lambda I)^{-1}`. A user with history ``x`` gets the scores
    ``x B``; new users are folded in by the same product.

    Parameters
    ----------
    regularization : float, default=100.0
        The L2 penalty :math:`\\lambda` (> 0). Good values grow with the data: BARS uses 80 on
        Gowalla and 300 on Yelp2018; Steck uses 500 on ML-20M.
    dtype : {"float32", "float64"}, default="float32"
        Precision of the Gram matrix, its inverse and ``B``.
    n_jobs : int, default=None
        Threads (numba for the Gram matrix and scoring, BLAS for the inverse); ``None`` uses
        every core.
    max_memory : int, default=None
        Upper bound, in bytes, for the fit's memory. ``None`` uses the memory the system
        reports available (``MemAvailable``). The need is estimated before anything large is
        allocated, and a ``MemoryError`` says how much is needed.
    tile_size : int, default=4096
        Tile of the blocked Cholesky and inverse. Every LAPACK/BLAS call works on at most a
        ``tile_size`` square, far below the size at which scipy's bundled OpenBLAS crashes
        (about 37,000, see Notes).

    Attributes
    ----------
    item_weights_ : ndarray of shape (n_items, n_items)
        ``B``: row ``i`` holds what item ``i`` in a history adds to every item's score.
    n_users_ : int
        Number of training users.
    n_items_ : int
        Number of items.
    n_features_in_ : int
        Same as ``n_items_``.

    See Also
    --------
    SparseEASE : sparse weights for catalogues whose ``n x n`` matrix does not fit.
    DebiasedEASE : the weighted (debiased-MSE) objective, with unobserved weight ``w``.

    Notes
    -----
    Memory: one ``n_items x n_items`` array (6.3 GiB in float32 at 40,981 items) plus
    O(nnz + tile_size^2): the Gram matrix is accumulated into the array that then holds
    ``P`` and finally ``B``. Plain implementations (``np.linalg.inv`` in float64) need three
    to four such matrices in float64.

    Time: the Gram matrix costs ``sum_u n_u^2 / 2`` multiply-adds, the inverse about
    ``n_items^3`` flops (Cholesky, triangular inverse, triangular product: the work of LAPACK's
    ``potrf`` + ``potri``), scoring ``nnz(x) * n_items`` per user.

    Why tiled: scipy's bundled OpenBLAS segfaults inside threaded ``spotrf`` for
    ``n`` above about 37,000 (Gowalla and Yelp2018 are above), and single-threaded it is about
    1.9x slower. :mod:`linrec._linalg` runs the same algorithm as tile-sized, threaded calls.

    References
    ----------
    H. Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019.

    Examples
    --------
    >>> import numpy as np
    >>> from linrec.ease import EASE
    >>> X = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1]])
    >>> model = EASE(regularization=1.0).fit(X)
    >>> model.recommend(np.array([[1, 0, 0, 0]]), k=2)[0]
    array([[1, 2]])
    >>> bool(np.all(np.diag(model.item_weights_) == 0))
    True
    """

    def __init__(
        self,
        *,
        regularization: float = 100.0,
        dtype: str = "float32",
        n_jobs: int | None = None,
        max_memory: int | None = None,
        tile_size: int = DEFAULT_TILE,
    ):
        self.regularization = regularization
        self.dtype = dtype
        self.n_jobs = n_jobs
        self.max_memory = max_memory
        self.tile_size = tile_size

    def _validate_fit_data(self, X, y=None):
        # parameters are checked before the data is even copied
        _check_params(self)
        return super()._validate_fit_data(X, y)

    def _fit(self, X: sp.csr_matrix) -> None:
        dtype = self._fit_dtype()
        n = X.shape[1]
        need = dense_ease_memory(n, X.nnz, dtype, self.tile_size)
        _check_memory(need, self.max_memory, f"dense EASE with {n} items in {np.dtype(dtype)}")
        self.item_weights_ = dense_ease_weights(
            X, self.regularization, dtype, self.n_jobs, int(self.tile_size)
        )

    def _scores(self, X: sp.csr_matrix) -> np.ndarray:
        weights = self.item_weights_
        out = np.empty((X.shape[0], weights.shape[1]), dtype=weights.dtype)
        with numba_threads(self.n_jobs):
            csr_times_dense(X.indptr, X.indices, X.data.astype(weights.dtype), weights, out)
        return out

    def _similar_item_scores(self, item_ids: np.ndarray) -> np.ndarray:
        return self.item_weights_[item_ids]

"""EASE: the closed-form linear item-item autoencoder (Steck 2019), memory-safe and exact."""

from __future__ import annotations

import logging
import numbers
import time

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from linrec._base import BaseRecommender
from linrec._kernels.ease import (
    cooccurrence_neighbors,
    csr_times_csr_dense,
    csr_times_dense,
    gram_lower_into,
    scale_columns_inplace,
    sparse_ease_columns,
    weight_block,
)
from linrec._linalg import DEFAULT_TILE, spd_inverse_inplace, tile_workspace_bytes
from linrec._memory import available_memory, format_bytes
from linrec._threading import blas_threads, numba_threads, resolve_n_jobs
from linrec._validation import check_positive_float

__all__ = [
    "EASE",
    "DebiasedEASE",
    "SparseEASE",
    "debiased_user_weights",
    "dense_ease_memory",
]

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

    Returns ``B`` and ``diag(P)`` (from which ``P = (I - B) diagMat(diag(P))`` can be
    rebuilt).
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
        spd_inverse_inplace(weights, tile_size, n_jobs=n_jobs)
    inverse_time = time.perf_counter()
    inverse_diagonal = np.diag(weights).copy()
    scale = (-1.0 / inverse_diagonal).astype(dtype)
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
    return weights, inverse_diagonal


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
        self.item_weights_, _ = dense_ease_weights(
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


_WEIGHTINGS = ("uniform", "chuang", "pu")


def debiased_user_weights(n_positives, n_items, unobserved_weight, weighting, prior_inflation):
    """Per-user weights ``(target_scale, positive_weight, unobserved_weight)`` of the family

    ``sum_u s_u [ sum_{i in I_u+} ((x_ui - y_ui)^2 - c_u (K - 1) y_ui^2)
    + c_u sum_{j not in I_u+} y_uj^2 ]`` (THEORY.md, the iALS family applied to EASE):
    ``target_scale = s_u``, ``positive_weight = s_u (1 - c_u (K - 1))`` (the weight of
    ``y_ui^2`` on a positive), ``unobserved_weight = s_u c_u``.

    - ``"uniform"``: ``s_u = 1``, ``c_u = w``; with ``w = 1`` and ``K = 1`` this is EASE.
    - ``"chuang"``: ``s_u = 1``, ``c_u = w n_u / (n - K n_u)`` (debiased MSE, Chuang form, with
      the exact mean over all items).
    - ``"pu"``: ``s_u = K n_u / n``, ``c_u = w / K`` (positive-unlabelled form).
    """
    n_u = np.asarray(n_positives, dtype=np.float64)
    w, K = float(unobserved_weight), float(prior_inflation)
    if weighting == "uniform":
        scale, c = np.ones_like(n_u), np.full_like(n_u, w)
    elif weighting == "chuang":
        denominator = n_items - K * n_u
        if np.any(denominator <= 0):
            raise ValueError(
                "weighting='chuang' needs n_items - prior_inflation * n_u > 0 for every user; "
                f"the largest history ({int(n_u.max())} items) breaks it with "
                f"prior_inflation={K}"
            )
        scale, c = np.ones_like(n_u), w * n_u / denominator
    else:
        scale, c = K * n_u / n_items, np.full_like(n_u, w / K)
    positive = scale * (1.0 - c * (K - 1.0))
    if np.any(positive <= 0):
        raise ValueError(
            "the weight of a positive, s_u (1 - c_u (K - 1)), must be > 0 (else the objective "
            f"is not convex); lower unobserved_weight or prior_inflation (K={K}, w={w})"
        )
    return scale, positive, scale * c


class DebiasedEASE(BaseRecommender):
    """EASE under the weighted (debiased-MSE) objective, solved column by column with CG.

    .. math:: \\min_B \\sum_{u,i} W_{ui} (x_{ui} - (XB)_{ui})^2 + \\lambda \\lVert B\\rVert_F^2
              \\quad \\text{s.t. } \\operatorname{diag}(B) = 0

    with ``W_ui = 1`` on observed pairs and ``w`` (``unobserved_weight``) elsewhere, or the
    per-user weights of the Chuang / positive-unlabelled forms of the debiased MSE (see
    :func:`debiased_user_weights`). With ``w = 1`` and ``weighting="uniform"`` this is EASE:
    the full-batch MSE over every item is already the debiased loss with the exact class
    prior (THEORY.md, "inherently debiased"). Other weights have no shared Gram matrix: column
    ``i`` solves ``(X^T D_i X + lambda I) b_i = X^T S x_i`` over ``j != i``, with its own
    diagonal ``D_i``.

    Why a separate class rather than a parameter of :class:`EASE`: the solver, its cost
    (two ``n x n`` matrices instead of one, and an iterative solve on top of the closed form)
    and its extra parameters (``tol``, ``max_iter``, ``block_size``) differ; keeping
    :class:`EASE` the one-matrix closed form keeps its memory promise simple.

    Solver: preconditioned conjugate gradients per column, run on blocks of ``block_size``
    columns at once. Products ``X^T (D_i (X v))`` are matrix-free (numba kernels, O(nnz) per
    column and iteration); the start is the standard EASE column ``B_std[:, i]`` and the
    preconditioner is the exact inverse of the standard EASE system restricted to ``j != i``,
    ``P - p_i p_i^T / P_ii`` with ``P = (X^T X + lambda I)^{-1} = (I - B_std) diagMat(diag P)``
    (one BLAS product with ``B_std`` per block and iteration). At ``w = 1`` the start already
    solves the system and no iteration runs; near ``w = 1`` the preconditioned system has
    condition number at most ``max(1/w, w)`` (uniform weighting), so few iterations are needed.

    Parameters
    ----------
    regularization : float, default=100.0
        ``lambda`` (> 0).
    unobserved_weight : float, default=1.0
        ``w`` (> 0): the weight of unobserved pairs (scaled per user by ``weighting``).
    weighting : {"uniform", "chuang", "pu"}, default="uniform"
        Per-user weights: ``"uniform"`` (``c_u = w``), ``"chuang"``
        (``c_u = w n_u / (n - K n_u)``) or ``"pu"`` (``s_u = K n_u / n``, ``c_u = w / K``).
        Note that ``"pu"`` scales each user's data term by ``K n_u / n`` (small), so its
        ``regularization`` lives on a much smaller scale.
    prior_inflation : float, default=1.0
        ``K >= 1``: class-prior inflation for hidden positives (``tau_u = K n_u / n``).
    tol : float, default=1e-5
        CG stops for a column when its residual norm is below ``tol`` times its right-hand
        side's norm.
    max_iter : int, default=100
        CG iterations per block at most.
    block_size : int, default=256
        Columns solved together (memory ``O((n_users + n_items) * block_size)``).
    dtype : {"float32", "float64"}, default="float32"
        Precision of the weights and CG vectors.
    n_jobs : int, default=None
        Threads (numba and BLAS); ``None`` uses every core.
    max_memory : int, default=None
        Byte limit checked before allocating (default: available memory).
    tile_size : int, default=4096
        Tile of the standard EASE inverse (see :class:`EASE`).
    verbose : bool, default=False
        Progress bar over column blocks.

    Attributes
    ----------
    item_weights_ : ndarray of shape (n_items, n_items)
        ``B`` (zero diagonal).
    n_iter_ : ndarray of shape (n_items,)
        CG iterations each column took (0: the EASE start already met ``tol``).
    n_users_ : int
        Number of training users.
    n_items_ : int
        Number of items.
    n_features_in_ : int
        Same as ``n_items_``.

    Notes
    -----
    Memory: two ``n x n`` matrices (the standard EASE weights used as start and
    preconditioner, and the result) plus O((n_users + n_items) * block_size). Time: the
    standard EASE fit, then per CG iteration and block ``2 n^2 block_size`` flops (the
    preconditioner, BLAS) plus ``4 nnz block_size`` (the matrix-free products), i.e. about
    ``2 n^3`` flops per iteration over all columns. On Gowalla (n = 40,981) that is twice the
    memory and each iteration about twice the time of a dense EASE fit.

    References
    ----------
    H. Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019.
    R. Jin, D. Li, "(Debiased) Contrastive Learning Loss for Recommendation", 2023.
    C.-Y. Chuang et al., "Debiased Contrastive Learning", NeurIPS 2020.

    Examples
    --------
    >>> import numpy as np
    >>> from linrec.ease import EASE, DebiasedEASE
    >>> X = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1]])
    >>> ease = EASE(regularization=1.0, dtype="float64").fit(X)
    >>> same = DebiasedEASE(regularization=1.0, unobserved_weight=1.0, dtype="float64").fit(X)
    >>> bool(np.allclose(same.item_weights_, ease.item_weights_))
    True
    >>> low = DebiasedEASE(regularization=1.0, unobserved_weight=0.2, dtype="float64").fit(X)
    >>> bool(np.allclose(low.item_weights_, ease.item_weights_))
    False
    """

    def __init__(
        self,
        *,
        regularization: float = 100.0,
        unobserved_weight: float = 1.0,
        weighting: str = "uniform",
        prior_inflation: float = 1.0,
        tol: float = 1e-5,
        max_iter: int = 100,
        block_size: int = 256,
        dtype: str = "float32",
        n_jobs: int | None = None,
        max_memory: int | None = None,
        tile_size: int = DEFAULT_TILE,
        verbose: bool = False,
    ):
        self.regularization = regularization
        self.unobserved_weight = unobserved_weight
        self.weighting = weighting
        self.prior_inflation = prior_inflation
        self.tol = tol
        self.max_iter = max_iter
        self.block_size = block_size
        self.dtype = dtype
        self.n_jobs = n_jobs
        self.max_memory = max_memory
        self.tile_size = tile_size
        self.verbose = verbose

    def _validate_fit_data(self, X, y=None):
        _check_params(self)
        check_positive_float(self.unobserved_weight, "unobserved_weight")
        if self.weighting not in _WEIGHTINGS:
            raise ValueError(f"weighting must be one of {_WEIGHTINGS}, got {self.weighting!r}")
        if check_positive_float(self.prior_inflation, "prior_inflation") < 1.0:
            raise ValueError(f"prior_inflation must be >= 1, got {self.prior_inflation!r}")
        check_positive_float(self.tol, "tol")
        for name in ("max_iter", "block_size"):
            value = getattr(self, name)
            low = 0 if name == "max_iter" else 1
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        return super()._validate_fit_data(X, y)

    def _fit(self, X: sp.csr_matrix) -> None:
        dtype = np.dtype(self._fit_dtype())
        m, n = X.shape
        n_positives = np.diff(X.indptr)
        scale, positive, unobserved = debiased_user_weights(
            n_positives, n, self.unobserved_weight, self.weighting, self.prior_inflation
        )
        block = min(int(self.block_size), n)
        need = (
            dense_ease_memory(n, X.nnz, dtype, self.tile_size)
            + n * n * dtype.itemsize
            + (3 * m + 8 * n) * block * dtype.itemsize
        )
        _check_memory(need, self.max_memory, f"DebiasedEASE with {n} items in {dtype}")
        standard, inverse_diagonal = dense_ease_weights(
            X, self.regularization, dtype, self.n_jobs, int(self.tile_size)
        )
        solver = _ColumnCG(
            X,
            standard,
            inverse_diagonal.astype(dtype),
            self.regularization,
            scale.astype(dtype),
            positive.astype(dtype),
            unobserved.astype(dtype),
            self.n_jobs,
        )
        weights = np.empty((n, n), dtype=dtype)
        n_iter = np.zeros(n, dtype=np.int64)
        starts = range(0, n, block)
        for start in tqdm(starts, disable=not self.verbose, desc="DebiasedEASE column blocks"):
            columns = np.arange(start, min(start + block, n))
            solution, iterations = solver.solve(columns, float(self.tol), int(self.max_iter))
            weights[:, columns] = solution
            n_iter[columns] = iterations
        weights[np.arange(n), np.arange(n)] = 0.0
        self.item_weights_ = weights
        self.n_iter_ = n_iter
        logger.info(
            "DebiasedEASE: CG iterations per column max %d, mean %.2f", n_iter.max(), n_iter.mean()
        )

    _scores = EASE._scores
    _similar_item_scores = EASE._similar_item_scores


class _ColumnCG:
    """Preconditioned CG for blocks of columns of the weighted EASE problem."""

    def __init__(
        self, X, standard, inverse_diagonal, regularization, scale, positive, unobserved, n_jobs
    ):
        self.X = X
        self.XT = X.T.tocsr()
        self.standard = standard
        self.inverse_diagonal = inverse_diagonal
        self.regularization = regularization
        self.scale = scale
        self.positive = positive
        self.unobserved = unobserved
        self.n_jobs = n_jobs
        self.dtype = standard.dtype

    def _xt_times(self, dense):
        out = np.empty((self.XT.shape[0], dense.shape[1]), dtype=self.dtype)
        csr_times_dense(self.XT.indptr, self.XT.indices, self.XT.data, dense, out)
        return out

    def operator(self, V, columns):
        """``(X^T D_i X + lambda I) v_i`` for every column, restricted to ``j != i``."""
        with numba_threads(self.n_jobs):
            XV = np.empty((self.X.shape[0], V.shape[1]), dtype=self.dtype)
            csr_times_dense(self.X.indptr, self.X.indices, self.X.data, V, XV)
            weighted = np.empty_like(XV)
            weight_block(
                XV,
                columns,
                self.XT.indptr,
                self.XT.indices,
                self.unobserved,
                self.positive,
                weighted,
            )
            out = self._xt_times(weighted)
        out += self.dtype.type(self.regularization) * V
        out[columns, np.arange(len(columns))] = 0.0
        return out

    def precondition(self, R, columns, standard_columns):
        """Exact inverse of the standard (w = 1) system restricted to ``j != i``."""
        W = self.inverse_diagonal[:, None] * R
        with blas_threads(self.n_jobs):
            Z = W - self.standard @ W
        # p_i^T r with p_i = diag(P)_i (e_i - B[:, i]) and r_i = 0
        coef = -self.inverse_diagonal[columns] * np.einsum("ij,ij->j", standard_columns, R)
        Z += standard_columns * coef[None, :]
        Z[columns, np.arange(len(columns))] = 0.0
        return Z

    def solve(self, columns, tol, max_iter):
        k = len(columns)
        standard_columns = np.ascontiguousarray(self.standard[:, columns])
        target = np.ascontiguousarray(self.X[:, columns].toarray(), dtype=self.dtype)
        target *= self.scale[:, None]
        with numba_threads(self.n_jobs):
            rhs = self._xt_times(target)
        rhs[columns, np.arange(k)] = 0.0
        rhs_norm = np.linalg.norm(rhs.astype(np.float64), axis=0)
        x = standard_columns.copy()
        r = rhs - self.operator(x, columns)
        iterations = np.zeros(k, dtype=np.int64)
        z = self.precondition(r, columns, standard_columns)
        p = z.copy()
        rz = np.einsum("ij,ij->j", r, z, dtype=np.float64)
        for _ in range(max_iter):
            active = np.linalg.norm(r.astype(np.float64), axis=0) > tol * rhs_norm
            if not active.any():
                break
            iterations += active
            Ap = self.operator(p, columns)
            curvature = np.einsum("ij,ij->j", p, Ap, dtype=np.float64)
            alpha = np.where(active, rz / np.where(curvature > 0, curvature, 1.0), 0.0)
            x += alpha.astype(self.dtype)[None, :] * p
            r -= alpha.astype(self.dtype)[None, :] * Ap
            z = self.precondition(r, columns, standard_columns)
            rz_new = np.einsum("ij,ij->j", r, z, dtype=np.float64)
            beta = np.where(active, rz_new / np.where(rz > 0, rz, 1.0), 0.0)
            p = z + beta.astype(self.dtype)[None, :] * p
            rz = rz_new
        return x, iterations


_SIMILARITIES = ("cooccurrence", "cosine")


class SparseEASE(BaseRecommender):
    """EASE with a sparse weight matrix, for catalogues whose ``n x n`` matrix does not fit.

    Each column ``b_i`` of ``B`` may only use the ``n_neighbors`` items that co-occur most with
    item ``i`` (its support ``N_i``, thresholded from the sparse co-occurrence matrix; fewer
    when fewer items co-occur with ``i``; every other item when
    ``n_neighbors >= n_items - 1``), and on that support it is the exact EASE regression:

    .. math:: b_{N_i, i} = (G_{N_i N_i} + \\lambda I)^{-1} G_{N_i i}, \\qquad G = X^\\top X

    i.e. the constrained ridge regression of column ``i`` of ``X`` on the columns ``N_i``
    (``i`` itself is never in its support, so ``diag(B) = 0``).

    This is Steck's sparse approximation of the EASE/MRF solution (NeurIPS 2019): the sparsity
    pattern comes from thresholding the co-occurrence (or cosine) matrix, and the weights come
    from regressions restricted to that pattern; Steck solves groups of columns that share a
    support with one inverse, here every column gets its own (embarrassingly parallel,
    memory ``O(n_neighbors^2)`` per thread). Why this rather than SANSA (Spisak et al., RecSys
    2023, a sparse approximate ``LDL^T`` of ``X^T X + lambda I`` and its inverse): SANSA needs a
    sparse Cholesky with a fill-reducing ordering (CHOLMOD), a dependency linrec does not take;
    the column-wise form needs only the sparse Gram matrix, its accuracy/density trade-off is
    one integer, and with ``n_neighbors >= n_items - 1`` it *is* dense EASE (every column's
    regression is then the exact column of the closed form).

    Parameters
    ----------
    regularization : float, default=100.0
        ``lambda`` (> 0), as in :class:`EASE`.
    n_neighbors : int, default=500
        Support size per column: the density/accuracy trade-off. Memory and ``B``'s storage
        grow as ``n_items * n_neighbors``, time as ``n_items * n_neighbors^3 / 3``.
    similarity : {"cooccurrence", "cosine"}, default="cooccurrence"
        How the support is chosen: the largest raw co-occurrence counts ``G_ij``, or the
        largest ``G_ij / sqrt(G_ii G_jj)``.
    dtype : {"float32", "float64"}, default="float32"
        Precision of the stored weights (each column is solved in float64).
    n_jobs : int, default=None
        Threads; ``None`` uses every core.

    Attributes
    ----------
    item_weights_ : scipy.sparse.csr_matrix of shape (n_items, n_items)
        ``B`` with at most ``n_neighbors`` non-zeros per column.
    n_users_ : int
        Number of training users.
    n_items_ : int
        Number of items.
    n_features_in_ : int
        Same as ``n_items_``.

    Notes
    -----
    Memory: the Gram matrix ``X^T X`` is never stored (on an Amazon-Book-shaped matrix it has
    over 300 million non-zeros). A CSC copy of ``X``, the neighbour table and ``B``
    (``n_items * n_neighbors`` each), plus per thread one dense accumulator of ``n_items``,
    bucket arrays of ``n_users`` and one ``n_neighbors^2`` float64 system.

    Time: supports cost ``sum_u n_u^2`` multiply-adds (each item's co-occurrence row is
    accumulated from its users' histories, its best ``n_neighbors`` selected in linear time,
    then dropped). Column ``i``'s system ``G_NN`` is built from the users of its support items:
    ``sum_{j in N_i} deg(j)`` bucketing steps and ``sum_u m_u^2 / 2`` multiply-adds (``m_u``:
    support items user ``u`` has), then a ``n_neighbors^3 / 3`` Cholesky. Building the
    systems this way replaced looking ``G_NN``'s ``n_neighbors^2 / 2`` entries up in long
    sorted Gram rows, which was about 90% of the fit time.

    References
    ----------
    H. Steck, "Markov Random Fields for Collaborative Filtering", NeurIPS 2019.
    H. Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019.
    M. Spisak et al., "Scalable Approximate NonSymmetric Autoencoder for Collaborative
    Filtering" (SANSA), RecSys 2023.

    Examples
    --------
    >>> import numpy as np
    >>> from linrec.ease import EASE, SparseEASE
    >>> X = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1]])
    >>> full = SparseEASE(regularization=1.0, n_neighbors=3, dtype="float64").fit(X)
    >>> dense = EASE(regularization=1.0, dtype="float64").fit(X)
    >>> bool(np.allclose(full.item_weights_.toarray(), dense.item_weights_))
    True
    """

    def __init__(
        self,
        *,
        regularization: float = 100.0,
        n_neighbors: int = 500,
        similarity: str = "cooccurrence",
        dtype: str = "float32",
        n_jobs: int | None = None,
    ):
        self.regularization = regularization
        self.n_neighbors = n_neighbors
        self.similarity = similarity
        self.dtype = dtype
        self.n_jobs = n_jobs

    def _validate_fit_data(self, X, y=None):
        check_positive_float(self.regularization, "regularization")
        k = self.n_neighbors
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"n_neighbors must be a positive integer, got {k!r}")
        if self.similarity not in _SIMILARITIES:
            raise ValueError(f"similarity must be one of {_SIMILARITIES}, got {self.similarity!r}")
        resolve_n_jobs(self.n_jobs)
        return super()._validate_fit_data(X, y)

    def _fit(self, X: sp.csr_matrix) -> None:
        dtype = np.dtype(self._fit_dtype())
        n = X.shape[1]
        k = min(int(self.n_neighbors), max(n - 1, 1))
        start = time.perf_counter()
        csc = X.tocsc()
        if self.similarity == "cosine":
            # sqrt(G_ii), from the column sums of squares (G itself is never stored)
            diagonal = np.asarray(X.multiply(X).sum(axis=0), dtype=np.float64).ravel()
            norms = np.sqrt(np.maximum(diagonal, np.finfo(np.float64).tiny))
        else:
            norms = np.ones(n)
        counts = np.zeros(n, dtype=np.int64)
        if k >= n - 1:
            # full support: every other item, co-occurring or not (dense EASE weights are not
            # zero where G is: items are linked through common neighbours)
            grid = np.broadcast_to(np.arange(n - 1), (n, n - 1))
            neighbors = grid + (grid >= np.arange(n)[:, None])
            counts[:] = n - 1
        else:
            with numba_threads(self.n_jobs):
                neighbors = cooccurrence_neighbors(
                    X.indptr, X.indices, X.data, csc.indptr, csc.indices, csc.data, norms, k, counts
                )
        support_time = time.perf_counter()
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        values = np.zeros(indptr[-1], dtype=np.float64)
        with numba_threads(self.n_jobs):
            sparse_ease_columns(
                csc.indptr,
                csc.indices,
                csc.data,
                X.shape[0],
                neighbors,
                counts,
                float(self.regularization),
                indptr,
                values,
            )
        del csc
        row_ids = np.concatenate([neighbors[i, : counts[i]] for i in range(n)]) if n else []
        weights = sp.csc_matrix((values.astype(dtype), row_ids, indptr), shape=(n, n))
        self.item_weights_ = weights.tocsr()
        logger.info(
            "SparseEASE n=%d k=%d: supports %.1f s, columns %.1f s, nnz(B)=%d",
            n,
            k,
            support_time - start,
            time.perf_counter() - support_time,
            weights.nnz,
        )

    def _scores(self, X: sp.csr_matrix) -> np.ndarray:
        weights = self.item_weights_
        out = np.empty((X.shape[0], weights.shape[1]), dtype=weights.dtype)
        with numba_threads(self.n_jobs):
            csr_times_csr_dense(
                X.indptr,
                X.indices,
                X.data.astype(weights.dtype),
                weights.indptr,
                weights.indices,
                weights.data,
                out,
            )
        return out

    def _similar_item_scores(self, item_ids: np.ndarray) -> np.ndarray:
        return self.item_weights_[item_ids].toarray()

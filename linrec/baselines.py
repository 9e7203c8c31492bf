"""Baselines that give a floor in every table: most-popular and item-based nearest neighbours."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from linrec._base import BaseRecommender
from linrec._kernels.topk import topk_rows
from linrec._threading import numba_threads
from linrec._validation import check_positive_float

__all__ = ["ItemKNN", "MostPopular"]


class MostPopular(BaseRecommender):
    """Recommend the items most users interacted with, the same list for everyone.

    The score of item i is the number of training users who interacted with it (values are
    binarised: a user counts once, whatever the strength).

    Parameters
    ----------
    n_jobs : int, default=None
        Threads for top-k selection; ``None`` uses every core.

    Attributes
    ----------
    item_popularity_ : ndarray of shape (n_items,)
        Number of training users per item.
    n_users_ : int
        Number of training users.
    n_items_ : int
        Number of items (columns of the training matrix).
    n_features_in_ : int
        Same as ``n_items_`` (scikit-learn's name).

    Examples
    --------
    >>> import numpy as np
    >>> from linrec import MostPopular
    >>> X = np.array([[1, 1, 0], [0, 1, 0], [0, 1, 1]])
    >>> MostPopular().fit(X).recommend(np.array([[1, 0, 0]]), k=2)[0]
    array([[1, 2]])
    """

    def __init__(self, *, n_jobs: int | None = None):
        self.n_jobs = n_jobs

    def _fit(self, X: sp.csr_matrix) -> None:
        self.item_popularity_ = np.bincount(X.indices, minlength=X.shape[1]).astype(np.float64)

    def _scores(self, X: sp.csr_matrix) -> np.ndarray:
        return np.tile(self.item_popularity_, (X.shape[0], 1))

    def _similar_item_scores(self, item_ids: np.ndarray) -> np.ndarray:
        # Popularity knows no item-item similarity: every item's neighbours are the top items.
        return np.tile(self.item_popularity_, (len(item_ids), 1))


class ItemKNN(BaseRecommender):
    """Item-based k-nearest neighbours with cosine similarity.

    For every item, the ``n_neighbors`` most similar items are kept; a user's score for item
    i is the sum of i's similarities to the items in the user's history.

    .. math:: \\mathrm{sim}(i, j) = \\frac{x_i^\\top x_j}{\\lVert x_i\\rVert \\lVert x_j\\rVert + h}

    with item columns :math:`x_i` and shrinkage :math:`h`.

    Parameters
    ----------
    n_neighbors : int, default=100
        Neighbours kept per item.
    shrinkage : float, default=0.0
        Added to the norm product; damps similarities of rarely seen items.
    block_size : int, default=1024
        Items whose similarity rows are computed at once (memory is
        ``block_size * n_items`` floats).
    dtype : {"float32", "float64"}, default="float32"
        Precision of the similarities.
    n_jobs : int, default=None
        Threads for neighbour selection; ``None`` uses every core.

    Attributes
    ----------
    similarity_ : scipy.sparse.csr_matrix of shape (n_items, n_items)
        Row i holds item i's ``n_neighbors`` neighbours and their similarities.
    n_users_, n_items_, n_features_in_ : int
        Training shape.

    Notes
    -----
    Time is that of the sparse product :math:`X^\\top X`, computed ``block_size`` items at a
    time, plus a selection over every block row: memory stays at one
    ``block_size x n_items`` block plus the kept neighbours.

    Examples
    --------
    >>> import numpy as np
    >>> from linrec import ItemKNN
    >>> X = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 1, 1, 1]])
    >>> ItemKNN(n_neighbors=2).fit(X).similar_items([0], k=1)[0]
    array([[1]])
    """

    def __init__(
        self,
        n_neighbors: int = 100,
        *,
        shrinkage: float = 0.0,
        block_size: int = 1024,
        dtype: str = "float32",
        n_jobs: int | None = None,
    ):
        self.n_neighbors = n_neighbors
        self.shrinkage = shrinkage
        self.block_size = block_size
        self.dtype = dtype
        self.n_jobs = n_jobs

    def _fit(self, X: sp.csr_matrix) -> None:
        if isinstance(self.n_neighbors, bool) or int(self.n_neighbors) != self.n_neighbors:
            raise ValueError(f"n_neighbors must be a positive integer, got {self.n_neighbors!r}")
        if self.n_neighbors < 1:
            raise ValueError(f"n_neighbors must be a positive integer, got {self.n_neighbors!r}")
        shrinkage = check_positive_float(self.shrinkage, "shrinkage", allow_zero=True)
        if int(self.block_size) < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size!r}")
        n_items = X.shape[1]
        k = min(int(self.n_neighbors), max(n_items - 1, 1))
        binary = X.copy()
        binary.data[:] = 1.0
        csc = binary.tocsc()
        norms = np.sqrt(np.asarray(csc.multiply(csc).sum(axis=0)).ravel())
        rows_t = csc.T.tocsr()  # items x users
        all_idx, all_val = [], []
        with numba_threads(self.n_jobs) as _:
            for start in range(0, n_items, int(self.block_size)):
                stop = min(start + int(self.block_size), n_items)
                block = (rows_t[start:stop] @ csc).toarray()
                denom = np.outer(norms[start:stop], norms) + shrinkage
                np.divide(block, denom, out=block, where=denom > 0)
                block = np.ascontiguousarray(block, dtype=self._fit_dtype())
                self_idx = np.arange(start, stop, dtype=np.int64)
                indptr = np.arange(stop - start + 1, dtype=np.int64)
                idx, val = topk_rows(block, k, indptr, self_idx, np.ones(1, np.bool_), False)
                all_idx.append(idx)
                all_val.append(val)
        idx = np.vstack(all_idx)
        val = np.vstack(all_val)
        keep = (idx >= 0) & (val > 0)
        rows = np.repeat(np.arange(n_items), k)[keep.ravel()]
        self.similarity_ = sp.csr_matrix(
            (val[keep], (rows, idx[keep])), shape=(n_items, n_items), dtype=self._fit_dtype()
        )

    def _scores(self, X: sp.csr_matrix) -> np.ndarray:
        # score(u, i) = sum_{j in I_u} sim(i, j) = (X S^T)[u, i]
        return np.asarray((X @ self.similarity_.T).todense())

    def _similar_item_scores(self, item_ids: np.ndarray) -> np.ndarray:
        return self.similarity_[item_ids].toarray()

"""Cross-validation over users for scikit-learn's model selection tools.

linrec estimators follow one convention that makes :class:`sklearn.model_selection.GridSearchCV`
work on interaction data: ``fit(X, y)`` trains on ``X + y`` and ``score(X, y)`` is the NDCG@20
of the held-out interactions ``y`` given the histories ``X``. So the data are passed as a
(history, held-out) pair of matrices over the same users, made by :func:`fold_in_split`, and
:class:`UserKFold` splits the users::

    from sklearn.model_selection import GridSearchCV
    from linrec.model_selection import UserKFold, fold_in_split

    X_history, X_heldout = fold_in_split(X)
    search = GridSearchCV(model, param_grid, cv=UserKFold(3))
    search.fit(X_history, X_heldout)

Each candidate is fitted on all the interactions of the training users and scored on the
other users: their history is folded in and their held-out items are ranked. This is the
"strong generalisation" protocol of Liang et al. (2018); it needs models that can score new
users from their history (every linrec model can).

``GridSearchCV`` and ``RandomizedSearchCV`` take the held-out matrix as a sparse ``y``.
``cross_val_score`` and ``cross_validate`` (scikit-learn 1.9) check that ``y`` is a dense
array-like: give them ``X_heldout.toarray()`` (fine for small data).
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp
from sklearn.model_selection import BaseCrossValidator

from linrec.datasets import _generator, random_holdout_split

__all__ = ["UserKFold", "fold_in_split"]


class UserKFold(BaseCrossValidator):
    """K-fold cross-validation over users (rows) of an interaction matrix.

    Users are dealt into ``n_splits`` folds of (almost) equal size. When ``y`` (held-out
    interactions) is given to :meth:`split`, the users that have held-out interactions are
    dealt first and evenly, so every test fold gets its share of the users that count for
    the score.

    Parameters
    ----------
    n_splits : int, default=5
        Number of folds (>= 2).
    shuffle : bool, default=True
        Shuffle the users before dealing them into folds; otherwise fold ``f`` holds the
        users ``f, f + n_splits, ...`` of each group.
    random_state : int, numpy Generator or None, default=0
        Seed of the shuffle; the same seed gives the same folds.

    See Also
    --------
    fold_in_split : Make the (history, held-out) pair this splitter is used with.

    Notes
    -----
    O(n_users) time and memory per call of :meth:`split`.

    Examples
    --------
    >>> import numpy as np
    >>> from linrec.model_selection import UserKFold
    >>> X = np.eye(6)
    >>> [test.tolist() for _, test in UserKFold(3, shuffle=False).split(X)]
    [[0, 3], [1, 4], [2, 5]]
    """

    def __init__(self, n_splits: int = 5, *, shuffle: bool = True, random_state=0):
        self.n_splits = n_splits
        self.shuffle = shuffle
        self.random_state = random_state

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        """Number of folds."""
        return self._checked_n_splits()

    def _checked_n_splits(self) -> int:
        n_splits = self.n_splits
        if isinstance(n_splits, bool) or not isinstance(n_splits, numbers.Integral) or n_splits < 2:
            raise ValueError(f"n_splits must be an integer >= 2, got {n_splits!r}")
        return int(n_splits)

    def split(self, X, y=None, groups=None):
        """Generate (train users, test users) index arrays.

        Parameters
        ----------
        X : sparse matrix or array-like of shape (n_users, n_items)
            Histories; only the number of rows is used.
        y : sparse matrix or array-like of shape (n_users, n_items), optional
            Held-out interactions; users with some are spread evenly over the folds.
        groups : ignored
            Present for scikit-learn compatibility.

        Yields
        ------
        train : ndarray of int64
            Row indices of the training users (sorted).
        test : ndarray of int64
            Row indices of the test users (sorted).
        """
        n_splits = self._checked_n_splits()
        n_users = _n_rows(X, "X")
        if n_splits > n_users:
            raise ValueError(f"n_splits={n_splits} is larger than the number of users {n_users}")
        if y is not None:
            if _n_rows(y, "y") != n_users:
                raise ValueError(f"y has {_n_rows(y, 'y')} rows but X has {n_users}")
            has_heldout = _row_nnz(y) > 0
            groups_of_users = [np.flatnonzero(has_heldout), np.flatnonzero(~has_heldout)]
        else:
            groups_of_users = [np.arange(n_users)]
        rng = _generator(self.random_state) if self.shuffle else None
        fold = np.empty(n_users, dtype=np.int64)
        dealt = 0
        for users in groups_of_users:
            if rng is not None:
                users = rng.permutation(users)
            # Continue dealing where the previous group stopped, so fold sizes differ by <= 1.
            fold[users] = (dealt + np.arange(users.size)) % n_splits
            dealt += users.size
        for f in range(n_splits):
            test = fold == f
            yield np.flatnonzero(~test), np.flatnonzero(test)


def _n_rows(X, name: str) -> int:
    shape = getattr(X, "shape", None)
    if shape is None:
        shape = np.shape(X)
    if len(shape) != 2:
        raise ValueError(f"{name} must be a 2-D users x items matrix, got shape {tuple(shape)}")
    return int(shape[0])


def _row_nnz(y) -> np.ndarray:
    if sp.issparse(y):
        csr = sp.csr_matrix(y)
        csr.eliminate_zeros()
        return np.diff(csr.indptr)
    return np.count_nonzero(np.asarray(y), axis=1)


def fold_in_split(X, test_fraction: float = 0.2, random_state=0):
    """Split each user's interactions into a history and a held-out part for model selection.

    Parameters
    ----------
    X : sparse matrix or array-like of shape (n_users, n_items)
        Interactions.
    test_fraction : float, default=0.2
        Fraction of each user's interactions held out (``round(f * n_u)``, at least one
        interaction stays in the history).
    random_state : int, numpy Generator or None, default=0
        Seed.

    Returns
    -------
    X_history, X_heldout : scipy.sparse.csr_matrix of shape (n_users, n_items)
        Disjoint; their sum is ``X``. Pass them as ``fit(X_history, X_heldout)`` to
        :class:`sklearn.model_selection.GridSearchCV` with ``cv=UserKFold(...)``.

    Examples
    --------
    >>> import numpy as np
    >>> from linrec.model_selection import fold_in_split
    >>> X_history, X_heldout = fold_in_split(np.ones((3, 10)))
    >>> X_history.getnnz(axis=1).tolist(), X_heldout.getnnz(axis=1).tolist()
    ([8, 8, 8], [2, 2, 2])
    """
    return random_holdout_split(X, test_fraction=test_fraction, random_state=random_state)

"""One place that turns any interaction input into canonical CSR and rejects bad input.

Every estimator, metric and loader calls :func:`check_interactions`. It never modifies the
caller's object: the returned matrix owns its arrays.
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp

__all__ = [
    "check_interactions",
    "check_item_ids",
    "check_positive_float",
    "check_random_state_seed",
]


def _first_position(mask_rows: np.ndarray, mask_cols: np.ndarray) -> str:
    return f"(row {int(mask_rows[0])}, column {int(mask_cols[0])})"


def check_interactions(
    X,
    *,
    name: str = "X",
    dtype=np.float32,
    n_items: int | None = None,
    estimator_name: str | None = None,
    allow_empty_rows: bool = True,
    allow_empty: bool = False,
) -> sp.csr_matrix:
    """Validate a users x items interaction matrix and return a fresh canonical CSR copy.

    Parameters
    ----------
    X : sparse matrix or array-like of shape (n_users, n_items)
        Interactions; any scipy sparse format, a numpy array or nested lists. Values are
        interaction strengths (1 for binary data); stored zeros are dropped.
    name : str, default="X"
        Name used in error messages.
    dtype : numpy dtype, default=np.float32
        dtype of the returned values.
    n_items : int, optional
        Expected number of columns (the fitted model's catalogue size).
    estimator_name : str, optional
        Used in the column-count error message.
    allow_empty_rows : bool, default=True
        If False, rows without any interaction raise a ValueError.
    allow_empty : bool, default=False
        If False, a matrix with no interaction at all raises a ValueError.

    Returns
    -------
    X : scipy.sparse.csr_matrix
        Canonical CSR (duplicates summed, indices sorted, no stored zeros), int32 or int64
        indices, values of ``dtype``. It shares no memory with the input.

    Raises
    ------
    ValueError
        For input that is not 2-D, has no rows or columns, contains NaN, infinity or negative
        values, has the wrong number of columns, or (when asked) empty rows.

    Examples
    --------
    >>> import numpy as np
    >>> X = check_interactions(np.array([[1, 0], [0, 2]]))
    >>> X.format, X.nnz, X.dtype
    ('csr', 2, dtype('float32'))
    >>> check_interactions(np.array([[1.0, -1.0]]))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: X contains a negative value (-1.0) at (row 0, column 1); ...
    """
    if X is None:
        raise ValueError(f"{name} is None; expected a users x items matrix")
    if sp.issparse(X):
        if X.ndim != 2:
            raise ValueError(f"{name} must be 2-D (users x items), got {X.ndim}-D sparse input")
        if np.iscomplexobj(X.data):
            raise ValueError(f"Complex data not supported: {name} has dtype {X.dtype}")
        csr = sp.csr_matrix(X, dtype=np.float64, copy=True)
    else:
        try:
            arr = np.asarray(X)
        except Exception as exc:  # ragged lists and the like
            raise ValueError(f"{name} could not be read as a 2-D array: {exc}") from exc
        if np.iscomplexobj(arr):
            raise ValueError(f"Complex data not supported: {name} has dtype {arr.dtype}")
        if arr.ndim != 2:
            raise ValueError(
                f"{name} must be 2-D (users x items), got an array of shape {arr.shape}. "
                "Reshape your data: a single user's history is X.reshape(1, -1)"
            )
        if arr.dtype.kind in "USV":
            raise ValueError(f"{name} has dtype {arr.dtype}; expected numbers (users x items)")
        # object arrays of numbers convert; anything else raises float()'s TypeError
        arr = arr.astype(np.float64, copy=False)
        _check_values(arr, name)
        csr = sp.csr_matrix(arr)
    n_rows, n_cols = csr.shape
    if n_rows == 0 or n_cols == 0:
        raise ValueError(
            f"{name} is empty: shape {csr.shape} (need at least one user and one item; "
            f"found {n_cols} feature(s) (shape={csr.shape}) while a minimum of 1 is required)"
        )
    if n_items is not None and n_cols != n_items:
        who = estimator_name or "the model"
        raise ValueError(
            f"{name} has {n_cols} features, but {who} is expecting {n_items} features as input "
            f"(columns are items: {name} has {n_cols} items, the model was fitted on {n_items})"
        )
    if sp.issparse(X):
        _check_sparse_values(csr, name)
    csr.sum_duplicates()
    csr.eliminate_zeros()
    csr.sort_indices()
    if not allow_empty and csr.nnz == 0:
        raise ValueError(f"{name} has no interactions (all {n_rows} x {n_cols} entries are zero)")
    if not allow_empty_rows:
        counts = np.diff(csr.indptr)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            raise ValueError(
                f"{name} has {empty.size} user row(s) without any interaction, first at "
                f"row(s) {empty[:5].tolist()}; drop them (linrec.datasets.drop_empty_users) "
                "before fitting"
            )
    out = sp.csr_matrix(
        (csr.data.astype(dtype, copy=False), csr.indices, csr.indptr), shape=csr.shape
    )
    out.has_sorted_indices = True
    return out


def _check_values(arr: np.ndarray, name: str) -> None:
    bad = np.isnan(arr)
    if bad.any():
        r, c = np.nonzero(bad)
        raise ValueError(f"{name} contains NaN at {_first_position(r, c)} ({bad.sum()} in all)")
    bad = np.isinf(arr)
    if bad.any():
        r, c = np.nonzero(bad)
        raise ValueError(
            f"{name} contains infinity at {_first_position(r, c)} ({bad.sum()} in all)"
        )
    bad = arr < 0
    if bad.any():
        r, c = np.nonzero(bad)
        raise ValueError(
            f"{name} contains a negative value ({arr[r[0], c[0]]}) at {_first_position(r, c)}; "
            "interaction strengths must be >= 0 (Negative values in data)"
        )


def _check_sparse_values(csr: sp.csr_matrix, name: str) -> None:
    data = csr.data
    for test, what in ((np.isnan, "NaN"), (np.isinf, "infinity"), (lambda d: d < 0, "neg")):
        bad = test(data)
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            row = int(np.searchsorted(csr.indptr, pos, side="right") - 1)
            col = int(csr.indices[pos])
            if what == "neg":
                raise ValueError(
                    f"{name} contains a negative value ({data[pos]}) at (row {row}, column "
                    f"{col}); interaction strengths must be >= 0 (Negative values in data)"
                )
            raise ValueError(
                f"{name} contains {what} at (row {row}, column {col}) ({int(bad.sum())} in all)"
            )


def check_item_ids(items, n_items: int, *, name: str = "items") -> np.ndarray:
    """Validate item indices against a catalogue of ``n_items``; return an int64 array.

    Examples
    --------
    >>> check_item_ids([0, 2], 3)
    array([0, 2])
    >>> check_item_ids([3], 3)
    Traceback (most recent call last):
    ...
    ValueError: items contains id 3, out of range for a catalogue of 3 items (valid ids 0..2)
    """
    arr = np.asarray(items)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of item indices, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"{name} must hold integer item indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=True)
    bad = (arr < 0) | (arr >= n_items)
    if bad.any():
        raise ValueError(
            f"{name} contains id {int(arr[bad][0])}, out of range for a catalogue of "
            f"{n_items} items (valid ids 0..{n_items - 1})"
        )
    return arr


def check_positive_float(value, name: str, *, allow_zero: bool = False) -> float:
    """Check a scalar hyper-parameter is a finite float > 0 (or >= 0)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    ok = np.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return value


def check_random_state_seed(random_state) -> int:
    """Turn ``random_state`` (None, int or Generator/RandomState) into a 63-bit integer seed.

    numba kernels take an integer seed; drawing it from the given state keeps ``random_state``
    semantics identical to scikit-learn's.
    """
    from sklearn.utils import check_random_state

    rs = check_random_state(random_state)
    return int(rs.randint(0, 2**31 - 1)) * (2**31) + int(rs.randint(0, 2**31 - 1))

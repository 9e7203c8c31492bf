"""Interaction data: a synthetic generator, loaders, id maps and evaluation splits.

Everything here produces users x items :class:`scipy.sparse.csr_matrix` objects (rows are
users, columns are items) that every linrec estimator and :func:`linrec.metrics.evaluate`
accept directly.

- Synthetic data: :func:`make_implicit`, :func:`make_implicit_split`.
- Loaders: :func:`load_lightgcn` (``train.txt`` / ``test.txt``, ``user item item ...``),
  :func:`load_interactions` (delimited files: user, item, optional weight and timestamp),
  :func:`load_lastfm`, :func:`from_arrays`. Raw ids are kept in :class:`IdMap` objects that
  translate them to row / column indices and back.
- Splits: :func:`random_holdout_split` (per-user random holdout, the LightGCN protocol),
  :func:`leave_last_out_split` (by timestamp) and :func:`heldout_users_split` (held-out users
  with fold-in, the "strong generalisation" protocol of Liang et al. and Steck).

Every split is seeded by ``random_state``, never modifies its input and returns matrices whose
entries partition the input's entries.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from linrec._kernels.text import MAX_DIGITS, parse_uint_tokens
from linrec._threading import blas_threads
from linrec._validation import check_interactions

__all__ = [
    "IdMap",
    "InteractionData",
    "TrainTestData",
    "drop_empty_users",
    "from_arrays",
    "heldout_users_split",
    "leave_last_out_split",
    "load_interactions",
    "load_lastfm",
    "load_lightgcn",
    "make_implicit",
    "make_implicit_split",
    "random_holdout_split",
]

logger = logging.getLogger(__name__)

# Entries of a (users x items) block of synthetic scores generated at once (16 MiB float32).
_GENERATOR_BLOCK_ENTRIES = 1 << 22


# ====================================================================== random states
def _generator(random_state) -> np.random.Generator:
    """A numpy Generator from None, an int, a Generator or a legacy RandomState."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**31 - 1))
    if random_state is None or (
        isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool)
    ):
        return np.random.default_rng(random_state)
    raise ValueError(
        f"random_state must be None, an int, a numpy Generator or RandomState, got {random_state!r}"
    )


# ====================================================================== id maps
def _id_kind(values: np.ndarray) -> str:
    if values.dtype.kind in "iub":
        return "integer"
    if values.dtype.kind == "f":
        return "number"
    if values.dtype.kind in "US":
        return "string"
    return values.dtype.kind


class IdMap:
    """Two-way map between raw ids and contiguous indices ``0`` to ``n - 1``.

    ``ids[k]`` is the raw id of index ``k`` (row ``k`` of a users map, column ``k`` of an items
    map). :meth:`transform` turns raw ids into indices and refuses ids it has never seen, unless
    asked to drop them: an unknown id is never silently mapped to another row or column.

    Parameters
    ----------
    ids : array-like of shape (n,)
        Distinct raw ids (integers or strings), in index order.
    name : str, default="id"
        What the ids are ("user", "item"), used in error messages.

    Attributes
    ----------
    ids : ndarray of shape (n,)
        The raw ids (a read-only copy).
    name : str
        What the ids are.

    See Also
    --------
    from_arrays : Build an interaction matrix and its id maps from raw ids.

    Notes
    -----
    Lookups use binary search on a sorted copy: building costs O(n log n), ``transform`` of
    ``m`` ids O(m log n); memory is about three arrays of ``n`` ids.

    Examples
    --------
    >>> from linrec.datasets import IdMap
    >>> items = IdMap(["apple", "pear", "fig"], name="item")
    >>> items.transform(["fig", "apple"])
    array([2, 0])
    >>> items.inverse_transform([1])
    array(['pear'], dtype='<U5')
    >>> items.transform(["kiwi"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: 1 unknown item id(s), not in the map of 3 item ids: ['kiwi']; pass ...
    >>> idx, kept = items.transform(["kiwi", "pear"], unknown="drop")
    >>> idx, kept
    (array([1]), array([False,  True]))
    """

    def __init__(self, ids, *, name: str = "id"):
        ids = np.array(ids, copy=True)
        if ids.ndim != 1:
            raise ValueError(f"{name} ids must be 1-D, got shape {ids.shape}")
        if ids.dtype == object:
            try:
                ids = ids.astype(str) if all(isinstance(v, str) for v in ids) else ids
            except TypeError:  # pragma: no cover - defensive
                pass
            if ids.dtype == object:
                raise ValueError(f"{name} ids must be integers or strings, got mixed objects")
        if ids.dtype.kind == "S":
            ids = ids.astype(str)
        if _id_kind(ids) not in ("integer", "number", "string"):
            raise ValueError(f"{name} ids must be integers or strings, got dtype {ids.dtype}")
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        duplicated = sorted_ids[1:] == sorted_ids[:-1]
        if duplicated.any():
            examples = np.unique(sorted_ids[1:][duplicated])[:5].tolist()
            raise ValueError(f"{name} ids must be distinct; duplicated: {examples}")
        ids.flags.writeable = False
        self.ids = ids
        self.name = name
        self._order = order
        self._sorted = sorted_ids

    @classmethod
    def from_values(cls, values, *, name: str = "id") -> tuple[IdMap, np.ndarray]:
        """Map the distinct values of ``values`` (sorted) to indices.

        Returns
        -------
        id_map : IdMap
            Map of the sorted distinct values.
        codes : ndarray of shape (len(values),), int64
            The index of each value.

        Examples
        --------
        >>> id_map, codes = IdMap.from_values(["b", "a", "b"])
        >>> id_map.ids.tolist(), codes.tolist()
        (['a', 'b'], [1, 0, 1])
        """
        values = np.asarray(values)
        if values.dtype.kind == "S":
            values = values.astype(str)
        unique, codes = np.unique(values, return_inverse=True)
        return cls(unique, name=name), codes.astype(np.int64).reshape(-1)

    @classmethod
    def range(cls, n: int, *, name: str = "id") -> IdMap:
        """The identity map of ``n`` ids: raw id ``k`` is index ``k``."""
        return cls(np.arange(int(n), dtype=np.int64), name=name)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __getitem__(self, key):
        return self.ids[key]

    def __array__(self, dtype=None, copy=None):
        return np.array(self.ids, dtype=dtype, copy=True)

    def __repr__(self) -> str:
        head = ", ".join(repr(v) for v in self.ids[:3].tolist())
        more = ", ..." if len(self) > 3 else ""
        return f"IdMap([{head}{more}], name={self.name!r}, n={len(self)})"

    def transform(self, raw_ids, *, unknown: str = "error"):
        """Indices of raw ids.

        Parameters
        ----------
        raw_ids : array-like of shape (m,) or scalar
            Raw ids to look up.
        unknown : {"error", "drop"}, default="error"
            What to do with ids that are not in the map: raise a ValueError listing a few of
            them, or drop them.

        Returns
        -------
        indices : ndarray of int64
            With ``unknown="error"``: shape (m,). With ``unknown="drop"``: the indices of the
            known ids only.
        kept : ndarray of shape (m,), bool
            Only with ``unknown="drop"``: which positions of ``raw_ids`` were known.
        """
        if unknown not in ("error", "drop"):
            raise ValueError(f"unknown must be 'error' or 'drop', got {unknown!r}")
        query = np.asarray(raw_ids)
        if query.ndim == 0:
            query = query.reshape(1)
        if query.ndim != 1:
            raise ValueError(f"raw {self.name} ids must be 1-D, got shape {query.shape}")
        if query.dtype.kind == "S":
            query = query.astype(str)
        if query.size and len(self):
            mine, theirs = _id_kind(self.ids), _id_kind(query)
            numeric = ("integer", "number")
            if (mine in numeric) != (theirs in numeric):
                raise ValueError(
                    f"this map holds {mine} {self.name} ids but {theirs} ids were given "
                    f"(e.g. {query[0]!r}); convert them to the map's type first"
                )
        if len(self) == 0:
            found = np.zeros(query.shape[0], dtype=bool)
            indices = np.zeros(query.shape[0], dtype=np.int64)
        else:
            pos = np.searchsorted(self._sorted, query)
            pos = np.minimum(pos, len(self) - 1)
            found = self._sorted[pos] == query
            indices = self._order[pos].astype(np.int64)
        if unknown == "drop":
            return indices[found], found
        if not found.all():
            missing = query[~found]
            examples = np.unique(missing)[:5].tolist()
            raise ValueError(
                f"{missing.size} unknown {self.name} id(s), not in the map of {len(self)} "
                f"{self.name} ids: {examples}; pass unknown='drop' to drop them"
            )
        return indices

    def inverse_transform(self, indices) -> np.ndarray:
        """Raw ids of indices (ValueError for an index out of range)."""
        idx = np.asarray(indices)
        if idx.ndim == 0:
            idx = idx.reshape(1)
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"{self.name} indices must be integers, got dtype {idx.dtype}")
        bad = (idx < 0) | (idx >= len(self))
        if bad.any():
            raise ValueError(
                f"{self.name} index {int(idx[bad][0])} is out of range for {len(self)} "
                f"{self.name} ids"
            )
        return self.ids[idx]


# ====================================================================== containers
@dataclass(frozen=True)
class InteractionData:
    """A users x items interaction matrix with the raw ids of its rows and columns.

    Attributes
    ----------
    matrix : scipy.sparse.csr_matrix of shape (n_users, n_items)
        Interaction strengths (canonical CSR: sorted indices, no duplicates, no stored zeros).
    user_ids : IdMap
        ``user_ids[k]`` is the raw id of row ``k``.
    item_ids : IdMap
        ``item_ids[j]`` is the raw id of column ``j``.
    timestamps : scipy.sparse.csr_matrix or None
        Same sparsity pattern (``indptr`` and ``indices``) as ``matrix``; ``timestamps.data``
        holds the latest time of each (user, item) pair, aligned with ``matrix.data``. Zero
        times are stored explicitly, so do not call ``eliminate_zeros`` on it.
    """

    matrix: sp.csr_matrix
    user_ids: IdMap
    item_ids: IdMap
    timestamps: sp.csr_matrix | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape


@dataclass(frozen=True)
class TrainTestData:
    """A train / test pair of interaction matrices over the same users and items.

    Iterating yields ``(train, test)``, so ``X_train, X_test = load_lightgcn(path)`` works.

    Attributes
    ----------
    train : scipy.sparse.csr_matrix of shape (n_users, n_items)
    test : scipy.sparse.csr_matrix of shape (n_users, n_items)
    user_ids : IdMap
        Raw id of each row (shared by ``train`` and ``test``).
    item_ids : IdMap
        Raw id of each column.
    """

    train: sp.csr_matrix
    test: sp.csr_matrix
    user_ids: IdMap
    item_ids: IdMap

    def __iter__(self):
        return iter((self.train, self.test))

    @property
    def shape(self) -> tuple[int, int]:
        return self.train.shape


# ====================================================================== building matrices
def _build_csr(rows, cols, shape, weights=None, timestamps=None, dtype=np.float32, binary=False):
    """Canonical CSR from coordinates: weights summed and timestamps maxed per (row, col).

    Pairs whose summed weight is 0 are dropped (from the timestamps too), so both matrices
    keep exactly the same pattern; ``binary`` then stores 1 for every remaining pair.
    """
    n_rows, n_cols = shape
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    # One int64 key per pair; files are usually ordered already, so check before sorting.
    key = rows * n_cols + cols
    if key.size and (key[1:] < key[:-1]).any():
        order = np.argsort(key, kind="stable")
        rows, cols = rows[order], cols[order]
    else:
        order = slice(None)
    if rows.size:
        new = np.empty(rows.size, dtype=bool)
        new[0] = True
        sorted_key = key[order]
        new[1:] = sorted_key[1:] != sorted_key[:-1]
        starts = np.flatnonzero(new)
    else:
        starts = np.zeros(0, dtype=np.int64)
    if weights is None:
        values = np.ones(starts.size, dtype=np.float64)
    else:
        values = (
            np.add.reduceat(np.asarray(weights, np.float64)[order], starts)
            if starts.size
            else np.zeros(0)
        )
    times = None
    if timestamps is not None:
        ts = np.asarray(timestamps)[order]
        times = np.maximum.reduceat(ts, starts) if starts.size else ts[:0]
    keep = values != 0
    rows, cols = rows[starts][keep], cols[starts][keep]
    values = np.ones(int(keep.sum())) if binary else values[keep]
    counts = np.bincount(rows, minlength=n_rows)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    index_dtype = np.int32 if max(n_rows, n_cols, rows.size) < 2**31 - 1 else np.int64
    indptr = indptr.astype(index_dtype)
    indices = cols.astype(index_dtype)
    matrix = sp.csr_matrix((values.astype(dtype), indices, indptr), shape=shape)
    matrix.has_sorted_indices = True
    ts_matrix = None
    if times is not None:
        ts_matrix = sp.csr_matrix((times[keep], indices.copy(), indptr.copy()), shape=shape)
        ts_matrix.has_sorted_indices = True
    return matrix, ts_matrix


def _check_weights(weights: np.ndarray, where) -> None:
    """ValueError naming the first NaN, infinite or negative weight; ``where(i)`` locates it."""
    for bad, what in (
        (np.isnan(weights), "NaN"),
        (np.isinf(weights), "an infinite value"),
        (weights < 0, "a negative value"),
    ):
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"weights contain {what} ({weights[first]}) {where(first)}; interaction "
                "strengths must be finite and >= 0"
            )


def from_arrays(
    users,
    items,
    weights=None,
    n_users: int | None = None,
    n_items: int | None = None,
    *,
    timestamps=None,
    map_ids="auto",
    binary: bool = False,
    dtype=np.float32,
) -> InteractionData:
    """Build a users x items CSR matrix from parallel arrays of (user, item[, weight]).

    Parameters
    ----------
    users, items : array-like of shape (n_interactions,)
        User and item of each interaction: integer indices, or raw ids (strings, or integers
        with ``map_ids=True``) that are mapped to indices in sorted order.
    weights : array-like of shape (n_interactions,), optional
        Interaction strengths (>= 0); 1 for each interaction when omitted. Repeated (user,
        item) pairs are summed; pairs summing to 0 are dropped.
    n_users, n_items : int, optional
        Matrix shape when ``users`` / ``items`` are indices (default: largest index + 1).
    timestamps : array-like of shape (n_interactions,), optional
        Time of each interaction; the result's ``timestamps`` keeps the latest time per pair.
    map_ids : bool or "auto", default="auto"
        Map raw ids to indices. "auto" maps non-integer ids and uses integer ids as indices.
    binary : bool, default=False
        Store 1 for every pair (with a non-zero summed weight) instead of the summed weights.
    dtype : numpy dtype, default=np.float32
        dtype of the matrix values.

    Returns
    -------
    data : InteractionData
        ``data.matrix`` (canonical CSR), ``data.user_ids``, ``data.item_ids`` and
        ``data.timestamps`` (None without timestamps).

    Examples
    --------
    >>> from linrec.datasets import from_arrays
    >>> data = from_arrays(["ann", "bob", "ann"], ["x", "y", "y"], weights=[1, 2, 3])
    >>> data.matrix.toarray()
    array([[1., 3.],
           [0., 2.]], dtype=float32)
    >>> data.user_ids.ids.tolist(), data.item_ids.ids.tolist()
    (['ann', 'bob'], ['x', 'y'])
    >>> from_arrays([0, 2], [1, 0], n_users=4).matrix.shape
    (4, 2)
    """
    users = np.asarray(users)
    items = np.asarray(items)
    if users.ndim != 1 or items.ndim != 1 or users.shape != items.shape:
        raise ValueError(
            f"users and items must be 1-D arrays of the same length, got shapes {users.shape} "
            f"and {items.shape}"
        )
    n = users.shape[0]
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (n,):
            raise ValueError(f"weights must have shape ({n},), got {weights.shape}")
        _check_weights(weights, lambda i: f"at position {i}")
    if timestamps is not None:
        timestamps = np.asarray(timestamps)
        if timestamps.shape != (n,):
            raise ValueError(f"timestamps must have shape ({n},), got {timestamps.shape}")
    if map_ids not in ("auto", True, False):
        raise ValueError(f"map_ids must be 'auto', True or False, got {map_ids!r}")
    user_map, rows = _index_or_map(users, n_users, map_ids, "user")
    item_map, cols = _index_or_map(items, n_items, map_ids, "item")
    matrix, ts = _build_csr(
        rows,
        cols,
        (len(user_map), len(item_map)),
        weights,
        timestamps,
        dtype=dtype,
        binary=binary,
    )
    return InteractionData(matrix, user_map, item_map, ts)


def _index_or_map(values: np.ndarray, n: int | None, map_ids, name: str):
    integer = values.dtype.kind in "iu" or (values.size == 0 and values.dtype.kind == "f")
    if map_ids is True or (map_ids == "auto" and not integer):
        if n is not None:
            raise ValueError(f"n_{name}s applies to integer {name} indices, not to mapped raw ids")
        return IdMap.from_values(values, name=name)
    if not integer:
        raise ValueError(
            f"{name}s must be integer indices with map_ids=False, got dtype {values.dtype}"
        )
    values = values.astype(np.int64)
    if values.size and values.min() < 0:
        raise ValueError(f"{name} indices must be >= 0, got {int(values.min())}")
    needed = int(values.max()) + 1 if values.size else 0
    if n is None:
        n = needed
    elif n < needed:
        raise ValueError(f"n_{name}s={n} but {name} index {needed - 1} occurs")
    return IdMap.range(n, name=name), values


# ====================================================================== LightGCN text format
def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {os.fspath(path)}") from None


def _read_lightgcn_file(path: Path):
    """Rows, columns and listed users of a ``user item item ...`` file (0-based ids).

    The bytes are parsed in one compiled pass (:func:`linrec._kernels.text.parse_uint_tokens`);
    anything but digits and whitespace sends the file to a slow line-by-line pass that names
    the offending line.
    """
    raw = _read_bytes(path)
    numbers, line_of, bad = parse_uint_tokens(np.frombuffer(raw, dtype=np.uint8))
    if bad >= 0:
        _raise_lightgcn_error(path, raw)
    if numbers.size == 0:
        return (np.zeros(0, np.int64),) * 3
    first = np.empty(numbers.size, dtype=bool)
    first[0] = True
    first[1:] = line_of[1:] != line_of[:-1]
    listed_users = numbers[first]
    rows = np.repeat(listed_users, np.diff(np.append(np.flatnonzero(first), numbers.size)) - 1)
    cols = numbers[~first]
    return rows, cols, listed_users


def _raise_lightgcn_error(path: Path, raw: bytes):
    """Find the first bad token line by line (only on the error path) and raise."""
    for number, line in enumerate(raw.split(b"\n"), start=1):
        for token in line.split():
            if token.isdigit() and len(token) <= MAX_DIGITS:
                continue
            text = token.decode(errors="replace")
            if token.startswith(b"-") and token[1:].isdigit():
                problem = f"negative id {text}"
            elif token.isdigit():
                problem = f"id {text} has more than {MAX_DIGITS} digits"
            else:
                problem = f"cannot read {text!r} as an integer id"
            raise ValueError(
                f"{os.fspath(path)}, line {number}: {problem}; expected 'user item item ...' "
                "(space separated integers >= 0)"
            )
    raise ValueError(  # pragma: no cover - the fast path only fails on a bad token
        f"{os.fspath(path)} could not be read as 'user item item ...' lines"
    )


def _read_id_list(path: Path, name: str) -> IdMap:
    """Raw ids of a LightGCN ``org_id remap_id [...]`` list; ``ids[remap] = org``.

    Fields after the second (Amazon-Book's ``freebase_id``) are ignored; a first line whose
    second field is not an integer is a header.
    """
    try:
        text = _read_bytes(path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{os.fspath(path)} is not UTF-8 text ({exc})") from None
    org, remap = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split(None, 2)
        if not fields:
            continue
        if len(fields) >= 2 and fields[1].isdigit():
            org.append(fields[0])
            remap.append(int(fields[1]))
        elif not org and not remap and number == 1:
            continue  # header such as "org_id remap_id"
        else:
            raise ValueError(
                f"{os.fspath(path)}, line {number}: expected 'org_id remap_id', got {line!r}"
            )
    remap = np.asarray(remap, dtype=np.int64)
    if not np.array_equal(np.sort(remap), np.arange(remap.size)):
        raise ValueError(
            f"{os.fspath(path)}: remap ids must be 0 .. {remap.size - 1}, each exactly once"
        )
    org = _parse_ids(np.asarray(org)) if org else np.zeros(0, np.int64)
    ids = org.copy()
    ids[remap] = org
    try:
        return IdMap(ids, name=name)
    except ValueError as exc:
        raise ValueError(f"{os.fspath(path)}: {exc}") from None


def load_lightgcn(path, *, dtype=np.float32) -> TrainTestData:
    """Load a LightGCN / NGCF split: a folder with ``train.txt`` and ``test.txt``.

    Each line holds a user id followed by the ids of the items it interacted with, space
    separated and 0-based (``user item item ...``); a line may hold only the user id. This is
    the format of the published Gowalla, Yelp2018 and Amazon-Book splits.

    Parameters
    ----------
    path : str or path-like
        The folder. ``user_list.txt`` and ``item_list.txt`` (``org_id remap_id`` per line,
        optional header), when present, give the raw ids of rows and columns.
    dtype : numpy dtype, default=np.float32
        dtype of the matrix values.

    Returns
    -------
    data : TrainTestData
        ``train`` and ``test`` binary CSR matrices of the same shape: users = largest user id
        + 1 over both files, items likewise (or the id lists' lengths when larger);
        ``user_ids`` / ``item_ids`` map rows / columns to raw ids (identity without the lists).
        ``X_train, X_test = load_lightgcn(path)`` unpacks the two matrices.

    Raises
    ------
    ValueError
        For a token that is not a non-negative integer (naming the file and line), or id
        lists that do not cover the ids used.

    Notes
    -----
    Each file is read in one piece and parsed in one compiled pass over its bytes; memory is
    about 8x the file size while parsing, O(nnz log nnz) time for the matrix build. The whole
    Gowalla folder (1.03 million interactions and both id lists) loads in about 0.4 s on a
    busy 2-core machine (benchmarks/RESULTS.md). Repeated items on a line count once.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from linrec.datasets import load_lightgcn
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "train.txt").write_text("0 0 1\\n1 2\\n2\\n")
    >>> _ = (folder / "test.txt").write_text("0 2\\n1 0\\n")
    >>> X_train, X_test = load_lightgcn(folder)
    >>> X_train.shape, X_train.nnz, X_test.nnz
    ((3, 3), 3, 2)
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{os.fspath(folder)} is not a folder; expected a folder with train.txt and test.txt"
        )
    parts = [_read_lightgcn_file(folder / name) for name in ("train.txt", "test.txt")]
    n_users = max((int(p[2].max()) + 1 if p[2].size else 0) for p in parts)
    n_items = max((int(p[1].max()) + 1 if p[1].size else 0) for p in parts)
    maps = {}
    for name, n_used in (("user", n_users), ("item", n_items)):
        list_path = folder / f"{name}_list.txt"
        if list_path.is_file():
            id_map = _read_id_list(list_path, name)
            if len(id_map) < n_used:
                raise ValueError(
                    f"{os.fspath(list_path)} maps {len(id_map)} {name} ids but train.txt/test.txt "
                    f"use {name} id {n_used - 1}"
                )
            maps[name] = id_map
        else:
            maps[name] = IdMap.range(n_used, name=name)
    shape = (len(maps["user"]), len(maps["item"]))
    train, test = (_build_csr(rows, cols, shape, dtype=dtype)[0] for rows, cols, _ in parts)
    logger.info("loaded %s: %d x %d, %d train, %d test", folder, *shape, train.nnz, test.nnz)
    return TrainTestData(train, test, maps["user"], maps["item"])


# ====================================================================== delimited files
_COLUMN_ALIASES = {
    "user": {"user", "users", "user_id", "userid", "uid", "customer", "customer_id"},
    "item": {
        "item",
        "items",
        "item_id",
        "itemid",
        "iid",
        "movie",
        "movieid",
        "movie_id",
        "artist",
        "artistid",
        "artist_id",
        "product",
        "product_id",
        "track",
    },
    "weight": {
        "weight",
        "rating",
        "ratings",
        "count",
        "counts",
        "value",
        "score",
        "plays",
        "playcount",
        "play_count",
        "quantity",
        "clicks",
    },
    "timestamp": {"timestamp", "time", "ts", "date", "datetime", "unix_time", "created_at"},
}
_KNOWN_COLUMNS = ("user", "item", "weight", "timestamp")


def _sniff_separator(line: str) -> str | None:
    for sep in ("\t", ",", ";", "|"):
        if sep in line:
            return sep
    return None


def _tokenize_delimited(path: Path, sep, *, sniff: bool = True):
    """Fields of a delimited file as a 2-D bytes array, plus the 1-based line numbers.

    Newlines become a marker token so that the file is split in one call; line structure is
    recovered from the markers. Fields stay bytes (numpy converts bytes to numbers about
    three times faster than str); string ids are decoded later. Blank lines are skipped; a
    line with a different number of fields than the first raises a ValueError naming it.
    """
    raw = _read_bytes(path)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{os.fspath(path)} is not UTF-8 text ({exc})") from None
    if b"\x00" in raw:
        raise ValueError(f"{os.fspath(path)} contains NUL bytes: not a text file")
    raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if sep is None and sniff:
        # Sniffed from the first non-blank line (looked for in the first 64 KiB).
        head = raw[: 1 << 16].decode("utf-8", errors="ignore").split("\n")
        sep = _sniff_separator(next((line for line in head if line.strip()), ""))
    # A control character absent from the file marks line ends (not NUL: numpy strings
    # drop trailing NULs).
    marker = next((c for c in (b"\x01", b"\x02", b"\x03", b"\x1e", b"\x1f") if c not in raw), None)
    if marker is None:
        raise ValueError(f"{os.fspath(path)} contains control characters: not a text file")
    if sep is None:
        tokens = np.array(raw.replace(b"\n", b" " + marker + b" ").split())
    else:
        sep_bytes = sep.encode("utf-8")
        tokens = np.array(raw.replace(b"\n", sep_bytes + marker + sep_bytes).split(sep_bytes))
        if any(space in raw for space in (b" ", b"\t") if space != sep_bytes):
            tokens = np.char.strip(tokens)  # fields may be padded ("a, b")
    if tokens.size == 0:
        return np.zeros((0, 0), dtype="S1"), np.zeros(0, np.int64), sep
    is_marker = tokens == marker
    line_of = np.cumsum(is_marker)[~is_marker]
    fields = tokens[~is_marker]
    del tokens
    counts = np.bincount(line_of, minlength=int(is_marker.sum()) + 1)
    blank = counts == 0
    if sep is not None:
        # A blank line splits into one empty field.
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        single = counts == 1
        blank |= single & (fields[np.minimum(starts, max(fields.size - 1, 0))] == b"")
    keep_line = ~blank
    if blank.any():
        fields = fields[keep_line[line_of]]
    line_numbers = np.flatnonzero(keep_line) + 1
    counts = counts[keep_line]
    if counts.size == 0:
        return np.zeros((0, 0), dtype="S1"), line_numbers, sep
    n_fields = int(counts[0])
    wrong = np.flatnonzero(counts != n_fields)
    if wrong.size:
        line = int(line_numbers[wrong[0]])
        how = f"separator {sep!r}" if sep is not None else "whitespace separated"
        raise ValueError(
            f"{os.fspath(path)}, line {line}: expected {n_fields} fields (as on line "
            f"{int(line_numbers[0])}), found {int(counts[wrong[0]])} ({how})"
        )
    return fields.reshape(-1, n_fields), line_numbers, sep


def _text(value) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _column_names(first_row, columns, header):
    """Resolve (has_header, column roles) from the first row and the user's options."""
    n_fields = len(first_row)
    first_row = [_text(t) for t in first_row]
    lowered = [t.strip().lower() for t in first_row]
    from_header = [
        next((role for role, names in _COLUMN_ALIASES.items() if name in names), None)
        for name in lowered
    ]
    if header == "infer":
        # Roles the fields would have without a header, to test the weight / time fields.
        roles = columns if columns is not None else _KNOWN_COLUMNS[:n_fields]
        has_header = any(role is not None for role in from_header) or any(
            role in ("weight", "timestamp") and not _is_number(tok) and not _looks_like_date(tok)
            for role, tok in zip(roles, first_row)
        )
    elif header in (True, False):
        has_header = header
    else:
        raise ValueError(f"header must be 'infer', True or False, got {header!r}")
    if columns is None:
        if has_header and "user" in from_header and "item" in from_header:
            columns = from_header
        elif n_fields > len(_KNOWN_COLUMNS):
            raise ValueError(
                f"the file has {n_fields} fields per line; pass columns=(...) naming each one "
                f"(one of {_KNOWN_COLUMNS} or None to skip it)"
            )
        else:
            columns = list(_KNOWN_COLUMNS[:n_fields])
    columns = list(columns)
    if len(columns) != n_fields:
        raise ValueError(
            f"columns has {len(columns)} entries but the file has {n_fields} fields per line"
        )
    for role in columns:
        if role is not None and role not in _KNOWN_COLUMNS:
            raise ValueError(f"unknown column {role!r}; use one of {_KNOWN_COLUMNS} or None")
    named = [c for c in columns if c is not None]
    if len(set(named)) != len(named):
        raise ValueError(f"columns names a column twice: {columns}")
    if "user" not in named or "item" not in named:
        raise ValueError(f"columns must include 'user' and 'item', got {columns}")
    return has_header, columns


def _looks_like_date(token: str) -> bool:
    try:
        np.datetime64(token, "s")
    except ValueError:
        return False
    return True


def _parse_ids(values: np.ndarray) -> np.ndarray:
    """Integer ids as int64, anything else as (decoded) strings."""
    try:
        return values.astype(np.int64)
    except (ValueError, OverflowError):
        return np.char.decode(values, "utf-8") if values.dtype.kind == "S" else values


def _parse_numbers(values: np.ndarray, what: str, path: Path, lines: np.ndarray, timestamps=False):
    try:
        as_int = values.astype(np.int64)
        return as_int
    except (ValueError, OverflowError):
        pass
    try:
        return values.astype(np.float64)
    except ValueError:
        pass
    if values.dtype.kind == "S":
        values = np.char.decode(values, "utf-8")
    if timestamps:
        try:
            return values.astype("datetime64[s]").astype(np.int64)
        except ValueError:
            pass
    for value, line in zip(values.tolist(), lines):
        if not _is_number(value) and not (timestamps and _looks_like_date(value)):
            expected = "a number or an ISO date" if timestamps else "a number"
            raise ValueError(
                f"{os.fspath(path)}, line {int(line)}: {what} {str(value)!r} is not {expected}"
            )
    raise ValueError(f"{os.fspath(path)}: could not read the {what} column")  # pragma: no cover


def _read_delimited(path, sep, columns, header):
    """Raw columns of a delimited interaction file: dict role -> array, and line numbers."""
    path = Path(path)
    if sep is not None and (not isinstance(sep, str) or len(sep) != 1 or sep in "\n\r"):
        raise ValueError(f"sep must be None (sniff) or one character, got {sep!r}")
    fields, lines, sep = _tokenize_delimited(path, sep)
    if fields.shape[0] == 0:
        raise ValueError(f"{os.fspath(path)} holds no interactions")
    has_header, columns = _column_names(fields[0].tolist(), columns, header)
    if has_header:
        fields, lines = fields[1:], lines[1:]
        if fields.shape[0] == 0:
            raise ValueError(f"{os.fspath(path)} holds a header but no interactions")
    empty = fields == b""
    if empty.any():
        row, col = (int(v[0]) for v in np.nonzero(empty))
        raise ValueError(f"{os.fspath(path)}, line {int(lines[row])}: field {col + 1} is empty")
    out = {}
    for position, role in enumerate(columns):
        if role is None:
            continue
        values = fields[:, position]
        if role in ("user", "item"):
            out[role] = _parse_ids(values)
        else:
            out[role] = _parse_numbers(values, role, path, lines, timestamps=role == "timestamp")
    if "weight" in out:
        weights = out["weight"].astype(np.float64)
        _check_weights(weights, lambda i: f"in {os.fspath(path)}, line {int(lines[i])}")
        out["weight"] = weights
    return out, lines


def load_interactions(
    path,
    *,
    sep: str | None = None,
    columns=None,
    header="infer",
    binary: bool = False,
    user_ids: IdMap | None = None,
    item_ids: IdMap | None = None,
    unknown: str = "error",
    dtype=np.float32,
) -> InteractionData:
    """Load a delimited interaction file (one ``user, item[, weight][, timestamp]`` per line).

    Parameters
    ----------
    path : str or path-like
        The file (UTF-8 text).
    sep : str, optional
        Field separator (one character). By default sniffed from the first line: tab, comma,
        semicolon or ``|`` if present, else any run of whitespace.
    columns : sequence of str or None, optional
        Role of each field, from "user", "item", "weight", "timestamp", or None to skip a
        field. By default taken from a recognised header (e.g. ``userId,movieId,rating``),
        else ("user", "item", "weight", "timestamp") truncated to the number of fields.
    header : {"infer", True, False}, default="infer"
        Whether the first line is a header. "infer" detects one when a field of the first
        line is a known column name (user, item_id, rating, timestamp, ...), or when a weight
        or timestamp field of the first line is not a number.
    binary : bool, default=False
        Store 1 for every (user, item) pair with a non-zero summed weight instead of the
        summed weights.
    user_ids, item_ids : IdMap, optional
        Map raw ids through these maps (e.g. the training file's maps when loading a test
        file) instead of building new ones from the file.
    unknown : {"error", "drop"}, default="error"
        With given maps: raise on ids not in them, or drop those lines.
    dtype : numpy dtype, default=np.float32
        dtype of the matrix values.

    Returns
    -------
    data : InteractionData
        The matrix (weights of repeated pairs summed; 1 per interaction without a weight
        column), the id maps (raw ids sorted: integer ids numerically, strings
        lexicographically) and, with a timestamp column, the latest time of each pair.

    Raises
    ------
    ValueError
        Naming the file and line for lines with a wrong number of fields, empty fields,
        weights or timestamps that are not numbers, negative or NaN weights; for unknown ids
        with ``unknown="error"``.

    Notes
    -----
    The file is split in a few vectorised numpy calls (no per-line Python loop except to
    locate an error); fields stay bytes until converted. A one-million-line
    ``user,item,rating,timestamp`` file of integers loads in about 3 s on a busy 2-core
    machine (load 9), peaking near 230 MB (numpy byte strings take the longest field's
    length for every field). Integer ids are kept as integers, others as strings. Timestamps are
    numbers, or ISO 8601 dates turned into seconds since 1970.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from linrec.datasets import load_interactions
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "plays.csv"
    >>> _ = path.write_text("user,item,count\\nann,x,2\\nbob,y,1\\nann,y,5\\n")
    >>> data = load_interactions(path)
    >>> data.matrix.toarray()
    array([[2., 5.],
           [0., 1.]], dtype=float32)
    >>> data.user_ids.transform(["bob"])
    array([1])
    """
    path = Path(path)
    raw, lines = _read_delimited(path, sep, columns, header)
    return _arrays_to_data(raw, user_ids, item_ids, unknown, binary, dtype, path, lines)


def _arrays_to_data(raw, user_map, item_map, unknown, binary, dtype, path, lines):
    keep = np.ones(raw["user"].shape[0], dtype=bool)
    codes = {}
    for role, id_map in (("user", user_map), ("item", item_map)):
        if id_map is None:
            continue
        if not isinstance(id_map, IdMap):
            raise ValueError(f"{role}_ids must be an IdMap, got {type(id_map).__name__}")
        if unknown == "error":
            try:
                codes[role] = id_map.transform(raw[role])
            except ValueError as exc:
                raise ValueError(f"{os.fspath(path)}: {exc}") from None
        else:
            idx, found = id_map.transform(raw[role], unknown=unknown)
            full = np.zeros(found.size, dtype=np.int64)
            full[found] = idx
            codes[role] = full
            keep &= found
    if not keep.all():
        logger.info("%s: dropped %d lines with unknown ids", path, int((~keep).sum()))
    raw = {role: values[keep] for role, values in raw.items()}
    codes = {role: values[keep] for role, values in codes.items()}
    maps = {"user": user_map, "item": item_map}
    for role in ("user", "item"):
        if maps[role] is None:
            maps[role], codes[role] = IdMap.from_values(raw[role], name=role)
    shape = (len(maps["user"]), len(maps["item"]))
    matrix, ts = _build_csr(
        codes["user"],
        codes["item"],
        shape,
        raw.get("weight"),
        raw.get("timestamp"),
        dtype=dtype,
        binary=binary,
    )
    return InteractionData(matrix, maps["user"], maps["item"], ts)


def load_lastfm(path, *, binary: bool = True, dtype=np.float32) -> TrainTestData:
    """Load the LightGCN-PyTorch Last.fm split: ``data1.txt`` (train) and ``test1.txt`` (test).

    Both are tab-separated ``user item count`` files with ids from 1. The id maps are built
    over both files together, so the two matrices share rows and columns.

    Parameters
    ----------
    path : str or path-like
        The folder holding ``data1.txt`` and ``test1.txt``.
    binary : bool, default=True
        Binary interactions (as LightGCN uses them); False keeps the listening counts.
    dtype : numpy dtype, default=np.float32
        dtype of the matrix values.

    Returns
    -------
    data : TrainTestData
        ``train`` and ``test`` of shape (users seen in either file, items seen in either file)
        and the maps from rows / columns to the file's ids.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from linrec.datasets import load_lastfm
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "data1.txt").write_text("1\\t10\\t5\\n2\\t11\\t1\\n")
    >>> _ = (folder / "test1.txt").write_text("1\\t11\\t3\\n")
    >>> X_train, X_test = load_lastfm(folder)
    >>> X_train.toarray(), X_test.toarray()
    (array([[1., 0.],
           [0., 1.]], dtype=float32), array([[0., 1.],
           [0., 0.]], dtype=float32))
    """
    folder = Path(path)
    columns = ("user", "item", "weight")
    parts = [
        _read_delimited(folder / name, "\t", columns, False) for name in ("data1.txt", "test1.txt")
    ]
    user_map, _ = IdMap.from_values(np.concatenate([p[0]["user"] for p in parts]), name="user")
    item_map, _ = IdMap.from_values(np.concatenate([p[0]["item"] for p in parts]), name="item")
    train, test = (
        _arrays_to_data(raw, user_map, item_map, "error", binary, dtype, folder / name, lines)
        for (raw, lines), name in zip(parts, ("data1.txt", "test1.txt"))
    )
    return TrainTestData(train.matrix, test.matrix, user_map, item_map)


# ====================================================================== helpers
def drop_empty_users(X, *others, return_index: bool = False):
    """Remove the users (rows) of ``X`` without any interaction, and the same rows of others.

    Parameters
    ----------
    X : sparse matrix or array-like of shape (n_users, n_items)
        Interactions; a row is empty when it holds no non-zero value.
    *others : sparse matrices, arrays or IdMap with n_users rows
        Row-aligned companions (a test matrix, timestamps, the user IdMap); the same rows are
        removed from each.
    return_index : bool, default=False
        Also return the indices of the kept rows.

    Returns
    -------
    X_kept : scipy.sparse.csr_matrix
        ``X`` without empty rows (a copy).
    \\*others_kept
        Each companion without those rows (sparse inputs as CSR).
    kept : ndarray of int64
        Only with ``return_index=True``: the original indices of the kept rows.

    Examples
    --------
    >>> import numpy as np
    >>> from linrec.datasets import drop_empty_users
    >>> X = np.array([[1, 0], [0, 0], [0, 1]])
    >>> X_kept, names = drop_empty_users(X, np.array(["a", "b", "c"]))
    >>> X_kept.shape, names.tolist()
    ((2, 2), ['a', 'c'])
    """
    dtype = _float_dtype(X)
    csr = check_interactions(X, name="X", dtype=dtype, allow_empty=True)
    kept = np.flatnonzero(np.diff(csr.indptr) > 0)
    out = [csr[kept]]
    for position, other in enumerate(others):
        n_rows = len(other) if isinstance(other, IdMap) else np.shape(other)[0]
        if n_rows != csr.shape[0]:
            raise ValueError(f"argument {position + 2} has {n_rows} rows but X has {csr.shape[0]}")
        if isinstance(other, IdMap):
            out.append(IdMap(other.ids[kept], name=other.name))
        elif sp.issparse(other):
            out.append(sp.csr_matrix(other)[kept])
        else:
            out.append(np.asarray(other)[kept].copy())
    if return_index:
        out.append(kept)
    return tuple(out) if len(out) > 1 else out[0]


def _float_dtype(X):
    dtype = getattr(X, "dtype", None)
    return dtype if dtype in (np.float32, np.float64) else np.float32


# ====================================================================== synthetic data
def _check_number(value, name, low, high, *, low_open=False, high_open=False, integer=False):
    kind = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kind) or not np.isfinite(value):
        what = "an integer" if integer else "a finite number"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        raise ValueError(f"{name} must be in {left}{low}, {high}{right}, got {value!r}")
    return value


def make_implicit(
    n_users: int = 2000,
    n_items: int = 1000,
    n_factors: int = 16,
    density: float = 0.02,
    *,
    popularity_exponent: float = 1.0,
    activity_exponent: float = 1.8,
    preference_strength: float = 4.0,
    noise: float = 0.02,
    min_interactions: int = 5,
    random_state=0,
    return_factors: bool = False,
):
    """Generate implicit feedback with power-law popularity and planted low-rank tastes.

    Each user ``u`` gets a number of interactions ``n_u`` drawn from a power law and picks
    ``n_u`` distinct items by sampling without replacement from the mixture

    .. math:: P_u(i) = (1 - \\nu)\\, \\mathrm{softmax}_i(s_{ui}) + \\nu / n_{items},
       \\qquad s_{ui} = \\beta \\sqrt{d}\\, \\langle p_u, q_i \\rangle - \\gamma \\log r_i,

    where ``p_u`` and ``q_i`` are random unit vectors in ``d = n_factors`` dimensions (so the
    taste term has a standard deviation of about ``beta = preference_strength``), ``r_i`` is
    item ``i``'s popularity rank (a random permutation of the items), ``gamma =
    popularity_exponent`` gives Zipf-like popularity and ``nu = noise`` mixes in uniformly
    random choices that no model can explain.

    Parameters
    ----------
    n_users : int, default=2000
        Number of users (rows).
    n_items : int, default=1000
        Number of items (columns).
    n_factors : int, default=16
        Rank ``d`` of the planted tastes.
    density : float, default=0.02
        Target fraction of non-zero entries: users have ``density * n_items`` interactions on
        average (at least ``min_interactions``, at most half the catalogue).
    popularity_exponent : float, default=1.0
        Zipf exponent of item popularity (0: no popularity effect).
    activity_exponent : float, default=1.8
        Tail exponent ``a`` of user activity: ``P(n_u - min_interactions > x)`` decays like
        ``x ** -a`` (a Lomax law). Must be > 1 so that the mean exists; smaller is heavier.
    preference_strength : float, default=4.0
        Scale of the planted taste logits against the popularity logits. 0 gives data that
        popularity explains fully; larger values make users follow their tastes more closely.
    noise : float, default=0.02
        Weight of the uniform distribution in each draw (0 to 1).
    min_interactions : int, default=5
        Smallest number of interactions per user: no user is empty.
    random_state : int, numpy Generator or None, default=0
        Seed; the same seed gives the same matrix.
    return_factors : bool, default=False
        Also return the planted structure.

    Returns
    -------
    X : scipy.sparse.csr_matrix of shape (n_users, n_items), float32
        Binary interactions, canonical CSR.
    factors : dict
        Only with ``return_factors=True``: ``user_factors`` (n_users, n_factors) and
        ``item_factors`` (n_items, n_factors) unit vectors, ``item_log_popularity``
        (n_items,) the popularity logits ``-gamma log r_i``, ``user_activity`` (n_users,) the
        number of interactions of each user.

    Notes
    -----
    Sampling without replacement uses the Gumbel top-k trick: the ``n_u`` largest of
    ``log P_u(i) + G_ui`` with i.i.d. standard Gumbel ``G`` (exact successive sampling).
    Logits are built in blocks of users of about four million entries (16 MB), so memory
    stays bounded whatever the size; time is O(n_users * n_items * n_factors) for the logits
    plus O(n_users * n_items) for the selection.

    On the default data, a rank-16 truncated SVD of a random 80% of each user's items beats
    the most-popular ranking on Recall@20 of the other 20% by about 1.8x (tested >= 1.5x).

    Examples
    --------
    >>> from linrec.datasets import make_implicit
    >>> X = make_implicit(n_users=300, n_items=200, random_state=0)
    >>> X.shape, X.dtype, int(X.sum(axis=1).min()) >= 5
    ((300, 200), dtype('float32'), True)
    """
    _check_number(n_users, "n_users", 1, np.inf, integer=True)
    _check_number(n_items, "n_items", 2, np.inf, integer=True)
    _check_number(n_factors, "n_factors", 1, np.inf, integer=True)
    _check_number(density, "density", 0, 0.5, low_open=True)
    _check_number(popularity_exponent, "popularity_exponent", 0, np.inf)
    _check_number(activity_exponent, "activity_exponent", 1, np.inf, low_open=True)
    _check_number(preference_strength, "preference_strength", 0, np.inf)
    _check_number(noise, "noise", 0, 1)
    _check_number(min_interactions, "min_interactions", 1, n_items // 2, integer=True)
    rng = _generator(random_state)
    n_users, n_items, n_factors = int(n_users), int(n_items), int(n_factors)

    # User activity: min + Lomax(a) scaled so that the mean is density * n_items.
    max_activity = max(min_interactions, n_items // 2)
    spread = max(density * n_items - min_interactions, 0.0) * (activity_exponent - 1.0)
    activity = min_interactions + np.floor(
        spread * rng.pareto(activity_exponent, n_users) + rng.random(n_users)
    ).astype(np.int64)
    activity = np.minimum(activity, max_activity)

    log_popularity = -popularity_exponent * np.log(rng.permutation(n_items) + 1.0)
    user_factors = _unit_rows(rng.standard_normal((n_users, n_factors)))
    item_factors = _unit_rows(rng.standard_normal((n_items, n_factors)))
    scale = np.float32(preference_strength * np.sqrt(n_factors))
    item_t = np.ascontiguousarray(item_factors.T.astype(np.float32))
    log_pop32 = log_popularity.astype(np.float32)
    # Uniform float32 draws are multiples of 2**-24 in [0, 1 - 2**-24]: raising the zero
    # draw to 2**-25 keeps both logarithms of the Gumbel transform finite.
    smallest_uniform = np.float32(2.0**-25)

    with blas_threads(1):
        # The products are small (block x d x n_items): threaded BLAS only adds contention.
        chosen_rows = _sample_items(
            rng, user_factors, item_t, scale, log_pop32, noise, activity, smallest_uniform
        )
    counts = np.array([r.size for r in chosen_rows], dtype=np.int64)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    indices = np.concatenate(chosen_rows).astype(np.int32)
    X = sp.csr_matrix(
        (np.ones(indices.size, dtype=np.float32), indices, indptr.astype(np.int32)),
        shape=(n_users, n_items),
    )
    X.has_sorted_indices = True
    if not return_factors:
        return X
    factors = {
        "user_factors": user_factors,
        "item_factors": item_factors,
        "item_log_popularity": log_popularity,
        "user_activity": counts,
    }
    return X, factors


def _sample_items(rng, user_factors, item_t, scale, log_pop32, noise, activity, smallest):
    """Each user's items: Gumbel top-``activity[u]`` of the mixture's log-probabilities."""
    n_users, n_items = user_factors.shape[0], item_t.shape[1]
    chosen_rows = []
    step = max(1, _GENERATOR_BLOCK_ENTRIES // n_items)
    for start in range(0, n_users, step):
        stop = min(n_users, start + step)
        logits = user_factors[start:stop].astype(np.float32) @ item_t
        logits *= scale
        logits += log_pop32
        if noise > 0:
            # Log-probabilities of the mixture (1 - noise) * softmax(logits) + noise / n_items.
            logits -= logits.max(axis=1, keepdims=True)
            np.exp(logits, out=logits)
            logits *= np.float32(1.0 - noise) / logits.sum(axis=1, keepdims=True)
            logits += np.float32(noise / n_items)
            np.log(logits, out=logits)
        # Gumbel keys: logits - log(-log(U)).
        uniform = rng.random(logits.shape, dtype=np.float32)
        np.maximum(uniform, smallest, out=uniform)
        np.log(uniform, out=uniform)
        np.negative(uniform, out=uniform)
        np.log(uniform, out=uniform)
        logits -= uniform
        np.negative(logits, out=logits)
        for row, k in zip(logits, activity[start:stop]):
            chosen_rows.append(np.sort(np.argpartition(row, k - 1)[:k]))
    return chosen_rows


def _unit_rows(A: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(A, axis=1, keepdims=True)
    return A / np.maximum(norms, np.finfo(A.dtype).tiny)


def make_implicit_split(*, test_fraction: float = 0.2, random_state=0, **generator_params):
    """:func:`make_implicit` data split by :func:`random_holdout_split`: (X_train, X_test).

    Parameters
    ----------
    test_fraction : float, default=0.2
        Fraction of each user's interactions held out.
    random_state : int, numpy Generator or None, default=0
        Seeds both the generator and the split.
    **generator_params
        Any parameter of :func:`make_implicit` except ``return_factors``.

    Returns
    -------
    X_train, X_test : scipy.sparse.csr_matrix of shape (n_users, n_items)
        Disjoint; every user keeps at least one training interaction.

    Examples
    --------
    >>> from linrec.datasets import make_implicit_split
    >>> X_train, X_test = make_implicit_split(n_users=200, n_items=100)
    >>> X_train.shape == X_test.shape, X_train.multiply(X_test).nnz
    (True, 0)
    """
    if "return_factors" in generator_params:
        raise ValueError("make_implicit_split does not return factors; use make_implicit")
    rng = _generator(random_state)
    X = make_implicit(random_state=rng, **generator_params)
    return random_holdout_split(X, test_fraction=test_fraction, random_state=rng)


# ====================================================================== splits
def _canonical(X, name="X") -> sp.csr_matrix:
    return check_interactions(X, name=name, dtype=_float_dtype(X), allow_empty=False)


def _rows_of(indptr: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(indptr.size - 1, dtype=np.int64), np.diff(indptr))


def _rank_in_row(X: sp.csr_matrix, rows: np.ndarray, *keys) -> np.ndarray:
    """Position of each entry within its row when the row is sorted by ``keys`` (last primary)."""
    order = np.lexsort((*keys, rows))
    rank = np.empty(X.nnz, dtype=np.int64)
    rank[order] = np.arange(X.nnz, dtype=np.int64) - X.indptr[rows[order]]
    return rank


def _take(X: sp.csr_matrix, mask: np.ndarray, rows: np.ndarray) -> sp.csr_matrix:
    """The entries of canonical CSR ``X`` where ``mask`` holds, same shape (new arrays)."""
    indptr = np.zeros(X.shape[0] + 1, dtype=X.indptr.dtype)
    np.cumsum(np.bincount(rows[mask], minlength=X.shape[0]), out=indptr[1:])
    out = sp.csr_matrix((X.data[mask], X.indices[mask], indptr), shape=X.shape)
    out.has_sorted_indices = True
    return out


def _holdout(X, test_fraction, rng, min_train, min_test=0):
    rows = _rows_of(X.indptr)
    n = np.diff(X.indptr)
    n_test = np.floor(test_fraction * n + 0.5).astype(np.int64)
    n_test = np.maximum(n_test, min_test)
    n_test = np.clip(n_test, 0, np.maximum(n - min_train, 0))
    rank = _rank_in_row(X, rows, rng.random(X.nnz))
    test = rank < n_test[rows]
    return _take(X, ~test, rows), _take(X, test, rows)


def random_holdout_split(X, test_fraction: float = 0.2, random_state=0, min_train: int = 1):
    """Hold out a random fraction of each user's interactions (the LightGCN protocol).

    Parameters
    ----------
    X : sparse matrix or array-like of shape (n_users, n_items)
        Interactions (values are kept: weights stay weights).
    test_fraction : float, default=0.2
        Fraction of each user's interactions moved to the test matrix: ``round(f * n_u)``
        (halves rounded up), limited so that the user keeps ``min_train`` of them.
    random_state : int, numpy Generator or None, default=0
        Seed.
    min_train : int, default=1
        Interactions each user keeps for training (users with fewer keep all of them).

    Returns
    -------
    X_train, X_test : scipy.sparse.csr_matrix of shape (n_users, n_items)
        Disjoint; their sum is ``X``. Same value dtype as ``X`` (float32 for integer input).

    Notes
    -----
    O(nnz log nnz) time (one sort of random keys), O(nnz) memory. ``X`` is not modified.

    Examples
    --------
    >>> import numpy as np
    >>> from linrec.datasets import random_holdout_split
    >>> X = np.ones((2, 10))
    >>> X_train, X_test = random_holdout_split(X, test_fraction=0.3)
    >>> X_train.getnnz(axis=1).tolist(), X_test.getnnz(axis=1).tolist()
    ([7, 7], [3, 3])
    """
    _check_number(test_fraction, "test_fraction", 0, 1, low_open=True, high_open=True)
    _check_number(min_train, "min_train", 0, np.inf, integer=True)
    X = _canonical(X)
    return _holdout(X, test_fraction, _generator(random_state), int(min_train))


def leave_last_out_split(X, timestamps, n_last: int = 1, min_train: int = 1):
    """Hold out each user's ``n_last`` most recent interactions.

    Parameters
    ----------
    X : sparse matrix of shape (n_users, n_items)
        Interactions.
    timestamps : sparse matrix of shape (n_users, n_items), or 1-D array
        Time of each interaction: a sparse matrix with exactly the same stored entries as
        ``X`` (as :attr:`InteractionData.timestamps`), or an array aligned with the ``data``
        of ``X`` in canonical CSR form (rows in order, sorted column indices).
    n_last : int, default=1
        Interactions held out per user.
    min_train : int, default=1
        Interactions each user keeps for training (users with at most ``min_train`` keep all
        of them; a user with ``n`` interactions gives ``min(n_last, n - min_train)``).

    Returns
    -------
    X_train, X_test : scipy.sparse.csr_matrix of shape (n_users, n_items)
        Disjoint; their sum is ``X``.

    Notes
    -----
    Equal timestamps are ordered by item index (the higher index counts as later), so the
    split is deterministic. O(nnz log nnz) time.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from linrec.datasets import leave_last_out_split
    >>> X = sp.csr_matrix(np.array([[1, 1, 1], [1, 0, 1]]))
    >>> times = sp.csr_matrix(np.array([[5, 9, 1], [3, 0, 2]]))
    >>> X_train, X_test = leave_last_out_split(X, times)
    >>> X_test.toarray()
    array([[0., 1., 0.],
           [1., 0., 0.]], dtype=float32)
    """
    _check_number(n_last, "n_last", 1, np.inf, integer=True)
    _check_number(min_train, "min_train", 0, np.inf, integer=True)
    X = _canonical(X)
    times = _aligned_timestamps(X, timestamps)
    rows = _rows_of(X.indptr)
    n = np.diff(X.indptr)
    n_test = np.clip(n_last, 0, np.maximum(n - min_train, 0))
    rank = _rank_in_row(X, rows, X.indices, times)
    from_end = n[rows] - 1 - rank
    test = from_end < n_test[rows]
    return _take(X, ~test, rows), _take(X, test, rows)


def _aligned_timestamps(X: sp.csr_matrix, timestamps) -> np.ndarray:
    if sp.issparse(timestamps):
        ts = sp.csr_matrix(timestamps, copy=True)
        ts.sort_indices()
        if ts.shape != X.shape or not (
            np.array_equal(ts.indptr, X.indptr) and np.array_equal(ts.indices, X.indices)
        ):
            raise ValueError(
                f"timestamps (shape {ts.shape}, {ts.nnz} stored entries) must have the same "
                f"stored entries as X (shape {X.shape}, {X.nnz} non-zero entries)"
            )
        times = ts.data
    else:
        times = np.asarray(timestamps)
        if times.shape != (X.nnz,):
            raise ValueError(
                f"timestamps must be a sparse matrix like X or a 1-D array of X.nnz = {X.nnz} "
                f"values aligned with X.data, got shape {times.shape}"
            )
    if not (np.issubdtype(times.dtype, np.number) or np.issubdtype(times.dtype, np.datetime64)):
        raise ValueError(f"timestamps must be numbers or datetimes, got dtype {times.dtype}")
    if np.issubdtype(times.dtype, np.floating) and np.isnan(times).any():
        raise ValueError("timestamps contain NaN")
    return times


def heldout_users_split(
    X,
    n_heldout_users: int,
    fold_in_fraction: float = 0.8,
    random_state=0,
    *,
    min_interactions: int = 5,
    return_indices: bool = False,
):
    """Hold out whole users, then split each one's interactions into fold-in and test.

    The "strong generalisation" protocol (Liang et al. 2018; Steck 2019): models are trained
    on the other users only; at evaluation a held-out user's fold-in part is the history given
    to the model and its test part is what must be ranked.

    Parameters
    ----------
    X : sparse matrix or array-like of shape (n_users, n_items)
        Interactions.
    n_heldout_users : int
        Users held out, drawn at random among the users with at least ``min_interactions``.
    fold_in_fraction : float, default=0.8
        Fraction of each held-out user's interactions given as history (the rest is test).
    random_state : int, numpy Generator or None, default=0
        Seed of both draws.
    min_interactions : int, default=5
        Only users with at least this many interactions (>= 2) may be held out. Each held-out
        user gets at least one test and one fold-in interaction.
    return_indices : bool, default=False
        Also return the original row indices of the training and held-out users.

    Returns
    -------
    X_train : scipy.sparse.csr_matrix of shape (n_users - n_heldout_users, n_items)
        All interactions of the other users (rows in their original order; empty rows of
        ``X`` stay, use :func:`drop_empty_users` if the model needs them gone).
    X_fold_in, X_test : scipy.sparse.csr_matrix of shape (n_heldout_users, n_items)
        Disjoint; their sum is the held-out users' rows of ``X`` (in original order).
    train_users, heldout_users : ndarray of int64
        Only with ``return_indices=True``.

    Notes
    -----
    All items are kept as columns; items seen only by held-out users have no training data
    (Liang et al. drop them beforehand). O(nnz log nnz) time.

    References
    ----------
    Liang, Krishnan, Hoffman, Jebara. "Variational Autoencoders for Collaborative Filtering",
    WWW 2018. Steck. "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019.

    Examples
    --------
    >>> from linrec.datasets import make_implicit, heldout_users_split
    >>> X = make_implicit(n_users=100, n_items=80)
    >>> X_train, X_fold_in, X_test = heldout_users_split(X, n_heldout_users=20)
    >>> X_train.shape, X_fold_in.shape, X_test.shape
    ((80, 80), (20, 80), (20, 80))
    """
    _check_number(n_heldout_users, "n_heldout_users", 1, np.inf, integer=True)
    _check_number(fold_in_fraction, "fold_in_fraction", 0, 1, low_open=True, high_open=True)
    _check_number(min_interactions, "min_interactions", 2, np.inf, integer=True)
    X = _canonical(X)
    rng = _generator(random_state)
    eligible = np.flatnonzero(np.diff(X.indptr) >= min_interactions)
    if eligible.size < n_heldout_users:
        raise ValueError(
            f"n_heldout_users={n_heldout_users} but only {eligible.size} of {X.shape[0]} users "
            f"have at least min_interactions={min_interactions} interactions"
        )
    if n_heldout_users >= X.shape[0]:
        raise ValueError(
            f"n_heldout_users={n_heldout_users} leaves no training user out of {X.shape[0]}"
        )
    heldout = np.sort(rng.choice(eligible, size=int(n_heldout_users), replace=False))
    is_heldout = np.zeros(X.shape[0], dtype=bool)
    is_heldout[heldout] = True
    train_users = np.flatnonzero(~is_heldout)
    X_fold_in, X_test = _holdout(X[heldout], 1.0 - fold_in_fraction, rng, min_train=1, min_test=1)
    out = (X[train_users], X_fold_in, X_test)
    if return_indices:
        return (*out, train_users.astype(np.int64), heldout.astype(np.int64))
    return out

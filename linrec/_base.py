"""The estimator contract shared by every linrec model.

A linrec model is a scikit-learn estimator whose samples are users and whose features are
items: ``fit(X)`` takes a users x items interaction matrix. On top of that this module gives
every model, written once:

- ``predict(X)``: scores for the users whose histories are the rows of ``X``;
- ``recommend(X, k)``: exact top-k with seen items excluded (tie rule in ``_kernels.topk``);
- ``similar_items(items, k)``;
- ``score(X, y)``: NDCG@20 of the held-out items ``y`` given histories ``X`` (for GridSearchCV);
- ``save(path)`` / ``load(path)``: one ``.npz`` written without pickle.

A model implements ``_fit(X)`` (X is canonical CSR), ``_scores(X)`` (dense scores of a batch of
histories) and ``_similar_item_scores(item_ids)``.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from linrec._kernels.topk import topk_rows
from linrec._threading import numba_threads
from linrec._validation import check_interactions, check_item_ids
from linrec._version import __version__

__all__ = ["BaseRecommender", "load"]

SAVE_FORMAT_VERSION = 1
_FORMAT_KEY = "__linrec_format__"
_META_KEY = "__linrec_meta__"

# Bytes of dense scores computed at once by predict/recommend/evaluate.
DEFAULT_BATCH_MEMORY = 256 * 2**20


def batch_rows(n_items: int, batch_size: int | None, itemsize: int = 8) -> int:
    """Rows per batch so that a (rows x n_items) score block stays within the memory budget."""
    if batch_size is not None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return int(batch_size)
    return max(1, DEFAULT_BATCH_MEMORY // max(1, n_items * itemsize))


class BaseRecommender(BaseEstimator):
    """Base class of every linrec recommender (not used directly).

    Subclasses implement ``_fit``, ``_scores`` and ``_similar_item_scores``; everything else
    (validation, batching, top-k, scoring, persistence) lives here.
    """

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None):
        """Fit the model to a users x items interaction matrix.

        Parameters
        ----------
        X : sparse matrix or array-like of shape (n_users, n_items)
            Interaction strengths (binary or counts), >= 0.
        y : sparse matrix of shape (n_users, n_items), optional
            Held-out interactions of the same users. They are added to ``X`` for training:
            this lets :class:`sklearn.model_selection.GridSearchCV` pass a (history, held-out)
            pair, with ``score`` evaluating on the held-out part of the test users only.
            A 1-D ``y`` (the per-sample target some scikit-learn tools pass) is ignored, as
            in scikit-learn's unsupervised estimators.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        X = self._validate_fit_data(X, y)
        self._fit(X)
        return self

    def _validate_fit_data(self, X, y=None) -> sp.csr_matrix:
        dtype = self._fit_dtype()
        X = check_interactions(X, name="X", dtype=dtype, allow_empty_rows=False)
        if y is not None and _is_matrix(y):
            Y = check_interactions(y, name="y", dtype=dtype, n_items=X.shape[1], allow_empty=True)
            if Y.shape[0] != X.shape[0]:
                raise ValueError(
                    f"y has {Y.shape[0]} rows but X has {X.shape[0]}: y must hold held-out "
                    "interactions of the same users"
                )
            X = check_interactions(X + Y, name="X + y", dtype=dtype)
        self.n_users_ = int(X.shape[0])
        self.n_items_ = int(X.shape[1])
        self.n_features_in_ = self.n_items_
        return X

    def _fit_dtype(self):
        dtype = getattr(self, "dtype", "float32")
        if dtype in ("float32", np.float32):
            return np.float32
        if dtype in ("float64", np.float64):
            return np.float64
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")

    def _fit(self, X: sp.csr_matrix) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _scores(self, X: sp.csr_matrix) -> np.ndarray:  # pragma: no cover - abstract
        """Dense (n_rows, n_items) scores for a batch of canonical CSR histories."""
        raise NotImplementedError

    #: True for models that keep per-user state from fit (user factors): evaluate() can then
    #: score the fitted users directly instead of folding their histories in again.
    _has_user_state = False

    def _user_scores(self, X: sp.csr_matrix, user_ids: np.ndarray | None = None) -> np.ndarray:
        """Scores for a batch of histories; ``user_ids`` are fitted users' row indices.

        Models with per-user state override this to use their fitted state when ``user_ids``
        is given; with ``None`` (new users) they fold ``X`` in. The default ignores it.
        """
        return self._scores(X)

    def _similar_item_scores(self, item_ids: np.ndarray) -> np.ndarray:  # pragma: no cover
        """Dense (len(item_ids), n_items) similarity of the given items to every item."""
        raise NotImplementedError

    # ------------------------------------------------------------------ checks
    def _check_fitted(self) -> None:
        check_is_fitted(self, "n_items_")

    def _validate_rows(self, X, name: str = "X") -> sp.csr_matrix:
        self._check_fitted()
        return check_interactions(
            X,
            name=name,
            dtype=self._fit_dtype(),
            n_items=self.n_items_,
            estimator_name=type(self).__name__,
            allow_empty=True,
        )

    # ------------------------------------------------------------------ inference
    def predict(self, X, *, batch_size: int | None = None) -> np.ndarray:
        """Scores of every item for the users whose histories are the rows of ``X``.

        Parameters
        ----------
        X : sparse matrix or array-like of shape (n_users, n_items)
            Interaction histories (training rows, or new users to fold in).
        batch_size : int, optional
            Users scored at once; by default chosen to keep each score block near 256 MiB.

        Returns
        -------
        scores : ndarray of shape (n_users, n_items)
        """
        X = self._validate_rows(X)
        step = batch_rows(self.n_items_, batch_size)
        blocks = [self._scores(X[start : start + step]) for start in range(0, X.shape[0], step)]
        return np.vstack(blocks)

    def recommend(
        self,
        X,
        k: int = 20,
        *,
        exclude_seen: bool = True,
        items=None,
        batch_size: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items for the users whose histories are the rows of ``X``.

        Parameters
        ----------
        X : sparse matrix or array-like of shape (n_users, n_items)
            Interaction histories.
        k : int, default=20
            Number of items per user.
        exclude_seen : bool, default=True
            Never recommend an item present in the user's row of ``X``.
        items : array-like of int, optional
            Restrict recommendations to these item indices.
        batch_size : int, optional
            Users scored at once (bounded memory by default).

        Returns
        -------
        item_ids : ndarray of shape (n_users, k), int64
            Best first. Ties go to the lower item index. Where fewer than ``k`` items are
            eligible, the row is padded with -1.
        scores : ndarray of shape (n_users, k)
            The matching scores (-inf for padding).
        """
        X = self._validate_rows(X)
        k = _check_k(k)
        candidates, use_candidates = self._candidate_mask(items)
        step = batch_rows(self.n_items_, batch_size)
        ids = np.empty((X.shape[0], k), dtype=np.int64)
        vals = np.empty((X.shape[0], k), dtype=np.float64)
        for start in range(0, X.shape[0], step):
            batch = X[start : start + step]
            scores = self._scores(batch)
            indptr = batch.indptr if exclude_seen else np.zeros(batch.shape[0] + 1, np.int64)
            with numba_threads(getattr(self, "n_jobs", None)):
                top, top_val = topk_rows(
                    scores, k, indptr, batch.indices, candidates, use_candidates
                )
            ids[start : start + step] = top
            vals[start : start + step] = top_val
        return ids, vals

    def _candidate_mask(self, items):
        if items is None:
            return np.ones(1, dtype=np.bool_), False
        item_ids = check_item_ids(items, self.n_items_)
        mask = np.zeros(self.n_items_, dtype=np.bool_)
        mask[item_ids] = True
        return mask, True

    def similar_items(self, items, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` items most similar to each of ``items`` (the item itself excluded).

        Returns
        -------
        item_ids : ndarray of shape (len(items), k), int64
        scores : ndarray of shape (len(items), k)
        """
        self._check_fitted()
        item_ids = check_item_ids(items, self.n_items_)
        k = _check_k(k)
        sims = np.ascontiguousarray(self._similar_item_scores(item_ids))
        indptr = np.arange(len(item_ids) + 1, dtype=np.int64)
        with numba_threads(getattr(self, "n_jobs", None)):
            top, top_val = topk_rows(sims, k, indptr, item_ids, np.ones(1, np.bool_), False)
        return top, top_val.astype(np.float64)

    def score(self, X, y=None) -> float:
        """Mean NDCG@20 of the held-out items ``y`` given the histories ``X``.

        Users (rows) without held-out items are skipped; their training items (``X``) are
        excluded from the ranking. This is what :class:`sklearn.model_selection.GridSearchCV`
        maximises; use it with :class:`linrec.model_selection.UserKFold`.

        With ``y=None`` (or a 1-D ``y``, which scikit-learn tools may pass and which is
        ignored), the rows of ``X`` are both history and target and nothing is excluded: the
        NDCG@20 with which the model reconstructs ``X``.
        """
        from linrec.metrics import evaluate

        X = self._validate_rows(X)
        if y is not None and _is_matrix(y):
            # Always fold in: the rows of X are new users here, even when their number
            # happens to equal the number of fitted users.
            result = evaluate(self, X, y, k=(20,), metrics=("ndcg",), fold_in=True)
            return float(result.mean("ndcg", 20))

        def reconstruct(user_ids, _history):
            return self._scores(X[user_ids])

        nothing_seen = sp.csr_matrix(X.shape, dtype=X.dtype)
        result = evaluate(reconstruct, nothing_seen, X, k=(20,), metrics=("ndcg",))
        return float(result.mean("ndcg", 20))

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Write parameters and fitted state to one ``.npz`` file, without pickle.

        Parameters are stored as JSON, fitted arrays as arrays, with the linrec version and a
        format number that :meth:`load` checks.
        """
        self._check_fitted()
        arrays: dict[str, np.ndarray] = {}
        scalars: dict[str, object] = {}
        sparse_attrs: list[str] = []
        for key, value in vars(self).items():
            if not key.endswith("_") or key.startswith("_"):
                continue
            if isinstance(value, np.ndarray):
                if value.dtype == object:
                    raise TypeError(f"cannot save fitted attribute {key}: object array")
                arrays[key] = value
            elif sp.issparse(value):
                csr = sp.csr_matrix(value)
                arrays[f"{key}::data"] = csr.data
                arrays[f"{key}::indices"] = csr.indices
                arrays[f"{key}::indptr"] = csr.indptr
                arrays[f"{key}::shape"] = np.asarray(csr.shape, dtype=np.int64)
                sparse_attrs.append(key)
            else:
                try:
                    json.dumps(value)
                except TypeError as exc:
                    raise TypeError(
                        f"cannot save fitted attribute {key} of type {type(value).__name__}"
                    ) from exc
                scalars[key] = value
        # Array-valued parameters (a user-given class prior, say) go in as arrays, bit exact.
        params = self.get_params(deep=False)
        array_params = [name for name, value in params.items() if isinstance(value, np.ndarray)]
        for name in array_params:
            if params[name].dtype == object:
                raise TypeError(f"cannot save parameter {name}: object array")
            arrays[f"{name}::param"] = params.pop(name)
        meta = {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "linrec_version": __version__,
            "params": params,
            "array_params": array_params,
            "fitted_scalars": scalars,
            "sparse": sparse_attrs,
        }
        try:
            meta_json = json.dumps(meta)
        except TypeError as exc:
            raise TypeError(f"parameters of {type(self).__name__} are not JSON: {exc}") from exc
        path = Path(path)
        with open(path, "wb") as fh:
            np.savez(
                fh,
                **{_FORMAT_KEY: np.array(SAVE_FORMAT_VERSION), _META_KEY: np.array(meta_json)},
                **arrays,
            )

    @classmethod
    def load(cls, path):
        """Load a model written by :meth:`save`; see :func:`linrec.load`."""
        model = load(path)
        if not isinstance(model, cls):
            raise TypeError(f"{path} holds a {type(model).__name__}, not a {cls.__name__}")
        return model

    def _after_load(self) -> None:
        """Rebuild derived, unsaved state after :func:`load` (nothing by default)."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.input_tags.positive_only = True
        tags.requires_fit = True
        return tags


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def load(path):
    """Load any linrec model saved with ``save``.

    Raises a ValueError naming the problem for a file that is not a linrec model, is
    corrupted, or was written by a newer format than this linrec reads.
    """
    import importlib

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such model file: {os.fspath(path)}")
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
            files = dict(npz.items())
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path} is not a readable linrec model file ({exc})") from exc
    if _FORMAT_KEY not in files or _META_KEY not in files:
        raise ValueError(f"{path} is not a linrec model file (no linrec header)")
    fmt = int(files.pop(_FORMAT_KEY))
    if fmt > SAVE_FORMAT_VERSION:
        raise ValueError(
            f"{path} was written in model format {fmt} by a newer linrec; this linrec "
            f"({__version__}) reads format {SAVE_FORMAT_VERSION} and older: upgrade linrec"
        )
    try:
        meta = json.loads(str(files.pop(_META_KEY)))
        module_name, _, class_name = meta["class"].rpartition(".")
    except (ValueError, KeyError) as exc:
        raise ValueError(f"{path}: corrupted linrec header ({exc})") from exc
    if not module_name.startswith("linrec"):
        raise ValueError(f"{path} names class {meta['class']}, which is not a linrec model")
    cls = getattr(importlib.import_module(module_name), class_name)
    params = dict(meta["params"])
    for name in meta.get("array_params", []):
        params[name] = files.pop(f"{name}::param")
    model = cls(**params)
    for key, value in meta["fitted_scalars"].items():
        setattr(model, key, value)
    for key in meta["sparse"]:
        shape = tuple(int(s) for s in files.pop(f"{key}::shape"))
        setattr(
            model,
            key,
            sp.csr_matrix(
                (
                    files.pop(f"{key}::data"),
                    files.pop(f"{key}::indices"),
                    files.pop(f"{key}::indptr"),
                ),
                shape=shape,
            ),
        )
    for key, value in files.items():
        setattr(model, key, value)
    try:
        model._check_fitted()
    except NotFittedError as exc:
        raise ValueError(f"{path}: the file holds no fitted state") from exc
    model._after_load()
    return model


def _is_matrix(y) -> bool:
    """True for a 2-D ``y`` (held-out interactions); False for a 1-D per-sample target."""
    return sp.issparse(y) or np.asarray(y).ndim == 2

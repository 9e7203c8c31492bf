"""Exact top-k ranking metrics for implicit feedback, and full-catalogue evaluation.

Protocol of :func:`evaluate`: every evaluated user ranks the whole catalogue except the items of
her training row; users without any test item are skipped; each metric is kept per user, so
that means come with confidence intervals and two models can be compared user by user
(:func:`compare`).

Tie rule
--------
Rankings are exact and deterministic: a higher score ranks first; among equal scores the lower
item index ranks first; NaN scores are never ranked. A user with fewer than ``k`` eligible items
gets a shorter list (padded with item -1, which is never a hit). The same rule is used by
:meth:`linrec._base.BaseRecommender.recommend`.

Speed
-----
Scores are computed in user batches (the users x items matrix never exists) and ranked by an
exact, vectorised numba top-k. Factor models (:class:`FactorScores`, or models that declare
their factors) are multiplied and ranked tile by tile in cache, never writing a whole score
row; ``benchmarks/bench_evaluate.py`` times the full Gowalla split (29,858 x 40,981, d = 64)
and records the figure in ``benchmarks/RESULTS.md``.

Two recall definitions
----------------------
Both are offered under distinct names, because published numbers use both:

``"recall"``
    ``hits@k / |test items|``: the LightGCN / NGCF protocol [1]_ (Gowalla, Yelp2018, Amazon-Book
    tables). A user with more than ``k`` test items cannot reach 1.
``"truncated_recall"``
    ``hits@k / min(k, |test items|)``: the protocol of Liang et al. (2018) [2]_, Steck (2019) and
    Rendle et al. (2022) on ML-20M / MSD with held-out users. It reaches 1 for a perfect list.

Other metrics, with ``rel_p`` = 1 when the item at rank ``p`` (0-based) is a test item:

``"ndcg"``
    ``sum_p rel_p / log2(p + 2)`` divided by the same sum for an ideal list, which has
    ``min(k, |test|)`` hits at the top (binary gains).
``"precision"``
    ``hits@k / k`` (padding counts as a miss).
``"hit_rate"``
    1 when at least one test item is in the top ``k``, else 0.
``"map"``
    Average precision truncated at ``k``: ``sum_p rel_p * precision@(p + 1)`` divided by
    ``min(k, |test|)`` (the number of hits a perfect list would have), so that a perfect
    list scores 1. ``mean("map", k)`` is MAP@k.
``"coverage"``
    Fraction of the catalogue that appears in at least one evaluated user's top ``k``. It is a
    property of all lists together, not a per-user value: see
    :attr:`EvaluationResult.coverage`.

References
----------
.. [1] He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for
   Recommendation", SIGIR 2020 (Recall@20 / NDCG@20 protocol).
.. [2] Liang et al., "Variational Autoencoders for Collaborative Filtering", WWW 2018
   (truncated recall).

Examples
--------
>>> import numpy as np, scipy.sparse as sp
>>> X_train = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]))
>>> X_test = sp.csr_matrix(np.array([[0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1]]))
>>> item_scores = np.array([4.0, 3.0, 2.0, 1.0])
>>> def score_fn(user_ids, X_batch):
...     return np.tile(item_scores, (len(user_ids), 1))
>>> result = evaluate(score_fn, X_train, X_test, k=2, metrics=("recall", "precision"))
>>> result.users  # user 1 has no test item
array([0, 2])
>>> result.per_user["recall", 2]  # user 0 gets [1, 2]; user 2 gets [0, 1]
array([1., 0.])
>>> float(result.mean("precision", 2))
0.5
"""

from __future__ import annotations

import math
import numbers
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.stats

from linrec._base import BaseRecommender, batch_rows
from linrec._factor_topk import FACTOR_USERS, map_chunks, top_factor_chunk
from linrec._kernels.topk import hit_matrix, hit_matrix_serial, topk_rows_serial
from linrec._threading import blas_threads, numba_threads, resolve_n_jobs
from linrec._validation import check_interactions

__all__ = [
    "METRICS",
    "EvaluationResult",
    "FactorScores",
    "PairedComparison",
    "average_precision",
    "compare",
    "coverage",
    "evaluate",
    "hit_rate",
    "ndcg",
    "precision",
    "ranking_metrics",
    "recall",
    "truncated_recall",
]

#: Metric names accepted by :func:`evaluate` and :func:`ranking_metrics`.
METRICS = ("recall", "truncated_recall", "ndcg", "precision", "hit_rate", "map", "coverage")

# Bytes of a float32 score block when evaluate() picks the batch size (the scoring thread and
# each top-k worker hold one). Measured on Gowalla (d = 64, 2 cores): 51-row blocks cost 4.6
# CPU seconds, 128-row blocks 3.2 (BLAS repacks the item factors once per block); blocks much
# above 32 MiB make glibc return them to the kernel after each batch (page faults again).
_BLOCK_BYTES = 24 * 2**20


# ---------------------------------------------------------------------------- per-user metrics
def _check_hits(hits, n_test, k: int) -> tuple[np.ndarray, np.ndarray]:
    hits = np.asarray(hits)
    n_test = np.asarray(n_test)
    if hits.ndim != 2:
        raise ValueError(f"hits must be 2-D (users x ranks), got shape {hits.shape}")
    if hits.shape[1] < k:
        raise ValueError(f"hits has {hits.shape[1]} ranks, fewer than k={k}")
    if n_test.shape != (hits.shape[0],):
        raise ValueError(
            f"n_test must have one entry per user ({hits.shape[0]}), got shape {n_test.shape}"
        )
    if np.any(n_test < 1):
        raise ValueError("n_test must be >= 1 for every user (skip users without test items)")
    return hits[:, :k].astype(np.float64), n_test.astype(np.float64)


def recall(hits, n_test, k: int) -> np.ndarray:
    """Per-user recall@k, ``hits@k / |test|`` (LightGCN protocol).

    Parameters
    ----------
    hits : array-like of shape (n_users, n_ranks)
        1 where the item at that rank (best first) is a test item, else 0; ``n_ranks >= k``.
    n_test : array-like of shape (n_users,)
        Number of test items of each user (>= 1).
    k : int
        Cut-off.

    Returns
    -------
    values : ndarray of shape (n_users,), float64

    Examples
    --------
    >>> recall([[1, 0, 1]], [4], k=3)
    array([0.5])
    """
    h, n = _check_hits(hits, n_test, k)
    return h.sum(axis=1) / n


def truncated_recall(hits, n_test, k: int) -> np.ndarray:
    """Per-user truncated recall@k, ``hits@k / min(k, |test|)`` (Liang/Steck/Rendle).

    Parameters are those of :func:`recall`.

    Examples
    --------
    >>> truncated_recall([[1, 0, 1]], [4], k=3)
    array([0.66666667])
    """
    h, n = _check_hits(hits, n_test, k)
    return h.sum(axis=1) / np.minimum(n, k)


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(k, dtype=np.float64) + 2.0)


def ndcg(hits, n_test, k: int) -> np.ndarray:
    """Per-user NDCG@k with binary gains, IDCG over ``min(k, |test|)`` ideal hits.

    Parameters are those of :func:`recall`.

    Examples
    --------
    >>> ndcg([[0, 1]], [1], k=2)  # one hit at rank 1 (0-based): 1/log2(3)
    array([0.63092975])
    """
    h, n = _check_hits(hits, n_test, k)
    disc = _discounts(k)
    ideal = np.cumsum(disc)[np.minimum(n, k).astype(np.int64) - 1]
    return (h @ disc) / ideal


def precision(hits, n_test, k: int) -> np.ndarray:
    """Per-user precision@k, ``hits@k / k``.

    Parameters are those of :func:`recall` (``n_test`` is only checked).

    Examples
    --------
    >>> precision([[1, 0, 1, 0]], [2], k=4)
    array([0.5])
    """
    h, _ = _check_hits(hits, n_test, k)
    return h.sum(axis=1) / k


def hit_rate(hits, n_test, k: int) -> np.ndarray:
    """Per-user hit rate@k: 1.0 when any test item is in the top ``k``, else 0.0.

    Parameters are those of :func:`recall` (``n_test`` is only checked).

    Examples
    --------
    >>> hit_rate([[0, 0, 1], [0, 0, 0]], [1, 3], k=3)
    array([1., 0.])
    """
    h, _ = _check_hits(hits, n_test, k)
    return (h.sum(axis=1) > 0).astype(np.float64)


def average_precision(hits, n_test, k: int) -> np.ndarray:
    """Per-user average precision truncated at ``k`` (its mean over users is MAP@k).

    ``AP@k = sum_p rel_p * precision@(p + 1) / min(k, |test|)``: the normaliser is the number
    of hits a perfect top-``k`` list would have, so a perfect list scores 1.

    Parameters are those of :func:`recall`.

    Examples
    --------
    >>> average_precision([[1, 0, 1]], [2], k=3)  # (1/1 + 2/3) / 2
    array([0.83333333])
    """
    h, n = _check_hits(hits, n_test, k)
    precision_at_rank = np.cumsum(h, axis=1) / np.arange(1, k + 1, dtype=np.float64)
    return (h * precision_at_rank).sum(axis=1) / np.minimum(n, k)


def coverage(top_items, n_items: int, k: int) -> float:
    """Fraction of the catalogue appearing in at least one top-``k`` list.

    Parameters
    ----------
    top_items : array-like of int of shape (n_users, n_ranks)
        Item indices, best first; -1 marks padding and is ignored. ``n_ranks >= k``.
    n_items : int
        Catalogue size.
    k : int
        Cut-off.

    Returns
    -------
    coverage : float

    Examples
    --------
    >>> coverage([[0, 1], [0, 2]], n_items=4, k=2)
    0.75
    """
    top = _check_top_items(top_items, n_items, k)[:, :k]
    seen = np.zeros(n_items, dtype=bool)
    seen[top[top >= 0]] = True
    return float(seen.mean())


_PER_USER = {
    "recall": recall,
    "truncated_recall": truncated_recall,
    "ndcg": ndcg,
    "precision": precision,
    "hit_rate": hit_rate,
    "map": average_precision,
}


# ---------------------------------------------------------------------------- results
class EvaluationResult:
    """Per-user ranking metrics of one evaluation, with means and confidence intervals.

    Returned by :func:`evaluate` and :func:`ranking_metrics`; not built directly.

    Attributes
    ----------
    users : ndarray of shape (n_evaluated,), int64
        Row indices of the evaluated users (those with at least one test item), sorted.
    per_user : dict
        ``per_user[(metric, k)]`` is a float64 array aligned with :attr:`users`.
    coverage : dict
        ``coverage[k]``: catalogue coverage of the top-``k`` lists (when "coverage" was asked).
    ks : tuple of int
        The cut-offs.
    metrics : tuple of str
        The metric names, in the order asked.
    n_items : int
        Catalogue size.
    fold_in : bool or None
        For a model: True when the users' histories were folded in, False when the model's
        fitted user state was used; None for a score function or :func:`ranking_metrics`.
    """

    def __init__(self, users, per_user, coverage, ks, metrics, n_items, fold_in=None):
        self.users = users
        self.per_user = per_user
        self.coverage = coverage
        self.ks = ks
        self.metrics = metrics
        self.n_items = n_items
        self.fold_in = fold_in

    @property
    def n_users(self) -> int:
        """Number of evaluated users."""
        return int(self.users.shape[0])

    def _values(self, metric: str, k: int) -> np.ndarray:
        if (metric, k) not in self.per_user:
            if metric == "coverage":
                raise ValueError("coverage is one value for all users: it has no per-user values")
            raise KeyError(f"no values for ({metric!r}, {k}); available: {sorted(self.per_user)}")
        return self.per_user[(metric, k)]

    def mean(self, metric: str, k: int) -> float:
        """Mean of ``metric@k`` over the evaluated users (for "coverage": the coverage)."""
        if metric == "coverage":
            if k not in self.coverage:
                raise KeyError(f"no coverage at k={k}; available: {sorted(self.coverage)}")
            return self.coverage[k]
        return float(np.mean(self._values(metric, k)))

    def ci(self, metric: str, k: int, level: float = 0.95) -> tuple[float, float]:
        """Confidence interval of the mean of ``metric@k`` over users.

        Student-t interval ``mean +- t_{n-1} * sd / sqrt(n)`` (close to the normal interval
        for the thousands of users of a real evaluation). Undefined (NaN) for one user.

        Parameters
        ----------
        metric : str
        k : int
        level : float, default=0.95
            Coverage probability of the interval, in (0, 1).

        Returns
        -------
        low, high : float
        """
        return _mean_ci(self._values(metric, k), level)

    def summary(self) -> dict[str, float]:
        """Means as ``{"metric@k": value}``, every metric at every k, in the order asked."""
        return {f"{m}@{k}": self.mean(m, k) for m in self.metrics for k in self.ks}

    def to_markdown(self, level: float = 0.95) -> str:
        """A markdown table: metric, mean and confidence interval, one row per metric@k."""
        pct = f"{100 * level:g}% CI"
        lines = [f"| metric | mean | {pct} |", "|---|---|---|"]
        for m in self.metrics:
            for k in self.ks:
                if m == "coverage":
                    lines.append(f"| {m}@{k} | {self.mean(m, k):.4f} | - |")
                else:
                    low, high = self.ci(m, k, level)
                    lines.append(f"| {m}@{k} | {self.mean(m, k):.4f} | [{low:.4f}, {high:.4f}] |")
        lines.append(f"\n{self.n_users} users evaluated, {self.n_items} items.")
        return "\n".join(lines)

    def __repr__(self) -> str:
        means = ", ".join(f"{key}={value:.4f}" for key, value in self.summary().items())
        return f"EvaluationResult(n_users={self.n_users}, {means})"


def _mean_ci(values: np.ndarray, level: float) -> tuple[float, float]:
    if not (isinstance(level, numbers.Real) and 0 < level < 1):
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    n = values.shape[0]
    mean = float(np.mean(values)) if n else math.nan
    if n < 2:
        return math.nan, math.nan
    sem = float(np.std(values, ddof=1)) / math.sqrt(n)
    half = float(scipy.stats.t.ppf(0.5 + level / 2, df=n - 1)) * sem
    return mean - half, mean + half


@dataclass(frozen=True)
class PairedComparison:
    """Paired comparison of two evaluations on their common users (see :func:`compare`).

    Attributes
    ----------
    metric : str
    k : int
    n_users : int
        Users evaluated in both results.
    mean_a, mean_b : float
        Means of each result over the common users.
    mean_difference : float
        ``mean_a - mean_b``.
    ci_low, ci_high : float
        Student-t confidence interval of the mean difference.
    level : float
        Level of that interval.
    t_pvalue : float
        Two-sided paired t-test p-value.
    wilcoxon_pvalue : float
        Two-sided Wilcoxon signed-rank p-value (zero differences dropped).
    """

    metric: str
    k: int
    n_users: int
    mean_a: float
    mean_b: float
    mean_difference: float
    ci_low: float
    ci_high: float
    level: float
    t_pvalue: float
    wilcoxon_pvalue: float

    def __repr__(self) -> str:
        return (
            f"PairedComparison({self.metric}@{self.k} on {self.n_users} common users: "
            f"a={self.mean_a:.4f}, b={self.mean_b:.4f}, a-b={self.mean_difference:+.4f} "
            f"[{100 * self.level:g}% CI {self.ci_low:+.4f}, {self.ci_high:+.4f}], "
            f"paired t p={self.t_pvalue:.3g}, Wilcoxon p={self.wilcoxon_pvalue:.3g})"
        )


def compare(
    result_a: EvaluationResult,
    result_b: EvaluationResult,
    metric: str = "ndcg",
    k: int = 20,
    *,
    level: float = 0.95,
) -> PairedComparison:
    """Paired comparison of two models' per-user ``metric@k`` on the users both evaluated.

    Parameters
    ----------
    result_a, result_b : EvaluationResult
        Evaluations of two models (normally on the same split).
    metric : str, default="ndcg"
    k : int, default=20
    level : float, default=0.95
        Level of the confidence interval of the mean difference.

    Returns
    -------
    PairedComparison
        Mean difference ``a - b`` with its Student-t interval, the paired t-test p-value
        (:func:`scipy.stats.ttest_rel`) and the Wilcoxon signed-rank p-value
        (:func:`scipy.stats.wilcoxon`). Degenerate cases are decided without scipy: when
        all differences are zero both p-values are 1; when they are all equal and non-zero
        the t-test p-value is 0.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> X_test = sp.csr_matrix(np.eye(4))
    >>> a = ranking_metrics([[0], [1], [2], [0]], X_test, k=1, metrics=("hit_rate",))
    >>> b = ranking_metrics([[0], [0], [0], [0]], X_test, k=1, metrics=("hit_rate",))
    >>> compare(a, b, "hit_rate", 1).mean_difference
    0.5
    """
    if metric == "coverage":
        raise ValueError("coverage has no per-user values to compare")
    values_a = result_a._values(metric, k)
    values_b = result_b._values(metric, k)
    common, pos_a, pos_b = np.intersect1d(
        result_a.users, result_b.users, assume_unique=True, return_indices=True
    )
    if common.size == 0:
        raise ValueError("the two results have no evaluated user in common")
    a = values_a[pos_a]
    b = values_b[pos_b]
    diff = a - b
    low, high = _mean_ci(diff, level)
    if common.size < 2:
        t_p = w_p = math.nan
    elif np.all(diff == 0):
        t_p = w_p = 1.0
    else:
        if np.all(diff == diff[0]):
            t_p = 0.0
        else:
            t_p = float(scipy.stats.ttest_rel(a, b).pvalue)
        w_p = float(scipy.stats.wilcoxon(a, b).pvalue)
    return PairedComparison(
        metric=metric,
        k=int(k),
        n_users=int(common.size),
        mean_a=float(a.mean()),
        mean_b=float(b.mean()),
        mean_difference=float(diff.mean()),
        ci_low=low,
        ci_high=high,
        level=float(level),
        t_pvalue=t_p,
        wilcoxon_pvalue=w_p,
    )


# ---------------------------------------------------------------------------- checks
def _check_ks(k) -> tuple[int, ...]:
    ks = (k,) if isinstance(k, (numbers.Integral, np.integer)) else k
    try:
        ks = tuple(ks)
    except TypeError:
        raise ValueError(f"k must be a positive integer or a sequence of them, got {k!r}") from None
    if not ks:
        raise ValueError("k is empty: give at least one cut-off")
    for value in ks:
        if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
            raise ValueError(f"k must hold positive integers, got {value!r}")
        if value < 1:
            raise ValueError(f"k must hold positive integers, got {value!r}")
    return tuple(sorted({int(v) for v in ks}))


def _check_metrics(metrics) -> tuple[str, ...]:
    names = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    if not names:
        raise ValueError(f"metrics is empty: choose from {METRICS}")
    for name in names:
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r}; choose from {METRICS}")
    return tuple(dict.fromkeys(names))


def _check_top_items(top_items, n_items: int, k: int) -> np.ndarray:
    top = np.asarray(top_items)
    if top.ndim != 2:
        raise ValueError(f"top_items must be 2-D (users x ranks), got shape {top.shape}")
    if top.size and not np.issubdtype(top.dtype, np.integer):
        raise ValueError(f"top_items must hold integer item indices, got dtype {top.dtype}")
    if top.shape[1] < k:
        raise ValueError(f"top_items has {top.shape[1]} columns, fewer than k={k}")
    top = top.astype(np.int64, copy=False)
    if top.size and (top.min() < -1 or top.max() >= n_items):
        raise ValueError(
            f"top_items holds ids outside -1..{n_items - 1} (catalogue of {n_items} items; "
            "-1 marks padding)"
        )
    return top


def _metric_values(hits, n_test, ks, metrics, users, n_items, coverage_values, fold_in):
    per_user = {}
    for m in metrics:
        if m == "coverage":
            continue
        for k in ks:
            per_user[(m, k)] = _PER_USER[m](hits, n_test, k)
    return EvaluationResult(
        users=users,
        per_user=per_user,
        coverage=coverage_values,
        ks=ks,
        metrics=metrics,
        n_items=n_items,
        fold_in=fold_in,
    )


# ---------------------------------------------------------------------------- plain numpy entry
def ranking_metrics(
    top_items, X_test, k=(20,), metrics=("recall", "ndcg"), *, n_jobs: int | None = None
) -> EvaluationResult:
    """Metrics of given top-k lists against held-out items, without a model.

    Parameters
    ----------
    top_items : array-like of int of shape (n_users, n_ranks)
        Ranked item indices per user (row ``u`` of ``X_test``), best first, -1 for padding;
        ``n_ranks >= max(k)``. The lists are taken as given (no exclusion is applied).
    X_test : sparse matrix or array-like of shape (n_users, n_items)
        Held-out interactions; users (rows) without any are skipped.
    k : int or sequence of int, default=(20,)
        Cut-offs.
    metrics : str or sequence of str, default=("recall", "ndcg")
        Names from :data:`METRICS`.
    n_jobs : int, optional
        Threads of the hit kernel (None: all).

    Returns
    -------
    EvaluationResult

    Examples
    --------
    >>> import numpy as np
    >>> X_test = np.array([[0, 1, 1], [1, 0, 0]])
    >>> result = ranking_metrics([[1, 0], [2, 0]], X_test, k=2, metrics=("recall", "ndcg"))
    >>> result.per_user["recall", 2]
    array([0.5, 1. ])
    >>> result.per_user["ndcg", 2]  # 1 / (1 + 1/log2(3)) and (1/log2(3)) / 1
    array([0.61314719, 0.63092975])
    """
    ks = _check_ks(k)
    metrics = _check_metrics(metrics)
    X_test = check_interactions(X_test, name="X_test", dtype=np.float64)
    top = _check_top_items(top_items, X_test.shape[1], ks[-1])
    if top.shape[0] != X_test.shape[0]:
        raise ValueError(
            f"top_items has {top.shape[0]} rows but X_test has {X_test.shape[0]}: one ranked "
            "list per user (row of X_test) is needed"
        )
    n_test_all = np.diff(X_test.indptr)
    users = np.flatnonzero(n_test_all).astype(np.int64)
    top = np.ascontiguousarray(top[users, : ks[-1]])
    sub = X_test[users]
    with numba_threads(n_jobs):
        hits = hit_matrix(top, sub.indptr.astype(np.int64), sub.indices)
    cov = {kk: coverage(top, X_test.shape[1], kk) for kk in ks} if "coverage" in metrics else {}
    return _metric_values(hits, n_test_all[users], ks, metrics, users, X_test.shape[1], cov, None)


# ---------------------------------------------------------------------------- evaluate
class FactorScores:
    """Score function of a factor model, ``scores = user_factors[users] @ item_factors.T``.

    A plain callable usable as ``score_fn`` anywhere; :func:`evaluate` recognises it and
    then never forms a block of whole score rows: each worker thread multiplies a chunk of
    users by a tile of items into a cache-sized buffer and feeds it straight to the top-k
    heaps. The scores are the same products as the callable's (one BLAS dot product of
    length ``d`` per user-item pair), so the rankings are identical; the benchmark
    ``benchmarks/bench_evaluate.py`` checks this against the full products on Gowalla.

    Parameters
    ----------
    user_factors : array-like of shape (n_users, d)
        One row per row of the ``X_train`` given to :func:`evaluate`.
    item_factors : array-like of shape (n_items, d)

    Examples
    --------
    >>> import numpy as np
    >>> score_fn = FactorScores(np.eye(2), np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]))
    >>> score_fn(np.array([1]))
    array([[0., 2., 1.]])
    """

    def __init__(self, user_factors, item_factors):
        user_factors = np.asarray(user_factors)
        item_factors = np.asarray(item_factors)
        if user_factors.ndim != 2 or item_factors.ndim != 2:
            raise ValueError(
                f"factors must be 2-D, got user_factors {user_factors.shape} and item_factors "
                f"{item_factors.shape}"
            )
        if user_factors.shape[1] != item_factors.shape[1]:
            raise ValueError(
                f"user_factors have {user_factors.shape[1]} columns but item_factors have "
                f"{item_factors.shape[1]}: both need the same number of factors"
            )
        dtype = np.result_type(user_factors.dtype, item_factors.dtype, np.float32)
        if dtype not in (np.float32, np.float64):
            dtype = np.float64
        self.user_factors = np.ascontiguousarray(user_factors, dtype=dtype)
        self.item_factors = np.ascontiguousarray(item_factors, dtype=dtype)

    def __call__(self, user_ids, X_batch=None) -> np.ndarray:
        return self.user_factors[user_ids] @ self.item_factors.T


def _rank_factor_chunk(U_chunk, V, k, train_indptr, train_indices, test_indptr, test_indices):
    # One chunk of users, one thread: item tiles in increasing order into running heaps.
    top, _ = top_factor_chunk(U_chunk, V, k, train_indptr, train_indices)
    return top, hit_matrix_serial(top, test_indptr, test_indices)


def _scorer(model_or_score_fn, X_train, fold_in):
    """Resolve what computes scores: ``(score(user_ids, X_batch), fold_in_used, factors)``.

    ``factors(X_rows, user_ids) -> (user_factors, item_factors)`` is given for models that
    define ``_evaluation_factors`` and for :class:`FactorScores`; else it is None.
    """
    if isinstance(model_or_score_fn, BaseRecommender):
        model = model_or_score_fn
        model._check_fitted()
        if fold_in not in ("auto", True, False):
            raise ValueError(f"fold_in must be 'auto', True or False, got {fold_in!r}")
        rows_match = X_train.shape[0] == model.n_users_
        if fold_in is False and not rows_match:
            raise ValueError(
                f"fold_in=False scores the model's fitted users, but X_train has "
                f"{X_train.shape[0]} rows and the model was fitted on {model.n_users_} users"
            )
        if fold_in == "auto":
            use_state = bool(model._has_user_state) and rows_match
        else:
            use_state = fold_in is False

        def score(user_ids, X_batch):
            return model._user_scores(X_batch, user_ids if use_state else None)

        factors = None
        if hasattr(model, "_evaluation_factors"):

            def factors(X_rows, user_ids):
                return model._evaluation_factors(X_rows, user_ids if use_state else None)

        return score, not use_state, factors
    if isinstance(model_or_score_fn, type) or not callable(model_or_score_fn):
        raise TypeError(
            "model_or_score_fn must be a fitted linrec model or a callable "
            f"score_fn(user_ids, X_train_batch), got {type(model_or_score_fn).__name__}"
        )
    if fold_in != "auto":
        raise ValueError("fold_in applies to linrec models only, not to a score function")
    if isinstance(model_or_score_fn, FactorScores):
        _check_factor_shapes(model_or_score_fn, X_train.shape)

        def factors(X_rows, user_ids):
            return model_or_score_fn.user_factors[user_ids], model_or_score_fn.item_factors

        return model_or_score_fn, None, factors
    return model_or_score_fn, None, None


def _check_scores(scores, n_rows: int, n_items: int) -> np.ndarray:
    if sp.issparse(scores):
        raise TypeError("the score function returned a sparse matrix; dense scores are needed")
    scores = np.asarray(scores)
    if scores.shape != (n_rows, n_items):
        raise ValueError(
            f"the scores of a batch of {n_rows} users have shape {scores.shape}; expected "
            f"({n_rows}, {n_items}) (users x items)"
        )
    if scores.dtype not in (np.float32, np.float64):
        scores = scores.astype(np.float64)
    return np.ascontiguousarray(scores)


def _check_factor_shapes(score: FactorScores, shape) -> None:
    n_users, n_items = shape
    if score.user_factors.shape[0] != n_users or score.item_factors.shape[0] != n_items:
        raise ValueError(
            f"FactorScores has {score.user_factors.shape[0]} user and "
            f"{score.item_factors.shape[0]} item factor rows, but X_train is {n_users} users "
            f"x {n_items} items"
        )


def _check_factors(factors, n_rows: int, n_items: int):
    user_factors, item_factors = (np.asarray(f) for f in factors)
    if user_factors.shape[0] != n_rows or item_factors.shape[0] != n_items:
        raise ValueError(
            f"_evaluation_factors returned {user_factors.shape} user and {item_factors.shape} "
            f"item factors for {n_rows} users and {n_items} items"
        )
    if user_factors.dtype != item_factors.dtype or user_factors.dtype not in (
        np.float32,
        np.float64,
    ):
        raise ValueError("user and item factors must share one float32 or float64 dtype")
    return np.ascontiguousarray(user_factors), np.ascontiguousarray(item_factors)


def _rank_block(scores, k, excl_indptr, excl_indices, test_indptr, test_indices):
    # One batch, one thread: serial kernels (the GIL is released inside them).
    top, _ = topk_rows_serial(
        scores, k, excl_indptr, excl_indices, np.ones(1, dtype=np.bool_), False
    )
    return top, hit_matrix_serial(top, test_indptr, test_indices)


def evaluate(
    model_or_score_fn: BaseRecommender | Callable,
    X_train,
    X_test,
    k=(20,),
    metrics=("recall", "ndcg"),
    *,
    fold_in="auto",
    batch_size: int | None = None,
    n_jobs: int | None = None,
) -> EvaluationResult:
    """Full-catalogue top-k evaluation, training items excluded, per-user values kept.

    Every user with at least one test item ranks all items except those of her row of
    ``X_train`` (tie rule in the module docstring); her test items are the hits. Users
    without test items are skipped and never scored.

    Parameters
    ----------
    model_or_score_fn : fitted linrec model or callable
        A fitted :class:`~linrec._base.BaseRecommender`, or a function
        ``score_fn(user_ids, X_train_batch) -> ndarray (len(user_ids), n_items)`` where
        ``user_ids`` are row indices of ``X_train`` and ``X_train_batch`` is the CSR matrix
        of those rows. It is called from one thread at a time, with consecutive batches.
        A :class:`FactorScores` is ranked tile by tile without whole score rows (faster).
    X_train : sparse matrix or array-like of shape (n_users, n_items)
        Histories: the items excluded from each ranking, and what a model folds in.
    X_test : sparse matrix or array-like of shape (n_users, n_items)
        Held-out items of the same users (same shape as ``X_train``). A test item that also
        appears in the user's training row is excluded from the ranking and never a hit.
    k : int or sequence of int, default=(20,)
        Cut-offs; one ranking of length ``max(k)`` serves all of them.
    metrics : str or sequence of str, default=("recall", "ndcg")
        Names from :data:`METRICS` (see the module docstring for the definitions).
    fold_in : {"auto", True, False}, default="auto"
        For a model with per-user state (user factors): False scores the fitted users (rows of
        ``X_train`` must be the training users); True folds the rows of ``X_train`` in as new
        users; "auto" uses the fitted users when the model has them and ``X_train`` has as
        many rows as the model was fitted on. Models without user state always score from
        the histories. Must be "auto" for a score function.
    batch_size : int, optional
        Users scored at once. By default a block of float32 scores holds about 24 MiB (and
        never more than the 256 MiB budget of :func:`linrec._base.batch_rows`); for a factor
        model, 256 users per chunk.
    n_jobs : int, optional
        Threads (None: all cores). With two or more, scoring (BLAS, in this thread) and
        top-k selection (numba, in worker threads) run concurrently on different batches.

    Returns
    -------
    EvaluationResult

    Notes
    -----
    Memory: at most ``1 + workers`` blocks of ``batch_size x n_items`` scores exist at once
    (the users x items matrix never does), plus ``n_evaluated x max(k)`` ranks. Time:
    the scoring (for a factor model ``n_users * n_items * d`` multiply-adds) plus one
    vectorised pass over every score for the exact top-k.

    Factor models: for a :class:`FactorScores`, or a model defining
    ``_evaluation_factors(X_rows, user_ids) -> (user_factors, item_factors)`` (the factors
    whose product ``_user_scores`` returns, for the given rows; ``user_ids`` None means fold
    the rows in), each thread multiplies a chunk of 256 users by tiles of 1024 items into a
    buffer that stays in its L2 cache and feeds the tile to the top-k heaps at once: no score
    row is ever written in full, and BLAS runs one thread per worker.

    Why threads rather than a numba parallel loop: on a small machine, alternating a BLAS
    thread pool (scoring) with numba's OpenMP pool (top-k) in one process makes the idle
    pool's threads spin on the cores the other needs (measured on Gowalla with d = 64: 8 CPU
    seconds instead of 3.4). Here scoring gets ``n_jobs // 2`` BLAS threads and the top-k
    workers the other threads, each running the serial kernel with the GIL released.
    Results do not depend on ``n_jobs`` or ``batch_size``: each user's ranking is computed
    independently and written to its own row.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> rng = np.random.default_rng(0)
    >>> X_train = sp.random(50, 30, density=0.2, format="csr", random_state=rng)
    >>> X_test = sp.random(50, 30, density=0.05, format="csr", random_state=rng)
    >>> U, V = rng.standard_normal((50, 8)), rng.standard_normal((30, 8))
    >>> result = evaluate(lambda users, X: U[users] @ V.T, X_train, X_test, k=(5, 10))
    >>> sorted(result.summary())
    ['ndcg@10', 'ndcg@5', 'recall@10', 'recall@5']
    >>> result.per_user["ndcg", 10].shape == result.users.shape
    True
    """
    ks = _check_ks(k)
    metrics = _check_metrics(metrics)
    is_model = isinstance(model_or_score_fn, BaseRecommender)
    if is_model:
        model_or_score_fn._check_fitted()
        dtype = model_or_score_fn._fit_dtype()
        n_items = model_or_score_fn.n_items_
        who = type(model_or_score_fn).__name__
    else:
        dtype, n_items, who = np.float32, None, None
    X_train = check_interactions(
        X_train,
        name="X_train",
        dtype=dtype,
        n_items=n_items,
        estimator_name=who,
        allow_empty=True,
    )
    X_test = check_interactions(X_test, name="X_test", dtype=np.float32)
    if X_test.shape != X_train.shape:
        raise ValueError(
            f"X_test has shape {X_test.shape} but X_train has {X_train.shape}: both must be "
            "users x items matrices of the same users and catalogue"
        )
    score, fold_in_used, factors = _scorer(model_or_score_fn, X_train, fold_in)
    n_threads = resolve_n_jobs(n_jobs)
    n_items = X_train.shape[1]
    k_max = ks[-1]

    n_test_all = np.diff(X_test.indptr)
    users = np.flatnonzero(n_test_all).astype(np.int64)
    n_eval = users.shape[0]
    n_workers = max(1, n_threads - n_threads // 2) if n_threads > 1 else 0
    if batch_size is None:
        step = min(batch_rows(n_items, None), max(1, _BLOCK_BYTES // (4 * n_items)))
    else:
        step = batch_rows(n_items, batch_size)

    top = np.empty((n_eval, k_max), dtype=np.int64)
    hits = np.empty((n_eval, k_max), dtype=np.uint8)
    want_coverage = "coverage" in metrics
    seen = np.zeros((len(ks), n_items), dtype=bool) if want_coverage else None

    def batches() -> Iterable[tuple[int, int, tuple]]:
        for start in range(0, n_eval, step):
            stop = min(start + step, n_eval)
            ids = users[start:stop]
            train_rows = X_train[ids]
            test_rows = X_test[ids]
            scores = _check_scores(score(ids, train_rows), ids.shape[0], n_items)
            yield (
                start,
                stop,
                (
                    scores,
                    k_max,
                    train_rows.indptr.astype(np.int64),
                    train_rows.indices,
                    test_rows.indptr.astype(np.int64),
                    test_rows.indices,
                ),
            )

    def store(start, stop, block_top, block_hits):
        top[start:stop] = block_top
        hits[start:stop] = block_hits
        if want_coverage:
            for i, kk in enumerate(ks):
                cut = block_top[:, :kk]
                seen[i, cut[cut >= 0]] = True

    if factors is not None:
        user_factors, item_factors = _check_factors(factors(X_train[users], users), n_eval, n_items)
        step = FACTOR_USERS if batch_size is None else batch_rows(n_items, batch_size)

        def chunk_args(start):
            ids = users[start : start + step]
            train_rows, test_rows = X_train[ids], X_test[ids]
            return (
                user_factors[start : start + step],
                item_factors,
                k_max,
                train_rows.indptr.astype(np.int64),
                train_rows.indices,
                test_rows.indptr.astype(np.int64),
                test_rows.indices,
            )

        ranked = map_chunks(
            lambda start: _rank_factor_chunk(*chunk_args(start)), range(0, n_eval, step), n_threads
        )
        for start, result in ranked:
            store(start, min(start + step, n_eval), *result)
    elif n_workers == 0:
        with blas_threads(1):
            for start, stop, args in batches():
                store(start, stop, *_rank_block(*args))
    else:
        # Scoring runs here with half the threads for BLAS; up to one block per worker waits
        # or is ranked while the next block is scored.
        with blas_threads(max(1, n_threads // 2)), ThreadPoolExecutor(n_workers) as pool:
            pending: deque = deque()
            for start, stop, args in batches():
                pending.append((start, stop, pool.submit(_rank_block, *args)))
                while len(pending) > n_workers:
                    s, e, fut = pending.popleft()
                    store(s, e, *fut.result())
            while pending:
                s, e, fut = pending.popleft()
                store(s, e, *fut.result())

    cov = {kk: float(seen[i].mean()) for i, kk in enumerate(ks)} if want_coverage else {}
    return _metric_values(hits, n_test_all[users], ks, metrics, users, n_items, cov, fold_in_used)

"""linrec.metrics against direct per-user Python implementations and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.stats
from sklearn.exceptions import NotFittedError

from linrec._base import BaseRecommender
from linrec.metrics import (
    METRICS,
    EvaluationResult,
    FactorScores,
    average_precision,
    compare,
    coverage,
    evaluate,
    hit_rate,
    ndcg,
    precision,
    ranking_metrics,
    recall,
    truncated_recall,
)

from conftest import random_interactions

PER_USER = ("recall", "truncated_recall", "ndcg", "precision", "hit_rate", "map")


# ------------------------------------------------------------------ direct Python references
def py_metric(name, hits, n_test, k):
    """One user's metric from a 0/1 list (best first), written out plainly."""
    h = [int(x) for x in hits[:k]]
    n_hits = sum(h)
    if name == "recall":
        return n_hits / n_test
    if name == "truncated_recall":
        return n_hits / min(k, n_test)
    if name == "precision":
        return n_hits / k
    if name == "hit_rate":
        return 1.0 if n_hits > 0 else 0.0
    if name == "ndcg":
        dcg = sum(1.0 / math.log2(p + 2) for p in range(k) if h[p])
        idcg = sum(1.0 / math.log2(p + 2) for p in range(min(k, n_test)))
        return dcg / idcg
    if name == "map":
        total, seen = 0.0, 0
        for p in range(k):
            if h[p]:
                seen += 1
                total += seen / (p + 1)
        return total / min(k, n_test)
    raise AssertionError(name)


def reference_evaluate(score_matrix, X_train, X_test, ks, metrics):
    """Rank every user with np.lexsort (tie rule), then the Python metrics above."""
    X_train, X_test = sp.csr_matrix(X_train), sp.csr_matrix(X_test)
    n_users, n_items = X_train.shape
    k_max = max(ks)
    users, per_user, tops = [], {(m, k): [] for m in metrics for k in ks}, []
    for u in range(n_users):
        test = set(X_test.indices[X_test.indptr[u] : X_test.indptr[u + 1]].tolist())
        if not test:
            continue
        train = set(X_train.indices[X_train.indptr[u] : X_train.indptr[u + 1]].tolist())
        scores = np.asarray(score_matrix[u], dtype=np.float64)
        items = np.array(
            [j for j in range(n_items) if j not in train and not np.isnan(scores[j])], np.int64
        )
        order = items[np.lexsort((items, -scores[items]))][:k_max]
        top = np.full(k_max, -1, np.int64)
        top[: order.size] = order
        hits = [1 if j in test else 0 for j in top]
        users.append(u)
        tops.append(top)
        for m in metrics:
            for k in ks:
                if m != "coverage":
                    per_user[(m, k)].append(py_metric(m, hits, len(test), k))
    tops = np.array(tops)
    cov = {k: len({j for j in tops[:, :k].ravel() if j >= 0}) / n_items for k in ks}
    return np.array(users), {key: np.array(v) for key, v in per_user.items()}, cov


def split(rng, n_users=70, n_items=90, density=0.12):
    X = random_interactions(rng, n_users, n_items, density)
    mask = rng.random(X.nnz) < 0.25
    coo = X.tocoo()
    train = sp.csr_matrix(
        (coo.data[~mask], (coo.row[~mask], coo.col[~mask])), shape=X.shape, dtype=np.float32
    )
    test = sp.csr_matrix(
        (coo.data[mask], (coo.row[mask], coo.col[mask])), shape=X.shape, dtype=np.float32
    )
    return train, test


def assert_same_result(result, users, per_user, cov, ks, metrics):
    np.testing.assert_array_equal(result.users, users)
    for m in metrics:
        for k in ks:
            if m == "coverage":
                assert result.coverage[k] == pytest.approx(cov[k], abs=1e-12)
            else:
                np.testing.assert_allclose(result.per_user[(m, k)], per_user[(m, k)], atol=1e-12)


# ------------------------------------------------------------------ per-user functions
def test_metric_functions_match_python(rng):
    n_users, width = 200, 30
    hits = (rng.random((n_users, width)) < 0.2).astype(np.uint8)
    n_test = rng.integers(1, 40, size=n_users)
    functions = {
        "recall": recall,
        "truncated_recall": truncated_recall,
        "ndcg": ndcg,
        "precision": precision,
        "hit_rate": hit_rate,
        "map": average_precision,
    }
    for k in (1, 5, 17, 30):
        for name, fn in functions.items():
            got = fn(hits, n_test, k)
            expected = [py_metric(name, hits[u], int(n_test[u]), k) for u in range(n_users)]
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_perfect_list_scores_one_and_recall_definitions_differ():
    hits = np.ones((1, 5), dtype=np.uint8)
    for fn in (truncated_recall, ndcg, average_precision, precision, hit_rate):
        assert fn(hits, [8], 5)[0] == pytest.approx(1.0)
    # LightGCN recall cannot reach 1 with more test items than k; truncated recall can.
    assert recall(hits, [8], 5)[0] == pytest.approx(5 / 8)


def test_metric_function_errors():
    with pytest.raises(ValueError, match="fewer than k"):
        recall(np.zeros((2, 3)), [1, 1], 5)
    with pytest.raises(ValueError, match="n_test must be >= 1"):
        ndcg(np.zeros((2, 3)), [1, 0], 2)
    with pytest.raises(ValueError, match="one entry per user"):
        precision(np.zeros((2, 3)), [1], 2)


def test_coverage_function():
    top = np.array([[0, 1, -1], [1, 4, 2]])
    assert coverage(top, n_items=5, k=1) == pytest.approx(2 / 5)
    assert coverage(top, n_items=5, k=3) == pytest.approx(4 / 5)
    with pytest.raises(ValueError, match="outside"):
        coverage([[7]], n_items=5, k=1)


def test_ranking_metrics_matches_reference(rng):
    train, test = split(rng)
    scores = rng.standard_normal(train.shape)
    users, per_user, cov = reference_evaluate(scores, train, test, (3, 10), METRICS)
    # Build the lists the reference ranked, then score them without a model.
    top = np.full((train.shape[0], 10), -1, np.int64)
    for u in range(train.shape[0]):
        seen = set(train.indices[train.indptr[u] : train.indptr[u + 1]].tolist())
        order = [j for j in np.lexsort((np.arange(train.shape[1]), -scores[u])) if j not in seen]
        top[u] = order[:10]
    result = ranking_metrics(top, test, k=(10, 3), metrics=METRICS)
    assert result.ks == (3, 10)
    assert_same_result(result, users, per_user, cov, (3, 10), METRICS)


def test_ranking_metrics_errors():
    X_test = np.eye(3)
    with pytest.raises(ValueError, match="one ranked list per user"):
        ranking_metrics([[0]], X_test, k=1)
    with pytest.raises(ValueError, match="fewer than k"):
        ranking_metrics([[0], [1], [2]], X_test, k=2)
    with pytest.raises(ValueError, match="integer item indices"):
        ranking_metrics([[0.5], [1], [2]], X_test, k=1)


# ------------------------------------------------------------------ evaluate with a score_fn
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_evaluate_score_fn_matches_reference(rng, dtype):
    train, test = split(rng)
    U = rng.standard_normal((train.shape[0], 6)).astype(dtype)
    V = rng.standard_normal((train.shape[1], 6)).astype(dtype)
    score_matrix = U @ V.T
    ks = (1, 5, 20)
    result = evaluate(lambda users, X: U[users] @ V.T, train, test, k=ks, metrics=METRICS)
    users, per_user, cov = reference_evaluate(score_matrix, train, test, ks, METRICS)
    assert_same_result(result, users, per_user, cov, ks, METRICS)
    assert result.fold_in is None


def test_evaluate_tied_and_nan_scores(rng):
    train, test = split(rng, n_users=40, n_items=300)
    score_matrix = rng.integers(0, 3, size=train.shape).astype(np.float64)
    score_matrix[rng.random(train.shape) < 0.2] = np.nan
    ks = (5, 50)
    result = evaluate(lambda users, X: score_matrix[users], train, test, k=ks, metrics=METRICS)
    users, per_user, cov = reference_evaluate(score_matrix, train, test, ks, METRICS)
    assert_same_result(result, users, per_user, cov, ks, METRICS)


def test_users_without_test_items_are_skipped_and_not_scored(rng):
    train, test = split(rng)
    test = test.tolil()
    test[[0, 5, 6], :] = 0
    test = test.tocsr()
    scored = []

    def score_fn(users, X):
        scored.extend(users.tolist())
        assert X.shape == (len(users), train.shape[1])
        return np.zeros((len(users), train.shape[1]))

    result = evaluate(score_fn, train, test, k=5)
    expected = np.flatnonzero(np.diff(test.indptr))
    np.testing.assert_array_equal(result.users, expected)
    assert sorted(scored) == expected.tolist()
    assert not {0, 5, 6} & set(result.users.tolist())


def test_training_items_are_excluded():
    # Each user's single test item is also her best-scored training item: never a hit.
    X_train = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 1, 0]], dtype=np.float32))
    X_test = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float32))
    scores = np.array([[9.0, 1, 2, 3], [0, 9, 8, 1]])
    result = evaluate(lambda u, X: scores[u], X_train, X_test, k=2, metrics=("hit_rate",))
    np.testing.assert_array_equal(result.per_user["hit_rate", 2], [0.0, 1.0])
    # Only two items are eligible per user: a ranking of 4 is padded, padding is no hit.
    result = evaluate(lambda u, X: scores[u], X_train, X_test, k=4, metrics=("precision",))
    np.testing.assert_allclose(result.per_user["precision", 4], [0.0, 0.25])


def test_batch_size_and_n_jobs_do_not_change_results(rng):
    train, test = split(rng)
    score_matrix = rng.integers(0, 4, size=train.shape).astype(np.float32)

    def fn(users, X):
        return score_matrix[users]

    base = evaluate(fn, train, test, k=(3, 10), metrics=METRICS)
    for batch_size, n_jobs in ((1, 1), (1, 2), (7, 2), (None, 1), (1000, 2)):
        other = evaluate(
            fn, train, test, k=(3, 10), metrics=METRICS, batch_size=batch_size, n_jobs=n_jobs
        )
        np.testing.assert_array_equal(other.users, base.users)
        for key in base.per_user:
            np.testing.assert_array_equal(other.per_user[key], base.per_user[key])
        assert other.coverage == base.coverage


def test_evaluate_does_not_modify_inputs(rng):
    train, test = split(rng)
    train_copy, test_copy = train.copy(), test.copy()
    evaluate(lambda u, X: np.ones((len(u), train.shape[1])), train, test, k=3)
    assert (train != train_copy).nnz == 0 and (test != test_copy).nnz == 0


def test_evaluate_input_errors(rng):
    train, test = split(rng)

    def fn(users, X):
        return np.zeros((len(users), train.shape[1]))

    with pytest.raises(ValueError, match="same users and catalogue"):
        evaluate(fn, train, test[:, :-1], k=5)
    with pytest.raises(ValueError, match="same users and catalogue"):
        evaluate(fn, train[:-1], test, k=5)
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        evaluate(fn, train, test, metrics=("recall", "auc"))
    with pytest.raises(ValueError, match="positive integers"):
        evaluate(fn, train, test, k=(5, 0))
    with pytest.raises(ValueError, match="X_test has no interactions"):
        evaluate(fn, train, sp.csr_matrix(train.shape, dtype=np.float32))
    with pytest.raises(ValueError, match="X_train contains a negative value"):
        evaluate(fn, -train, test)
    with pytest.raises(ValueError, match=r"expected \(\d+, 90\)"):
        evaluate(lambda u, X: np.zeros((len(u), 3)), train, test, k=5)
    with pytest.raises(ValueError, match="fold_in applies to linrec models"):
        evaluate(fn, train, test, fold_in=True)
    with pytest.raises(TypeError, match="fitted linrec model or a callable"):
        evaluate("model", train, test)


# ------------------------------------------------------------------ evaluate with a model
class TinyFactors(BaseRecommender):
    """Fitted user factors differ from folded-in ones, so the two paths are distinguishable."""

    _has_user_state = True

    def __init__(self, n_factors=4, random_state=0, n_jobs=None):
        self.n_factors = n_factors
        self.random_state = random_state
        self.n_jobs = n_jobs

    def _fit(self, X):
        rng = np.random.default_rng(self.random_state)
        self.item_factors_ = rng.standard_normal((X.shape[1], self.n_factors))
        self.user_factors_ = rng.standard_normal((X.shape[0], self.n_factors))

    def _scores(self, X):
        return np.asarray(X @ self.item_factors_) @ self.item_factors_.T

    def _user_scores(self, X, user_ids=None):
        if user_ids is None:
            return self._scores(X)
        return self.user_factors_[user_ids] @ self.item_factors_.T


def test_evaluate_model_fold_in_choices(rng):
    train, test = split(rng)
    model = TinyFactors().fit(train)
    fitted = model.user_factors_ @ model.item_factors_.T
    folded = np.asarray(train @ model.item_factors_) @ model.item_factors_.T
    ks, names = (5, 20), ("recall", "ndcg", "map")
    for fold_in, matrix, used in (
        ("auto", fitted, False),
        (False, fitted, False),
        (True, folded, True),
    ):
        result = evaluate(model, train, test, k=ks, metrics=names, fold_in=fold_in)
        users, per_user, cov = reference_evaluate(matrix, train, test, ks, names)
        assert_same_result(result, users, per_user, cov, ks, names)
        assert result.fold_in is used
    # Other rows than the fitted users: "auto" folds in, False refuses.
    sub_train, sub_test = train[:30], test[:30]
    result = evaluate(model, sub_train, sub_test, k=ks, metrics=names)
    users, per_user, cov = reference_evaluate(folded[:30], sub_train, sub_test, ks, names)
    assert_same_result(result, users, per_user, cov, ks, names)
    assert result.fold_in is True
    with pytest.raises(ValueError, match="fold_in=False scores the model's fitted users"):
        evaluate(model, sub_train, sub_test, fold_in=False)
    with pytest.raises(ValueError, match="fold_in must be"):
        evaluate(model, train, test, fold_in="yes")


def test_evaluate_model_errors(rng):
    train, test = split(rng)
    with pytest.raises(NotFittedError):
        evaluate(TinyFactors(), train, test)
    model = TinyFactors().fit(train)
    with pytest.raises(ValueError, match="expecting 90 features"):
        evaluate(model, train[:, :80], test[:, :80])


# ------------------------------------------------------------------ intervals and comparison
def make_result(users, values, metric="ndcg", k=20):
    users = np.asarray(users, dtype=np.int64)
    return EvaluationResult(
        users=users,
        per_user={(metric, k): np.asarray(values, dtype=np.float64)},
        coverage={},
        ks=(k,),
        metrics=(metric,),
        n_items=100,
    )


def test_ci_matches_scipy_t_interval():
    values = np.array([0.1, 0.4, 0.35, 0.8, 0.0, 0.25])
    result = make_result(np.arange(6), values)
    for level in (0.9, 0.95, 0.99):
        low, high = result.ci("ndcg", 20, level)
        expected = scipy.stats.t.interval(
            level, df=5, loc=values.mean(), scale=scipy.stats.sem(values)
        )
        assert low == pytest.approx(expected[0], abs=1e-12)
        assert high == pytest.approx(expected[1], abs=1e-12)
    assert all(math.isnan(x) for x in make_result([3], [0.5]).ci("ndcg", 20))
    with pytest.raises(ValueError, match="level"):
        result.ci("ndcg", 20, level=95)


def test_compare_matches_scipy_on_common_users():
    a = make_result([0, 1, 2, 3, 4, 5, 6, 7], [0.9, 0.5, 0.6, 0.3, 0.8, 0.7, 0.65, 0.2])
    b = make_result([1, 2, 3, 4, 5, 6, 7, 9], [0.4, 0.5, 0.1, 0.75, 0.2, 0.3, 0.1, 0.0])
    cmp = compare(a, b, "ndcg", 20)
    va = np.array([0.5, 0.6, 0.3, 0.8, 0.7, 0.65, 0.2])
    vb = np.array([0.4, 0.5, 0.1, 0.75, 0.2, 0.3, 0.1])
    assert cmp.n_users == 7
    assert cmp.mean_a == pytest.approx(va.mean()) and cmp.mean_b == pytest.approx(vb.mean())
    assert cmp.mean_difference == pytest.approx((va - vb).mean(), abs=1e-12)
    assert cmp.t_pvalue == pytest.approx(scipy.stats.ttest_rel(va, vb).pvalue, abs=1e-12)
    assert cmp.wilcoxon_pvalue == pytest.approx(scipy.stats.wilcoxon(va, vb).pvalue, abs=1e-12)
    d = va - vb
    lo, hi = scipy.stats.t.interval(0.95, df=6, loc=d.mean(), scale=scipy.stats.sem(d))
    assert (cmp.ci_low, cmp.ci_high) == (pytest.approx(lo), pytest.approx(hi))
    assert "paired t p=" in repr(cmp) and "Wilcoxon p=" in repr(cmp)


def test_compare_degenerate_cases():
    same = make_result([0, 1, 2], [0.2, 0.4, 0.6])
    cmp = compare(same, same)
    assert cmp.mean_difference == 0 and cmp.t_pvalue == 1.0 and cmp.wilcoxon_pvalue == 1.0
    shifted = make_result([0, 1, 2], [0.3, 0.5, 0.7])
    assert compare(shifted, same).t_pvalue == 0.0
    with pytest.raises(ValueError, match="no evaluated user in common"):
        compare(make_result([0], [1.0]), make_result([1], [1.0]))
    with pytest.raises(KeyError, match="no values for"):
        compare(same, same, "recall", 20)


def test_result_summary_markdown_and_mean(rng):
    train, test = split(rng)
    U = rng.standard_normal((train.shape[0], 5))
    V = rng.standard_normal((train.shape[1], 5))
    result = evaluate(
        lambda u, X: U[u] @ V.T, train, test, k=(5, 10), metrics=("recall", "coverage")
    )
    summary = result.summary()
    assert list(summary) == ["recall@5", "recall@10", "coverage@5", "coverage@10"]
    assert summary["recall@10"] == pytest.approx(result.per_user["recall", 10].mean())
    assert summary["coverage@10"] == result.coverage[10] == result.mean("coverage", 10)
    table = result.to_markdown()
    assert "| recall@10 |" in table and "| coverage@5 |" in table and "95% CI" in table
    assert result.n_users == len(result.users)
    with pytest.raises(ValueError, match="no per-user values"):
        result.ci("coverage", 5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_factor_scores_path_equals_plain_score_fn(rng, dtype, monkeypatch):
    import linrec._factor_topk as factor_topk

    # Small tiles and chunks so that several of each are used on test-sized data.
    monkeypatch.setattr(factor_topk, "FACTOR_ITEMS", 64)
    train, test = split(rng, n_users=90, n_items=300)
    U = rng.standard_normal((90, 8)).astype(dtype)
    V = rng.standard_normal((300, 8)).astype(dtype)
    ks = (3, 20)
    plain = evaluate(lambda u, X: U[u] @ V.T, train, test, k=ks, metrics=METRICS)
    users, per_user, cov = reference_evaluate(U @ V.T, train, test, ks, METRICS)
    for batch_size, n_jobs in ((None, 2), (7, 2), (1, 1), (500, 1)):
        fast = evaluate(
            FactorScores(U, V),
            train,
            test,
            k=ks,
            metrics=METRICS,
            batch_size=batch_size,
            n_jobs=n_jobs,
        )
        assert_same_result(fast, users, per_user, cov, ks, METRICS)
        for key in plain.per_user:
            np.testing.assert_array_equal(fast.per_user[key], plain.per_user[key])


def test_factor_scores_errors(rng):
    train, test = split(rng)
    with pytest.raises(ValueError, match="same number of factors"):
        FactorScores(np.ones((70, 3)), np.ones((90, 4)))
    with pytest.raises(ValueError, match="must be 2-D"):
        FactorScores(np.ones(70), np.ones((90, 4)))
    with pytest.raises(ValueError, match="X_train is 70 users x 90 items"):
        evaluate(FactorScores(np.ones((70, 3)), np.ones((80, 3))), train, test)
    np.testing.assert_array_equal(
        FactorScores(np.eye(2), np.eye(2))(np.array([1, 0])), [[0.0, 1.0], [1.0, 0.0]]
    )


class TinyFactorsWithHook(TinyFactors):
    """Same model, declaring its factors so that evaluate can take the tiled path."""

    def _evaluation_factors(self, X, user_ids=None):
        if user_ids is None:
            return np.asarray(X @ self.item_factors_), self.item_factors_
        return self.user_factors_[user_ids], self.item_factors_


def test_model_evaluation_factors_hook_gives_same_results(rng):
    train, test = split(rng)
    plain = TinyFactors().fit(train)
    hooked = TinyFactorsWithHook().fit(train)
    for fold_in in ("auto", True):
        a = evaluate(plain, train, test, k=(5, 20), metrics=METRICS, fold_in=fold_in)
        b = evaluate(hooked, train, test, k=(5, 20), metrics=METRICS, fold_in=fold_in)
        assert a.fold_in == b.fold_in
        for key in a.per_user:
            np.testing.assert_array_equal(a.per_user[key], b.per_user[key])
        assert a.coverage == b.coverage


def test_score_fn_errors_propagate_from_the_pipeline(rng):
    train, test = split(rng)

    def failing(users, X):
        if users[0] > 20:
            raise RuntimeError("scoring failed")
        return np.zeros((len(users), train.shape[1]))

    for n_jobs in (1, 2):
        with pytest.raises(RuntimeError, match="scoring failed"):
            evaluate(failing, train, test, batch_size=5, n_jobs=n_jobs)


def test_base_score_is_mean_ndcg_at_20(rng):
    train, test = split(rng)
    model = TinyFactors().fit(train)
    # score() treats the rows as new users (GridSearchCV's test fold): always fold in
    expected = evaluate(model, train, test, k=20, metrics=("ndcg",), fold_in=True).mean("ndcg", 20)
    assert model.score(train, test) == pytest.approx(expected, abs=0)
    fitted_state = evaluate(model, train, test, k=20, metrics=("ndcg",), fold_in=False)
    assert fitted_state.fold_in is False

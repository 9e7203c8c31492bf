"""Tests of linrec.model_selection: UserKFold, fold_in_split and the GridSearchCV recipe."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score

from linrec._base import BaseRecommender
from linrec.datasets import make_implicit
from linrec.model_selection import UserKFold, fold_in_split
from tests.conftest import random_interactions


class CooccurrencePopularity(BaseRecommender):
    """Test model: item co-occurrence with the history plus a weight times popularity.

    ``popularity_weight`` large makes it a most-popular ranking; 0 a pure co-occurrence one.
    """

    def __init__(self, popularity_weight=0.0, *, n_jobs=None):
        self.popularity_weight = popularity_weight
        self.n_jobs = n_jobs

    def _fit(self, X):
        binary = X.copy()
        binary.data[:] = 1.0
        self.item_popularity_ = np.asarray(binary.sum(axis=0)).ravel() / X.shape[0]
        self.cooccurrence_ = (binary.T @ binary).toarray()

    def _scores(self, X):
        return np.asarray(X @ self.cooccurrence_) + self.popularity_weight * self.item_popularity_

    def _similar_item_scores(self, item_ids):
        return self.cooccurrence_[item_ids]


def _ndcg_at_20(model, X_history, X_heldout):
    """Mean NDCG@20 (binary gains, IDCG over min(20, |test|)) over users with held-out items."""
    X_history, X_heldout = sp.csr_matrix(X_history), sp.csr_matrix(X_heldout)
    top, _ = model.recommend(X_history, k=20)
    discounts = 1.0 / np.log2(np.arange(2, 22))
    values = []
    for u in range(X_history.shape[0]):
        relevant = set(X_heldout[u].indices.tolist())
        if not relevant:
            continue
        gains = np.array([item in relevant for item in top[u]], dtype=float)
        ideal = discounts[: min(20, len(relevant))].sum()
        values.append((gains * discounts).sum() / ideal)
    return float(np.mean(values))


class OwnScoreModel(CooccurrencePopularity):
    """The same model scored by the test's own NDCG (works before linrec.metrics exists)."""

    def score(self, X, y):
        return _ndcg_at_20(self, X, y)


# ====================================================================== UserKFold
class TestUserKFold:
    def test_folds_partition_users(self):
        X = np.zeros((23, 4))
        folds = list(UserKFold(5, random_state=1).split(X))
        assert len(folds) == 5 == UserKFold(5).get_n_splits()
        tests = [test for _, test in folds]
        assert sorted(np.concatenate(tests).tolist()) == list(range(23))
        sizes = [t.size for t in tests]
        assert max(sizes) - min(sizes) <= 1
        for train, test in folds:
            assert np.intersect1d(train, test).size == 0
            assert train.size + test.size == 23
            assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)

    def test_users_with_heldout_spread_evenly(self):
        n_users = 40
        y = np.zeros((n_users, 5))
        y[:7, 0] = 1  # only 7 users have held-out items
        for _, test in UserKFold(3, random_state=2).split(np.zeros((n_users, 5)), y):
            assert (y[test].sum(axis=1) > 0).sum() in (2, 3)
        per_fold = [
            int((y[test].sum(axis=1) > 0).sum())
            for _, test in UserKFold(3, random_state=2).split(np.zeros((n_users, 5)), y)
        ]
        assert sum(per_fold) == 7

    def test_deterministic_and_seeded(self):
        X = np.zeros((30, 2))
        a = [t.tolist() for _, t in UserKFold(3, random_state=0).split(X)]
        b = [t.tolist() for _, t in UserKFold(3, random_state=0).split(X)]
        c = [t.tolist() for _, t in UserKFold(3, random_state=1).split(X)]
        assert a == b and a != c

    def test_no_shuffle(self):
        X = sp.csr_matrix(np.eye(5))
        tests = [t.tolist() for _, t in UserKFold(2, shuffle=False).split(X)]
        assert tests == [[0, 2, 4], [1, 3]]

    @pytest.mark.parametrize(
        "cv, X, y, message",
        [
            (UserKFold(1), np.zeros((4, 2)), None, "n_splits must be an integer >= 2"),
            (UserKFold(2.0), np.zeros((4, 2)), None, "n_splits must be an integer >= 2"),
            (UserKFold(5), np.zeros((4, 2)), None, "larger than the number of users 4"),
            (UserKFold(2), np.zeros(4), None, "must be a 2-D users x items matrix"),
            (UserKFold(2), np.zeros((4, 2)), np.zeros((3, 2)), "y has 3 rows but X has 4"),
        ],
    )
    def test_errors(self, cv, X, y, message):
        with pytest.raises(ValueError, match=message):
            list(cv.split(X, y))

    def test_repr_and_clone(self):
        assert repr(UserKFold(3)) == "UserKFold(n_splits=3, random_state=0, shuffle=True)"


# ====================================================================== fold_in_split
def test_fold_in_split(rng):
    X = random_interactions(rng, n_users=50, n_items=30, density=0.2)
    before = X.copy()
    X_history, X_heldout = fold_in_split(X, test_fraction=0.25, random_state=3)
    assert X_history.shape == X_heldout.shape == X.shape
    assert X_history.multiply(X_heldout).nnz == 0
    np.testing.assert_array_equal((X_history + X_heldout).toarray(), X.toarray())
    assert np.diff(X_history.indptr).min() >= 1
    assert (X != before).nnz == 0
    again = fold_in_split(X, test_fraction=0.25, random_state=3)
    assert (again[1] != X_heldout).nnz == 0


# ====================================================================== GridSearchCV recipe
@pytest.fixture(scope="module")
def history_and_heldout():
    X = make_implicit(n_users=600, n_items=300, random_state=0)
    return fold_in_split(X, test_fraction=0.2, random_state=0)


def test_grid_search_recipe_with_test_score(history_and_heldout):
    """The documented recipe: fit(X + y) on training users, score y of the others."""
    X_history, X_heldout = history_and_heldout
    grid = {"popularity_weight": [0.0, 1e6]}
    cv = UserKFold(3, random_state=0)
    search = GridSearchCV(OwnScoreModel(), grid, cv=cv).fit(X_history, X_heldout)
    # Co-occurrence beats popularity on the planted data.
    assert search.best_params_ == {"popularity_weight": 0.0}
    scores = search.cv_results_["mean_test_score"]
    assert scores[0] > 1.2 * scores[1]
    # Each split score is: fit on all interactions of the training users, score the others.
    for f, (train, test) in enumerate(cv.split(X_history, X_heldout)):
        model = clone(OwnScoreModel()).fit(X_history[train], X_heldout[train])
        assert model.n_users_ == train.size
        expected = _ndcg_at_20(model, X_history[test], X_heldout[test])
        assert search.cv_results_[f"split{f}_test_score"][0] == pytest.approx(expected)
    # The refitted best model saw every user.
    assert search.best_estimator_.n_users_ == X_history.shape[0]
    # cross_val_score goes through the same path; scikit-learn validates its y as a dense
    # array-like, so it takes the held-out matrix densified (small data only).
    values = cross_val_score(OwnScoreModel(), X_history, X_heldout.toarray(), cv=cv)
    np.testing.assert_allclose(values.mean(), scores[0])


def test_grid_search_recipe_with_base_score(history_and_heldout):
    """Same recipe with BaseRecommender.score (NDCG@20 through linrec.metrics.evaluate)."""
    X_history, X_heldout = history_and_heldout
    search = GridSearchCV(
        CooccurrencePopularity(), {"popularity_weight": [0.0, 1e6]}, cv=UserKFold(3)
    ).fit(X_history, X_heldout)
    assert search.best_params_ == {"popularity_weight": 0.0}
    own = GridSearchCV(OwnScoreModel(), {"popularity_weight": [0.0, 1e6]}, cv=UserKFold(3)).fit(
        X_history, X_heldout
    )
    np.testing.assert_allclose(
        search.cv_results_["mean_test_score"], own.cv_results_["mean_test_score"], rtol=1e-6
    )

"""The contract every linrec estimator satisfies, written once.

A test module adds ``class TestFooContract(RecommenderContract)`` overriding
``make_estimator`` (small, fast settings); pytest then runs every check below on it.
``expected_failed_checks`` lists scikit-learn ``check_estimator`` checks that do not apply
to a recommender, each with the reason.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import check_estimator

import linrec

from conftest import random_interactions

# scikit-learn checks that conflict with a deliberate linrec rule, with the reason.
_EMPTY_ROWS = (
    "its random data has users without any interaction, which linrec's fit rejects by design "
    "(they carry no signal and usually reveal a data bug); test_accepts_every_input_format "
    "covers the same ground on data without empty users"
)
SKLEARN_NOT_APPLICABLE: dict[str, str] = {
    "check_fit2d_1feature": _EMPTY_ROWS,
    "check_estimators_dtypes": _EMPTY_ROWS,
    "check_estimator_sparse_tag": _EMPTY_ROWS,
    "check_estimator_sparse_array": _EMPTY_ROWS,
    "check_estimator_sparse_matrix": _EMPTY_ROWS,
}


class RecommenderContract:
    """Mixin of contract tests; subclasses override :meth:`make_estimator`."""

    #: checks of sklearn's check_estimator that are expected to fail, with the reason
    expected_failed_checks: dict[str, str] = SKLEARN_NOT_APPLICABLE

    def make_estimator(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def make_data(self, rng):
        return random_interactions(rng, n_users=50, n_items=30, density=0.2)

    # ---------------------------------------------------------------- parameters
    def test_get_params_and_clone(self):
        est = self.make_estimator()
        params = est.get_params()
        twin = clone(est)
        assert twin.get_params() == params
        assert twin is not est
        est.set_params(**params)
        assert est.get_params() == params

    def test_constructor_stores_only_params(self):
        est = self.make_estimator()
        fitted = [k for k in vars(est) if k.endswith("_") and not k.startswith("_")]
        assert fitted == [], f"constructor set fitted-looking attributes {fitted}"

    def test_fit_returns_self_and_sets_fitted_attributes(self, rng):
        X = self.make_data(rng)
        est = self.make_estimator()
        assert est.fit(X) is est
        assert est.n_items_ == X.shape[1]
        assert est.n_users_ == X.shape[0]
        assert est.n_features_in_ == X.shape[1]

    def test_not_fitted_error(self, rng):
        X = self.make_data(rng)
        est = self.make_estimator()
        for call in (
            lambda: est.predict(X),
            lambda: est.recommend(X, k=3),
            lambda: est.similar_items([0], k=2),
        ):
            with pytest.raises(NotFittedError):
                call()

    def test_accepts_every_input_format(self, rng):
        X = self.make_data(rng)
        reference = self.make_estimator().fit(X).predict(X)
        formats = [
            X.tocsc(),
            X.tocoo(),
            X.tolil(),
            sp.csr_array(X),
            X.toarray(),
            X.toarray().astype(np.int64),
            X.toarray().tolist(),
            np.asfortranarray(X.toarray()),
        ]
        for variant in formats:
            got = self.make_estimator().fit(variant).predict(variant)
            np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-6)

    # ---------------------------------------------------------------- determinism
    def test_deterministic(self, rng):
        X = self.make_data(rng)
        params = {"random_state": 7} if "random_state" in self.make_estimator().get_params() else {}
        a = self.make_estimator().set_params(**params).fit(X).predict(X)
        b = self.make_estimator().set_params(**params).fit(X).predict(X)
        np.testing.assert_array_equal(a, b)

    # ---------------------------------------------------------------- bad input
    @pytest.mark.parametrize(
        "corrupt, message",
        [
            ("nan", "NaN"),
            ("inf", "infinity"),
            ("negative", "negative"),
            ("one_d", "2-D"),
            ("empty_row", "without any interaction"),
            ("empty_matrix", "empty"),
        ],
    )
    def test_fit_rejects_bad_input(self, rng, corrupt, message):
        X = self.make_data(rng).toarray()
        if corrupt == "nan":
            X[1, 2] = np.nan
        elif corrupt == "inf":
            X[1, 2] = np.inf
        elif corrupt == "negative":
            X[1, 2] = -1.0
        elif corrupt == "one_d":
            X = X[0]
        elif corrupt == "empty_row":
            X[3] = 0.0
        elif corrupt == "empty_matrix":
            X = X[:0]
        with pytest.raises(ValueError, match=message):
            self.make_estimator().fit(X)
        if corrupt not in ("one_d", "empty_matrix"):
            with pytest.raises(ValueError, match=message):
                self.make_estimator().fit(sp.csr_matrix(np.nan_to_num(X, nan=0.0) * 0 + X))

    def test_predict_rejects_wrong_shape(self, rng):
        X = self.make_data(rng)
        est = self.make_estimator().fit(X)
        with pytest.raises(ValueError, match="features"):
            est.predict(X[:, :-1])
        with pytest.raises(ValueError, match="features"):
            est.recommend(X[:, :-1], k=2)

    def test_ids_out_of_range(self, rng):
        X = self.make_data(rng)
        est = self.make_estimator().fit(X)
        with pytest.raises(ValueError, match="out of range"):
            est.similar_items([X.shape[1]], k=2)
        with pytest.raises(ValueError, match="out of range"):
            est.similar_items([-1], k=2)
        with pytest.raises(ValueError, match="out of range"):
            est.recommend(X, k=2, items=[0, X.shape[1]])

    def test_input_not_modified(self, rng):
        X = self.make_data(rng)
        X.data *= 2.0  # non-binary values must survive untouched as well
        X_copy = X.copy()
        dense = X.toarray()
        dense_copy = dense.copy()
        est = self.make_estimator().fit(X)
        est.predict(X)
        est.recommend(X, k=3)
        self.make_estimator().fit(dense)
        np.testing.assert_array_equal(X.data, X_copy.data)
        np.testing.assert_array_equal(X.indices, X_copy.indices)
        np.testing.assert_array_equal(X.indptr, X_copy.indptr)
        np.testing.assert_array_equal(dense, dense_copy)

    def test_empty_item_column_is_allowed(self, rng):
        # Items unseen in training are common in splits: fitting works, scores are finite.
        X = self.make_data(rng).tolil()
        X[:, 0] = 0
        X = X.tocsr()
        X.eliminate_zeros()
        X = X[np.diff(X.indptr) > 0]
        est = self.make_estimator().fit(X)
        assert np.isfinite(est.predict(X)).all()

    # ---------------------------------------------------------------- inference
    def test_recommend_matches_predict_and_excludes_seen(self, rng):
        X = self.make_data(rng)
        est = self.make_estimator().fit(X)
        k = 5
        ids, scores = est.recommend(X, k=k)
        assert ids.shape == (X.shape[0], k) and scores.shape == (X.shape[0], k)
        full = est.predict(X)
        for u in range(X.shape[0]):
            seen = set(X[u].indices)
            assert not seen & set(ids[u][ids[u] >= 0]), "recommended a seen item"
            row = full[u].astype(np.float64)
            row[list(seen)] = -np.inf
            order = np.lexsort((np.arange(row.size), -row))[:k]
            valid = ids[u] >= 0
            np.testing.assert_array_equal(ids[u][valid], order[: valid.sum()])
            assert np.all(np.diff(scores[u][valid]) <= 0)
        ids_all, _ = est.recommend(X, k=k, exclude_seen=False)
        assert (ids_all >= 0).all()

    def test_recommend_restricted_items(self, rng):
        X = self.make_data(rng)
        est = self.make_estimator().fit(X)
        allowed = np.array([1, 4, 7, 9])
        ids, _ = est.recommend(X, k=3, items=allowed, exclude_seen=False)
        assert set(ids.ravel()) <= set(allowed.tolist())

    def test_predict_in_batches_equals_whole(self, rng):
        X = self.make_data(rng)
        est = self.make_estimator().fit(X)
        np.testing.assert_allclose(est.predict(X, batch_size=7), est.predict(X), rtol=1e-6)
        np.testing.assert_array_equal(
            est.recommend(X, k=4, batch_size=3)[0], est.recommend(X, k=4)[0]
        )

    def test_similar_items_excludes_itself(self, rng):
        X = self.make_data(rng)
        est = self.make_estimator().fit(X)
        ids, _ = est.similar_items([0, 3, 5], k=4)
        assert ids.shape == (3, 4)
        for row, item in zip(ids, [0, 3, 5]):
            assert item not in row

    # ---------------------------------------------------------------- persistence
    def test_save_load_roundtrip(self, rng, tmp_path):
        X = self.make_data(rng)
        est = self.make_estimator().fit(X)
        path = tmp_path / "model.npz"
        est.save(path)
        loaded = linrec.load(path)
        assert type(loaded) is type(est)
        assert loaded.get_params() == est.get_params()
        np.testing.assert_array_equal(loaded.predict(X), est.predict(X))
        np.testing.assert_array_equal(loaded.recommend(X, k=5)[0], est.recommend(X, k=5)[0])
        assert type(est).load(path).get_params() == est.get_params()

    def test_load_rejects_corrupt_and_future_files(self, rng, tmp_path):
        X = self.make_data(rng)
        est = self.make_estimator().fit(X)
        path = tmp_path / "model.npz"
        est.save(path)
        broken = tmp_path / "broken.npz"
        broken.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
        with pytest.raises(ValueError, match="not a readable linrec model"):
            linrec.load(broken)
        with np.load(path) as npz:
            content = dict(npz.items())
        content["__linrec_format__"] = np.array(999)
        future = tmp_path / "future.npz"
        np.savez(future, **content)
        with pytest.raises(ValueError, match="newer linrec"):
            linrec.load(future)

    # ---------------------------------------------------------------- scikit-learn
    def test_score_is_ndcg(self, rng):
        X = self.make_data(rng)
        est = self.make_estimator().fit(X)
        value = est.score(X[:, :], X)  # held-out == history: everything excluded -> 0
        assert value == 0.0

    def test_sklearn_check_estimator(self):
        est = self.make_estimator()
        results = check_estimator(
            est,
            on_fail=None,
            on_skip=None,
            expected_failed_checks=self.expected_failed_checks,
        )
        failed = [
            f"{r['check_name']}: {r['exception']!r}" for r in results if r["status"] == "failed"
        ]
        assert not failed, "\n".join(failed)

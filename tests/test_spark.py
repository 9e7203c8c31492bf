"""SparkIALS in local[2] mode against the single-machine IALS, on small data."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from linrec.ials import IALS

try:
    import pyspark  # noqa: F401
except ImportError:  # pragma: no cover - depends on the environment
    pytest.skip(
        "pyspark is not installed (pip install 'linrec[spark]'): Spark tests skipped",
        allow_module_level=True,
    )
if shutil.which("java") is None:  # pragma: no cover - depends on the environment
    pytest.skip("no java on PATH: Spark needs Java 17 or newer", allow_module_level=True)

import pandas as pd

from linrec.spark import SparkIALS, fit_spark, local_session

N_USERS, N_ITEMS = 60, 40


@pytest.fixture(scope="module")
def spark():
    session = local_session("linrec-tests", cores=2, driver_memory="1g")
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def data():
    """A small weighted matrix (every user has an item; item 0 has none) and its rows."""
    rng = np.random.default_rng(7)
    X = sp.random(N_USERS, N_ITEMS, density=0.15, random_state=3, format="csr")
    X.data = rng.integers(1, 4, X.nnz).astype(np.float64)
    keep = np.ones(N_ITEMS)
    keep[0] = 0
    X = (X @ sp.diags(keep)).tocsr()
    X.eliminate_zeros()
    empty = np.flatnonzero(np.diff(X.indptr) == 0)
    X = (
        X + sp.csr_matrix((np.ones(empty.size), (empty, empty % (N_ITEMS - 1) + 1)), X.shape)
    ).tocsr()
    coo = X.tocoo()
    frame = pd.DataFrame(
        {"user": coo.row.astype(np.int64), "item": coo.col.astype(np.int64), "weight": coo.data}
    )
    return X, frame


def _relative(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


CASES = [
    ("rendle", "cg", {}),
    (
        "hu",
        "cg",
        {
            "confidence_scale": 2.0,
            "unobserved_weight": 1.0,
            "reg_exponent": 1.0,
            "reg_frequency_offset": 0.0,
        },
    ),
    ("debiased_chuang", "cg", {"prior_inflation": 2.0}),
    ("debiased_pu", "cg", {"prior_inflation": 2.0}),
    ("rendle", "cg", {"cg_warm_start": False, "cg_precondition": False}),
    ("rendle", "cg", {"cg_steps": 1, "final_user_step": "solver"}),
    ("rendle", "cholesky", {"reg_exponent": 0.5}),
    ("hu", "ialspp", {"confidence_scale": 1.0, "block_size": 4}),
    ("rendle", "ialspp", {"block_size": 3, "block_basis": "coordinate"}),
]


@pytest.mark.parametrize(("objective", "solver", "extra"), CASES)
def test_matches_single_machine(spark, data, objective, solver, extra):
    X, frame = data
    est = IALS(
        n_factors=8,
        n_epochs=3,
        objective=objective,
        solver=solver,
        random_state=0,
        n_jobs=1,
        **extra,
    )
    df = spark.createDataFrame(frame)
    fitter = SparkIALS(est, weight_col="weight", n_blocks=3).fit(df, item_ids=np.arange(N_ITEMS))
    model = fitter.model_
    ref = IALS(**est.get_params()).fit(X)
    assert est.__dict__.keys() == IALS(**est.get_params()).__dict__.keys()  # ials not fitted
    assert _relative(model.user_factors_, ref.user_factors_) < 1e-4
    assert _relative(model.item_factors_, ref.item_factors_) < 1e-4
    np.testing.assert_allclose(model.objective_, ref.objective_, rtol=1e-5)
    assert len(fitter.epoch_times_) == 3
    assert fitter.n_interactions_ == X.nnz
    np.testing.assert_array_equal(model.recommend(X[:10], k=5)[0], ref.recommend(X[:10], k=5)[0])


# (beta, normalisation, objective, solver, extra parameters, fit on the catalogue of N_ITEMS)
WEIGHTED_CASES = [
    (0.3, "mean_count", "rendle", "cg", {}, True),
    (
        -0.25,
        "unit_mean",
        "hu",
        "cholesky",
        {"confidence_scale": 2.0, "unobserved_weight": 0.5},
        True,
    ),
    (0.3, "unit_mean", "debiased_pu", "ialspp", {"prior_inflation": 2.0, "block_size": 4}, False),
    (-0.25, "mean_count", "debiased_chuang", "cg", {"prior_inflation": 2.0}, False),
]


@pytest.mark.parametrize(
    ("beta", "normalization", "objective", "solver", "extra", "catalogue"), WEIGHTED_CASES
)
def test_item_weights_match_single_machine(
    spark, data, tmp_path, beta, normalization, objective, solver, extra, catalogue
):
    """Popularity-weighted unobserved entries: the same g, factors and objective as IALS.

    Rows of weight >= 2 are split into two rows (summed back by the fit): item counts of raw
    rows instead of distinct pairs would give other weights.
    """
    X, frame = data
    heavy = frame[frame["weight"] >= 2]
    rows = pd.concat(
        [
            frame.assign(weight=np.minimum(frame["weight"], 1.0)),
            heavy.assign(weight=heavy["weight"] - 1.0),
        ]
    ).sample(frac=1.0, random_state=0)
    est = IALS(
        n_factors=8,
        n_epochs=3,
        objective=objective,
        solver=solver,
        item_weight_exponent=beta,
        item_weight_normalization=normalization,
        random_state=0,
        n_jobs=1,
        **extra,
    )
    fitter = SparkIALS(est, weight_col="weight", n_blocks=3)
    if catalogue:  # item 0 has no interaction: g_0 = 0
        fitter.fit(spark.createDataFrame(rows), item_ids=np.arange(N_ITEMS))
        X_ref = X
    else:
        fitter.fit(spark.createDataFrame(rows))
        X_ref = X[:, np.diff(X.tocsc().indptr) > 0]
    model = fitter.model_
    ref = IALS(**est.get_params()).fit(X_ref)
    assert model.item_weights_.dtype == ref.item_weights_.dtype == np.float32
    np.testing.assert_array_equal(model.item_weights_, ref.item_weights_)
    assert (model.item_weights_[0] == 0) == catalogue
    # the weighting changes the fit: a SparkIALS that ignored g would fail the checks below
    unweighted = IALS(**{**est.get_params(), "item_weight_exponent": 0.0}).fit(X_ref)
    assert _relative(unweighted.item_factors_, ref.item_factors_) > 1e-2
    assert _relative(model.user_factors_, ref.user_factors_) < 1e-4
    assert _relative(model.item_factors_, ref.item_factors_) < 1e-4
    np.testing.assert_allclose(model.objective_, ref.objective_, rtol=1e-5)
    # fold-in and recommend read item_weights_ as the single-machine model's do
    assert _relative(model.transform(X_ref[:10]), ref.transform(X_ref[:10])) < 1e-4
    np.testing.assert_array_equal(
        model.recommend(X_ref[:10], k=5)[0], ref.recommend(X_ref[:10], k=5)[0]
    )
    model.save(tmp_path / "weighted.npz")
    loaded = IALS.load(tmp_path / "weighted.npz")
    np.testing.assert_array_equal(loaded.item_weights_, model.item_weights_)
    np.testing.assert_array_equal(loaded.transform(X_ref[:10]), model.transform(X_ref[:10]))


@pytest.mark.parametrize(
    ("beta", "unobserved_weight"),
    [(1.0, 1.5), (0.0, 3.0)],
)
def test_negative_weight_error_as_single_machine(spark, data, monkeypatch, beta, unobserved_weight):
    """Settings that give observed entries a negative weight fail as IALS fails, before work.

    debiased_pu weighs an observed entry n_u / n (K - (K - 1) w g_i): negative for
    (K - 1) w g_i > K, here through the popular items' g_i > 4 / 3 (beta = 1, w = 1.5) or
    for every entry (beta = 0, w = 3).
    """
    X, frame = data
    est = IALS(
        n_factors=4,
        n_epochs=2,
        objective="debiased_pu",
        prior_inflation=2.0,
        unobserved_weight=unobserved_weight,
        item_weight_exponent=beta,
        random_state=0,
        n_jobs=1,
    )
    with pytest.raises(ValueError, match="negative weight") as expected:
        IALS(**est.get_params()).fit(X)
    if beta != 0:  # the item weights make the difference
        IALS(**{**est.get_params(), "item_weight_exponent": 0.0}).fit(X)

    def no_half_step(*args, **kwargs):
        raise AssertionError("a half-step ran before the negative-weight check")

    monkeypatch.setattr(SparkIALS, "_half_step", staticmethod(no_half_step))
    persisted = spark.sparkContext._jsc.getPersistentRDDs().size()
    fitter = SparkIALS(est, weight_col="weight", n_blocks=3)
    with pytest.raises(ValueError) as raised:
        fitter.fit(spark.createDataFrame(frame), item_ids=np.arange(N_ITEMS))
    assert str(raised.value) == str(expected.value)
    assert not hasattr(fitter, "model_")
    assert spark.sparkContext._jsc.getPersistentRDDs().size() == persisted  # caches released


def test_string_ids_duplicates_and_save(spark, data, tmp_path):
    """String ids map in sorted order; duplicate rows are summed like the CSR matrix sums."""
    X, frame = data
    users = np.array([f"u{k:03d}" for k in range(N_USERS)])
    items = np.array([f"item-{k:02d}" for k in range(N_ITEMS)])
    rows = frame.assign(user=users[frame["user"]], item=items[frame["item"]])
    # split every weight w into 1 + (w - 1) over two rows, shuffled
    ones = rows.assign(weight=1.0)
    rest = rows.assign(weight=rows["weight"] - 1.0)
    doubled = pd.concat([ones, rest]).sample(frac=1.0, random_state=0)
    est = IALS(
        n_factors=6,
        n_epochs=2,
        objective="hu",
        confidence_scale=1.5,
        unobserved_weight=0.5,
        random_state=1,
        n_jobs=1,
    )
    model = fit_spark(est, spark.createDataFrame(doubled), weight_col="weight")
    kept = np.flatnonzero(np.diff(X.tocsc().indptr) > 0)  # items of the data (item 0 has none)
    np.testing.assert_array_equal(model.user_ids_, users)
    np.testing.assert_array_equal(model.item_ids_, items[kept])
    ref = IALS(**est.get_params()).fit(X[:, kept])
    assert _relative(model.item_factors_, ref.item_factors_) < 1e-4
    assert _relative(model.user_factors_, ref.user_factors_) < 1e-4
    model.save(tmp_path / "m.npz")
    loaded = IALS.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.item_ids_, model.item_ids_)
    np.testing.assert_array_equal(loaded.user_factors_, model.user_factors_)


def test_deterministic_and_frames(spark, data):
    _, frame = data
    df = spark.createDataFrame(frame[["user", "item"]])
    est = IALS(n_factors=4, n_epochs=2, random_state=5, n_jobs=1)
    first = SparkIALS(est, n_blocks=2).fit(df)
    second = SparkIALS(est, n_blocks=2).fit(df)
    np.testing.assert_array_equal(first.model_.user_factors_, second.model_.user_factors_)
    np.testing.assert_array_equal(first.model_.item_factors_, second.model_.item_factors_)
    items = first.item_factors_frame(spark).toPandas()
    assert list(items.columns) == ["item", "features"]
    np.testing.assert_array_equal(items["item"].to_numpy(), first.item_ids_)
    np.testing.assert_allclose(np.stack(items["features"]), first.model_.item_factors_)
    assert first.user_factors_frame().count() == first.user_ids_.size


def test_bad_input(spark):
    good = spark.createDataFrame([(0, 1, 1.0), (1, 2, 2.0)], ["user", "item", "w"])
    with pytest.raises(TypeError, match="IALS estimator"):
        SparkIALS(ials="rendle").fit(good)
    with pytest.raises(ValueError, match="class_prior"):
        SparkIALS(IALS(objective="debiased_pu", class_prior=[0.1, 0.1])).fit(good)
    with pytest.raises(ValueError, match="hard_negatives"):
        SparkIALS(IALS(hard_negatives=5, hard_negative_weight=0.1)).fit(good)
    with pytest.raises(ValueError, match="column 'who'"):
        SparkIALS(IALS(), user_col="who").fit(good)
    with pytest.raises(ValueError, match="integer or string ids"):
        SparkIALS(IALS(), user_col="w").fit(good)
    negative = spark.createDataFrame([(0, 1, 1.0), (1, 2, -2.0)], ["user", "item", "w"])
    with pytest.raises(ValueError, match="non-negative"):
        SparkIALS(IALS(), weight_col="w").fit(negative)
    nulls = spark.createDataFrame([(0, 1), (None, 2)], "user long, item long")
    with pytest.raises(ValueError, match="null user or item"):
        SparkIALS(IALS()).fit(nulls)
    with pytest.raises(ValueError, match="not in item_ids"):
        SparkIALS(IALS(n_factors=2)).fit(good, item_ids=[1])


def test_import_does_not_need_pyspark():
    code = (
        "import sys, linrec.spark\n"
        "assert 'pyspark' not in sys.modules, 'importing linrec.spark imported pyspark'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

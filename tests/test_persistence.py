"""Saving and loading models whose parameters hold arrays (a user-given class prior)."""

import numpy as np
import pytest

import linrec
from linrec.datasets import make_implicit
from linrec.ials import IALS
from linrec.mf import MF


@pytest.mark.parametrize(
    "make",
    [
        lambda tau: IALS(
            objective="debiased_pu", class_prior=tau, n_factors=4, n_epochs=2, random_state=0
        ),
        lambda tau: MF(
            loss="debiased_infonce",
            class_prior=tau,
            n_factors=4,
            n_negatives=5,
            batch_size=64,
            n_epochs=1,
            random_state=0,
        ),
    ],
    ids=["IALS", "MF"],
)
def test_array_parameter_round_trip(tmp_path, make):
    X = make_implicit(n_users=60, n_items=40, random_state=1)
    tau = np.random.default_rng(0).uniform(0.01, 0.2, size=X.shape[0])
    model = make(tau).fit(X)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = linrec.load(path)
    assert isinstance(loaded.class_prior, np.ndarray)
    np.testing.assert_array_equal(loaded.class_prior, tau)
    np.testing.assert_array_equal(loaded.predict(X[:7]), model.predict(X[:7]))


def test_object_array_parameter_is_refused(tmp_path):
    X = make_implicit(n_users=30, n_items=20, random_state=1)
    model = IALS(n_factors=2, n_epochs=1, random_state=0).fit(X)
    model.class_prior = np.array([object()] * X.shape[0])
    with pytest.raises(TypeError, match="class_prior"):
        model.save(tmp_path / "m.npz")

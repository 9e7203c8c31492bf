"""The exact equivalences between iALS objectives hold numerically; the inexact ones do not."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from linrec.equivalence import (
    check_equivalence,
    debiased_to_weighted,
    hu_to_weighted,
    implicit_params,
    rendle_to_weighted,
    spark_params,
    weighted_to_hu,
    weighted_to_rendle,
)
from linrec.ials import IALS

from conftest import random_interactions

SOLVER_ARGS = [
    dict(solver="cholesky"),
    dict(solver="cg", cg_steps=2),
    dict(solver="ialspp", block_size=3),
]


@pytest.mark.parametrize("solver", SOLVER_ARGS, ids=lambda s: s["solver"])
def test_hu_equals_weighted_member(rng, solver):
    X = random_interactions(rng, 60, 40)
    hu = dict(
        objective="hu",
        confidence_scale=9.0,
        unobserved_weight=1.0,
        regularization=0.5,
        n_factors=6,
        **solver,
    )
    member, scale = hu_to_weighted(hu)
    assert member["unobserved_weight"] == pytest.approx(0.1)
    report = check_equivalence(X, hu, member, scale, n_epochs=4)
    assert report.max_rel_factor_diff < 1e-6
    assert report.max_score_diff < 1e-6
    assert report.rankings_identical and report.top_k_overlap == 1.0


@pytest.mark.parametrize("solver", SOLVER_ARGS, ids=lambda s: s["solver"])
@pytest.mark.parametrize("reg_exponent", [0.0, 1.0])
def test_rendle_equals_scaled_weighted_member(rng, solver, reg_exponent):
    X = random_interactions(rng, 60, 40)
    rendle = dict(
        objective="rendle",
        unobserved_weight=0.3,
        regularization=0.05,
        reg_exponent=reg_exponent,
        n_factors=6,
        **solver,
    )
    member, scale = rendle_to_weighted(rendle)
    assert scale == pytest.approx(np.sqrt(1.3))
    report = check_equivalence(X, rendle, member, scale, n_epochs=4)
    assert report.max_rel_factor_diff < 1e-6
    assert report.max_score_diff < 1e-6
    assert report.rankings_identical
    # the checker sees a difference when the known scaling is left out
    unscaled = check_equivalence(X, rendle, member, 1.0, n_epochs=4)
    assert unscaled.max_rel_factor_diff > 1e-2


def test_maps_invert():
    rendle = dict(objective="rendle", unobserved_weight=0.3, regularization=0.05)
    member, s = rendle_to_weighted(rendle)
    back, s_back = weighted_to_rendle(member)
    assert back["objective"] == "rendle"
    assert back["unobserved_weight"] == pytest.approx(0.3)
    assert s * s_back == pytest.approx(1.0)
    hu = dict(objective="hu", confidence_scale=4.0, unobserved_weight=1.0, regularization=1.0)
    back, _ = weighted_to_hu(hu_to_weighted(hu)[0], unobserved_weight=1.0)
    assert back["confidence_scale"] == pytest.approx(4.0)
    assert back["regularization"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="negative confidence"):
        weighted_to_hu(hu_to_weighted(hu)[0], unobserved_weight=0.1)


def test_chuang_equals_standard_only_when_weights_are_constant(rng):
    n_users, n_items, per_user = 50, 40, 6
    cols = np.stack([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)])
    regular = sp.csr_matrix(
        (np.ones(cols.size), (np.repeat(np.arange(n_users), per_user), cols.ravel())),
        shape=(n_users, n_items),
    )
    chuang = dict(
        objective="debiased_chuang",
        unobserved_weight=0.5,
        prior_inflation=1.0,
        regularization=0.1,
        n_factors=5,
        solver="cholesky",
    )
    standard = debiased_to_weighted(chuang, regular)
    # every user has n_u = 6: c_u = w n_u / (n - n_u) is one number, the forms coincide
    assert standard["unobserved_weight"] == pytest.approx(0.5 * 6 / 34)
    exact = check_equivalence(regular, chuang, standard, n_epochs=4)
    assert exact.max_rel_factor_diff < 1e-6 and exact.rankings_identical
    # on power-law-ish data c_u varies with n_u: no standard setting is the same model
    X = random_interactions(rng, 50, 40, density=0.2)
    gap = check_equivalence(X, chuang, debiased_to_weighted(chuang, X), n_epochs=4)
    assert gap.max_rel_factor_diff > 1e-3


def test_peer_presets_fit(rng):
    X = random_interactions(rng, 40, 30)
    for params in (
        implicit_params(factors=4, alpha=10.0, iterations=2),
        spark_params(rank=4, alpha=10.0, max_iter=2),
    ):
        model = IALS(**params, random_state=0).fit(X)
        assert np.isfinite(model.item_factors_).all()
    with pytest.raises(ValueError, match="alpha < 1"):
        implicit_params(alpha=0.5)

"""Hyper-parameter maps between the members of the iALS family, and a numerical checker.

THEORY.md ("The full-batch view") states two exact equivalences between iALS objectives:

1. Hu et al.'s iALS on binary data, positives weighted ``1 + alpha`` and unobserved entries
   ``w0``, divided by ``1 + alpha`` is the K = 1 member (positives weight 1) with unobserved
   weight ``w0 / (1 + alpha)`` and regularisation ``lam / (1 + alpha)``: identical iterates
   from the same initialisation (:func:`hu_to_weighted`).
2. Rendle et al.'s iALS (``alpha0`` over all items) equals the K = 1 member with unobserved
   weight ``alpha0 / (1 + alpha0)`` and the same ``lam``: with ``W' = s W, H' = s H`` and
   ``s = sqrt(1 + alpha0)``, Rendle's objective times ``1 + alpha0`` is the member's objective
   at ``(W', H')`` plus a constant. Iterates from ``(s W0, s H0)`` are ``s`` times Rendle's,
   scores ``1 + alpha0`` times, rankings identical (:func:`rendle_to_weighted`). Frequency
   scaled regularisers keep the same r values (the offset stays ``alpha0``).

The K = 1 member with a constant unobserved weight is the full-batch debiased MSE whenever the
user-specific weights are constant; the Chuang (``c_u`` varies with n_u) and PU (``s_u`` varies
with n_u) forms have no exact standard counterpart: :func:`debiased_to_weighted` gives the
standard member with the same average weights, a starting point to measure the gap
(``examples/ials_inherent_debiasing.py``).

Peers' parameterisations as :class:`linrec.ials.IALS` keyword arguments:
:func:`implicit_params`, :func:`spark_params`, :func:`rendle_params`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from linrec._validation import check_interactions
from linrec.ials import IALS, objective_terms

__all__ = [
    "EquivalenceReport",
    "check_equivalence",
    "debiased_to_weighted",
    "hu_to_weighted",
    "implicit_params",
    "rendle_params",
    "rendle_to_weighted",
    "spark_params",
    "weighted_to_hu",
    "weighted_to_rendle",
]


def _offset(params):
    off = params.get("reg_frequency_offset")
    return params.get("unobserved_weight", 0.1) if off is None else off


def hu_to_weighted(params: dict) -> tuple[dict, float]:
    """Map ``objective="hu"`` parameters to the K = 1 member (positives weight 1).

    Exact on binary data only (the confidence ``1 + alpha r`` is then one number).

    Returns
    -------
    params : dict
        IALS keyword arguments of the equivalent member.
    factor_scale : float
        Factors of the member = ``factor_scale`` times the Hu factors (1 here).

    Examples
    --------
    >>> p, s = hu_to_weighted(dict(objective="hu", confidence_scale=9.0,
    ...                            unobserved_weight=1.0, regularization=0.5))
    >>> p["unobserved_weight"], p["regularization"], s
    (0.1, 0.05, 1.0)
    """
    if params.get("objective") != "hu":
        raise ValueError("hu_to_weighted maps objective='hu' parameters")
    alpha = float(params.get("confidence_scale", 0.0))
    out = dict(params)
    out.update(
        confidence_scale=0.0,
        unobserved_weight=params.get("unobserved_weight", 0.1) / (1 + alpha),
        regularization=params.get("regularization", 0.01) / (1 + alpha),
        reg_frequency_offset=_offset(params),
    )
    return out, 1.0


def weighted_to_hu(params: dict, unobserved_weight: float = 1.0) -> tuple[dict, float]:
    """Inverse of :func:`hu_to_weighted`: the Hu form with the given unobserved weight."""
    if params.get("objective") != "hu" or params.get("confidence_scale", 0.0) != 0:
        raise ValueError("weighted_to_hu maps objective='hu' with confidence_scale=0")
    scale = unobserved_weight / params["unobserved_weight"]  # = 1 + alpha
    if scale < 1:
        raise ValueError(
            f"unobserved_weight {unobserved_weight} is below the member's "
            f"{params['unobserved_weight']}: it would need a negative confidence scale"
        )
    out = dict(params)
    out.update(
        confidence_scale=scale - 1.0,
        unobserved_weight=float(unobserved_weight),
        regularization=params.get("regularization", 0.01) * scale,
        reg_frequency_offset=_offset(params),
    )
    return out, 1.0


def rendle_to_weighted(params: dict) -> tuple[dict, float]:
    """Map ``objective="rendle"`` to the K = 1 member; factors scale by sqrt(1 + alpha0).

    Examples
    --------
    >>> p, s = rendle_to_weighted(dict(objective="rendle", unobserved_weight=0.25,
    ...                                regularization=0.1))
    >>> p["objective"], p["unobserved_weight"], p["regularization"], round(s**2, 6)
    ('hu', 0.2, 0.1, 1.25)
    """
    if params.get("objective", "rendle") != "rendle":
        raise ValueError("rendle_to_weighted maps objective='rendle' parameters")
    alpha0 = float(params.get("unobserved_weight", 0.1))
    out = dict(params)
    out.update(
        objective="hu",
        confidence_scale=0.0,
        unobserved_weight=alpha0 / (1 + alpha0),
        reg_frequency_offset=_offset(params),
    )
    return out, float(np.sqrt(1 + alpha0))


def weighted_to_rendle(params: dict) -> tuple[dict, float]:
    """Inverse of :func:`rendle_to_weighted` (needs unobserved weight < 1)."""
    if params.get("objective") != "hu" or params.get("confidence_scale", 0.0) != 0:
        raise ValueError("weighted_to_rendle maps objective='hu' with confidence_scale=0")
    c = float(params["unobserved_weight"])
    if not 0 <= c < 1:
        raise ValueError(f"the member's unobserved weight must lie in [0, 1), got {c}")
    alpha0 = c / (1 - c)
    out = dict(params)
    out.update(objective="rendle", unobserved_weight=alpha0, reg_frequency_offset=_offset(params))
    return out, float(1 / np.sqrt(1 + alpha0))


def debiased_to_weighted(params: dict, X) -> dict:
    """The standard member (K = 1, constant weights) closest in average weight to a debiased one.

    The debiased member weights user u's unobserved entries C_u and its positives C_u + E_ui
    (see :func:`linrec.ials.objective_terms`); the standard member gets the average over all
    positive entries of the ratio C_u / (C_u + E_ui), which is what matters for the
    minimiser up to a per-user scale. Chuang form: the ratio varies with n_u; PU form: the
    ratio is constant and the per-user scale s_u varies. This is not an equivalence
    (THEORY.md): it is the natural standard setting to compare the debiased solution with.
    """
    X = check_interactions(X, dtype=np.float64)
    if params.get("objective") not in ("debiased_chuang", "debiased_pu"):
        raise ValueError("debiased_to_weighted maps the debiased objectives")
    row_weight, extra, _ = objective_terms(
        X,
        params["objective"],
        unobserved_weight=params.get("unobserved_weight", 0.1),
        prior_inflation=params.get("prior_inflation", 1.0),
        class_prior=params.get("class_prior"),
    )
    c_entry = row_weight[np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))]
    ratio = c_entry / (c_entry + extra)
    out = {k: v for k, v in params.items() if k not in ("prior_inflation", "class_prior")}
    out.update(
        objective="hu",
        confidence_scale=0.0,
        unobserved_weight=float(np.mean(ratio)),
        reg_frequency_offset=_offset(params),
    )
    return out


def implicit_params(
    factors=100, regularization=0.01, alpha=1.0, iterations=15, use_cg=True, cg_steps=3
) -> dict:
    """IALS arguments reproducing implicit's AlternatingLeastSquares objective on binary data.

    implicit weights a positive by ``alpha * value`` and an unobserved entry by 1 with plain L2;
    on binary data that is the Hu form with confidence scale ``alpha - 1`` (needs alpha >= 1).
    """
    if alpha < 1:
        raise ValueError(f"alpha < 1 down-weights positives below unobserved entries: {alpha}")
    return dict(
        objective="hu",
        n_factors=factors,
        regularization=regularization,
        confidence_scale=float(alpha) - 1.0,
        unobserved_weight=1.0,
        n_epochs=iterations,
        solver="cg" if use_cg else "cholesky",
        cg_steps=cg_steps,
    )


def spark_params(rank=10, reg_param=0.1, alpha=1.0, max_iter=10) -> dict:
    """IALS arguments of Spark MLlib ALS(implicitPrefs=True): ``c = 1 + alpha |r|``, ``lam n_u``."""
    return dict(
        objective="hu",
        n_factors=rank,
        regularization=reg_param,
        confidence_scale=float(alpha),
        unobserved_weight=1.0,
        reg_exponent=1.0,
        reg_frequency_offset=0.0,
        n_epochs=max_iter,
        solver="cholesky",
    )


def rendle_params(
    n_factors=64, alpha0=0.1, regularization=0.003, reg_exponent=1.0, block_size=32, n_epochs=16
) -> dict:
    """IALS arguments of Rendle et al. / irspack iALS (frequency-scaled L2, iALS++ solver)."""
    return dict(
        objective="rendle",
        n_factors=n_factors,
        unobserved_weight=alpha0,
        regularization=regularization,
        reg_exponent=reg_exponent,
        solver="ialspp",
        block_size=block_size,
        n_epochs=n_epochs,
    )


@dataclass
class EquivalenceReport:
    """Result of :func:`check_equivalence`.

    Attributes
    ----------
    max_rel_factor_diff : float
        ``max |s F_a - F_b| / max |F_b|`` over user and item factors.
    max_score_diff : float
        ``max |s^2 y_a - y_b| / max |y_b|`` over the checked users' scores.
    top_k_overlap : float
        Mean fraction of shared top-k items (seen items excluded).
    rankings_identical : bool
        Every checked user's top-k list is the same, in the same order.
    factor_scale : float
    """

    max_rel_factor_diff: float
    max_score_diff: float
    top_k_overlap: float
    rankings_identical: bool
    factor_scale: float


def check_equivalence(
    X,
    params_a: dict,
    params_b: dict,
    factor_scale: float = 1.0,
    *,
    n_epochs=5,
    k=20,
    max_users=2000,
    random_state=0,
    dtype="float64",
    n_jobs=None,
) -> EquivalenceReport:
    """Fit two IALS models from the same (scaled) initialisation and compare them.

    Model a starts from ``(P0, Q0)``, model b from ``(s P0, s Q0)`` with ``s =
    factor_scale``; both run ``n_epochs`` epochs with their own parameters (the solver, d and
    dtype are taken from ``params_a``). Scores are compared after the known scaling ``s^2`` on
    up to ``max_users`` users.
    """
    X = check_interactions(X, dtype=np.float64, allow_empty_rows=False)
    common = dict(n_epochs=n_epochs, dtype=dtype, n_jobs=n_jobs)
    a = IALS(**{**params_a, **common})
    b = IALS(**{**params_b, **common, "n_factors": a.n_factors})
    d = int(a.n_factors)
    rng = np.random.default_rng(random_state)
    std = 0.1 / np.sqrt(d) if a.init_std is None else float(a.init_std)
    P0 = rng.standard_normal((X.shape[0], d)) * std
    Q0 = rng.standard_normal((X.shape[1], d)) * std
    s = float(factor_scale)
    a.fit(X, initial_factors=(P0, Q0))
    b.fit(X, initial_factors=(s * P0, s * Q0))
    diffs = []
    for fa, fb in ((a.user_factors_, b.user_factors_), (a.item_factors_, b.item_factors_)):
        fa = fa.astype(np.float64)
        fb = fb.astype(np.float64)
        diffs.append(np.abs(s * fa - fb).max() / max(np.abs(fb).max(), 1e-300))
    users = np.arange(X.shape[0])
    if users.size > max_users:
        users = np.sort(np.random.default_rng(random_state).choice(users, max_users, False))
    ya = a.user_factors_[users].astype(np.float64) @ a.item_factors_.T.astype(np.float64)
    yb = b.user_factors_[users].astype(np.float64) @ b.item_factors_.T.astype(np.float64)
    score_diff = np.abs(s * s * ya - yb).max() / max(np.abs(yb).max(), 1e-300)
    rows = sp.csr_matrix(X[users])
    top_a, _ = a.recommend(rows, k)
    top_b, _ = b.recommend(rows, k)
    overlap = np.mean([np.intersect1d(ra, rb).size / k for ra, rb in zip(top_a, top_b)])
    return EquivalenceReport(
        max_rel_factor_diff=float(max(diffs)),
        max_score_diff=float(score_diff),
        top_k_overlap=float(overlap),
        rankings_identical=bool(np.array_equal(top_a, top_b)),
        factor_scale=s,
    )

"""The loss registry of :class:`linrec.mf.MF`: formulas, hyper-parameters, numpy references.

Every loss is a function of the scores of one training pair (u, i+):

- ``pos``: the positive's score y_ui (a float),
- ``neg``: the scores y_uj of the N sampled negatives, shape (N,),
- ``extra``: the scores y_uk of M extra positives k ~ Uniform(I_u+), shape (M,) (only the
  debiased losses use them),
- ``tau``: the user's class prior tau_u, the probability that a uniformly drawn item is one of
  u's positives (``tau_u = K n_u / n`` by default, see :func:`class_prior`).

Scores are y = <p_u, q_i> (``score="dot"``) or cos(p_u, q_i) (``score="cosine"``); the
softmax-type losses divide them by the temperature t (s = y / t).

Losses (name: per-pair value [hyper-parameters]):

- ``bpr``: sum_j softplus(y_j - y+)  [N], or the same sum over the H highest-scoring of the
  N negatives only  [N, H] (dynamic negative sampling)
- ``infonce`` (alias ``softmax``): -s+ + log(e^{s+} + sum_j e^{s_j})  [N, t]
- ``debiased_infonce``: -s+ + log(e^{s+} + N g),
  g = max((mean_j e^{s_j} - tau mean_k e^{s_k}) / (1 - tau), e^{-1/t})  [N, M, t, K]
- ``mine``: -s+ + log mean_j e^{s_j}  [N, t]
- ``mine_plus``: -s+ + lam log mean_j e^{s_j}  [N, t, lam]
- ``infonce_plus``: -s+ + lam log(eps e^{s+} + sum_j e^{s_j})  [N, t, lam, eps]
- ``ccl``: relu(1 - y+) + w mean_j relu(y_j - m)  [N, w, m]
- ``debiased_ccl``: tau relu(1 - y+) + w [mean_j relu(y_j - m) - tau mean_k relu(y_k - m)]
  [N, M, w, m, K]
- ``mse``: (1 - y+)^2 + w mean_j y_j^2  [N, w]
- ``debiased_mse``: (1 - y+)^2 + w / (1 - tau) [mean_j y_j^2 - tau mean_k y_k^2]  [N, M, w, K]
- ``debiased_mse_pu``: tau (1 - y+)^2 + w [mean_j y_j^2 - tau mean_k y_k^2]  [N, M, w, K]

(N negatives, M extra positives, t temperature, w negative weight, m margin, lam balance,
eps normaliser weight of the positive, K prior inflation, H hard negatives.)

Notes on the choices made here:

- ``debiased_infonce`` is Chuang et al.'s estimator (2020) with their floor e^{-1/t} on g (the
  smallest value of e^{s} for cosine scores). At tau = 0 it equals InfoNCE whenever
  mean_j e^{s_j} >= e^{-1/t}, which always holds for cosine scores.
- ``debiased_ccl`` is the positive-unlabelled form with each pair weighted by its own user's
  tau_u (the authors' lab code multiplies by the batch-mean tau through a broadcasting slip;
  this is the formula, not the slip).
- ``debiased_mse`` is Chuang's form, ``debiased_mse_pu`` the positive-unlabelled form.
- MINE+ with balance lam is the authors' two-temperature loss -y+/t_pos + log sum_j
  e^{y_j/t_neg} with lam = t_pos / t_neg (up to a constant and a rescaling of t).
- InfoNCE+ with eps = 0 is the decoupled contrastive loss; eps = 1, lam = 1 is InfoNCE.
- BPR is the sum over the N negatives (N = 1 gives classic BPR). Bounds used as tests:
  (1/N) BPR <= InfoNCE <= BPR (at t = 1) and MINE + log N <= InfoNCE.
- BPR with ``hard_negatives`` H < N keeps only the H negatives the model scores highest
  (Zhang et al.'s dynamic negative sampling, DNS: draw N candidates, train on the hardest).
  The choice is made anew at every step from the current scores; the gradient flows through
  the chosen ones only (the loss is piecewise smooth, with kinks where two scores tie).

References
----------
R. Jin, D. Li. (Debiased) Contrastive Learning Loss for Recommendation. arXiv 2312.08517, 2023.
D. Li, R. Jin, B. Ren. Revisiting Recommendation Loss Functions through Contrastive Learning.
arXiv 2312.08520, 2023.
C.-Y. Chuang et al. Debiased Contrastive Learning. NeurIPS 2020.
W. Zhang, T. Chen, J. Wang, Y. Yu. Optimizing Top-N Collaborative Filtering via Dynamic
Negative Item Sampling. SIGIR 2013.
K. Mao et al. SimpleX: A Simple and Strong Baseline for Collaborative Filtering. CIKM 2021.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["LOSSES", "LossSpec", "class_prior", "get_loss", "loss_value"]


def _softplus(x):
    return np.logaddexp(0.0, x)


def _logmeanexp(x):
    return np.logaddexp.reduce(x) - np.log(x.size)


def _relu(x):
    return np.maximum(x, 0.0)


# ----------------------------------------------------------------------------- references
# Each reference evaluates the formula literally in float64; they are the ground truth the
# numba kernels are tested against.


def _bpr(pos, neg, extra, tau, p):
    n_hard = p["hard_negatives"]
    if 0 < n_hard < neg.size:
        neg = np.sort(neg)[::-1][:n_hard]
    return float(np.sum(_softplus(neg - pos)))


def _infonce(pos, neg, extra, tau, p):
    s_pos, s_neg = pos / p["temperature"], neg / p["temperature"]
    return float(-s_pos + np.logaddexp.reduce(np.concatenate(([s_pos], s_neg))))


def _debiased_infonce(pos, neg, extra, tau, p):
    t = p["temperature"]
    s_pos, s_neg, s_extra = pos / t, neg / t, extra / t
    g = (np.mean(np.exp(s_neg)) - tau * np.mean(np.exp(s_extra))) / (1.0 - tau)
    g = max(g, np.exp(-1.0 / t))
    return float(-s_pos + np.log(np.exp(s_pos) + neg.size * g))


def _mine(pos, neg, extra, tau, p):
    t = p["temperature"]
    return float(-pos / t + _logmeanexp(neg / t))


def _mine_plus(pos, neg, extra, tau, p):
    t = p["temperature"]
    return float(-pos / t + p["balance"] * _logmeanexp(neg / t))


def _infonce_plus(pos, neg, extra, tau, p):
    t, eps = p["temperature"], p["normalizer_positive_weight"]
    s_pos, s_neg = pos / t, neg / t
    return float(-s_pos + p["balance"] * np.log(eps * np.exp(s_pos) + np.sum(np.exp(s_neg))))


def _ccl(pos, neg, extra, tau, p):
    w, m = p["negative_weight"], p["margin"]
    return float(_relu(1.0 - pos) + w * np.mean(_relu(neg - m)))


def _debiased_ccl(pos, neg, extra, tau, p):
    w, m = p["negative_weight"], p["margin"]
    return float(
        tau * _relu(1.0 - pos) + w * (np.mean(_relu(neg - m)) - tau * np.mean(_relu(extra - m)))
    )


def _mse(pos, neg, extra, tau, p):
    return float((1.0 - pos) ** 2 + p["negative_weight"] * np.mean(neg**2))


def _debiased_mse(pos, neg, extra, tau, p):
    w = p["negative_weight"]
    return float((1.0 - pos) ** 2 + w / (1.0 - tau) * (np.mean(neg**2) - tau * np.mean(extra**2)))


def _debiased_mse_pu(pos, neg, extra, tau, p):
    w = p["negative_weight"]
    return float(tau * (1.0 - pos) ** 2 + w * (np.mean(neg**2) - tau * np.mean(extra**2)))


@dataclass(frozen=True)
class LossSpec:
    """One entry of the registry.

    Attributes
    ----------
    name : str
        Registry name (``MF(loss=name)``).
    code : int
        Integer the numba kernel dispatches on.
    formula : str
        The per-pair value, in the notation of this module.
    hyperparameters : tuple of str
        Names of the :class:`~linrec.mf.MF` parameters the loss reads.
    uses_extra_positives : bool
        Whether the loss needs M extra positives and the class prior tau_u.
    default_score : str
        Score used by ``MF(score="auto")``: "cosine" for the softmax and margin losses (as in
        SimpleX and the paper), "dot" for BPR and the squared losses.
    reference : callable
        ``reference(pos, neg, extra, tau, params) -> float``: literal float64 evaluation.
    """

    name: str
    code: int
    formula: str
    hyperparameters: tuple[str, ...]
    uses_extra_positives: bool
    default_score: str
    reference: Callable


_T, _W, _M, _LAM, _EPS, _HARD = (
    "temperature",
    "negative_weight",
    "margin",
    "balance",
    "normalizer_positive_weight",
    "hard_negatives",
)
_PRIOR = ("n_extra_positives", "prior_inflation", "class_prior")

_SPECS = [
    LossSpec(
        "bpr",
        0,
        "sum_j softplus(y_j - y+), over the H highest y_j if H is given",
        ("n_negatives", _HARD),
        False,
        "dot",
        _bpr,
    ),
    LossSpec(
        "infonce",
        1,
        "-s+ + log(e^{s+} + sum_j e^{s_j}), s = y/t",
        ("n_negatives", _T),
        False,
        "cosine",
        _infonce,
    ),
    LossSpec(
        "debiased_infonce",
        2,
        "-s+ + log(e^{s+} + N g), g = max((mean_j e^{s_j} - tau mean_k e^{s_k})/(1-tau), e^{-1/t})",
        ("n_negatives", _T, *_PRIOR),
        True,
        "cosine",
        _debiased_infonce,
    ),
    LossSpec("mine", 3, "-s+ + log mean_j e^{s_j}", ("n_negatives", _T), False, "cosine", _mine),
    LossSpec(
        "mine_plus",
        4,
        "-s+ + lam log mean_j e^{s_j}",
        ("n_negatives", _T, _LAM),
        False,
        "cosine",
        _mine_plus,
    ),
    LossSpec(
        "infonce_plus",
        5,
        "-s+ + lam log(eps e^{s+} + sum_j e^{s_j})",
        ("n_negatives", _T, _LAM, _EPS),
        False,
        "cosine",
        _infonce_plus,
    ),
    LossSpec(
        "ccl",
        6,
        "relu(1 - y+) + w mean_j relu(y_j - m)",
        ("n_negatives", _W, _M),
        False,
        "cosine",
        _ccl,
    ),
    LossSpec(
        "debiased_ccl",
        7,
        "tau relu(1 - y+) + w [mean_j relu(y_j - m) - tau mean_k relu(y_k - m)]",
        ("n_negatives", _W, _M, *_PRIOR),
        True,
        "cosine",
        _debiased_ccl,
    ),
    LossSpec("mse", 8, "(1 - y+)^2 + w mean_j y_j^2", ("n_negatives", _W), False, "dot", _mse),
    LossSpec(
        "debiased_mse",
        9,
        "(1 - y+)^2 + w/(1 - tau) [mean_j y_j^2 - tau mean_k y_k^2]",
        ("n_negatives", _W, *_PRIOR),
        True,
        "dot",
        _debiased_mse,
    ),
    LossSpec(
        "debiased_mse_pu",
        10,
        "tau (1 - y+)^2 + w [mean_j y_j^2 - tau mean_k y_k^2]",
        ("n_negatives", _W, *_PRIOR),
        True,
        "dot",
        _debiased_mse_pu,
    ),
]

#: name -> LossSpec; ``softmax`` is an alias of ``infonce``.
LOSSES: dict[str, LossSpec] = {spec.name: spec for spec in _SPECS}
LOSSES["softmax"] = LOSSES["infonce"]

_DEFAULT_PARAMS = {_T: 1.0, _W: 1.0, _M: 0.0, _LAM: 1.0, _EPS: 0.0, _HARD: 0}


def get_loss(name: str) -> LossSpec:
    """The registry entry for ``name``; a ValueError lists the valid names otherwise.

    Examples
    --------
    >>> get_loss("softmax").name
    'infonce'
    """
    if not isinstance(name, str) or name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name]


def loss_value(name, pos, neg, extra=None, tau=0.0, **params) -> float:
    """Per-pair loss from scores, evaluated literally in float64 (the reference).

    Parameters
    ----------
    name : str
        Registry name.
    pos : float
        Score of the positive item.
    neg : array-like of shape (N,)
        Scores of the sampled negatives.
    extra : array-like of shape (M,), optional
        Scores of the extra positives (debiased losses only).
    tau : float, default=0.0
        The user's class prior tau_u.
    **params
        ``temperature``, ``negative_weight``, ``margin``, ``balance``,
        ``normalizer_positive_weight``, ``hard_negatives`` (defaults 1, 1, 0, 1, 0, 0; a
        ``hard_negatives`` of 0 keeps all the negatives).

    Examples
    --------
    >>> round(loss_value("bpr", 0.0, [0.0]), 6)
    0.693147
    >>> round(loss_value("infonce", 0.0, [0.0, 0.0]), 6)
    1.098612
    >>> round(loss_value("bpr", 0.0, [-30.0, 0.0], hard_negatives=1), 6)
    0.693147
    """
    spec = get_loss(name)
    unknown = set(params) - set(_DEFAULT_PARAMS)
    if unknown:
        raise ValueError(f"unknown loss parameters {sorted(unknown)}")
    merged = {**_DEFAULT_PARAMS, **params}
    neg = np.asarray(neg, dtype=np.float64)
    extra = np.zeros(0) if extra is None else np.asarray(extra, dtype=np.float64)
    if spec.uses_extra_positives and extra.size == 0:
        raise ValueError(f"loss {spec.name!r} needs extra positive scores")
    return spec.reference(float(pos), neg, extra, float(tau), merged)


def class_prior(n_positives, n_items: int, inflation: float = 1.0) -> np.ndarray:
    """Per-user class prior tau_u = K n_u / n, clipped below 1.

    Parameters
    ----------
    n_positives : array-like of int, shape (n_users,)
        Training positives per user, n_u.
    n_items : int
        Catalogue size n.
    inflation : float, default=1.0
        K >= 1, inflating the prior for hidden positives (the authors' code uses 1.25).

    Returns
    -------
    tau : ndarray of shape (n_users,), float64
        Values in [0, 1 - 1e-3]: the Chuang forms divide by 1 - tau.

    Examples
    --------
    >>> class_prior([1, 4], 8, inflation=1.0)
    array([0.125, 0.5  ])
    """
    tau = float(inflation) * np.asarray(n_positives, dtype=np.float64) / float(n_items)
    return np.clip(tau, 0.0, 1.0 - 1e-3)

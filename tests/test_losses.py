"""Losses of the MF path: numba forward vs the numpy reference, gradients vs finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from linrec._kernels import sgd
from linrec.losses import LOSSES, class_prior, get_loss, loss_value

NAMES = sorted(name for name in LOSSES if name != "softmax")
PARAMS = {
    "temperature": 0.7,
    "negative_weight": 1.3,
    "margin": 0.2,
    "balance": 1.15,
    "normalizer_positive_weight": 0.4,
}


def _kernel_loss(name, pos, neg, extra, tau, p=PARAMS):
    y = np.concatenate(([pos], extra, neg)).astype(np.float64)
    g = np.empty_like(y)
    spec = get_loss(name)
    return sgd.loss_grad(spec.code, y, extra.size, neg.size, tau, sgd.loss_params(**p), g), g


def _score_gradient_fd(name, y, n_extra, tau, p, h=1e-6):
    """Central differences of the reference loss in the scores y = [y+, extra, negatives]."""

    def value(v):
        return loss_value(name, v[0], v[1 + n_extra :], v[1 : 1 + n_extra], tau, **p)

    fd = np.empty_like(y)
    for a in range(y.size):
        yp, ym = y.copy(), y.copy()
        yp[a] += h
        ym[a] -= h
        fd[a] = (value(yp) - value(ym)) / (2 * h)
    return fd


@pytest.mark.parametrize("name", NAMES)
def test_forward_matches_reference(name, rng):
    for _ in range(20):
        n_neg, n_extra = rng.integers(1, 12), rng.integers(1, 6)
        pos = rng.uniform(-2, 2)
        neg = rng.uniform(-2, 2, n_neg)
        extra = rng.uniform(-2, 2, n_extra)
        tau = rng.uniform(0.0, 0.3)
        got, _ = _kernel_loss(name, pos, neg, extra, tau)
        want = loss_value(name, pos, neg, extra, tau, **PARAMS)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_score_gradient_matches_finite_differences(name, rng):
    n_neg, n_extra = 7, 3
    for _ in range(5):
        y = rng.uniform(-0.9, 0.9, 1 + n_extra + n_neg)
        tau = 0.05
        pos, extra, neg = y[0], y[1 : 1 + n_extra], y[1 + n_extra :]
        _, g = _kernel_loss(name, pos, neg, extra, tau)
        fd = _score_gradient_fd(name, y, n_extra, tau, PARAMS)
        assert np.linalg.norm(g - fd) <= 1e-6 * max(np.linalg.norm(fd), 1e-12)


@pytest.mark.parametrize("n_hard", [1, 3, 7])
def test_bpr_hard_negatives_match_reference_and_finite_differences(n_hard, rng):
    # the kernel's choice of the n_hard highest scores, its value and its gradient (zero on
    # the negatives left out); n_hard = 7 = N keeps them all
    n_neg = 7
    p = dict(PARAMS, hard_negatives=n_hard)
    for _ in range(20):
        pos, neg = rng.uniform(-2, 2), rng.uniform(-2, 2, n_neg)
        got, g = _kernel_loss("bpr", pos, neg, np.zeros(0), 0.0, p)
        np.testing.assert_allclose(got, loss_value("bpr", pos, neg, **p), rtol=1e-12)
        kept = np.argsort(-neg)[:n_hard]
        assert np.all(g[1:][np.setdiff1d(np.arange(n_neg), kept)] == 0.0)
        assert np.all(g[1:][kept] > 0.0)
        fd = _score_gradient_fd("bpr", np.concatenate(([pos], neg)), 0, 0.0, p)
        assert np.linalg.norm(g - fd) <= 1e-6 * np.linalg.norm(fd)
    # fewer hard negatives, a smaller loss: the sum keeps only the largest terms
    pos, neg = 0.1, rng.uniform(-2, 2, n_neg)
    values = [loss_value("bpr", pos, neg, hard_negatives=k) for k in range(1, n_neg + 1)]
    assert np.all(np.diff(values) > 0)
    assert values[-1] == pytest.approx(loss_value("bpr", pos, neg))


def _random_problem(rng, n_users=4, n_items=9, d=5, n_pairs=6, n_extra=3, n_neg=5):
    W = rng.normal(0, 0.5, (n_users + n_items, d))
    users = rng.integers(0, n_users, n_pairs)
    targets = rng.integers(0, n_items, (n_pairs, 1 + n_extra + n_neg))
    tau = rng.uniform(0.01, 0.3, n_pairs)
    return W, users, targets, tau


def _scores_numpy(W, n_users, u, items, cosine, keep=None):
    p = W[u]
    if cosine:
        p = p / np.linalg.norm(p)
    if keep is not None:  # user dropout: the mask applies to the (unit) user vector
        p = p * keep
    Q = W[n_users + items]
    if cosine:
        Q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    return Q @ p


@pytest.mark.parametrize("dropout", [False, True], ids=["", "dropout"])
@pytest.mark.parametrize("share", [False, True], ids=["pair", "shared"])
@pytest.mark.parametrize("cosine", [False, True], ids=["dot", "cosine"])
@pytest.mark.parametrize("name", NAMES)
def test_embedding_gradient(name, cosine, share, dropout, rng):
    _check_embedding_gradient(name, cosine, share, dropout, rng, n_neg=5)


@pytest.mark.parametrize("share", [False, True], ids=["pair", "shared"])
@pytest.mark.parametrize("cosine", [False, True], ids=["dot", "cosine"])
def test_embedding_gradient_bpr_hard_negatives(cosine, share, rng):
    _check_embedding_gradient("bpr", cosine, share, False, rng, n_neg=9, hard_negatives=2)


@pytest.mark.parametrize("name", ["infonce", "mse"])
def test_embedding_gradient_many_shared_negatives(name, rng):
    # the block's matrix products in full 6 x 16 register tiles and in their edges: 6 pairs,
    # 600 negatives and d = 20 (the small problems above reach the edge paths only)
    _check_embedding_gradient(name, True, True, False, rng, n_neg=600, d=20)


def _check_embedding_gradient(name, cosine, share, dropout, rng, n_neg, d=5, **extra_params):
    n_users, n_extra = 4, 3
    W, users, targets, tau = _random_problem(rng, n_users=n_users, n_neg=n_neg, d=d)
    # a random mask per pair, 0 or 1 / (1 - rate) with rate 0.3
    keep = (rng.random((users.size, W.shape[1])) >= 0.3) / 0.7
    if share:  # every pair scores the same negatives (the batch-shared sampler)
        targets[:, 1 + n_extra :] = targets[0, 1 + n_extra :]
    spec = get_loss(name)
    # a high margin leaves most CCL negatives inactive (the kernel's sparse path)
    params = dict(PARAMS, margin=(0.6 if share else 0.1) if cosine else 0.2, **extra_params)
    parr = sgd.loss_params(**params)

    def total(Wx):
        out = 0.0
        for b in range(users.size):
            s = _scores_numpy(
                Wx, n_users, users[b], targets[b], cosine, keep[b] if dropout else None
            )
            out += loss_value(name, s[0], s[1 + n_extra :], s[1 : 1 + n_extra], tau[b], **params)
        return out

    value, grad = sgd.pairs_loss_and_grad(
        W,
        users,
        targets,
        tau,
        n_users,
        spec.code,
        parr,
        cosine,
        n_extra,
        n_neg,
        share,
        dropout,
        keep,
    )
    np.testing.assert_allclose(value, total(W), rtol=1e-12)
    h = 1e-6
    fd = np.zeros_like(W)
    for idx in np.ndindex(*W.shape):
        Wp, Wm = W.copy(), W.copy()
        Wp[idx] += h
        Wm[idx] -= h
        fd[idx] = (total(Wp) - total(Wm)) / (2 * h)
    rel = np.linalg.norm(grad - fd) / np.linalg.norm(fd)
    assert rel < 1e-6, rel


@pytest.mark.parametrize(
    ("low", "high", "rtol"),
    # the error grows with |x| (the reassociated argument reduction, see linrec._kernels.sgd):
    # measured 2.2e-16, 1.6e-15 and 2.4e-14 over these ranges
    [(-1.0, 1.0, 5e-16), (-40.0, 5.0, 3e-15), (-708.0, 709.0, 5e-14)],
)
def test_kernel_exp_matches_numpy(rng, low, high, rtol):
    # the vectorisable exp of the softmax losses, compiled with the losses' reassociation
    x = np.concatenate([np.linspace(low, high, 20001), rng.uniform(low, high, 20000), [0.0]])
    got = sgd.exp_array(x, np.empty(x.size))
    np.testing.assert_allclose(got, np.exp(x), rtol=rtol, atol=0)


@pytest.mark.parametrize(
    ("low", "high", "rtol"),
    # float32 models: the argument is rounded to float32 (relative 6e-8 of |x|), which sets
    # the error; measured 8.6e-8, 1.9e-6 and 3.9e-6 over these ranges
    [(-1.0, 1.0, 2e-7), (-40.0, 5.0, 4e-6), (-87.0, 88.0, 8e-6)],
)
def test_kernel_exp_single_matches_numpy(rng, low, high, rtol):
    x = np.concatenate([np.linspace(low, high, 20001), rng.uniform(low, high, 20000), [0.0]])
    got = sgd.exp_array(x, np.empty(x.size, np.float32))
    np.testing.assert_allclose(got, np.exp(x), rtol=rtol, atol=0)


def test_bpr_infonce_bounds(rng):
    for _ in range(200):
        n = int(rng.integers(1, 50))
        pos, neg = rng.normal(0, 3), rng.normal(0, 3, n)
        bpr = loss_value("bpr", pos, neg)
        nce = loss_value("infonce", pos, neg, temperature=1.0)
        mine = loss_value("mine", pos, neg, temperature=1.0)
        assert bpr / n <= nce + 1e-12
        assert nce <= bpr + 1e-12
        assert mine + np.log(n) <= nce + 1e-12


def test_reductions(rng):
    for _ in range(100):
        n, m = int(rng.integers(1, 30)), int(rng.integers(1, 10))
        t = float(rng.uniform(0.05, 1.0))
        # cosine-range scores: mean_j e^{s_j} >= e^{-1/t}, so the floor never binds at tau = 0
        pos, neg, extra = rng.uniform(-1, 1), rng.uniform(-1, 1, n), rng.uniform(-1, 1, m)
        nce = loss_value("infonce", pos, neg, temperature=t)
        assert np.isclose(
            loss_value("debiased_infonce", pos, neg, extra, 0.0, temperature=t), nce, rtol=1e-12
        )
        mine = loss_value("mine", pos, neg, temperature=t)
        assert np.isclose(
            loss_value("mine_plus", pos, neg, temperature=t, balance=1.0), mine, rtol=1e-12
        )
        # InfoNCE+ with eps = 1, lam = 1 is InfoNCE; with eps = 0 it is MINE + log N
        assert np.isclose(
            loss_value(
                "infonce_plus",
                pos,
                neg,
                temperature=t,
                balance=1.0,
                normalizer_positive_weight=1.0,
            ),
            nce,
            rtol=1e-12,
        )
        assert np.isclose(
            loss_value("infonce_plus", pos, neg, temperature=t, balance=1.0),
            mine + np.log(n),
            rtol=1e-12,
        )
        w = float(rng.uniform(0.1, 2))
        assert np.isclose(
            loss_value("debiased_mse", pos, neg, extra, 0.0, negative_weight=w),
            loss_value("mse", pos, neg, negative_weight=w),
        )
        assert np.isclose(
            loss_value("debiased_ccl", pos, neg, extra, 1.0 - 1e-15, negative_weight=w),
            loss_value("ccl", pos, neg, negative_weight=w) - w * np.mean(np.maximum(extra, 0.0)),
        )


def test_debiasing_is_exact_with_full_averages(rng):
    # THEORY.md's identity: with the negative mean over ALL items and tau = n_u / n, the
    # corrected negative term of debiased MSE is the mean over unobserved items only.
    n, n_u = 40, 7
    scores = rng.normal(0, 1, n)
    positives = scores[:n_u]
    tau = n_u / n
    corrected = (np.mean(scores**2) - tau * np.mean(positives**2)) / (1 - tau)
    assert np.isclose(corrected, np.mean(scores[n_u:] ** 2))
    value = loss_value("debiased_mse", 0.5, scores, positives, tau)
    assert np.isclose(value, 0.25 + np.mean(scores[n_u:] ** 2))


def test_registry_and_prior():
    assert get_loss("softmax") is get_loss("infonce")
    assert len({spec.code for spec in LOSSES.values()}) == len(NAMES)
    with pytest.raises(ValueError, match="unknown loss"):
        get_loss("hinge")
    with pytest.raises(ValueError, match="extra positive"):
        loss_value("debiased_mse", 0.0, [0.0])
    with pytest.raises(ValueError, match="unknown loss parameters"):
        loss_value("bpr", 0.0, [0.0], temprature=1.0)
    tau = class_prior([2, 5, 100], 100, inflation=1.25)
    np.testing.assert_allclose(tau, [0.025, 0.0625, 0.999])

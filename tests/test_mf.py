"""MF estimator: contract, determinism, learning, fold-in, every loss beats popularity."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import scipy.sparse as sp

from linrec._kernels import sgd
from linrec.losses import LOSSES
from linrec.mf import _OPTIMIZERS, MF, _validation_recall

from contract import RecommenderContract

LOSS_NAMES = sorted(name for name in LOSSES if name != "softmax")

# Settings that learn the planted structure below within a few seconds for every loss.
LOSS_SETTINGS = {
    "ccl": {"margin": 0.5, "negative_weight": 5.0},
    # the positive-unlabelled CCL weighs the positive term by tau_u (~0.05 here)
    "debiased_ccl": {"margin": 0.5, "negative_weight": 0.25},
    "mine_plus": {"balance": 1.1},
    "infonce_plus": {"balance": 1.1},
}


class TestMFContract(RecommenderContract):
    expected_failed_checks: ClassVar[dict[str, str]] = {
        **RecommenderContract.expected_failed_checks,
    }

    def make_estimator(self):
        return MF(
            "infonce",
            n_factors=4,
            n_negatives=4,
            n_epochs=3,
            batch_size=16,
            fold_in_epochs=3,
            random_state=0,
            n_jobs=1,
        )


def planted(seed=0, n_users=300, n_items=150, rank=4, per_user=16, test_share=0.25):
    """Users pick items by a planted low-rank affinity plus item popularity; split per entry."""
    rng = np.random.default_rng(seed)
    U = rng.normal(size=(n_users, rank))
    V = rng.normal(size=(n_items, rank))
    logits = 1.5 * U @ V.T + rng.normal(size=n_items)
    rows, cols = [], []
    for u in range(n_users):
        p = np.exp(logits[u] - logits[u].max())
        cols.extend(rng.choice(n_items, per_user, replace=False, p=p / p.sum()))
        rows.extend([u] * per_user)
    rows, cols = np.asarray(rows), np.asarray(cols)
    test = rng.random(rows.size) < test_share
    first = np.r_[True, rows[1:] != rows[:-1]]  # keep every user's first item in train
    test &= ~first
    shape = (n_users, n_items)
    train = sp.csr_matrix((np.ones((~test).sum()), (rows[~test], cols[~test])), shape=shape)
    held = sp.csr_matrix((np.ones(test.sum()), (rows[test], cols[test])), shape=shape)
    return train, held


@pytest.fixture(scope="module")
def data():
    return planted()


def popularity_recall(train, held, k=20):
    pop = np.asarray(train.sum(axis=0)).ravel()
    total, users = 0.0, 0
    for u in range(train.shape[0]):
        items = held.indices[held.indptr[u] : held.indptr[u + 1]]
        if items.size == 0:
            continue
        s = pop.astype(np.float64)
        s[train.indices[train.indptr[u] : train.indptr[u + 1]]] = -np.inf
        top = np.lexsort((np.arange(s.size), -s))[:k]
        total += np.isin(top, items).sum() / items.size
        users += 1
    return total / users


def _model(loss, **kw):
    params = dict(
        n_factors=16,
        n_negatives=32,
        n_epochs=25,
        learning_rate=0.01,
        batch_size=256,
        random_state=0,
        n_jobs=1,
    )
    params.update(LOSS_SETTINGS.get(loss, {}))
    params.update(kw)
    return MF(loss, **params)


@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_every_loss_beats_popularity(loss, data):
    train, held = data
    baseline = popularity_recall(train, held)
    model = _model(loss).fit(train, validation_data=held)
    recall = model.validation_scores_[-1]
    assert recall > 1.3 * baseline, (recall, baseline)
    assert model.loss_[-1] < model.loss_[0]
    assert len(model.epoch_times_) == 25


@pytest.mark.parametrize("sharing", ["batch", "pair"])
def test_bpr_with_hard_negatives_learns(sharing, data):
    train, held = data
    model = _model("bpr", hard_negatives=2, negative_sharing=sharing).fit(
        train, validation_data=held
    )
    assert model.validation_scores_[-1] > 1.3 * popularity_recall(train, held)
    assert model.loss_[-1] < model.loss_[0]
    # the pool of 32 is not used whole: the fit differs from plain BPR over the 32
    plain = _model("bpr", negative_sharing=sharing, n_epochs=2).fit(train)
    hard = _model("bpr", hard_negatives=2, negative_sharing=sharing, n_epochs=2).fit(train)
    assert not np.array_equal(plain.item_factors_, hard.item_factors_)
    # hard_negatives = N keeps every negative: plain BPR to the last bit
    whole = _model("bpr", hard_negatives=32, negative_sharing=sharing, n_epochs=2).fit(train)
    np.testing.assert_array_equal(plain.item_factors_, whole.item_factors_)


def test_validation_recall_matches_recommend(data):
    train, held = data
    model = _model("infonce", n_epochs=3).fit(train)
    scores = model._user_scores(None, np.arange(train.shape[0]))
    scores[train.nonzero()] = -np.inf
    total, n = 0.0, 0
    for u in range(train.shape[0]):
        items = held.indices[held.indptr[u] : held.indptr[u + 1]]
        if items.size:
            order = np.lexsort((np.arange(scores.shape[1]), -scores[u]))[:20]
            total += np.isin(order, items).sum() / items.size
            n += 1
    assert np.isclose(_validation_recall(model, train, held), total / n)


def test_deterministic_with_threads(data):
    train, _ = data
    a = _model("debiased_infonce", n_epochs=3, n_jobs=2).fit(train)
    b = _model("debiased_infonce", n_epochs=3, n_jobs=2).fit(train)
    np.testing.assert_array_equal(a.user_factors_, b.user_factors_)
    np.testing.assert_array_equal(a.item_factors_, b.item_factors_)
    assert a.loss_ == b.loss_
    c = _model("debiased_infonce", n_epochs=3, n_jobs=2, random_state=1).fit(train)
    assert not np.array_equal(a.item_factors_, c.item_factors_)


@pytest.mark.parametrize("sharing", ["batch", "pair"])
@pytest.mark.parametrize("optimizer", ["adam", "dense_adam", "adagrad", "sgd"])
def test_optimizers_and_samplers_learn(optimizer, sharing, data):
    train, held = data
    lr = {"adam": 0.01, "dense_adam": 0.01, "adagrad": 0.1, "sgd": 5.0}[optimizer]
    model = _model(
        "infonce",
        optimizer=optimizer,
        learning_rate=lr,
        negative_sharing=sharing,
        negative_sampler="popularity" if sharing == "pair" else "uniform",
        n_epochs=15,
    ).fit(train, validation_data=held)
    assert model.loss_[-1] < 0.9 * model.loss_[0]
    assert model.validation_scores_[-1] > 1.3 * popularity_recall(train, held)


def _numpy_optimizer_epoch(
    W,
    m1,
    m2,
    indptr,
    indices,
    order,
    spec,
    params,
    n_neg,
    batch,
    seed,
    optimizer,
    lr,
    l2,
    step,
    max_grad_norm=0.0,
):
    """One epoch of per-pair training in float64 numpy, samples drawn as the kernel draws them.

    The batch gradient comes from ``sgd.pairs_loss_and_grad`` (checked against finite
    differences in test_losses.py); the clipping and the optimiser steps are written out
    here. Returns the step count and the number of batches whose gradient was clipped.
    """
    n_users = indptr.size - 1
    n_items = W.shape[0] - n_users
    pair_users = np.repeat(np.arange(n_users), np.diff(indptr))
    b1, b2, eps = 0.9, 0.999, 1e-8
    clipped = 0
    for lo in range(0, order.size, batch):
        positions = np.arange(lo, min(order.size, lo + batch))
        users = pair_users[order[positions]]
        targets = np.empty((positions.size, 1 + n_neg), np.int64)
        for c, position in enumerate(positions):
            state = sgd._pair_state(seed, 0, position)
            sgd._sample_targets(
                np.uint64(state),
                indices[order[position]],
                users[c],
                indptr,
                indices,
                n_items,
                0,
                n_neg,
                sgd.UNIFORM,
                indices,
                targets[c],
            )
        _, grad = sgd.pairs_loss_and_grad(
            W,
            users,
            targets,
            np.zeros(positions.size),
            n_users,
            spec.code,
            params,
            False,
            0,
            n_neg,
            False,
            False,
            np.ones((positions.size, W.shape[1])),
        )
        grad /= positions.size
        if max_grad_norm > 0:
            # torch.nn.utils.clip_grad_norm_: the norm over every row, the l2 term excluded
            coef = max_grad_norm / (np.linalg.norm(grad) + 1e-6)
            if coef < 1:
                grad *= coef
                clipped += 1
        used = np.zeros(W.shape[0], bool)
        used[users] = True
        used[n_users + targets.ravel()] = True
        grad[used] += l2 * W[used]
        step += 1
        if optimizer == "sgd":
            W[used] -= lr * grad[used]
        elif optimizer == "adagrad":
            m2[used] += grad[used] ** 2
            W[used] -= lr * grad[used] / (np.sqrt(m2[used]) + eps)
        else:
            rows = used if optimizer == "adam" else np.ones(W.shape[0], bool)
            m1[rows] = b1 * m1[rows] + (1 - b1) * grad[rows]
            m2[rows] = b2 * m2[rows] + (1 - b2) * grad[rows] ** 2
            m_hat = m1[rows] / (1 - b1**step)
            W[rows] -= lr * m_hat / (np.sqrt(m2[rows] / (1 - b2**step)) + eps)
    return step, clipped


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("max_grad_norm", [0.0, 0.5])
@pytest.mark.parametrize("optimizer", ["adam", "dense_adam", "adagrad", "sgd"])
def test_optimizer_epoch_matches_numpy_reference(optimizer, max_grad_norm, n_threads, rng):
    n_users, n_items, d, n_neg, batch = 7, 12, 4, 3, 5
    X = sp.random(n_users, n_items, density=0.35, format="csr", random_state=3)
    X.data[:] = 1.0
    indptr, indices = X.indptr.astype(np.int64), X.indices.astype(np.int64)
    spec = LOSSES["infonce"]
    params = sgd.loss_params(
        temperature=0.5,
        negative_weight=1.0,
        margin=0.2,
        balance=1.0,
        normalizer_positive_weight=0.5,
    )
    code = _OPTIMIZERS[optimizer]
    lr, l2, seed = 0.05, 0.01, 11
    W0 = rng.normal(0, 0.3, (n_users + n_items, d))
    # two epochs, so that dense Adam's untouched rows carry non-zero moments into the second
    W, m1, m2 = W0.copy(), np.zeros_like(W0), np.zeros_like(W0)
    Wr, r1, r2 = W0.copy(), np.zeros_like(W0), np.zeros_like(W0)
    step = ref_step = n_clipped = 0
    # the kernel's buffers live for the whole run, as in MF (stamp carries rows' last steps)
    # (two threads: each batch split in two slices whose buffers are summed per row)
    grad = np.zeros((n_threads, *W.shape))
    flags = np.zeros((n_threads, W.shape[0]), np.uint8)
    touched = np.empty((n_threads, W.shape[0]), np.int64)
    stamp = np.zeros(W.shape[0], np.int64)
    for epoch in range(2):
        order = rng.permutation(indices.size)
        _, step = sgd.train_epoch(
            W,
            m1,
            m2,
            indptr,
            indices,
            np.repeat(np.arange(n_users, dtype=np.int64), np.diff(indptr)),
            order,
            np.zeros(n_users),
            n_users,
            n_items,
            spec.code,
            params,
            False,
            0,
            n_neg,
            sgd.UNIFORM,
            indices,
            False,
            batch,
            n_threads,
            seed + epoch,
            0,
            code,
            lr,
            l2,
            0.9,
            0.999,
            1e-8,
            step,
            W.shape[0],
            True,
            grad,
            flags,
            touched,
            stamp,
            0.0,
            max_grad_norm,
        )
        ref_step, clipped = _numpy_optimizer_epoch(
            Wr,
            r1,
            r2,
            indptr,
            indices,
            order,
            spec,
            params,
            n_neg,
            batch,
            seed + epoch,
            optimizer,
            lr,
            l2,
            ref_step,
            max_grad_norm,
        )
        n_clipped += clipped
    assert step == ref_step == 2 * -(-indices.size // batch)
    # the small bound clips some batches and leaves others: both branches are compared
    assert (0 < n_clipped < step) if max_grad_norm else n_clipped == 0
    np.testing.assert_allclose(W, Wr, rtol=1e-10, atol=1e-12)
    assert not np.allclose(W, W0)


def test_fold_in_recovers_users(data):
    train, held = data
    model = _model("infonce").fit(train)
    folded = model.transform(train[:100])
    assert folded.shape == (100, 16)
    # Users folded in from their history rank their held-out items about as well as the
    # fitted users do: compare Recall@20 through both routes.
    fitted = _validation_recall(model, train, held)
    model_fold = _model("infonce").fit(train)
    model_fold.user_factors_ = model.transform(train)
    folded_recall = _validation_recall(model_fold, train, held)
    assert folded_recall > 0.8 * fitted
    assert folded_recall > 1.3 * popularity_recall(train, held)
    # items stay frozen during fold-in
    before = model.item_factors_.copy()
    model.transform(train[:10])
    np.testing.assert_array_equal(model.item_factors_, before)


def test_early_stopping_and_callback(data):
    train, held = data
    seen = []

    def callback(model, epoch):
        seen.append((epoch, model.loss_[-1]))
        return epoch == 4

    model = _model("infonce", n_epochs=30).fit(train, validation_data=held, callback=callback)
    assert [e for e, _ in seen] == [0, 1, 2, 3, 4]
    assert len(model.loss_) == 5
    stopped = _model("infonce", n_epochs=40, learning_rate=0.05, early_stopping_patience=2)
    stopped.fit(train, validation_data=held)
    best = int(np.argmax(stopped.validation_scores_))
    assert stopped.best_epoch_ == best
    assert len(stopped.validation_scores_) <= best + 3
    # the kept factors are the best epoch's
    assert np.isclose(_validation_recall(stopped, train, held), stopped.validation_scores_[best])


def test_learning_rate_milestones(data):
    train, _ = data
    constant = _model("bpr", n_epochs=4).fit(train)
    late = _model("bpr", n_epochs=4, learning_rate_milestones=[9]).fit(train)
    decayed = _model("bpr", n_epochs=4, learning_rate_milestones=[2], learning_rate_decay=0.5)
    decayed.fit(train)
    assert late.loss_ == constant.loss_ and late.learning_rate_milestones_ == []
    # the first two epochs are the constant run's; the smaller step changes the rest
    assert decayed.loss_[:2] == constant.loss_[:2]
    assert decayed.loss_[2] != constant.loss_[2]
    assert decayed.learning_rate_milestones_ == [2]
    np.testing.assert_array_equal(late.item_factors_, constant.item_factors_)


def test_plateau_decays_and_replay(data):
    train, held = data
    settings = dict(n_epochs=60, learning_rate=0.05, early_stopping_patience=2)
    plain = _model("infonce", **settings).fit(train, validation_data=held)
    plateau = _model("infonce", plateau_decays=2, **settings).fit(train, validation_data=held)
    milestones = plateau.learning_rate_milestones_
    assert 1 <= len(milestones) <= 2
    assert len(plateau.loss_) > len(plain.loss_)
    # decays happen after `patience` epochs without a better validation score
    scores = plateau.validation_scores_
    for m in milestones:
        assert max(scores[m - 2 : m]) <= max(scores[: m - 2])
    # the schedule replays without validation data: identical training up to the last epoch
    replay = _model(
        "infonce",
        n_epochs=len(plateau.loss_),
        learning_rate=0.05,
        learning_rate_milestones=milestones,
    ).fit(train)
    assert replay.loss_ == plateau.loss_


def test_dropout_mask_rate():
    keep = np.empty(200_000, np.float32)
    sgd._draw_keep(np.uint64(12345), 0.1, keep)
    dropped = np.mean(keep == 0)
    # binomial standard deviation sqrt(0.1 * 0.9 / 2e5) ~ 6.7e-4
    assert abs(dropped - 0.1) < 4 * 6.7e-4
    np.testing.assert_array_equal(np.unique(keep), np.float32([0.0, 1.0 / 0.9]))


@pytest.mark.parametrize("sharing", ["batch", "pair"])
def test_user_dropout_trains_deterministically(sharing, data):
    train, held = data
    settings = dict(user_dropout=0.2, negative_sharing=sharing, n_jobs=2)
    a = _model("ccl", **settings).fit(train, validation_data=held)
    b = _model("ccl", **settings).fit(train, validation_data=held)
    np.testing.assert_array_equal(a.user_factors_, b.user_factors_)
    assert a.loss_ == b.loss_
    plain = _model("ccl", negative_sharing=sharing, n_jobs=2).fit(train)
    assert not np.array_equal(a.user_factors_, plain.user_factors_)
    assert a.validation_scores_[-1] > 1.3 * popularity_recall(train, held)
    # fold-in trains with the same masks, keyed by the user's history
    np.testing.assert_array_equal(a.transform(train[:20]), b.transform(train[:20]))
    assert not np.array_equal(a.transform(train[:20]), plain.transform(train[:20]))


def test_class_prior_array_and_bad_parameters(data):
    train, held = data
    tau = np.full(train.shape[0], 0.05)
    model = _model("debiased_mse", class_prior=tau, n_epochs=2).fit(train)
    assert np.isfinite(model.loss_).all()
    for bad, match in [
        ({"loss": "hinge"}, "unknown loss"),
        ({"score_function": "euclid"}, "score_function"),
        ({"n_negatives": 0}, "n_negatives"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"negative_sampler": "zipf"}, "negative_sampler"),
        ({"negative_sharing": "all"}, "negative_sharing"),
        ({"temperature": 0.0}, "temperature"),
        ({"prior_inflation": 0.5}, "prior_inflation"),
        ({"learning_rate_decay": 1.5}, "learning_rate_decay"),
        ({"learning_rate_decay": 0.0}, "learning_rate_decay"),
        ({"learning_rate_milestones": 5}, "learning_rate_milestones"),
        ({"learning_rate_milestones": [3, 0]}, "learning_rate_milestones"),
        ({"plateau_decays": -1}, "plateau_decays"),
        ({"user_dropout": 1.0}, "user_dropout"),
        ({"user_dropout": -0.1}, "user_dropout"),
        ({"max_grad_norm": 0.0}, "max_grad_norm"),
        ({"max_grad_norm": float("nan")}, "max_grad_norm"),
        ({"class_prior": np.ones(3) * 0.1}, "class_prior"),
        ({"class_prior": np.ones(train.shape[0])}, r"\[0, 1\)"),
        ({"hard_negatives": 2}, "bpr loss only"),
        ({"loss": "bpr", "n_negatives": 4, "hard_negatives": 5}, "must not exceed n_negatives"),
        ({"loss": "bpr", "n_negatives": 4, "hard_negatives": 0}, "hard_negatives"),
    ]:
        params = {"n_epochs": 1, **bad}
        loss = params.pop("loss", "debiased_infonce")
        with pytest.raises(ValueError, match=match):
            MF(loss, **params).fit(train)
    with pytest.raises(ValueError, match="validation_data has"):
        MF(n_epochs=1).fit(train, validation_data=held[:10])

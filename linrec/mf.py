"""Matrix factorisation trained with contrastive and pointwise losses (BPR, InfoNCE, CCL, ...).

The estimator is thin: it validates, builds the training pairs and calls the numba epoch
kernel of :mod:`linrec._kernels.sgd`; the losses are described in :mod:`linrec.losses`.
"""

from __future__ import annotations

import logging
import numbers
import time

import numpy as np
import scipy.sparse as sp

from linrec._base import BaseRecommender
from linrec._kernels import sgd
from linrec._threading import blas_threads, numba_threads
from linrec._validation import (
    check_interactions,
    check_positive_float,
    check_random_state_seed,
)
from linrec.losses import class_prior, get_loss

__all__ = ["MF"]

logger = logging.getLogger(__name__)

_OPTIMIZERS = {
    "adam": sgd.ADAM,
    "adagrad": sgd.ADAGRAD,
    "sgd": sgd.SGD,
    "dense_adam": sgd.DENSE_ADAM,
}
_SAMPLERS = {"uniform": sgd.UNIFORM, "popularity": sgd.POPULARITY}
_DEFAULT_NEGATIVES = {"bpr": 1}
_DEFAULT_NEGATIVES_OTHER = 100


class MF(BaseRecommender):
    """Matrix factorisation trained by minibatch optimisation of a per-pair loss.

    Every observed (user, item) pair is a training example; for each one the model samples
    N negatives (uniformly with replacement by default, so they may be positives of the user:
    the sampling bias the debiased losses correct) and, for the debiased losses, M extra
    positives from the user's history. Scores are dot products or cosines of the user and
    item vectors. The losses and their formulas are listed in :mod:`linrec.losses`
    (``bpr``, ``infonce``/``softmax``, ``debiased_infonce``, ``mine``, ``mine_plus``,
    ``infonce_plus``, ``ccl``, ``debiased_ccl``, ``mse``, ``debiased_mse``,
    ``debiased_mse_pu``).

    Parameters
    ----------
    loss : str, default="infonce"
        Name of the loss (see :data:`linrec.losses.LOSSES`).
    n_factors : int, default=64
        Embedding dimension d.
    score_function : {"auto", "dot", "cosine"}, default="auto"
        Score function; "auto" takes the loss's default (cosine for the softmax and CCL
        families, dot for BPR and the squared losses), stored in ``score_function_``.
    n_negatives : int, optional
        Negatives per positive pair, N; by default 1 for BPR and 100 otherwise (``n_negatives_``).
    negative_sampler : {"uniform", "popularity"}, default="uniform"
        Uniform over all items with replacement, or proportional to item popularity
        (an item's number of training interactions).
    hard_negatives : int, optional
        BPR only: each pair's loss keeps the ``hard_negatives`` negatives the model scores
        highest among its N sampled ones, at the current step (dynamic negative sampling,
        Zhang et al. 2013); N is then the candidate pool. None keeps all N. With
        ``negative_sharing="batch"`` each pair still picks its own hardest from the batch's
        pool. The candidates are not checked against the user's positives, as for every
        loss here (on Gowalla a pool of 64 holds one of the user's training items for about
        10% of the pairs; leaving those out measured no better on validation).
    negative_sharing : {"batch", "pair"}, default="batch"
        "pair" draws N fresh negatives for every positive pair; "batch" draws N negatives per
        minibatch and scores every pair of the batch against them. Each pair sees N
        independent draws from the sampler either way (the loss has the same expectation),
        but "batch" keeps the N item rows in cache and is many times faster on large
        catalogues. The optimiser sees different updates, though: with "pair" nearly every
        item row changes in every batch, so the two want different step sizes (the docs'
        loss page gives a measured "pair" setting for CCL).
    temperature : float, default=0.1
        t of the softmax-type losses (s = y / t).
    negative_weight : float, default=1.0
        w of CCL and the squared losses.
    margin : float, default=0.0
        m of CCL.
    balance : float, default=1.0
        lam of MINE+ and InfoNCE+.
    normalizer_positive_weight : float, default=0.0
        eps of InfoNCE+ (weight of e^{s+} in its normaliser).
    prior_inflation : float, default=1.0
        K in tau_u = K n_u / n for the debiased losses (used when ``class_prior`` is None).
    class_prior : array-like of shape (n_users,), optional
        Per-user prior tau_u in [0, 1), overriding K n_u / n.
    n_extra_positives : int, default=8
        M extra positives per pair for the debiased losses.
    l2 : float, default=0.0
        L2 penalty added to the gradient of every row used in a batch (``l2 * w``).
    user_dropout : float, default=0.0
        Dropout rate of the user vector in training (and in :meth:`transform`): for each
        pair, every component of the user's vector (unit-normalised first for cosine scores)
        is zeroed with this probability and the others are scaled by 1 / (1 - rate).
        Scoring uses the whole vector. SimpleX's MF-CCL (Mao et al.) trains with 0.1 in the
        same order (its user tower normalises, then ``nn.Dropout`` acts on the unit
        vector). Dropping out before normalising measured worse on Gowalla and Yelp2018
        (benchmarks/RESULTS.md, "CCL: dropout order, negatives, protocol").
    optimizer : {"adam", "dense_adam", "adagrad", "sgd"}, default="adam"
        ``"adam"`` is the lazy (sparse) variant: only rows touched in a batch update their
        moments, with the global step in the bias correction (as ``torch.optim.SparseAdam``).
        ``"dense_adam"`` steps every row at every batch, the untouched ones with a zero
        gradient (as ``torch.optim.Adam`` on an ``nn.Embedding`` table, the optimiser of
        most published PyTorch baselines): a row seen once keeps moving on its momentum for
        the next batches, so the same step size moves rarely seen rows much further than
        lazy Adam does. It costs one pass over the whole table per batch.
    max_grad_norm : float, optional
        Clip each batch's gradient (all the rows it updates, before the ``l2`` term) to this
        Euclidean norm, as ``torch.nn.utils.clip_grad_norm_`` does before the optimiser step:
        when the norm exceeds the bound the whole gradient is scaled by bound / norm.
        RecBox's trainer, behind SimpleX's and BARS's MF-CCL logs, clips at 10 after every
        batch. With cosine scores a row's gradient scales as the inverse of its length, so
        from a small ``init_std`` the first batches' gradients are very large. With
        SimpleX's settings, ``optimizer="dense_adam"`` and a bound of 10 reproduce that
        log's training loss and test curve over the first epochs (without the bound the
        start is slower), and reach test Recall@20 / NDCG@20 0.1857 / 0.1509 on Gowalla
        against the published 0.1837 / 0.1493 (benchmarks/RESULTS.md, "Gradient clipping:
        SimpleX's MF-CCL curve reproduced"). :meth:`transform` does not clip. None: no
        clipping.
    learning_rate : float, default=1e-3
        Step size.
    learning_rate_decay : float, default=0.1
        Factor in (0, 1] applied to the step size at each milestone and plateau.
    learning_rate_milestones : sequence of int, optional
        Epoch counts m after which the step size is multiplied by ``learning_rate_decay``
        (epochs m, m + 1, ... use the smaller step).
    plateau_decays : int, default=0
        With ``validation_data`` and ``early_stopping_patience``: when the patience runs out,
        multiply the step size by ``learning_rate_decay`` and go on, up to this many times,
        before stopping (reduce-on-plateau). The epochs at which it happened are recorded
        in ``learning_rate_milestones_``, so a refit on all the data can replay the schedule.
    batch_size : int, default=1024
        Positive pairs per minibatch; the gradient is the batch mean.
    n_epochs : int, default=20
        Passes over the training pairs.
    init_std : float, default=0.1
        Standard deviation of the normal initialisation of all vectors.
    early_stopping_patience : int, optional
        With ``validation_data`` given to :meth:`fit`: stop after this many epochs without a
        better validation Recall@20 and keep the best epoch's factors.
    fold_in_epochs : int, default=20
        Epochs of :meth:`transform` (new users, item vectors frozen).
    random_state : int, RandomState or None, default=None
        Seed of the initialisation, the epoch shuffles and the samplers.
    n_jobs : int, optional
        Threads; results are identical for a fixed ``random_state`` and ``n_jobs``.
    verbose : bool, default=False
        Show a tqdm progress bar over epochs.
    dtype : {"float32", "float64"}, default="float32"
        dtype of the factors. The softmax losses' exponentials are computed in the same
        precision (float32: relative error below 4e-6 over the arguments a temperature of
        0.1 gives; float64: below 2e-15).

    Attributes
    ----------
    user_factors_ : ndarray of shape (n_users, n_factors)
    item_factors_ : ndarray of shape (n_items, n_factors)
    score_function_ : str
        The score function used ("dot" or "cosine").
    n_negatives_ : int
        The number of negatives used.
    loss_ : list of float
        Mean per-pair training loss of each epoch.
    validation_scores_ : list of float
        Validation Recall@20 after each epoch (empty without validation data).
    best_epoch_ : int
        Epoch (0-based) whose factors were kept.
    learning_rate_milestones_ : list of int
        Epoch counts after which the step size was decayed (given milestones within the
        epochs run, then plateau decays), in order.
    epoch_times_ : list of float
        Training seconds per epoch (validation excluded).
    fold_in_seed_ : int
        Seed used by :meth:`transform`, drawn from ``random_state`` at fit.
    n_users_ : int
    n_items_ : int
    n_features_in_ : int

    Notes
    -----
    One epoch costs O(nnz (1 + M + N) d) arithmetic for the pairs plus an optimiser pass over
    the rows touched in each batch (over every row with ``optimizer="dense_adam"``).
    Memory: the factors, the optimiser moments (Adam: two tables of the same size), and one
    gradient table per thread ((n_users + n_items) x d).
    Training pairs are the stored entries of ``X``: interaction strengths are ignored.

    References
    ----------
    R. Jin, D. Li. (Debiased) Contrastive Learning Loss for Recommendation. arXiv 2312.08517.
    K. Mao et al. SimpleX: A Simple and Strong Baseline for Collaborative Filtering. CIKM 2021.
    W. Zhang et al. Optimizing Top-N Collaborative Filtering via Dynamic Negative Item
    Sampling. SIGIR 2013.

    Examples
    --------
    >>> import numpy as np
    >>> from linrec.mf import MF
    >>> X = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]])
    >>> model = MF(loss="infonce", n_factors=4, n_epochs=50, learning_rate=0.05,
    ...            n_negatives=3, batch_size=4, random_state=0).fit(X)
    >>> model.user_factors_.shape
    (4, 4)
    >>> int(model.recommend(np.array([[1, 0, 0, 0]]), k=1)[0][0, 0])
    1
    """

    _has_user_state = True

    def __init__(
        self,
        loss: str = "infonce",
        *,
        n_factors: int = 64,
        score_function: str = "auto",
        n_negatives: int | None = None,
        negative_sampler: str = "uniform",
        hard_negatives: int | None = None,
        negative_sharing: str = "batch",
        temperature: float = 0.1,
        negative_weight: float = 1.0,
        margin: float = 0.0,
        balance: float = 1.0,
        normalizer_positive_weight: float = 0.0,
        prior_inflation: float = 1.0,
        class_prior=None,
        n_extra_positives: int = 8,
        l2: float = 0.0,
        user_dropout: float = 0.0,
        optimizer: str = "adam",
        max_grad_norm: float | None = None,
        learning_rate: float = 1e-3,
        learning_rate_decay: float = 0.1,
        learning_rate_milestones=None,
        plateau_decays: int = 0,
        batch_size: int = 1024,
        n_epochs: int = 20,
        init_std: float = 0.1,
        early_stopping_patience: int | None = None,
        fold_in_epochs: int = 20,
        random_state=None,
        n_jobs: int | None = None,
        verbose: bool = False,
        dtype: str = "float32",
    ):
        self.loss = loss
        self.n_factors = n_factors
        self.score_function = score_function
        self.n_negatives = n_negatives
        self.negative_sampler = negative_sampler
        self.hard_negatives = hard_negatives
        self.negative_sharing = negative_sharing
        self.temperature = temperature
        self.negative_weight = negative_weight
        self.margin = margin
        self.balance = balance
        self.normalizer_positive_weight = normalizer_positive_weight
        self.prior_inflation = prior_inflation
        self.class_prior = class_prior
        self.n_extra_positives = n_extra_positives
        self.l2 = l2
        self.user_dropout = user_dropout
        self.optimizer = optimizer
        self.max_grad_norm = max_grad_norm
        self.learning_rate = learning_rate
        self.learning_rate_decay = learning_rate_decay
        self.learning_rate_milestones = learning_rate_milestones
        self.plateau_decays = plateau_decays
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.init_std = init_std
        self.early_stopping_patience = early_stopping_patience
        self.fold_in_epochs = fold_in_epochs
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.dtype = dtype

    # ------------------------------------------------------------------ validation
    def _resolve(self) -> dict:
        """Validate every hyper-parameter; return the resolved settings (no attribute set)."""
        spec = get_loss(self.loss)
        score = self.score_function
        if score == "auto":
            score = spec.default_score
        if score not in ("dot", "cosine"):
            raise ValueError(
                f"score_function must be 'auto', 'dot' or 'cosine', got {self.score_function!r}"
            )
        n_neg = self.n_negatives
        if n_neg is None:
            n_neg = _DEFAULT_NEGATIVES.get(spec.name, _DEFAULT_NEGATIVES_OTHER)
        n_neg = _check_int(n_neg, "n_negatives", 1)
        n_extra = _check_int(self.n_extra_positives, "n_extra_positives", 1)
        n_hard = 0
        if self.hard_negatives is not None:
            if spec.name != "bpr":
                raise ValueError(
                    f"hard_negatives applies to the bpr loss only, not to {spec.name!r}"
                )
            n_hard = _check_int(self.hard_negatives, "hard_negatives", 1)
            if n_hard > n_neg:
                raise ValueError(
                    f"hard_negatives ({n_hard}) must not exceed n_negatives ({n_neg}), the "
                    "pool it is chosen from"
                )
        if self.negative_sampler not in _SAMPLERS:
            raise ValueError(
                f"negative_sampler must be one of {sorted(_SAMPLERS)}, got "
                f"{self.negative_sampler!r}"
            )
        if self.negative_sharing not in ("batch", "pair"):
            raise ValueError(
                f"negative_sharing must be 'batch' or 'pair', got {self.negative_sharing!r}"
            )
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {sorted(_OPTIMIZERS)}, got {self.optimizer!r}"
            )
        patience = self.early_stopping_patience
        if patience is not None:
            patience = _check_int(patience, "early_stopping_patience", 1)
        decay = check_positive_float(self.learning_rate_decay, "learning_rate_decay")
        if decay > 1.0:
            raise ValueError(f"learning_rate_decay must lie in (0, 1], got {decay}")
        milestones = self.learning_rate_milestones
        if milestones is None:
            milestones = ()
        elif isinstance(milestones, numbers.Integral) or isinstance(milestones, str):
            raise ValueError(
                f"learning_rate_milestones must be a sequence of epoch counts, got {milestones!r}"
            )
        milestones = sorted(_check_int(m, "learning_rate_milestones entry", 1) for m in milestones)
        dropout = check_positive_float(self.user_dropout, "user_dropout", allow_zero=True)
        if dropout >= 1.0:
            raise ValueError(f"user_dropout must lie in [0, 1), got {self.user_dropout}")
        inflation = check_positive_float(self.prior_inflation, "prior_inflation")
        if inflation < 1.0:
            raise ValueError(f"prior_inflation (K) must be >= 1, got {self.prior_inflation}")
        params = sgd.loss_params(
            temperature=check_positive_float(self.temperature, "temperature"),
            negative_weight=check_positive_float(
                self.negative_weight, "negative_weight", allow_zero=True
            ),
            margin=_check_real(self.margin, "margin"),
            balance=check_positive_float(self.balance, "balance"),
            normalizer_positive_weight=check_positive_float(
                self.normalizer_positive_weight, "normalizer_positive_weight", allow_zero=True
            ),
            hard_negatives=n_hard,
        )
        return {
            "spec": spec,
            "score": score,
            "n_negatives": n_neg,
            "n_extra": n_extra if spec.uses_extra_positives else 0,
            "sampler": _SAMPLERS[self.negative_sampler],
            "share": self.negative_sharing == "batch",
            "optimizer": _OPTIMIZERS[self.optimizer],
            "params": params,
            "inflation": inflation,
            "n_factors": _check_int(self.n_factors, "n_factors", 1),
            "batch_size": _check_int(self.batch_size, "batch_size", 1),
            "n_epochs": _check_int(self.n_epochs, "n_epochs", 0),
            "fold_in_epochs": _check_int(self.fold_in_epochs, "fold_in_epochs", 0),
            "learning_rate": check_positive_float(self.learning_rate, "learning_rate"),
            "decay": decay,
            "milestones": milestones,
            "plateau_decays": _check_int(self.plateau_decays, "plateau_decays", 0),
            "l2": check_positive_float(self.l2, "l2", allow_zero=True),
            "user_dropout": dropout,
            "max_grad_norm": (
                0.0
                if self.max_grad_norm is None
                else check_positive_float(self.max_grad_norm, "max_grad_norm")
            ),
            "init_std": check_positive_float(self.init_std, "init_std"),
            "patience": patience,
        }

    def _user_prior(self, X: sp.csr_matrix, inflation: float, given=None) -> np.ndarray:
        if given is None:
            return class_prior(np.diff(X.indptr), X.shape[1], inflation)
        tau = np.asarray(given, dtype=np.float64)
        if tau.shape != (X.shape[0],):
            raise ValueError(
                f"class_prior must have shape ({X.shape[0]},) (one value per user), got {tau.shape}"
            )
        if not np.all(np.isfinite(tau)) or np.any(tau < 0) or np.any(tau >= 1):
            raise ValueError("class_prior values must lie in [0, 1)")
        return tau.copy()

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None, *, validation_data=None, callback=None):
        """Train the factors.

        Parameters
        ----------
        X : sparse matrix or array-like of shape (n_users, n_items)
            Training interactions.
        y : sparse matrix of shape (n_users, n_items), optional
            Held-out interactions of the same users, added to ``X`` (see
            :meth:`BaseRecommender.fit`).
        validation_data : sparse matrix of shape (n_users, n_items), optional
            Held-out items of the training users; Recall@20 on them (training items
            excluded) is recorded after every epoch and drives early stopping.
        callback : callable, optional
            ``callback(model, epoch)`` after every epoch (``loss_`` etc. already updated);
            returning True stops training.

        Returns
        -------
        self : MF
        """
        settings = self._resolve()
        X = self._validate_fit_data(X, y)
        X_val = None
        if validation_data is not None:
            X_val = check_interactions(
                validation_data,
                name="validation_data",
                dtype=np.float64,
                n_items=X.shape[1],
                allow_empty=True,
            )
            if X_val.shape[0] != X.shape[0]:
                raise ValueError(
                    f"validation_data has {X_val.shape[0]} rows but X has {X.shape[0]}"
                )
        if callback is not None and not callable(callback):
            raise ValueError("callback must be callable")
        tau = self._user_prior(X, settings["inflation"], self.class_prior)
        self._train(X, X_val, tau, settings, callback)
        return self

    def _train(self, X, X_val, tau, s, callback):
        dtype = self._fit_dtype()
        n_users, n_items = X.shape
        d = s["n_factors"]
        seed = check_random_state_seed(self.random_state)
        init_rng = np.random.default_rng([seed % 2**63, 0])
        W = (init_rng.standard_normal((n_users + n_items, d)) * s["init_std"]).astype(dtype)
        self.score_function_ = s["score"]
        self.n_negatives_ = s["n_negatives"]
        self.fold_in_seed_ = int(init_rng.integers(0, 2**62))
        self.loss_ = []
        self.validation_scores_ = []
        self.epoch_times_ = []
        self.best_epoch_ = max(s["n_epochs"] - 1, 0)
        trainer = _EpochRunner(self, X, W, tau, s, seed, update_limit=n_users + n_items)
        best_W, best_score, since_best = None, -np.inf, 0
        learning_rate, decays_left = s["learning_rate"], s["plateau_decays"]
        self.learning_rate_milestones_ = []
        epochs = range(s["n_epochs"])
        bar = None
        if self.verbose:
            from tqdm.auto import tqdm

            bar = tqdm(epochs, desc=f"MF({s['spec'].name})", unit="epoch")
            epochs = bar
        for epoch in epochs:
            if epoch in s["milestones"]:
                learning_rate *= s["decay"]
                self.learning_rate_milestones_.append(epoch)
            start = time.perf_counter()
            mean_loss = trainer.run_epoch(epoch, learning_rate)
            self.epoch_times_.append(time.perf_counter() - start)
            self.loss_.append(mean_loss)
            if not np.isfinite(mean_loss):
                raise FloatingPointError(
                    f"training diverged at epoch {epoch} (loss {mean_loss}); lower "
                    "learning_rate or raise temperature"
                )
            self.user_factors_ = W[:n_users]
            self.item_factors_ = W[n_users:]
            info = f"loss {mean_loss:.4f}"
            if X_val is not None:
                recall = _validation_recall(self, X, X_val)
                self.validation_scores_.append(recall)
                info += f" val Recall@20 {recall:.4f}"
                if recall > best_score:
                    best_score, since_best = recall, 0
                    best_W = W.copy()
                    self.best_epoch_ = epoch
                else:
                    since_best += 1
            logger.info("epoch %d: %s (%.2f s)", epoch, info, self.epoch_times_[-1])
            if bar is not None:
                bar.set_postfix_str(info)
            stop = callback is not None and bool(callback(self, epoch))
            if s["patience"] is not None and since_best >= s["patience"]:
                if decays_left > 0:
                    # reduce on plateau: a smaller step from the current factors
                    decays_left -= 1
                    since_best = 0
                    learning_rate *= s["decay"]
                    self.learning_rate_milestones_.append(epoch + 1)
                    logger.info("epoch %d: learning rate decayed to %g", epoch, learning_rate)
                else:
                    stop = True
            if stop:
                break
        if bar is not None:
            bar.close()
        if best_W is not None:
            W = best_W
        self.user_factors_ = np.ascontiguousarray(W[:n_users])
        self.item_factors_ = np.ascontiguousarray(W[n_users:])

    # ------------------------------------------------------------------ fold-in
    def transform(self, X) -> np.ndarray:
        """User vectors for new histories, trained with the item vectors frozen.

        Each user is optimised on its own: ``fold_in_epochs`` passes over its positives, one
        optimiser step per positive with fresh negatives (the fitted loss, score, sampler and
        optimiser). Its initial vector and samples are keyed by ``fold_in_seed_`` and its
        item ids, so a user's vector does not depend on the other rows of ``X``. Users
        without any interaction keep their random initial vector.

        Returns
        -------
        user_factors : ndarray of shape (n_rows, n_factors)
        """
        X = self._validate_rows(X)
        return self._fold_in(X)

    def fit_transform(self, X, y=None, **fit_params) -> np.ndarray:
        """``fit(X, y, **fit_params).transform(X)``: the fold-in vectors of the rows of ``X``.

        The fitted ``user_factors_`` come from joint training and differ from these.
        """
        return self.fit(X, y, **fit_params).transform(X)

    def _fold_in(self, X: sp.csr_matrix) -> np.ndarray:
        s = self._resolve()
        n_new, d = X.shape[0], self.item_factors_.shape[1]
        W = np.vstack([np.zeros((n_new, d), self.item_factors_.dtype), self.item_factors_])
        tau = class_prior(np.diff(X.indptr), X.shape[1], s["inflation"])
        indices = X.indices.astype(np.int64)
        with numba_threads(self.n_jobs):
            sgd.fold_in(
                W,
                n_new,
                X.indptr.astype(np.int64),
                indices,
                tau,
                s["spec"].code,
                s["params"],
                self.score_function_ == "cosine",
                s["n_extra"],
                self.n_negatives_,
                s["sampler"],
                indices if indices.size else np.zeros(1, np.int64),
                self.fold_in_seed_,
                s["fold_in_epochs"],
                s["init_std"],
                s["optimizer"],
                s["learning_rate"],
                s["l2"],
                0.9,
                0.999,
                1e-8,
                s["user_dropout"],
            )
        return np.ascontiguousarray(W[:n_new])

    # ------------------------------------------------------------------ scoring
    def _factor_scores(self, users: np.ndarray) -> np.ndarray:
        items = self.item_factors_
        if self.score_function_ == "cosine":
            users = sgd.normalize_rows(np.ascontiguousarray(users))
            items = sgd.normalize_rows(items)
        with blas_threads(self.n_jobs):
            return users @ items.T

    def _scores(self, X: sp.csr_matrix) -> np.ndarray:
        return self._factor_scores(self._fold_in(X))

    def _user_scores(self, X: sp.csr_matrix, user_ids: np.ndarray | None = None) -> np.ndarray:
        if user_ids is None:
            return self._scores(X)
        return self._factor_scores(self.user_factors_[np.asarray(user_ids, dtype=np.int64)])

    def _similar_item_scores(self, item_ids: np.ndarray) -> np.ndarray:
        items = self.item_factors_
        if self.score_function_ == "cosine":
            items = sgd.normalize_rows(items)
        with blas_threads(self.n_jobs):
            return items[item_ids] @ items.T

    def __sklearn_tags__(self):
        from sklearn.utils import TransformerTags

        # transform() maps histories to user vectors (NMF-like fold-in)
        tags = super().__sklearn_tags__()
        tags.transformer_tags = TransformerTags(preserves_dtype=[])
        return tags


class _EpochRunner:
    """Buffers and settings of one training run; ``run_epoch`` calls the numba kernel."""

    def __init__(self, model, X, W, tau, s, seed, update_limit):
        n_rows, d = W.shape
        self.model, self.X, self.W, self.tau, self.s = model, X, W, tau, s
        self.seed = int(seed) % 2**63
        self.update_limit = update_limit
        self.n_users = X.shape[0]
        with numba_threads(model.n_jobs) as n_threads:
            self.n_threads = n_threads
        self.indptr = X.indptr.astype(np.int64)
        self.indices = X.indices.astype(np.int64)
        self.pair_users = np.repeat(np.arange(self.n_users, dtype=np.int64), np.diff(self.indptr))
        adam = s["optimizer"] in (sgd.ADAM, sgd.DENSE_ADAM)
        moments = s["optimizer"] != sgd.SGD
        self.moment1 = np.zeros((n_rows if adam else 1, d), W.dtype)
        self.moment2 = np.zeros((n_rows if moments else 1, d), W.dtype)
        self.grad = np.zeros((self.n_threads, n_rows, d), W.dtype)
        self.flags = np.zeros((self.n_threads, n_rows), np.uint8)
        self.touched = np.empty((self.n_threads, n_rows), np.int64)
        self.stamp = np.zeros(n_rows, np.int64)
        self.step = 0

    def run_epoch(self, epoch: int, learning_rate: float) -> float:
        s = self.s
        order = np.random.default_rng([self.seed, 2, epoch]).permutation(self.indices.size)
        with numba_threads(self.model.n_jobs):
            total, self.step = sgd.train_epoch(
                self.W,
                self.moment1,
                self.moment2,
                self.indptr,
                self.indices,
                self.pair_users,
                order,
                self.tau,
                self.n_users,
                self.X.shape[1],
                s["spec"].code,
                s["params"],
                s["score"] == "cosine",
                s["n_extra"],
                s["n_negatives"],
                s["sampler"],
                self.indices,
                s["share"],
                s["batch_size"],
                self.n_threads,
                self.seed,
                epoch,
                s["optimizer"],
                learning_rate,
                s["l2"],
                0.9,
                0.999,
                1e-8,
                self.step,
                self.update_limit,
                self.update_limit > self.n_users,
                self.grad,
                self.flags,
                self.touched,
                self.stamp,
                s["user_dropout"],
                s["max_grad_norm"],
            )
        return float(total) / max(self.indices.size, 1)


def _validation_recall(model: MF, X_train: sp.csr_matrix, X_val: sp.csr_matrix, k=20):
    """Mean Recall@k (hits / |held-out|) over users with held-out items, seen items excluded."""
    users = np.flatnonzero(np.diff(X_val.indptr) > 0)
    if users.size == 0:
        return float("nan")
    U = np.ascontiguousarray(model.user_factors_[users])
    V = np.ascontiguousarray(model.item_factors_)
    if model.score_function_ == "cosine":
        U, V = sgd.normalize_rows(U), sgd.normalize_rows(V)
    train = X_train[users]
    with numba_threads(model.n_jobs):
        top, _ = sgd.factor_topk(U, V, k, train.indptr, train.indices)
    val = X_val[users]
    total = 0.0
    for r in range(users.size):
        held = val.indices[val.indptr[r] : val.indptr[r + 1]]
        total += np.isin(top[r], held).sum() / held.size
    return total / users.size


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return float(value)

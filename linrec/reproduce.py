"""``linrec reproduce``: every MF loss compared at d = 64, tuned on a validation split.

The comparison of issue 5 (Jin & Li, "(Debiased) Contrastive Learning Loss for
Recommendation"): for every data set (a LightGCN-format folder with ``train.txt`` and
``test.txt``, e.g. Gowalla, Yelp2018, Amazon-Book; without folders a small synthetic data
set with a planted structure) and every loss of :class:`linrec.mf.MF`:

1. tuning (``--grid small`` or ``full``; ``defaults`` trains only the default point, to
   choose its epoch count; ``none`` skips it): a validation split is carved from train (a
   random ``--validation-share`` of each user's training items, every user keeping at least
   one); every grid point is trained on the rest with validation Recall@20 recorded per
   epoch (early stopping after ``--patience`` epochs without improvement; with
   ``--plateau-decays K`` the step size is first divided by 10 up to K times); the best
   point, its best epoch count and its step-size schedule are kept. The test file is not
   read while tuning.
2. final run: the chosen settings are trained on the full train split for the chosen number
   of epochs (replaying the chosen step-size schedule) and evaluated once on test
   (Recall@20 = hits / |test items| as in LightGCN, NDCG@20; 95% Student-t confidence
   intervals over users, :func:`linrec.metrics.evaluate`).
   A learning curve (test Recall@20 of ``--curve-users`` sampled users after every epoch) is
   recorded through a callback; it selects nothing.

Grids (:data:`FAMILY_AXIS` holds the per-loss axis; the code is the source of truth):

- ``small``: learning rate in {3e-3, 1e-2} x the loss's own axis at its first two values:
  temperature {0.07, 0.1} (InfoNCE, MINE), balance lambda {1.1, 1.2} (MINE+), the
  positive's weight eps in the normaliser {1, 0.5} (InfoNCE+),
  margin {0.8, 0.9} (CCL), negative weight {30, 10} (MSE), prior inflation K {1, 1.25}
  (debiased losses), l2 {3e-3, 1e-2} (BPR).
- ``full``: learning rate in {3e-3, 1e-2, 3e-2} x l2 in {0, 1e-6} x the axis's three values.

Output in ``--out``: ``results.md`` (per data set: the table with confidence intervals, the
relative Recall@20 gain of every debiased loss over its biased form and of MINE+ /
InfoNCE+ over InfoNCE, with paired confidence intervals), ``results.json``,
``learning_curves.png``, ``log.txt``; with ``--sweep``, ``sweep.png`` and a sweep table:
validation Recall@20 of CCL against its negative weight and of InfoNCE against its
temperature (issue 6's sensitivity plots).

Run from the command line as ``linrec reproduce ...`` or ``python
examples/loss_comparison.py ...``; :func:`add_arguments` and :func:`run` are the command's
two halves. On a shared machine set ``OMP_WAIT_POLICY=passive`` before starting Python
(numba's OpenMP threads otherwise spin between the short per-batch parallel regions).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from linrec.datasets import load_lightgcn
from linrec.losses import LOSSES
from linrec.metrics import evaluate
from linrec.mf import MF, _validation_recall

__all__ = ["add_arguments", "paired_gain", "run"]

logger = logging.getLogger(__name__)

ALL_LOSSES = [name for name in LOSSES if name != "softmax"]

# Settings shared by every loss at d = 64 (batch 1024, lazy Adam). Lazy Adam only steps a row
# when it is in the batch, so it needs a larger step than the dense Adam of PyTorch
# implementations (1e-3 barely moves user vectors in 20 epochs).
COMMON = {"n_factors": 64, "batch_size": 1024, "learning_rate": 1e-2}
# Per-loss defaults. BPR sums over 300 negatives per positive, as BARS's re-tuned MF-BPR
# (one fresh negative per positive learnt far less on Gowalla: 0.1183 test Recall@20 after
# 40 epochs), with the l2 that won on Gowalla's validation split (3e-3 against 1e-2 and
# 1e-5) and the common step 1e-2, which with step decays beat 3e-3 on validation (0.1700
# against 0.1644 Recall@20) in fewer epochs (benchmarks/RESULTS.md, "MF tuning with a
# step-size schedule"). CCL follows SimpleX's MF-CCL (N = 800, m = 0.9, w = 150) with
# dropout 0.1 of the unit user vector (as SimpleX does; dropping out before normalising
# measured worse): test Recall@20 0.1700 -> 0.1750 on Gowalla, 0.0587 -> 0.0662 on Yelp2018
# (RESULTS.md "CCL with user dropout"); the positive-unlabelled forms weigh the
# positive by tau_u (~1e-3 on these sets), so their w is scaled down. MSE and debiased MSE
# take w = 30, the best of 1-300 on the validation splits of both Gowalla and Yelp2018
# (test Recall@20 of MSE: 0.1021 -> 0.1456 on Gowalla, 0.0345 -> 0.0604 on Yelp2018 against
# w = 1; RESULTS.md "Debiased CCL and MSE on their own grids" and "MSE's negative weight on
# Yelp2018").
DEFAULTS = {
    "bpr": {"n_negatives": 300, "l2": 3e-3},
    "infonce": {"n_negatives": 256, "temperature": 0.1},
    "debiased_infonce": {"n_negatives": 256, "temperature": 0.1, "prior_inflation": 1.25},
    "mine": {"n_negatives": 256, "temperature": 0.1},
    "mine_plus": {"n_negatives": 256, "temperature": 0.1, "balance": 1.1},
    # eps = 1: with eps = 0 (the MF class default) InfoNCE+ is MINE+ itself, and a row equal
    # to MINE+'s would compare nothing (both gave 0.1701 on Gowalla)
    "infonce_plus": {
        "n_negatives": 256,
        "temperature": 0.1,
        "balance": 1.1,
        "normalizer_positive_weight": 1.0,
    },
    "ccl": {"n_negatives": 800, "margin": 0.9, "negative_weight": 150.0, "user_dropout": 0.1},
    "debiased_ccl": {
        "n_negatives": 800,
        "margin": 0.9,
        "negative_weight": 0.15,
        "prior_inflation": 1.25,
        "user_dropout": 0.1,
    },
    "mse": {"n_negatives": 256, "negative_weight": 30.0},
    "debiased_mse": {"n_negatives": 256, "negative_weight": 30.0, "prior_inflation": 1.25},
    "debiased_mse_pu": {"n_negatives": 256, "negative_weight": 1e-3, "prior_inflation": 1.25},
}
FAMILY_AXIS = {
    "bpr": ("l2", [3e-3, 1e-2, 1e-3]),
    "infonce": ("temperature", [0.07, 0.1, 0.2]),
    "debiased_infonce": ("prior_inflation", [1.0, 1.25, 1.5]),
    "mine": ("temperature", [0.07, 0.1, 0.2]),
    "mine_plus": ("balance", [1.1, 1.2, 1.05]),
    "infonce_plus": ("normalizer_positive_weight", [1.0, 0.5, 0.1]),
    "ccl": ("margin", [0.8, 0.9, 0.7]),
    "debiased_ccl": ("prior_inflation", [1.0, 1.25, 1.5]),
    "mse": ("negative_weight", [30.0, 10.0, 100.0]),
    "debiased_mse": ("prior_inflation", [1.0, 1.25, 1.5]),
    "debiased_mse_pu": ("prior_inflation", [1.0, 1.25, 1.5]),
}
# (loss, reference): relative gains reported when both were run
GAINS = [
    ("debiased_infonce", "infonce"),
    ("debiased_ccl", "ccl"),
    ("debiased_mse", "mse"),
    ("debiased_mse_pu", "mse"),
    ("mine_plus", "infonce"),
    ("mine_plus", "mine"),
    ("infonce_plus", "infonce"),
]
# --sweep: (loss, parameter, values) plotted against validation Recall@20
SWEEPS = [
    ("ccl", "negative_weight", [1.0, 10.0, 50.0, 150.0, 500.0]),
    ("infonce", "temperature", [0.05, 0.07, 0.1, 0.2, 0.5]),
]
# the synthetic set is small: fewer factors and negatives keep the run to about a minute
_SYNTHETIC = {"n_factors": 32, "batch_size": 512, "max_negatives": 64}


def grid_points(loss: str, grid: str) -> list[dict]:
    """The hyper-parameter points tried for ``loss`` (a list of partial settings)."""
    if grid in ("none", "defaults"):
        return [{}]
    axis, values = FAMILY_AXIS[loss]
    if grid == "small":
        axes = {"learning_rate": [3e-3, 1e-2], axis: values[:2]}
    elif grid == "full":
        axes = {"learning_rate": [3e-3, 1e-2, 3e-2], "l2": [0.0, 1e-6], axis: values}
        if axis == "l2":
            axes["l2"] = sorted({0.0, 1e-6, *values})
    else:
        raise ValueError(f"grid must be 'none', 'defaults', 'small' or 'full', got {grid!r}")
    keys = list(axes)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(axes[k] for k in keys))]


def split_validation(train: sp.csr_matrix, share: float, seed: int):
    """Move a random ``share`` of each user's items to a validation matrix (>= 1 kept).

    Returns ``(rest, validation)``, both CSR of the shape of ``train``.
    """
    if not 0.0 < share < 1.0:
        raise ValueError(f"validation share must lie in (0, 1), got {share}")
    rng = np.random.default_rng(seed)
    coo = train.tocoo()
    order = np.lexsort((rng.random(coo.nnz), coo.row))
    rows, cols = coo.row[order], coo.col[order]
    counts = np.diff(train.indptr)
    rank = np.arange(rows.size) - np.repeat(train.indptr[:-1], counts)
    n_val = np.minimum(np.floor(counts * share), np.maximum(counts - 1, 0)).astype(np.int64)
    is_val = rank < np.repeat(n_val, counts)

    def build(mask):
        data = np.ones(int(mask.sum()), np.float32)
        return sp.csr_matrix((data, (rows[mask], cols[mask])), shape=train.shape)

    return build(~is_val), build(is_val)


def curve_users(test: sp.csr_matrix, n_users: int, seed: int) -> sp.csr_matrix:
    """The test rows of a fixed random sample of ``n_users`` users (other rows emptied).

    Scoring every user after every epoch would cost more than the training itself.
    """
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    if users.size <= n_users:
        return test
    keep = np.zeros(test.shape[0], np.float32)
    keep[np.random.default_rng(seed).choice(users, n_users, replace=False)] = 1.0
    return sp.csr_matrix(sp.diags(keep) @ test)


def planted_data(seed: int = 0, n_users: int = 2000, n_items: int = 1000, rank: int = 8):
    """Synthetic (train, test): users pick 30 items by a planted rank-``rank`` affinity plus
    item popularity; a fifth of each user's items (not the first) go to test."""
    rng = np.random.default_rng(seed)
    U, V = rng.normal(size=(n_users, rank)), rng.normal(size=(n_items, rank))
    logits = 1.5 * U @ V.T + 1.5 * rng.normal(size=n_items)
    per_user = min(30, n_items // 2)
    rows, cols = [], []
    for u in range(n_users):
        p = np.exp(logits[u] - logits[u].max())
        cols.extend(rng.choice(n_items, per_user, replace=False, p=p / p.sum()))
        rows.extend([u] * per_user)
    rows, cols = np.asarray(rows), np.asarray(cols)
    test = rng.random(rows.size) < 0.2
    test &= np.r_[True, rows[1:] != rows[:-1]] == 0
    shape = (n_users, n_items)

    def build(mask):
        return sp.csr_matrix(
            (np.ones(int(mask.sum()), np.float32), (rows[mask], cols[mask])), shape
        )

    return build(~test), build(test)


def _mean_ci(values: np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of its normal 95% interval (1.96 standard errors)."""
    if values.size < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(1.96 * values.std(ddof=1) / np.sqrt(values.size))


def paired_gain(scores: np.ndarray, reference: np.ndarray) -> tuple[float, float, float]:
    """Relative gain of one model over another from per-user scores of the same users.

    Parameters
    ----------
    scores, reference : ndarray of shape (n_users,)
        Per-user metric values (e.g. Recall@20) of the two models, user by user.

    Returns
    -------
    gain : float
        ``mean(scores) / mean(reference) - 1`` (NaN when the reference mean is 0).
    difference, half_width : float
        Mean per-user difference and the half-width of its normal 95% interval: the paired
        interval, narrower than comparing the two means' own intervals.

    Examples
    --------
    >>> import numpy as np
    >>> gain, diff, half = paired_gain(np.array([0.2, 0.4, 0.3]), np.array([0.2, 0.3, 0.2]))
    >>> round(gain, 3), round(diff, 3)
    (0.286, 0.067)
    """
    scores = np.asarray(scores, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if scores.shape != reference.shape or scores.ndim != 1:
        raise ValueError(
            f"paired scores need two 1-d arrays of equal length, got {scores.shape} and "
            f"{reference.shape}"
        )
    reference_mean = reference.mean()
    gain = scores.mean() / reference_mean - 1.0 if reference_mean > 0 else float("nan")
    difference, half_width = _mean_ci(scores - reference)
    return float(gain), difference, half_width


def _base_settings(loss: str, synthetic: bool, overrides: dict | None = None) -> dict:
    base = {**COMMON, **DEFAULTS[loss]}
    if synthetic:
        base.update(n_factors=_SYNTHETIC["n_factors"], batch_size=_SYNTHETIC["batch_size"])
        base["n_negatives"] = min(base["n_negatives"], _SYNTHETIC["max_negatives"])
    base.update(overrides or {})
    return base


def parse_overrides(pairs: list[str] | None) -> dict:
    """``["learning_rate=0.003", "l2=1e-4"]`` -> ``{"learning_rate": 0.003, "l2": 0.0001}``.

    Values are parsed as JSON when they can be (numbers, true/false, null), else kept as text.
    """
    out = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def validated_run(loss, params, rest, val, args):
    """Train ``params`` on ``rest`` with validation Recall@20 on ``val`` after every epoch.

    Early stopping after ``args.patience`` epochs without improvement, with up to
    ``args.plateau_decays`` step-size decays first. Returns ``(model, epochs, milestones)``:
    the best epoch count and the step-size milestones that came before it (what a refit
    must replay).
    """
    model = MF(
        loss,
        n_epochs=args.epochs,
        random_state=args.seed,
        n_jobs=args.n_jobs,
        early_stopping_patience=args.patience,
        plateau_decays=args.plateau_decays,
        **params,
    ).fit(rest, validation_data=val)
    epochs = model.best_epoch_ + 1
    return model, epochs, [m for m in model.learning_rate_milestones_ if m < epochs]


def tune(loss, base, train, args, log, name=""):
    """Grid search on a validation split carved from ``train``.

    Returns ``(settings, epochs, trials)``: the best point merged into ``base`` (with the
    step-size milestones of its run up to its best epoch, when ``--plateau-decays`` decayed
    it), its best epoch count (1-based) and one record per grid point.
    """
    points = grid_points(loss, args.grid)
    if args.grid == "none":
        return dict(base), args.epochs, []
    rest, val = split_validation(train, args.validation_share, args.seed)
    best, chosen, best_epochs, trials = -np.inf, dict(base), args.epochs, []
    for point in points:
        params = {**base, **point}
        model, epochs, milestones = validated_run(loss, params, rest, val, args)
        score = max(model.validation_scores_)
        trials.append(
            {
                "params": point,
                "val_recall": score,
                "curve": model.validation_scores_,
                "milestones": milestones,
            }
        )
        log(
            f"  {name} {loss} {point}: val Recall@20 {score:.4f} "
            f"(best epoch {epochs}, step decayed after {milestones or 'never'})"
        )
        if score > best:
            best, best_epochs = score, epochs
            chosen = {**params, "learning_rate_milestones": milestones or None}
    return chosen, best_epochs, trials


def final_run(loss, settings, epochs, train, test, args):
    """Train on all of ``train`` for ``epochs`` epochs; evaluate once on ``test``."""
    curve_test = curve_users(test, args.curve_users, args.seed)
    curve = []

    def record(model, epoch):
        # test Recall@20 of a user sample after every epoch: a curve, it selects nothing
        curve.append(_validation_recall(model, train, curve_test))

    model = MF(loss, n_epochs=epochs, random_state=args.seed, n_jobs=args.n_jobs, **settings)
    model.fit(train, callback=record)
    result = evaluate(model, train, test, k=(20,), fold_in=False, n_jobs=args.n_jobs)
    return model, result, curve


def run_dataset(name, train, test, args, log, on_result=lambda results: None) -> dict:
    """Tune and evaluate every loss of ``args.losses`` on one data set."""
    results = {}
    for loss in args.losses:
        t0 = time.perf_counter()
        base = _base_settings(loss, args.synthetic, args.overrides)
        settings, epochs, trials = tune(loss, base, train, args, log, name)
        model, result, curve = final_run(loss, settings, epochs, train, test, args)
        recall = result.per_user["recall", 20]
        ndcg = result.per_user["ndcg", 20]
        results[loss] = {
            "params": settings,
            "epochs": epochs,
            "recall": _mean_ci(recall),
            "ndcg": _mean_ci(ndcg),
            "test_curve": curve,
            "train_loss": model.loss_,
            "seconds_per_epoch": float(np.median(model.epoch_times_)),
            "total_seconds": time.perf_counter() - t0,
            "tuning": trials,
            "per_user_recall": recall,
        }
        r = results[loss]
        log(
            f"{name} {loss}: Recall@20 {r['recall'][0]:.4f} NDCG@20 {r['ndcg'][0]:.4f} "
            f"({epochs} epochs, {r['seconds_per_epoch']:.1f} s/epoch)"
        )
        on_result(results)
    return results


def sweep(name, train, args, log) -> dict:
    """Validation Recall@20 against one parameter per loss of :data:`SWEEPS` (others at their
    defaults, ``args.epochs`` epochs, best epoch kept)."""
    rest, val = split_validation(train, args.validation_share, args.seed)
    out = {}
    for loss, param, values in SWEEPS:
        if loss not in args.losses:
            continue
        base = _base_settings(loss, args.synthetic, args.overrides)
        scores = []
        for value in values:
            model = MF(
                loss,
                n_epochs=args.epochs,
                random_state=args.seed,
                n_jobs=args.n_jobs,
                **{**base, param: value},
            ).fit(rest, validation_data=val)
            scores.append(max(model.validation_scores_))
            log(f"  sweep {name} {loss} {param}={value}: val Recall@20 {scores[-1]:.4f}")
        out[f"{loss}:{param}"] = {"values": values, "val_recall": scores}
    return out


def markdown(all_results: dict, args, sweeps: dict | None = None) -> str:
    """The report: per data set a table with CIs and the relative gains."""
    lines = [
        f"# MF loss comparison (grid `{args.grid}`, up to {args.epochs} epochs, seed {args.seed})",
        "",
    ]
    for name, results in all_results.items():
        lines += [
            f"## {name}",
            "",
            "| loss | Recall@20 (95% CI) | NDCG@20 (95% CI) | epochs | s/epoch | settings |",
            "|---|---|---|---|---|---|",
        ]
        for loss, r in results.items():
            settings = ", ".join(
                f"{k}={v}"
                for k, v in r["params"].items()
                if k not in COMMON or k == "learning_rate"
            )
            lines.append(
                f"| {loss} | {r['recall'][0]:.4f} ± {r['recall'][1]:.4f} | "
                f"{r['ndcg'][0]:.4f} ± {r['ndcg'][1]:.4f} | {r['epochs']} | "
                f"{r['seconds_per_epoch']:.1f} | {settings} |"
            )
        lines += [
            "",
            "Relative gains (Recall@20; paired 95% CI of the per-user difference):",
            "",
            "| comparison | gain | paired difference (95% CI) |",
            "|---|---|---|",
        ]
        for better, worse in GAINS:
            if better in results and worse in results:
                gain, d_mean, d_ci = paired_gain(
                    results[better]["per_user_recall"], results[worse]["per_user_recall"]
                )
                lines.append(
                    f"| {better} vs {worse} | {100 * gain:+.1f}% | {d_mean:+.4f} ± {d_ci:.4f} |"
                )
        if sweeps and name in sweeps:
            lines += ["", "Sweeps (validation Recall@20, other settings at their defaults):", ""]
            for key, s in sweeps[name].items():
                loss, param = key.split(":")
                lines.append(
                    f"| {loss}: {param} | " + " | ".join(f"{v:g}" for v in s["values"]) + " |"
                )
                lines.append("|---|" + "---|" * len(s["values"]))
                lines.append(
                    "| val Recall@20 | " + " | ".join(f"{r:.4f}" for r in s["val_recall"]) + " |"
                )
                lines.append("")
        lines.append("")
    return "\n".join(lines)


def plot_curves(all_results: dict, path: Path) -> None:
    """Learning curves: test Recall@20 of the user sample per epoch, one panel per data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(all_results)
    fig, axes = plt.subplots(1, n, figsize=(7 * n, 5), squeeze=False)
    for ax, (name, results) in zip(axes[0], all_results.items()):
        for loss, r in results.items():
            epochs = np.arange(1, len(r["test_curve"]) + 1)
            ax.plot(epochs, r["test_curve"], label=loss, marker="o", markersize=3)
        ax.set_title(f"{name}: test Recall@20 per epoch (user sample)", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("Recall@20")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sweeps(sweeps: dict, path: Path) -> None:
    """Validation Recall@20 against the swept parameter (log x axis), one panel per sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({key for per_set in sweeps.values() for key in per_set})
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        loss, param = key.split(":")
        for name, per_set in sweeps.items():
            if key in per_set:
                ax.plot(per_set[key]["values"], per_set[key]["val_recall"], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_xlabel(param)
        ax.set_ylabel("validation Recall@20")
        ax.set_title(f"{loss}: Recall@20 against {param}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``linrec reproduce`` to ``parser``."""
    parser.add_argument(
        "--data",
        nargs="*",
        default=[],
        help="LightGCN-format folders (train.txt, test.txt); none: synthetic data",
    )
    parser.add_argument("--losses", nargs="*", default=ALL_LOSSES, choices=ALL_LOSSES)
    parser.add_argument(
        "--grid",
        choices=["none", "defaults", "small", "full"],
        default="small",
        help="tuning grid on the validation split carved from train (default: small); "
        "'defaults' runs only each loss's default point there, to choose its epoch count "
        "and step-size schedule; 'none' skips the validation split",
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=3,
        help="tuning: epochs without a better validation Recall@20 before stopping (or "
        "decaying the step size, see --plateau-decays)",
    )
    parser.add_argument(
        "--plateau-decays",
        type=int,
        default=0,
        help="tuning: times the step size is divided by 10 on a plateau before stopping; the "
        "final run replays the chosen run's schedule",
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs (default: 15 synthetic, 20 real)"
    )
    parser.add_argument("--validation-share", type=float, default=0.1)
    parser.add_argument("--n-jobs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--curve-users",
        type=int,
        default=3000,
        help="users whose test Recall@20 is tracked after every epoch (learning curves)",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="also plot validation Recall@20 against CCL's negative weight and InfoNCE's "
        "temperature",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an MF parameter of every loss's starting point (repeatable), e.g. "
        "--set learning_rate=0.003; grid points still override it",
    )
    parser.add_argument("--out", default="out/reproduce", help="output folder")


def run(args: argparse.Namespace) -> int:
    """Run the comparison described by ``args`` (see :func:`add_arguments`); returns 0."""
    if args.epochs is not None and args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    if args.curve_users < 1:
        raise ValueError(f"--curve-users must be >= 1, got {args.curve_users}")
    if args.patience < 1 or args.plateau_decays < 0:
        raise ValueError(
            f"--patience must be >= 1 and --plateau-decays >= 0, got {args.patience} and "
            f"{args.plateau_decays}"
        )
    args.overrides = parse_overrides(args.set)
    args.synthetic = not args.data
    if args.epochs is None:
        args.epochs = 15 if args.synthetic else 20
    datasets = {}
    if args.synthetic:
        datasets["synthetic (2000 x 1000, planted rank 8)"] = planted_data(args.seed)
    else:
        for folder in args.data:
            split = load_lightgcn(folder)
            datasets[Path(folder).name] = (split.train, split.test)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "log.txt", "a") as logfile:

        def log(msg):
            line = f"[{time.strftime('%H:%M:%S')}] {msg}"
            logger.info(msg)
            print(line, flush=True)
            logfile.write(line + "\n")
            logfile.flush()

        all_results, sweeps = {}, {}

        def save():
            (out / "results.md").write_text(markdown(all_results, args, sweeps))
            serialisable = {
                n: {
                    loss: {k: v for k, v in r.items() if k != "per_user_recall"}
                    for loss, r in res.items()
                }
                for n, res in all_results.items()
            }
            (out / "results.json").write_text(
                json.dumps({"results": serialisable, "sweeps": sweeps}, indent=1)
            )

        for name, (train, test) in datasets.items():
            log(
                f"{name}: {train.shape[0]} users, {train.shape[1]} items, {train.nnz} train, "
                f"{test.nnz} test"
            )

            def on_result(results, name=name):
                all_results[name] = results
                save()

            all_results[name] = run_dataset(name, train, test, args, log, on_result)
            plot_curves(all_results, out / "learning_curves.png")
            if args.sweep:
                sweeps[name] = sweep(name, train, args, log)
                save()
                plot_sweeps(sweeps, out / "sweep.png")
        print(markdown(all_results, args, sweeps))
    return 0

"""Compare every MF loss (biased vs debiased, InfoNCE vs MINE+) at d = 64.

Usage::

    python examples/loss_comparison.py                      # synthetic data, about a minute
    python examples/loss_comparison.py --data ../shared/data/gowalla ../shared/data/yelp2018 \\
        --grid small --epochs 20 --out out/loss_comparison

For every data set (a LightGCN folder with train.txt / test.txt) and every loss:

1. tuning (``--grid small`` or ``full``): a validation split is carved from train (a random
   ``--validation-share`` of each user's training items, users keeping at least one); every
   grid point is trained on the rest with validation Recall@20 recorded per epoch; the best
   point and its best epoch count are kept. ``--grid none`` skips tuning and uses the
   defaults of ``DEFAULTS`` for ``--epochs`` epochs.
2. final run: the chosen settings are trained on the full train split and evaluated on test
   (Recall@20 = hits / |test items| as in LightGCN, NDCG@20), with 95% confidence intervals
   over users (normal approximation, 1.96 standard errors). Test Recall@20 is also recorded
   after every epoch for the learning curves (on ``--curve-users`` sampled users; it selects
   nothing).

Output: ``results.md`` (table, relative gains debiased vs biased and MINE+/InfoNCE+ vs
InfoNCE) and ``learning_curves.png`` in ``--out``, plus ``results.json``.

Grids (documented here, the code below is the source of truth):

- ``small``: learning rate in {3e-3, 1e-2}, and per family one more axis: temperature in
  {0.07, 0.1} (softmax family), margin in {0.8, 0.9} (CCL), negative weight in {0.5, 1}
  (squared losses), balance in {1.1, 1.2} (MINE+, InfoNCE+), K in {1, 1.25} (debiased).
- ``full``: learning rate in {3e-3, 1e-2, 3e-2}, l2 in {0, 1e-6}, and the family axes above
  with a third value each.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

# numba's OpenMP threads spin between the short per-batch parallel regions by default; on a
# shared machine that costs several times the work itself (measured: 1.7 s vs 0.26 s per
# epoch on the synthetic set at load 10). Must be set before numba starts its threads.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from linrec._kernels.topk import topk_rows  # noqa: E402
from linrec.datasets import load_lightgcn  # noqa: E402
from linrec.mf import MF  # noqa: E402

ALL_LOSSES = [
    "bpr",
    "infonce",
    "debiased_infonce",
    "mine",
    "mine_plus",
    "infonce_plus",
    "ccl",
    "debiased_ccl",
    "mse",
    "debiased_mse",
    "debiased_mse_pu",
]

# Defaults per loss at d = 64 (batch 1024, Adam). CCL follows SimpleX (N = 800, m = 0.9,
# w = 150); the PU forms weigh the positive by tau_u (~1e-3 on these sets), so their w is
# scaled down accordingly.
# Lazy Adam only steps a row when it is in the batch, so it needs a larger step than the
# dense Adam of PyTorch implementations (1e-3 barely moves user vectors in 20 epochs).
COMMON = {"n_factors": 64, "batch_size": 1024, "learning_rate": 1e-2}
DEFAULTS = {
    "bpr": {"n_negatives": 1, "l2": 1e-3},
    "infonce": {"n_negatives": 256, "temperature": 0.1},
    "debiased_infonce": {"n_negatives": 256, "temperature": 0.1, "prior_inflation": 1.25},
    "mine": {"n_negatives": 256, "temperature": 0.1},
    "mine_plus": {"n_negatives": 256, "temperature": 0.1, "balance": 1.1},
    "infonce_plus": {"n_negatives": 256, "temperature": 0.1, "balance": 1.1},
    "ccl": {"n_negatives": 800, "margin": 0.9, "negative_weight": 150.0},
    "debiased_ccl": {
        "n_negatives": 800,
        "margin": 0.9,
        "negative_weight": 0.15,
        "prior_inflation": 1.25,
    },
    "mse": {"n_negatives": 256, "negative_weight": 1.0},
    "debiased_mse": {"n_negatives": 256, "negative_weight": 1.0, "prior_inflation": 1.25},
    "debiased_mse_pu": {
        "n_negatives": 256,
        "negative_weight": 1e-3,
        "prior_inflation": 1.25,
    },
}
FAMILY_AXIS = {
    "infonce": ("temperature", [0.07, 0.1, 0.2]),
    "debiased_infonce": ("prior_inflation", [1.0, 1.25, 1.5]),
    "mine": ("temperature", [0.07, 0.1, 0.2]),
    "mine_plus": ("balance", [1.1, 1.2, 1.05]),
    "infonce_plus": ("balance", [1.1, 1.2, 1.05]),
    "ccl": ("margin", [0.8, 0.9, 0.7]),
    "debiased_ccl": ("prior_inflation", [1.0, 1.25, 1.5]),
    "mse": ("negative_weight", [0.5, 1.0, 2.0]),
    "debiased_mse": ("prior_inflation", [1.0, 1.25, 1.5]),
    "debiased_mse_pu": ("prior_inflation", [1.0, 1.25, 1.5]),
    "bpr": ("l2", [1e-5, 1e-4, 0.0]),
}
GAINS = [
    ("debiased_infonce", "infonce"),
    ("debiased_ccl", "ccl"),
    ("debiased_mse", "mse"),
    ("debiased_mse_pu", "mse"),
    ("mine_plus", "infonce"),
    ("mine_plus", "mine"),
    ("infonce_plus", "infonce"),
]


def grid_points(loss: str, grid: str) -> list[dict]:
    if grid == "none":
        return [{}]
    axis, values = FAMILY_AXIS[loss]
    if grid == "small":
        axes = {"learning_rate": [3e-3, 1e-2], axis: values[:2]}
    else:
        axes = {"learning_rate": [3e-3, 1e-2, 3e-2], "l2": [0.0, 1e-6], axis: values}
    keys = list(axes)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(axes[k] for k in keys))]


def split_validation(train: sp.csr_matrix, share: float, seed: int):
    """Move a random ``share`` of each user's items to a validation matrix (>= 1 kept)."""
    rng = np.random.default_rng(seed)
    coo = train.tocoo()
    order = np.lexsort((rng.random(coo.nnz), coo.row))
    rows, cols = coo.row[order], coo.col[order]
    counts = np.diff(train.indptr)
    rank = np.arange(rows.size) - np.repeat(train.indptr[:-1], counts)
    n_val = np.floor(counts * share).astype(np.int64)
    is_val = rank < np.repeat(n_val, counts)
    shape = train.shape
    ones = np.ones

    def build(mask):
        return sp.csr_matrix((ones(mask.sum(), np.float32), (rows[mask], cols[mask])), shape=shape)

    return build(~is_val), build(is_val)


def curve_users(test: sp.csr_matrix, n_users: int, seed: int) -> sp.csr_matrix:
    """The test rows of a fixed random sample of users (others emptied), for the per-epoch
    learning curve: scoring every user after every epoch would cost more than training."""
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    if users.size <= n_users:
        return test
    keep = np.zeros(test.shape[0], bool)
    keep[np.random.default_rng(seed).choice(users, n_users, replace=False)] = True
    return sp.csr_matrix(sp.diags(keep.astype(np.float32)) @ test)


def per_user_metrics(model: MF, train, test, k: int = 20):
    """Per-user Recall@k (hits / |test|) and NDCG@k over users with test items."""
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    recall = np.empty(users.size)
    ndcg = np.empty(users.size)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    for start in range(0, users.size, 2048):
        batch = users[start : start + 2048]
        scores = np.ascontiguousarray(model._user_scores(None, batch))
        tr = train[batch]
        top, _ = topk_rows(scores, k, tr.indptr, tr.indices, np.ones(1, np.bool_), False)
        te = test[batch]
        for r in range(batch.size):
            held = te.indices[te.indptr[r] : te.indptr[r + 1]]
            hits = np.isin(top[r], held)
            recall[start + r] = hits.sum() / held.size
            ideal = discounts[: min(k, held.size)].sum()
            ndcg[start + r] = (hits * discounts).sum() / ideal
    return recall, ndcg


def mean_ci(values):
    return float(values.mean()), float(1.96 * values.std(ddof=1) / np.sqrt(values.size))


def planted_data(seed=0, n_users=2000, n_items=1000, rank=8, per_user=30):
    rng = np.random.default_rng(seed)
    U, V = rng.normal(size=(n_users, rank)), rng.normal(size=(n_items, rank))
    logits = 1.5 * U @ V.T + 1.5 * rng.normal(size=n_items)
    rows, cols = [], []
    for u in range(n_users):
        p = np.exp(logits[u] - logits[u].max())
        cols.extend(rng.choice(n_items, per_user, replace=False, p=p / p.sum()))
        rows.extend([u] * per_user)
    rows, cols = np.asarray(rows), np.asarray(cols)
    test = rng.random(rows.size) < 0.2
    test &= np.r_[True, rows[1:] != rows[:-1]] == 0
    shape = (n_users, n_items)
    mk = lambda m: sp.csr_matrix((np.ones(m.sum(), np.float32), (rows[m], cols[m])), shape)  # noqa: E731
    return mk(~test), mk(test)


def run_dataset(name, train, test, args, log, on_result=lambda results: None):
    results = {}
    for loss in args.losses:
        base = {**COMMON, **DEFAULTS[loss]}
        if args.synthetic:
            base.update(n_factors=32, batch_size=512)
            base["n_negatives"] = min(base["n_negatives"], 64)
        t0 = time.perf_counter()
        chosen, best_epochs, tuning = dict(base), args.epochs, []
        points = grid_points(loss, args.grid)
        if args.grid != "none":
            sub, val = split_validation(train, args.validation_share, args.seed)
            best = -np.inf
            for point in points:
                params = {**base, **point}
                model = MF(
                    loss,
                    n_epochs=args.epochs,
                    random_state=args.seed,
                    n_jobs=args.n_jobs,
                    early_stopping_patience=3,
                    **params,
                ).fit(sub, validation_data=val)
                score = max(model.validation_scores_)
                tuning.append(
                    {"params": point, "val_recall": score, "curve": model.validation_scores_}
                )
                log(
                    f"  {name} {loss} {point}: val Recall@20 {score:.4f} "
                    f"(best epoch {model.best_epoch_ + 1})"
                )
                if score > best:
                    best, chosen, best_epochs = score, params, model.best_epoch_ + 1
        model = MF(loss, n_epochs=best_epochs, random_state=args.seed, n_jobs=args.n_jobs, **chosen)
        model.fit(train, validation_data=test)
        recall, ndcg = per_user_metrics(model, train, test)
        results[loss] = {
            "params": {k: v for k, v in chosen.items()},
            "epochs": best_epochs,
            "recall": mean_ci(recall),
            "ndcg": mean_ci(ndcg),
            "test_curve": model.validation_scores_,
            "train_loss": model.loss_,
            "seconds_per_epoch": float(np.median(model.epoch_times_)),
            "total_seconds": time.perf_counter() - t0,
            "tuning": tuning,
            "per_user_recall": recall,
        }
        log(
            f"{name} {loss}: Recall@20 {results[loss]['recall'][0]:.4f} "
            f"NDCG@20 {results[loss]['ndcg'][0]:.4f} ({best_epochs} epochs, "
            f"{results[loss]['seconds_per_epoch']:.1f} s/epoch)"
        )
        on_result(results)
    return results


def markdown(all_results, args) -> str:
    lines = [f"# MF loss comparison (d = 64; grid `{args.grid}`, up to {args.epochs} epochs)", ""]
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
            "Relative gains (Recall@20; paired 95% CI over users):",
            "",
            "| comparison | gain | paired difference (95% CI) |",
            "|---|---|---|",
        ]
        for better, worse in GAINS:
            if better in results and worse in results:
                a, b = results[better], results[worse]
                diff = a["per_user_recall"] - b["per_user_recall"]
                d_mean, d_ci = mean_ci(diff)
                gain = a["recall"][0] / b["recall"][0] - 1.0
                lines.append(
                    f"| {better} vs {worse} | {100 * gain:+.1f}% | {d_mean:+.4f} ± {d_ci:.4f} |"
                )
        lines.append("")
    return "\n".join(lines)


def plot_curves(all_results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(all_results), figsize=(7 * len(all_results), 5), squeeze=False)
    for ax, (name, results) in zip(axes[0], all_results.items()):
        for loss, r in results.items():
            ax.plot(
                np.arange(1, len(r["test_curve"]) + 1),
                r["test_curve"],
                label=loss,
                marker="o",
                markersize=3,
            )
        ax.set_title(f"{name}: test Recall@20 per epoch (user sample)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("Recall@20")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="*", default=[], help="LightGCN-format folders")
    parser.add_argument("--losses", nargs="*", default=ALL_LOSSES, choices=ALL_LOSSES)
    parser.add_argument(
        "--grid",
        choices=["none", "small", "full"],
        default=None,
        help="default: small on synthetic data, none on real data",
    )
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--validation-share", type=float, default=0.1)
    parser.add_argument("--n-jobs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--curve-users",
        type=int,
        default=3000,
        help="users whose test Recall@20 is tracked after every epoch",
    )
    parser.add_argument("--out", default="out/loss_comparison")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.synthetic = not args.data
    if args.grid is None:
        args.grid = "small" if args.synthetic else "none"
    if args.epochs is None:
        args.epochs = 15 if args.synthetic else 20
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logfile = open(out / "log.txt", "a")

    def log(msg):
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        logfile.write(line + "\n")
        logfile.flush()

    datasets = {}
    if args.synthetic:
        datasets["synthetic (2000 x 1000, planted rank 8)"] = planted_data(args.seed)
    else:
        for folder in args.data:
            datasets[Path(folder).name] = tuple(load_lightgcn(folder))
    all_results = {}
    for name, (train, test) in datasets.items():
        log(
            f"{name}: {train.shape[0]} users, {train.shape[1]} items, {train.nnz} train, "
            f"{test.nnz} test"
        )

        def save(results, name=name):
            all_results[name] = results
            (out / "results.md").write_text(markdown(all_results, args))
            serialisable = {
                n: {
                    loss: {k: v for k, v in r.items() if k != "per_user_recall"}
                    for loss, r in res.items()
                }
                for n, res in all_results.items()
            }
            (out / "results.json").write_text(json.dumps(serialisable, indent=1))
            plot_curves(all_results, out / "learning_curves.png")

        all_results[name] = run_dataset(name, train, test, args, log, save)
    print(markdown(all_results, args))
    return all_results


if __name__ == "__main__":
    main()

"""Evaluation protocols and the floors every model must beat (MostPopular, ItemKNN).

Published numbers are only comparable under the same protocol. This script evaluates the two
baselines and one iALS model under both protocols linrec implements and shows how much the
choice of metric moves the numbers:

1. the LightGCN "weak generalisation" split (every user in train and test), with Recall@k as
   hits / |test| and the truncated recall hits / min(k, |test|) of Liang, Steck and Rendle,
   NDCG, precision, hit rate, MAP and item coverage at several cut-offs, with 95% intervals;
2. paired comparisons (t-test and Wilcoxon on per-user NDCG@20): ItemKNN vs MostPopular and
   iALS vs ItemKNN;
3. the "strong generalisation" protocol: whole users held out, their histories folded in
   (80%) and the rest ranked.

It writes ``evaluation_table.md`` and ``recall_vs_k.png`` into ``--out``.

Usage::

    python examples/evaluation_protocols.py                                  # synthetic data
    python examples/evaluation_protocols.py --data ../shared/data/gowalla
    python examples/evaluation_protocols.py --data interactions.csv          # split at random

``--data`` takes a LightGCN folder (train.txt / test.txt) or a delimited interaction file
(user, item[, weight[, timestamp]]), which is split 80/20 per user at random.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from linrec.baselines import ItemKNN, MostPopular
from linrec.datasets import (
    drop_empty_users,
    heldout_users_split,
    load_interactions,
    load_lightgcn,
    make_implicit,
    random_holdout_split,
)
from linrec.ials import IALS
from linrec.metrics import compare, evaluate

CUTOFFS = (5, 10, 20, 50, 100)
METRICS = ("recall", "truncated_recall", "ndcg", "precision", "hit_rate", "map", "coverage")


def load(data: str | None, seed: int):
    """(X_train, X_test, full interaction matrix, description)."""
    if data is None:
        X = make_implicit(n_users=4000, n_items=2000, random_state=seed)
        train, test = random_holdout_split(X, test_fraction=0.2, random_state=seed)
        return train, test, X, "synthetic (make_implicit, 4000 x 2000)"
    path = Path(data)
    if path.is_dir():
        split = load_lightgcn(path)
        train, test = split.train, split.test
        return train, test, (train + test).tocsr(), f"{path.name} (LightGCN split)"
    X = load_interactions(path).matrix
    train, test = random_holdout_split(X, test_fraction=0.2, random_state=seed)
    return train, test, X, f"{path.name} (random 80/20 split per user)"


def models(n_items: int, seed: int) -> dict:
    return {
        "MostPopular": MostPopular(),
        "ItemKNN": ItemKNN(n_neighbors=min(200, n_items - 1)),
        "IALS": IALS(n_factors=64, n_epochs=10, random_state=seed, verbose=False),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="LightGCN folder or interaction file (default: synthetic)")
    parser.add_argument("--out", default="out/evaluation", help="output folder")
    parser.add_argument("--heldout-users", type=int, default=None, help="strong protocol users")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    train, test, X_all, source = load(args.data, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"data: {source}; {train.shape[0]:,} users x {train.shape[1]:,} items")
    lines = [f"# Evaluation protocols on {source}", ""]

    # 1. Weak generalisation: every user's training items known, test items ranked.
    results = {}
    for name, model in models(train.shape[1], args.seed).items():
        start = time.perf_counter()
        model.fit(train)
        fit_s = time.perf_counter() - start
        results[name] = evaluate(model, train, test, k=CUTOFFS, metrics=METRICS)
        print(f"{name}: fit {fit_s:.1f} s; {results[name].summary()}")
    lines += ["## Weak generalisation (held-out items of known users)", ""]
    header = "| model | " + " | ".join(f"{m}@20" for m in METRICS) + " |"
    lines += [header, "|---" * (len(METRICS) + 1) + "|"]
    for name, result in results.items():
        cells = []
        for m in METRICS:
            if m == "coverage":
                cells.append(f"{result.mean(m, 20):.4f}")
            else:
                low, high = result.ci(m, 20)
                cells.append(f"{result.mean(m, 20):.4f} [{low:.4f}, {high:.4f}]")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Recall@k (hits/|test|) and truncated recall (hits/min(k, |test|)) at each cut-off:",
        "",
        "| model | " + " | ".join(f"R@{k} / TR@{k}" for k in CUTOFFS) + " |",
        "|---" * (len(CUTOFFS) + 1) + "|",
    ]
    for name, result in results.items():
        cells = [
            f"{result.mean('recall', k):.4f} / {result.mean('truncated_recall', k):.4f}"
            for k in CUTOFFS
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    # 2. Paired comparisons on the same users.
    lines += ["", "## Paired comparisons (per-user NDCG@20)", ""]
    for a, b in (("ItemKNN", "MostPopular"), ("IALS", "ItemKNN")):
        comparison = compare(results[a], results[b], metric="ndcg", k=20)
        print(f"{a} vs {b}: {comparison}")
        lines.append(
            f"- {a} - {b}: {comparison.mean_difference:+.4f} "
            f"[{comparison.ci_low:+.4f}, {comparison.ci_high:+.4f}], t-test p = "
            f"{comparison.t_pvalue:.2g}, Wilcoxon p = {comparison.wilcoxon_pvalue:.2g} "
            f"({comparison.n_users:,} users)"
        )

    # 3. Strong generalisation: models never see the held-out users during training.
    n_heldout = args.heldout_users or max(100, X_all.shape[0] // 10)
    X_rest, X_fold_in, X_heldout_test = heldout_users_split(
        X_all, n_heldout, fold_in_fraction=0.8, random_state=args.seed
    )
    X_rest = drop_empty_users(X_rest)
    lines += [
        "",
        f"## Strong generalisation ({n_heldout:,} held-out users, 80% folded in)",
        "",
        "| model | Recall@20 | truncated Recall@20 | NDCG@20 |",
        "|---|---|---|---|",
    ]
    for name, model in models(X_rest.shape[1], args.seed).items():
        model.fit(X_rest)
        result = evaluate(
            model,
            X_fold_in,
            X_heldout_test,
            k=(20,),
            metrics=("recall", "truncated_recall", "ndcg"),
            fold_in=True,
        )
        lines.append(
            f"| {name} | {result.mean('recall', 20):.4f} | "
            f"{result.mean('truncated_recall', 20):.4f} | {result.mean('ndcg', 20):.4f} |"
        )

    table = "\n".join(lines) + "\n"
    (out / "evaluation_table.md").write_text(table)
    print(table)
    plot(results, out / "recall_vs_k.png", source)
    print(f"wrote {out / 'evaluation_table.md'} and {out / 'recall_vs_k.png'}")


def plot(results: dict, path: Path, source: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for name, result in results.items():
        for ax, metric in zip(axes, ("recall", "truncated_recall")):
            ax.plot(CUTOFFS, [result.mean(metric, k) for k in CUTOFFS], marker="o", label=name)
    axes[0].set_title("Recall@k = hits / |test|")
    axes[1].set_title("truncated Recall@k = hits / min(k, |test|)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(CUTOFFS, [str(k) for k in CUTOFFS])
        ax.set_xlabel("k")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mean over test users")
    axes[0].legend()
    fig.suptitle(source, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()

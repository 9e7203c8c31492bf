"""MostPopular and ItemKNN on the real splits: the floor of every table.

ItemKNN's neighbourhood size is chosen on a validation split carved from the training file
(20% of each user's training items, seed 0); the test file is used once, for the final row.

Usage (from the repository root, ../shared/data present)::

    python benchmarks/bench_baselines.py [--data-root ../shared/data] [--sets gowalla yelp2018]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from linrec import ItemKNN, MostPopular, evaluate, load_lightgcn
from linrec._memory import PeakMemory, format_bytes
from linrec.datasets import random_holdout_split

NEIGHBOURS_GRID = (50, 200, 800)


def fit_measure(model, X):
    with PeakMemory() as mem:
        start = time.perf_counter()
        model.fit(X)
        seconds = time.perf_counter() - start
    return seconds, mem.increase


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-root", default=str(Path(__file__).parents[1] / ".." / "shared" / "data")
    )
    parser.add_argument("--sets", nargs="+", default=["gowalla", "yelp2018"])
    args = parser.parse_args()
    lines = [
        "| data | model | Recall@20 (95% CI) | NDCG@20 (95% CI) | fit s | peak memory |",
        "|---|---|---|---|---|---|",
    ]
    for name in args.sets:
        X_train, X_test = load_lightgcn(Path(args.data_root) / name)
        X_fit, X_val = random_holdout_split(X_train, test_fraction=0.2, random_state=0)
        val_scores = {}
        for k in NEIGHBOURS_GRID:
            model = ItemKNN(n_neighbors=k).fit(X_fit)
            val_scores[k] = evaluate(model, X_fit, X_val, k=(20,)).mean("recall", 20)
            print(f"{name} ItemKNN n_neighbors={k}: validation Recall@20 {val_scores[k]:.4f}")
        best_k = max(val_scores, key=val_scores.get)
        for label, model in (
            ("MostPopular", MostPopular()),
            (f"ItemKNN (n_neighbors={best_k})", ItemKNN(n_neighbors=best_k)),
        ):
            seconds, peak = fit_measure(model, X_train)
            result = evaluate(model, X_train, X_test, k=(20,))
            r, r_lo, r_hi = result.mean("recall", 20), *result.ci("recall", 20)
            n, n_lo, n_hi = result.mean("ndcg", 20), *result.ci("ndcg", 20)
            row = (
                f"| {name} | {label} | {r:.4f} ({r_lo:.4f}-{r_hi:.4f}) | "
                f"{n:.4f} ({n_lo:.4f}-{n_hi:.4f}) | {seconds:.1f} | {format_bytes(peak)} |"
            )
            print(row)
            lines.append(row)
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""iALS on Spark gives the single-machine result: SparkIALS against IALS, side by side.

Fits the same `IALS` configuration twice from the same random state, once in this process
and once on a local Spark session (`local[2]`, the same numba kernels in the executors), and
reports the largest relative factor difference, Recall@20 / NDCG@20 of both models and their
time per epoch. It writes ``spark_table.md`` and ``spark_epochs.png`` (seconds per epoch of
each) into ``--out``.

Usage::

    python examples/spark_ials.py                                 # synthetic data
    python examples/spark_ials.py --data ../shared/data/gowalla   # a LightGCN folder

Needs the ``spark`` extra (pyspark) and Java 17 or newer.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from linrec.datasets import load_lightgcn, make_implicit_split
from linrec.ials import IALS
from linrec.metrics import evaluate


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="LightGCN folder (default: synthetic data)")
    parser.add_argument("--out", default="out/spark", help="output folder")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--blocks", type=int, default=4, help="Spark blocks per side")
    args = parser.parse_args(argv)

    from linrec.spark import SparkIALS, local_session

    if args.data:
        split = load_lightgcn(args.data)
        train, test, source = split.train, split.test, Path(args.data).name
    else:
        train, test = make_implicit_split(n_users=4000, n_items=2000, random_state=0)
        source = "synthetic (make_implicit, 4000 x 2000)"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # Every user and item occurs in train, so Spark's sorted ids are the matrix indices.
    users = np.flatnonzero(np.diff(train.indptr) > 0)
    train, test = train[users], test[users]
    keep_items = np.flatnonzero(np.bincount(train.indices, minlength=train.shape[1]) > 0)
    train, test = train[:, keep_items].tocsr(), test[:, keep_items].tocsr()
    print(f"data: {source}; {train.shape[0]:,} users x {train.shape[1]:,} items")

    config = IALS(
        n_factors=args.factors,
        objective="rendle",
        unobserved_weight=0.003,
        regularization=0.01,
        reg_exponent=1.0,
        solver="cholesky",  # exact row solves: the two fits agree to float32 rounding
        n_epochs=args.epochs,
        random_state=0,
        n_jobs=2,
    )
    start = time.perf_counter()
    local = IALS(**config.get_params()).fit(train)
    local_fit = time.perf_counter() - start

    spark = local_session("linrec-example", cores=2)
    try:
        coo = train.tocoo()
        frame = spark.createDataFrame(
            [(int(u), int(i)) for u, i in zip(coo.row, coo.col)], "user long, item long"
        )
        start = time.perf_counter()
        fitter = SparkIALS(config, n_blocks=args.blocks).fit(frame)
        spark_fit = time.perf_counter() - start
    finally:
        spark.stop()
    distributed = fitter.model_

    rows = []
    for name, model, fit_s, epochs in (
        ("IALS (one process)", local, local_fit, local.epoch_times_),
        ("SparkIALS (local[2])", distributed, spark_fit, fitter.epoch_times_),
    ):
        result = evaluate(model, train, test)
        rows.append(
            f"| {name} | {result.mean('recall', 20):.6f} | {result.mean('ndcg', 20):.6f} | "
            f"{np.median(epochs):.3f} | {fit_s:.1f} |"
        )
    table = "\n".join(
        [
            f"# IALS on one machine and on Spark: {source}",
            "",
            f"max relative difference of the factors: users "
            f"{relative_difference(distributed.user_factors_, local.user_factors_):.2e}, "
            f"items {relative_difference(distributed.item_factors_, local.item_factors_):.2e}",
            "",
            "| fit | Recall@20 | NDCG@20 | median s/epoch | fit s (Spark: incl. set-up) |",
            "|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    (out / "spark_table.md").write_text(table)
    print(table)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(np.arange(1, len(local.epoch_times_) + 1), local.epoch_times_, "o-", label="IALS")
    ax.plot(
        np.arange(1, len(fitter.epoch_times_) + 1), fitter.epoch_times_, "s-", label="SparkIALS"
    )
    ax.set_xlabel("epoch")
    ax.set_ylabel("seconds")
    ax.set_yscale("log")
    ax.set_title(f"time per epoch, {source}", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "spark_epochs.png", dpi=120)
    plt.close(fig)
    print(f"wrote {out / 'spark_table.md'} and {out / 'spark_epochs.png'}")


if __name__ == "__main__":
    main()

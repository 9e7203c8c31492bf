"""SparkIALS against single-machine IALS and Spark MLlib ALS; growth with synthetic data.

Three parts, all in one local[cores] Spark session:

1. Gowalla, Hu objective with MLlib's count-scaled regulariser (THEORY.md mapping:
   ALS(implicitPrefs=True, alpha, regParam) == IALS(objective="hu", unobserved_weight=1,
   confidence_scale=alpha, regularization=regParam, reg_exponent=1, reg_frequency_offset=0),
   Cholesky solver): SparkIALS and IALS from the same initialisation (largest relative factor
   difference, Recall@20 of both), then MLlib ALS at the same hyper-parameters (time per
   iteration from fits of 2 and n_epochs iterations, Recall@20).
2. Synthetic interactions (power-law users and items, generated inside Spark) at each
   --sizes value: SparkIALS seconds per epoch.

    NUMBA_CACHE_DIR=$PWD/.numba_cache PYTHONPATH=$PWD /work/venv/bin/python \
        benchmarks/bench_spark.py --data /work/shared/data/gowalla --sizes 1e6,1e7
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import pandas as pd


def _frame(spark, X):
    coo = X.tocoo()
    pdf = pd.DataFrame({"user": coo.row.astype(np.int64), "item": coo.col.astype(np.int64)})
    return spark.createDataFrame(pdf)


def _rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def gowalla(spark, args):
    from linrec.datasets import load_lightgcn
    from linrec.ials import IALS
    from linrec.metrics import evaluate
    from linrec.spark import SparkIALS

    data = load_lightgcn(args.data)
    X_train, X_test = data.train, data.test
    n_users, n_items = X_train.shape
    print(f"Gowalla: {n_users} users, {n_items} items, {X_train.nnz} train interactions")
    params = dict(
        n_factors=args.factors,
        objective="hu",
        unobserved_weight=1.0,
        confidence_scale=args.alpha,
        regularization=args.reg,
        reg_exponent=1.0,
        reg_frequency_offset=0.0,
        solver="cholesky",
        n_epochs=args.epochs,
        random_state=0,
        n_jobs=args.cores,
    )
    df = _frame(spark, X_train).persist()
    df.count()
    t0 = time.perf_counter()
    fitter = SparkIALS(IALS(**params)).fit(df, item_ids=np.arange(n_items))
    spark_total = time.perf_counter() - t0
    model = fitter.model_
    t0 = time.perf_counter()
    ref = IALS(**params).fit(X_train)
    single_total = time.perf_counter() - t0

    def rel(a, b):
        return float(np.abs(a - b).max() / np.abs(b).max())

    rel_user = rel(model.user_factors_, ref.user_factors_)
    rel_item = rel(model.item_factors_, ref.item_factors_)
    recall_spark = evaluate(model, X_train, X_test, k=(20,), metrics=("recall",)).mean("recall", 20)
    recall_single = evaluate(ref, X_train, X_test, k=(20,), metrics=("recall",)).mean("recall", 20)
    print(
        f"SparkIALS: setup {fitter.setup_time_:.1f} s, median epoch "
        f"{np.median(fitter.epoch_times_):.2f} s (epochs {np.round(fitter.epoch_times_, 2)}), "
        f"total {spark_total:.1f} s, {fitter.n_blocks_} blocks"
    )
    print(
        f"IALS one machine ({args.cores} threads): median epoch "
        f"{np.median(ref.epoch_times_):.2f} s, total {single_total:.1f} s"
    )
    print(f"largest relative factor difference: user {rel_user:.2e}, item {rel_item:.2e}")
    print(f"Recall@20: SparkIALS {recall_spark:.6f}, IALS {recall_single:.6f}")

    if args.skip_mllib:
        return
    from pyspark.ml.recommendation import ALS

    def mllib_fit(iterations):
        als = ALS(
            rank=args.factors,
            maxIter=iterations,
            regParam=args.reg,
            implicitPrefs=True,
            alpha=args.alpha,
            userCol="user",
            itemCol="item",
            ratingCol="rating",
            seed=0,
            numUserBlocks=args.cores,
            numItemBlocks=args.cores,
            coldStartStrategy="drop",
        )
        rated = df.withColumn("rating", df["user"] * 0 + 1.0)
        t0 = time.perf_counter()
        fitted = als.fit(rated)
        fitted.userFactors.count()  # factors are lazy RDDs until used
        fitted.itemFactors.count()
        return fitted, time.perf_counter() - t0

    _, t_short = mllib_fit(2)
    fitted, t_long = mllib_fit(args.epochs)
    per_iter = (t_long - t_short) / (args.epochs - 2)
    users = fitted.userFactors.toPandas()
    items = fitted.itemFactors.toPandas()
    P = np.zeros((n_users, args.factors), dtype=np.float32)
    Q = np.zeros((n_items, args.factors), dtype=np.float32)
    P[users["id"].to_numpy()] = np.stack(users["features"].to_numpy())
    Q[items["id"].to_numpy()] = np.stack(items["features"].to_numpy())

    def scores(user_ids, _X):
        return P[user_ids] @ Q.T

    recall_mllib = evaluate(scores, X_train, X_test, k=(20,), metrics=("recall",)).mean(
        "recall", 20
    )
    print(
        f"MLlib ALS: {args.epochs} iterations {t_long:.1f} s, 2 iterations {t_short:.1f} s, "
        f"per iteration {per_iter:.2f} s; Recall@20 {recall_mllib:.6f}"
    )
    df.unpersist()


def synthetic(spark, args, size):
    from pyspark.sql import functions as F

    from linrec.ials import IALS
    from linrec.spark import SparkIALS

    n = int(float(size))
    n_users = max(n // 20, 10)
    n_items = max(n // 50, 10)
    # Power-law popularity: index = floor(n * U^3) puts most mass on low indices.
    df = (
        spark.range(n, numPartitions=2 * args.cores)
        .select(
            F.floor(F.pow(F.rand(1), 3) * n_users).cast("long").alias("user"),
            F.floor(F.pow(F.rand(2), 3) * n_items).cast("long").alias("item"),
        )
        .persist()
    )
    df.count()
    model = IALS(
        n_factors=args.factors,
        objective="hu",
        unobserved_weight=1.0,
        confidence_scale=args.alpha,
        regularization=args.reg,
        reg_exponent=1.0,
        reg_frequency_offset=0.0,
        solver=args.synthetic_solver,
        n_epochs=args.synthetic_epochs,
        random_state=0,
    )
    t0 = time.perf_counter()
    fitter = SparkIALS(model).fit(df)
    total = time.perf_counter() - t0
    print(
        f"synthetic {n:.0e} rows -> {fitter.n_interactions_} distinct pairs, "
        f"{fitter.user_ids_.size} users, {fitter.item_ids_.size} items, {fitter.n_blocks_} "
        f"blocks: setup {fitter.setup_time_:.1f} s, median epoch "
        f"{np.median(fitter.epoch_times_):.2f} s (epochs {np.round(fitter.epoch_times_, 2)}), "
        f"total {total:.1f} s, driver peak RSS {_rss_gb():.2f} GB"
    )
    df.unpersist()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/shared/data/gowalla")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--driver-memory", default="3g")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--alpha", type=float, default=10.0)
    parser.add_argument("--reg", type=float, default=0.01)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--sizes", default="1e6,1e7", help="synthetic sizes ('' for none)")
    parser.add_argument("--synthetic-epochs", type=int, default=3)
    parser.add_argument("--synthetic-solver", default="cholesky")
    parser.add_argument("--skip-gowalla", action="store_true")
    parser.add_argument("--skip-mllib", action="store_true")
    args = parser.parse_args()

    from linrec.spark import local_session

    print("load:", os.getloadavg())
    t0 = time.perf_counter()
    spark = local_session("bench_spark", cores=args.cores, driver_memory=args.driver_memory)
    spark.sparkContext.setLogLevel("ERROR")
    print(f"Spark start-up {time.perf_counter() - t0:.1f} s, local[{args.cores}]")
    try:
        if not args.skip_gowalla:
            gowalla(spark, args)
        for size in filter(None, args.sizes.split(",")):
            synthetic(spark, args, size)
    finally:
        spark.stop()
    print("load:", os.getloadavg())


if __name__ == "__main__":
    main()

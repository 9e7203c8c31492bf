"""linrec IALS against implicit 0.7.3 (CPU ALS): seconds per epoch, peak memory, Recall@20.

Both libraries run in this one process with the same thread count, factors and epochs, fits
interleaved (linrec, implicit, linrec, ...) so that load from other processes hits both alike.
Pairs: linrec CG vs implicit CG (same number of CG steps; linrec's default preconditioned,
warm-started CG as ``cg``, started from zero as ``cg-zero``, textbook CG as implicit's as
``cg-plain``), linrec Cholesky vs implicit Cholesky, and linrec iALS++ (reported against implicit
Cholesky and linrec Cholesky).

Reported per pair: median seconds per epoch over all timed epochs (after a warm-up fit that
loads numba's cache), peak resident-memory increase during fit, Recall@20 / NDCG@20 on the
test file after the same epochs (LightGCN protocol), and ratios linrec / implicit.

Example:
    python benchmarks/bench_ials.py --datasets gowalla --factors 64 256 --epochs 5
    python benchmarks/bench_ials.py --synthetic          # adds 100k items x 10M interactions
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _ials_common import SHARED_DATA

from linrec._memory import PeakMemory
from linrec.datasets import load_lightgcn, make_implicit_split
from linrec.ials import IALS
from linrec.metrics import FactorScores, evaluate

# Settings chosen on a validation split of the training file (benchmarks/tune_ials.py; see
# RESULTS.md). implicit: alpha tuned as PITFALLS.md says (its default alpha = 1 gives
# positives no extra weight on binary data).
LINREC_PARAMS = {
    "gowalla": dict(
        objective="rendle", unobserved_weight=0.003, regularization=0.01, reg_exponent=1.0
    ),
    "yelp2018": dict(
        objective="rendle", unobserved_weight=0.03, regularization=0.003, reg_exponent=1.0
    ),
    "synthetic": dict(
        objective="rendle", unobserved_weight=0.003, regularization=0.01, reg_exponent=1.0
    ),
}
IMPLICIT_PARAMS = {
    "gowalla": dict(alpha=10.0, regularization=0.01),
    "yelp2018": dict(alpha=10.0, regularization=0.01),
    "synthetic": dict(alpha=10.0, regularization=0.01),
}


def synthetic(n_users, n_items=100_000, density=0.002, cache=None):
    """``linrec.datasets.make_implicit_split`` data (power-law users and items, planted tastes).

    The defaults make about 10M interactions (50k users x 100k items, 200 per user on
    average), of which 20% per user are held out as the test part. Generation costs
    O(n_users n_items) (minutes at this size), so ``cache`` (an .npz path) keeps the result.
    """
    if cache is not None and Path(cache).exists():
        with np.load(cache) as z:
            shape = tuple(z["shape"])
            train = sp.csr_matrix((z["tr_data"], z["tr_indices"], z["tr_indptr"]), shape=shape)
            test = sp.csr_matrix((z["te_data"], z["te_indices"], z["te_indptr"]), shape=shape)
        return train, test
    train, test = make_implicit_split(
        n_users=n_users, n_items=n_items, density=density, test_fraction=0.2, random_state=0
    )
    if cache is not None:
        np.savez(
            cache,
            shape=np.asarray(train.shape),
            tr_data=train.data,
            tr_indices=train.indices,
            tr_indptr=train.indptr,
            te_data=test.data,
            te_indices=test.indices,
            te_indptr=test.indptr,
        )
    return train, test


# bench pair -> (linrec solver, its CG options); the implicit peer is CG for every cg* pair
PAIRS = {
    "cg": ("cg", {}),
    "cg-zero": ("cg", {"cg_warm_start": False}),
    "cg-plain": ("cg", {"cg_precondition": False}),
    "cholesky": ("cholesky", {}),
    "ialspp": ("ialspp", {}),
}


def run_linrec(
    train,
    params,
    d,
    pair,
    epochs,
    threads,
    cg_steps,
    block_size,
    record_objective=True,
    final_user_step="exact",
):
    solver, options = PAIRS[pair]
    model = IALS(
        n_factors=d,
        solver=solver,
        n_epochs=epochs,
        n_jobs=threads,
        random_state=0,
        cg_steps=cg_steps,
        block_size=block_size,
        record_objective=record_objective,
        final_user_step=final_user_step,
        **options,
        **params,
    )
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        model.fit(train)
        total = time.perf_counter() - t0
    return model.user_factors_, model.item_factors_, list(model.epoch_times_), mem.increase, total


def run_implicit(train, params, d, use_cg, epochs, threads, cg_steps):
    from implicit.cpu.als import AlternatingLeastSquares

    times = []
    model = AlternatingLeastSquares(
        factors=d,
        iterations=epochs,
        use_cg=use_cg,
        num_threads=threads,
        random_state=0,
        calculate_training_loss=False,
        **params,
    )
    model.cg_steps = cg_steps  # an attribute, not a constructor argument, in 0.7.3
    # implicit's own advice: one BLAS thread (its solvers are OpenMP-parallel)
    with threadpool_limits(1, "blas"), PeakMemory() as mem:
        t0 = time.perf_counter()
        model.fit(train, show_progress=False, callback=lambda it, el, loss: times.append(el))
        total = time.perf_counter() - t0
    return model.user_factors, model.item_factors, times, mem.increase, total


def recall_ndcg(P, Q, train, test, n_jobs):
    """Recall@20 and NDCG@20 of the factors (LightGCN protocol, linrec.metrics.evaluate)."""
    res = evaluate(
        FactorScores(P, Q), train, test, k=(20,), metrics=("recall", "ndcg"), n_jobs=n_jobs
    )
    return res.mean("recall", 20), res.mean("ndcg", 20)


def _load():
    """1-minute load average now (the machine is shared: every row says how loaded it was)."""
    with open("/proc/loadavg") as fh:
        return fh.read().split()[0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=str(SHARED_DATA))
    ap.add_argument("--datasets", nargs="*", default=["gowalla", "yelp2018"])
    ap.add_argument(
        "--synthetic",
        action="store_true",
        help="also run the 100k-items / 10M-interactions synthetic matrix",
    )
    ap.add_argument("--synthetic-users", type=int, default=50_000)
    ap.add_argument("--synthetic-density", type=float, default=0.002)
    ap.add_argument("--synthetic-cache", default=None, help=".npz file keeping the matrix")
    ap.add_argument("--factors", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cg-steps", type=int, default=3)
    ap.add_argument("--block-size", type=int, default=32)
    ap.add_argument("--pairs", nargs="+", choices=list(PAIRS), default=["cg", "cholesky", "ialspp"])
    ap.add_argument(
        "--no-record-objective",
        action="store_true",
        help="IALS(record_objective=False): no objective after each epoch (implicit computes "
        "none either)",
    )
    ap.add_argument(
        "--final-user-step",
        choices=["exact", "solver"],
        default="exact",
        help="IALS(final_user_step=...): the fit ends with an exact user step or one more "
        "half-step of its solver (implicit ends with its last item half-step)",
    )
    ap.add_argument(
        "--skip-implicit-cholesky-above",
        type=int,
        default=10**9,
        help="skip implicit's Cholesky for larger d (it is slow); linrec's still runs",
    )
    args = ap.parse_args(argv)

    sets = [(name, lambda n=name: load_lightgcn(Path(args.data_dir) / n)) for name in args.datasets]
    if args.synthetic:
        sets.append(
            (
                "synthetic",
                lambda: synthetic(
                    args.synthetic_users,
                    density=args.synthetic_density,
                    cache=args.synthetic_cache,
                ),
            )
        )
    with open("/proc/loadavg") as fh:
        print(f"load at start: {fh.read().split()[:3]}", flush=True)
    print(
        "| data | d | linrec solver | implicit solver | linrec s/epoch | implicit s/epoch | "
        "ratio | linrec peak MiB | implicit peak MiB | linrec R@20 / N@20 | "
        f"implicit R@20 / N@20 | linrec fit s (incl. final {args.final_user_step} user step) | "
        "implicit fit s | "
        "load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for name, loader in sets:
        train, test = loader()
        print(
            f"{name}: {train.shape[0]} users x {train.shape[1]} items, {train.nnz} train / "
            f"{test.nnz} test interactions",
            flush=True,
        )
        lp, ip = LINREC_PARAMS[name], IMPLICIT_PARAMS[name]
        for d in args.factors:
            for pair in args.pairs:
                use_cg = PAIRS[pair][0] == "cg"
                with_implicit = pair != "ialspp" and not (
                    not use_cg and d > args.skip_implicit_cholesky_above
                )
                # warm-up: loads numba's compiled kernels from cache
                run_linrec(
                    train[:2000], lp, d, pair, 1, args.threads, args.cg_steps, args.block_size
                )
                lin_times, imp_times, lin_mem, imp_mem = [], [], [], []
                lin_total, imp_total = [], []
                for _ in range(args.repeats):
                    P, Q, t, mem, total = run_linrec(
                        train,
                        lp,
                        d,
                        pair,
                        args.epochs,
                        args.threads,
                        args.cg_steps,
                        args.block_size,
                        not args.no_record_objective,
                        args.final_user_step,
                    )
                    lin_times += t
                    lin_mem.append(mem)
                    lin_total.append(total)
                    if with_implicit:
                        Pi, Qi, ti, memi, totali = run_implicit(
                            train, ip, d, use_cg, args.epochs, args.threads, args.cg_steps
                        )
                        imp_times += ti
                        imp_mem.append(memi)
                        imp_total.append(totali)
                lin_q = recall_ndcg(P, Q, train, test, n_jobs=args.threads)
                lin_s = float(np.median(lin_times))
                if with_implicit:
                    imp_q = recall_ndcg(Pi, Qi, train, test, n_jobs=args.threads)
                    imp_s = float(np.median(imp_times))
                    imp_cols = (
                        f"{imp_s:.3f} | {lin_s / imp_s:.2f} | ",
                        f"{max(imp_mem) / 2**20:.0f} | ",
                        f"{imp_q[0]:.4f} / {imp_q[1]:.4f} | ",
                    )
                else:
                    imp_cols = ("- | - | ", "- | ", "- | ")
                print(
                    f"| {name} | {d} | {pair} | "
                    f"{('cg' if use_cg else 'cholesky') if with_implicit else '-'} | "
                    f"{lin_s:.3f} | {imp_cols[0]}{max(lin_mem) / 2**20:.0f} | {imp_cols[1]}"
                    f"{lin_q[0]:.4f} / {lin_q[1]:.4f} | {imp_cols[2]}"
                    f"{np.median(lin_total):.2f} | "
                    f"{f'{np.median(imp_total):.2f}' if imp_total else '-'} | {_load()} |",
                    flush=True,
                )
    with open("/proc/loadavg") as fh:
        print(f"load at end: {fh.read().split()[:3]}", flush=True)


if __name__ == "__main__":
    main()

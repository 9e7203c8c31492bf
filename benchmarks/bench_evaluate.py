"""Time linrec.metrics.evaluate on the full Gowalla split with a d = 64 factor model.

The bar (issue 2): at most 2 s on the project's 2-core machine, with results identical to a
slow numpy reference. The factors are seeded and built from the data (item factors random,
user factors the mean item factor of the user's training items), so that there are many hits
and the exactness check means something.

What is timed: ``evaluate(score_fn, X_train, X_test, k=20, metrics=(recall, ndcg))`` with
``score_fn(users, X) = U[users] @ V.T`` in float32: full-catalogue scoring, exclusion of the
training items, exact top-20 and the metrics. Median of ``--repeats`` runs after a warm-up.
Peer in the same script: the same work done the obvious way (BLAS with all threads, then
numba's parallel top-k kernel, batch after batch), to show what the threaded pipeline buys.

Usage (from the repository root)::

    PYTHONPATH=. python benchmarks/bench_evaluate.py            # timing + full exactness check
    PYTHONPATH=. python benchmarks/bench_evaluate.py --no-full-reference --sweep 32 64 128 256
    PYTHONPATH=. python benchmarks/bench_evaluate.py --write    # also append to RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from linrec._base import batch_rows
from linrec._kernels.topk import hit_matrix, topk_rows
from linrec._threading import blas_threads, numba_threads
from linrec.metrics import FactorScores, evaluate, ndcg, recall

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LINREC_SHARED_DATA", ROOT.parent / "shared" / "data")) / "gowalla"
K = 20
METRICS = ("recall", "ndcg")
CPU_MEDIANS: dict = {}


def read_lightgcn(path: Path, shape=None) -> sp.csr_matrix:
    """`user item item ...` per line (0-based) -> binary CSR."""
    rows, cols = [], []
    with open(path) as fh:
        for line in fh:
            ids = np.array(line.split(), dtype=np.int64)
            if ids.size > 1:
                rows.append(np.full(ids.size - 1, ids[0]))
                cols.append(ids[1:])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    shape = shape or (int(rows.max()) + 1, int(cols.max()) + 1)
    X = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=shape)
    X.sum_duplicates()
    X.data[:] = 1.0
    return X


def load_gowalla():
    train = read_lightgcn(DATA / "train.txt")
    test = read_lightgcn(DATA / "test.txt")
    shape = (max(train.shape[0], test.shape[0]), max(train.shape[1], test.shape[1]))
    train.resize(shape)
    test.resize(shape)
    return train, test


def make_factors(train, d=64, seed=0):
    """Seeded factors with real signal, cheaply: item factors are a random projection of the
    item co-occurrence matrix (``X^T X R``, row-normalised), user factors the mean item factor
    of the user's training items. No training: the point is a realistic number of hits."""
    rng = np.random.default_rng(seed)
    R = rng.standard_normal((train.shape[1], d)).astype(np.float32)
    V = np.asarray(train.T @ (train @ R), dtype=np.float32)
    V /= np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-6)
    counts = np.maximum(np.diff(train.indptr), 1).astype(np.float32)
    U = np.asarray(train @ V, dtype=np.float32) / counts[:, None]
    return np.ascontiguousarray(U), np.ascontiguousarray(V)


def reference_per_user(U, V, train, test, users, k=K, batch=256):
    """Slow and obvious ranking: stable argsort of every full score row (ties -> lower index),
    NaN for the excluded training items (sorted last), hits by set membership. The hit matrix
    then goes through linrec's metric functions (unit-tested against plain Python to 1e-12),
    so an exact comparison with evaluate checks the rankings bit for bit."""
    hits = np.zeros((users.size, k), dtype=np.uint8)
    for start in range(0, users.size, batch):
        ids = users[start : start + batch]
        scores = U[ids] @ V.T
        for row, u in enumerate(ids):
            scores[row, train.indices[train.indptr[u] : train.indptr[u + 1]]] = np.nan
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        for row, u in enumerate(ids):
            test_items = set(test.indices[test.indptr[u] : test.indptr[u + 1]].tolist())
            for p, j in enumerate(order[row]):
                if not np.isnan(scores[row, j]) and j in test_items:
                    hits[start + row, p] = 1
    n_test = np.diff(test.indptr)[users]
    return {"recall": recall(hits, n_test, k), "ndcg": ndcg(hits, n_test, k)}


def peer_numba_parallel(U, V, train, test, k=K, n_jobs=None):
    """The obvious pipeline: BLAS scores (all threads), then numba's parallel top-k and hits."""
    users = np.flatnonzero(np.diff(test.indptr))
    step = batch_rows(V.shape[0], None, itemsize=4)
    hits_all = np.empty((users.size, k), np.uint8)
    one = np.ones(1, np.bool_)
    for start in range(0, users.size, step):
        ids = users[start : start + step]
        with blas_threads(n_jobs):
            scores = U[ids] @ V.T
        tr, te = train[ids], test[ids]
        with numba_threads(n_jobs):
            top, _ = topk_rows(scores, k, tr.indptr.astype(np.int64), tr.indices, one, False)
            hits_all[start : start + ids.size] = hit_matrix(
                top, te.indptr.astype(np.int64), te.indices
            )
    return hits_all


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn, repeats):
    """Median wall time and the runs; CPU seconds (all threads) per run go to CPU_MEDIANS.

    CPU time is reported too because the machine is shared: wall time under load says little,
    while CPU seconds / cores bounds what an idle machine would take."""
    fn()  # warm-up (compilation, caches)
    times, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), cpu_seconds()
        fn()
        times.append(time.perf_counter() - t0)
        cpus.append(cpu_seconds() - c0)
    CPU_MEDIANS[fn] = statistics.median(cpus)
    return statistics.median(times), times


def peak_traced_mib(fn):
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "uptime unavailable"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--subset", type=int, default=2000, help="users in the quick check")
    parser.add_argument("--no-full-reference", action="store_true")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--sweep", type=int, nargs="*", default=[], help="batch sizes to time")
    parser.add_argument("--write", action="store_true", help="append to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    argv_text = " ".join(sys.argv[1:] if argv is None else argv)

    load_before = uptime()
    t0 = time.perf_counter()
    train, test = load_gowalla()
    load_s = time.perf_counter() - t0
    U, V = make_factors(train)
    print(f"Gowalla {train.shape}, train {train.nnz}, test {test.nnz}, loaded in {load_s:.2f} s")

    def score_fn(users, X_batch):
        return U[users] @ V.T

    variants = {"FactorScores(U, V)": FactorScores(U, V), "score_fn U[users] @ V.T": score_fn}
    timings, results, peaks, cpus = {}, {}, {}, {}
    for name, scorer in variants.items():

        def run(scorer=scorer, **kw):
            return evaluate(scorer, train, test, k=K, metrics=METRICS, **kw)

        timings[name] = timed(run, args.repeats)
        cpus[name] = CPU_MEDIANS[run]
        peaks[name] = peak_traced_mib(run)
        results[name] = run()
        median, times = timings[name]
        print(
            f"evaluate with {name}: median {median:.3f} s "
            f"({', '.join(f'{t:.3f}' for t in times)}), CPU {cpus[name]:.2f} s, "
            f"peak traced {peaks[name]:.0f} MiB"
        )
        print(f"  {results[name]}")
        for bs in args.sweep:
            value, _ = timed(lambda bs=bs, run=run: run(batch_size=bs), args.repeats)
            timings[f"{name}, batch_size={bs}"] = (value, [])
            print(f"  batch_size={bs}: median {value:.3f} s")
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"max RSS of the process {max_rss:.0f} MiB")
    result = results["FactorScores(U, V)"]

    peer = None
    if not args.no_peer:

        def run_peer():
            return peer_numba_parallel(U, V, train, test)

        peer, _ = timed(run_peer, args.repeats)
        peer_cpu = CPU_MEDIANS[run_peer]
        hits = peer_numba_parallel(U, V, train, test)
        n_test = np.diff(test.indptr)[result.users]
        same = np.array_equal(hits.sum(axis=1) / n_test, result.per_user["recall", K])
        print(
            f"peer (BLAS then numba parallel top-k): median {peer:.3f} s, CPU {peer_cpu:.2f} s, "
            f"same recall: {same}"
        )

    def identical(ref, positions):
        return {
            name: all(np.array_equal(ref[m], r.per_user[m, K][positions]) for m in METRICS)
            for name, r in results.items()
        }

    rng = np.random.default_rng(1)
    n_subset = min(args.subset, result.users.size)
    pos = np.sort(rng.choice(result.users.size, size=n_subset, replace=False))
    subset_equal = identical(reference_per_user(U, V, train, test, result.users[pos]), pos)
    print(f"identical to the reference on a random subset of {pos.size} users: {subset_equal}")
    full_equal = None
    if not args.no_full_reference:
        t0 = time.perf_counter()
        ref = reference_per_user(U, V, train, test, result.users)
        full_equal = identical(ref, np.arange(result.users.size))
        print(
            f"identical on all {result.users.size} users: {full_equal} "
            f"(reference took {time.perf_counter() - t0:.0f} s)"
        )
    load_after = uptime()
    print("load before:", load_before)
    print("load after: ", load_after)

    if args.write:
        lines = [
            "",
            "## Evaluation speed: full Gowalla, d = 64 factor model (metrics helper)",
            "",
            "Command: `"
            + f"PYTHONPATH=. python benchmarks/bench_evaluate.py {argv_text}".strip()
            + "`",
            "",
            f"- Data: Gowalla LightGCN split, {train.shape[0]:,} users x {train.shape[1]:,} "
            f"items, {result.users.size:,} users evaluated; k = 20, recall + ndcg, training "
            "items excluded; seeded factors (d = 64, float32) built from co-occurrence.",
        ]
        for name, (median, times) in timings.items():
            runs = f" ({', '.join(f'{t:.2f}' for t in times)})" if times else ""
            peak = f", peak traced memory {peaks[name]:.0f} MiB" if name in peaks else ""
            cpu = f", CPU time {cpus[name]:.2f} s (both threads)" if name in cpus else ""
            lines.append(f"- evaluate with {name}: **median {median:.3f} s**{runs}{cpu}{peak}")
        if peer is not None:
            lines.append(
                f"- Peer in the same run (BLAS on all threads, then numba's parallel top-k, "
                f"batch after batch): median {peer:.3f} s, CPU time {peer_cpu:.2f} s."
            )
        lines.append(
            f"- Identical to the argsort reference (recall and ndcg per user): subset of "
            f"{pos.size} users {subset_equal}; all users {full_equal}. Recall@20 "
            f"{result.mean('recall', K):.4f}, NDCG@20 {result.mean('ndcg', K):.4f}."
        )
        lines.append(f"- Bar 2 s. Load: before `{load_before}`; after `{load_after}`.")
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as fh:
            fh.write("\n".join(lines) + "\n")
        print("appended to benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()

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
from linrec.metrics import evaluate

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LINREC_SHARED_DATA", ROOT.parent / "shared" / "data")) / "gowalla"
K = 20
METRICS = ("recall", "ndcg")


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
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((train.shape[1], d)).astype(np.float32)
    counts = np.maximum(np.diff(train.indptr), 1).astype(np.float32)
    U = np.asarray(train @ V, dtype=np.float32) / counts[:, None]
    U += 0.1 * rng.standard_normal(U.shape).astype(np.float32)
    return np.ascontiguousarray(U), V


def reference_per_user(U, V, train, test, users, k=K, batch=256):
    """Slow and obvious: stable argsort of every score row (ties -> lower index), NaN for the
    excluded training items (sorted last), hits by set membership, metrics by formula."""
    recall_values, ndcg_values = [], []
    disc = 1.0 / np.log2(np.arange(k) + 2.0)
    for start in range(0, users.size, batch):
        ids = users[start : start + batch]
        scores = U[ids] @ V.T
        for row, u in enumerate(ids):
            scores[row, train.indices[train.indptr[u] : train.indptr[u + 1]]] = np.nan
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        for row, u in enumerate(ids):
            top = [j for j in order[row] if not np.isnan(scores[row, j])]
            test_items = set(test.indices[test.indptr[u] : test.indptr[u + 1]].tolist())
            hits = np.array([j in test_items for j in top] + [False] * (k - len(top)), float)
            n_test = len(test_items)
            recall_values.append(hits.sum() / n_test)
            ndcg_values.append((hits @ disc) / disc[: min(k, n_test)].sum())
    return {"recall": np.array(recall_values), "ndcg": np.array(ndcg_values)}


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


def timed(fn, repeats):
    fn()  # warm-up (compilation, caches)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
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

    load_before = uptime()
    t0 = time.perf_counter()
    train, test = load_gowalla()
    load_s = time.perf_counter() - t0
    U, V = make_factors(train)
    print(f"Gowalla {train.shape}, train {train.nnz}, test {test.nnz}, loaded in {load_s:.2f} s")

    def score_fn(users, X_batch):
        return U[users] @ V.T

    def run(**kw):
        return evaluate(score_fn, train, test, k=K, metrics=METRICS, **kw)

    median, times = timed(run, args.repeats)
    print(
        f"evaluate: median {median:.3f} s over {args.repeats} ({', '.join(f'{t:.3f}' for t in times)})"
    )
    peak = peak_traced_mib(run)
    result = run()
    print(
        f"  peak traced memory {peak:.0f} MiB; max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    )
    print(f"  {result}")

    sweep = {}
    for bs in args.sweep:
        sweep[bs], _ = timed(lambda bs=bs: run(batch_size=bs), args.repeats)
        print(f"  batch_size={bs}: median {sweep[bs]:.3f} s")

    peer = None
    if not args.no_peer:
        peer, _ = timed(lambda: peer_numba_parallel(U, V, train, test), args.repeats)
        hits = peer_numba_parallel(U, V, train, test)
        n_test = np.diff(test.indptr)[result.users]
        same = np.array_equal(hits.sum(axis=1) / n_test, result.per_user["recall", K])
        print(f"peer (BLAS then numba parallel top-k): median {peer:.3f} s, same recall: {same}")

    rng = np.random.default_rng(1)
    pos = np.sort(
        rng.choice(result.users.size, size=min(args.subset, result.users.size), replace=False)
    )
    ref = reference_per_user(U, V, train, test, result.users[pos])
    subset_equal = all(np.array_equal(ref[m], result.per_user[m, K][pos]) for m in METRICS)
    print(f"exact on a random subset of {pos.size} users: {subset_equal}")
    full_equal = None
    if not args.no_full_reference:
        t0 = time.perf_counter()
        ref = reference_per_user(U, V, train, test, result.users)
        full_equal = all(np.array_equal(ref[m], result.per_user[m, K]) for m in METRICS)
        print(
            f"exact on all {result.users.size} users: {full_equal} (reference took {time.perf_counter() - t0:.0f} s)"
        )
    load_after = uptime()
    print("load before:", load_before)
    print("load after: ", load_after)

    if args.write:
        command = "PYTHONPATH=. python benchmarks/bench_evaluate.py " + " ".join(
            argv or sys.argv[1:]
        )
        lines = [
            "",
            "## Evaluation speed: full Gowalla, d = 64 factor model (linrec.metrics.evaluate)",
            "",
            f"Command: `{command.strip()}` (numba {__import__('numba').__version__}, numpy {np.__version__}, 2 cores)",
            "",
            f"- Data: Gowalla LightGCN split {train.shape[0]:,} users x {train.shape[1]:,} items, "
            f"{result.users.size:,} users evaluated; score_fn `U[users] @ V.T` float32, k = 20, "
            "recall + ndcg, training items excluded.",
            f"- **evaluate: median {median:.3f} s** of {args.repeats} runs after a warm-up "
            f"({', '.join(f'{t:.2f}' for t in times)}); bar: 2 s. Peak traced memory "
            f"{peak:.0f} MiB.",
        ]
        if peer is not None:
            lines.append(
                f"- Peer in the same run (BLAS on all threads, then numba's parallel top-k, "
                f"batch after batch): median {peer:.3f} s (ratio {peer / median:.2f}x)."
            )
        for bs, value in sweep.items():
            lines.append(f"- batch_size={bs}: median {value:.3f} s")
        lines.append(
            f"- Exactness against the argsort reference: random subset of {pos.size} users "
            f"{'identical' if subset_equal else 'DIFFERENT'}"
            + (
                ""
                if full_equal is None
                else f"; all users {'identical' if full_equal else 'DIFFERENT'}"
            )
            + f". Recall@20 {result.mean('recall', K):.4f}, NDCG@20 {result.mean('ndcg', K):.4f}."
        )
        lines.append(f"- Load: before `{load_before}`; after `{load_after}`.")
        with open(ROOT / "benchmarks" / "RESULTS.md", "a") as fh:
            fh.write("\n".join(lines) + "\n")
        print("appended to benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()

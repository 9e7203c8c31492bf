"""Load and generation times of linrec.datasets, against the obvious per-line Python parser.

Run from the repository root (needs ../shared/data)::

    PYTHONPATH=. python benchmarks/bench_datasets.py [--repeats 5]

Prints a markdown section for benchmarks/RESULTS.md: median wall time over ``--repeats`` runs
and peak traced memory (tracemalloc, one extra run), with the machine load next to them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import tracemalloc
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from linrec.datasets import load_lastfm, load_lightgcn, make_implicit

DATA = Path(
    os.environ.get("LINREC_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def naive_lightgcn(folder: Path):
    """The obvious reader: one Python loop over lines and tokens (the peer)."""
    parts = []
    for name in ("train.txt", "test.txt"):
        rows, cols = [], []
        with open(folder / name) as fh:
            for line in fh:
                tokens = [int(t) for t in line.split()]
                if tokens:
                    rows.extend([tokens[0]] * (len(tokens) - 1))
                    cols.extend(tokens[1:])
        parts.append((np.array(rows), np.array(cols)))
    n_users = max(int(r.max()) for r, _ in parts) + 1
    n_items = max(int(c.max()) for _, c in parts) + 1
    return [
        sp.csr_matrix((np.ones(r.size, np.float32), (r, c)), shape=(n_users, n_items))
        for r, c in parts
    ]


def measure(fn, repeats: int):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return statistics.median(times), peak / 2**20, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    load = os.getloadavg()
    rows = []
    for name in ("gowalla", "yelp2018"):
        t, mem, data = measure(lambda name=name: load_lightgcn(DATA / name), args.repeats)
        t_naive, _, naive = measure(lambda name=name: naive_lightgcn(DATA / name), args.repeats)
        naive_train = naive[0].copy()
        naive_train.data[:] = 1.0
        same = (naive_train != data.train).nnz == 0
        rows.append(
            f"| load_lightgcn {name} ({data.train.nnz:,} train + {data.test.nnz:,} test) "
            f"| {t:.3f} | {mem:.0f} | {t_naive:.3f} | {t_naive / t:.1f}x | {same} |"
        )
    t, mem, data = measure(lambda: load_lastfm(DATA / "lastfm"), args.repeats)
    rows.append(
        f"| load_lastfm ({data.train.nnz:,} + {data.test.nnz:,}) | {t:.3f} | {mem:.0f} | | | |"
    )
    for shape, kwargs in (
        ((2000, 1000), {}),
        ((5000, 3000), {}),
        ((30000, 40000), {"density": 0.00087}),
    ):
        repeats = args.repeats if shape[0] * shape[1] < 10**8 else 1
        t, mem, X = measure(lambda shape=shape, kw=kwargs: make_implicit(*shape, **kw), repeats)
        rows.append(
            f"| make_implicit {shape[0]:,} x {shape[1]:,} ({X.nnz:,} interactions) "
            f"| {t:.3f} | {mem:.0f} | | | |"
        )
    print(f"Load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (2 cores)\n")
    print("| task | linrec median s | peak MiB | per-line Python s | speed-up | same matrix |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\nLoad average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()

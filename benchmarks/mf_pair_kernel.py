"""Nanoseconds a target in MF's per-positive kernel, with and without row prefetching.

With fresh negatives per positive (``MF(negative_sharing="pair")``) each pair reads 1 + N
random item rows and adds a gradient into each of their rows of a dense buffer: the time goes
to waiting for those rows, not to arithmetic. This script calls the kernel of one pair
(``_pair_forward_backward``) on random pairs over a table of Gowalla's shape, on one thread,
clearing the touched gradient rows every ``--batch`` pairs as training does, and prints the
median time a target. ``--items`` small enough for the tables to stay in cache shows the
arithmetic floor. ``--no-prefetch`` compiles the kernel with prefetching switched off (the
distances are read when the kernel is compiled, so they are set before its first call).

Example:
    python benchmarks/mf_pair_kernel.py --items 40981 1000
    python benchmarks/mf_pair_kernel.py --items 40981 --no-prefetch
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from linrec._kernels import sgd


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=29858)
    parser.add_argument("--items", type=int, nargs="+", default=[40981])
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--negatives", type=int, default=256)
    parser.add_argument("--pairs", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-prefetch", action="store_true")
    args = parser.parse_args(argv)
    if args.no_prefetch:
        # a distance no pair reaches: the prefetch branch is never taken
        sgd._ROW_AHEAD = sgd._GRAD_AHEAD = 1 << 40

    @njit(fastmath=sgd._FASTMATH)
    def run(W, grad, n_users, users, targets, params, update_items, batch):
        n_rows, d = W.shape
        length = targets.shape[1]
        flags = np.zeros(n_rows, np.uint8)
        touched = np.empty(n_rows, np.int64)
        y = np.empty(length, W.dtype)
        g = np.empty(length, W.dtype)
        inv_q = np.empty(length, W.dtype)
        acc = np.empty(d, W.dtype)
        bits = np.empty(length, np.int64)
        no_dropout = np.empty(0, W.dtype)
        total = 0.0
        count = 0
        for b in range(users.shape[0]):
            loss, count = sgd._pair_forward_backward(
                W, users[b], targets[b], n_users, 0.0, sgd.INFONCE, params, True, 0,
                length - 1, 1.0, update_items, grad, flags, touched, count, y, g, inv_q,
                acc, bits, False, no_dropout, no_dropout,
            )  # fmt: skip
            total += loss
            if (b + 1) % batch == 0:
                for c in range(count):
                    flags[touched[c]] = 0
                    grad[touched[c]] = 0.0
                count = 0
        return total

    params = np.array([0.1, 1.0, 0.0, 1.0, 0.0])  # InfoNCE, temperature 0.1, cosine scores
    print(f"prefetch: {'off' if args.no_prefetch else 'on'}; d = {args.factors}, "
          f"N = {args.negatives}, {args.pairs} pairs, median of {args.repeats}")  # fmt: skip
    print("| items | table MB (W + grad) | forward + user gradient ns | with item gradients ns |")
    print("|---|---|---|---|")
    for n_items in args.items:
        rng = np.random.default_rng(0)
        n_rows = args.users + n_items
        W = (rng.standard_normal((n_rows, args.factors)) * 0.1).astype(np.float32)
        grad = np.zeros_like(W)
        users = rng.integers(0, args.users, args.pairs)
        targets = rng.integers(0, n_items, (args.pairs, 1 + args.negatives))
        cells = []
        for update_items in (False, True):
            run(W, grad, args.users, users[:2], targets[:2], params, update_items, args.batch)
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                run(W, grad, args.users, users, targets, params, update_items, args.batch)
                times.append(time.perf_counter() - start)
            cells.append(np.median(times) / targets.size * 1e9)
        mb = 2 * n_items * args.factors * 4 / 2**20
        print(f"| {n_items} | {mb:.1f} | {cells[0]:.1f} | {cells[1]:.1f} |")


if __name__ == "__main__":
    main()

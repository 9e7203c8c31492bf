"""Nanoseconds a negative in the loss of one MF pair (``_loss_grad``), for each loss family.

The loss of a pair and its gradient with respect to the scores run once per training pair
over its N negatives: with N = 4,096 shared negatives (the number chosen on validation for
InfoNCE and MINE+ on Gowalla) they are a large share of an epoch. This script times the
kernel alone on one thread on random scores and prints, next to each time, the loss and
the sum of the gradient to 17 digits, so that two versions of the kernel can be checked to
give the same values.

Example:
    python benchmarks/mf_loss_kernel.py --negatives 256 4096
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

# (name, loss code, extra positives); temperature 0.1, weight 1, margin 0.9, balance 1.1
LOSSES = [
    ("infonce", sgd.INFONCE, 0),
    ("debiased_infonce", sgd.DEBIASED_INFONCE, 1),
    ("mine_plus", sgd.MINE_PLUS, 0),
    ("ccl", sgd.CCL, 0),
    ("mse", sgd.MSE, 0),
]


@njit(fastmath=sgd._FASTMATH)
def _repeat(y, g, bits, repeats, code, n_extra, n_neg, params):
    total = 0.0
    for _ in range(repeats):
        total += sgd._loss_grad(code, y, n_extra, n_neg, 0.01, params, g, bits)
    return total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--negatives", type=int, nargs="+", default=[256, 4096])
    parser.add_argument("--elements", type=int, default=2_000_000, help="negatives timed")
    args = parser.parse_args(argv)
    params = np.array([0.1, 1.0, 0.9, 1.1, 0.0])
    print("| N | loss | ns a negative | loss (mean over repeats) | gradient sum |")
    print("|---|---|---|---|---|")
    for n_neg in args.negatives:
        for name, code, n_extra in LOSSES:
            y = np.random.default_rng(1).uniform(-1, 1, 1 + n_extra + n_neg)
            g = np.empty_like(y)
            bits = np.empty(y.shape[0], np.int64)
            _repeat(y, g, bits, 1, code, n_extra, n_neg, params)
            repeats = max(1, args.elements // n_neg)
            start = time.perf_counter()
            total = _repeat(y, g, bits, repeats, code, n_extra, n_neg, params)
            ns = (time.perf_counter() - start) / repeats / n_neg * 1e9
            print(f"| {n_neg} | {name} | {ns:.2f} | {total / repeats!r} | {g.sum()!r} |")


if __name__ == "__main__":
    main()

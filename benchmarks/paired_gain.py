"""Relative gain and paired 95% interval between two saved test evaluations.

``tune_mf.py --test --test-out A.npz`` saves the per-user test Recall@20 / NDCG@20 of its
refit. Given two such files (same data set, so the same test users), this prints the gain of
the first over the second and the normal 95% interval of the mean per-user difference, the
figures ``linrec reproduce`` reports for losses compared in one run.

Example:
    python benchmarks/paired_gain.py out/debiased_ccl.npz out/ccl.npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from linrec.reproduce import paired_gain


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("better", help=".npz of the loss whose gain is reported")
    parser.add_argument("reference", help=".npz of the loss it is compared with")
    args = parser.parse_args(argv)
    a, b = np.load(args.better), np.load(args.reference)
    if not np.array_equal(a["users"], b["users"]):
        raise SystemExit("the two files score different users: not the same test set")
    print(f"{a['loss']} ({args.better}) vs {b['loss']} ({args.reference}), {a['users'].size} users")
    for metric in ("recall", "ndcg"):
        gain, diff, half_width = paired_gain(a[metric], b[metric])
        print(
            f"{metric}@20: {a[metric].mean():.4f} vs {b[metric].mean():.4f}, "
            f"gain {100 * gain:+.1f}%, paired difference {diff:+.4f} ± {half_width:.4f}"
        )


if __name__ == "__main__":
    main()

"""Calibrate the validation protocol: how do validation splits rank fixed IALS settings vs test?

For a handful of fixed settings (given on the command line, never chosen here), fit IALS on
(a) the fit part of the random holdout, (b) the fit part of the tail holdout (last 20% of
each train.txt line), (c) the whole training file, and print the best Recall@20 over the
epochs (all users with held-out items) against (a) random validation, (b) tail validation,
(c) the test file. It reads the test file on purpose: its only use is to judge which
validation protocol tracks the test file, not to choose hyper-parameters (tune_ials.py does
that on validation alone).

Example:
    python benchmarks/calibrate_ials_protocol.py --data ../shared/data/gowalla \\
        --settings 0.003,0.01,1 0.01,0.1,0.5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _ials_common import tail_validation_split, validation_split

from linrec.datasets import load_lightgcn
from linrec.ials import IALS


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument(
        "--settings",
        nargs="+",
        required=True,
        help="unobserved_weight,regularization,reg_exponent triples",
    )
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    train, test = load_lightgcn(args.data)
    splits = {
        "random": validation_split(train, 0.2, seed=0),
        "tail": tail_validation_split(args.data, train.shape, 0.2),
        "test": (train, test),
    }
    print("| w | lam | nu | random val R@20 (epoch) | tail val R@20 (epoch) | test R@20 (epoch) |")
    print("|---|---|---|---|---|---|", flush=True)
    for setting in args.settings:
        w, lam, nu = (float(v) for v in setting.split(","))
        cells = []
        for fit_part, held in splits.values():
            keep = np.diff(fit_part.indptr) > 0
            model = IALS(
                n_factors=args.factors,
                objective="rendle",
                unobserved_weight=w,
                regularization=lam,
                reg_exponent=nu,
                n_epochs=args.epochs,
                random_state=0,
                n_jobs=args.threads,
            ).fit(fit_part[keep], validation_data=held[keep])
            scores = model.validation_scores_
            cells.append(f"{max(scores):.4f} ({int(np.argmax(scores)) + 1})")
        print(f"| {w} | {lam} | {nu} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()

"""Does dividing iALS item vectors by a power of their norm at scoring time help d = 64?

Dot-product MF tends to give popular items long vectors; CCL and the cosine losses score with
unit vectors instead. This probe fits one IALS setting on a validation split carved from the
training file (the test file is never read) and scores the validation part with
``U @ (V / ||v_i||^g).T`` for several exponents ``g`` (``g = 0`` is plain iALS, ``g = 1`` a
cosine on the item side; negative ``g`` lengthens long vectors further). The fit is the same
for every ``g``; only the ranking changes.

Example:
    python benchmarks/ials_score_norm.py --data ../shared/data/gowalla --holdout tail \\
        --unobserved-weight 0.01 --regularization 0.003 --reg-exponent 1 \\
        --item-weight-exponent 0.3 --epochs 4 8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _ials_common import tuning_split

from linrec.ials import IALS
from linrec.metrics import FactorScores, evaluate


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="LightGCN-format folder")
    parser.add_argument("--holdout", choices=["random", "tail"], default="random")
    parser.add_argument("--val-users", type=int, default=8000)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--unobserved-weight", type=float, required=True)
    parser.add_argument("--regularization", type=float, required=True)
    parser.add_argument("--reg-exponent", type=float, default=1.0)
    parser.add_argument("--item-weight-exponent", type=float, default=0.0)
    parser.add_argument("--epochs", type=int, nargs="+", default=[4])
    parser.add_argument(
        "--norm-exponents", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.5, -0.1]
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    fit_part, val, _ = tuning_split(args.data, args.holdout, args.val_users)
    print("| epochs | " + " | ".join(f"g = {g:g}" for g in args.norm_exponents) + " |")
    print("|---" * (len(args.norm_exponents) + 1) + "|")
    for n_epochs in args.epochs:
        model = IALS(
            n_factors=args.factors,
            unobserved_weight=args.unobserved_weight,
            regularization=args.regularization,
            reg_exponent=args.reg_exponent,
            item_weight_exponent=args.item_weight_exponent,
            n_epochs=n_epochs,
            random_state=0,
            n_jobs=args.threads,
        ).fit(fit_part)
        item_norms = np.linalg.norm(model.item_factors_, axis=1)
        # Items never seen in the fit part keep their (tiny) initial vectors; guard the power.
        item_norms = np.maximum(item_norms, np.finfo(np.float64).tiny)
        row = []
        for g in args.norm_exponents:
            scaled = model.item_factors_ / item_norms[:, None] ** g
            scores = FactorScores(model.user_factors_, scaled)
            report = evaluate(scores, fit_part, val, k=(20,), n_jobs=args.threads)
            row.append(f"{report.mean('recall', 20):.4f}")
        print(f"| {n_epochs} | " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()

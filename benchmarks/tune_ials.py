"""Grid search of IALS hyper-parameters on a validation split carved from the training file.

The test file is never read here. For every setting the model trains on 80% of each user's
training items and is scored after every epoch (Recall@20 on the other 20%, on a fixed
sample of validation users); the best epoch and score are printed as a markdown table.

Example:
    python benchmarks/tune_ials.py --data ../shared/data/gowalla --factors 64 \\
        --objective rendle --unobserved-weight 0.003 0.01 --regularization 0.001 0.01 \\
        --reg-exponent 1
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _ials_common import load_lightgcn, validation_split

from linrec.ials import IALS


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--factors", type=int, nargs="+", default=[64])
    ap.add_argument("--objective", nargs="+", default=["rendle"])
    ap.add_argument("--unobserved-weight", type=float, nargs="+", default=[0.01])
    ap.add_argument("--regularization", type=float, nargs="+", default=[0.01])
    ap.add_argument("--reg-exponent", type=float, nargs="+", default=[1.0])
    ap.add_argument("--confidence-scale", type=float, nargs="+", default=[0.0])
    ap.add_argument("--prior-inflation", type=float, nargs="+", default=[1.0])
    ap.add_argument("--solver", default="cg")
    ap.add_argument("--cg-steps", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--val-users", type=int, default=8000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    train, _ = load_lightgcn(args.data)
    fit_part, val = validation_split(train, 0.2, seed=0)
    keep = np.diff(fit_part.indptr) > 0
    fit_part, val = fit_part[keep], val[keep]
    users = np.flatnonzero(np.diff(val.indptr) > 0)
    rng = np.random.default_rng(1)
    sample = np.zeros(val.shape[0], bool)
    sample[rng.choice(users, min(args.val_users, users.size), replace=False)] = True
    val = val.multiply(sample[:, None]).tocsr()
    print(
        f"data {args.data}: fit part {fit_part.shape} nnz {fit_part.nnz}, "
        f"validation nnz {val.nnz} on {int(sample.sum())} users",
        flush=True,
    )
    print("| objective | d | w | lam | nu | alpha | K | best epoch | val Recall@20 | s/epoch |")
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    grid = itertools.product(
        args.objective,
        args.factors,
        args.unobserved_weight,
        args.regularization,
        args.reg_exponent,
        args.confidence_scale,
        args.prior_inflation,
    )
    for obj, d, w, lam, nu, alpha, K in grid:
        if obj != "hu" and alpha != 0:
            continue
        model = IALS(
            n_factors=d,
            objective=obj,
            unobserved_weight=w,
            regularization=lam,
            reg_exponent=nu,
            confidence_scale=alpha if obj == "hu" else 0.0,
            prior_inflation=K,
            solver=args.solver,
            cg_steps=args.cg_steps,
            n_epochs=args.epochs,
            early_stopping_rounds=args.patience,
            random_state=0,
            n_jobs=args.threads,
        )
        try:
            model.fit(fit_part, validation_data=val)
        except (ValueError, ArithmeticError) as exc:
            print(f"| {obj} | {d} | {w} | {lam} | {nu} | {alpha} | {K} | failed: {exc} |")
            continue
        best = max(model.validation_scores_)
        print(
            f"| {obj} | {d} | {w} | {lam} | {nu} | {alpha} | {K} | {model.best_epoch_} | "
            f"{best:.4f} | {np.median(model.epoch_times_):.2f} |",
            flush=True,
        )
        trajectory = " ".join(f"{v:.4f}" for v in model.validation_scores_)
        print(f"  per-epoch validation Recall@20: {trajectory}", flush=True)


if __name__ == "__main__":
    main()

"""Test-set Recall@20 / NDCG@20 of IALS with the epoch count chosen on a validation split.

1. Carve a validation split from the training file (``--holdout random``: 20% of each
   user's items, seed 0; ``--holdout tail``: the last 20% of each train.txt line), fit with
   early stopping on validation Recall@20 (patience 3) to choose the epoch count, and report
   validation Recall@20 / NDCG@20 of the kept (best-epoch) model.
2. Refit on the whole training file for that many epochs; evaluate once on the test file
   (LightGCN protocol, linrec.metrics.evaluate).

Example:
    python benchmarks/quality_ials.py --data ../shared/data/gowalla --factors 256 \\
        --unobserved-weight 0.003 --regularization 0.01 --reg-exponent 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _ials_common import tuning_split

from linrec.datasets import load_lightgcn
from linrec.ials import IALS
from linrec.metrics import evaluate


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--objective", default="rendle")
    ap.add_argument("--unobserved-weight", type=float, default=0.003)
    ap.add_argument("--regularization", type=float, default=0.01)
    ap.add_argument("--reg-exponent", type=float, default=1.0)
    ap.add_argument(
        "--reg-frequency-offset",
        type=float,
        default=None,
        help="offset in (n + offset * n_other)^nu (default: the unobserved weight)",
    )
    ap.add_argument("--item-weight-exponent", type=float, default=0.0)
    ap.add_argument("--item-weight-normalization", default="mean_count")
    ap.add_argument(
        "--hard-negatives", type=int, default=0, help="hard negatives per user (0: none)"
    )
    ap.add_argument("--hard-negative-weight", type=float, default=0.0)
    ap.add_argument("--solver", default="cg")
    ap.add_argument("--cg-steps", type=int, default=3)
    ap.add_argument(
        "--cg-start",
        choices=("warm", "zero"),
        default="warm",
        help="CG from the previous factors (IALS's default) or from zero (cg_warm_start=False)",
    )
    ap.add_argument(
        "--cg-plain",
        action="store_true",
        help="textbook CG (cg_precondition=False; the default before the preconditioner)",
    )
    ap.add_argument("--init-std", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0, help="random_state of both fits")
    ap.add_argument("--holdout", choices=("random", "tail"), default="random")
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--max-epochs", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--val-users",
        type=int,
        default=8000,
        help="validation users sampled (fixed seed) to score every epoch",
    )
    args = ap.parse_args(argv)
    params = dict(
        n_factors=args.factors,
        objective=args.objective,
        unobserved_weight=args.unobserved_weight,
        regularization=args.regularization,
        reg_exponent=args.reg_exponent,
        reg_frequency_offset=args.reg_frequency_offset,
        item_weight_exponent=args.item_weight_exponent,
        item_weight_normalization=args.item_weight_normalization,
        hard_negatives=args.hard_negatives,
        hard_negative_weight=args.hard_negative_weight,
        solver=args.solver,
        cg_steps=args.cg_steps,
        cg_warm_start=args.cg_start == "warm",
        cg_precondition=not args.cg_plain,
        init_std=args.init_std,
        random_state=args.seed,
        n_jobs=args.threads,
    )
    fit_part, val, _ = tuning_split(args.data, args.holdout, args.val_users)
    model = IALS(**params, n_epochs=args.max_epochs, early_stopping_rounds=args.patience)
    model.fit(fit_part, validation_data=val)
    epochs = model.best_epoch_
    trajectory = " ".join(f"{v:.4f}" for v in model.validation_scores_)
    print(f"validation Recall@20 per epoch: {trajectory}; chosen epochs: {epochs}", flush=True)
    # the kept model: best epoch's item factors, exact user step (fold_in=False uses them)
    val_res = evaluate(
        model, fit_part, val, k=(20,), metrics=("recall", "ndcg"), n_jobs=args.threads
    )
    del model
    train, test = load_lightgcn(args.data)
    t0 = time.perf_counter()
    final = IALS(**params, n_epochs=epochs).fit(train)
    fit_s = time.perf_counter() - t0
    res = evaluate(final, train, test, k=(20,), metrics=("recall", "ndcg"), n_jobs=args.threads)
    print(
        f"| {Path(args.data).name} | {args.factors} | {args.objective} | "
        f"{args.unobserved_weight} | {args.regularization} | {args.reg_exponent} | "
        f"{args.reg_frequency_offset} | "
        f"{args.item_weight_exponent} | {args.item_weight_normalization} | "
        f"{args.hard_negatives} | {args.hard_negative_weight} | {args.solver} | "
        f"{args.holdout} | {epochs} | {val_res.mean('recall', 20):.4f} | "
        f"{val_res.mean('ndcg', 20):.4f} | {res.mean('recall', 20):.4f} | "
        f"{res.mean('ndcg', 20):.4f} | {fit_s:.0f} |",
        flush=True,
    )


if __name__ == "__main__":
    main()

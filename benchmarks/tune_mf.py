"""Long-run tuning of one MF loss on a validation split carved from the training file.

``linrec reproduce`` tunes every loss on a small grid with early stopping after a few
epochs; losses such as BPR need hundreds of epochs to converge (MF-BPR baselines train for
up to 1,000). This script runs one loss over a grid (the product of every ``--grid`` axis)
for up to ``--epochs`` epochs each, scoring validation Recall@20 after every epoch (the same
split as ``linrec reproduce``: a random ``--validation-share`` of each user's training
items, seed ``--seed``; or, with ``--holdout tail``, the last share of each line of
train.txt, the split that ranked iALS settings on Gowalla closer to its test file). A run
stops after ``--patience`` epochs without improvement, or, with ``--plateau-decays K``,
first decays its step size K times (reduce-on-plateau).
The test file is read only with ``--test``, once, for the best grid point, trained on all
of train for its best epoch count with the same step-size schedule.

Results are appended to ``--out`` (one JSON line per grid point, with its curve); with
``--test-out`` the refit's per-user test scores are saved too, for paired intervals between
two losses (``benchmarks/paired_gain.py``). ``--refit-from FILE`` skips the grid and refits
the best point recorded in an earlier ``--out`` file.

Example:
    python benchmarks/tune_mf.py --data ../shared/data/gowalla --loss bpr \\
        --set n_negatives=1 negative_sharing=pair --grid learning_rate=1e-3,3e-3 \\
        --epochs 400 --test
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _ials_common import tail_validation_split

from linrec.datasets import load_lightgcn
from linrec.metrics import evaluate
from linrec.mf import MF
from linrec.reproduce import (
    _base_settings,
    curve_users,
    parse_overrides,
    split_validation,
    validated_run,
)


def run_point(loss, params, rest, val, args):
    """Train one grid point; returns ``(best validation Recall@20, epochs, milestones,
    curve, seconds)``."""
    t0 = time.perf_counter()
    model, epochs, milestones = validated_run(loss, params, rest, val, args)
    seconds = time.perf_counter() - t0
    return max(model.validation_scores_), epochs, milestones, model.validation_scores_, seconds


def test_refit(args, train, test, params, epochs) -> None:
    """Train ``params`` on all of train for ``epochs`` epochs and score the test file once."""
    model = MF(args.loss, n_epochs=epochs, random_state=args.seed, n_jobs=args.n_jobs, **params)
    model.fit(train)
    result = evaluate(model, train, test, k=(20,), fold_in=False, n_jobs=args.n_jobs)
    print(
        f"test, best point {params} for {epochs} epochs: Recall@20 "
        f"{result.mean('recall', 20):.4f} NDCG@20 {result.mean('ndcg', 20):.4f}",
        flush=True,
    )
    if args.test_out:
        np.savez(
            args.test_out,
            users=result.users,
            recall=result.per_user["recall", 20],
            ndcg=result.per_user["ndcg", 20],
            loss=args.loss,
            params=json.dumps(params),
            epochs=epochs,
        )


def best_record(path, args) -> dict:
    """The highest-validation record of ``path`` for this loss, data set and seed."""
    with open(path) as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    mine = [
        r
        for r in records
        if r["loss"] == args.loss and r["data"] == args.data and r["seed"] == args.seed
    ]
    if not mine:
        raise SystemExit(f"no record for {args.loss} on {args.data}, seed {args.seed} in {path}")
    return max(mine, key=lambda r: r["val_recall"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="LightGCN-format folder")
    parser.add_argument("--loss", required=True)
    parser.add_argument("--set", nargs="*", default=[], help="fixed settings, key=value")
    parser.add_argument(
        "--grid", nargs="*", default=[], help="grid axes, key=v1,v2,... (product is run)"
    )
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--patience", type=int, default=5, help="epochs without improvement")
    parser.add_argument(
        "--plateau-decays", type=int, default=0, help="step-size decays before stopping"
    )
    parser.add_argument("--validation-share", type=float, default=0.2)
    parser.add_argument(
        "--holdout",
        choices=("random", "tail"),
        default="random",
        help="validation items: a random share of each user's, or the tail of each "
        "train.txt line (Gowalla only: Yelp2018's lines are sorted by item id)",
    )
    parser.add_argument(
        "--val-users", type=int, default=None, help="score a fixed sample of validation users"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-jobs", type=int, default=None)
    parser.add_argument("--test", action="store_true", help="test the best point once")
    parser.add_argument("--out", default="out/tune_mf.jsonl")
    parser.add_argument(
        "--test-out",
        default=None,
        help="with --test: save the per-user test Recall@20 / NDCG@20 here (.npz), for "
        "paired intervals between losses (benchmarks/paired_gain.py)",
    )
    parser.add_argument(
        "--refit-from",
        default=None,
        help="skip the grid: refit and test the best point recorded in this --out file "
        "(same loss, data and seed), e.g. to save its per-user scores with --test-out",
    )
    args = parser.parse_args(argv)
    if args.test_out and not (args.test or args.refit_from):
        parser.error("--test-out needs --test or --refit-from (only a refit is saved)")
    # per-epoch loss and validation Recall@20 from linrec.mf's logger
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    train, test = load_lightgcn(args.data)
    if args.refit_from:
        record = best_record(args.refit_from, args)
        params = {**record["params"], "learning_rate_milestones": record["milestones"]}
        print(f"# refit of {args.refit_from}: validation Recall@20 {record['val_recall']:.4f}")
        test_refit(args, train, test, params, record["epochs"])
        return
    base = _base_settings(args.loss, False, parse_overrides(args.set))
    axes = {}
    for axis in args.grid:
        key, _, values = axis.partition("=")
        axes[key] = [parse_overrides([f"{key}={v}"])[key] for v in values.split(",")]
    points = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
    if args.holdout == "tail":
        rest, val = tail_validation_split(args.data, train.shape, args.validation_share)
    else:
        rest, val = split_validation(train, args.validation_share, args.seed)
    if args.val_users is not None:
        val = curve_users(val, args.val_users, args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"# {args.loss} on {args.data}, {args.holdout} holdout: base {base}", flush=True)
    print("| point | best val Recall@20 | epochs | lr milestones | seconds |")
    print("|---|---|---|---|---|")
    best = (-np.inf, None, None)
    for point in points:
        params = {**base, **point}
        score, epoch, milestones, curve, seconds = run_point(args.loss, params, rest, val, args)
        print(f"| {point} | {score:.4f} | {epoch} | {milestones} | {seconds:.0f} |", flush=True)
        with open(out, "a") as fh:
            record = {
                "data": args.data,
                "loss": args.loss,
                "params": params,
                "point": point,
                "val_recall": score,
                "epochs": epoch,
                "milestones": milestones,
                "curve": curve,
                "seconds": seconds,
                "seed": args.seed,
            }
            fh.write(json.dumps(record) + "\n")
        if score > best[0]:
            best = (score, {**params, "learning_rate_milestones": milestones}, epoch)
    if args.test:
        test_refit(args, train, test, best[1], best[2])


if __name__ == "__main__":
    main()

"""Test-file Recall@20 and NDCG@20 after every epoch of one fixed MF setting (judges the protocol).

Published MF numbers on the LightGCN splits (BARS's MF-BPR and MF-CCL logs among them) stop
training at the epoch with the best *test* score. linrec never does that: ``linrec reproduce``
and ``tune_mf.py`` choose settings and epoch counts on a validation split carved from the
training file and read the test file once. This script measures the difference for a setting
fixed beforehand (given on the command line, chosen here by nothing): it trains on the whole
training file for ``--epochs`` epochs with the given step-size milestones, scores the test
file after every epoch (all users with test items, training items excluded) and prints the
curve, its maximum (the test-early-stopped figure) and the value at ``--chosen-epochs`` (the
epoch count validation chose, i.e. linrec's reported figure).

It reads the test file on purpose, to judge the protocol; never use its maximum as a result.

Example:
    python benchmarks/mf_test_curve.py --data ../shared/data/gowalla --loss ccl \\
        --set learning_rate=0.01 user_dropout=0.1 "learning_rate_milestones=[23]" \\
        --epochs 50 --chosen-epochs 36
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from linrec.datasets import load_lightgcn
from linrec.metrics import evaluate
from linrec.mf import MF
from linrec.reproduce import _base_settings, parse_overrides


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="LightGCN-format folder")
    parser.add_argument("--loss", required=True)
    parser.add_argument("--set", nargs="*", default=[], help="fixed settings, key=value")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument(
        "--chosen-epochs", type=int, default=None, help="epoch count chosen on validation"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-jobs", type=int, default=None)
    parser.add_argument("--out", default=None, help="append the curve as a JSON line here")
    args = parser.parse_args(argv)

    train, test = load_lightgcn(args.data)
    params = _base_settings(args.loss, False, parse_overrides(args.set))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    curve = []  # (Recall@20, NDCG@20) on the test file after each epoch

    def score_test(model, epoch):
        res = evaluate(
            model,
            train,
            test,
            k=(20,),
            metrics=("recall", "ndcg"),
            fold_in=False,
            n_jobs=args.n_jobs,
        )
        curve.append((res.mean("recall", 20), res.mean("ndcg", 20)))
        # printed as it runs, so a long curve can be read before it ends
        print(
            f"epoch {epoch + 1}: test Recall@20 {curve[-1][0]:.4f} NDCG@20 {curve[-1][1]:.4f}",
            flush=True,
        )

    model = MF(
        args.loss, n_epochs=args.epochs, random_state=args.seed, n_jobs=args.n_jobs, **params
    ).fit(train, callback=score_test)
    # without validation data the fitted factors are the last epoch's: check the last point
    final = evaluate(model, train, test, k=(20,), fold_in=False, n_jobs=args.n_jobs)
    if not np.isclose(final.mean("recall", 20), curve[-1][0], rtol=0, atol=1e-9):
        raise RuntimeError(f"last epoch's score {curve[-1][0]} != evaluate() of the fit")
    print(f"# {args.loss} on {args.data}: {params}")
    print(f"# training loss per epoch: {[round(v, 6) for v in model.loss_]}")
    print("| epoch | test Recall@20 | test NDCG@20 |")
    print("|---|---|---|")
    for epoch, (recall, ndcg) in enumerate(curve, start=1):
        print(f"| {epoch} | {recall:.4f} | {ndcg:.4f} |")
    best = int(np.argmax([recall for recall, _ in curve]))
    print(
        f"maximum Recall@20 over epochs (test-early-stopped): {curve[best][0]:.4f} / "
        f"{curve[best][1]:.4f} at epoch {best + 1}"
    )
    if args.chosen_epochs is not None:
        recall, ndcg = curve[args.chosen_epochs - 1]
        print(f"at the validation-chosen {args.chosen_epochs} epochs: {recall:.4f} / {ndcg:.4f}")
    if args.out:
        record = {
            "data": args.data,
            "loss": args.loss,
            "params": params,
            "curve": [recall for recall, _ in curve],
            "ndcg_curve": [ndcg for _, ndcg in curve],
        }
        with open(args.out, "a") as fh:
            fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()

"""Test-file Recall@20 after every epoch of one fixed MF setting: how much does the protocol matter?

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
    # MF logs every epoch (its "val Recall@20" is the test file here), so a long curve can
    # be read while it runs; epochs are numbered from 0 in the log
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    model = MF(
        args.loss, n_epochs=args.epochs, random_state=args.seed, n_jobs=args.n_jobs, **params
    ).fit(train, validation_data=test)
    curve = model.validation_scores_
    # the per-epoch score must be the protocol's Recall@20: fit() keeps the factors of the
    # best-scoring epoch, so check that epoch against linrec.metrics.evaluate
    final = evaluate(model, train, test, k=(20,), fold_in=False, n_jobs=args.n_jobs)
    final_recall = final.mean("recall", 20)
    if not np.isclose(final_recall, curve[model.best_epoch_], rtol=0, atol=1e-9):
        raise RuntimeError(
            f"per-epoch score {curve[model.best_epoch_]} != evaluate() {final_recall}"
        )
    print(f"# {args.loss} on {args.data}: {params}")
    print("| epoch | test Recall@20 |")
    print("|---|---|")
    for epoch, value in enumerate(curve, start=1):
        print(f"| {epoch} | {value:.4f} |")
    best = int(np.argmax(curve))
    print(f"maximum over epochs (test-early-stopped): {curve[best]:.4f} at epoch {best + 1}")
    if args.chosen_epochs is not None:
        chosen = curve[args.chosen_epochs - 1]
        print(f"at the validation-chosen {args.chosen_epochs} epochs: {chosen:.4f}")
    if args.out:
        record = {"data": args.data, "loss": args.loss, "params": params, "curve": curve}
        with open(args.out, "a") as fh:
            fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()

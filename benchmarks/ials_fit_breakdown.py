"""Where the time of a whole IALS fit goes, beyond the per-epoch figures.

``IALS.epoch_times_`` (the figure the implicit comparisons use) covers the two half-steps of
each epoch. A fit also computes the objective after every epoch and ends with a final user
step (by default exact: the stored user factors are the exact fold-in of the training rows;
``--final-user-step solver``: one more half-step of the fit's solver). This script times
each of those in one fit by wrapping the estimator's private methods, and prints them next
to the fit's wall time.

Example:
    python benchmarks/ials_fit_breakdown.py --data ../shared/data/gowalla --factors 64 256
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from linrec.datasets import load_lightgcn
from linrec.ials import IALS


def _timed(method, totals, key_of):
    def wrapper(self, *args, **kwargs):
        start = time.perf_counter()
        result = method(self, *args, **kwargs)
        totals[key_of(args, kwargs)] += time.perf_counter() - start
        return result

    return wrapper


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/gowalla")
    parser.add_argument("--factors", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--solver", default="cg")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--no-record-objective", action="store_true", help="IALS(record_objective=False)"
    )
    parser.add_argument("--final-user-step", choices=["exact", "solver"], default="exact")
    args = parser.parse_args(argv)
    X = load_lightgcn(args.data).train
    totals = defaultdict(float)
    half_step, objective = IALS._half_step, IALS._objective
    IALS._half_step = _timed(
        half_step,
        totals,
        # the stage argument names the final step ("final exact step" / "final user step")
        lambda a, k: "final user step" if a[4].startswith("final") else "epoch half-steps",
    )
    IALS._objective = _timed(objective, totals, lambda a, k: "objective after each epoch")
    columns = ["d", "fit s", "sum of epoch_times_", "epoch half-steps", "objective"]
    print("| " + " | ".join(columns) + f" | final {args.final_user_step} user step |")
    print("|---|---|---|---|---|---|")
    for d in args.factors:
        params = dict(
            n_factors=d,
            solver=args.solver,
            unobserved_weight=0.01,
            regularization=0.1,
            reg_exponent=0.5,
            n_jobs=args.threads,
            random_state=0,
            record_objective=not args.no_record_objective,
            final_user_step=args.final_user_step,
        )
        IALS(**params, n_epochs=1).fit(X[:3000])  # compiles or loads the kernels
        totals.clear()
        start = time.perf_counter()
        model = IALS(**params, n_epochs=args.epochs).fit(X)
        fit = time.perf_counter() - start
        print(
            f"| {d} | {fit:.3f} | {sum(model.epoch_times_):.3f} | "
            f"{totals['epoch half-steps']:.3f} | {totals['objective after each epoch']:.3f} | "
            f"{totals['final user step']:.3f} |"
        )


if __name__ == "__main__":
    main()

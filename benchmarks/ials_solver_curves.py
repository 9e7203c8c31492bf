"""Time against quality, epoch by epoch, for IALS's solvers fitted from the same start.

The iALS++ target of issue 3 asks whether the block solver reaches the exact solver's
Recall@20 in less time. Seconds per epoch alone cannot say it: a cheaper epoch may buy less.
Each variant here is fitted from ``random_state=0`` with the benchmark's settings
(``bench_ials.LINREC_PARAMS``); after every epoch a callback scores the current factors
(the last half-step's user factors, no final exact user step) on the test file, so each row
prints seconds per epoch, the cumulative fit time, Recall@20 and the objective.

Example:
    python benchmarks/ials_solver_curves.py --synthetic --synthetic-cache /tmp/synth.npz \\
        --factors 256 --epochs 4 --variants cholesky ialspp:64 ialspp:128
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _ials_common import SHARED_DATA
from bench_ials import LINREC_PARAMS, _load, synthetic

from linrec.datasets import load_lightgcn
from linrec.ials import IALS
from linrec.metrics import FactorScores, evaluate


def parse_variant(text):
    """``"cholesky"``, ``"cg"``, ``"ialspp:64"``, ``"ialspp:64:coordinate"`` or
    ``"ialspp:64:eigen:2"`` (solver, optional block size, optional iALS++ block basis,
    optional number of block sweeps per half-step)."""
    solver, _, rest = text.partition(":")
    block, _, rest = rest.partition(":")
    basis, _, sweeps = rest.partition(":")
    if solver not in ("cholesky", "cg", "ialspp"):
        raise argparse.ArgumentTypeError(f"unknown solver {solver!r}")
    if basis not in ("", "eigen", "coordinate"):
        raise argparse.ArgumentTypeError(f"unknown block basis {basis!r}")
    return solver, int(block) if block else 32, basis or "eigen", int(sweeps) if sweeps else 1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="a LightGCN folder (e.g. ../shared/data/gowalla)")
    ap.add_argument("--synthetic", action="store_true", help="the bench's 10M synthetic matrix")
    ap.add_argument("--synthetic-cache", default=None)
    ap.add_argument("--factors", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--variants", nargs="+", type=parse_variant, default=[("cholesky", 32, "eigen", 1)]
    )
    args = ap.parse_args(argv)
    if args.synthetic == (args.data is not None):
        ap.error("give exactly one of --data and --synthetic")
    if args.synthetic:
        name = "synthetic"
        train, test = synthetic(50_000, cache=args.synthetic_cache)
    else:
        path = Path(args.data)
        name = path.name
        train, test = load_lightgcn(path if path.exists() else SHARED_DATA / path.name)
    params = LINREC_PARAMS.get(name, LINREC_PARAMS["gowalla"])
    print(
        f"{name}, d = {args.factors}, {args.threads} threads, {params}; load at start {_load()}",
        flush=True,
    )
    print("| solver | block | epoch | s/epoch | cumulative s | Recall@20 | objective |")
    print("|---|---|---|---|---|---|---|", flush=True)
    for solver, block, basis, sweeps in args.variants:
        # warm-up: loads numba's compiled kernels from cache
        IALS(
            n_factors=args.factors,
            solver=solver,
            block_size=block,
            block_basis=basis,
            block_sweeps=sweeps,
            n_epochs=1,
            n_jobs=args.threads,
            **params,
        ).fit(train[:2000])
        recalls = []

        def score(model, epoch, recalls=recalls):
            scores = FactorScores(model.user_factors_, model.item_factors_)
            result = evaluate(
                scores, train, test, k=(20,), metrics=("recall",), n_jobs=args.threads
            )
            recalls.append(result.mean("recall", 20))

        model = IALS(
            n_factors=args.factors,
            solver=solver,
            block_size=block,
            block_basis=basis,
            block_sweeps=sweeps,
            n_epochs=args.epochs,
            n_jobs=args.threads,
            random_state=0,
            **params,
        )
        model.fit(train, callback=score)
        cumulative = np.cumsum(model.epoch_times_)
        for epoch, (seconds, total, recall, objective) in enumerate(
            zip(model.epoch_times_, cumulative, recalls, model.objective_), start=1
        ):
            print(
                f"| {solver} | {f'{block} {basis} x{sweeps}' if solver == 'ialspp' else '-'} | "
                f"{epoch} | "
                f"{seconds:.2f} | {total:.2f} | {recall:.4f} | {objective:.6g} |",
                flush=True,
            )
    print(f"load at end {_load()}", flush=True)


if __name__ == "__main__":
    main()

"""The ``linrec`` command line.

Sub-commands are registered in :data:`COMMANDS`; each has an ``add_arguments(parser)`` and a
``run(args) -> int``. Later capabilities add a command by adding an entry.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from linrec._memory import PeakMemory, format_bytes
from linrec._registry import MODELS, make_model
from linrec._version import __version__

__all__ = ["main"]

logger = logging.getLogger("linrec")


def _parse_value(text: str):
    """'3' -> 3, '0.1' -> 0.1, 'true' -> True, 'none' -> None, '[1,2]' -> [1, 2], else str."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parse_params(pairs: list[str]) -> dict:
    params = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise SystemExit(f"linrec: --param expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        params[key.strip()] = _parse_value(value.strip())
    return params


# column label and linrec.metrics name of each metric in the rows and tables
_METRICS = (("Recall", "recall"), ("NDCG", "ndcg"))


def fit_and_evaluate(models: dict, X_train, X_test, ks=(20,), on_row=None) -> list[dict]:
    """Fit each model, evaluate it, and return one row of results per model.

    ``on_row(row)``, if given, is called with each row as soon as it is ready.
    """
    from linrec.metrics import evaluate

    rows = []
    for name, model in models.items():
        with PeakMemory() as mem:
            start = time.perf_counter()
            model.fit(X_train)
            fit_seconds = time.perf_counter() - start
        result = evaluate(model, X_train, X_test, k=ks, metrics=tuple(m for _, m in _METRICS))
        row = {"model": name, "fit_seconds": fit_seconds, "peak_memory": mem.increase}
        for k in ks:
            for label, metric in _METRICS:
                row[f"{label}@{k}"] = result.mean(metric, k)
        rows.append(row)
        logger.info("%s: %s", name, row)
        if on_row is not None:
            on_row(row)
    return rows


def _metric_columns(ks) -> list[str]:
    # the metric keys of fit_and_evaluate's rows, in their order
    return [f"{label}@{k}" for k in ks for label, _ in _METRICS]


def format_header(metric_cols: list[str]) -> str:
    """The two header lines of the Markdown table of :func:`fit_and_evaluate` rows."""
    header = ["model", *metric_cols, "fit time", "peak memory"]
    return "| " + " | ".join(header) + " |\n|" + "---|" * len(header)


def format_row(row: dict, metric_cols: list[str]) -> str:
    """One line of the Markdown table of :func:`fit_and_evaluate` rows."""
    cells = [row["model"], *(f"{row[c]:.4f}" for c in metric_cols)]
    cells += [f"{row['fit_seconds']:.2f} s", format_bytes(row["peak_memory"])]
    return "| " + " | ".join(cells) + " |"


def _print_table_as_fitted(models: dict, X_train, X_test, ks=(20,)) -> None:
    """Print the Markdown table of :func:`fit_and_evaluate`, each line as its model finishes
    (a first run waits minutes for the kernels to compile)."""
    metric_cols = _metric_columns(ks)
    print(format_header(metric_cols), flush=True)
    fit_and_evaluate(
        models,
        X_train,
        X_test,
        ks=ks,
        on_row=lambda row: print(format_row(row, metric_cols), flush=True),
    )


# ---------------------------------------------------------------------------- demo
def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--users", type=int, default=5000, help="synthetic users")
    parser.add_argument("--items", type=int, default=2500, help="synthetic items")
    parser.add_argument("--seed", type=int, default=0, help="random seed")


def _demo_run(args) -> int:
    from linrec.datasets import make_implicit, random_holdout_split

    start = time.perf_counter()
    X = make_implicit(n_users=args.users, n_items=args.items, random_state=args.seed)
    X_train, X_test = random_holdout_split(X, test_fraction=0.2, random_state=args.seed)
    print(
        f"linrec {__version__} demo: synthetic data, {X.shape[0]:,} users x {X.shape[1]:,} "
        f"items, {X_train.nnz:,} train / {X_test.nnz:,} test interactions"
    )
    # most of a first run is numba compiling the kernels: say so before the wait
    print("(the first run also compiles linrec's kernels, which are cached for later runs)")
    _print_table_as_fitted({name: make_model(name) for name in MODELS}, X_train, X_test)
    print(f"total {time.perf_counter() - start:.1f} s")
    return 0


# ---------------------------------------------------------------------------- evaluate
def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        required=True,
        help="a LightGCN-format folder (train.txt, test.txt), the Last.fm folder (data1.txt, "
        "test1.txt) or a delimited interaction file (user, item[, weight[, timestamp]]), "
        "split at random per user",
    )
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        help=f"model name, repeatable; one of: {', '.join(sorted(MODELS))}",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model parameter (applies to every --model), repeatable",
    )
    parser.add_argument("--k", type=int, action="append", help="cut-off(s), default 20")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _load_split(path: str, test_fraction: float, seed: int):
    from linrec.datasets import load_interactions, load_lightgcn, random_holdout_split

    p = Path(path)
    if p.is_dir():
        if (p / "data1.txt").exists() and (p / "test1.txt").exists():
            from linrec.datasets import load_lastfm

            return load_lastfm(p)
        if not (p / "train.txt").exists():
            raise SystemExit(f"linrec: {p} has no train.txt (LightGCN format expected)")
        return load_lightgcn(p)
    if not p.exists():
        raise SystemExit(f"linrec: no such file or folder: {p}")
    data = load_interactions(p)
    return random_holdout_split(data.matrix, test_fraction=test_fraction, random_state=seed)


def _evaluate_run(args) -> int:
    X_train, X_test = _load_split(args.data, args.test_fraction, args.seed)
    params = _parse_params(args.param)
    models = {name: make_model(name, params) for name in args.model}
    ks = tuple(args.k or [20])
    if args.json:
        print(json.dumps(fit_and_evaluate(models, X_train, X_test, ks=ks), indent=2))
        return 0
    print(f"{args.data}: {X_train.shape[0]:,} users x {X_train.shape[1]:,} items")
    _print_table_as_fitted(models, X_train, X_test, ks)
    return 0


# ---------------------------------------------------------------------------- reproduce
def _reproduce_arguments(parser: argparse.ArgumentParser) -> None:
    from linrec.reproduce import add_arguments

    add_arguments(parser)


def _reproduce_run(args) -> int:
    from linrec.reproduce import run

    return run(args)


COMMANDS = {
    "demo": ("fit every model on synthetic data and print a table", _demo_arguments, _demo_run),
    "evaluate": (
        "fit models on a data set and print their metrics",
        _evaluate_arguments,
        _evaluate_run,
    ),
    "reproduce": (
        "compare every MF loss at d = 64, tuned on a validation split carved from train",
        _reproduce_arguments,
        _reproduce_run,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="linrec", description="Fast, exact linear recommenders for implicit feedback."
    )
    parser.add_argument("--version", action="version", version=f"linrec {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(cmd)
        cmd.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``linrec`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except (ValueError, MemoryError) as exc:
        print(f"linrec: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

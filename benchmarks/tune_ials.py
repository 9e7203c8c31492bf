"""Grid search of IALS hyper-parameters on a validation split carved from the training file.

The test file is never read here. For every setting the model trains on 80% of each user's
training items and is scored after every epoch (Recall@20 on the other 20%, on a fixed
sample of validation users); the best epoch and score are printed as a markdown table.
The validation part is a random 20% of each user's items (``--holdout random``, seed 0) or
the last 20% of each line of train.txt (``--holdout tail``, see _ials_common.py).

Every grid axis takes several values (the full product is run, one fit at a time). The
results go to ``--out`` as ``tune_ials.jsonl`` (one JSON line per setting, appended) and a
plot ``recall_vs_unobserved_weight.png``: best validation Recall@20 against the unobserved
weight, one line per (objective, d, lam, nu, solver) group of the current grid.

Popularity-weighted unobserved entries: ``--item-weight-exponent`` (beta, several values) and
``--item-weight-normalization`` (mean_count / unit_mean) are grid axes too.

Example:
    python benchmarks/tune_ials.py --data ../shared/data/gowalla --factors 64 \\
        --objective rendle --unobserved-weight 0.003 0.01 --regularization 0.001 0.01 \\
        --reg-exponent 1
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _ials_common import tuning_split

from linrec.ials import IALS


def plot_recall_vs_weight(rows, path, title):
    """Best validation Recall@20 against the unobserved weight, one line per other setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {}
    for row in rows:
        if row.get("best_recall") is None:
            continue
        key = (
            f"{row['objective']} d={row['factors']} lam={row['regularization']:g} "
            f"nu={row['reg_exponent']:g} {row['solver']}"
            f" beta={row.get('item_weight_exponent', 0.0):g}"
            f" {row.get('item_weight_normalization', 'mean_count')}"
        )
        groups.setdefault(key, []).append((row["unobserved_weight"], row["best_recall"]))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for key, points in sorted(groups.items()):
        if len(points) < 2:
            continue
        w, r = map(np.asarray, zip(*sorted(points)))
        ax.plot(w, r, marker="o", label=key)
    ax.set_xscale("log")
    ax.set(
        xlabel="unobserved weight (alpha0)",
        ylabel="best validation Recall@20",
        title=title,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    ap.add_argument(
        "--item-weight-exponent",
        type=float,
        nargs="+",
        default=[0.0],
        help="beta of the popularity weights of the unobserved entries (0: unweighted)",
    )
    ap.add_argument(
        "--item-weight-normalization",
        nargs="+",
        default=["mean_count"],
        help="mean_count: (n_i / mean n)^beta; unit_mean: n_i^beta / mean n^beta",
    )
    ap.add_argument(
        "--reg-frequency-offset",
        type=float,
        nargs="+",
        default=[None],
        help="offset in (n + offset * n_other)^nu (default: the unobserved weight)",
    )
    ap.add_argument(
        "--hard-negatives",
        type=int,
        nargs="+",
        default=[0],
        help="hard negatives per user, re-mined every epoch (0: none)",
    )
    ap.add_argument(
        "--hard-negative-weight",
        type=float,
        nargs="+",
        default=[0.0],
        help="extra squared-score weight of a hard negative",
    )
    ap.add_argument("--solver", nargs="+", default=["cg"])
    ap.add_argument("--cg-steps", type=int, default=3)
    ap.add_argument(
        "--init-std",
        type=float,
        nargs="+",
        default=[None],
        help="initialisation standard deviation (default 0.1 / sqrt(d))",
    )
    ap.add_argument(
        "--seed",
        type=int,
        nargs="+",
        default=[0],
        help="random_state of the initialisation (an axis: repeats a setting over seeds)",
    )
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--val-users", type=int, default=8000)
    ap.add_argument("--holdout", choices=("random", "tail"), default="random")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--out",
        default=str(Path(__file__).resolve().parent / "out" / "tune_ials"),
        help="folder for tune_ials.jsonl and the plot",
    )
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    fit_part, val, _ = tuning_split(args.data, args.holdout, args.val_users)
    print(
        f"data {args.data}: fit part {fit_part.shape} nnz {fit_part.nnz}, "
        f"validation ({args.holdout} holdout) nnz {val.nnz} on "
        f"{int((np.diff(val.indptr) > 0).sum())} users",
        flush=True,
    )
    print(
        "| objective | d | w | lam | nu | offset | alpha | K | beta | g norm | hard | hard w "
        "| solver | init std | seed | best epoch | val Recall@20 | last-epoch Recall@20 "
        "| s/epoch |"
    )
    print("|---" * 19 + "|", flush=True)
    grid = itertools.product(
        args.objective,
        args.factors,
        args.unobserved_weight,
        args.regularization,
        args.reg_exponent,
        args.reg_frequency_offset,
        args.confidence_scale,
        args.prior_inflation,
        args.item_weight_exponent,
        args.item_weight_normalization,
        args.hard_negatives,
        args.hard_negative_weight,
        args.solver,
        args.init_std,
        args.seed,
    )
    rows = []
    seen_unweighted = set()
    for (
        obj,
        d,
        w,
        lam,
        nu,
        offset,
        alpha,
        K,
        beta,
        norm,
        hard,
        hard_w,
        solver,
        init_std,
        seed,
    ) in grid:
        if obj != "hu" and alpha != 0:
            continue
        if (hard == 0) != (hard_w == 0):
            continue
        if beta == 0:
            # beta = 0 is the same model under every normalisation: run it once
            key = (obj, d, w, lam, nu, offset, alpha, K, hard, hard_w, solver, init_std, seed)
            if key in seen_unweighted:
                continue
            seen_unweighted.add(key)
        row = dict(
            data=Path(args.data).name,
            holdout=args.holdout,
            objective=obj,
            factors=d,
            unobserved_weight=w,
            regularization=lam,
            reg_exponent=nu,
            reg_frequency_offset=offset,
            confidence_scale=alpha,
            prior_inflation=K,
            item_weight_exponent=beta,
            item_weight_normalization=norm,
            hard_negatives=hard,
            hard_negative_weight=hard_w,
            solver=solver,
            cg_steps=args.cg_steps,
            init_std=init_std,
            seed=seed,
            max_epochs=args.epochs,
            patience=args.patience,
        )
        model = IALS(
            n_factors=d,
            objective=obj,
            unobserved_weight=w,
            regularization=lam,
            reg_exponent=nu,
            reg_frequency_offset=offset,
            confidence_scale=alpha if obj == "hu" else 0.0,
            prior_inflation=K,
            item_weight_exponent=beta,
            item_weight_normalization=norm,
            hard_negatives=hard,
            hard_negative_weight=hard_w,
            solver=solver,
            cg_steps=args.cg_steps,
            init_std=init_std,
            n_epochs=args.epochs,
            early_stopping_rounds=args.patience,
            random_state=seed,
            n_jobs=args.threads,
        )
        label = (
            f"| {obj} | {d} | {w} | {lam} | {nu} | {offset} | {alpha} | {K} | {beta} | {norm} "
            f"| {hard} | {hard_w} | {solver} "
            f"| {init_std} | {seed} |"
        )
        try:
            model.fit(fit_part, validation_data=val)
        except (ValueError, ArithmeticError) as exc:
            print(f"{label} failed: {exc} |", flush=True)
            row.update(best_recall=None, error=str(exc))
        else:
            scores = model.validation_scores_
            row.update(
                best_epoch=model.best_epoch_,
                best_recall=max(scores),
                validation_recall=scores,
                seconds_per_epoch=float(np.median(model.epoch_times_)),
            )
            print(
                f"{label} {model.best_epoch_} | {max(scores):.4f} | {scores[-1]:.4f} | "
                f"{row['seconds_per_epoch']:.2f} |",
                flush=True,
            )
            print("  per-epoch: " + " ".join(f"{v:.4f}" for v in scores), flush=True)
        rows.append(row)
        with open(out / "tune_ials.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
    if len(args.unobserved_weight) > 1:
        path = out / "recall_vs_unobserved_weight.png"
        plot_recall_vs_weight(
            rows, path, f"{Path(args.data).name}: validation ({args.holdout} holdout)"
        )
        print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()

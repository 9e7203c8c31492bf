"""Probes of the iALS objective at d = 64 on a validation split: changes that are not options
of :class:`linrec.IALS`, tried because its best d = 64 Gowalla point is still below MF-BPR's.

Every probe starts from one IALS setting (by default the best d = 64 Gowalla point of
benchmarks/RESULTS.md) and prints the validation Recall@20 after every epoch (the test file
is never read):

- ``side``: the user and item sides' regularisation multiplied by separate factors
  (``--side-multipliers MU,MI ...``). For plain L2 only their product matters (rescaling P by
  c and Q by 1/c trades one for the other); with frequency-scaled terms that is no longer
  exact, hence the probe.
- ``user-weight``: each user's whole loss (observed and unobserved entries) weighted by
  s_u = (n_u / mean n)^-gamma (``--user-weight-exponents``), so the item half-step hears
  light users more (gamma > 0) or heavy users more (gamma < 0). With ``--user-reg-too`` the
  user's regularisation is scaled by s_u as well, which leaves the user half-step unchanged.
- ``svd-start``: the fit started from a rank-d truncated SVD of the interaction matrix,
  raw or symmetrically normalised by the degrees, split evenly between the two sides
  (P = U S^1/2 c, Q = V S^1/2 c for the scales c of ``--svd-scales``), instead of the random
  start.
- ``popularity-start``: the random start with each item row scaled by (n_i / mean n)^g
  (``--start-exponents``), so the alternating steps begin from a start that leans towards
  popular (g > 0) or rare (g < 0) items; the user rows keep the plain random start.
- ``observed-tilt``: the observed entries weighted by popularity, through Hu's confidence
  form with the matrix values r_ui = (n_i / mean n)^-gamma (normalised to mean 1 over the
  observed entries; ``--observed-exponents``): confidence 1 + 9 r_ui, with the unobserved
  weight and lam scaled by 10, so that gamma = 0 is the starting point up to its observed
  weight (1 + w against 1). Unlike the other probes this uses only public options.

The first two change private parts of the fit (the objective's terms and the module's
regularisation scale) for the length of one fit; they are probes, not features.

Example:
    python benchmarks/ials_d64_probes.py --data ../shared/data/gowalla --probe side \\
        --side-multipliers 1,1 1,2 2,1
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.utils.extmath import randomized_svd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _ials_common import tuning_split

import linrec.ials as ials_module
from linrec.ials import IALS


@contextlib.contextmanager
def scaled_regularization(user_scale, item_scale, n_items):
    """Multiply the regularisation terms linrec.ials computes for the user side (whose other
    side has ``n_items`` rows) by ``user_scale`` and the item side's by ``item_scale``."""
    original = ials_module.regularization_scale

    def scaled(counts, offset, n_other, exponent):
        scale = user_scale if n_other == n_items else item_scale
        return original(counts, offset, n_other, exponent) * scale

    ials_module.regularization_scale = scaled
    try:
        yield
    finally:
        ials_module.regularization_scale = original


class UserWeightedIALS(IALS):
    """IALS with every term of user u's loss multiplied by ``user_weights[u]`` (an attribute
    set before fitting, not a constructor parameter: this is a probe)."""

    user_weights = None

    def _terms(self, X, class_prior, dtype):
        row_weight, extra, rhs = super()._terms(X, class_prior, dtype)
        s = np.asarray(self.user_weights, dtype=np.float64)
        per_entry = np.repeat(s, np.diff(X.indptr))
        return (
            (row_weight * s).astype(dtype),
            (extra * per_entry).astype(dtype),
            (rhs * per_entry).astype(dtype),
        )


def report(label, model):
    scores = np.asarray(model.validation_scores_)
    best = int(scores.argmax())
    curve = " ".join(f"{v:.4f}" for v in scores)
    print(f"| {label} | {scores[best]:.4f} ({best + 1}) | {scores[-1]:.4f} | {curve} |", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="a LightGCN-format folder")
    ap.add_argument("--holdout", choices=["random", "tail"], default="tail")
    ap.add_argument("--val-users", type=int, default=8000)
    ap.add_argument(
        "--probe",
        choices=["side", "user-weight", "svd-start", "popularity-start", "observed-tilt"],
        required=True,
    )
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--unobserved-weight", type=float, default=0.01)
    ap.add_argument("--regularization", type=float, default=0.05)
    ap.add_argument("--reg-exponent", type=float, default=1.0)
    ap.add_argument("--reg-frequency-offset", type=float, default=0.001)
    ap.add_argument("--item-weight-exponent", type=float, default=0.3)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--side-multipliers", nargs="+", default=["1,1"], metavar="MU,MI")
    ap.add_argument("--user-weight-exponents", nargs="+", type=float, default=[0.0])
    ap.add_argument("--user-reg-too", action="store_true")
    ap.add_argument("--svd-scales", nargs="+", type=float, default=[1.0])
    ap.add_argument("--start-exponents", nargs="+", type=float, default=[0.0])
    ap.add_argument("--observed-exponents", nargs="+", type=float, default=[0.0])
    args = ap.parse_args(argv)

    fit_part, val, _ = tuning_split(args.data, args.holdout, args.val_users)
    n_items = fit_part.shape[1]
    user_counts = np.diff(fit_part.indptr).astype(np.float64)
    # items seen only in the validation part count as seen once, so every power is finite
    item_counts = np.maximum(np.bincount(fit_part.indices, minlength=n_items), 1)
    params = dict(
        n_factors=args.factors,
        unobserved_weight=args.unobserved_weight,
        regularization=args.regularization,
        reg_exponent=args.reg_exponent,
        reg_frequency_offset=args.reg_frequency_offset,
        item_weight_exponent=args.item_weight_exponent,
        n_epochs=args.epochs,
        n_jobs=args.threads,
        random_state=args.seed,
    )
    print(f"{args.data}, {args.holdout} holdout, {args.val_users} validation users, {params}")
    print("\n| probe | best validation Recall@20 (epoch) | last | per epoch |")
    print("|---|---|---|---|")
    if args.probe == "side":
        for spec in args.side_multipliers:
            user_scale, item_scale = (float(t) for t in spec.split(","))
            with scaled_regularization(user_scale, item_scale, n_items):
                model = IALS(**params).fit(fit_part, validation_data=val)
            report(f"user reg x{user_scale:g}, item reg x{item_scale:g}", model)
    elif args.probe == "user-weight":
        for gamma in args.user_weight_exponents:
            weights = (user_counts / user_counts.mean()) ** -gamma
            user_scale = weights if args.user_reg_too else 1.0
            with scaled_regularization(user_scale, 1.0, n_items):
                model = UserWeightedIALS(**params)
                model.user_weights = weights
                model.fit(fit_part, validation_data=val)
            tag = ", user reg scaled too" if args.user_reg_too else ""
            report(f"gamma {gamma:g}{tag}", model)
    elif args.probe == "popularity-start":
        popularity = (item_counts / item_counts.mean())[:, None]
        std = 0.1 / np.sqrt(args.factors)  # IALS's default init_std
        for exponent in args.start_exponents:
            rng = np.random.default_rng(args.seed)
            P0 = rng.standard_normal((fit_part.shape[0], args.factors)) * std
            Q0 = rng.standard_normal((n_items, args.factors)) * std * popularity**exponent
            model = IALS(**params).fit(fit_part, validation_data=val, initial_factors=(P0, Q0))
            report(f"random start, item rows x (n_i / mean n)^{exponent:g}", model)
    elif args.probe == "observed-tilt":
        hu_params = dict(
            params,
            objective="hu",
            confidence_scale=9.0,
            unobserved_weight=10 * args.unobserved_weight,
            regularization=10 * args.regularization,
        )
        for gamma in args.observed_exponents:
            tilt = (item_counts / item_counts.mean()) ** -gamma
            tilt = tilt / np.average(tilt, weights=item_counts)
            X = fit_part.astype(np.float64)  # a copy: fit_part keeps its values
            X.data = tilt[X.indices]
            model = IALS(**hu_params).fit(X, validation_data=val)
            report(f"observed entries x (n_i / mean n)^{-gamma:g} (Hu form)", model)
    else:
        X = fit_part.astype(np.float64)
        for norm in ("raw", "sym"):
            A = X
            if norm == "sym":
                A = sp.diags(user_counts**-0.5) @ X @ sp.diags(item_counts**-0.5)
            U, S, VT = randomized_svd(A, args.factors, n_iter=5, random_state=args.seed)
            for scale in args.svd_scales:
                start = (U * np.sqrt(S) * scale, VT.T * np.sqrt(S) * scale)
                model = IALS(**params).fit(fit_part, validation_data=val, initial_factors=start)
                report(f"SVD start ({norm}), scale {scale:g}", model)


if __name__ == "__main__":
    main()

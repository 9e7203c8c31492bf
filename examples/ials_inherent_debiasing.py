"""Is iALS "inherently debiased"? The exact equivalences, and the gap where they stop.

THEORY.md ("The full-batch view"): with the negative term an exact average over all items,
the debiased MSE objective becomes a weighted iALS objective. When the user-specific weights
are constant this is standard iALS (Hu or Rendle, after a known rescaling); in the Chuang form
the unobserved weight c_u varies with n_u, in the positive-unlabelled (PU) form the row scale
s_u does, and no standard setting reproduces them exactly.

This script
1. checks the exact equivalences (Hu <-> weighted member, Rendle <-> weighted member with the
   sqrt(1 + alpha0) factor scaling) in float64 from the same (scaled) initialisation: relative
   factor difference, score difference after the scaling, top-20 overlap;
2. for the Chuang and PU forms, for several prior inflations K, fits the debiased model and the
   standard iALS closest to it (unobserved weight searched around the debiased model's average
   weight ratio, from the same initialisation), and reports the score distance on sampled
   users (mean over users of min_s ||y_deb - s y_std|| / ||y_deb||: per-user scale does not
   change rankings), the relative factor distance (same initialisation), the top-20
   overlap and Recall@20 / NDCG@20 of both on held-out data;
3. writes the table (markdown) and a plot against K: relative factor distance, score
   distance and Recall@20 of the debiased and the closest standard model.

Run with no arguments on a built-in synthetic power-law data set (about a minute), or on a
LightGCN folder:  python examples/ials_inherent_debiasing.py --data ../shared/data/gowalla
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from linrec._kernels.topk import hit_matrix, topk_rows
from linrec.equivalence import (
    check_equivalence,
    debiased_to_weighted,
    hu_to_weighted,
    rendle_to_weighted,
)
from linrec.ials import IALS, objective_terms


def synthetic_split(n_users=3000, n_items=2000, n_factors=16, mean_items=25, seed=0):
    """Power-law users and items from a low-rank model; 20% of each user's items held out."""
    rng = np.random.default_rng(seed)
    U = rng.standard_normal((n_users, n_factors))
    V = rng.standard_normal((n_items, n_factors))
    popularity = -1.2 * np.log(np.arange(1, n_items + 1))
    counts = np.minimum(n_items // 2, 2 + rng.zipf(1.8, n_users) * mean_items // 4)
    rows, cols = [], []
    for u in range(n_users):
        logits = U[u] @ V.T / np.sqrt(n_factors) * 2 + popularity
        p = np.exp(logits - logits.max())
        items = rng.choice(n_items, size=int(counts[u]), replace=False, p=p / p.sum())
        rows.append(np.full(items.size, u))
        cols.append(items)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    test = rng.random(rows.size) < 0.2
    shape = (n_users, n_items)
    train = sp.csr_matrix((np.ones((~test).sum()), (rows[~test], cols[~test])), shape=shape)
    held = sp.csr_matrix((np.ones(test.sum()), (rows[test], cols[test])), shape=shape)
    keep = np.diff(train.indptr) > 0
    return train[keep], held[keep]


def load_lightgcn(folder):
    def read(path):
        rows, cols = [], []
        for line in open(path):
            parts = line.split()
            if len(parts) > 1:
                items = np.asarray(parts[1:], dtype=np.int64)
                rows.append(np.full(items.size, int(parts[0])))
                cols.append(items)
        return np.concatenate(rows), np.concatenate(cols)

    (r1, c1), (r2, c2) = read(Path(folder) / "train.txt"), read(Path(folder) / "test.txt")
    shape = (max(r1.max(), r2.max()) + 1, max(c1.max(), c2.max()) + 1)
    train = sp.csr_matrix((np.ones(r1.size), (r1, c1)), shape=shape)
    test = sp.csr_matrix((np.ones(r2.size), (r2, c2)), shape=shape)
    train.data[:] = 1
    test.data[:] = 1
    keep = np.diff(train.indptr) > 0
    return train[keep], test[keep]


def recall_ndcg(P, Q, train, test, k=20):
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    disc = 1 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(disc)
    rec = ndcg = 0.0
    for start in range(0, users.size, 2048):
        rows = users[start : start + 2048]
        scores = P[rows].astype(np.float32) @ Q.T.astype(np.float32)
        tr, te = train[rows], test[rows]
        top, _ = topk_rows(scores, k, tr.indptr, tr.indices, np.ones(1, np.bool_), False)
        hits = hit_matrix(top, te.indptr, te.indices).astype(float)
        n_test = np.diff(te.indptr)
        rec += np.sum(hits.sum(1) / n_test)
        ndcg += np.sum(hits @ disc / ideal[np.minimum(n_test, k) - 1])
    return rec / users.size, ndcg / users.size


def chuang_weight_for_ratio(train, K, target):
    """w of the Chuang form whose mean unobserved/positive weight ratio equals ``target``.

    The ratio C_u / (C_u + E_ui) grows with w; bisection, keeping every positive's weight
    C_u + E_ui = 1 - w (K - 1) n_u / (n (1 - tau_u)) above zero.
    """
    n_items = train.shape[1]
    n_u = np.diff(train.indptr).astype(float)
    tau = K * n_u / n_items
    w_hi = 1e6 if K == 1 else 0.999 * np.min(n_items * (1 - tau) / ((K - 1) * n_u))

    def ratio(w):
        trial = dict(objective="debiased_chuang", unobserved_weight=w, prior_inflation=K)
        return debiased_to_weighted(trial, train)["unobserved_weight"]

    lo, hi = 0.0, w_hi
    if ratio(hi) < target:
        raise ValueError(f"no Chuang weight reaches ratio {target} at K={K}")
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ratio(mid) < target else (lo, mid)
    return 0.5 * (lo + hi)


def fit(train, params, init, n_epochs, threads):
    model = IALS(**params, n_epochs=n_epochs, n_jobs=threads, dtype="float64")
    return model.fit(train, initial_factors=init)


def compare(a, b, train, users, k=20):
    """Scale-free score distance, relative factor distance, top-k overlap of two models."""
    ya = a.user_factors_[users] @ a.item_factors_.T
    yb = b.user_factors_[users] @ b.item_factors_.T
    # per-user distance after the best per-user rescaling of b (a user's scale does not
    # change the ranking): min_s ||y_a - s y_b|| / ||y_a|| = sqrt(1 - cos^2), averaged
    cos = np.sum(ya * yb, 1) / (np.linalg.norm(ya, axis=1) * np.linalg.norm(yb, axis=1))
    score_dist = np.mean(np.sqrt(np.clip(1 - cos**2, 0, None)))
    fa = np.vstack([a.user_factors_, a.item_factors_])
    fb = np.vstack([b.user_factors_, b.item_factors_])
    factor_dist = np.linalg.norm(fa - fb) / np.linalg.norm(fa)
    rows = train[users]
    ta, _ = topk_rows(ya, k, rows.indptr, rows.indices, np.ones(1, np.bool_), False)
    tb, _ = topk_rows(yb, k, rows.indptr, rows.indices, np.ones(1, np.bool_), False)
    overlap = np.mean([np.intersect1d(x, y).size / k for x, y in zip(ta, tb)])
    return float(score_dist), float(factor_dist), float(overlap)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="LightGCN folder (train.txt/test.txt); default synthetic")
    ap.add_argument("--out", default="ials_debiasing_out", help="output directory")
    ap.add_argument("--factors", type=int, default=None, help="default 32 synthetic, 64 real")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--standard-weight",
        type=float,
        default=0.01,
        help="unobserved weight c of the standard member the debiased forms "
        "are matched to (average weight ratio)",
    )
    ap.add_argument("--regularization", type=float, default=0.01)
    ap.add_argument("--K", type=float, nargs="+", default=[1.0, 1.25, 1.5, 2.0])
    ap.add_argument("--sample-users", type=int, default=2000)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    if args.data:
        train, test = load_lightgcn(args.data)
        name = Path(args.data).name
    else:
        train, test = synthetic_split()
        name = "synthetic"
    d = args.factors or (64 if args.data else 32)
    n_users, n_items = train.shape
    print(
        f"data: {name}, {n_users} users x {n_items} items, {train.nnz} train, "
        f"{test.nnz} held out; d = {d}, {args.epochs} epochs, float64\n"
    )
    rng = np.random.default_rng(0)
    P0 = rng.standard_normal((n_users, d)) * 0.1 / np.sqrt(d)
    Q0 = rng.standard_normal((n_items, d)) * 0.1 / np.sqrt(d)
    users = np.sort(rng.choice(n_users, min(args.sample_users, n_users), replace=False))
    lines = []

    # 1. exact equivalences ------------------------------------------------------------
    base = dict(n_factors=d, regularization=args.regularization, solver="cg")
    hu = dict(
        base,
        objective="hu",
        confidence_scale=1 / args.standard_weight - 1,
        unobserved_weight=1.0,
        regularization=args.regularization / args.standard_weight,
    )
    alpha0 = args.standard_weight / (1 - args.standard_weight)
    rendle = dict(base, objective="rendle", unobserved_weight=alpha0, reg_exponent=1.0)
    lines += [
        "## Exact equivalences (float64, same scaled initialisation)",
        "",
        "| equivalence | max rel. factor diff | max rel. score diff | top-20 overlap | "
        "identical top-20 |",
        "|---|---|---|---|---|",
    ]
    for label, params, mapper in (
        (f"Hu (alpha={hu['confidence_scale']:.4g}, w=1) = weighted member", hu, hu_to_weighted),
        (
            f"Rendle (alpha0={alpha0:.4g}, nu=1) = weighted member x sqrt(1+alpha0)",
            rendle,
            rendle_to_weighted,
        ),
    ):
        member, scale = mapper(params)
        rep = check_equivalence(
            train,
            params,
            member,
            scale,
            n_epochs=args.epochs,
            max_users=args.sample_users,
            n_jobs=args.threads,
        )
        lines.append(
            f"| {label} | {rep.max_rel_factor_diff:.2e} | {rep.max_score_diff:.2e} | "
            f"{rep.top_k_overlap:.4f} | {rep.rankings_identical} |"
        )
    print("\n".join(lines), "\n", flush=True)

    # 2. debiased forms against the closest standard iALS -----------------------------
    c = args.standard_weight
    offset = dict(reg_frequency_offset=c)
    standard = fit(
        train,
        dict(base, objective="hu", unobserved_weight=c, **offset),
        (P0, Q0),
        args.epochs,
        args.threads,
    )
    std_quality = recall_ndcg(standard.user_factors_, standard.item_factors_, train, test)
    gap_lines = [
        "## Debiased forms vs the closest standard iALS",
        "",
        f"Standard iALS (c = {c}): Recall@20 {std_quality[0]:.4f}, NDCG@20 {std_quality[1]:.4f}",
        "",
        "| form | K | debiased R@20 / N@20 | closest standard c | standard R@20 / N@20 "
        "| score distance | rel. factor distance | top-20 overlap |",
        "|---|---|---|---|---|---|---|---|",
    ]
    results = {"debiased_chuang": [], "debiased_pu": []}
    counts = np.diff(train.indptr)
    for form in results:
        for K in args.K:
            # match the debiased model's average unobserved/positive weight ratio to c
            if form == "debiased_chuang":
                w = chuang_weight_for_ratio(train, K, c)
                lam = args.regularization
            else:
                w = c * K / (1 - c + c * K)  # PU ratio w / (w + K (1 - w)) = c
                lam = args.regularization * K * np.sum(counts**2) / (np.sum(counts) * n_items)
            params = dict(
                base,
                objective=form,
                unobserved_weight=w,
                prior_inflation=K,
                regularization=lam,
                **offset,
            )
            try:
                objective_terms(train, form, unobserved_weight=w, prior_inflation=K)
                deb = fit(train, params, (P0, Q0), args.epochs, args.threads)
            except (ValueError, ArithmeticError) as exc:
                gap_lines.append(f"| {form} | {K} | failed: {exc} | | | | | |")
                continue
            deb_q = recall_ndcg(deb.user_factors_, deb.item_factors_, train, test)
            centre = debiased_to_weighted(params, train)
            best = None
            for mult in (0.5, 1.0, 2.0):
                cand_params = dict(centre, unobserved_weight=centre["unobserved_weight"] * mult)
                if form == "debiased_pu":
                    cand_params["regularization"] = args.regularization
                cand = fit(train, cand_params, (P0, Q0), args.epochs, args.threads)
                dist = compare(deb, cand, train, users)
                if best is None or dist[0] < best[1][0]:
                    best = (cand, dist, cand_params["unobserved_weight"])
            cand, (score_dist, factor_dist, overlap), c_best = best
            cand_q = recall_ndcg(cand.user_factors_, cand.item_factors_, train, test)
            results[form].append((K, score_dist, factor_dist, deb_q[0], cand_q[0]))
            gap_lines.append(
                f"| {form} | {K} | {deb_q[0]:.4f} / {deb_q[1]:.4f} | {c_best:.4g} | "
                f"{cand_q[0]:.4f} / {cand_q[1]:.4f} | {score_dist:.4f} | {factor_dist:.4f} | "
                f"{overlap:.4f} |"
            )
            print(gap_lines[-1], flush=True)
    print("\n" + "\n".join(gap_lines))
    lines += ["", *gap_lines]
    (out / "ials_inherent_debiasing.md").write_text("\n".join(lines) + "\n")

    # 3. plot ---------------------------------------------------------------------------
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for (form, rows), color in zip(results.items(), ("tab:blue", "tab:orange")):
        if not rows:
            continue
        K, dist, factor_dist, rec_deb, rec_std = map(np.asarray, zip(*rows))
        axes[0].plot(K, factor_dist, marker="o", color=color, label=form)
        axes[1].plot(K, dist, marker="o", color=color, label=form)
        axes[2].plot(K, rec_deb, marker="o", color=color, label=form)
        axes[2].plot(
            K, rec_std, marker="x", linestyle="--", color=color, label=f"closest standard ({form})"
        )
    axes[0].set(
        xlabel="prior inflation K",
        ylabel="relative factor distance (same initialisation)",
        title=f"debiased vs closest standard iALS ({name})",
    )
    axes[1].set(
        xlabel="prior inflation K",
        ylabel="per-user score distance (scale-free)",
        title="score distance",
    )
    axes[2].axhline(std_quality[0], color="grey", linewidth=0.8, label=f"standard c={c}")
    axes[2].set(xlabel="prior inflation K", ylabel="Recall@20", title="held-out Recall@20")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "ials_inherent_debiasing.png", dpi=120)
    print(f"\nwrote {out / 'ials_inherent_debiasing.md'} and {out / 'ials_inherent_debiasing.png'}")


if __name__ == "__main__":
    main()

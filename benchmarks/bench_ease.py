"""EASE benchmarks: fit time and peak memory, accuracy on the LightGCN splits.

Sub-commands (each prints a markdown block; figures go into benchmarks/RESULTS.md by hand with
the command that produced them):

    fit      dense EASE (or SparseEASE) on a full data set: fit time, peak memory, test metrics
    tune     lam (or n_neighbors) on a validation split carved from train (never the test file)
    floor    on an item subsample of n items: linrec's tiled fit vs the single-call LAPACK floor
             (potrf + potri on the same Gram) vs plain numpy (float64 np.linalg.inv)
    amazon   SparseEASE on a synthetic matrix shaped like Amazon-Book
    plot     validation Recall@20 against lam from `tune --csv` files

Examples::

    python benchmarks/bench_ease.py fit --data ../shared/data/gowalla --lam 80
    python benchmarks/bench_ease.py tune --data ../shared/data/gowalla --lam-grid 40 80 160 \
        --csv out/tune_gowalla.csv --test-best
    python benchmarks/bench_ease.py plot --csv out/tune_gowalla.csv --labels Gowalla --out x.png
    python benchmarks/bench_ease.py floor --data ../shared/data/gowalla --n-items 12000
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from linrec._memory import PeakMemory, available_memory, format_bytes
from linrec._threading import blas_threads
from linrec.ease import EASE, dense_ease_weights


# --------------------------------------------------------------------------- data
def read_lightgcn(path: Path, n_items: int | None = None) -> sp.csr_matrix:
    rows, cols = [], []
    with open(path) as fh:
        for line in fh:
            parts = line.split()
            if len(parts) < 2:
                continue
            items = np.asarray(parts[1:], dtype=np.int64)
            rows.append(np.full(len(items), int(parts[0])))
            cols.append(items)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    shape = (rows.max() + 1, n_items or cols.max() + 1)
    X = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)
    X.sum_duplicates()
    X.data[:] = 1.0
    return X


def load_split(folder: Path) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    train = read_lightgcn(folder / "train.txt")
    test = read_lightgcn(folder / "test.txt")
    n_users = max(train.shape[0], test.shape[0])
    n_items = max(train.shape[1], test.shape[1])
    train.resize((n_users, n_items))
    test.resize((n_users, n_items))
    return train, test


def validation_split(train: sp.csr_matrix, fraction: float = 0.2, seed: int = 0):
    """Hold out ``fraction`` of each user's training items (users with >= 2 items)."""
    rng = np.random.default_rng(seed)
    train = train.tocsr()
    keep_rows, keep_cols, val_rows, val_cols = [], [], [], []
    for u in range(train.shape[0]):
        items = train.indices[train.indptr[u] : train.indptr[u + 1]]
        if len(items) >= 2:
            n_val = max(1, round(fraction * len(items)))
            perm = rng.permutation(len(items))
            val, keep = items[perm[:n_val]], items[perm[n_val:]]
        else:
            val, keep = items[:0], items
        keep_rows.append(np.full(len(keep), u))
        keep_cols.append(keep)
        val_rows.append(np.full(len(val), u))
        val_cols.append(val)

    def build(r, c):
        r, c = np.concatenate(r), np.concatenate(c)
        return sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=train.shape)

    return build(keep_rows, keep_cols), build(val_rows, val_cols)


# --------------------------------------------------------------------------- metrics
def recall_ndcg(model, train: sp.csr_matrix, test: sp.csr_matrix, k: int = 20):
    """LightGCN protocol: Recall@k = hits / |test|, NDCG@k with IDCG over min(k, |test|)."""
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    history = train[users]
    # users with an empty history are scored from an empty row (zero scores, ties by index)
    top, _ = model.recommend(history, k=k)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    recalls, ndcgs = np.empty(len(users)), np.empty(len(users))
    for pos, u in enumerate(users):
        truth = test.indices[test.indptr[u] : test.indptr[u + 1]]
        hit = np.isin(top[pos], truth)
        recalls[pos] = hit.sum() / len(truth)
        ndcgs[pos] = (hit * discounts).sum() / discounts[: min(k, len(truth))].sum()
    return float(recalls.mean()), float(ndcgs.mean())


def load_line() -> str:
    return f"load average {os.getloadavg()[0]:.2f} / {os.getloadavg()[1]:.2f} (1 / 5 min)"


def timed_fit(model, X):
    """Wall seconds, process CPU seconds (all threads) and peak RSS increase of ``fit``."""
    gc.collect()
    with PeakMemory(interval=0.01) as mem:
        start, cpu = time.perf_counter(), time.process_time()
        model.fit(X)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return seconds, cpu, mem.increase


def make_model(args, n_items):
    if args.model == "dense":
        return EASE(regularization=args.lam, n_jobs=args.n_jobs)
    from linrec.ease import SparseEASE

    return SparseEASE(regularization=args.lam, n_neighbors=args.n_neighbors, n_jobs=args.n_jobs)


# --------------------------------------------------------------------------- commands
def cmd_fit(args) -> None:
    train, test = load_split(Path(args.data))
    n = train.shape[1]
    print(
        f"# {args.model} EASE fit on {args.data}: {train.shape[0]} users x {n} items, "
        f"nnz {train.nnz}; {load_line()}; MemAvailable {format_bytes(available_memory())}"
    )
    model = make_model(args, n)
    seconds, cpu, increase = timed_fit(model, train)
    one_matrix = n * n * 4
    start = time.perf_counter()
    recall, ndcg = recall_ndcg(model, train, test)
    eval_s = time.perf_counter() - start
    print(
        "| data | model | lam | n_neighbors | fit s | fit CPU s | peak RSS increase "
        "| / one n x n f32 "
        "| Recall@20 | NDCG@20 | eval s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {Path(args.data).name} | {args.model} | {args.lam} | "
        f"{args.n_neighbors if args.model != 'dense' else '-'} | {seconds:.1f} | {cpu:.1f} | "
        f"{format_bytes(increase)} | {increase / one_matrix:.3f} | {recall:.4f} | "
        f"{ndcg:.4f} | {eval_s:.1f} |"
    )
    print(load_line())


def cmd_tune(args) -> None:
    train, test = load_split(Path(args.data))
    fit_part, val_part = validation_split(train, seed=args.seed)
    print(
        f"# {args.model} tuning on {args.data}: validation = 20% of each user's train items "
        f"(seed {args.seed}); {load_line()}"
    )
    print("| lam | n_neighbors | fit s | fit CPU s | val Recall@20 | val NDCG@20 | load (1 min) |")
    print("|---|---|---|---|---|---|---|")
    grid = args.n_neighbors_grid or [args.n_neighbors]
    rows = []
    for lam in args.lam_grid:
        for nn in grid:
            args.lam, args.n_neighbors = lam, nn
            model = make_model(args, train.shape[1])
            seconds, cpu, _ = timed_fit(model, fit_part)
            recall, ndcg = recall_ndcg(model, fit_part, val_part)
            rows.append((lam, nn, recall, ndcg))
            print(
                f"| {lam:g} | {nn if args.model != 'dense' else '-'} | {seconds:.1f} | "
                f"{cpu:.1f} | {recall:.4f} | {ndcg:.4f} | {os.getloadavg()[0]:.1f} |",
                flush=True,
            )
            del model
            gc.collect()
    if args.csv:
        with open(args.csv, "w") as fh:
            fh.write("lam,n_neighbors,val_recall20,val_ndcg20\n")
            fh.writelines(f"{lam},{nn},{r:.6f},{n:.6f}\n" for lam, nn, r, n in rows)
    # the choice is made on validation Recall@20 only; the test file is read after it
    lam, nn, recall, _ = max(rows, key=lambda row: row[2])
    print(f"chosen on validation: lam {lam:g}, n_neighbors {nn} (val Recall@20 {recall:.4f})")
    if args.test_best:
        args.lam, args.n_neighbors = lam, nn
        model = make_model(args, train.shape[1])
        seconds, cpu, increase = timed_fit(model, train)
        recall, ndcg = recall_ndcg(model, train, test)
        print(
            "| chosen lam | fit s | fit CPU s | peak RSS increase | test Recall@20 | test NDCG@20 |"
        )
        print("|---|---|---|---|---|---|")
        print(
            f"| {lam:g} | {seconds:.1f} | {cpu:.1f} | {format_bytes(increase)} | "
            f"{recall:.4f} | {ndcg:.4f} |"
        )
    print(load_line())


def cmd_plot(args) -> None:
    """Validation Recall@20 against lam from one or more ``tune --csv`` files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.csv), figsize=(3.6 * len(args.csv), 3.2))
    for ax, (path, label) in zip(np.atleast_1d(axes), zip(args.csv, args.labels, strict=True)):
        data = np.genfromtxt(path, delimiter=",", names=True)
        order = np.argsort(data["lam"])
        best = int(np.argmax(data["val_recall20"]))
        ax.plot(data["lam"][order], data["val_recall20"][order], "o-")
        ax.plot(data["lam"][best], data["val_recall20"][best], "r*", ms=12, label="best")
        ax.set_xscale("log")
        ax.set_xticks(data["lam"][order], [f"{lam:g}" for lam in data["lam"][order]])
        ax.minorticks_off()
        ax.set_xlabel("lam (regularization)")
        ax.set_ylabel("validation Recall@20")
        ax.set_title(f"dense EASE, {label}", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


def _gram(X: sp.csr_matrix, lam: float, order: str) -> np.ndarray:
    G = (X.T @ X).toarray().astype(np.float32)
    G[np.diag_indices_from(G)] += lam
    return np.asfortranarray(G) if order == "F" else np.ascontiguousarray(G)


def cmd_floor(args) -> None:
    train, _ = load_split(Path(args.data))
    rng = np.random.default_rng(0)
    items = np.sort(rng.choice(train.shape[1], size=args.n_items, replace=False))
    X = train[:, items]
    X = X[np.diff(X.indptr) > 0]
    n = X.shape[1]
    lam = args.lam
    one = n * n * 4
    print(
        f"# dense EASE cost on a random subsample of {n} items of {args.data} "
        f"({X.shape[0]} users, nnz {X.nnz}); median of {args.repeat}; {load_line()}"
    )
    rows = []
    for _ in range(args.repeat):
        # linrec: Gram into one array, tiled inverse, B in place (all of the fit)
        gc.collect()
        with PeakMemory(interval=0.01) as mem:
            t, c = time.perf_counter(), time.process_time()
            dense_ease_weights(X, lam, np.float32, args.n_jobs, args.tile)
            ours, ours_cpu = time.perf_counter() - t, time.process_time() - c
        ours_mem = mem.increase
        # the LAPACK floor: potrf + potri alone, one call each, on the same Gram (not timed:
        # building it), threaded, in place
        G = _gram(X, lam, "F")
        with blas_threads(args.n_jobs):
            t, c0 = time.perf_counter(), time.process_time()
            c, info = lapack.spotrf(G, lower=1, clean=0, overwrite_a=1)
            c, info2 = lapack.spotri(c, lower=1, overwrite_c=1)
            floor, floor_cpu = time.perf_counter() - t, time.process_time() - c0
        assert info == 0 and info2 == 0
        del G, c
        # plain numpy, the way most libraries write it (float64, np.linalg.inv, copies)
        numpy_s = numpy_mem = float("nan")
        if not args.skip_numpy:
            gc.collect()
            with PeakMemory(interval=0.01) as mem:
                t = time.perf_counter()
                G64 = (X.T @ X).toarray().astype(np.float64)
                G64[np.diag_indices_from(G64)] += lam
                P = np.linalg.inv(G64)
                B = P / (-np.diag(P))
                B[np.diag_indices_from(B)] = 0.0
                numpy_s = time.perf_counter() - t
            numpy_mem = mem.increase
            del G64, P, B
        rows.append((ours, ours_cpu, ours_mem, floor, floor_cpu, numpy_s, numpy_mem))
        print(
            f"  run: ours {ours:.1f} s (CPU {ours_cpu:.1f} s, {format_bytes(ours_mem)}), "
            f"floor {floor:.1f} s (CPU {floor_cpu:.1f} s), numpy {numpy_s:.1f} s "
            f"({format_bytes(numpy_mem)}); {load_line()}",
            flush=True,
        )
    med = np.median(np.array(rows), axis=0)
    ours, ours_cpu, ours_mem, floor, floor_cpu, numpy_s, numpy_mem = med
    print(
        "| n items | tile | linrec fit s (CPU s) | LAPACK floor s (CPU s) | ratio wall (CPU) "
        "| numpy f64 s | linrec peak / one n x n f32 | numpy peak / one n x n f32 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {n} | {args.tile} | {ours:.1f} ({ours_cpu:.1f}) | {floor:.1f} ({floor_cpu:.1f}) "
        f"| {ours / floor:.2f} ({ours_cpu / floor_cpu:.2f}) | {numpy_s:.1f} "
        f"| {ours_mem / one:.2f} | {numpy_mem / one:.2f} |"
    )
    print(load_line())


def amazon_like(
    n_users=52_643,
    n_items=91_599,
    n_interactions=2_380_730,
    seed=0,
    popularity_exponent=0.6,
    activity_shape=2.5,
    min_interactions=10,
):
    """Binary users x items matrix shaped like Amazon-Book's train split, in O(nnz).

    Item popularity is Zipf-like (``p_i ~ rank^-popularity_exponent`` over a random
    permutation of the items), user activity ``min_interactions + Lomax(activity_shape)``
    scaled to the target mean; each user draws its items from the popularity law (duplicates
    dropped, so the total lands slightly under ``n_interactions``).
    """
    rng = np.random.default_rng(seed)
    ranks = rng.permutation(n_items) + 1.0
    p = ranks**-popularity_exponent
    p /= p.sum()
    extra = rng.pareto(activity_shape, n_users)
    mean_extra = n_interactions / n_users - min_interactions
    counts = min_interactions + np.round(extra / extra.mean() * mean_extra).astype(np.int64)
    counts = np.minimum(counts, n_items // 2)
    rows = np.repeat(np.arange(n_users), counts)
    cols = rng.choice(n_items, size=int(counts.sum()), p=p)
    X = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_items))
    X.sum_duplicates()
    X.data[:] = 1.0
    return X


def cmd_amazon(args) -> None:
    from linrec.ease import SparseEASE

    start = time.perf_counter()
    X = amazon_like(seed=args.seed)
    gen_s = time.perf_counter() - start
    item_degree = np.bincount(X.indices, minlength=X.shape[1])
    print(
        f"# SparseEASE on a synthetic Amazon-Book-shaped matrix: {X.shape[0]} users x "
        f"{X.shape[1]} items, nnz {X.nnz} (generated in {gen_s:.1f} s; max item degree "
        f"{item_degree.max()}, max user degree {np.diff(X.indptr).max()}); {load_line()}; "
        f"MemAvailable {format_bytes(available_memory())}"
    )
    print(f"dense EASE would need {format_bytes(X.shape[1] ** 2 * 4)} for B alone")
    model = SparseEASE(regularization=args.lam, n_neighbors=args.n_neighbors, n_jobs=args.n_jobs)
    gc.collect()
    print(f"fit starts; {load_line()}", flush=True)
    with PeakMemory(interval=0.01) as mem:
        start, cpu = time.perf_counter(), time.process_time()
        model.fit(X)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    print("| n_neighbors | lam | fit s | fit CPU s | peak RSS (process) | peak increase | nnz(B) |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {args.n_neighbors} | {args.lam} | {seconds:.1f} | {cpu:.1f} | "
        f"{format_bytes(mem.peak)} | {format_bytes(mem.increase)} | {model.item_weights_.nnz} |"
    )
    print(load_line())


def main(argv=None) -> None:
    # the estimators log their phase timings (supports / columns, Gram / inverse) at INFO
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("fit", "tune", "floor"):
        p = sub.add_parser(name)
        p.add_argument("--data", required=True)
        p.add_argument("--model", choices=("dense", "sparse"), default="dense")
        p.add_argument("--lam", type=float, default=80.0)
        p.add_argument("--n-neighbors", type=int, default=1000)
        p.add_argument("--n-jobs", type=int, default=None)
        if name == "tune":
            p.add_argument("--lam-grid", type=float, nargs="+", required=True)
            p.add_argument("--n-neighbors-grid", type=int, nargs="*")
            p.add_argument("--seed", type=int, default=0)
            p.add_argument("--csv", help="write the validation figures here (for `plot`)")
            p.add_argument(
                "--test-best",
                action="store_true",
                help="after choosing on validation, fit on all of train and report the test file",
            )
        if name == "floor":
            p.add_argument("--n-items", type=int, default=12000)
            p.add_argument("--tile", type=int, default=4096)
            p.add_argument("--repeat", type=int, default=3)
            p.add_argument("--skip-numpy", action="store_true")
    p = sub.add_parser("amazon")
    p.add_argument("--lam", type=float, default=50.0)
    p.add_argument("--n-neighbors", type=int, default=500)
    p.add_argument("--n-jobs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("plot")
    p.add_argument("--csv", nargs="+", required=True)
    p.add_argument("--labels", nargs="+", required=True)
    p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    commands = {
        "fit": cmd_fit,
        "tune": cmd_tune,
        "floor": cmd_floor,
        "amazon": cmd_amazon,
        "plot": cmd_plot,
    }
    commands[args.command](args)


if __name__ == "__main__":
    main()

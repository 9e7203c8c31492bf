"""Helpers shared by the iALS benchmark scripts: data loading, validation split, metrics.

Kept local to benchmarks/ until linrec.datasets / linrec.metrics are available on main.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from linrec._kernels.topk import hit_matrix, topk_rows
from linrec._threading import blas_threads, numba_threads
from linrec.reproduce import curve_users

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def _read_lightgcn(path: Path):
    rows, cols = [], []
    with open(path) as fh:
        for line in fh:
            parts = line.split()
            if len(parts) < 2:
                continue
            items = np.asarray(parts[1:], dtype=np.int64)
            rows.append(np.full(items.size, int(parts[0]), dtype=np.int64))
            cols.append(items)
    return np.concatenate(rows), np.concatenate(cols)


def load_lightgcn(folder):
    """(train, test) CSR matrices of a LightGCN-format folder (train.txt, test.txt)."""
    folder = Path(folder)
    r_tr, c_tr = _read_lightgcn(folder / "train.txt")
    r_te, c_te = _read_lightgcn(folder / "test.txt")
    shape = (int(max(r_tr.max(), r_te.max())) + 1, int(max(c_tr.max(), c_te.max())) + 1)
    train = sp.csr_matrix((np.ones(r_tr.size, np.float32), (r_tr, c_tr)), shape=shape)
    test = sp.csr_matrix((np.ones(r_te.size, np.float32), (r_te, c_te)), shape=shape)
    train.data[:] = 1
    test.data[:] = 1
    return train, test


def validation_split(train, fraction=0.2, seed=0):
    """Hold out ``fraction`` of each user's training items (users with >= 2 items).

    Returns (fit part, validation part); the test file is never touched.
    """
    rng = np.random.default_rng(seed)
    coo = train.tocoo()
    order = np.lexsort((coo.col, coo.row))
    rows, cols = coo.row[order], coo.col[order]
    counts = np.diff(train.indptr)
    held = np.zeros(rows.size, dtype=bool)
    start = 0
    for n_u in counts:
        if n_u >= 2:
            k = max(1, round(fraction * n_u))
            held[start + rng.choice(n_u, k, replace=False)] = True
        start += n_u
    fit = sp.csr_matrix(
        (np.ones((~held).sum(), np.float32), (rows[~held], cols[~held])), shape=train.shape
    )
    val = sp.csr_matrix(
        (np.ones(held.sum(), np.float32), (rows[held], cols[held])), shape=train.shape
    )
    return fit, val


def tail_validation_split(folder, shape, fraction=0.2):
    """Hold out the last ``fraction`` of each user's items in the order of ``train.txt``.

    Gowalla's train file keeps each user's original (unsorted) item order, and its test file
    is not a uniform per-user sample (test interactions lean to popular items: mean training
    popularity 91 against 76 for a random holdout, 82 for this one). On 8 fixed settings
    this holdout ranked them closer to the test file than a random one; see RESULTS.md
    ("Tuning round 2"). Yelp2018's lines are sorted by item id, so there the tail is an
    arbitrary, id-biased subset: use :func:`validation_split` for it. ``shape`` is the
    shape of the loaded train matrix (the file is re-read here for its line order only).
    """
    fit_rows, fit_cols, val_rows, val_cols = [], [], [], []
    with open(Path(folder) / "train.txt") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) < 2:
                continue
            user, items = int(parts[0]), np.asarray(parts[1:], dtype=np.int64)
            k = max(1, round(fraction * items.size)) if items.size >= 2 else 0
            cut = items.size - k
            fit_rows.append(np.full(cut, user))
            fit_cols.append(items[:cut])
            val_rows.append(np.full(k, user))
            val_cols.append(items[cut:])

    def csr(rows, cols):
        rows, cols = np.concatenate(rows), np.concatenate(cols)
        return sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=shape)

    return csr(fit_rows, fit_cols), csr(val_rows, val_cols)


def tuning_split(folder, holdout="random", val_users=8000, seed=1):
    """(fit part, validation part, train) for tuning; the test file is never returned.

    ``holdout``: "random" (20% of each user's training items, seed 0) or "tail" (the last
    20% of each training line). Users left without training items are dropped; validation
    is restricted to a fixed sample of ``val_users`` users (seed ``seed``) for speed.
    """
    train, _ = load_lightgcn(folder)
    if holdout == "random":
        fit_part, val = validation_split(train, 0.2, seed=0)
    elif holdout == "tail":
        fit_part, val = tail_validation_split(folder, train.shape, 0.2)
    else:
        raise ValueError(f"holdout must be 'random' or 'tail', got {holdout!r}")
    keep = np.diff(fit_part.indptr) > 0
    fit_part, val = fit_part[keep], val[keep]
    return fit_part, curve_users(val, val_users, seed), train


def recall_ndcg(P, Q, train, test, k=20, n_jobs=2, batch=2048):
    """LightGCN protocol: rank all items (training items excluded); Recall@k = hits/|test|,
    NDCG@k with binary gains and IDCG over min(k, |test|); mean over users with test items."""
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)
    recall = ndcg = 0.0
    for start in range(0, users.size, batch):
        rows = users[start : start + batch]
        with blas_threads(n_jobs):
            scores = np.asarray(P[rows], dtype=np.float32) @ np.asarray(Q, np.float32).T
        tr = train[rows]
        te = test[rows]
        with numba_threads(n_jobs):
            top, _ = topk_rows(scores, k, tr.indptr, tr.indices, np.ones(1, np.bool_), False)
            hits = hit_matrix(top, te.indptr, te.indices).astype(np.float64)
        n_test = np.diff(te.indptr)
        recall += float(np.sum(hits.sum(1) / n_test))
        ndcg += float(np.sum((hits @ discounts) / ideal[np.minimum(n_test, k) - 1]))
    return recall / users.size, ndcg / users.size

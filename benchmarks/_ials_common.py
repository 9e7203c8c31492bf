"""Validation splits shared by the iALS tuning scripts (the test file is never read here).

The recorded tuning runs of benchmarks/RESULTS.md depend on these exact splits and seeds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from linrec.datasets import load_lightgcn
from linrec.reproduce import curve_users

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


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

"""Read a LightGCN-format folder (train.txt / test.txt: ``user item item ...`` per line).

A local helper for the MF benchmark and example until ``linrec.datasets`` is merged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp


def _read(path: Path):
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


def load_lightgcn(folder) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(train, test) binary CSR matrices of the same shape."""
    folder = Path(folder)
    tr_r, tr_c = _read(folder / "train.txt")
    te_r, te_c = _read(folder / "test.txt")
    shape = (int(max(tr_r.max(), te_r.max())) + 1, int(max(tr_c.max(), te_c.max())) + 1)
    train = sp.csr_matrix((np.ones(tr_r.size, np.float32), (tr_r, tr_c)), shape=shape)
    test = sp.csr_matrix((np.ones(te_r.size, np.float32), (te_r, te_c)), shape=shape)
    train.data[:] = 1.0
    test.data[:] = 1.0
    return train, test

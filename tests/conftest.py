"""Shared fixtures: seeds, the real data sets, small synthetic matrices."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LINREC_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture
def rng():
    """A fresh, seeded generator per test (never the global numpy state)."""
    return np.random.default_rng(20231214)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data; tests that need it skip, with the reason, when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data sets not found at {SHARED_DATA} (set LINREC_SHARED_DATA)")
    return SHARED_DATA


def random_interactions(rng, n_users=60, n_items=40, density=0.15, binary=True):
    """A small random users x items CSR matrix with no empty row."""
    X = sp.random(n_users, n_items, density=density, format="lil", random_state=rng)
    for u in range(n_users):
        if X[u].nnz == 0:
            X[u, rng.integers(n_items)] = 1.0
    X = X.tocsr()
    if binary:
        X.data[:] = 1.0
    return X.astype(np.float32)


@pytest.fixture
def small_interactions(rng):
    return random_interactions(rng)

"""Names under which the command line knows each model, with the settings ``demo`` uses.

Adding a model to linrec means adding one entry here; the CLI's ``demo`` and ``evaluate``
pick it up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["MODELS", "ModelEntry", "make_model"]


@dataclass(frozen=True)
class ModelEntry:
    """A model the CLI can build: its class (imported lazily) and demo parameters."""

    name: str
    factory: Callable[[], type]
    summary: str
    demo_params: dict = field(default_factory=dict)


def _most_popular():
    from linrec.baselines import MostPopular

    return MostPopular


def _item_knn():
    from linrec.baselines import ItemKNN

    return ItemKNN


def _ials():
    from linrec.ials import IALS

    return IALS


def _ease():
    from linrec.ease import EASE

    return EASE


def _sparse_ease():
    from linrec.ease import SparseEASE

    return SparseEASE


def _debiased_ease():
    from linrec.ease import DebiasedEASE

    return DebiasedEASE


def _mf():
    from linrec.mf import MF

    return MF


MODELS: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in [
        ModelEntry("most_popular", _most_popular, "popularity baseline"),
        ModelEntry("item_knn", _item_knn, "item-based cosine kNN", {"n_neighbors": 100}),
        ModelEntry(
            "ials",
            _ials,
            "implicit ALS (Rendle's objective, exact solver)",
            {"n_factors": 64, "n_epochs": 10, "solver": "cholesky", "random_state": 0},
        ),
        ModelEntry("ease", _ease, "dense EASE closed form", {"regularization": 100.0}),
        ModelEntry(
            "sparse_ease",
            _sparse_ease,
            "sparse EASE approximation for large catalogues",
            {"regularization": 100.0, "n_neighbors": 200},
        ),
        ModelEntry(
            "debiased_ease",
            _debiased_ease,
            "EASE under the debiased-MSE objective (column-wise CG)",
            {"regularization": 100.0, "unobserved_weight": 0.5, "tol": 1e-4},
        ),
        ModelEntry(
            "mf_infonce",
            _mf,
            "matrix factorisation trained with InfoNCE",
            {
                "loss": "infonce",
                "n_epochs": 10,
                "learning_rate": 0.01,
                "n_negatives": 64,
                "random_state": 0,
            },
        ),
    ]
}


def make_model(name: str, params: dict | None = None):
    """Build the model registered as ``name`` with ``params`` (over its demo settings)."""
    key = name.lower().replace("-", "_")
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}")
    entry = MODELS[key]
    cls = entry.factory()
    merged = {**entry.demo_params, **(params or {})}
    unknown = set(merged) - set(cls().get_params())
    if unknown:
        raise ValueError(
            f"{cls.__name__} has no parameter(s) {sorted(unknown)}; "
            f"valid: {sorted(cls().get_params())}"
        )
    return cls(**merged)

"""linrec: fast, exact linear recommenders and contrastive matrix factorisation.

Public API is re-exported here; implementation lives in private modules.
"""

from linrec._base import BaseRecommender, load
from linrec._version import __version__
from linrec.baselines import ItemKNN, MostPopular
from linrec.datasets import IdMap, load_interactions, load_lightgcn, make_implicit
from linrec.ease import EASE, DebiasedEASE, SparseEASE
from linrec.ials import IALS
from linrec.metrics import EvaluationResult, FactorScores, compare, evaluate, ranking_metrics
from linrec.mf import MF
from linrec.model_selection import UserKFold, fold_in_split
from linrec.spark import SparkIALS, fit_spark

__all__ = [
    "EASE",
    "IALS",
    "MF",
    "BaseRecommender",
    "DebiasedEASE",
    "EvaluationResult",
    "FactorScores",
    "IdMap",
    "ItemKNN",
    "MostPopular",
    "SparkIALS",
    "SparseEASE",
    "UserKFold",
    "__version__",
    "compare",
    "evaluate",
    "fit_spark",
    "fold_in_split",
    "load",
    "load_interactions",
    "load_lightgcn",
    "make_implicit",
    "ranking_metrics",
]

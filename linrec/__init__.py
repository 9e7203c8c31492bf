"""linrec: fast, exact linear recommenders and contrastive matrix factorisation.

Public API is re-exported here; implementation lives in private modules.
"""

from linrec._base import BaseRecommender, load
from linrec._version import __version__
from linrec.baselines import ItemKNN, MostPopular

__all__ = ["BaseRecommender", "ItemKNN", "MostPopular", "__version__", "load"]

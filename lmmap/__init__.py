"""lmmap: map language models by their log-likelihood vectors.

The numeric core is :mod:`lmmap.core` (clip, double-centre, distances, KL);
:class:`lmmap.ModelMap` wraps it for a store's models. See the README.

Scoring (:mod:`lmmap.scoring`, needs the ``models`` extra), error analysis
(:mod:`lmmap.error_analysis`, :mod:`lmmap.stability`), placement of new models
(:mod:`lmmap.placement`) and prediction (:mod:`lmmap.prediction`) are imported
on use, so ``import lmmap`` stays light.
"""

__version__ = "0.1.0"

from .exceptions import LmmapError  # noqa: E402
from .texts import TextSet, build_text_set  # noqa: E402
from .store import Store  # noqa: E402
from .modelmap import ModelMap  # noqa: E402
from .subset import Subset, select  # noqa: E402

__all__ = ["__version__", "LmmapError", "TextSet", "build_text_set", "Store", "ModelMap", "Subset", "select"]

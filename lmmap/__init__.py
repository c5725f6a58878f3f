"""lmmap: map language models by their log-likelihood vectors.

The numeric core is :mod:`lmmap.maths.geometry` (clip, double-centre, distances, KL);
:class:`lmmap.ModelMap` wraps it for a store's models. See the README.

Every public name is imported on first use (PEP 562), so ``import lmmap``
loads no pandas, pyarrow, torch, matplotlib, plotly or rich.
"""

from lmmap._version import __version__
from lmmap.exceptions import LmmapError

_LAZY = {
    "TextSet": "data.texts",
    "build_text_set": "data.texts",
    "Store": "data.store",
    "ModelMap": "map",
    "Subset": "data.subset",
    "select": "analyses.select",
    "build_map": "analyses.map",
}

__all__ = ["__version__", "LmmapError", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lmmap' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)

"""Select a subset of texts by importance resampling (SPEC §4).

:func:`select` computes the importance ``π`` of every text from the map's
coordinates ``Q``, draws n texts with replacement and keeps the d unique ones
with their counts ``c`` and weights ``w = c/(nπ)``: a
:class:`lmmap.data.subset.Subset`, which records the models ``π`` came from,
the clipping threshold of their full map and the identity of the text set, so
that a map built from the d texts alone (``ModelMap.from_store(store,
subset=...)``) or new models placed on them (:mod:`lmmap.analyses.place`)
reproduce the full map's numbers.

:func:`select_from_store` is the store convenience: the map is
``ModelMap.from_store`` (the one rule for which models define a map).
"""

from __future__ import annotations

import datetime as _dt

import numpy as np

from lmmap.data.subset import Subset
from lmmap.exceptions import InputError
from lmmap.maths import resampling
from lmmap.maths.randomness import check_random_state

__all__ = ["Subset", "draw_subset", "select", "select_from_store"]


def draw_subset(Q, method: str, n: int, random_state=None) -> dict:
    """The numeric part of :func:`select`: ``π`` from ``Q``, n draws, the unique texts.

    Parameters
    ----------
    Q : (K, N) the map's double-centred coordinates.
    method : "uniform", "ls" or "kl" (:func:`lmmap.maths.resampling.importance`).
    n : number of draws with replacement.
    random_state : int, np.random.Generator or None; seeds the draws.

    Returns
    -------
    dict with ``text_pos`` (u), ``counts`` (c), ``pi`` (``π_u``), ``weights``
    (w) and ``n_excluded`` (texts with ``π = 0``).
    """
    n = resampling.check_sample_size(n)
    check_random_state(random_state)
    pi = resampling.importance(Q, method)
    u, c, w = resampling.resample(pi, n, np.random.default_rng(random_state))
    return {"text_pos": u, "counts": c, "pi": pi[u], "weights": w, "n_excluded": resampling.n_zero_importance(pi)}


def select(mm, method: str, n: int, *, random_state=0, texts=None, unbound: bool = False, models=None,
           clip: bool = True) -> Subset:
    """Resample n texts of ``mm``'s text set by importance ``method`` (uniform | ls | kl).

    Parameters
    ----------
    mm : a :class:`lmmap.ModelMap` on the full text set (its ``Q`` gives ``π``,
        its threshold is recorded). A :class:`lmmap.Store` is accepted too and
        handed to :func:`select_from_store` (with ``models`` and ``clip``).
    method : "uniform", "ls" (``π ∝ ‖Q^(s)‖²``) or "kl" (``π ∝ sqrt(Σ_ij (q_i − q_j)⁴)``).
    n : number of draws with replacement (a positive integer).
    random_state : int, np.random.Generator or None; seeds the draws (same value, same subset).
    texts : the map's :class:`lmmap.TextSet` when ``mm`` does not know its text set
        (``ModelMap(names, L)``); the subset records its identity and text ids.
    unbound : with a bare map and no ``texts``: make a subset that records no text set
        (text ids are the positions 0..N-1). A store then accepts it only with
        ``allow_other_texts=True``. Without ``texts`` or ``unbound`` such a
        selection is refused, so that a subset never silently indexes another store's texts.
    models, clip : for a store only (see :func:`select_from_store`).

    Returns
    -------
    Subset
    """
    from lmmap.map import ModelMap

    if not isinstance(mm, ModelMap):
        if unbound:
            raise InputError("{unbound=True} applies to a bare ModelMap; a subset selected from a store records its "
                             "text set", params=("unbound",))
        return select_from_store(mm, method, n, random_state=random_state, models=models, clip=clip)
    method = resampling.check_method(method)
    n = resampling.check_sample_size(n)
    check_random_state(random_state)
    if models is not None:
        raise InputError("models applies to a store; a ModelMap already fixes its models", params=("models",))
    if mm.w is not None or mm.L.shape[1] != mm.n_texts:
        raise InputError(
            f"select needs the map on the full text set (N = {mm.n_texts}); this one is built on "
            f"{mm.L.shape[1]} resampled texts", params=("mm",),
        )
    if texts is not None and mm.text_set_id is not None and texts.identity != mm.text_set_id:
        raise InputError("texts is not the text set the map was built on (their identities differ); give the map's "
                         "own texts", params=("texts",))
    if texts is None and mm.text_set_id is None and not unbound:
        raise InputError(
            "this map does not know its text set (it was built from bare vectors), so the subset could not "
            "say which texts its positions index: pass {texts=TextSet} (the texts the map's columns score), "
            "build the map with ModelMap.from_store, or pass {unbound=True} to make a subset that a store "
            "accepts only with {allow_other_texts=True}", params=("texts", "unbound", "allow_other_texts"),
        )
    if texts is not None and len(texts) != mm.n_texts:
        raise InputError(f"texts has {len(texts)} texts but the map has N = {mm.n_texts}", params=("texts",))
    drawn = draw_subset(mm.Q, method, n, random_state)
    pos = drawn["text_pos"]
    if texts is not None:
        index = np.asarray(texts.index)[pos]
        kept = texts.subset(pos).texts
    else:
        index, kept = pos, None
    return Subset(
        text_pos=pos,
        text_index=index,
        counts=drawn["counts"],
        pi=drawn["pi"],
        weights=drawn["weights"],
        method=method,
        n=n,
        random_state=random_state,
        text_set_id=mm.text_set_id if mm.text_set_id is not None else (texts.identity if texts is not None else None),
        unbound=mm.text_set_id is None and texts is None,
        n_texts=int(mm.n_texts),
        models=list(mm.names),
        threshold=mm.threshold,
        n_excluded=drawn["n_excluded"],
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        texts=kept,
    )


def select_from_store(store, method: str, n: int, *, random_state=0, models=None, clip: bool = True) -> Subset:
    """:func:`select` on the full map of ``models`` in ``store`` (default: the models scored on every text).

    The map is ``ModelMap.from_store(store, models=models, clip=clip)``: clipped
    at its 2nd percentile unless ``clip=False`` (the subset then records no
    threshold). The subset records the store's text set and the texts' ids.
    """
    from lmmap.map import ModelMap

    method = resampling.check_method(method)
    n = resampling.check_sample_size(n)
    check_random_state(random_state)  # before the map is built: a bad seed costs nothing
    mm = ModelMap.from_store(store, models=None if models is None else list(models), clip=clip)
    return select(mm, method, n, random_state=random_state, texts=store.texts)

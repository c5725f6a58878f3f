"""Bootstrap standard errors of the distance estimates ``g̃_ij`` (and so of KL).

Pure numpy. A map's distances are a weighted sum over draws of texts: the
full map is N draws, each text once (``w = 1``); a resampled map is n draws
with counts ``c`` on d unique texts and ``w = c / (nπ)``. Resampling those n
draws with replacement gives new counts ``c* ~ Multinomial(n, c/n)`` and
weights ``w* = w·c*/c``; the spread of ``g̃`` over R such replicates is its
standard error. For the full map this is the sampling error of ``D_N``
(SPEC §5, ``τ_unif,N``); for a resampled map, the resampling error given
``D_N``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from lmmap.maths.geometry import check_matrix, distances_from_gram, squared_distances, weighted_features
from lmmap.exceptions import InputError


# Each replicate is a full computation (a K×K matrix, a map): an absurd R would run for days rather than fail.
MAX_REPLICATES = 100_000


def check_replicates(R, minimum: int = 2, name: str = "R") -> int:
    """``R`` replicates (bootstrap redraws, resampled maps, simulation trials) as an int in [minimum, MAX_REPLICATES].

    The default minimum is 2: one replicate has no spread to measure. ``name``
    is the parameter named in the error (the CLI shows its flag). The range and
    the message are the spec's (:mod:`lmmap.params`, ``R``).
    """
    from lmmap.params import check

    if minimum == 2:
        return check("R", R, what=name)
    return check("R", R, what=name, interval=(minimum, MAX_REPLICATES), note="")


def check_counts(counts, d: int) -> np.ndarray:
    """The draw counts ``c`` of d texts: d positive integers (default, ``None``: 1 each, the full text set)."""
    c = np.ones(d, dtype=np.int64) if counts is None else np.asarray(counts, dtype=np.int64)
    if c.shape != (d,) or np.any(c <= 0):
        raise InputError(f"counts must be {d} positive integers, one per text", params=("counts", "d"))
    return c


def bootstrap_se(statistic: Callable[[np.ndarray], np.ndarray], counts: np.ndarray, R: int, random_state=0) -> np.ndarray:
    """Standard error of ``statistic(scale)`` over R redraws of the n draws behind ``counts`` (:func:`check_counts`).

    Each replicate draws ``c* ~ Multinomial(n, c/n)`` and passes the per-text
    multipliers ``scale = c*/c`` (text t's term of a weighted sum is scaled by
    them). Replicates are folded into running moments (Welford), never
    stacked, so memory stays that of one statistic whatever R.
    """
    R = check_replicates(R)
    c = np.asarray(counts, dtype=np.int64)
    n = int(c.sum())
    rng = np.random.default_rng(random_state)
    p = c / n
    mean = m2 = None
    for r in range(1, R + 1):
        G = statistic(rng.multinomial(n, p) / c)
        if mean is None:
            mean, m2 = np.zeros_like(G), np.zeros_like(G)
        delta = G - mean
        mean += delta / r
        m2 += delta * (G - mean)
    return np.sqrt(m2 / (R - 1))


def bootstrap_sq_distance_se(Q, w=None, counts=None, R: int = 100, random_state=0) -> np.ndarray:
    """Standard error (K×K) of ``g̃_ij`` by resampling the draws behind the map R times.

    ``counts`` are the draw counts ``c`` of the texts (default: 1 each, the
    full text set). Memory stays O(K²) (:func:`bootstrap_se`).
    """
    R = check_replicates(R)
    X = weighted_features(check_matrix(Q, "Q"), w)
    c = check_counts(counts, X.shape[1])
    return bootstrap_se(lambda scale: squared_distances(X, scale), c, R, random_state)


def cross_sq_distance_se(X_rows, X_cols, counts=None, R: int = 100, random_state=0) -> np.ndarray:
    """Bootstrap standard error (m×K) of ``g̃_ij`` between two sets of models on the same d texts.

    ``X_rows``, ``X_cols``: features ``Q̃ W^{1/2}`` (m×d, K×d); ``counts``: the
    draw counts ``c`` of the d texts (default 1 each: the full text set);
    ``random_state`` seeds the replicates. Each replicate redraws the n draws,
    ``c* ~ Multinomial(n, c/n)``, so text t's term is scaled by ``c*_t / c_t`` —
    the same scheme and the same draws as :func:`bootstrap_sq_distance_se` (the
    m×K block of its matrix for the stacked rows), but O(m·K·d) per replicate
    instead of O((m + K)²·d): only the new-versus-existing block is computed.
    Used for models placed into a map (:func:`lmmap.analyses.place.place`).
    """
    X_rows = np.asarray(X_rows, dtype=np.float64)
    X_cols = np.asarray(X_cols, dtype=np.float64)
    d = X_rows.shape[1]
    if X_cols.shape[1] != d:
        raise InputError(f"the two sets of models have {d} and {X_cols.shape[1]} texts: they must share the map's texts",
                         params=("X_rows", "X_cols"))
    c = check_counts(counts, d)
    # The squares do not depend on the replicate: weighting them by the multipliers
    # costs O((m + K)·d) per replicate, against the O(m·K·d) cross product.
    sq_rows, sq_cols = X_rows * X_rows, X_cols * X_cols

    def replicate(scale: np.ndarray) -> np.ndarray:
        return distances_from_gram(sq_rows @ scale, sq_cols @ scale, (X_rows * scale) @ X_cols.T)

    return bootstrap_se(replicate, c, R, random_state)

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

import numpy as np

from .core import weighted_features
from .exceptions import InputError


def check_replicates(R) -> int:
    """``R`` bootstrap replicates: an integer ≥ 2 (one replicate has no spread to measure)."""
    if isinstance(R, bool) or not isinstance(R, (int, np.integer)) or R < 2:
        raise InputError(f"R must be ≥ 2 bootstrap replicates (a standard error needs at least two), got {R!r}; e.g. --R 100")
    return int(R)


def _replicate_sq_distances(X: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``G`` for features ``X`` (K×d, already × sqrt(w)) with per-text multipliers ``scale``."""
    Xs = X * np.sqrt(scale)[None, :]
    gram = Xs @ Xs.T
    a = np.diag(gram)
    G = a[:, None] + a[None, :] - 2.0 * gram
    np.maximum(G, 0.0, out=G)
    np.fill_diagonal(G, 0.0)
    return G


def bootstrap_sq_distance_se(Q, w=None, counts=None, R: int = 100, seed=0) -> np.ndarray:
    """Standard error (K×K) of ``g̃_ij`` by resampling the draws behind the map R times.

    ``counts`` are the draw counts ``c`` of the texts (default: 1 each, the
    full text set). Memory stays O(K²): replicates are folded into running
    moments (Welford), never stacked.
    """
    R = check_replicates(R)
    Q = np.asarray(Q, dtype=np.float64)
    d = Q.shape[1]
    c = np.ones(d, dtype=np.int64) if counts is None else np.asarray(counts, dtype=np.int64)
    if c.shape != (d,) or np.any(c <= 0):
        raise InputError(f"counts must be {d} positive integers, one per text")
    n = int(c.sum())
    X = weighted_features(Q, w)
    rng = np.random.default_rng(seed)
    mean = np.zeros((Q.shape[0], Q.shape[0]))
    m2 = np.zeros_like(mean)
    p = c / n
    for r in range(1, R + 1):
        c_star = rng.multinomial(n, p)
        G = _replicate_sq_distances(X, c_star / c)
        delta = G - mean
        mean += delta / r
        m2 += delta * (G - mean)
    return np.sqrt(m2 / (R - 1))

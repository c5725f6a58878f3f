"""Text importance and weighted resampling (SPEC §4; resampling paper §3).

Pure numpy. Given the double-centred ``Q`` (K×N) of the models that define a
map, a method gives resampling probabilities ``π`` (N,); ``resample`` draws n
texts with replacement and returns the d unique ones with their counts ``c``
and weights ``w_t = c(u_t) / (n π_{u_t})`` (so ``E[Σ w] = N``).
"""

from __future__ import annotations

import numbers

import numpy as np

METHODS = ("uniform", "ls", "kl")


def ls_scores(Q) -> np.ndarray:
    """LS importance ``‖Q^(s)‖²`` of each text (∝ variance of its log-likelihood across models)."""
    Q = np.asarray(Q, dtype=np.float64)
    return np.einsum("ks,ks->s", Q, Q)


def kl_scores(Q) -> np.ndarray:
    """KL importance ``sqrt(Σ_{i,j} (q_i(x_s) − q_j(x_s))⁴)`` of each text in O(K).

    Each column ``a`` of a double-centred Q sums to 0 over models, so
    ``Σ_{i,j}(a_i − a_j)⁴ = 2K·Σa⁴ + 6(Σa²)²`` (the odd cross terms vanish).
    """
    Q = np.asarray(Q, dtype=np.float64)
    K = Q.shape[0]
    a = Q - Q.mean(axis=0, keepdims=True)  # exact even if Q's columns drift from 0
    s2 = np.einsum("ks,ks->s", a, a)
    s4 = np.einsum("ks,ks->s", a * a, a * a)
    return np.sqrt(np.maximum(2.0 * K * s4 + 6.0 * s2 * s2, 0.0))


def importance(Q, method: str) -> np.ndarray:
    """Resampling probabilities ``π`` (summing to 1) for ``method`` in uniform | ls | kl.

    Texts that every model scores alike get ``π_s = 0`` under LS and KL: they
    carry no information about distances and are never drawn.
    """
    Q = np.asarray(Q, dtype=np.float64)
    if Q.ndim != 2:
        raise ValueError(f"Q must be a 2-D (models × texts) array, got shape {Q.shape}")
    method = method.lower()
    if method == "uniform":
        scores = np.ones(Q.shape[1])
    elif method == "ls":
        scores = ls_scores(Q)
    elif method == "kl":
        scores = kl_scores(Q)
    else:
        raise ValueError(f"unknown importance method {method!r}: choose one of {', '.join(METHODS)}")
    total = scores.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError(
            f"{method} importance is zero for every text: all models score every text alike, "
            "so there is nothing to resample from"
        )
    return scores / total


def check_sample_size(n) -> int:
    """Validate a resample size n: a positive integer (numpy integers and integral floats accepted)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Real) or n != int(n):
        raise ValueError(f"the resample size n must be a positive integer, got {n!r}")
    if int(n) <= 0:
        raise ValueError(f"the resample size n must be a positive integer, got {n!r}")
    return int(n)


def resample(pi, n: int, rng=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw n texts with replacement with probabilities ``π``.

    Returns ``(u, c, w)``: the d sorted unique text indices, their counts
    (``Σc = n``) and weights ``w_t = c(u_t) / (n π_{u_t})``.
    """
    n = check_sample_size(n)
    pi = np.asarray(pi, dtype=np.float64)
    rng = np.random.default_rng(rng)
    counts = rng.multinomial(n, pi)
    u = np.flatnonzero(counts)
    c = counts[u]
    return u, c, c / (n * pi[u])


def expected_unique(pi, n) -> np.ndarray:
    """``E[d] = Σ_s (1 − (1 − π_s)^n)``, the expected number of unique texts in n draws (vectorised over n)."""
    pi = np.asarray(pi, dtype=np.float64)
    n = np.atleast_1d(np.asarray(n, dtype=np.float64))
    return (1.0 - np.power(1.0 - pi[None, :], n[:, None])).sum(axis=1)

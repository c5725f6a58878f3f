"""Text importance and weighted resampling (SPEC §4; resampling paper §3, Appendix C).

Pure numpy, arrays in and arrays out. Given the double-centred ``Q`` (K×N) of
the models that define a map, a method gives resampling probabilities ``π``
(N,); :func:`resample` draws n texts with replacement and returns the d
unique ones with their counts ``c`` and weights ``w_t = c(u_t) / (n π_{u_t})``
(so ``E[Σ w] = N`` when every ``π_s > 0``).

The error of a resampled estimate has a closed form (Appendix C, Lemma 2):
:func:`distance_error` is ``E[Σ_ij (g̃_ij − g_ij)²]``, minimised by KL
sampling (Proposition 1), and :func:`gram_error` is
``E‖Q̃ W Q̃ᵀ − Q Qᵀ‖²_F``, minimised by LS sampling (Drineas & Kannan).
Both are O(KN) per text set plus one K×K Gram product, never a pair loop.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np

from lmmap.maths.geometry import check_matrix, squared_distances
from lmmap.exceptions import InputError, LmmapWarning
from lmmap.params import PARAMS, check, python_message

METHODS = ("uniform", "ls", "kl")

# A text whose importance is below this fraction of the largest one is one
# that every model scores alike (its column of Q is 0 up to rounding): it
# carries no information about distances, and a rounding-level π would give it
# an absurd weight 1/(nπ) if it were ever drawn.
ZERO_IMPORTANCE_RTOL = 1e-12


# Rows of a float32 Q converted to float64 at a time (a map of 10⁵ models: no 8 GB float64 copy of Q).
_BLOCK_BYTES = 64 << 20


def _row_blocks(Q):
    """``Q`` in float64 blocks of rows: all of it at once when it is float64 already."""
    Q = np.asarray(Q)
    if Q.dtype == np.float64:
        yield Q
        return
    step = max(1, _BLOCK_BYTES // (8 * max(Q.shape[1], 1)))
    for s in range(0, Q.shape[0], step):
        yield np.asarray(Q[s:s + step], dtype=np.float64)


def ls_scores(Q) -> np.ndarray:
    """LS importance ``‖Q^(s)‖²`` of each text (∝ variance of its log-likelihood across models)."""
    return sum(np.einsum("ks,ks->s", B, B) for B in _row_blocks(Q))


def kl_scores(Q) -> np.ndarray:
    """KL importance ``sqrt(A_s)``, ``A_s = Σ_{i,j} (q_i(x_s) − q_j(x_s))⁴``, of each text in O(K).

    Each column ``a`` of a double-centred Q sums to 0 over models, so
    ``Σ_{i,j}(a_i − a_j)⁴ = 2K·Σa⁴ + 6(Σa²)²`` (the odd cross terms vanish).
    """
    return np.sqrt(pairwise_fourth_moments(Q))


def pairwise_fourth_moments(Q) -> np.ndarray:
    """``A_s = Σ_{i,j} (q_i(x_s) − q_j(x_s))⁴`` for every text, in O(K) each (see :func:`kl_scores`)."""
    Q = np.asarray(Q) if np.asarray(Q).dtype == np.float32 else np.asarray(Q, dtype=np.float64)
    K = Q.shape[0]
    # Differences are invariant to a per-column shift, so re-centring makes the
    # identity exact even where Q's columns drift from 0 by rounding.
    mean = sum(B.sum(axis=0) for B in _row_blocks(Q)) / K
    s2 = np.zeros(Q.shape[1])
    s4 = np.zeros(Q.shape[1])
    for B in _row_blocks(Q):
        a2 = (B - mean) ** 2
        s2 += a2.sum(axis=0)
        s4 += np.einsum("ks,ks->s", a2, a2)
    return np.maximum(2.0 * K * s4 + 6.0 * s2 * s2, 0.0)


def importance_scores(Q, method: str) -> np.ndarray:
    """Unnormalised importance of each text: 1 (uniform), ``‖Q^(s)‖²`` (ls) or ``sqrt(A_s)`` (kl)."""
    if not (getattr(Q, "dtype", None) == np.float32 and np.ndim(Q) == 2):  # a large map's float32 Q: not copied
        Q = check_matrix(Q, "Q")
    m = check_method(method)
    if m == "uniform":
        return np.ones(Q.shape[1])
    if m == "ls":
        return ls_scores(Q)
    return kl_scores(Q)


def check_method(method) -> str:
    """Validate an importance method name (case-insensitive); returns it in lower case."""
    m = str(method).lower()
    if m not in METHODS:
        raise InputError(f"unknown importance method {method!r}: choose one of {', '.join(METHODS)}", params=("method",))
    return m


def importance(Q, method: str) -> np.ndarray:
    """Resampling probabilities ``π`` (summing to 1) for ``method`` in uniform | ls | kl.

    Texts that every model scores alike (importance 0, or below
    ``ZERO_IMPORTANCE_RTOL`` of the largest) get ``π_s = 0`` under LS and KL:
    they add nothing to any distance ``g_ij`` and are never drawn;
    :func:`n_zero_importance` counts them.
    """
    scores = importance_scores(Q, method)
    if not np.all(np.isfinite(scores)):
        raise InputError(f"{method} importance is not finite for some text: Q holds NaN or inf values", params=("Q", "method"))
    top = scores.max()
    if top <= 0:
        raise InputError(
            f"{method} importance is zero for every text: all models score every text alike, "
            "so there is nothing to resample from", params=("method",)
        )
    scores = np.where(scores <= ZERO_IMPORTANCE_RTOL * top, 0.0, scores)
    return scores / scores.sum()


def n_zero_importance(pi) -> int:
    """How many texts have ``π_s = 0`` (never drawn)."""
    return int(np.count_nonzero(np.asarray(pi) == 0))


# n draws cost O(n) memory only through their counts, but a multinomial of more than 2^53 draws loses
# integer precision; 10^12 is far beyond any useful resample and still exact.
MAX_SAMPLE_SIZE = 10**12


def check_sample_size(n, name: str = "n") -> int:
    """Validate a resample size n: an int from 1 to :data:`MAX_SAMPLE_SIZE` (numpy integers and integral floats
    accepted); the range and the message are the spec's (:mod:`lmmap.params`), naming ``name``.

    A Python int can exceed what numpy (and a multinomial draw) handles: it is bounded before numpy sees it.
    """
    if isinstance(n, numbers.Real) and not isinstance(n, (bool, numbers.Integral)) and math.isfinite(float(n)) \
            and float(n).is_integer():
        n = int(float(n))  # 2900.0 is 2900 draws; 2.5 is refused below, as it was given
    if n is None:  # the spec lets None pass where it is a default (stability's n); here it is not
        raise InputError(f"{name} must be {PARAMS['stability_n'].allowed()}, got None", params=(name,))
    return check("stability_n", n, what=name)


def check_probabilities(pi) -> np.ndarray:
    """Validate ``π``: a finite, non-negative 1-D vector summing to 1."""
    pi = np.asarray(pi, dtype=np.float64)
    if pi.ndim != 1 or pi.size == 0:
        raise InputError(f"π must be a non-empty 1-D vector, got shape {pi.shape}", params=("pi",))
    if not np.all(np.isfinite(pi)) or np.any(pi < 0):
        raise InputError("π must be finite and non-negative", params=("pi",))
    if not np.isclose(pi.sum(), 1.0, rtol=0, atol=1e-8):
        raise InputError(f"π must sum to 1, it sums to {pi.sum()!r}", params=("pi",))
    return pi


def resample(pi, n: int, random_state=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw n texts with replacement with probabilities ``π``.

    Returns ``(u, c, w)``: the d sorted unique text indices, their counts
    (``Σc = n``) and weights ``w_t = c(u_t) / (n π_{u_t})``. One multinomial
    draw gives the counts directly: O(N), whatever n.
    """
    n = check_sample_size(n)
    pi = check_probabilities(pi)
    rng = np.random.default_rng(random_state)
    # multinomial needs Σπ ≤ 1 exactly in floating point; renormalising is harmless.
    counts = rng.multinomial(n, pi / pi.sum())
    u = np.flatnonzero(counts)
    c = counts[u]
    return u, c, c / (n * pi[u])


def expected_unique(pi, n) -> np.ndarray:
    """``E[d] = Σ_s (1 − (1 − π_s)^n)``, the expected number of unique texts in n draws (vectorised over n)."""
    pi = np.asarray(pi, dtype=np.float64)
    n = np.atleast_1d(np.asarray(n, dtype=np.float64))
    # log1p keeps (1 − π)^n accurate for tiny π.
    return -np.expm1(n[:, None] * np.log1p(-np.minimum(pi[None, :], 1.0))).sum(axis=1)


def n_for_expected_unique(pi, d: float) -> int:
    """The smallest n whose expected number of unique texts ``E[d]`` reaches ``d``.

    ``E[d]`` increases with n towards the number of texts with ``π_s > 0``;
    asking for more than that is an error.
    """
    pi = check_probabilities(pi)
    reachable = int(np.count_nonzero(pi))
    if not 0 < d < reachable:
        raise InputError(f"a target of {d} unique texts is not reachable: choose 0 < d < {reachable}", params=("d",))
    lo, hi = 1, 1
    while expected_unique(pi, hi)[0] < d:
        lo, hi = hi, hi * 2
    while lo < hi:  # bisection on a monotone function of n
        mid = (lo + hi) // 2
        if expected_unique(pi, mid)[0] >= d:
            hi = mid
        else:
            lo = mid + 1
    return lo


# -- closed-form resampling errors (Appendix C) -------------------------------------


def distance_error(Q, pi, n: int) -> float:
    """``E[Σ_ij (g̃_ij − g_ij)²] = Σ_ij Var(g̃_ij)`` for n draws with probabilities ``π`` (Lemmas 1–2).

    ``Var(g̃_ij) = (1/n)(Σ_s (q_i(x_s) − q_j(x_s))⁴ / π_s − g_ij²)``; summing over
    pairs gives ``(1/n)(Σ_s A_s/π_s − Σ_ij g_ij²)``. Texts with ``A_s > 0`` and
    ``π_s = 0`` make it infinite (the estimate is then biased, not just noisy).
    """
    Q, pi, n = check_matrix(Q, "Q"), check_probabilities(pi), check_sample_size(n)
    A = pairwise_fourth_moments(Q)
    G = squared_distances(Q)
    return (_sum_over_pi(A, pi) - float(np.sum(G * G))) / n


def gram_error(Q, pi, n: int) -> float:
    """``E‖Q̃ W Q̃ᵀ − Q Qᵀ‖²_F = (1/n)(Σ_s ‖Q^(s)‖⁴/π_s − ‖Q Qᵀ‖²_F)`` (Drineas & Kannan), minimised by LS."""
    Q, pi, n = check_matrix(Q, "Q"), check_probabilities(pi), check_sample_size(n)
    s2 = ls_scores(Q)
    gram = Q @ Q.T
    return (_sum_over_pi(s2 * s2, pi) - float(np.sum(gram * gram))) / n


def _sum_over_pi(a: np.ndarray, pi: np.ndarray) -> float:
    """``Σ_s a_s / π_s`` over texts, with 0/0 = 0 and a/0 = inf for a > 0."""
    live = pi > 0
    if np.any(a[~live] > 0):
        return float("inf")
    return float(np.sum(a[live] / pi[live]))


def resampled_squared_distances(Q, u, w) -> np.ndarray:
    """``g̃_ij = Σ_t w_t (q_i(x_{u_t}) − q_j(x_{u_t}))²`` on the columns ``u`` of the full ``Q`` (Appendix C).

    This is the estimator of Lemma 1 (unbiased for ``g_ij``). A map built
    from the subset alone re-centres its rows with the ``w``-weighted mean
    instead (SPEC §4, :meth:`lmmap.ModelMap.from_store`), which shifts it by
    ``−(Σ_t w_t δ_t)²/Σ_t w_t``, a bias of order ``g_ij / n``.
    """
    return squared_distances(check_matrix(Q, "Q")[:, np.asarray(u)], w)


# -- resample sizes that make sense for N texts ---------------------------------------

# A subset that holds this fraction of the texts saves almost nothing.
NO_REAL_SUBSET_FRACTION = 0.9


def _two_digits(x: float) -> int:
    """``x`` rounded to two significant digits, at least 1 (255 → 260, 2,900 → 2,900)."""
    if x < 1:
        return 1
    scale = 10 ** max(0, int(math.floor(math.log10(x))) - 1)
    return max(1, int(math.floor(x / scale + 0.5) * scale))


def suggested_resample_size(N: int) -> int:
    """A resample size worth trying on N texts: about N/4 (two significant digits)."""
    return _two_digits(N / 4)


def default_resample_size(N: int) -> int:
    """The default n of ``lmmap stability``: 29% of N, the paper's 2,900 draws from 10,000 texts."""
    return _two_digits(0.29 * N)


def no_real_subset_note(n: int, d: float, N: int, expected: bool = False) -> str | None:
    """A one-line note when n draws are as many as the N texts, or leave (nearly) all of them; else None.

    ``d``: the unique texts drawn (``expected``: the expected number per map).
    """
    note = _no_real_subset(n, d, N, expected)
    return None if note is None else python_message(note, ("n",))


def _no_real_subset(n: int, d: float, N: int, expected: bool) -> str | None:
    """:func:`no_real_subset_note` with its mention of n marked (``{n=75}``: ``--n 75`` on the command line)."""
    n, N = int(n), int(N)
    if N < 2 or (n < N and d < NO_REAL_SUBSET_FRACTION * N):
        return None
    about = "about " if expected else ""
    per = " per map" if expected else ""
    what = "no real subset" if d >= NO_REAL_SUBSET_FRACTION * N else "as many draws as texts"
    return (
        f"{n} draws pick {about}{d:,.0f} of the {N:,} texts{per} ({100 * d / N:.0f}%): {what}; "
        f"try {{n={suggested_resample_size(N)}}} (about N/4)"
    )


def warn_if_no_real_subset(n: int, d: float, N: int, expected: bool = False) -> str | None:
    """:func:`no_real_subset_note` as a :class:`LmmapWarning` (returns the note, or None)."""
    note = _no_real_subset(n, d, N, expected)
    if note is None:
        return None
    warnings.warn(LmmapWarning(note, params=("n",)), stacklevel=3)
    return python_message(note, ("n",))


def note_if_no_real_subset(Q, method: str, n: int, per_map: bool = True) -> str | None:
    """Warn when n draws by ``method`` from the map ``Q`` (K×N) would leave no real subset (expected d ≈ N)."""
    pi = importance(Q, method)
    d = float(expected_unique(pi, n)[0])
    return warn_if_no_real_subset(n, d, Q.shape[1], expected=per_map)

"""Sampling and resampling error of the distance estimates: the formulas (SPEC §5; resampling paper §4, Appendix D).

numpy only: arrays in, arrays out. Symbols follow the paper:

* ``g_ij = ‖q_i − q_j‖²`` on the text set ``D_N`` (``G``, K×K);
  ``g̃_ij = Σ_t w_t (q_i(x_{u_t}) − q_j(x_{u_t}))²`` from n texts drawn with
  replacement with probabilities ``π``, ``w_t = c(u_t)/(nπ_{u_t})`` — the
  estimator of Lemma 1, on the columns of the full ``Q`` (Appendices C–D).
* error of one estimate: ``e_ij = (g̃_ij − g_ij)/max(g_ij, ε₀)`` (relative) or
  ``(g̃_ij − g_ij)/C``, ``C = sqrt(Σ_ij g_ij²/K²)`` (absolute, §4.2).
* ``τ²_{M,n} = (1/(K²R)) Σ_r Σ_ij (e_ij^(r))²`` (resampling error of method M
  at size n); ``τ_unif,N`` is the bootstrap sampling error of ``D_N``.
* ``σ̂_{M,n} = sqrt(τ²_unif,N + τ²_{M,n})`` (error against the population),
  ``κ̂_d = τ_unif,d`` (baseline: d texts drawn from the population) and its
  theoretical curve ``sqrt(N/d)·κ̂_N``.

Two ways to get ``τ²``:

* **simulate**: R resampling trials (:func:`trial_path` is one; the runner
  over trials is :func:`lmmap.analyses.errors.simulate_tau2`). Each trial walks
  the whole n-grid along one path of draws: the counts at ``n_{k+1}`` are the
  counts at ``n_k`` plus ``n_{k+1} − n_k`` fresh draws, and the unnormalised
  Gram matrix ``S = Q diag(c/π) Qᵀ`` is linear in the counts, so each grid
  point adds only the Gram of its new texts (``g̃ = (S_ii + S_jj − 2S_ij)/n``).
  Every grid point still sees R independent trials; the paths only make
  neighbouring grid points positively correlated (smoother curves). The Gram
  of each increment runs in float32 when that rounding is shown to be far
  below the errors being measured (:func:`float32_rounding_error`) and is
  accumulated in float64.
* **analytic** (:func:`analytic_tau2`): Lemma 2 gives
  ``Var(g̃_ij) = (1/n)(Σ_s (q_i(x_s) − q_j(x_s))⁴/π_s − g_ij²)`` and Lemma 1
  ``E[g̃_ij] = g_ij``, so ``E[τ²_{M,n}] = V_M/n`` exactly, with
  ``V_M = (1/K²) Σ_ij (F_ij − g_ij²)/max(g_ij, ε₀)²``. ``F`` comes from three
  K×K Gram-like products of powers of Q (:func:`fourth_power_sums`), never a
  K×K×N tensor; ``E[d] = Σ_s (1 − (1 − π_s)^n)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lmmap.maths.randomness import seed_sequence
from lmmap.exceptions import InputError
from lmmap.maths.geometry import check_matrix, squared_distances
from lmmap.params import PARAMS, check
from lmmap.maths.resampling import MAX_SAMPLE_SIZE

EPS0 = 1e-3
ERRORS = ("relative", "absolute")
PRECISIONS = ("auto", "float32", "float64")
DEFAULT_TARGETS = (500, 2500, 5000, 7500)  # the paper's, for N = 10,000; see default_targets(N)
# Table 1's default targets as fractions of N: the paper's 500, 2,500, 5,000, 7,500 of 10,000.
TARGET_FRACTIONS = (0.05, 0.25, 0.5, 0.75)
# float32 is used only if its rounding error in e is at most this fraction of
# the smallest τ being measured: it then changes τ² by at most its square (0.25%).
FLOAT32_TOLERANCE = 0.05
# Rows per block of the K×K error sums: a 128×K float64 slab stays in cache.
_BLOCK = 128
# ε₀ enters squared (e_ij² = …/max(g_ij, ε₀)²): below ~1e-154 that square underflows to 0 and τ² turns NaN,
# above ~1e154 to inf; these bounds keep every square a normal float.
EPS0_RANGE = (1e-150, 1e150)
# Each size of an n-grid is one step of every trial (a multinomial over N texts and a K×K sum): a grid of
# millions of sizes runs for days, and one written as a range (1:10**12:1) would not even fit in memory.
MAX_GRID_SIZES = 10_000


# ----------------------------------------------------------------------------- checks


def as_q(Q) -> np.ndarray:
    """``Q`` as a finite K×N float64 matrix with K ≥ 2."""
    return check_matrix(Q, "Q", min_rows=2, finite=True)


def check_option(value, choices: Sequence[str], name: str) -> str:
    """``value`` (case-insensitive) if it is one of ``choices``; ``name`` is the parameter it came from.

    A parameter of the spec (:mod:`lmmap.params`: precision, mode, kappa_source) is checked there, in its
    words; the spec's choices are these (tests/test_params.py holds them equal).
    """
    v = str(value).lower()
    if v not in choices:
        if name in PARAMS and PARAMS[name].choices == tuple(choices):
            check(name, value)
        raise InputError(f"{name} must be one of {', '.join(choices)}, got {value!r}", params=(name,))
    return v


def check_error(error: str) -> str:
    """The error type of ``e_ij``: relative or absolute (case-insensitive)."""
    return check_option(error, ERRORS, "error")


def check_eps0(eps0) -> float:
    """``ε₀`` of the relative error: a finite number in :data:`EPS0_RANGE` (the spec's ``eps0``)."""
    return check("eps0", eps0)


def check_n_grid(n_grid, name: str = "n_grid") -> np.ndarray:
    """A sorted array of distinct positive integer resample sizes (``name``: the parameter, for messages)."""
    try:
        arr = np.asarray(list(n_grid) if not isinstance(n_grid, np.ndarray) else n_grid, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a list of positive integers, got {n_grid!r}", params=(name,)) from None
    if arr.size == 0:
        raise InputError(f"{name} is empty: give at least one resample size", params=(name,))
    if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)) or np.any(arr < 1):
        bad = arr[~(np.isfinite(arr) & (arr == np.round(arr)) & (arr >= 1))][:5]
        raise InputError(f"{name} must be positive integers (resample sizes), got {bad}", params=(name,))
    if arr.max() > MAX_SAMPLE_SIZE:
        raise InputError(f"{name} has a resample size of {arr.max():.0f} draws; give sizes of at most "
                         f"{MAX_SAMPLE_SIZE:,}", params=(name,))
    out = np.unique(arr.astype(np.int64))
    if out.size > MAX_GRID_SIZES:
        raise InputError(f"{name} has {out.size:,} resample sizes; give at most {MAX_GRID_SIZES:,} (each is a step "
                         "of every trial)", params=(name,))
    return out


# ----------------------------------------------------------------------------- grids


def _round_sig(x: float, digits: int = 2) -> int:
    """``x`` rounded to ``digits`` significant digits (at least 1): 765 → 770, 51 → 51, 7,500 → 7,500."""
    if x < 1:
        return 0
    scale = 10 ** max(0, int(math.floor(math.log10(x))) + 1 - digits)
    return int(math.floor(x / scale + 0.5) * scale)


def default_n_grid(N: int) -> np.ndarray:
    """Resample sizes 1..9 × each power of ten from 10 up to N, and N itself.

    For N = 10,000 this is the paper's grid (10..90, 100..900, 1,000..10,000);
    it grows with N (N = 100,000 adds 20,000..100,000) and shrinks with it
    (N = 300: 10..90, 100, 200, 300). Below N = 20 it starts at 1.
    """
    if N < 1:
        raise InputError(f"N must be positive, got {N}", params=("N",))
    start = 1 if N < 20 else 10
    grid, decade = [], start
    while decade <= N:
        grid.extend(k * decade for k in range(1, 10) if k * decade <= N)
        decade *= 10
    return np.unique(np.append(np.asarray(grid, dtype=np.int64), N))


def default_targets(N: int) -> np.ndarray:
    """Table 1's default target d: 5%, 25%, 50% and 75% of N, to two significant digits.

    N = 10,000 gives the paper's 500, 2,500, 5,000, 7,500; N = 1,020 gives
    51, 260, 510, 770. Targets that round to 0 or reach N are left out.
    """
    t = sorted({_round_sig(f * N) for f in TARGET_FRACTIONS})
    return np.asarray([d for d in t if 0 < d < N], dtype=np.int64)


def split_targets(targets, N: int) -> tuple[np.ndarray, np.ndarray]:
    """``(targets below N, targets ≥ N)``: the second can never be matched and get N/A in Table 1."""
    t = check_n_grid(targets, "targets")
    return t[t < N], t[t >= N]


def check_targets(targets, N: int, strict: bool = True) -> np.ndarray:
    """Target unique-text counts d for Table 1: integers with 0 < d < N.

    A target d ≥ N can never be matched (``σ̂ ≥ τ_unif,N > κ̂_d``); with
    ``strict=False`` such targets are dropped (:func:`split_targets` says which).
    """
    ok, dropped = split_targets(targets, N)
    if dropped.size and strict:
        raise InputError(f"target d = {int(dropped[0])} is not below N = {N}: no resampled map can match a baseline "
                         "of d ≥ N texts", params=("targets",))
    return ok


# ----------------------------------------------------------------------------- pairwise errors


def error_scale(G, error: str = "relative", eps0: float = EPS0):
    """The denominator of ``e_ij``: ``max(g_ij, ε₀)`` (K×K, relative) or the scalar ``C`` (absolute)."""
    error = check_error(error)
    G = np.asarray(G, dtype=np.float64)
    if error == "relative":
        return np.maximum(G, check_eps0(eps0))
    C = math.sqrt(float(np.mean(G * G)))
    if C == 0:
        raise InputError("all distances are 0 (every model identical): the absolute error is undefined", params=("error",))
    return C


def pair_errors(G_tilde, G, error: str = "relative", eps0: float = EPS0) -> np.ndarray:
    """``e_ij = (g̃_ij − g_ij)/max(g_ij, ε₀)`` or ``(g̃_ij − g_ij)/C`` (K×K)."""
    G = np.asarray(G, dtype=np.float64)
    return (np.asarray(G_tilde, dtype=np.float64) - G) / error_scale(G, error, eps0)


def mean_square_error(G_tilde, G, error: str = "relative", eps0: float = EPS0) -> float:
    """``(1/K²) Σ_ij e_ij²`` for one estimate ``G̃`` of ``G``."""
    e = pair_errors(G_tilde, G, error, eps0)
    return float(np.mean(e * e))


# ----------------------------------------------------------------------------- analytic (Lemma 2)


def inverse_pi(pi: np.ndarray) -> np.ndarray:
    """``1/π_s``, with 0 where ``π_s = 0``."""
    # A text with π_s = 0 is never drawn; under LS/KL its column of Q is 0, so
    # it adds nothing to F either (0/0 := 0).
    out = np.zeros_like(pi)
    live = pi > 0
    out[live] = 1.0 / pi[live]
    return out


def fourth_power_sums(Q, pi) -> np.ndarray:
    """``F_ij = Σ_s (q_i(x_s) − q_j(x_s))⁴ / π_s`` for all pairs (K×K), in O(K²N).

    ``(a − b)⁴ = a⁴ − 4a³b + 6a²b² − 4ab³ + b⁴``, so with ``V = diag(1/π)``
    ``F = f 1ᵀ + 1 fᵀ − 4(Q³VQᵀ + Q V Q³ᵀ) + 6 Q²VQ²ᵀ`` (powers elementwise,
    ``f = Q⁴ 1/π``): two K×K×N products, no pair loop. Float64: the terms
    cancel for close models.
    """
    Q = as_q(Q)
    pi = np.asarray(pi, dtype=np.float64)
    if pi.shape != (Q.shape[1],):
        raise InputError(f"pi must have one entry per text ({Q.shape[1]}), got shape {pi.shape}", params=("pi",))
    v = inverse_pi(pi)
    # Distances do not change under a shift of each column; re-centring keeps
    # the powers small and the cancellation mild.
    Q = Q - Q.mean(axis=0, keepdims=True)
    Q2 = Q * Q
    Q2v = Q2 * v
    f = np.einsum("ks,ks->k", Q2v, Q2)
    A = (Q2v * Q) @ Q.T  # Q³ V Qᵀ
    F = f[:, None] + f[None, :] - 4.0 * (A + A.T) + 6.0 * (Q2v @ Q2.T)
    np.maximum(F, 0.0, out=F)
    np.fill_diagonal(F, 0.0)
    return F


def distance_variance(Q, pi, n: int, G=None) -> np.ndarray:
    """``Var(g̃_ij) = (F_ij − g_ij²)/n`` (Lemma 2), K×K."""
    if n < 1:
        raise InputError(f"n must be a positive integer, got {n}", params=("n",))
    G = squared_distances(Q) if G is None else np.asarray(G, dtype=np.float64)
    V = fourth_power_sums(Q, pi) - G * G
    np.maximum(V, 0.0, out=V)
    return V / n


def unit_tau2(Q, pi, error: str = "relative", eps0: float = EPS0, G=None) -> float:
    """``V_M = n·E[τ²_{M,n}] = (1/K²) Σ_ij (F_ij − g_ij²)/scale_ij²``: τ² of one draw."""
    G = squared_distances(Q) if G is None else np.asarray(G, dtype=np.float64)
    var1 = distance_variance(Q, pi, 1, G)
    scale = error_scale(G, error, eps0)
    return float(np.mean(var1 / (scale * scale)))


def analytic_tau2(Q, pi, n_grid, error: str = "relative", eps0: float = EPS0, G=None) -> np.ndarray:
    """``E[τ²_{M,n}] = V_M / n`` for every n of ``n_grid`` (exact given ``D_N``)."""
    n = check_n_grid(n_grid)
    return unit_tau2(Q, pi, error, eps0, G) / n


# ----------------------------------------------------------------------------- simulation: precision and one trial


def float32_rounding_error(Q, error: str = "relative", eps0: float = EPS0, G=None) -> float:
    """RMS over pairs of the error float32 Gram arithmetic adds to ``e_ij`` (for all N texts at once).

    Compares ``G`` from a float32 Gram with the float64 one; the relative error
    divides by ``max(g_ij, ε₀)``, so near-identical models are where float32
    would fail, and this measures exactly that.
    """
    Q = as_q(Q)
    G = squared_distances(Q) if G is None else G
    # Not clipped at 0: the simulation's float32 estimates are not either.
    G32 = squared_distances(Q, dtype=np.float32, nonnegative=False)
    d = (G32 - G) / error_scale(G, error, eps0)
    return float(np.sqrt(np.mean(d * d)))


def choose_precision(Q, precision: str = "auto", error: str = "relative", eps0: float = EPS0,
                     smallest_tau: float | None = None, G=None) -> tuple[str, float]:
    """The Gram dtype for the simulation and the float32 rounding error in ``e`` it was judged on.

    ``auto``: float32 when its RMS rounding error in ``e`` (:func:`float32_rounding_error`)
    is at most ``FLOAT32_TOLERANCE``·``smallest_tau`` — then it moves τ² by
    less than 0.25% — else float64.
    """
    precision = check_option(precision, PRECISIONS, "precision")
    rounding = float32_rounding_error(Q, error, eps0, G)
    if precision != "auto":
        return precision, rounding
    ok = smallest_tau is not None and rounding <= FLOAT32_TOLERANCE * smallest_tau
    return ("float32" if ok else "float64"), rounding


def _sum_sq_errors(S: np.ndarray, n: int, B: np.ndarray, inv_scale) -> float:
    """``Σ_ij e_ij²`` with ``g̃ = (S_ii + S_jj − 2S_ij)/n`` and ``e = g̃·inv_scale − B``.

    ``B = G·inv_scale``. Only the row blocks' upper parts are formed (e is
    symmetric, its diagonal 0), each block small enough to stay in cache.
    This is :func:`lmmap.maths.geometry.distances_from_gram` fused, in place, into the
    error sum: the hot loop of the simulation, run once per trial and grid
    point, so it never allocates a K×K matrix of distances.
    """
    K = S.shape[0]
    inv_n = 1.0 / n
    a = np.diagonal(S) * inv_n
    scalar = np.ndim(inv_scale) == 0
    total = 0.0
    for r0 in range(0, K, _BLOCK):
        r1 = min(r0 + _BLOCK, K)
        b = r1 - r0
        T = S[r0:r1, r0:] * (-2.0 * inv_n)
        T += a[r0:r1, None]
        T += a[None, r0:]
        T *= inv_scale if scalar else inv_scale[r0:r1, r0:]
        T -= B[r0:r1, r0:]
        T[np.arange(b), np.arange(b)] = 0.0
        own, right = T[:, :b], T[:, b:]
        total += np.einsum("ij,ij->", own, own) + 2.0 * np.einsum("ij,ij->", right, right)
    return float(total)


@dataclass(frozen=True)
class PathInputs:
    """What every trial of one method shares (built once by :func:`path_inputs`)."""

    XT: np.ndarray  # N×K, rows are texts (float32 or float64)
    pi: np.ndarray
    inv_pi: np.ndarray
    n_grid: np.ndarray
    B: np.ndarray
    inv_scale: object


def check_probability_vector(pi, N: int) -> np.ndarray:
    """``π`` as a probability vector over the N texts."""
    pi = np.asarray(pi, dtype=np.float64)
    if pi.shape != (N,) or np.any(pi < 0) or not np.isclose(pi.sum(), 1.0, atol=1e-8):
        raise InputError(f"pi must be a probability vector (π) with one entry per text ({N})", params=("pi",))
    return pi


def path_inputs(Q, pi, n_grid, error: str = "relative", eps0: float = EPS0, precision: str = "float64",
                G=None) -> PathInputs:
    """The shared inputs of :func:`trial_path` for ``π`` over ``n_grid``.

    ``precision`` is the dtype of the increments' Gram products (``"auto"`` is
    resolved by :func:`choose_precision` beforehand; here it means float64).
    """
    Q = as_q(Q)
    pi = check_probability_vector(pi, Q.shape[1])
    n_grid = check_n_grid(n_grid)
    G = squared_distances(Q) if G is None else np.asarray(G, dtype=np.float64)
    inv_scale = 1.0 / error_scale(G, error, eps0)
    dtype = np.float32 if check_option(precision, PRECISIONS, "precision") == "float32" else np.float64
    return PathInputs(
        XT=np.ascontiguousarray(Q.T, dtype=dtype),
        pi=pi / pi.sum(),
        inv_pi=inverse_pi(pi),
        n_grid=n_grid,
        B=G * inv_scale,
        inv_scale=inv_scale,
    )


def trial_path(inp: PathInputs, random_state) -> tuple[np.ndarray, np.ndarray]:
    """One resampling trial along the whole n-grid: (mean e² per n, unique count d per n)."""
    rng = np.random.default_rng(random_state)
    N, K = inp.XT.shape
    S = np.zeros((K, K))
    counts = np.zeros(N, dtype=np.int64)
    tau2 = np.empty(inp.n_grid.size)
    d = np.empty(inp.n_grid.size, dtype=np.int64)
    n_prev = 0
    for k, n in enumerate(inp.n_grid):
        new = rng.multinomial(int(n) - n_prev, inp.pi)
        idx = np.flatnonzero(new)
        Xs = inp.XT[idx] * np.sqrt(new[idx] * inp.inv_pi[idx]).astype(inp.XT.dtype)[:, None]
        S += Xs.T @ Xs  # the increment's Gram (SYRK), accumulated in float64
        counts += new
        n_prev = int(n)
        d[k] = np.count_nonzero(counts)
        tau2[k] = _sum_sq_errors(S, n_prev, inp.B, inp.inv_scale) / (K * K)
    return tau2, d


# ----------------------------------------------------------------------------- σ̂, κ̂ and Table 1


def sigma_hat(tau2_unif_N, tau2) -> np.ndarray:
    """``σ̂_{M,n} = sqrt(τ²_unif,N + τ²_{M,n})``."""
    return np.sqrt(np.asarray(tau2_unif_N, dtype=np.float64) + np.asarray(tau2, dtype=np.float64))


def kappa_theory(d, N: int, kappa_N: float) -> np.ndarray:
    """The theoretical baseline ``sqrt(N/d)·κ̂_N`` (scaling law ``τ²_unif,n = (N/n)·τ²_unif,N``)."""
    d = np.asarray(d, dtype=np.float64)
    return np.sqrt(N / d) * kappa_N


def first_reaching(sigma, kappa: float) -> int | None:
    """Index of the smallest n (grid order) with ``σ̂_{M,n} ≤ κ̂_d``; None if none does."""
    hit = np.flatnonzero(np.asarray(sigma) <= kappa)
    return int(hit[0]) if hit.size else None


def analytic_n_prime(v_m: float, tau2_unif_N: float, kappa: float, n_max: int) -> int | None:
    """The smallest integer n' ≤ ``n_max`` with ``σ̂² = τ²_unif,N + V_M/n' ≤ κ̂_d²``; None if there is none."""
    gap = kappa**2 - tau2_unif_N
    if not gap > 0:  # NaN too: no n' can be shown to reach it
        return None
    ratio = v_m / gap * (1 - 1e-12)
    if not math.isfinite(ratio) or ratio > n_max:
        return None
    n_prime = max(1, math.ceil(ratio))
    return n_prime if n_prime <= n_max else None


def unique_counts(pi: np.ndarray, n: int, R: int, random_state) -> np.ndarray:
    """The number of unique texts d in each of R independent draws of n texts by ``π``."""
    rng = np.random.default_rng(seed_sequence(random_state).spawn(1)[0])
    return np.count_nonzero(rng.multinomial(n, pi / pi.sum(), size=R), axis=1)


__all__ = [
    "EPS0", "ERRORS", "PRECISIONS", "DEFAULT_TARGETS", "TARGET_FRACTIONS", "FLOAT32_TOLERANCE", "PathInputs",
    "EPS0_RANGE", "MAX_GRID_SIZES", "analytic_n_prime", "analytic_tau2", "as_q", "check_eps0", "check_error",
    "check_n_grid", "check_option",
    "check_probability_vector", "check_targets", "choose_precision", "default_n_grid", "default_targets",
    "distance_variance", "error_scale", "first_reaching", "float32_rounding_error", "fourth_power_sums",
    "inverse_pi", "kappa_theory", "mean_square_error", "pair_errors", "path_inputs", "sigma_hat",
    "split_targets", "trial_path", "unique_counts", "unit_tau2",
]

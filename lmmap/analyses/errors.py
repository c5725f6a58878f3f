"""Sampling and resampling error of the distance estimates (SPEC §5; resampling paper §4, Appendix D).

Pure numerics: arrays in, arrays (or a result object holding arrays) out, no
files. Symbols follow the paper:

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

* **simulate** (:func:`simulate_tau2`): R resampling trials. Each trial walks
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
import numbers
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from lmmap.maths.geometry import check_matrix, squared_distances
from lmmap.exceptions import InputError, LmmapError, LmmapWarning
from lmmap.maths.resampling import METHODS, check_method, expected_unique, importance

EPS0 = 1e-3
ERRORS = ("relative", "absolute")
MODES = ("simulate", "analytic", "both")
PRECISIONS = ("auto", "float32", "float64")
KAPPA_SOURCES = ("simulated", "theory")
DEFAULT_TARGETS = (500, 2500, 5000, 7500)  # the paper's, for N = 10,000; see default_targets(N)
# Table 1's default targets as fractions of N: the paper's 500, 2,500, 5,000, 7,500 of 10,000.
TARGET_FRACTIONS = (0.05, 0.25, 0.5, 0.75)
# float32 is used only if its rounding error in e is at most this fraction of
# the smallest τ being measured: it then changes τ² by at most its square (0.25%).
FLOAT32_TOLERANCE = 0.05
# Rows per block of the K×K error sums: a 128×K float64 slab stays in cache.
_BLOCK = 128


# ----------------------------------------------------------------------------- checks


def _as_q(Q) -> np.ndarray:
    return check_matrix(Q, "Q", min_rows=2, finite=True)


def check_error(error: str) -> str:
    e = str(error).lower()
    if e not in ERRORS:
        raise LmmapError(f"unknown error type {error!r}: choose relative or absolute")
    return e


def _check_choice(value: str, choices: Sequence[str], what: str) -> str:
    v = str(value).lower()
    if v not in choices:
        raise LmmapError(f"unknown {what} {value!r}: choose one of {', '.join(choices)}")
    return v


def check_n_grid(n_grid) -> np.ndarray:
    """A sorted array of distinct positive integer resample sizes."""
    try:
        arr = np.asarray(list(n_grid) if not isinstance(n_grid, np.ndarray) else n_grid, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise LmmapError(f"the n-grid must be a list of positive integers, got {n_grid!r}") from None
    if arr.size == 0:
        raise LmmapError("the n-grid is empty: give at least one resample size")
    if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)) or np.any(arr < 1):
        raise LmmapError(f"resample sizes must be positive integers, got {arr[~((arr == np.round(arr)) & (arr >= 1))][:5]}")
    return np.unique(arr.astype(np.int64))


def check_workers(workers) -> int:
    """``workers`` ≥ 1, or −1 for every core."""
    if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or (workers < 1 and workers != -1):
        raise LmmapError(f"workers must be a positive integer (or -1 for all cores), got {workers!r}")
    return (os.cpu_count() or 1) if workers == -1 else int(workers)


def check_trials(R, minimum: int = 2) -> int:
    if isinstance(R, bool) or not isinstance(R, numbers.Integral) or R < minimum:
        raise InputError(f"R must be ≥ {minimum} (resampling trials), got {R!r}; e.g. --R 100")
    return int(R)


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
        raise InputError(f"N must be positive, got {N}")
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


# ----------------------------------------------------------------------------- pairwise errors


def error_scale(G, error: str = "relative", eps0: float = EPS0):
    """The denominator of ``e_ij``: ``max(g_ij, ε₀)`` (K×K, relative) or the scalar ``C`` (absolute)."""
    error = check_error(error)
    G = np.asarray(G, dtype=np.float64)
    if error == "relative":
        if not eps0 > 0:
            raise LmmapError(f"ε₀ must be positive, got {eps0}")
        return np.maximum(G, eps0)
    C = math.sqrt(float(np.mean(G * G)))
    if C == 0:
        raise LmmapError("all distances are 0 (every model identical): the absolute error is undefined")
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


def _inverse_pi(pi: np.ndarray) -> np.ndarray:
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
    Q = _as_q(Q)
    pi = np.asarray(pi, dtype=np.float64)
    if pi.shape != (Q.shape[1],):
        raise LmmapError(f"π must have one entry per text ({Q.shape[1]}), got shape {pi.shape}")
    v = _inverse_pi(pi)
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
        raise LmmapError(f"n must be a positive integer, got {n}")
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


# ----------------------------------------------------------------------------- simulation


def float32_rounding_error(Q, error: str = "relative", eps0: float = EPS0, G=None) -> float:
    """RMS over pairs of the error float32 Gram arithmetic adds to ``e_ij`` (for all N texts at once).

    Compares ``G`` from a float32 Gram with the float64 one; the relative error
    divides by ``max(g_ij, ε₀)``, so near-identical models are where float32
    would fail, and this measures exactly that.
    """
    Q = _as_q(Q)
    G = squared_distances(Q) if G is None else G
    # Not clipped at 0: the simulation's float32 estimates are not either.
    G32 = squared_distances(Q, dtype=np.float32, nonnegative=False)
    d = (G32 - G) / error_scale(G, error, eps0)
    return float(np.sqrt(np.mean(d * d)))


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
class _PathInputs:
    XT: np.ndarray  # N×K, rows are texts (float32 or float64)
    pi: np.ndarray
    inv_pi: np.ndarray
    n_grid: np.ndarray
    B: np.ndarray
    inv_scale: object


def _trial_path(inp: _PathInputs, seed: np.random.SeedSequence) -> tuple[np.ndarray, np.ndarray]:
    """One resampling trial along the whole n-grid: (mean e² per n, unique count d per n)."""
    rng = np.random.default_rng(seed)
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


def parallel_map(fn: Callable, items: Sequence, workers: int = 1, progress: bool | Callable | None = None, description: str = "") -> list:
    """``[fn(x) for x in items]`` on ``workers`` threads, one BLAS thread each, with a progress bar.

    Threads, not processes: numpy releases the GIL in BLAS and in large
    elementwise loops, and the K×N inputs are shared, not copied. ``progress``:
    True for a rich progress bar, or a callable called once per finished item.
    """
    workers = check_workers(workers)
    items = list(items)
    with _progress(len(items), description, progress) as advance:
        if workers == 1:
            out = []
            for x in items:
                out.append(fn(x))
                advance()
            return out
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(fn, x) for x in items]
            for f in futures:
                f.add_done_callback(lambda _f: advance())
            return [f.result() for f in futures]


class _progress:
    """Context manager yielding ``advance()``: a rich progress bar, a user callback or nothing."""

    def __init__(self, total: int, description: str, progress):
        self.total, self.description, self.progress = total, description, progress
        self._bar = None

    def __enter__(self):
        if callable(self.progress):
            return self.progress
        if not self.progress:
            return lambda: None
        import threading

        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), console=Console(stderr=True), transient=False,
        )  # fmt: skip
        self._bar.__enter__()
        task = self._bar.add_task(self.description, total=self.total)
        lock = threading.Lock()

        def advance():
            with lock:
                self._bar.advance(task)

        return advance

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)
        return False


def choose_precision(Q, precision: str = "auto", error: str = "relative", eps0: float = EPS0, smallest_tau: float | None = None, G=None) -> tuple[str, float]:
    """The Gram dtype for the simulation and the float32 rounding error in ``e`` it was judged on.

    ``auto``: float32 when its RMS rounding error in ``e`` (:func:`float32_rounding_error`)
    is at most ``FLOAT32_TOLERANCE``·``smallest_tau`` — then it moves τ² by
    less than 0.25% — else float64.
    """
    precision = _check_choice(precision, PRECISIONS, "precision")
    rounding = float32_rounding_error(Q, error, eps0, G)
    if precision != "auto":
        return precision, rounding
    ok = smallest_tau is not None and rounding <= FLOAT32_TOLERANCE * smallest_tau
    return ("float32" if ok else "float64"), rounding


def simulate_tau2(
    Q,
    pi,
    n_grid,
    R: int = 100,
    error: str = "relative",
    eps0: float = EPS0,
    seed=0,
    workers: int = 1,
    precision: str = "float64",
    progress=None,
    G=None,
    description: str = "",
) -> tuple[np.ndarray, np.ndarray]:
    """R resampling trials over ``n_grid``: per-trial ``(1/K²)Σ_ij e_ij²`` and unique counts d, both R×len(grid).

    ``precision`` is the dtype of the increments' Gram products (``"auto"`` is
    resolved by :func:`choose_precision` beforehand; here it means float64).
    """
    Q = _as_q(Q)
    pi = np.asarray(pi, dtype=np.float64)
    if pi.shape != (Q.shape[1],) or np.any(pi < 0) or not np.isclose(pi.sum(), 1.0, atol=1e-8):
        raise LmmapError(f"π must be a probability vector with one entry per text ({Q.shape[1]})")
    n_grid = check_n_grid(n_grid)
    R = check_trials(R, 1)
    G = squared_distances(Q) if G is None else np.asarray(G, dtype=np.float64)
    inv_scale = 1.0 / error_scale(G, error, eps0)
    dtype = np.float32 if _check_choice(precision, PRECISIONS, "precision") == "float32" else np.float64
    inp = _PathInputs(
        XT=np.ascontiguousarray(Q.T, dtype=dtype),
        pi=pi / pi.sum(),
        inv_pi=_inverse_pi(pi),
        n_grid=n_grid,
        B=G * inv_scale,
        inv_scale=inv_scale,
    )
    seeds = _seed_sequence(seed).spawn(R)
    results = parallel_map(lambda s: _trial_path(inp, s), seeds, workers, progress, description)
    return np.stack([r[0] for r in results]), np.stack([r[1] for r in results])


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


def check_targets(targets, N: int, strict: bool = True) -> np.ndarray:
    """Target unique-text counts d for Table 1: integers with 0 < d < N.

    A target d ≥ N can never be matched (``σ̂ ≥ τ_unif,N > κ̂_d``); with
    ``strict=False`` such targets are dropped (:func:`split_targets` says which).
    """
    ok, dropped = split_targets(targets, N)
    if dropped.size and strict:
        raise InputError(f"target d = {int(dropped[0])} is not below N = {N}: no resampled map can match a baseline of d ≥ N texts")
    return ok


def split_targets(targets, N: int) -> tuple[np.ndarray, np.ndarray]:
    """``(targets below N, targets ≥ N)``: the second can never be matched and get N/A in Table 1."""
    t = check_n_grid(targets)
    return t[t < N], t[t >= N]


def _unreachable_note(dropped, N: int) -> str:
    shown = ", ".join(f"{int(d):,}" for d in dropped[:5])
    example = ",".join(str(int(d)) for d in default_targets(N)) or "1"
    return (
        f"Table 1: target d = {shown} is not below N = {N:,} texts and cannot be matched (N/A); "
        f"targets must be below N, e.g. --targets {example}"
    )


@dataclass
class ErrorAnalysis:
    """τ, σ̂, κ̂ and d for each method over an n-grid (see :func:`analyse_errors`).

    Arrays are indexed by method then grid point. ``tau2_trials``/``d_trials``
    (R×grid) exist when simulated; ``tau2_analytic`` and ``d_expected`` always.
    """

    methods: tuple[str, ...]
    n_grid: np.ndarray
    N: int
    K: int
    R: int
    error: str
    eps0: float
    mode: str
    kappa_source: str
    targets: np.ndarray
    pi: dict[str, np.ndarray]
    tau2_analytic: dict[str, np.ndarray]
    d_expected: dict[str, np.ndarray]
    tau2_trials: dict[str, np.ndarray] = field(default_factory=dict)
    d_trials: dict[str, np.ndarray] = field(default_factory=dict)
    precision: str | None = None
    float32_error: float | None = None
    seed: int = 0
    dropped_targets: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def simulated(self) -> bool:
        return bool(self.tau2_trials)

    # -- the estimates ----------------------------------------------------------
    def tau2(self, method: str, source: str | None = None) -> np.ndarray:
        """``τ²_{M,n}`` over the grid: simulated mean (default when simulated) or analytic."""
        source = source or ("simulate" if self.simulated else "analytic")
        if source == "simulate":
            return self.tau2_trials[method].mean(axis=0)
        return self.tau2_analytic[method]

    def tau2_mc_se(self, method: str) -> np.ndarray:
        """Monte-Carlo standard error of the simulated ``τ²_{M,n}``: sd over trials / sqrt(R)."""
        t = self.tau2_trials[method]
        return t.std(axis=0, ddof=1) / math.sqrt(t.shape[0])

    def _n_index(self, n: int) -> int:
        hit = np.flatnonzero(self.n_grid == n)
        if not hit.size:
            raise LmmapError(f"n = {n} is not on the grid")
        return int(hit[0])

    def tau2_unif_N(self, source: str | None = None) -> float:
        """``τ²_unif,N``: bootstrap sampling error of ``D_N``."""
        return float(self.tau2("uniform", source)[self._n_index(self.N)])

    def sigma_hat(self, method: str, source: str | None = None) -> np.ndarray:
        return sigma_hat(self.tau2_unif_N(source), self.tau2(method, source))

    def d_mean(self, method: str, source: str | None = None) -> np.ndarray:
        source = source or ("simulate" if self.simulated else "analytic")
        return self.d_trials[method].mean(axis=0) if source == "simulate" else self.d_expected[method]

    def kappa(self, d, source: str | None = None) -> np.ndarray:
        """``κ̂_d = τ_unif,d``: simulated at n = d where d is on the grid (``kappa_source="simulated"``), else the theory curve."""
        d = np.atleast_1d(np.asarray(d, dtype=np.int64))
        tau_u = np.sqrt(self.tau2("uniform", source))
        theory = kappa_theory(d, self.N, math.sqrt(self.tau2_unif_N(source)))
        if self.kappa_source == "theory":
            return theory
        pos = np.searchsorted(self.n_grid, d)
        on_grid = (pos < self.n_grid.size) & (self.n_grid[np.minimum(pos, self.n_grid.size - 1)] == d)
        return np.where(on_grid, tau_u[np.minimum(pos, self.n_grid.size - 1)], theory)

    # -- tables (pandas, no I/O) --------------------------------------------------
    def curves(self):
        """One row per (method, n): d, τ, σ̂ (simulated and analytic) and their agreement."""
        import pandas as pd

        rows = []
        for m in self.methods:
            frame = {
                "method": m,
                "n": self.n_grid,
                "d_expected": self.d_expected[m],
                "tau_analytic": np.sqrt(self.tau2_analytic[m]),
                "sigma_hat_analytic": self.sigma_hat(m, "analytic"),
            }
            if self.simulated:
                t2, se = self.tau2(m, "simulate"), self.tau2_mc_se(m)
                frame.update(
                    d_mean=self.d_trials[m].mean(axis=0),
                    d_sd=self.d_trials[m].std(axis=0, ddof=1),
                    tau=np.sqrt(t2),
                    tau2=t2,
                    tau2_mc_se=se,
                    sigma_hat=self.sigma_hat(m, "simulate"),
                    # (simulated − analytic) in Monte-Carlo standard errors: |z| ≲ 2 means agreement.
                    z_analytic=(t2 - self.tau2_analytic[m]) / np.where(se > 0, se, np.nan),
                )
            rows.append(pd.DataFrame(frame))
        df = pd.concat(rows, ignore_index=True)
        first = ["method", "n", "d_mean", "d_sd", "d_expected", "tau", "tau2", "tau2_mc_se", "sigma_hat", "tau_analytic", "sigma_hat_analytic", "z_analytic"]
        return df[[c for c in first if c in df.columns]]

    def kappa_curve(self, source: str | None = None):
        """``κ̂_d`` on the grid (d = n) beside its theoretical curve ``sqrt(N/d)κ̂_N``."""
        import pandas as pd

        kN = math.sqrt(self.tau2_unif_N(source))
        return pd.DataFrame({
            "d": self.n_grid,
            "kappa_hat": np.sqrt(self.tau2("uniform", source)),
            "kappa_theory": kappa_theory(self.n_grid, self.N, kN),
        })  # fmt: skip

    def texts_needed(self, targets=None, source: str | None = None, R_draws: int | None = None, warn: bool = True):
        """Table 1: for each method and target d, the d' = unique texts at the smallest n' with ``σ̂_{M,n'} ≤ κ̂_d``.

        Simulated: n' on the grid, d' mean ± sd over the R trials at n'.
        Analytic: the exact smallest integer n' ≤ max(grid) (``σ̂² = V_u/N + V_M/n``),
        d' = E[d] at n' and its sd over ``R_draws`` (default R) simulated count vectors.

        Cells that cannot be filled are "N/A" with the reason in the ``note``
        column (and, with ``warn``, one :class:`LmmapWarning` per kind of
        reason): a target d ≥ N (never matchable), or no n' on the grid
        reaching ``κ̂_d``. With no target at all it raises :class:`InputError`
        rather than return an empty table.
        """
        import pandas as pd

        source = source or ("simulate" if self.simulated else "analytic")
        if targets is None:
            targets, dropped = self.targets, np.asarray(self.dropped_targets, dtype=np.int64)
        else:
            targets, dropped = split_targets(targets, self.N)
        if targets.size == 0 and dropped.size == 0:
            example = ",".join(str(int(d)) for d in default_targets(self.N))
            raise InputError(
                f"Table 1 has no target: N = {self.N} texts is too few for the default targets (5–75% of N)"
                + (f"; give targets below N, e.g. --targets {example}" if example else "; it needs at least 2 texts")
            )
        kappas = self.kappa(targets, source) if targets.size else np.zeros(0)
        rows, unreached = [], []
        for m in self.methods:
            sig = self.sigma_hat(m, source)
            for d, kap in zip(targets, kappas):
                row = dict(method=m, d=int(d), kappa_d=float(kap), n_prime=None, d_prime_mean=np.nan, d_prime_sd=np.nan)
                if source == "simulate":
                    k = first_reaching(sig, kap)
                    if k is not None:
                        dk = self.d_trials[m][:, k]
                        row.update(n_prime=int(self.n_grid[k]), d_prime_mean=float(dk.mean()), d_prime_sd=float(dk.std(ddof=1)))
                else:
                    n_prime = self._analytic_n_prime(m, kap)
                    if n_prime is not None:
                        draws = _unique_counts(self.pi[m], n_prime, R_draws or self.R, self.seed)
                        row.update(
                            n_prime=n_prime,
                            d_prime_mean=float(expected_unique(self.pi[m], n_prime)[0]),
                            d_prime_sd=float(draws.std(ddof=1)),
                        )
                row["cell"] = format_cell(row["d_prime_mean"], row["d_prime_sd"])
                row["note"] = ""
                if row["n_prime"] is None:
                    row["note"] = f"no n ≤ {int(self.n_grid[-1]):,} reaches κ̂_d"
                    unreached.append((m, int(d)))
                rows.append(row)
            for d in dropped:
                rows.append(dict(method=m, d=int(d), kappa_d=np.nan, n_prime=None, d_prime_mean=np.nan,
                                 d_prime_sd=np.nan, cell="N/A", note=f"d ≥ N = {self.N}"))
        if warn and dropped.size:
            warnings.warn(_unreachable_note(dropped, self.N), LmmapWarning, stacklevel=2)
        if warn and unreached:
            shown = ", ".join(f"{m} d = {d:,}" for m, d in unreached[:4]) + (" …" if len(unreached) > 4 else "")
            warnings.warn(
                f"Table 1: {len(unreached)} cell(s) N/A ({shown}): no resample size up to n = {int(self.n_grid[-1]):,} "
                f"reaches κ̂_d; more draws may: give an --n-grid that goes on to n = {3 * int(self.n_grid[-1]):,}",
                LmmapWarning, stacklevel=2,
            )
        table = pd.DataFrame(rows, columns=["method", "d", "kappa_d", "n_prime", "d_prime_mean", "d_prime_sd", "cell", "note"])
        order = {m: i for i, m in enumerate(self.methods)}
        return table.sort_values(["method", "d"], key=lambda s: s.map(order) if s.name == "method" else s, kind="stable").reset_index(drop=True)

    def _analytic_n_prime(self, method: str, kappa: float) -> int | None:
        v_m = self.tau2_analytic[method][0] * self.n_grid[0]
        gap = kappa**2 - self.tau2_unif_N("analytic")
        if gap <= 0:
            return None
        n_prime = max(1, math.ceil(v_m / gap * (1 - 1e-12)))
        return n_prime if n_prime <= self.n_grid[-1] else None

    def ratio_to_uniform(self, table=None):
        """Table 1's d' of each method divided by uniform's (where both reach κ̂_d): < 1 means fewer texts."""
        t = self.texts_needed() if table is None else table
        wide = t.pivot(index="d", columns="method", values="d_prime_mean")
        return wide.div(wide["uniform"], axis=0).drop(columns="uniform")


def _seed_sequence(seed) -> np.random.SeedSequence:
    return seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)


def _unique_counts(pi: np.ndarray, n: int, R: int, seed) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    return np.count_nonzero(rng.multinomial(n, pi / pi.sum(), size=R), axis=1)


def format_cell(mean: float, sd: float) -> str:
    """Table 1 cell: ``"2,202 ± 19"`` or ``"N/A"``."""
    if not np.isfinite(mean):
        return "N/A"
    return f"{mean:,.0f} ± {sd:,.0f}" if np.isfinite(sd) else f"{mean:,.0f}"


def analyse_errors(
    Q,
    methods: Iterable[str] = METHODS,
    n_grid=None,
    R: int = 100,
    error: str = "relative",
    mode: str = "both",
    targets=None,
    kappa_source: str = "simulated",
    eps0: float = EPS0,
    seed: int = 0,
    workers: int = 1,
    precision: str = "auto",
    progress=None,
) -> ErrorAnalysis:
    """The whole of SPEC §5 for one double-centred ``Q`` (K×N): τ, σ̂, κ̂, d and Table 1.

    Parameters
    ----------
    Q : the map's coordinates (clipped, double-centred) on ``D_N``.
    methods : importance methods (uniform | ls | kl); uniform is always added
        (``τ_unif,N`` and ``κ̂`` come from it).
    n_grid : resample sizes (default :func:`default_n_grid`: the paper's at N = 10,000, scaled with N). N itself and
        the Table 1 targets are added, so ``τ_unif,N`` and ``κ̂_d = τ_unif,d``
        are measured, not interpolated.
    R : trials per (method, n).
    error : relative (§4.1) or absolute (§4.2).
    mode : simulate | analytic | both (analytic is always computed, it is cheap).
    targets : Table 1's d (default :func:`default_targets`: 5, 25, 50, 75% of N,
        the paper's 500, 2,500, 5,000, 7,500 at N = 10,000). Targets ≥ N can
        never be matched: they are noted (:class:`LmmapWarning`) and left N/A.
    kappa_source : ``κ̂_d`` for Table 1 — simulated ``τ_unif,d`` or the theory ``sqrt(N/d)κ̂_N``.
    seed, workers, progress : reproducible per-trial seeds (results do not
        depend on ``workers``), threads, progress bar.
    precision : Gram dtype of the simulation: auto | float32 | float64.
    """
    Q = _as_q(Q)
    K, N = Q.shape
    error = check_error(error)
    mode = _check_choice(mode, MODES, "mode")
    kappa_source = _check_choice(kappa_source, KAPPA_SOURCES, "κ̂ source")
    R = check_trials(R)
    workers = check_workers(workers)
    ms = [check_method(m) for m in methods]
    methods = tuple(dict.fromkeys(["uniform", *ms]))
    if targets is None:
        targets, dropped = default_targets(N), np.zeros(0, dtype=np.int64)
    else:
        targets, dropped = split_targets(targets, N)
        if dropped.size:
            warnings.warn(_unreachable_note(dropped, N), LmmapWarning, stacklevel=2)
    grid = default_n_grid(N) if n_grid is None else check_n_grid(n_grid)
    grid = np.unique(np.concatenate([grid, [N], targets]))

    G = squared_distances(Q)
    if not np.any(G > 0):
        raise LmmapError("every model has the same coordinates: there are no distances to estimate")
    pi = {m: importance(Q, m) for m in methods}
    tau2_an = {m: analytic_tau2(Q, pi[m], grid, error, eps0, G) for m in methods}
    d_exp = {m: expected_unique(pi[m], grid) for m in methods}
    result = ErrorAnalysis(
        methods=methods, n_grid=grid, N=N, K=K, R=R, error=error, eps0=eps0, mode=mode,
        kappa_source=kappa_source, targets=targets, pi=pi, tau2_analytic=tau2_an, d_expected=d_exp, seed=seed,
        dropped_targets=dropped,
    )  # fmt: skip
    if mode == "analytic":
        return result
    smallest = min(float(np.sqrt(t[-1])) for t in tau2_an.values())
    result.precision, result.float32_error = choose_precision(Q, precision, error, eps0, smallest, G)
    seeds = np.random.SeedSequence(seed).spawn(len(methods))
    # One progress bar over every (method, trial); each method's trials run on the pool.
    with _progress(R * len(methods), f"errors: {len(methods)} methods × R={R} trials × {grid.size} n", progress) as advance:
        for m, s in zip(methods, seeds):
            t2, d = simulate_tau2(Q, pi[m], grid, R, error, eps0, s, workers, result.precision, advance, G)
            result.tau2_trials[m], result.d_trials[m] = t2, d
    return result

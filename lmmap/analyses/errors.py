"""Sampling and resampling error of a map's distances: Figure 2 and Table 1 (SPEC §5; resampling paper §4).

:func:`analyse_errors` takes a :class:`~lmmap.map.ModelMap` and returns an
:class:`ErrorAnalysis`: ``τ²_{M,n}`` for each importance method M over an
n-grid (simulated by R resampling trials and/or in closed form, Lemma 2),
``σ̂_{M,n} = sqrt(τ²_unif,N + τ²_{M,n})``, the baseline ``κ̂_d`` and Table 1
(the unique texts d' each method needs to match ``κ̂_d``). The formulas live
in :mod:`lmmap.maths.errors`; this module runs the trials (threads, through
:func:`lmmap.parallel.parallel_map`) and turns arrays into tables. No files:
:func:`lmmap.report.write` writes a result.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from lmmap.exceptions import InputError, LmmapWarning
from lmmap.maths.bootstrap import check_replicates
from lmmap.maths.randomness import seed_of, seed_sequence
from lmmap.maths.errors import (
    EPS0, analytic_n_prime, analytic_tau2, as_q, check_eps0, check_error, check_n_grid, check_option, choose_precision,
    default_n_grid, default_targets, first_reaching, kappa_theory, path_inputs, sigma_hat,
    split_targets, trial_path, unique_counts,
)
from lmmap.maths.geometry import squared_distances
from lmmap.maths.resampling import METHODS, check_method, expected_unique, importance
from lmmap.parallel import parallel_map

MODES = ("simulate", "analytic", "both")
KAPPA_SOURCES = ("simulated", "theory")


def _unreachable_note(dropped, N: int) -> str:
    shown = ", ".join(f"{int(d):,}" for d in dropped[:5])
    example = ",".join(str(int(d)) for d in default_targets(N)) or "1"
    return (
        f"Table 1: target d = {shown} is not below N = {N:,} texts and cannot be matched (N/A); "
        f"targets must be below N, e.g. targets={example}"
    )


def format_cell(mean: float, sd: float) -> str:
    """Table 1 cell: ``"2,202 ± 19"`` or ``"N/A"``."""
    if not np.isfinite(mean):
        return "N/A"
    return f"{mean:,.0f} ± {sd:,.0f}" if np.isfinite(sd) else f"{mean:,.0f}"


def simulate_tau2(Q, pi, n_grid, R: int = 100, error: str = "relative", eps0: float = EPS0, random_state=0,
                  workers: int = 1, precision: str = "float64", progress=None, G=None, task: str = "trials"
                  ) -> tuple[np.ndarray, np.ndarray]:
    """R resampling trials over ``n_grid``: per-trial ``(1/K²)Σ_ij e_ij²`` and unique counts d, both R×len(grid).

    Array-level (``Q`` K×N, ``π``); :func:`analyse_errors` calls it once per
    method. Trial r draws from child r of ``SeedSequence(random_state)``
    (see :func:`lmmap.maths.randomness.seed_of`), so the numbers do not depend
    on ``workers`` (threads, one BLAS thread each). ``precision``: the dtype
    of the increments' Gram products (float32 | float64; ``auto`` is resolved
    by :func:`lmmap.maths.errors.choose_precision` first and means float64 here).
    """
    inp = path_inputs(Q, pi, n_grid, error, eps0, precision, G)
    R = check_replicates(R)
    seeds = seed_sequence(random_state).spawn(R)
    results = parallel_map(lambda s: trial_path(inp, s), seeds, workers=workers, backend="threads",
                           progress=progress, task=task, unit="trials")
    return np.stack([r[0] for r in results]), np.stack([r[1] for r in results])


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
    random_state: int | np.random.SeedSequence = 0
    dropped_targets: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    seconds: float | None = None  # wall time of the analysis

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
            raise InputError(f"n = {n} is not on the grid", params=("n",))
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
                + (f"; give targets below N, e.g. {{targets={example}}}" if example else "; it needs at least 2 texts"),
                params=("targets",),
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
                    v_m = self.tau2_analytic[m][0] * self.n_grid[0]
                    n_prime = analytic_n_prime(v_m, self.tau2_unif_N("analytic"), kap, int(self.n_grid[-1]))
                    if n_prime is not None:
                        draws = unique_counts(self.pi[m], n_prime, R_draws or self.R, self.random_state)
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
            warnings.warn(LmmapWarning(
                f"Table 1: {len(unreached)} cell(s) N/A ({shown}): no resample size up to n = {int(self.n_grid[-1]):,} "
                f"is as accurate as d texts drawn at random (κ̂_d); resample sizes ({{n_grid}}) up to "
                f"n = {3 * int(self.n_grid[-1]):,} may reach it", params=("n_grid",)), stacklevel=2)
        table = pd.DataFrame(rows, columns=["method", "d", "kappa_d", "n_prime", "d_prime_mean", "d_prime_sd", "cell", "note"])
        order = {m: i for i, m in enumerate(self.methods)}
        return table.sort_values(["method", "d"], key=lambda s: s.map(order) if s.name == "method" else s, kind="stable").reset_index(drop=True)

    def ratio_to_uniform(self, table=None):
        """Table 1's d' of each method divided by uniform's (where both reach κ̂_d): < 1 means fewer texts."""
        t = self.texts_needed() if table is None else table
        wide = t.pivot(index="d", columns="method", values="d_prime_mean")
        return wide.div(wide["uniform"], axis=0).drop(columns="uniform")



def _coordinates(mm) -> np.ndarray:
    """The map's ``Q`` on the full text set ``D_N`` (the errors are those of resampling ``D_N``)."""
    Q = getattr(mm, "Q", None)
    if Q is None or not hasattr(mm, "names"):
        raise InputError(f"mm must be a ModelMap (lmmap.map.ModelMap(names, L) or ModelMap.from_store(store)), "
                         f"got {type(mm).__name__}", params=("mm",))
    if getattr(mm, "w", None) is not None:
        raise InputError("the error analysis resamples the full text set D_N: give the map of all N texts, "
                         "not of a resampled subset", params=("mm",))
    return as_q(Q)


def analyse_errors(
    mm,
    *,
    methods: Iterable[str] = METHODS,
    n_grid=None,
    R: int = 100,
    error: str = "relative",
    mode: str = "both",
    targets=None,
    kappa_source: str = "simulated",
    eps0: float = EPS0,
    precision: str = "auto",
    random_state=0,
    workers: int = 1,
    progress=None,
) -> ErrorAnalysis:
    """The whole of SPEC §5 for the map ``mm``: τ, σ̂, κ̂, d and Table 1.

    Parameters
    ----------
    mm : ModelMap
        The map on the full text set ``D_N``; its ``Q`` (clipped, double-centred, K×N) is used.
    methods : importance methods (uniform | ls | kl); uniform is always added
        (``τ_unif,N`` and ``κ̂`` come from it).
    n_grid : resample sizes (default :func:`~lmmap.maths.errors.default_n_grid`: the paper's at
        N = 10,000, scaled with N). N itself and the Table 1 targets are added, so ``τ_unif,N``
        and ``κ̂_d = τ_unif,d`` are measured, not interpolated.
    R : trials per (method, n).
    error : relative (§4.1) or absolute (§4.2).
    mode : simulate | analytic | both (analytic is always computed, it is cheap).
    targets : Table 1's d (default :func:`~lmmap.maths.errors.default_targets`: 5, 25, 50, 75%
        of N, the paper's 500, 2,500, 5,000, 7,500 at N = 10,000). Targets ≥ N can never be
        matched: they are noted (:class:`LmmapWarning`) and left N/A.
    kappa_source : ``κ̂_d`` for Table 1 — simulated ``τ_unif,d`` or the theory ``sqrt(N/d)κ̂_N``.
    eps0 : ε₀ in ``max(g_ij, ε₀)``.
    precision : Gram dtype of the simulation: auto | float32 | float64.
    random_state : int, numpy Generator or None
        Seeds the trials (method m uses child m of ``SeedSequence(random_state)``, trial r its
        child r); the same int gives the same draws whatever ``workers``.
    workers : threads for the trials (-1: every core).
    progress : None or a callable receiving :class:`lmmap.progress.Step` events (one per trial).
    """
    return analyse_coordinates(
        _coordinates(mm), methods=methods, n_grid=n_grid, R=R, error=error, mode=mode, targets=targets,
        kappa_source=kappa_source, eps0=eps0, precision=precision, random_state=random_state, workers=workers,
        progress=progress,
    )  # fmt: skip


def analyse_coordinates(Q, *, methods: Iterable[str] = METHODS, n_grid=None, R: int = 100, error: str = "relative",
                        mode: str = "both", targets=None, kappa_source: str = "simulated", eps0: float = EPS0,
                        precision: str = "auto", random_state=0, workers: int = 1, progress=None) -> ErrorAnalysis:
    """:func:`analyse_errors` on the coordinates ``Q`` (K×N, double-centred) of a map, for array-level use."""
    from lmmap.parallel import check_workers

    t0 = time.perf_counter()
    Q = as_q(Q)
    K, N = Q.shape
    error = check_error(error)
    eps0 = check_eps0(eps0)
    mode = check_option(mode, MODES, "mode")
    kappa_source = check_option(kappa_source, KAPPA_SOURCES, "kappa_source")
    R = check_replicates(R)
    check_workers(workers)
    seed = seed_of(random_state)
    ms = [check_method(m) for m in methods]
    methods = tuple(dict.fromkeys(["uniform", *ms]))
    if targets is None:
        targets, dropped = default_targets(N), np.zeros(0, dtype=np.int64)
    else:
        targets, dropped = split_targets(targets, N)
        if dropped.size:
            warnings.warn(_unreachable_note(dropped, N), LmmapWarning, stacklevel=3)
    grid = default_n_grid(N) if n_grid is None else check_n_grid(n_grid)
    grid = np.unique(np.concatenate([grid, [N], targets]))

    G = squared_distances(Q)
    if not np.any(G > 0):
        raise InputError("every model has the same coordinates: there are no distances to estimate", params=("mm",))
    pi = {m: importance(Q, m) for m in methods}
    tau2_an = {m: analytic_tau2(Q, pi[m], grid, error, eps0, G) for m in methods}
    d_exp = {m: expected_unique(pi[m], grid) for m in methods}
    result = ErrorAnalysis(
        methods=methods, n_grid=grid, N=N, K=K, R=R, error=error, eps0=eps0, mode=mode,
        kappa_source=kappa_source, targets=targets, pi=pi, tau2_analytic=tau2_an, d_expected=d_exp,
        random_state=seed, dropped_targets=dropped,
    )  # fmt: skip
    if mode != "analytic":
        smallest = min(float(np.sqrt(t[-1])) for t in tau2_an.values())
        result.precision, result.float32_error = choose_precision(Q, precision, error, eps0, smallest, G)
        seeds = seed_sequence(seed).spawn(len(methods))
        for m, s in zip(methods, seeds):
            t2, d = simulate_tau2(Q, pi[m], grid, R, error, eps0, s, workers, result.precision, progress, G,
                                  task=f"errors: {m} × R={R} trials × {grid.size} n")
            result.tau2_trials[m], result.d_trials[m] = t2, d
    result.seconds = time.perf_counter() - t0
    return result

"""Predicting benchmark scores from model coordinates (SPEC §7), and flagging possible contamination.

Ridge regression of each target (a benchmark score, the benchmarks' mean, the
model's mean log-likelihood) on the coordinates ``X`` = ``Q`` (or
``Q̃_d W^{1/2}`` on a subset of texts):

* outer ``n_folds``-fold cross-validation with folds **grouped** (no group on
  both sides), the group-to-fold assignment shuffled by each seed
  (scikit-learn's ``GroupKFold(shuffle=True)``, as in the authors' code);
* α per target from an inner ``n_inner``-fold CV (scikit-learn ``KFold``,
  shuffled by the same seed) on the training part only, minimising the mean
  squared error, from :data:`SCORE_ALPHAS` (scores; predictions clipped to
  [0, 100]) or :data:`LOGLIK_ALPHAS` (mean log-likelihood; not clipped);
* Pearson r between out-of-fold predictions and truth, per seed, reported as
  mean ± sd over seeds (population sd, as the authors).

Speed: ridge with an intercept is ridge on centred data, and with K ≪ d it is
cheapest in kernel form. The Gram matrix ``X Xᵀ`` of all K models is computed
once; each training set's centred kernel (scikit-learn ``KernelCenterer``) is
eigendecomposed once, and that one decomposition gives the fit for **every α
and every target** (:class:`RidgePath`). The predictions are exactly those of
``sklearn.linear_model.Ridge`` (``solver="sklearn"`` runs the plain
scikit-learn ``GridSearchCV(Ridge)`` on the same folds as a reference; the
tests check the two agree).

Layers: the numeric core (arrays in, arrays out: :func:`gram_matrix`,
:class:`RidgePath`, :func:`outer_folds`, :func:`select_alphas`,
:func:`cross_validate`, :func:`fit_predict`, :func:`pearson`), then the
model-level API (:func:`prepare_targets`, :func:`predict_scores` →
:class:`PredictionReport`, which also writes the tables and figures).
"""

from __future__ import annotations

import difflib
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import linalg
from sklearn.model_selection import GroupKFold, KFold
from sklearn.preprocessing import KernelCenterer

from lmmap.exceptions import InputError, LmmapError, LmmapWarning

SCORE_ALPHAS = 10.0 ** np.arange(1, 10)  # 10¹..10⁹ (SPEC §7)
LOGLIK_ALPHAS = 10.0 ** np.arange(-4, 5)  # 10⁻⁴..10⁴ (SPEC §7)
SCORE_RANGE = (0.0, 100.0)
SCORE, LOGLIK = "score", "loglik"
MEAN_TARGET = "benchmark_mean"
LOGLIK_TARGET = "mean_loglik"
# Table columns with these names hold log-likelihoods, not scores (the authors' data calls it mean_logp).
LOGLIK_COLUMNS = frozenset({"mean_logp", "mean_loglik", "mean_log_likelihood"})
MISSING_GROUP = "(missing)"


def alpha_grid(kind: str) -> np.ndarray:
    """The α grid of SPEC §7 for a target of ``kind`` ``"score"`` or ``"loglik"``."""
    if kind == SCORE:
        return SCORE_ALPHAS.copy()
    if kind == LOGLIK:
        return LOGLIK_ALPHAS.copy()
    raise LmmapError(f"unknown target kind {kind!r}: expected {SCORE!r} or {LOGLIK!r}")


# =============================================================================== numeric core


def gram_matrix(X) -> np.ndarray:
    """``X Xᵀ`` (K×K) of the feature rows: everything ridge needs when K ≪ d."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise InputError(f"X must be 2-D (models × features), got shape {X.shape}")
    return X @ X.T


def centered_kernels(G, train, test=None) -> tuple[np.ndarray, np.ndarray | None]:
    """The training kernel centred on the training rows' mean, and the test×train kernel centred the same way.

    Equivalent to centring ``X`` by the training mean before forming the
    kernels, which is what an unpenalised intercept amounts to.
    """
    G = np.asarray(G, dtype=np.float64)
    train = np.asarray(train)
    K_raw = G[np.ix_(train, train)]
    centerer = KernelCenterer().fit(K_raw)
    K_train = centerer.transform(K_raw)
    K_test = None if test is None else centerer.transform(G[np.ix_(np.asarray(test), train)])
    return K_train, K_test


@dataclass
class RidgePath:
    """Ridge fits of every target for every α from one eigendecomposition of a centred training kernel.

    With ``K_c = U diag(s) Uᵀ``, the dual coefficients for α are
    ``U diag(1/(s+α)) Uᵀ (Y − ȳ)``, so a test prediction is
    ``ȳ + (K_test U) diag(1/(s+α)) (Uᵀ (Y − ȳ))``: the decomposition and both
    products are shared by all α and all targets.
    """

    U: np.ndarray
    s: np.ndarray
    UtY: np.ndarray
    y_mean: np.ndarray

    @classmethod
    def fit(cls, K_train, Y) -> "RidgePath":
        K_train = np.asarray(K_train, dtype=np.float64)
        Y = np.asarray(Y, dtype=np.float64)
        if Y.ndim == 1:
            Y = Y[:, None]
        if K_train.shape != (Y.shape[0], Y.shape[0]):
            raise InputError(f"kernel {K_train.shape} does not match {Y.shape[0]} training rows")
        s, U = linalg.eigh(K_train, driver="evd", check_finite=False)
        # The centred kernel is PSD; rounding can leave tiny negative eigenvalues.
        np.maximum(s, 0.0, out=s)
        y_mean = Y.mean(axis=0)
        return cls(U=U, s=s, UtY=U.T @ (Y - y_mean), y_mean=y_mean)

    def predict(self, K_test, alphas) -> np.ndarray:
        """Predictions (n_alpha × n_test × n_targets) for the centred test×train kernel ``K_test``."""
        P = np.asarray(K_test, dtype=np.float64) @ self.U
        alphas = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
        out = np.empty((alphas.size, P.shape[0], self.UtY.shape[1]))
        for a, alpha in enumerate(alphas):
            out[a] = (P / (self.s + alpha)) @ self.UtY + self.y_mean
        return out


def _union_grid(alpha_grids: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """All α values once, and for each target the positions of its own grid in that union."""
    grids = [np.asarray(g, dtype=np.float64).ravel() for g in alpha_grids]
    for g in grids:
        if g.size == 0 or not np.all(np.isfinite(g)) or np.any(g <= 0):
            raise InputError(f"an α grid must be non-empty, finite and positive, got {g}")
    union = np.unique(np.concatenate(grids))
    return union, [np.searchsorted(union, g) for g in grids]


def inner_splits(n: int, n_inner: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The inner CV's (train, validation) positions among ``n`` training rows: shuffled ``KFold``."""
    if n < n_inner:
        raise LmmapError(
            f"the inner {n_inner}-fold CV that chooses α needs at least {n_inner} training models, "
            f"a training fold has {n}; score more models or lower the inner folds"
        )
    return list(KFold(n_splits=n_inner, shuffle=True, random_state=seed).split(np.zeros(n)))


def select_alphas(G, Y, train, alpha_grids, n_inner: int = 5, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """α for each target (column of ``Y``) by ``n_inner``-fold CV on the rows ``train``.

    Minimises the mean over inner folds of the validation MSE (what
    ``GridSearchCV(Ridge(), scoring="neg_mean_squared_error")`` maximises;
    ties go to the smaller α). Returns the chosen α per target and, per
    target, the mean MSE over its grid.
    """
    train = np.asarray(train)
    Y = np.asarray(Y, dtype=np.float64).reshape(len(train), -1)
    union, positions = _union_grid(alpha_grids)
    if len(positions) != Y.shape[1]:
        raise InputError(f"{len(positions)} α grids for {Y.shape[1]} targets")
    mse = np.zeros((union.size, Y.shape[1]))
    splits = inner_splits(len(train), n_inner, seed)
    for tr, va in splits:
        K_tr, K_va = centered_kernels(G, train[tr], train[va])
        pred = RidgePath.fit(K_tr, Y[tr]).predict(K_va, union)
        mse += ((pred - Y[va][None]) ** 2).mean(axis=1)
    mse /= len(splits)
    curves = [mse[pos, t] for t, pos in enumerate(positions)]
    chosen = np.array([union[pos[np.argmin(c)]] for pos, c in zip(positions, curves)])
    return chosen, curves


def predict_with_alphas(path: RidgePath, K_test, alphas) -> np.ndarray:
    """Predictions (n_test × n_targets), target t with its own ``alphas[t]``."""
    alphas = np.asarray(alphas, dtype=np.float64)
    distinct, which = np.unique(alphas, return_inverse=True)
    all_pred = path.predict(K_test, distinct)
    return all_pred[which, :, np.arange(alphas.size)].T


def clip_predictions(pred, clip_ranges) -> np.ndarray:
    """Clip column t of ``pred`` to ``clip_ranges[t]`` (``None``: leave it)."""
    pred = np.array(pred, dtype=np.float64, copy=True)
    for t, rng in enumerate(clip_ranges):
        if rng is not None:
            pred[..., t] = np.clip(pred[..., t], rng[0], rng[1])
    return pred


def outer_folds(groups, n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """Fold number (0..n_folds-1) of each row: whole groups are shuffled (by ``seed``) into folds.

    scikit-learn's ``GroupKFold(shuffle=True, random_state=seed)`` (1.6+), as
    in the authors' code; older scikit-learn gets the same algorithm (a seeded
    permutation of the groups cut into ``n_folds`` near-equal runs).
    """
    groups = np.asarray(groups)
    n_groups = np.unique(groups).size
    if n_folds < 2:
        raise LmmapError(f"cross-validation needs at least 2 folds, got {n_folds}")
    if n_groups < n_folds:
        raise LmmapError(
            f"{n_folds}-fold grouped cross-validation needs at least {n_folds} groups; "
            f"there are {n_groups} among {groups.size} models"
        )
    folds = np.full(groups.size, -1, dtype=np.int64)
    try:
        splitter = GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        for f, (_, test) in enumerate(splitter.split(np.zeros(groups.size), groups=groups)):
            folds[test] = f
    except TypeError:  # scikit-learn < 1.6 has no shuffle: same algorithm by hand
        unique = np.random.RandomState(seed).permutation(np.unique(groups))
        for f, chunk in enumerate(np.array_split(unique, n_folds)):
            folds[np.isin(groups, chunk)] = f
    return folds


def _sklearn_fold_predictions(X, Y, train, test, alpha_grids, n_inner, seed) -> tuple[np.ndarray, np.ndarray]:
    """Reference path: plain scikit-learn ``GridSearchCV(Ridge)`` per target (slow; for checking)."""
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GridSearchCV

    splits = inner_splits(len(train), n_inner, seed)
    pred = np.empty((len(test), Y.shape[1]))
    alphas = np.empty(Y.shape[1])
    for t, grid in enumerate(alpha_grids):
        search = GridSearchCV(Ridge(), {"alpha": list(grid)}, cv=splits, scoring="neg_mean_squared_error")
        search.fit(X[train], Y[train, t])
        pred[:, t] = search.predict(X[test])
        alphas[t] = search.best_params_["alpha"]
    return pred, alphas


@dataclass
class CrossValidation:
    """Out-of-fold predictions of every target under every seed.

    oof : (S, K, T) out-of-fold predictions (clipped where asked); NaN where the target is missing.
    folds : (S, K, T) outer fold of each model; -1 where the target is missing.
    alphas : (S, n_folds, T) the α chosen in each training fold.
    Y : (K, T) the targets (NaN = missing).
    seeds : the S seeds.
    """

    oof: np.ndarray
    folds: np.ndarray
    alphas: np.ndarray
    Y: np.ndarray
    seeds: list[int]

    def pearson(self) -> np.ndarray:
        """Pearson r (S × T) between out-of-fold predictions and truth."""
        return pearson(self.oof, self.Y)

    def residuals(self) -> np.ndarray:
        """``y − mean over seeds of the out-of-fold prediction`` (K × T)."""
        return self.Y - self.oof.mean(axis=0)


def pearson(pred, Y, method: str = "pearson") -> np.ndarray:
    """Correlation (S × T) of ``pred`` (S × K × T) with ``Y`` (K × T) over the rows where both are known.

    NaN where it is undefined (fewer than 3 rows, or a constant side).
    ``method="spearman"`` correlates ranks.
    """
    pred = np.asarray(pred, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    S, _, T = pred.shape
    out = np.full((S, T), np.nan)
    for s in range(S):
        for t in range(T):
            ok = np.isfinite(pred[s, :, t]) & np.isfinite(Y[:, t])
            if ok.sum() < 3:
                continue
            a, b = pred[s, ok, t], Y[ok, t]
            if method == "spearman":
                a, b = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
            if np.ptp(a) == 0 or np.ptp(b) == 0:
                continue
            out[s, t] = np.corrcoef(a, b)[0, 1]
    return out


def _mask_patterns(Y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Targets grouped by which models have them: (rows, target columns) per distinct pattern.

    Targets known for the same models share folds and decompositions.
    """
    known = np.isfinite(Y)
    patterns: dict[bytes, list[int]] = {}
    for t in range(Y.shape[1]):
        patterns.setdefault(known[:, t].tobytes(), []).append(t)
    return [(np.flatnonzero(known[:, cols[0]]), np.asarray(cols)) for cols in patterns.values()]


def _check_cv_inputs(n_models, Y, groups, alpha_grids, clip_ranges, target_names):
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.shape[0] != n_models:
        raise InputError(f"Y has {Y.shape[0]} rows for {n_models} models")
    T = Y.shape[1]
    if np.isinf(Y).any():
        raise LmmapError("a target holds ±inf; give finite numbers (leave a cell empty for a missing value)")
    # The labels themselves (not codes): GroupKFold orders groups by label before shuffling,
    # so the same seed gives the same folds as scikit-learn run on the user's labels.
    groups = np.arange(n_models) if groups is None else np.asarray([str(g) for g in groups], dtype=object)
    if groups.shape[0] != n_models:
        raise InputError(f"{groups.shape[0]} group labels for {n_models} models")
    if len(alpha_grids) != T or len(clip_ranges) != T:
        raise InputError(f"need one α grid and one clip range per target ({T})")
    names = list(target_names) if target_names is not None else [f"target {t}" for t in range(T)]
    return Y, groups, names


def cross_validate(
    X=None,
    Y=None,
    groups=None,
    alpha_grids=None,
    clip_ranges=None,
    seeds: Sequence[int] = range(5),
    n_folds: int = 5,
    n_inner: int = 5,
    *,
    G=None,
    target_names=None,
    solver: str = "eigen",
    n_jobs: int | None = 1,
) -> CrossValidation:
    """Grouped, repeated cross-validation of ridge regression of each column of ``Y`` on ``X``.

    X : (K, d) features (or give ``G = X Xᵀ`` instead; ``solver="sklearn"`` needs ``X``).
    Y : (K, T) targets; NaN marks a missing value (that model is left out for that target).
    groups : K labels; no label is in the training and test parts of any split
        (``None``: every model is its own group).
    alpha_grids : T grids (default: :data:`SCORE_ALPHAS` for every target).
    clip_ranges : T ``(lo, hi)`` or ``None`` (default: no clipping).
    seeds : one repetition per seed (fold assignment and inner folds).
    solver : ``"eigen"`` (one eigendecomposition per training set serves all α
        and targets) or ``"sklearn"`` (``GridSearchCV(Ridge)``; slow, for checking).
    n_jobs : folds run in parallel on this many threads (-1: all cores).
    """
    if X is None and G is None:
        raise InputError("give the features X or their Gram matrix G")
    if solver not in ("eigen", "sklearn"):
        raise InputError(f"solver must be 'eigen' or 'sklearn', got {solver!r}")
    if solver == "sklearn" and X is None:
        raise InputError("solver='sklearn' needs the features X")
    if X is not None:
        X = np.asarray(X, dtype=np.float64)
    K = X.shape[0] if X is not None else np.asarray(G).shape[0]
    if Y is None:
        raise InputError("give the targets Y")
    T = np.asarray(Y).reshape(K, -1).shape[1]
    alpha_grids = [SCORE_ALPHAS] * T if alpha_grids is None else list(alpha_grids)
    clip_ranges = [None] * T if clip_ranges is None else list(clip_ranges)
    Y, codes, names = _check_cv_inputs(K, Y, groups, alpha_grids, clip_ranges, target_names)
    if G is None and solver == "eigen":
        G = gram_matrix(X)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise LmmapError("give at least one seed")
    S = len(seeds)
    tasks = []
    oof = np.full((S, K, T), np.nan)
    folds = np.full((S, K, T), -1, dtype=np.int64)
    chosen = np.full((S, n_folds, T), np.nan)
    for rows, cols in _mask_patterns(Y):
        which = ", ".join(repr(names[c]) for c in cols)
        if rows.size == 0:
            raise LmmapError(f"no model has a value for {which}")
        try:
            pattern_folds = [outer_folds(codes[rows], n_folds, seed) for seed in seeds]
        except LmmapError as exc:
            raise LmmapError(
                f"{which}: {exc}; use fewer folds (--folds), a finer group column, or no grouping (--group-by none)"
            ) from None
        grids = [alpha_grids[c] for c in cols]
        for s, seed in enumerate(seeds):
            fold_of = pattern_folds[s]
            folds[s, rows[:, None], cols[None, :]] = fold_of[:, None]
            for f in range(n_folds):
                tasks.append((s, f, seed, rows[fold_of != f], rows[fold_of == f], cols, grids))

    def run(task):
        s, f, seed, train, test, cols, grids = task
        if solver == "eigen":
            pred, alphas = fit_predict(G, Y[np.ix_(train, cols)], train, test, grids, None, n_inner, seed)
        else:
            pred, alphas = _sklearn_fold_predictions(X, Y[:, cols], train, test, grids, n_inner, seed)
        return task, clip_predictions(pred, [clip_ranges[c] for c in cols]), alphas

    for (s, f, _, _, test, cols, _), pred, alphas in _map_tasks(run, tasks, n_jobs):
        oof[s, test[:, None], cols[None, :]] = pred
        chosen[s, f, cols] = alphas
    return CrossValidation(oof=oof, folds=folds, alphas=chosen, Y=Y, seeds=seeds)


def _map_tasks(fn, tasks, n_jobs: int | None):
    """``fn`` over ``tasks`` on ``n_jobs`` threads, each with single-threaded BLAS.

    The work is many mid-sized eigendecompositions: running whole folds in
    parallel scales, whereas multi-threaded BLAS inside one 800×800 ``eigh``
    barely does and collapses when the cores are shared (6× slower measured).
    LAPACK releases the GIL, so threads suffice.
    """
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    n_jobs = 1 if n_jobs is None else int(n_jobs)
    if n_jobs < 1:
        n_jobs = max(1, (os.cpu_count() or 1) + 1 + n_jobs)  # -1 = all cores, as in scikit-learn
    with threadpool_limits(limits=1, user_api="blas"):
        if n_jobs == 1 or len(tasks) <= 1:
            return [fn(t) for t in tasks]
        with ThreadPoolExecutor(max_workers=n_jobs) as ex:
            return list(ex.map(fn, tasks))


def fit_predict(G, Y_train, train, test, alpha_grids, clip_ranges=None, n_inner: int = 5, seed: int = 0):
    """Fit ridge on the rows ``train`` (α per target by inner CV) and predict the rows ``test``.

    G : Gram matrix of all rows. Y_train : (n_train, T) targets of the rows ``train``.
    alpha_grids : T grids (or one grid for all). clip_ranges : T ``(lo, hi)``/None (or one for all).
    Returns ``(predictions (n_test × T), alphas (T,))``.
    """
    train, test = np.asarray(train), np.asarray(test)
    Ytr = np.asarray(Y_train, dtype=np.float64).reshape(len(train), -1)
    T = Ytr.shape[1]
    grids = [alpha_grids] * T if np.ndim(alpha_grids[0]) == 0 else list(alpha_grids)
    if clip_ranges is None or _is_range(clip_ranges):
        clip_ranges = [clip_ranges] * T
    alphas, _ = select_alphas(G, Ytr, train, grids, n_inner, seed)
    K_tr, K_te = centered_kernels(G, train, test)
    pred = predict_with_alphas(RidgePath.fit(K_tr, Ytr), K_te, alphas)
    return clip_predictions(pred, clip_ranges), alphas


def _is_range(value) -> bool:
    """True for one ``(lo, hi)`` pair of numbers (as opposed to a list of per-target ranges)."""
    return isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, (int, float, np.number)) for v in value)


def residual_interval(residuals, level: float = 0.9) -> tuple[float, float]:
    """The ``(1−level)/2`` and ``(1+level)/2`` quantiles of cross-validation residuals (true − predicted).

    Added to a new prediction they give an interval that holds the truth for a
    fraction ``level`` of held-out models (groups unseen in training, so it errs wide).
    """
    if not 0 < level < 1:
        raise LmmapError(f"the interval level must be in (0, 1), got {level}")
    r = np.asarray(residuals, dtype=np.float64).ravel()
    r = r[np.isfinite(r)]
    if r.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(r, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


# =============================================================================== model-level API


@dataclass
class Targets:
    """The targets of one prediction run, aligned with the map's models.

    Y : DataFrame (models × targets) with NaN for a missing value.
    kinds : ``"score"`` or ``"loglik"`` per target.
    ignored : models in the table that are not in the map (ignored).
    missing : per target, models of the map present in the table but with no value there.
    unlisted : models of the map absent from the table.
    """

    Y: pd.DataFrame
    kinds: dict[str, str]
    ignored: list[str] = field(default_factory=list)
    missing: dict[str, list[str]] = field(default_factory=dict)
    unlisted: list[str] = field(default_factory=list)


def score_columns(table: pd.DataFrame, source: str = "scores", exclude: Sequence[str] = ()) -> list[str]:
    """The numeric target columns of a scores table, refusing non-numeric entries with their line and value."""
    cols = [c for c in table.columns if c not in set(exclude)]
    for c in cols:
        col = table[c]
        if pd.api.types.is_bool_dtype(col):
            raise LmmapError(f"{source}: column {c!r} holds true/false values, not scores; drop it or pick --targets")
        if pd.api.types.is_numeric_dtype(col):
            continue
        numbers = pd.to_numeric(col, errors="coerce")
        bad = numbers.isna() & col.notna() & (col.astype(str).str.strip() != "")
        if bad.any():
            model = bad.index[np.flatnonzero(bad.to_numpy())[0]]
            line = int(np.flatnonzero(bad.to_numpy())[0]) + 2
            raise LmmapError(
                f"{source}: column {c!r} has a non-numeric entry {col[model]!r} for model {model!r} "
                f"(line {line}); fix it, leave the cell empty if the score is missing, "
                "or leave the column out with --targets"
            )
    return cols


def prepare_targets(
    scores: pd.DataFrame | None,
    names: Sequence[str],
    mean_loglik=None,
    *,
    targets: Sequence[str] | None = None,
    include_mean: bool = True,
    exclude: Sequence[str] = (),
    score_range: tuple[float, float] | None = SCORE_RANGE,
    source: str = "scores",
) -> Targets:
    """Align a scores table (indexed by model) with the map's models ``names`` and check it.

    Adds ``benchmark_mean`` (the mean of the score columns, for models with
    all of them) when there are at least two, and ``mean_loglik`` when
    ``mean_loglik`` (K values) is given. Models of the table that are not in
    the map are listed in ``ignored``; missing values are counted per target.
    """
    names = [str(n) for n in names]
    frame = pd.DataFrame(index=pd.Index(names, name="model"))
    kinds: dict[str, str] = {}
    ignored: list[str] = []
    missing: dict[str, list[str]] = {}
    unlisted: list[str] = []
    if scores is not None:
        table = scores.copy()
        table.index = table.index.astype(str)
        if table.index.has_duplicates:
            dup = table.index[table.index.duplicated()][0]
            raise LmmapError(f"{source}: model {dup!r} has more than one row; keep one")
        cols = score_columns(table, source, exclude=exclude)
        if targets is not None:
            absent = [t for t in targets if t not in table.columns]
            if absent:
                raise LmmapError(
                    f"{source}: no column {absent[0]!r} (its columns: {', '.join(map(str, table.columns))})"
                )
            cols = [c for c in cols if c in set(targets)]
        if not cols:
            raise LmmapError(f"{source}: no score columns (its columns: {', '.join(map(str, table.columns)) or 'none'})")
        reserved = [c for c in cols if c == MEAN_TARGET or (c == LOGLIK_TARGET and mean_loglik is not None)]
        if reserved:
            raise LmmapError(f"{source}: column {reserved[0]!r} clashes with a target lmmap computes; rename it")
        values = table[cols].apply(pd.to_numeric, errors="coerce")
        inf = np.isinf(values.to_numpy(dtype=np.float64))
        if inf.any():
            i, j = np.argwhere(inf)[0]
            raise LmmapError(f"{source}: column {cols[j]!r} is infinite for model {values.index[i]!r}; give a finite score")
        in_map, listed = set(names), set(values.index)
        ignored = [m for m in values.index if m not in in_map]
        unlisted = [m for m in names if m not in listed]
        values = values.reindex(names)
        is_listed = np.array([m in listed for m in names])
        for c in cols:
            kinds[c] = LOGLIK if str(c) in LOGLIK_COLUMNS else SCORE
            missing[c] = [m for m, gap in zip(names, is_listed & values[c].isna().to_numpy()) if gap]
            frame[c] = values[c]
            if kinds[c] == SCORE and score_range is not None:
                _check_range(values[c], c, score_range, source)
        score_cols = [c for c in cols if kinds[c] == SCORE]
        if include_mean and len(score_cols) >= 2:
            # Only models with every benchmark get a mean: a mean of fewer is a different quantity.
            frame[MEAN_TARGET] = values[score_cols].mean(axis=1, skipna=False)
            kinds[MEAN_TARGET] = SCORE
            missing[MEAN_TARGET] = [m for m, gap in zip(names, is_listed & frame[MEAN_TARGET].isna().to_numpy()) if gap]
    if mean_loglik is not None:
        ml = np.asarray(mean_loglik, dtype=np.float64)
        if ml.shape != (len(names),):
            raise InputError(f"mean_loglik has shape {ml.shape} for {len(names)} models")
        frame[LOGLIK_TARGET] = ml
        kinds[LOGLIK_TARGET] = LOGLIK
        missing[LOGLIK_TARGET] = []
    if not kinds:
        raise LmmapError("nothing to predict: give a scores table or ask for the mean log-likelihood")
    return Targets(Y=frame, kinds=kinds, ignored=ignored, missing=missing, unlisted=unlisted)


def _check_range(col: pd.Series, name, score_range, source):
    lo, hi = score_range
    out = col[(col < lo) | (col > hi)]
    if len(out):
        raise LmmapError(
            f"{source}: column {name!r} has {len(out)} value(s) outside [{lo:g}, {hi:g}] "
            f"(e.g. {out.iloc[0]!r} for model {out.index[0]!r}); scores are percentages and "
            f"predictions are clipped to that range — rescale the column, or turn clipping off (--score-range none)"
        )


def mean_loglik(L, w=None) -> np.ndarray:
    """Each model's mean log-likelihood over the texts (``Σ_t w_t L_t / Σ_t w`` on a resampled subset)."""
    L = np.asarray(L, dtype=np.float64)
    if w is None:
        return L.mean(axis=1)
    w = np.asarray(w, dtype=np.float64)
    return (L @ w) / w.sum()


def group_candidates(names: Sequence[str], n_folds: int, *tables: pd.DataFrame | None, skip: Sequence[str] = ()) -> list[tuple[str, int]]:
    """Text-valued columns of ``tables`` that split ``names`` into at least ``n_folds`` groups (but not one per model).

    ``(column, number of groups)``, most groups first: the ``--group-by``
    values that would make a grouped ``n_folds``-fold cross-validation possible.
    """
    names = [str(n) for n in names]
    found: dict[str, int] = {}
    for table in tables:
        if table is None or not len(table.columns):
            continue
        for c in table.columns:
            c_str = str(c)
            if c_str in found or c_str in set(skip) or c_str == "model":
                continue
            col = table[c]
            if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
                continue  # a score or a count is not a grouping
            col = col.copy()
            col.index = col.index.astype(str)
            values = col[~col.index.duplicated()].reindex(names)
            labels = [MISSING_GROUP if pd.isna(v) or str(v) == "" else str(v) for v in values]
            k = len(set(labels))
            if n_folds <= k < len(names):
                found[c_str] = k
    return sorted(found.items(), key=lambda kv: -kv[1])


def _grouping_advice(names, n_folds: int, n_groups: int, column, *tables, skip=()) -> str:
    """What to do when a grouping has too few groups: only suggestions that would work."""
    options = []
    better = group_candidates(names, n_folds, *tables, skip=[*skip, *([column] if column else [])])
    if better:
        options.append("group by " + " or ".join(f"--group-by {c} ({k} groups)" for c, k in better[:3]))
    if n_groups >= 2:
        options.append(f"use --folds {n_groups}")
    options.append("use --group-by none (each model its own group; optimistic when models have near-copies)")
    return "; or ".join(options)


def resolve_groups(group_by, names: Sequence[str], *tables: pd.DataFrame | None, n_folds: int = 5) -> tuple[list[str] | None, str | None]:
    """Group labels for ``names`` from the first of ``tables`` that has the column ``group_by``.

    ``group_by=None`` (or ``"none"``): every model is its own group. A
    Series/sequence is used as given. Missing labels form one group
    ``"(missing)"`` (their models may belong together, so they are kept together).
    """
    if group_by is None or (isinstance(group_by, str) and group_by.lower() == "none"):
        return None, None
    if not isinstance(group_by, str):
        if isinstance(group_by, pd.Series):
            labels = list(group_by.reindex(list(names)))
        else:
            labels = list(group_by)
        if len(labels) != len(names):
            raise LmmapError(f"{len(labels)} group labels for {len(names)} models")
        return [MISSING_GROUP if pd.isna(v) else str(v) for v in labels], getattr(group_by, "name", None) or "group"
    available: list[str] = []
    for table in tables:
        if table is None or not len(table.columns):
            continue
        available.extend(map(str, table.columns))
        if group_by in table.columns:
            col = table[group_by]
            col.index = col.index.astype(str)
            col = col[~col.index.duplicated()].reindex(list(names))
            return [MISSING_GROUP if pd.isna(v) else str(v) for v in col], group_by
    better = group_candidates(names, n_folds, *tables)
    if better:
        hint = "; columns that would work: " + ", ".join(f"--group-by {c} ({k} groups)" for c, k in better[:3])
    else:
        hint = f" (metadata columns: {', '.join(dict.fromkeys(available))})" if available else " (the store has no metadata)"
    raise InputError(
        f"no column {group_by!r} to group the folds by{hint}; give one with --metadata MODELS.csv "
        "(a 'model' column and the group column), or --group-by none"
    )


@dataclass
class PredictionReport:
    """Everything one prediction run found; :meth:`write` puts it on disk.

    summary : one row per target: kind, n_models, n_groups, n_missing, r_mean, r_sd,
        spearman_mean, spearman_sd, rmse, alpha (the most often chosen), r per seed.
    predictions : one row per (target, model with a value): true, predicted (mean over
        seeds of the out-of-fold predictions), predicted_sd, residual, z, flagged, fold_seed<s>.
    new : one row per (target, model without a value): the prediction of a model fitted
        on every scored model, with an interval from the cross-validation residuals.
    cv : the raw :class:`CrossValidation`.
    """

    summary: pd.DataFrame
    predictions: pd.DataFrame
    new: pd.DataFrame
    cv: CrossValidation
    targets: Targets
    groups: list[str]
    settings: dict
    notes: list[str] = field(default_factory=list)

    def flagged(self, threshold: float | None = None) -> pd.DataFrame:
        """Models whose true score exceeds the out-of-fold prediction by more than ``threshold`` residual sds.

        Only score targets (a high log-likelihood is not contamination);
        sorted by target, then z descending.
        """
        k = self.settings["threshold"] if threshold is None else float(threshold)
        p = self.predictions
        hit = p[(p["kind"] == SCORE) & (p["z"] > k)]
        return hit.sort_values(["target", "z"], ascending=[True, False]).reset_index(drop=True)[
            ["target", "model", "group", "true", "predicted", "residual", "z"]
        ]

    def write(self, outdir, plots: bool = True) -> dict[str, Path]:
        """Write correlations.csv, predictions.csv, contamination.csv, new_predictions.csv, predict.json and the figures."""
        out = Path(outdir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {n: out / n for n in ("correlations.csv", "predictions.csv", "contamination.csv", "new_predictions.csv", "predict.json")}
        self.summary.to_csv(paths["correlations.csv"], index=False)
        self.predictions.to_csv(paths["predictions.csv"], index=False)
        self.flagged().to_csv(paths["contamination.csv"], index=False)
        self.new.to_csv(paths["new_predictions.csv"], index=False)
        info = {**self.settings, "notes": self.notes, "targets": self.summary.to_dict(orient="records")}
        if plots:
            # Target names are mangled into file names: say which file shows which target.
            info["figures"] = {f"pred_{slug}": str(t) for t, slug in zip(self.summary["target"], figure_slugs(self.summary["target"]))}
        paths["predict.json"].write_text(json.dumps(info, indent=2, default=_json_default))
        if plots:
            paths.update(self.write_figures(out))
        return paths

    def write_figures(self, outdir) -> dict[str, Path]:
        """Predicted-versus-true scatter plots (PNG and HTML) per target, coloured by group."""
        from lmmap.report import plots

        out = Path(outdir)
        paths: dict[str, Path] = {}
        flagged = self.flagged()
        group_title = self.settings.get("group_by") or None
        for target, slug in zip(self.summary["target"], figure_slugs(self.summary["target"])):
            p = self.predictions[self.predictions["target"] == target]
            if p.empty:
                continue
            row = self.summary[self.summary["target"] == target].iloc[0]
            cv_kind = f"{self.settings['n_folds']}-fold CV" + (f" grouped by {group_title}" if group_title else "")
            title = f"{target}: r = {_fmt(row['r_mean'])} ± {_fmt(row['r_sd'])} ({len(p)} models, {cv_kind})"
            hot = flagged.loc[flagged["target"] == target, "model"].tolist()
            labels = p["model"].tolist()
            groups = p["group"].tolist() if group_title else None
            hover = [f"residual {r:+.3g} ({z:+.2f} sd){' — flagged' if m in hot else ''}" for m, r, z in zip(labels, p["residual"], p["z"])]
            kw = dict(labels=labels, groups=groups, xlabel=f"true {target}", ylabel=f"predicted {target} (out-of-fold)", title=title, diagonal=True)
            paths[f"pred_{slug}.png"] = plots.scatter_png(out / f"pred_{slug}.png", p["true"].to_numpy(), p["predicted"].to_numpy(), annotate=hot or None, group_title=group_title, **kw)
            paths[f"pred_{slug}.html"] = plots.scatter_html(out / f"pred_{slug}.html", p["true"].to_numpy(), p["predicted"].to_numpy(), hover=hover, group_title=group_title, **kw)
        return paths


def _fmt(x) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.3f}"


def figure_slugs(names) -> list[str]:
    """File-name-safe, distinct (also without case), bounded stems for the target names, in order.

    :func:`lmmap.data.filenames.safe_filename`: a clean name stays as it is, any
    other gets a hash of itself, so ``x y``, ``x_y`` and ``x_y_1`` make three files.
    """
    from lmmap.data.filenames import safe_filename

    taken: set[str] = set()
    return [safe_filename(str(n), taken) for n in names]



def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _seeds(seeds) -> list[int]:
    if isinstance(seeds, (int, np.integer)):
        if seeds < 1:
            raise LmmapError(f"--seeds must be at least 1, got {seeds}")
        return list(range(int(seeds)))
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise LmmapError("give at least one seed")
    return seeds


def predict_scores(
    features,
    names: Sequence[str],
    scores: pd.DataFrame | None,
    *,
    groups=None,
    mean_loglik_values=None,
    seeds=5,
    n_folds: int = 5,
    n_inner: int = 5,
    threshold: float = 2.0,
    level: float = 0.9,
    targets: Sequence[str] | None = None,
    include_mean: bool = True,
    score_range: tuple[float, float] | None = SCORE_RANGE,
    group_column: str | None = None,
    source: str = "scores",
    exclude: Sequence[str] = (),
    solver: str = "eigen",
    n_jobs: int | None = 1,
    store_models: Sequence[str] | None = None,
    left_out: Sequence[str] = (),
) -> PredictionReport:
    """Cross-validated prediction of every target from the models' coordinates, plus predictions for unscored models.

    features : (K, d) coordinates of the models ``names`` (``ModelMap.features()``).
    scores : table indexed by model, one numeric column per benchmark (or None).
    groups : K group labels (``None``: each model its own group); see :func:`resolve_groups`.
    group_column : the name of the grouping (for the report and figure legends).
    mean_loglik_values : K mean log-likelihoods, predicted as an extra target (None: skip).
    seeds : a count (seeds 0..n-1) or the seeds themselves.
    threshold : flag models whose true score exceeds the prediction by more than this many residual sds.
    level : coverage of the prediction intervals of the new predictions.
    n_jobs : folds fitted in parallel (threads; -1: all cores).
    store_models : every model of the store the map comes from: scores for a
        model outside it are named as unknown (a typo?), apart from models
        that are stored but not in this map.
    left_out : stored models the caller left out of the map and explains itself (no second note).

    Each note of the report (``report.notes``) is also issued as a
    :class:`~lmmap.exceptions.LmmapWarning`.

    :func:`predict_map` does the same for a :class:`~lmmap.map.ModelMap`.
    """
    names = [str(n) for n in names]
    X = np.asarray(features, dtype=np.float64)
    if X.shape[0] != len(names):
        raise LmmapError(f"{X.shape[0]} feature rows for {len(names)} models")
    if not np.isfinite(X).all():
        raise LmmapError("the coordinates hold non-finite values; rebuild the map")
    seeds = _seeds(seeds)
    tg = prepare_targets(
        scores, names, mean_loglik_values, targets=targets, include_mean=include_mean,
        score_range=score_range, source=source, exclude=exclude,
    )
    cols = list(tg.Y.columns)
    kinds = [tg.kinds[c] for c in cols]
    Y = tg.Y.to_numpy(dtype=np.float64)
    labels = [str(i) for i in range(len(names))] if groups is None else [str(g) for g in groups]
    grids = [alpha_grid(k) for k in kinds]
    clips = [score_range if k == SCORE else None for k in kinds]
    G = gram_matrix(X)
    cv = cross_validate(
        X if solver == "sklearn" else None, Y, None if groups is None else labels, grids, clips, seeds, n_folds, n_inner,
        G=G, target_names=cols, solver=solver, n_jobs=n_jobs,
    )
    notes = _notes(tg, names, store_models, left_out)
    summary = _summary(cv, cols, kinds, labels, tg)
    predictions = _prediction_table(cv, cols, kinds, names, labels if groups is not None else [""] * len(names))
    predictions = _flag(predictions, threshold)
    new = _map_tasks(
        lambda _: _new_predictions(G, Y, cv, cols, kinds, names, labels if groups is not None else [""] * len(names), clips, n_inner, seeds[0], level),
        [None], 1,
    )[0]
    for t, c in enumerate(cols):
        if not np.all(np.isfinite(summary.loc[t, [f"r_seed{s}" for s in seeds]].to_numpy(dtype=float))):
            notes.append(f"{c}: Pearson r is undefined for some seed (constant predictions or truth)")
    notes += _alpha_edge_notes(cv, cols, kinds)
    for note in notes:
        warnings.warn(note, LmmapWarning, stacklevel=2)
    settings = {
        "n_models": len(names), "n_features": int(X.shape[1]), "seeds": seeds, "n_folds": n_folds,
        "n_inner": n_inner, "threshold": float(threshold), "level": float(level), "group_by": (group_column or "group") if groups is not None else None,
        "score_range": list(score_range) if score_range is not None else None,
        "alpha_grids": {SCORE: SCORE_ALPHAS.tolist(), LOGLIK: LOGLIK_ALPHAS.tolist()},
        "solver": solver, "ignored_models": tg.ignored,
    }
    return PredictionReport(
        summary=summary, predictions=predictions, new=new, cv=cv, targets=tg,
        groups=labels if groups is not None else [], settings=settings, notes=notes,
    )


def predict_map(mm, scores: pd.DataFrame | None, group_by: str | None = "model_type", *, metadata: pd.DataFrame | None = None, include_loglik: bool = True, **kwargs) -> PredictionReport:
    """:func:`predict_scores` on a :class:`~lmmap.map.ModelMap`: its features, its mean log-likelihoods, its metadata's groups.

    The group column is looked up in the scores table, then ``metadata``, then the map's metadata.
    """
    n_folds = int(kwargs.get("n_folds", 5))
    groups, column = resolve_groups(group_by, mm.names, scores, metadata, mm.metadata, n_folds=n_folds)
    if groups is not None:
        n_groups = len(set(groups))
        if n_groups < n_folds:
            raise InputError(
                f"--group-by {column} gives {n_groups} group(s) among the {len(mm.names)} models, fewer than the "
                f"{n_folds} folds of the cross-validation; "
                + _grouping_advice(mm.names, n_folds, n_groups, column, scores, metadata, mm.metadata)
            )
    ml = mean_loglik(mm.L, mm.w) if include_loglik else None
    exclude = [column] if column is not None and scores is not None and column in scores.columns else []
    kwargs.setdefault("source", "scores")
    return predict_scores(
        mm.features(), mm.names, scores, groups=groups, mean_loglik_values=ml, group_column=column,
        exclude=exclude, **kwargs,
    )


def _alpha_edge_notes(cv: CrossValidation, cols, kinds) -> list[str]:
    """A note per target whose α, in most training folds, is the smallest or largest of its grid."""
    notes = []
    for t, c in enumerate(cols):
        grid = alpha_grid(kinds[t])
        chosen = cv.alphas[:, :, t]
        chosen = chosen[np.isfinite(chosen)]
        if not chosen.size:
            continue
        for edge, word, meaning in (
            (grid.max(), "largest", "the best α may lie above the grid (strong shrinkage: predictions stay "
                                    "close to the training mean)"),
            (grid.min(), "smallest", "the best α may lie below the grid (little regularisation)"),
        ):
            share = float(np.mean(np.isclose(chosen, edge)))
            if share > 0.5:
                notes.append(
                    f"{c}: α = {edge:.0e}, the {word} of its grid {grid.min():.0e}..{grid.max():.0e}, "
                    f"was chosen in {share:.0%} of the training folds; {meaning}"
                )
    return notes


def _shown(models, limit: int = 10) -> str:
    return ", ".join(map(repr, models[:limit])) + (f" (+{len(models) - limit} more)" if len(models) > limit else "")


def _notes(tg: Targets, names, store_models=None, left_out=()) -> list[str]:
    notes = []
    if tg.ignored and store_models is not None:
        stored = set(map(str, store_models))
        unknown = [m for m in tg.ignored if m not in stored]
        partial = [m for m in tg.ignored if m in stored and m not in set(left_out)]
        if unknown:
            hints = []
            for m in unknown[:10]:
                # A high cutoff: a typo ("gpt-2" for "gpt2"), not a sibling ("base2-ft-docs" for "base2-ft-code").
                close = difflib.get_close_matches(m, list(stored), n=1, cutoff=0.85)
                hints.append(f"{m!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            more = f" (+{len(unknown) - 10} more)" if len(unknown) > 10 else ""
            notes.append(
                f"the scores table names {len(unknown)} model(s) that are not in the store: {', '.join(hints)}{more}; "
                "their rows were ignored — check the names (`lmmap models`) or score them first"
            )
        if partial:
            notes.append(
                f"{len(partial)} model(s) with scores are in the store but not in this map and were ignored: {_shown(partial)}"
            )
    elif tg.ignored:
        notes.append(f"{len(tg.ignored)} model(s) in the scores table are not in the map and were ignored: {_shown(tg.ignored)}")
    if tg.unlisted and any(k == SCORE for k in tg.kinds.values()):
        notes.append(f"{len(tg.unlisted)} model(s) of the map have no row in the scores table; their scores are predicted")
    for c, miss in tg.missing.items():
        if miss:
            notes.append(f"{c}: {len(miss)} missing value(s) dropped (predicted instead)")
    return notes


def _summary(cv: CrossValidation, cols, kinds, labels, tg: Targets) -> pd.DataFrame:
    r = cv.pearson()
    rho = pearson(cv.oof, cv.Y, method="spearman")
    labels = np.asarray(labels, dtype=object)
    rows = []
    for t, c in enumerate(cols):
        known = np.isfinite(cv.Y[:, t])
        err = cv.oof[:, known, t] - cv.Y[known, t][None]
        vals, counts = np.unique(cv.alphas[:, :, t][np.isfinite(cv.alphas[:, :, t])], return_counts=True)
        row = {
            "target": c, "kind": kinds[t], "n_models": int(known.sum()),
            "n_groups": int(np.unique(labels[known]).size),
            "n_missing": int((~known).sum()),
            "r_mean": _nanmean(r[:, t]), "r_sd": _nanstd(r[:, t]),
            "spearman_mean": _nanmean(rho[:, t]), "spearman_sd": _nanstd(rho[:, t]),
            "rmse": float(np.sqrt(np.mean(err**2))) if err.size else math.nan,
            "alpha": float(vals[np.argmax(counts)]) if vals.size else math.nan,
        }
        for s, seed in enumerate(cv.seeds):
            row[f"r_seed{seed}"] = r[s, t]
        rows.append(row)
    return pd.DataFrame(rows)


def _nanmean(x) -> float:
    x = np.asarray(x, dtype=float)
    return float(np.mean(x[np.isfinite(x)])) if np.isfinite(x).any() else math.nan


def _nanstd(x) -> float:
    x = np.asarray(x, dtype=float)
    return float(np.std(x[np.isfinite(x)])) if np.isfinite(x).any() else math.nan


def _prediction_table(cv: CrossValidation, cols, kinds, names, labels) -> pd.DataFrame:
    frames = []
    names = np.asarray(names, dtype=object)
    labels = np.asarray(labels, dtype=object)
    for t, c in enumerate(cols):
        known = np.flatnonzero(np.isfinite(cv.Y[:, t]))
        pred = cv.oof[:, known, t]
        frame = pd.DataFrame({
            "target": c, "kind": kinds[t], "model": names[known], "group": labels[known],
            "true": cv.Y[known, t], "predicted": pred.mean(axis=0),
            "predicted_sd": pred.std(axis=0),
        })  # fmt: skip
        frame["residual"] = frame["true"] - frame["predicted"]
        for s, seed in enumerate(cv.seeds):
            frame[f"fold_seed{seed}"] = cv.folds[s, known, t]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _flag(predictions: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Add z = residual / (sd of the target's residuals) and flagged = z > threshold (score targets)."""
    sd = predictions.groupby("target", sort=False)["residual"].transform(lambda r: r.std(ddof=1) if len(r) > 1 else math.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        predictions["z"] = predictions["residual"] / sd.where(sd > 0)
    predictions["flagged"] = (predictions["kind"] == SCORE) & (predictions["z"] > threshold)
    # z and flagged beside the residual, the per-seed folds last.
    first = ["target", "kind", "model", "group", "true", "predicted", "predicted_sd", "residual", "z", "flagged"]
    return predictions[first + [c for c in predictions.columns if c not in first]]


def _new_predictions(G, Y, cv, cols, kinds, names, labels, clips, n_inner, seed, level) -> pd.DataFrame:
    """Fit each target on every model that has it; predict the models that do not."""
    rows = []
    names = np.asarray(names, dtype=object)
    resid = cv.Y[None] - cv.oof  # every seed's out-of-fold residuals
    for train, tcols in _mask_patterns(Y):
        test = np.setdiff1d(np.arange(Y.shape[0]), train)
        if test.size == 0:
            continue
        # Targets known for the same models share one fit (one decomposition per inner fold).
        pred, alphas = fit_predict(
            G, Y[np.ix_(train, tcols)], train, test, [alpha_grid(kinds[t]) for t in tcols],
            [clips[t] for t in tcols], n_inner, seed,
        )
        for k, t in enumerate(tcols):
            lo, hi = residual_interval(resid[:, :, t], level)
            lower, upper = pred[:, k] + lo, pred[:, k] + hi
            if clips[t] is not None:
                lower, upper = np.clip(lower, *clips[t]), np.clip(upper, *clips[t])
            for i, j in enumerate(test):
                rows.append({
                    "target": cols[t], "model": names[j], "group": labels[j], "predicted": pred[i, k],
                    "lower": lower[i], "upper": upper[i], "level": level, "alpha": alphas[k], "n_train": int(train.size),
                })  # fmt: skip
    columns = ["target", "model", "group", "predicted", "lower", "upper", "level", "alpha", "n_train"]
    order = {c: i for i, c in enumerate(cols)}
    new = pd.DataFrame(rows, columns=columns)
    return new.sort_values("target", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


# =============================================================================== from a store


SCORE_PREFIX = "score_"


def scores_from_metadata(metadata: pd.DataFrame | None) -> pd.DataFrame | None:
    """The ``score_*`` columns of the store's metadata (the authors' model-data file brings ``score_v1_*``), or None."""
    if metadata is None:
        return None
    cols = [c for c in metadata.columns if str(c).startswith(SCORE_PREFIX)]
    return metadata[cols] if cols else None


def read_scores(path) -> pd.DataFrame:
    """``SCORES.csv``: a ``model`` column and one numeric column per benchmark, indexed by model."""
    from lmmap.data.formats import read_metadata_csv

    return read_metadata_csv(path)


def predict_store(
    store,
    scores: pd.DataFrame | str | os.PathLike | None = None,
    *,
    subset=None,
    group_by: str | None = "model_type",
    metadata: pd.DataFrame | str | os.PathLike | None = None,
    clip: bool = True,
    allow_mixed: bool = False,
    include_loglik: bool = True,
    **kwargs,
) -> PredictionReport:
    """``lmmap predict``: :func:`predict_map` on every model of ``store`` (on ``subset``'s texts if given).

    scores : a table indexed by model, a path to ``SCORES.csv``, or None to use
        the store metadata's ``score_*`` columns.
    subset : a :class:`~lmmap.analyses.select.Subset` or the path of ``SUBSET.json``:
        features ``Q̃_d W^{1/2}``, only the models scored on its texts.
    metadata : extra metadata (a table or ``MODELS.csv``) to find the group column in.
    """
    from lmmap.map import ModelMap

    source = "scores"
    if isinstance(scores, (str, os.PathLike)):
        source = str(scores)
        scores = read_scores(scores)
    if isinstance(metadata, (str, os.PathLike)):
        from lmmap.data.formats import read_metadata_csv

        metadata = read_metadata_csv(metadata)
    if subset is not None and not hasattr(subset, "text_pos"):
        from lmmap.analyses.select import Subset

        subset = Subset.load(subset)
    left_out: list[str] = []
    if subset is not None:
        models = store.models_with_texts(subset.text_pos)
    else:
        from lmmap.analyses.select import complete_models

        models = complete_models(store)
        left_out = [m for m in store.model_names() if m not in set(models)]
    mm = ModelMap.from_store(store, models=models, subset=subset, clip=clip, allow_mixed=allow_mixed)
    if scores is None:
        scores = scores_from_metadata(mm.metadata)
        source = f"the store's metadata ({SCORE_PREFIX}* columns)"
        if scores is None:
            raise LmmapError(
                f"no scores: give --scores SCORES.csv (a 'model' column and one column per benchmark); "
                f"the store's metadata has no {SCORE_PREFIX}* columns either"
            )
    kwargs.setdefault("store_models", store.model_names())
    kwargs.setdefault("left_out", left_out)
    report = predict_map(mm, scores, group_by, metadata=metadata, include_loglik=include_loglik, source=source, **kwargs)
    if left_out:
        # Models placed with `lmmap add` are scored on a subset's texts only: they need its coordinates.
        note = (
            f"{len(left_out)} model(s) scored on only some texts were left out (e.g. {left_out[0]!r}); "
            "give --subset SUBSET.json, the subset they were scored on, to include them"
        )
        report.notes.append(note)
        warnings.warn(note, LmmapWarning, stacklevel=2)
    report.settings.update(
        store=str(store.path), scores=source, subset=None if subset is None else f"{subset.method}, d = {subset.d}",
        clip_threshold=mm.threshold, n_texts=int(mm.L.shape[1]),
    )
    return report

"""Ridge regression of targets on model coordinates, cross-validated (SPEC §7): arrays in, arrays out.

Ridge regression of each target ``y`` (a benchmark score, the mean of the
benchmarks, the mean log-likelihood) on the features ``X`` = ``Q`` (K×N), or
``Q̃_d W^{1/2}`` on a resampled subset of d texts:

* outer ``n_folds``-fold cross-validation with folds **grouped** (no group on
  both sides of a split), the group-to-fold assignment shuffled by each seed
  (scikit-learn's ``GroupKFold(shuffle=True)``, as in the authors' code);
* α per target from an inner ``n_inner``-fold CV (scikit-learn's shuffled
  ``KFold``, by the same seed) on the training part only, minimising the
  mean squared error, from :data:`SCORE_ALPHAS` (scores; predictions clipped
  to [0, 100]) or :data:`LOGLIK_ALPHAS` (mean log-likelihood; not clipped);
* Pearson r between out-of-fold predictions and truth, per seed, reported by
  the caller as mean ± sd over seeds (population sd, as the authors).

Speed: ridge with an unpenalised intercept is ridge on centred data, and with
K ≪ N it is cheapest in kernel form. The Gram matrix ``X Xᵀ`` of all K models
is computed once; each training set's centred kernel is eigendecomposed once,
and that one decomposition gives the fit for **every α and every target**
(:class:`RidgePath`). The predictions are exactly those of
``sklearn.linear_model.Ridge``; ``solver="sklearn"`` runs scikit-learn's
``GridSearchCV(Ridge)`` on the same folds as a reference (imported only then).

The fold splitters below reproduce scikit-learn's ``KFold(shuffle=True)``,
``GroupKFold(shuffle=True)`` and ``KernelCenterer`` operation for operation
(the tests compare them): importing scikit-learn's model selection loads
pandas, which this layer must not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import linalg
from scipy.stats import rankdata

from lmmap.maths.randomness import seeds_of
from lmmap.exceptions import InputError

SCORE_ALPHAS = 10.0 ** np.arange(1, 10)  # 10¹..10⁹ (SPEC §7)
LOGLIK_ALPHAS = 10.0 ** np.arange(-4, 5)  # 10⁻⁴..10⁴ (SPEC §7)
SCORE, LOGLIK = "score", "loglik"
# Penalties ridge_loo tries, relative to the largest squared singular value of the centred design (so the grid
# does not depend on the scale of the features); the one of least leave-one-out error is kept.
LOO_RELATIVE_ALPHAS = np.array([1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0])


def alpha_grid(kind: str) -> np.ndarray:
    """The α grid of SPEC §7 for a target of ``kind`` ``"score"`` or ``"loglik"``."""
    if kind == SCORE:
        return SCORE_ALPHAS.copy()
    if kind == LOGLIK:
        return LOGLIK_ALPHAS.copy()
    raise InputError(f"unknown target kind {kind!r}: expected {SCORE!r} or {LOGLIK!r}", params=("kind",))


# ------------------------------------------------------------------------------- ridge by leave-one-out


def ridge_loo(Phi, y, relative_alphas=LOO_RELATIVE_ALPHAS) -> np.ndarray:
    """Ridge coefficients θ (d,) of ``y`` (n,) on the rows of ``Phi`` (n×d), with an unpenalised intercept, for
    the α of ``relative_alphas · D₁²`` (D₁ the largest singular value of the centred ``Phi``) with the least
    leave-one-out squared error.

    The intercept is ``ȳ − mean(Phi) · θ``. One SVD ``Phi_c = A D Bᵀ`` gives every α: fitted values
    ``A diag(D²/(D²+α)) Aᵀ y_c`` and leverages ``h_i = Σ_r A_ir² D_r²/(D_r²+α) + 1/n`` (the 1/n is the
    intercept), so the leave-one-out residual of row i is ``(y_c,i − ŷ_i)/(1 − h_i)`` exactly, without n refits.
    Used by the adaptive estimator's prediction (:mod:`lmmap.analyses.adaptive`). A design with no spread
    (every row alike) gives θ = 0.
    """
    Phi = np.asarray(Phi, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, d = Phi.shape
    Pc = Phi - Phi.mean(axis=0)
    yc = y - y.mean()
    A, D, Bt = np.linalg.svd(Pc, full_matrices=False)
    if D.size == 0 or D[0] <= 0:
        return np.zeros(d)
    Ay = A.T @ yc
    lam = np.asarray(relative_alphas, dtype=np.float64) * D[0] ** 2
    shrink = D[None, :] ** 2 / (D[None, :] ** 2 + lam[:, None])  # (grid, r)
    fitted = (shrink * Ay[None, :]) @ A.T  # (grid, n)
    h = (A * A) @ shrink.T + 1.0 / n  # leverage incl. the intercept, (n, grid)
    # 1 − h is 0 only for a row that alone determines its fit: floored so that its error counts as large, not inf.
    loo = ((yc[None, :] - fitted) / np.maximum(1.0 - h.T, 1e-6)) ** 2
    best = int(np.argmin(loo.sum(axis=1)))
    return Bt.T @ (D / (D ** 2 + lam[best]) * Ay)


# ------------------------------------------------------------------------------- kernels and the α path


def gram_matrix(X) -> np.ndarray:
    """``X Xᵀ`` (K×K) of the feature rows: everything ridge needs when K ≪ N."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise InputError(f"X must be 2-D (models × features), got shape {X.shape}", params=("X",))
    return X @ X.T


def centered_kernels(G, train, test=None) -> tuple[np.ndarray, np.ndarray | None]:
    """The training kernel centred on the training rows' mean, and the test×train kernel centred the same way.

    Equivalent to centring ``X`` by the training mean before forming the
    kernels, which is what an unpenalised intercept amounts to. The same
    operations in the same order as scikit-learn's ``KernelCenterer``, so the
    numbers agree to the last bit.
    """
    G = np.asarray(G, dtype=np.float64)
    train = np.asarray(train)
    K_raw = G[np.ix_(train, train)]
    fit_rows = K_raw.sum(axis=0) / K_raw.shape[0]
    fit_all = fit_rows.sum() / K_raw.shape[0]

    def center(K):
        pred_cols = (K.sum(axis=1) / fit_rows.shape[0])[:, None]
        K = K - fit_rows
        K -= pred_cols
        K += fit_all
        return K

    K_test = None if test is None else center(G[np.ix_(np.asarray(test), train)])
    return center(K_raw), K_test


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
            raise InputError(f"kernel {K_train.shape} does not match {Y.shape[0]} training rows",
                             params=("K_train", "Y"))
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
            raise InputError(f"an α grid must be non-empty, finite and positive, got {g}", params=("alpha_grids",))
    union = np.unique(np.concatenate(grids))
    return union, [np.searchsorted(union, g) for g in grids]


# ------------------------------------------------------------------------------- folds


def _kfold_test_sets(n: int, n_splits: int, seed: int) -> list[np.ndarray]:
    """scikit-learn's ``KFold(n_splits, shuffle=True, random_state=seed)`` test positions, each sorted."""
    order = np.arange(n)
    np.random.RandomState(seed).shuffle(order)
    sizes = np.full(n_splits, n // n_splits, dtype=int)
    sizes[: n % n_splits] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [np.sort(order[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def inner_splits(n: int, n_inner: int, random_state: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The inner CV's (train, validation) positions among ``n`` training rows: shuffled ``KFold``."""
    if n < n_inner:
        raise InputError(
            f"the inner {n_inner}-fold CV that chooses α needs at least {n_inner} training models, "
            f"a training fold has {n}; score more models or give {{n_inner={max(2, n)}}} or fewer",
            params=("n_inner",),
        )
    out = []
    for test in _kfold_test_sets(n, n_inner, random_state):
        mask = np.zeros(n, dtype=bool)
        mask[test] = True
        out.append((np.flatnonzero(~mask), test))
    return out


def outer_folds(groups, n_folds: int = 5, random_state: int = 0) -> np.ndarray:
    """Fold number (0..n_folds-1) of each row: whole groups are shuffled (by ``random_state``) into folds.

    scikit-learn's ``GroupKFold(shuffle=True, random_state=random_state)``
    (1.6+), as in the authors' code: a seeded permutation of the sorted
    distinct labels cut into ``n_folds`` near-equal runs.
    """
    groups = np.asarray(groups)
    unique = np.unique(groups)
    if n_folds < 2:
        raise InputError(f"cross-validation needs at least 2 folds, got n_folds = {n_folds}", params=("n_folds",))
    if unique.size < n_folds:
        raise InputError(
            f"{n_folds}-fold grouped cross-validation needs at least {n_folds} groups; "
            f"there are {unique.size} among {groups.size} models",
            params=("n_folds",),
        )
    folds = np.full(groups.size, -1, dtype=np.int64)
    for f, chunk in enumerate(np.array_split(np.random.RandomState(random_state).permutation(unique), n_folds)):
        folds[np.isin(groups, chunk)] = f
    return folds


# ------------------------------------------------------------------------------- α by inner CV, one fit


def select_alphas(G, Y, train, alpha_grids, n_inner: int = 5,
                  random_state: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
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
        raise InputError(f"{len(positions)} α grids for {Y.shape[1]} targets", params=("alpha_grids",))
    mse = np.zeros((union.size, Y.shape[1]))
    splits = inner_splits(len(train), n_inner, random_state)
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
    for t, bounds in enumerate(clip_ranges):
        if bounds is not None:
            pred[..., t] = np.clip(pred[..., t], bounds[0], bounds[1])
    return pred


def _is_range(value) -> bool:
    """True for one ``(lo, hi)`` pair of numbers (as opposed to a list of per-target ranges)."""
    return isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, (int, float, np.number)) for v in value)


def fit_predict(G, Y_train, train, test, alpha_grids, clip_ranges=None, n_inner: int = 5, random_state: int = 0):
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
    alphas, _ = select_alphas(G, Ytr, train, grids, n_inner, random_state)
    K_tr, K_te = centered_kernels(G, train, test)
    pred = predict_with_alphas(RidgePath.fit(K_tr, Ytr), K_te, alphas)
    return clip_predictions(pred, clip_ranges), alphas


def _sklearn_fold_predictions(X, Y, train, test, alpha_grids, n_inner, random_state) -> tuple[np.ndarray, np.ndarray]:
    """Reference path: plain scikit-learn ``GridSearchCV(Ridge)`` per target (slow; for checking)."""
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GridSearchCV

    splits = inner_splits(len(train), n_inner, random_state)
    pred = np.empty((len(test), Y.shape[1]))
    alphas = np.empty(Y.shape[1])
    for t, grid in enumerate(alpha_grids):
        search = GridSearchCV(Ridge(), {"alpha": list(grid)}, cv=splits, scoring="neg_mean_squared_error")
        search.fit(X[train], Y[train, t])
        pred[:, t] = search.predict(X[test])
        alphas[t] = search.best_params_["alpha"]
    return pred, alphas


# ------------------------------------------------------------------------------- cross-validation


@dataclass
class CrossValidation:
    """Out-of-fold predictions of every target under every seed.

    oof : (S, K, T) out-of-fold predictions (clipped where asked); NaN where the target is missing.
    folds : (S, K, T) outer fold of each model; -1 where the target is missing.
    alphas : (S, n_folds, T) the α chosen in each training fold.
    Y : (K, T) the targets (NaN = missing).
    seeds : the S seeds (one repetition each).
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
    ``method="spearman"`` correlates ranks (ties get their average rank).
    """
    if method not in ("pearson", "spearman"):
        raise InputError(f"method must be 'pearson' or 'spearman', got {method!r}", params=("method",))
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
                a, b = rankdata(a), rankdata(b)
            if np.ptp(a) == 0 or np.ptp(b) == 0:
                continue
            out[s, t] = np.corrcoef(a, b)[0, 1]
    return out


def mask_patterns(Y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
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
        raise InputError(f"Y has {Y.shape[0]} rows for {n_models} models", params=("Y",))
    T = Y.shape[1]
    if np.isinf(Y).any():
        raise InputError("a target holds ±inf; give finite numbers (leave a cell empty for a missing value)", params=("Y",))
    # The labels themselves (not codes): GroupKFold orders groups by label before shuffling,
    # so the same seed gives the same folds as scikit-learn run on the user's labels.
    groups = np.arange(n_models) if groups is None else np.asarray([str(g) for g in groups], dtype=object)
    if groups.shape[0] != n_models:
        raise InputError(f"{groups.shape[0]} group labels for {n_models} models", params=("groups",))
    if len(alpha_grids) != T or len(clip_ranges) != T:
        raise InputError(f"need one α grid and one clip range per target ({T})", params=("alpha_grids", "clip_ranges"))
    names = list(target_names) if target_names is not None else [f"target {t}" for t in range(T)]
    return Y, groups, names


def cross_validate(
    X=None,
    Y=None,
    groups=None,
    alpha_grids=None,
    clip_ranges=None,
    random_state=range(5),
    n_folds: int = 5,
    n_inner: int = 5,
    *,
    G=None,
    target_names=None,
    solver: str = "eigen",
    workers: int = 1,
    progress=None,
) -> CrossValidation:
    """Grouped, repeated cross-validation of ridge regression of each column of ``Y`` on ``X``.

    Parameters
    ----------
    X : (K, d) features (or give ``G = X Xᵀ`` instead; ``solver="sklearn"`` needs ``X``).
    Y : (K, T) targets; NaN marks a missing value (that model is left out for that target).
    groups : K labels; no label is in the training and test parts of any split
        (``None``: every model is its own group).
    alpha_grids : T grids (default: :data:`SCORE_ALPHAS` for every target).
    clip_ranges : T ``(lo, hi)`` or ``None`` (default: no clipping).
    random_state : int or sequence of int
        One repetition per seed (its outer fold assignment and inner folds);
        the default is the seeds 0..4.
    solver : ``"eigen"`` (one eigendecomposition per training set serves all α
        and targets) or ``"sklearn"`` (``GridSearchCV(Ridge)``; slow, for checking).
    workers : folds fitted in parallel (threads with one BLAS thread each;
        -1: all cores). Many mid-sized eigendecompositions scale across
        folds, whereas multi-threaded BLAS inside one 800×800 ``eigh`` barely
        does and collapses when the cores are shared (6× slower measured).
    progress : callable receiving :class:`lmmap.progress.Step` events (one per fold), or None.
    """
    from lmmap.parallel import parallel_map

    if X is None and G is None:
        raise InputError("give the features X or their Gram matrix G", params=("X", "G"))
    if solver not in ("eigen", "sklearn"):
        raise InputError(f"solver must be 'eigen' or 'sklearn', got {solver!r}", params=("solver",))
    if solver == "sklearn" and X is None:
        raise InputError("{solver='sklearn'} needs the features X", params=("solver", "X"))
    if X is not None:
        X = np.asarray(X, dtype=np.float64)
    K = X.shape[0] if X is not None else np.asarray(G).shape[0]
    if Y is None:
        raise InputError("give the targets Y", params=("Y",))
    T = np.asarray(Y).reshape(K, -1).shape[1]
    alpha_grids = [SCORE_ALPHAS] * T if alpha_grids is None else list(alpha_grids)
    clip_ranges = [None] * T if clip_ranges is None else list(clip_ranges)
    Y, codes, names = _check_cv_inputs(K, Y, groups, alpha_grids, clip_ranges, target_names)
    if G is None and solver == "eigen":
        G = gram_matrix(X)
    seeds = seeds_of(random_state)
    S = len(seeds)
    tasks = []
    oof = np.full((S, K, T), np.nan)
    folds = np.full((S, K, T), -1, dtype=np.int64)
    chosen = np.full((S, n_folds, T), np.nan)
    for rows, cols in mask_patterns(Y):
        which = ", ".join(repr(names[c]) for c in cols)
        if rows.size == 0:
            raise InputError(f"no model has a value for {which}", params=("Y",))
        try:
            pattern_folds = [outer_folds(codes[rows], n_folds, seed) for seed in seeds]
        except InputError as exc:
            n_groups = np.unique(codes[rows]).size
            fewer = f"{{n_folds={n_groups}}} or fewer, " if n_groups >= 2 else ""
            raise InputError(
                f"{which}: {exc}; give {fewer}a finer group column, or no grouping ({{group_by='none'}})",
                params=("n_folds", "group_by"),
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
        return clip_predictions(pred, [clip_ranges[c] for c in cols]), alphas

    results = parallel_map(run, tasks, workers=workers, progress=progress, task="cross-validation", unit="folds",
                           blas_threads=1)
    for (s, f, _, _, test, cols, _), (pred, alphas) in zip(tasks, results):
        oof[s, test[:, None], cols[None, :]] = pred
        chosen[s, f, cols] = alphas
    return CrossValidation(oof=oof, folds=folds, alphas=chosen, Y=Y, seeds=seeds)


def residual_interval(residuals, level: float = 0.9) -> tuple[float, float]:
    """The ``(1−level)/2`` and ``(1+level)/2`` quantiles of cross-validation residuals (true − predicted).

    Added to a new prediction they give an interval that holds the truth for a
    fraction ``level`` of held-out models (groups unseen in training, so it errs wide).
    """
    if not 0 < level < 1:
        raise InputError(f"the interval {{level}} must be in (0, 1), got level = {level}", params=("level",))
    r = np.asarray(residuals, dtype=np.float64).ravel()
    r = r[np.isfinite(r)]
    if r.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(r, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


__all__ = [
    "CrossValidation", "LOGLIK", "LOGLIK_ALPHAS", "RidgePath", "SCORE", "SCORE_ALPHAS", "alpha_grid",
    "centered_kernels", "clip_predictions", "cross_validate", "fit_predict", "gram_matrix",
    "inner_splits", "mask_patterns", "outer_folds", "pearson", "predict_with_alphas", "residual_interval",
    "select_alphas",
]

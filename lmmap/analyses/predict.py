"""Predicting benchmark scores from model coordinates (SPEC §7), and flagging possible contamination.

:func:`predict` takes a :class:`~lmmap.map.ModelMap` and a table of benchmark
scores (indexed by model) and returns a :class:`PredictionResult`: for every
target (each benchmark, their mean ``benchmark_mean``, the models' mean
log-likelihood ``mean_loglik``) the grouped, repeated cross-validation of
ridge regression on the coordinates ``Q`` (or ``Q̃_d W^{1/2}`` on a subset),
the out-of-fold predictions with contamination flags (true score above the
prediction by more than ``threshold`` residual sds), and predictions with
intervals for the models that have no score.

The numerics (folds, the α path, cross-validation, Pearson r, intervals) are
in :mod:`lmmap.maths.ridge`; this module prepares the targets, resolves the
grouping, explains what it dropped, and builds the tables. The files are
written by :mod:`lmmap.report.predict` (``lmmap.report.write(result, outdir)``).
:func:`predict_store` builds the map from a store and calls :func:`predict`.
"""

from __future__ import annotations

import difflib
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from lmmap.exceptions import InputError, LmmapWarning
from lmmap.maths.randomness import check_seed, seeds_of
from lmmap.maths.ridge import (
    LOGLIK,
    LOGLIK_ALPHAS,
    SCORE,
    SCORE_ALPHAS,
    CrossValidation,
    alpha_grid,
    cross_validate,
    fit_predict,
    gram_matrix,
    mask_patterns,
    pearson,
    residual_interval,
)

SCORE_RANGE = (0.0, 100.0)
MEAN_TARGET = "benchmark_mean"
LOGLIK_TARGET = "mean_loglik"
# Table columns with these names hold log-likelihoods, not scores (the authors' data calls it mean_logp).
LOGLIK_COLUMNS = frozenset({"mean_logp", "mean_loglik", "mean_log_likelihood"})
MISSING_GROUP = "(missing)"
DEFAULT_REPEATS = 5
# Each repetition is a whole cross-validation (folds × inner folds of ridge fits) and keeps K×T predictions:
# 2**31 of them filled the memory; far fewer already pin the mean r down.
MAX_REPEATS = 10_000


# =============================================================================== targets and groups


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
            raise InputError(f"{source}: column {c!r} holds true/false values, not scores; drop it or pick the columns to predict ({{targets=...}})",
                             params=("targets",))
        if pd.api.types.is_numeric_dtype(col):
            continue
        numbers = pd.to_numeric(col, errors="coerce")
        bad = numbers.isna() & col.notna() & (col.astype(str).str.strip() != "")
        if bad.any():
            model = bad.index[np.flatnonzero(bad.to_numpy())[0]]
            line = int(np.flatnonzero(bad.to_numpy())[0]) + 2
            raise InputError(
                f"{source}: column {c!r} has a non-numeric entry {col[model]!r} for model {model!r} "
                f"(line {line}); fix it, leave the cell empty if the score is missing, "
                "or pick the columns to predict ({targets=...})",
                params=("targets",),
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
            raise InputError(f"{source}: model {dup!r} has more than one row; keep one", params=("source",))
        cols = score_columns(table, source, exclude=exclude)
        if targets is not None:
            absent = [t for t in targets if t not in table.columns]
            if absent:
                raise InputError(
                    f"{source}: no column {absent[0]!r} (its columns: {', '.join(map(str, table.columns))})", params=("source",)
                )
            cols = [c for c in cols if c in set(targets)]
        if not cols:
            raise InputError(f"{source}: no score columns (its columns: {', '.join(map(str, table.columns)) or 'none'})", params=("source",))
        reserved = [c for c in cols if c == MEAN_TARGET or (c == LOGLIK_TARGET and mean_loglik is not None)]
        if reserved:
            raise InputError(f"{source}: column {reserved[0]!r} clashes with a target lmmap computes; rename it", params=("source",))
        values = table[cols].apply(pd.to_numeric, errors="coerce")
        inf = np.isinf(values.to_numpy(dtype=np.float64))
        if inf.any():
            i, j = np.argwhere(inf)[0]
            raise InputError(f"{source}: column {cols[j]!r} is infinite for model {values.index[i]!r}; give a finite score", params=("source",))
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
            raise InputError(f"mean_loglik has shape {ml.shape} for {len(names)} models", params=("mean_loglik",))
        frame[LOGLIK_TARGET] = ml
        kinds[LOGLIK_TARGET] = LOGLIK
        missing[LOGLIK_TARGET] = []
    if not kinds:
        raise InputError("nothing to predict: give a scores table or ask for the mean log-likelihood", params=("scores",))
    return Targets(Y=frame, kinds=kinds, ignored=ignored, missing=missing, unlisted=unlisted)


def _check_range(col: pd.Series, name, score_range, source):
    lo, hi = score_range
    out = col[(col < lo) | (col > hi)]
    if len(out):
        raise InputError(
            f"{source}: column {name!r} has {len(out)} value(s) outside [{lo:g}, {hi:g}] "
            f"(e.g. {out.iloc[0]!r} for model {out.index[0]!r}); scores are percentages and "
            f"predictions are clipped to that range — rescale the column, or turn clipping off ({{score_range=None}})",
            params=("score_range",),
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

    ``(column, number of groups)``, most groups first: the ``group_by``
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
    """What to do when a grouping has too few groups: only suggestions that would work (parameters in braces:
    the message lists group_by and n_folds in its ``params``, see lmmap.params)."""
    options = []
    better = group_candidates(names, n_folds, *tables, skip=[*skip, *([column] if column else [])])
    if better:
        options.append("group by " + " or ".join(f"{{group_by={c!r}}} ({k} groups)" for c, k in better[:3]))
    if n_groups >= 2:
        options.append(f"use {{n_folds={n_groups}}}")
    options.append("use {group_by='none'} (each model its own group; optimistic when models have near-copies)")
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
            raise InputError(f"{len(labels)} group labels for {len(names)} models", params=("group_by",))
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
        hint = "; columns that would work: " + ", ".join(f"group_by={c!r} ({k} groups)" for c, k in better[:3])
    else:
        hint = f" (metadata columns: {', '.join(dict.fromkeys(available))})" if available else " (the store has no metadata)"
    raise InputError(
        f"no column {group_by!r} to group the folds by{hint}; give one with {{metadata=MODELS.csv}} "
        "(a 'model' column and the group column), or {group_by='none'}",
        params=("group_by", "metadata"),
    )


@dataclass
class PredictionResult:
    """Everything one prediction run found; ``lmmap.report.write(result, outdir)`` puts it on disk.

    summary : one row per target: kind, n_models, n_groups, n_missing, r_mean, r_sd,
        spearman_mean, spearman_sd, rmse, alpha (the most often chosen), r per seed.
    predictions : one row per (target, model with a value): true, predicted (mean over
        seeds of the out-of-fold predictions), predicted_sd, residual, z, flagged, fold_seed<s>.
    new : one row per (target, model without a value): the prediction of a model fitted
        on every scored model, with an interval from the cross-validation residuals.
    cv : the raw :class:`~lmmap.maths.ridge.CrossValidation`.
    targets : the aligned targets (:class:`Targets`).
    groups : the group label of each model (empty when every model is its own group).
    settings : the parameters of the run (written to ``predict.json``).
    notes : what was dropped or is doubtful; each was also issued as a :class:`~lmmap.exceptions.LmmapWarning`.
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


def repetition_seeds(n_repeats: int | None = None, random_state=0) -> list[int]:
    """The seeds of the cross-validation's repetitions.

    An int ``random_state`` (or a Generator, or None: one seed drawn from it)
    starts ``n_repeats`` consecutive seeds (default 5: ``random_state=0``
    gives 0..4); a sequence of ints is the seeds themselves (``n_repeats``,
    if given, must equal its length).
    """
    explicit = not (random_state is None or isinstance(random_state, (int, np.integer, np.random.Generator)))
    seeds = seeds_of(random_state)
    if n_repeats is None:
        n_repeats = len(seeds) if explicit else DEFAULT_REPEATS
    if isinstance(n_repeats, bool) or not isinstance(n_repeats, (int, np.integer)) or n_repeats < 1:
        raise InputError(f"n_repeats must be at least 1, got {n_repeats!r}", params=("n_repeats",))
    if n_repeats > MAX_REPEATS:
        raise InputError(f"n_repeats = {n_repeats:,} is more repetitions than the mean r needs; give at most "
                         f"{MAX_REPEATS:,}", params=("n_repeats",))
    if explicit:
        if n_repeats != len(seeds):
            raise InputError(f"n_repeats = {n_repeats} but random_state lists {len(seeds)} seeds",
                             params=("n_repeats", "random_state"))
        return seeds
    check_seed(seeds[0], "random_state", span=int(n_repeats))  # every repetition's seed must suit numpy
    return [seeds[0] + r for r in range(int(n_repeats))]


def check_cv_settings(*, n_repeats=None, random_state=0, n_folds=5, n_inner=5, threshold=2.0, level=0.9,
                      workers=1, n_models: int | None = None) -> None:
    """Refuse cross-validation settings that cannot work, before any work (each error names its parameter).

    ``n_models``: how many models there can be at most (folds and inner folds cannot outnumber them).
    """
    from lmmap.parallel import check_workers

    repetition_seeds(n_repeats, random_state)
    for name, value in (("n_folds", n_folds), ("n_inner", n_inner)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 2:
            raise InputError(f"{name} must be a whole number of folds, at least 2, got {value!r}", params=(name,))
        if n_models is not None and value > n_models:
            # A fold needs a model: more folds than models is never possible (and a huge count was allocated
            # before the grouping refused it).
            raise InputError(f"{name} = {value:,} is more folds than the {n_models} models; give at most "
                             f"{max(2, n_models)}", params=(name,))
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.integer, np.floating)) \
            or not math.isfinite(threshold):
        raise InputError(f"threshold must be a finite number of residual sds (e.g. 2), got {threshold!r}",
                         params=("threshold",))
    if isinstance(level, bool) or not isinstance(level, (int, float, np.integer, np.floating)) or not 0 < level < 1:
        raise InputError(f"level must lie strictly between 0 and 1 (the coverage of the intervals, e.g. 0.9), "
                         f"got {level!r}", params=("level",))
    check_workers(workers)


# =============================================================================== the analysis


def predict_scores(
    features,
    names: Sequence[str],
    scores: pd.DataFrame | None,
    *,
    groups=None,
    mean_loglik_values=None,
    n_repeats: int | None = None,
    random_state=0,
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
    workers: int = 1,
    progress=None,
    store_models: Sequence[str] | None = None,
    left_out: Sequence[str] = (),
) -> PredictionResult:
    """Cross-validated prediction of every target from the models' coordinates, plus predictions for unscored models.

    The array-level entry (:func:`predict` does the same for a :class:`~lmmap.map.ModelMap`).

    Parameters
    ----------
    features : (K, d) coordinates of the models ``names`` (``ModelMap.features()``, ``Q W^{1/2}``).
    scores : table indexed by model, one numeric column per benchmark (or None).
    groups : K group labels (``None``: each model its own group); see :func:`resolve_groups`.
    mean_loglik_values : K mean log-likelihoods, predicted as an extra target (None: skip).
    n_repeats, random_state : the repetitions of the cross-validation; see :func:`repetition_seeds`
        (default: 5 repetitions with the seeds 0..4).
    n_folds, n_inner : outer folds, and inner folds that choose α.
    threshold : flag models whose true score exceeds the prediction by more than this many residual sds.
    level : coverage of the prediction intervals of the new predictions.
    group_column : the name of the grouping (for the report and figure legends).
    workers : folds fitted in parallel (threads; -1: all cores).
    progress : callable receiving :class:`lmmap.progress.Step` events, or None.
    store_models : every model of the store the map comes from: scores for a
        model outside it are named as unknown (a typo?), apart from models
        that are stored but not in this map.
    left_out : stored models the caller left out of the map and explains itself (no second note).

    Each note of the result (``result.notes``) is also issued as a
    :class:`~lmmap.exceptions.LmmapWarning`.
    """
    names = [str(n) for n in names]
    X = np.asarray(features, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] != len(names):
        raise InputError(f"{X.shape[0] if X.ndim else 0} feature rows for {len(names)} models", params=("features", "names"))
    if not np.isfinite(X).all():
        raise InputError("the coordinates hold non-finite values; rebuild the map", params=("features",))
    check_cv_settings(n_repeats=n_repeats, random_state=random_state, n_folds=n_folds, n_inner=n_inner,
                      threshold=threshold, level=level, workers=workers, n_models=len(names))
    seeds = repetition_seeds(n_repeats, random_state)
    tg = prepare_targets(
        scores, names, mean_loglik_values, targets=targets, include_mean=include_mean,
        score_range=score_range, source=source, exclude=exclude,
    )
    cols = list(tg.Y.columns)
    kinds = [tg.kinds[c] for c in cols]
    Y = tg.Y.to_numpy(dtype=np.float64)
    labels = [str(i) for i in range(len(names))] if groups is None else [str(g) for g in groups]
    shown_labels = labels if groups is not None else [""] * len(names)
    grids = [alpha_grid(k) for k in kinds]
    clips = [score_range if k == SCORE else None for k in kinds]
    G = gram_matrix(X)
    cv = cross_validate(
        X if solver == "sklearn" else None, Y, None if groups is None else labels, grids, clips, seeds, n_folds, n_inner,
        G=G, target_names=cols, solver=solver, workers=workers, progress=progress,
    )
    notes = _notes(tg, names, store_models, left_out)
    summary = _summary(cv, cols, kinds, labels, tg)
    predictions = _flag(_prediction_table(cv, cols, kinds, names, shown_labels), threshold)
    new = _new_predictions(G, Y, cv, cols, kinds, names, shown_labels, clips, n_inner, seeds[0], level)
    for t, c in enumerate(cols):
        if not np.all(np.isfinite(summary.loc[t, [f"r_seed{s}" for s in seeds]].to_numpy(dtype=float))):
            notes.append(f"{c}: Pearson r is undefined for some seed (constant predictions or truth)")
    notes += _alpha_edge_notes(cv, cols, kinds)
    for note in notes:
        warnings.warn(note, LmmapWarning, stacklevel=2)
    settings = {
        "n_models": len(names), "n_features": int(X.shape[1]), "seeds": seeds, "n_folds": n_folds,
        "n_inner": n_inner, "threshold": float(threshold), "level": float(level),
        "group_by": (group_column or "group") if groups is not None else None,
        "score_range": list(score_range) if score_range is not None else None,
        "alpha_grids": {SCORE: SCORE_ALPHAS.tolist(), LOGLIK: LOGLIK_ALPHAS.tolist()},
        "solver": solver, "ignored_models": tg.ignored,
    }
    return PredictionResult(
        summary=summary, predictions=predictions, new=new, cv=cv, targets=tg,
        groups=labels if groups is not None else [], settings=settings, notes=notes,
    )


def predict(
    mm,
    scores: pd.DataFrame | None,
    *,
    group_by: str | Sequence[str] | pd.Series | None = "model_type",
    metadata: pd.DataFrame | None = None,
    include_loglik: bool = True,
    n_repeats: int | None = None,
    random_state=0,
    n_folds: int = 5,
    n_inner: int = 5,
    threshold: float = 2.0,
    level: float = 0.9,
    targets: Sequence[str] | None = None,
    include_mean: bool = True,
    score_range: tuple[float, float] | None = SCORE_RANGE,
    source: str = "scores",
    solver: str = "eigen",
    workers: int = 1,
    progress=None,
    store_models: Sequence[str] | None = None,
    left_out: Sequence[str] = (),
) -> PredictionResult:
    """Benchmark scores predicted from the coordinates of the map ``mm`` (SPEC §7).

    Parameters
    ----------
    mm : :class:`~lmmap.map.ModelMap`; its features ``Q W^{1/2}``, its mean
        log-likelihoods ``Σ_t w_t L_t / Σ_t w_t`` and its metadata are used.
    scores : table indexed by model, one numeric column per benchmark (None: the
        mean log-likelihood only).
    group_by : the column whose groups never straddle a split, looked up in
        ``scores``, then ``metadata``, then the map's metadata; a sequence or
        Series of labels; or None / ``"none"`` (each model its own group).
    metadata : extra model table to find the group column in.
    include_loglik : also predict the mean log-likelihood ``mean_loglik``.

    The other parameters are those of :func:`predict_scores`.
    """
    check_cv_settings(n_repeats=n_repeats, random_state=random_state, n_folds=n_folds, n_inner=n_inner,
                      threshold=threshold, level=level, workers=workers, n_models=len(mm.names))
    groups, column = resolve_groups(group_by, mm.names, scores, metadata, mm.metadata, n_folds=n_folds)
    if groups is not None:
        n_groups = len(set(groups))
        if n_groups < n_folds:
            raise InputError(
                f"{{group_by={column!r}}} gives {n_groups} group(s) among the {len(mm.names)} models, fewer than the "
                f"{n_folds} folds of the cross-validation; "
                + _grouping_advice(mm.names, n_folds, n_groups, column, scores, metadata, mm.metadata),
                params=("group_by", "n_folds"),
            )
    ml = mean_loglik(mm.L, mm.w) if include_loglik else None
    exclude = [column] if column is not None and scores is not None and column in scores.columns else []
    return predict_scores(
        mm.features(), mm.names, scores, groups=groups, mean_loglik_values=ml, group_column=column,
        exclude=exclude, n_repeats=n_repeats, random_state=random_state, n_folds=n_folds, n_inner=n_inner,
        threshold=threshold, level=level, targets=targets, include_mean=include_mean, score_range=score_range,
        source=source, solver=solver, workers=workers, progress=progress, store_models=store_models,
        left_out=left_out,
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
                if not close:  # the same name under another organisation, or in another case
                    tail = m.rsplit("/", 1)[-1].lower()
                    close = [s for s in store_models if str(s).rsplit("/", 1)[-1].lower() == tail][:1]
                hints.append(f"{m!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            more = f" (+{len(unknown) - 10} more)" if len(unknown) > 10 else ""
            matched = len(names) - len(tg.unlisted)
            notes.append(
                f"matched {matched} of {len(names)} models of the map; "
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


def _new_predictions(G, Y, cv, cols, kinds, names, labels, clips, n_inner, random_state, level) -> pd.DataFrame:
    """Fit each target on every model that has it; predict the models that do not."""
    rows = []
    names = np.asarray(names, dtype=object)
    resid = cv.Y[None] - cv.oof  # every seed's out-of-fold residuals
    for train, tcols in mask_patterns(Y):
        test = np.setdiff1d(np.arange(Y.shape[0]), train)
        if test.size == 0:
            continue
        # Targets known for the same models share one fit (one decomposition per inner fold).
        pred, alphas = fit_predict(
            G, Y[np.ix_(train, tcols)], train, test, [alpha_grid(kinds[t]) for t in tcols],
            [clips[t] for t in tcols], n_inner, random_state,
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
    """Benchmark scores indexed by model: ``SCORES.csv`` (a ``model`` column and one numeric column per
    benchmark), lm-evaluation-harness ``results_*.json`` (a file, or a directory of them), or an Open LLM
    Leaderboard CSV (:func:`lmmap.data.formats.read_score_file`)."""
    from lmmap.data.formats import read_score_file

    return read_score_file(path)


def match_score_names(scores: pd.DataFrame, records: dict[str, dict]) -> pd.DataFrame:
    """``scores`` with each row named as the store names its model, where the table names it otherwise: by the
    source a model's record names (the hub id or directory lm-eval was given, ``pretrained=...``), else by
    the last part of a path or hub id when a stored model is named just that. A row whose store name
    another row already has is left as it is (that one wins)."""
    names = [str(m) for m in scores.index]
    stored = set(records)
    by_source: dict[str, list[str]] = {}
    for name, rec in records.items():
        src = rec.get("source")
        if src and rec.get("scorer") != "import":
            by_source.setdefault(str(src).rstrip("/"), []).append(name)
    renamed, taken = {}, set(names) & stored
    for m in names:
        if m in stored:
            continue
        cands = by_source.get(m.rstrip("/"), [])
        plain = [c for c in cands if "@" not in c] or cands
        if len(plain) != 1:
            tail = m.rstrip("/").replace("\\", "/").rsplit("/", 1)[-1]
            # A directory's own name is the name `lmmap score` gives the model it holds.
            plain = [tail] if ("/" in m or "\\" in m) and tail in stored else []
        if len(plain) == 1 and plain[0] not in taken:
            renamed[m] = plain[0]
            taken.add(plain[0])
    if not renamed:
        return scores
    first = next(iter(renamed.items()))
    warnings.warn(f"{len(renamed)} score row(s) named by their source matched stored models (e.g. {first[0]!r} is "
                  f"{first[1]!r})", LmmapWarning, stacklevel=3)
    out = scores.copy()
    out.index = pd.Index([renamed.get(m, m) for m in names], name=scores.index.name)
    return out


_CV_SETTINGS = ("n_repeats", "random_state", "n_folds", "n_inner", "threshold", "level", "workers")


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
) -> PredictionResult:
    """``lmmap predict``: :func:`predict` on the map of ``store`` (on ``subset``'s texts if given).

    The map is :meth:`ModelMap.from_store <lmmap.map.ModelMap.from_store>`'s
    (every model scored on the texts it needs).

    Parameters
    ----------
    scores : a table indexed by model, a path to ``SCORES.csv``, or None to use
        the store metadata's ``score_*`` columns.
    subset : a :class:`~lmmap.analyses.select.Subset` or the path of ``SUBSET.json``:
        features ``Q̃_d W^{1/2}``, and the models scored on its texts.
    metadata : extra metadata (a table or ``MODELS.csv``) to find the group column in.
    clip, allow_mixed : as in :meth:`~lmmap.map.ModelMap.from_store`.
    **kwargs : the parameters of :func:`predict`.
    """
    from lmmap.map import ModelMap

    # Before the scores are read or the map is built; the map has at most the store's models.
    check_cv_settings(**{k: v for k, v in kwargs.items() if k in _CV_SETTINGS}, n_models=len(store.model_names()))
    source = "scores"
    if isinstance(scores, (str, os.PathLike)):
        source = str(scores)
        scores = match_score_names(read_scores(scores), store.records())
    if isinstance(metadata, (str, os.PathLike)):
        from lmmap.data.formats import read_metadata_csv

        metadata = read_metadata_csv(metadata)
    if subset is not None and not hasattr(subset, "text_pos"):
        from lmmap.data.subset import Subset

        subset = Subset.load(subset)
    mm = ModelMap.from_store(store, subset=subset, clip=clip, allow_mixed=allow_mixed)
    stored = store.model_names()
    # Without a subset, models scored on only some texts (placed with `lmmap add`) are not in the map;
    # with the subset they were scored on they would be.
    left_out = [m for m in stored if m not in set(mm.names)] if subset is None else []
    if scores is None:
        scores = scores_from_metadata(mm.metadata)
        source = f"the store's metadata ({SCORE_PREFIX}* columns)"
        if scores is None:
            raise InputError(
                f"nothing to predict: give {{scores=SCORES.csv}} (a 'model' column and one column per benchmark); "
                f"the store's metadata has no {SCORE_PREFIX}* columns either",
                params=("scores",),
            )
    kwargs.setdefault("store_models", stored)
    kwargs.setdefault("left_out", left_out)
    kwargs.setdefault("source", source)
    result = predict(mm, scores, group_by=group_by, metadata=metadata, include_loglik=include_loglik, **kwargs)
    if left_out:
        note = (
            f"{len(left_out)} model(s) scored on only some texts were left out (e.g. {left_out[0]!r}); "
            "give the subset they were scored on (subset=SUBSET.json) to include them"
        )
        # The files are read from Python and from the shell alike; the note printed names the reader's own flag.
        result.notes.append(note.replace("(subset=SUBSET.json)", "(subset=SUBSET.json; on the command line "
                                                                  "--subset SUBSET.json)"))
        warnings.warn(LmmapWarning(note.replace("subset=SUBSET.json", "{subset=SUBSET.json}"), params=("subset",)),
                      stacklevel=2)
    result.settings.update(
        store=str(store.path), scores=source, subset=None if subset is None else f"{subset.method}, d = {subset.d}",
        clip_threshold=mm.threshold, n_texts=int(mm.L.shape[1]),
    )
    return result

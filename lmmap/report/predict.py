"""Files of a :class:`~lmmap.analyses.predict.PredictionResult`: tables, predicted-versus-true figures, parameters.

``correlations.csv`` (one row per target), ``predictions.csv`` (out-of-fold
predictions with z and flags), ``contamination.csv`` (the flagged rows),
``new_predictions.csv`` (models without a score, with intervals),
``predict.json`` (the settings, notes, per-target summary, and which figure
shows which target) and ``pred_<target>.png``/``.html`` per target.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lmmap.report.files import Files

TABLES = ("correlations.csv", "predictions.csv", "contamination.csv", "new_predictions.csv")


def figure_slugs(names) -> list[str]:
    """File-name-safe, distinct (also without case), bounded stems for the target names, in order.

    :func:`lmmap.data.filenames.safe_filename`: a clean name stays as it is, any
    other gets a hash of itself, so ``x y``, ``x_y`` and ``x_y_1`` make three files.
    """
    from lmmap.data.filenames import safe_filename

    taken: set[str] = set()
    return [safe_filename(str(n), taken) for n in names]


def _fmt(x) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.3f}"


def _target_unit(target) -> str:
    from lmmap.analyses.predict import LOGLIK_TARGET, MEAN_TARGET

    if target == LOGLIK_TARGET:
        return "nats per text"
    if target == MEAN_TARGET:
        return "mean of the scores, in their unit"
    return "unit of the scores file"


def write(result, outdir: str | os.PathLike, *, plots: bool = True) -> dict[str, Path]:
    """Write the tables, ``predict.json`` and (with ``plots``) the figures of ``result`` under ``outdir``.

    Returns ``{file name: path}``.
    """
    files = Files(outdir)
    files.table("correlations.csv", result.summary)
    files.table("predictions.csv", result.predictions)
    files.table("contamination.csv", result.flagged())
    files.table("new_predictions.csv", result.new)
    info = {**result.settings, "notes": result.notes, "targets": result.summary.to_dict(orient="records")}
    slugs = figure_slugs(result.summary["target"])
    if plots:
        # Target names are mangled into file names: say which file shows which target.
        info["figures"] = {f"pred_{slug}": str(t) for t, slug in zip(result.summary["target"], slugs)}
    files.json("predict.json", info)
    if plots:
        write_figures(result, files, slugs)
    return files.paths


def write_figures(result, files: Files, slugs=None) -> None:
    """Predicted-versus-true scatter plots (PNG and HTML) per target, coloured by group."""
    from lmmap.report import plots

    slugs = figure_slugs(result.summary["target"]) if slugs is None else slugs
    flagged = result.flagged()
    group_title = result.settings.get("group_by") or None
    for target, slug in zip(result.summary["target"], slugs):
        p = result.predictions[result.predictions["target"] == target]
        if p.empty:
            continue
        row = result.summary[result.summary["target"] == target].iloc[0]
        cv_kind = f"{result.settings['n_folds']}-fold CV" + (f" grouped by {group_title}" if group_title else "")
        title = f"{target}: r = {_fmt(row['r_mean'])} ± {_fmt(row['r_sd'])} ({len(p)} models, {cv_kind})"
        hot = flagged.loc[flagged["target"] == target, "model"].tolist()
        labels = p["model"].tolist()
        groups = p["group"].tolist() if group_title else None
        hover = [f"residual {r:+.3g} ({z:+.2f} sd){' — flagged' if m in hot else ''}"
                 for m, r, z in zip(labels, p["residual"], p["z"])]
        unit = _target_unit(target)
        kw = dict(labels=labels, groups=groups, xlabel=f"true {target} ({unit})",
                  ylabel=f"predicted {target} (out-of-fold; {unit})", title=title, diagonal=True,
                  group_title=group_title)
        x, y = p["true"].to_numpy(), p["predicted"].to_numpy()
        files.figure(
            f"pred_{slug}",
            lambda path: plots.scatter_png(path, x, y, annotate=hot or None, **kw),
            lambda path: plots.scatter_html(path, x, y, hover=hover, **kw),
        )

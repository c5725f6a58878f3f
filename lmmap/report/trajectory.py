"""The files of a training trajectory (:class:`lmmap.analyses.trajectory.TrajectoryResult`): ``write(result, outdir)``.

``trajectory.csv`` (model, step, KL to the previous checkpoint, KL to the
final one), ``trajectory.png`` + ``trajectory.html`` (both KLs against step;
``log_axes=True`` draws them log-log) and ``trajectory.json``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lmmap.report.files import Files


def write(result, outdir: str | os.PathLike, *, log_axes: bool = False, **_ignored) -> dict[str, Path]:
    """Write ``result``'s table, figure and parameters under ``outdir``; returns ``{file name: path}``.

    Parameters
    ----------
    result : lmmap.analyses.trajectory.TrajectoryResult
    outdir : path
        The output folder (created when missing).
    log_axes : bool
        Draw step and KL on log axes.
    """
    files = Files(outdir)
    files.table("trajectory.csv", result.table)
    files.figure("trajectory", lambda p: trajectory_png(p, result, log_axes),
                 lambda p: trajectory_html(p, result, log_axes))
    files.json("trajectory.json", {**result.info, "log_axes": bool(log_axes)},
               text_set_id=result.info.get("text_set_id"))
    return files.paths


def _title(result) -> str:
    return f"Trajectory {result.name}: KL along {len(result.table)} checkpoints ({result.unit_label})"


def _series(result, log_axes: bool):
    """(label, steps, KL) per line; on log axes points with step ≤ 0 or KL ≤ 0 cannot be drawn and are left out."""
    t = result.table
    out = []
    for column, label in (("kl_to_previous", "KL to previous checkpoint"), ("kl_to_final", "KL to final model")):
        x, y = t["step"].to_numpy(float), t[column].to_numpy(float)
        keep = np.isfinite(y)
        if log_axes:
            keep &= (x > 0) & (y > 0)
        out.append((label, x[keep], y[keep], t["model"].to_numpy(object)[keep]))
    return out


def trajectory_png(path, result, log_axes: bool = False) -> Path:
    from lmmap.report.plots import lines_png

    series = {label: (x, y) for label, x, y, _ in _series(result, log_axes)}
    return lines_png(path, series, "training step", f"KL ({result.unit_label})", _title(result),
                     logx=log_axes, logy=log_axes, figsize=(7, 4.5))


def trajectory_html(path, result, log_axes: bool = False) -> Path:
    from lmmap.report.plots import lines_html

    parts = _series(result, log_axes)
    return lines_html(path, {label: (x, y) for label, x, y, _ in parts}, "training step",
                      f"KL ({result.unit_label})", _title(result), logx=log_axes, logy=log_axes,
                      point_labels={label: list(models) for label, _, _, models in parts})

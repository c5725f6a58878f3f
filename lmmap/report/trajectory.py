"""The files of a path through the map (:class:`lmmap.analyses.trajectory.TrajectoryResult`): ``write(result, outdir)``.

``trajectory.csv`` (model, step, KL to the previous checkpoint, KL to the
final one), ``trajectory.png`` + ``trajectory.html`` (both KLs against step;
``log_axes=True`` draws them log-log) and ``trajectory.json``; for a
model's layers (``kind="layers"``) the same as ``layers.*``, against layer.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lmmap.report.files import Files


def write(result, outdir: str | os.PathLike, *, log_axes: bool = False) -> dict[str, Path]:
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
    stem = "trajectory" if result.kind == "trajectory" else "layers"
    files.table(f"{stem}.csv", result.table)
    files.figure(stem, lambda p: trajectory_png(p, result, log_axes),
                 lambda p: trajectory_html(p, result, log_axes))
    files.json(f"{stem}.json", {**result.info, "log_axes": bool(log_axes)},
               text_set_id=result.info.get("text_set_id"))
    return files.paths


def _title(result) -> str:
    if result.kind == "layers":
        return f"Layers of {result.name} (logit lens): KL along {len(result.table)} layers ({result.unit_label})"
    return f"Trajectory {result.name}: KL along {len(result.table)} checkpoints ({result.unit_label})"


def _x_label(result) -> str:
    return "training step" if result.kind == "trajectory" else "layer (0 = embeddings)"


def _series(result, log_axes: bool):
    """(label, steps, KL) per line; on log axes points with step ≤ 0 or KL ≤ 0 cannot be drawn and are left out."""
    t = result.table
    out = []
    last = "final model" if result.kind == "trajectory" else "last layer (the model)"
    for column, label in (("kl_to_previous", f"KL to previous {result.point}"), ("kl_to_final", f"KL to {last}")):
        x, y = t[result.order_column].to_numpy(float), t[column].to_numpy(float)
        keep = np.isfinite(y)
        if log_axes:
            keep &= (x > 0) & (y > 0)
        out.append((label, x[keep], y[keep], t["model"].to_numpy(object)[keep]))
    return out


def trajectory_png(path, result, log_axes: bool = False) -> Path:
    from lmmap.report.plots import lines_png

    series = {label: (x, y) for label, x, y, _ in _series(result, log_axes)}
    return lines_png(path, series, _x_label(result), f"KL ({result.unit_label})", _title(result),
                     logx=log_axes, logy=log_axes, figsize=(7, 4.5), integer_x=result.kind == "layers")


def trajectory_html(path, result, log_axes: bool = False) -> Path:
    from lmmap.report.plots import lines_html

    parts = _series(result, log_axes)
    return lines_html(path, {label: (x, y) for label, x, y, _ in parts}, _x_label(result),
                      f"KL ({result.unit_label})", _title(result), logx=log_axes, logy=log_axes,
                      point_labels={label: list(models) for label, _, _, models in parts},
                      integer_x=result.kind == "layers")

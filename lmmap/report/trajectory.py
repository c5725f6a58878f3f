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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lmmap.report.plots import _mpl_literal, _save_png

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100, layout="constrained")
    for k, (label, x, y, _) in enumerate(_series(result, log_axes)):
        ax.plot(x, y, marker="o", color=f"C{k}", label=label)
    if log_axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(_mpl_literal(f"KL ({result.unit_label})"))
    ax.set_title(_mpl_literal(_title(result)), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    try:
        return _save_png(fig, Path(path), 100)
    finally:
        plt.close(fig)


def trajectory_html(path, result, log_axes: bool = False) -> Path:
    import plotly.graph_objects as go

    from lmmap.report.plots import _write_html, escape

    fig = go.Figure()
    unit = escape(result.unit_label)
    for label, x, y, models in _series(result, log_axes):
        hover = [f"{escape(m)}<br>step {s:g}<br>{escape(label)}: {v:.4g} {unit}" for m, s, v in zip(models, x, y)]
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=escape(label), hovertext=hover,
                                 hoverinfo="text"))
    axis = "log" if log_axes else "linear"
    fig.update_layout(template="plotly_white", title=dict(text=escape(_title(result))),
                      xaxis=dict(title="training step", type=axis), yaxis=dict(title=escape(f"KL ({result.unit_label})"), type=axis))
    return _write_html(fig, Path(path))

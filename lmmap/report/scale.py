"""The files of a KL scale (:class:`lmmap.analyses.scale.ScaleResult`): ``write(result, outdir)``.

``scale.csv`` (median, quartiles and range of KL per relation), ``pairs.csv``
(every classified pair), ``scale.png`` + ``scale.html`` (a strip plot: one
row per relation, a dot per pair, the median marked) and ``scale.json``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lmmap.report.files import Files


def write(result, outdir: str | os.PathLike) -> dict[str, Path]:
    files = Files(outdir)
    files.table("scale.csv", result.references)
    files.table("pairs.csv", result.pairs)
    files.figure("scale", lambda p: strip_png(p, result), lambda p: strip_html(p, result))
    files.json("scale.json", result.info, text_set_id=result.info.get("text_set_id"))
    return files.paths


def _title(result) -> str:
    return f"KL between models by relation ({result.n_models} models, {result.unit_label})"


def _rows(result):
    """(relation, KL values, median) per relation, top to bottom."""
    out = []
    for r in result.references.itertuples(index=False):
        v = result.pairs.loc[result.pairs["relation"] == r.relation, "kl"].to_numpy()
        out.append((r.relation, v, r.median))
    return out


def strip_png(path, result) -> Path:
    """The strip plot: a row per relation, a dot per pair, the median marked; log KL axis when KL spans > 2 decades.

    On the log axis the ticks are plain decimals, a pair with KL ≤ 0 (identical
    models) is drawn at the left edge as a hollow triangle, and the axis runs
    past the largest KL so no dot is cut.
    """
    from lmmap.report.plots import DEFAULT_DPI, _mpl_literal, _new_figure, _save_png, plain_log_ticks

    rows = _rows(result)
    fig, ax = _new_figure((9.0, 1.5 + 0.8 * max(len(rows), 1)), DEFAULT_DPI)
    rng = np.random.default_rng(0)  # jitter only: the picture is the same on every run
    values = np.concatenate([v for _, v, _ in rows]) if rows else np.zeros(0)
    values = values[np.isfinite(values)]
    positive = values[values > 0]
    log = positive.size > 0 and positive.max() / positive.min() > 100
    if log:
        # Room beyond the smallest and largest pair so that no dot is cut at the frame.
        lo, hi = positive.min() / 1.6, positive.max() * 1.6
    else:
        top = float(values.max()) if values.size else 1.0
        lo, hi = (min(0.0, float(values.min())) if values.size else 0.0), top + 0.06 * max(top, 1e-12)
    for k, (relation, v, med) in enumerate(rows):
        y = len(rows) - 1 - k
        jitter = y + rng.uniform(-0.18, 0.18, len(v))
        if log:
            zero = v <= 0
            ax.scatter(v[~zero], jitter[~zero], s=16, alpha=0.6, color=f"C{k}", linewidths=0)
            if zero.any():
                ax.scatter(np.full(zero.sum(), lo), jitter[zero], s=22, marker=">", facecolors="none",
                           edgecolors=f"C{k}", clip_on=False)
        else:
            ax.scatter(v, jitter, s=16, alpha=0.6, color=f"C{k}", linewidths=0)
        ax.plot([med, med], [y - 0.32, y + 0.32], color="black", lw=2)
        ax.annotate(f"median {med:.3g}", (med, y + 0.34), fontsize=8, ha="center", va="bottom")
    ax.set_yticks(range(len(rows)), [_mpl_literal(f"{r} (n={len(v)})") for r, v, _ in reversed(rows)])
    ax.set_ylim(-0.6, len(rows) - 0.25)
    if log:
        ax.set_xscale("log")
        plain_log_ticks(ax.xaxis, lo, hi)
    ax.set_xlim(lo, hi)
    unit = _mpl_literal(result.unit_label)
    note = "; log scale, KL ≤ 0 as hollow triangles at the left edge" if log and (values <= 0).any() else "; log scale" if log else ""
    ax.set_xlabel(f"KL between the two models of a pair ({unit}){note}")
    ax.set_title(_mpl_literal(_title(result)), fontsize=11)
    ax.grid(axis="x", which="major", alpha=0.3)
    return _save_png(fig, Path(path), DEFAULT_DPI)


def strip_html(path, result) -> Path:
    import plotly.graph_objects as go

    from lmmap.report.plots import _write_html, escape

    rows = _rows(result)
    fig = go.Figure()
    for relation, v, med in rows:
        sub = result.pairs[result.pairs["relation"] == relation]
        hover = [f"{escape(a)} ↔ {escape(b)}<br>KL {kl:.4g} {escape(result.unit_label)}"
                 for a, b, kl in zip(sub["model_a"], sub["model_b"], sub["kl"])]
        label = escape(f"{relation} (n={len(v)})")
        fig.add_trace(go.Box(x=v, name=label, boxpoints="all", jitter=0.5, pointpos=0, fillcolor="rgba(0,0,0,0)",
                             line=dict(width=1), hovertext=hover, hoverinfo="text", orientation="h"))
    fig.update_layout(template="plotly_white", title=dict(text=escape(_title(result))), showlegend=False,
                      xaxis_title=escape(f"KL ({result.unit_label})"), yaxis=dict(autorange="reversed"))
    return _write_html(fig, Path(path))

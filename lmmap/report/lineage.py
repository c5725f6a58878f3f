"""The files of a lineage test (:class:`lmmap.analyses.lineage.LineageResult`): ``write(result, outdir)``.

``lineage.csv`` (one row per model: parent, statistic, p-values, decision, declared base and agreement),
``pairs.parquet`` (every pair tested: only candidate pairs, never K×K), ``lineage.png`` + ``lineage.html`` (the
inferred lineage as a tree: models on the map's 2-D positions, an arrow from each parent to its child; declared
``base_model`` edges drawn dashed grey beside the inferred ones, solid) and ``lineage.json``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lmmap.report.files import Files


def write(result, outdir: str | os.PathLike) -> dict[str, Path]:
    files = Files(outdir)
    files.table("lineage.csv", result.table)
    pairs = result.pairs.copy()
    pairs["ancestor"] = pairs["ancestor"].astype(str)
    pairs["direction"] = pairs["direction"].astype(str)
    files.parquet("pairs.parquet", pairs)
    if result.coords is not None:
        pos = result.coords
        files.figure("lineage", lambda p: tree_png(p, result, pos), lambda p: tree_html(p, result, pos))
    files.json("lineage.json", result.info, text_set_id=result.info.get("text_set_id"))
    return files.paths


def _edges(result):
    """``(inferred, declared)``: lists of (parent index, child index)."""
    idx = {n: i for i, n in enumerate(result.names)}
    t = result.table
    inferred = []
    for m, p1, p2, dec in zip(t["model"], t["parent"], t["parent2"], t["decision"]):
        if dec == "derived":
            inferred += [(idx[p], idx[m]) for p in (p1, p2) if p]
    declared = [(idx[b], idx[m]) for m, b in zip(t["model"], t["declared_base"]) if b and b in idx]
    return inferred, declared


def tree_png(path, result, pos) -> Path:
    from lmmap.report.plots import DEFAULT_DPI, _mpl_literal, _new_figure, _save_png

    fig, ax = _new_figure((9.0, 7.0), DEFAULT_DPI)
    inferred, declared = _edges(result)
    for a, b in declared:
        ax.plot(*pos[[a, b]].T, color="0.6", lw=1.2, ls="--", zorder=1)
    for a, b in inferred:
        ax.annotate("", xy=pos[b], xytext=pos[a], zorder=2,
                    arrowprops=dict(arrowstyle="-|>", color="C3", lw=1.4, shrinkA=4, shrinkB=4))
    dec = result.table["decision"].to_numpy()
    colors = np.where(dec == "derived", "C0", np.where(dec == "undecided", "C1", "C2"))
    ax.scatter(pos[:, 0], pos[:, 1], c=list(colors), s=30, zorder=3)
    if result.map.K <= 60:
        for (x, y), n in zip(pos, result.names):
            ax.annotate(_mpl_literal(n), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_title(_mpl_literal(f"Inferred lineage of {result.map.K} models (arrows: parent → child, α = "
                              f"{result.alpha:g}; dashed: declared base_model)"), fontsize=10)
    ax.set_xticks([]), ax.set_yticks([])
    return _save_png(fig, Path(path), DEFAULT_DPI)


def tree_html(path, result, pos) -> Path:
    import plotly.graph_objects as go

    from lmmap.report.plots import _write_html, escape

    inferred, declared = _edges(result)
    fig = go.Figure()
    for edges, name, style in ((declared, "declared base_model", dict(color="grey", dash="dash", width=1)),
                               (inferred, "inferred parent → child", dict(color="crimson", width=2))):
        xs, ys = [], []
        for a, b in edges:
            xs += [pos[a, 0], pos[b, 0], None]
            ys += [pos[a, 1], pos[b, 1], None]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=style, name=name, hoverinfo="skip"))
    t = result.table
    hover = [escape(f"{m}: {d}" + (f" from {p}" if p else "") + (f" and {p2}" if p2 else "")
                    + f" (statistic {s:.1f}, p {pa:.2g})")
             for m, d, p, p2, s, pa in zip(t["model"], t["decision"], t["parent"], t["parent2"], t["statistic"],
                                           t["p_adjusted"])]
    fig.add_trace(go.Scatter(x=pos[:, 0], y=pos[:, 1], mode="markers", name="models", hovertext=hover,
                             hoverinfo="text", marker=dict(size=8)))
    fig.update_layout(template="plotly_white", title=escape(f"Inferred lineage of {result.map.K} models"),
                      xaxis=dict(visible=False), yaxis=dict(visible=False))
    return _write_html(fig, Path(path))

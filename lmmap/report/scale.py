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


def write(result, outdir: str | os.PathLike, **_ignored) -> dict[str, Path]:
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lmmap.report.plots import _mpl_literal, _save_png

    rows = _rows(result)
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.7 * len(rows)), dpi=100, layout="constrained")
    rng = np.random.default_rng(0)  # jitter only: the picture is the same on every run
    for k, (relation, v, med) in enumerate(rows):
        y = len(rows) - 1 - k
        ax.scatter(v, y + rng.uniform(-0.18, 0.18, len(v)), s=14, alpha=0.6, color=f"C{k}", linewidths=0)
        ax.plot([med, med], [y - 0.32, y + 0.32], color="black", lw=2)
        ax.annotate(f"median {med:.3g}", (med, y + 0.34), fontsize=8, ha="center", va="bottom")
    ax.set_yticks(range(len(rows)), [_mpl_literal(f"{r} (n={len(v)})") for r, v, _ in reversed(rows)])
    positive = np.concatenate([v for _, v, _ in rows]) if rows else np.zeros(0)
    if (positive > 0).sum() and positive[positive > 0].max() / positive[positive > 0].min() > 100:
        ax.set_xscale("symlog", linthresh=float(positive[positive > 0].min()))
        ax.set_xlim(left=0)  # KL is not negative: symlog would otherwise mirror an empty half
    ax.set_xlabel(_mpl_literal(f"KL ({result.unit_label})"))
    ax.set_title(_mpl_literal(_title(result)), fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    try:
        return _save_png(fig, Path(path), 100)
    finally:
        plt.close(fig)


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

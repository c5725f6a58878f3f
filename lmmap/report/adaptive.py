"""The files of an adaptive placement (:class:`lmmap.analyses.adaptive.AdaptiveResult`): ``write(result, outdir)``.

``placement.csv`` (as ``lmmap add``: new_model, existing_model, kl, kl_se,
rank), ``kl.csv`` (new models × existing models), ``adaptive.csv`` (one row
per new model: model, texts_scored, draws, rounds, se_reached, stopped_by),
``adaptive_trace.csv`` (the relative SE and the nearest model's KL after every
round; a model scored on every text ends with a row flagged ``exact``, SE 0),
``adaptive_trace.png`` (relative SE against texts scored over the estimated
rounds, the target as a dotted line, an exact fill-in as a dash-dotted line
at N) and ``adaptive.json`` (the parameters, with provenance).
Every KL is in the result's unit (``result.unit``), which adaptive.json
records as ``kl_unit``.
When the result has a map (``result.coords``, computed by
:func:`lmmap.analyses.adaptive.adaptive_coords`), also ``coords.csv``,
``map.png`` and ``map.html``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from lmmap.report.files import Files

FILES = ("placement.csv", "kl.csv", "adaptive.csv", "adaptive_trace.csv", "adaptive_trace.png")
_METHOD_NAMES = {"mds": "classical MDS of KL", "tsne": "t-SNE", "pca": "PCA"}


def write(result, outdir: str | os.PathLike, *, color_by: str | None = "model_type") -> dict[str, Path]:
    """Write the adaptive placement's files into ``outdir``; returns ``{name: path}``.

    ``color_by``: the metadata column that colours the existing models on the
    map. Other options (``k``, for a placement's neighbours) do not apply and are ignored.
    """
    from lmmap.report import plots

    files = Files(outdir)
    files.table("placement.csv", result.table())
    files.table("kl.csv", result.kl_frame(), index=True)
    files.table("adaptive.csv", result.adaptive_table())
    trace = result.trace_table()
    files.table("adaptive_trace.csv", trace)
    _write_trace_png(files, result, trace, plots)
    if result.coords is not None:
        _write_map(files, result, color_by)
    files.json("adaptive.json", {
        "new_models": result.new_models, "existing_models": len(result.existing_models), "n_texts": result.n_texts,
        "target_se": result.target_se, "neighbors": result.neighbors, "clip_threshold": result.threshold,
        "random_state": result.random_state, "embedding": result.method,
        "embedding_random_state": result.embedding_random_state, "scoring_seconds": result.scoring_seconds,
        "failed": result.failed, "kl_unit": result.unit, "mean_text_bytes": result.mean_text_bytes,
    })
    return files.paths


def _write_trace_png(files: Files, result, trace: pd.DataFrame, plots) -> None:
    """Relative SE against texts scored, one line per model over its estimated rounds only.

    A model scored on every text (``stopped_by="all-texts"``) has an exact last row, SE 0: drawn as a point
    of the line it would read as the estimate's error falling to 0 (off a log axis, at that). The fill-in
    is one dash-dotted vertical line at N instead, whose legend names the models (they share the spot).
    """
    estimated = trace[~trace["exact"]]
    models = list(dict.fromkeys(trace["model"]))
    series, styles, colors = {}, {}, {}
    for m in models:
        g = estimated[estimated["model"] == m]
        if len(g):
            series[m] = (g["texts_scored"].to_numpy(), g["rel_se"].to_numpy())
    # A model whose draws reached every text in its first round has an exact row and nothing estimated.
    exact = list(dict.fromkeys(trace.loc[trace["exact"], "model"]))
    if not series and not exact:
        return
    y = np.concatenate([v for _, v in series.values()] + [[result.target_se]])
    y = y[np.isfinite(y) & (y > 0)]
    lo, hi = float(y.min()), float(y.max())
    target = f"target {result.target_se:g}"
    x_max = float(result.n_texts) if exact else max(float(np.max(x)) for x, _ in series.values())
    series[target] = (np.array([0.0, x_max]), np.full(2, result.target_se))
    styles[target] = ":"
    if exact:
        named = ", ".join(exact[:3]) + (f" and {len(exact) - 3} more" if len(exact) > 3 else "")
        label = f"all {result.n_texts:,} texts scored, KL exact: {named}"
        series[label] = (np.full(2, float(result.n_texts)), np.array([lo, hi]))
        styles[label], colors[label] = "-.", "dimgray"
    plots.lines_png(files.path("adaptive_trace.png"), series, xlabel="texts scored (per new model)",
                    ylabel=f"largest relative SE of KL to the {result.neighbors} nearest\n(SE / KL, no unit)",
                    logy=True, title="Adaptive placement: error bars against texts scored",
                    styles=styles, colors=colors, figsize=(6.0, 4.2))


def _write_map(files: Files, result, color_by: str | None) -> None:
    from lmmap.report.map import units_line
    from lmmap.report.place import placed_map_figure

    coords = result.coords
    names = list(result.existing_models) + list(result.new_models)
    files.table("coords.csv", pd.DataFrame({"model": names, "x": coords[:, 0], "y": coords[:, 1],
                                            "new": [False] * len(result.existing_models) + [True] * len(result.new_models)}))
    meta = result.metadata
    groups = None
    if color_by and meta is not None and color_by in getattr(meta, "columns", []):
        col = meta.set_index("model")[color_by] if "model" in meta.columns else meta[color_by]
        groups = ["unknown" if pd.isna(v) else str(v) for v in col.reindex(names)]
    near = result.nearest(3)
    u = "" if result.unit == "nats-per-text" else f" {result.unit_label}"
    hover = [""] * len(result.existing_models) + [
        "nearest: " + ", ".join(f"{r.existing_model} (KL {r.kl:.3g} ± {r.kl_se:.2g}{u})" for r in g.itertuples())
        for _, g in near.groupby("new_model", sort=False)]
    title = (f"{len(result.existing_models)} models + {len(result.new_models)} placed adaptively "
             f"({_METHOD_NAMES.get(result.method, result.method)}; at most "
             f"{max(r.texts_scored for r in result.runs.values())} of {result.n_texts} texts scored per new model)\n"
             + units_line(result.method, result.unit))
    placed_map_figure(files, coords, names, result.new_models, result.existing_models, result.kl, groups=groups,
                      hover=hover, title=title, method=result.method, color_by=color_by, metadata=meta)

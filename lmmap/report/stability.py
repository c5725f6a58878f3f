"""Files of map stability (:class:`lmmap.analyses.stability.StabilityResult` or ``StabilityComparison``): Table 3, ellipses.

``reference.csv`` (model, x, y of the full-data map), ``table3.csv`` (one row
per setting: mean d, median Bias², Variance, MSE), ``stability_models.csv``
(one row per setting and model: positions, covariance, ellipse, Bias²,
Variance, MSE), one ellipse map per setting ``stability_<method>-n<n>.png``
and ``.html`` (mean positions, 1-sd ellipses — drawn larger by a round
factor the title states when they would hide behind the dots — with axis
labels; an MDS map is on the scale of ``lmmap map``'s, squared distance ≈ KL
in nats per text, and so are its Bias² and Variance), and ``stability.json``
(parameters and provenance).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lmmap.report.errors import METHOD_LABELS
from lmmap.report.files import Files


def _slug(method: str, n: int) -> str:
    return f"{method}-n{n}"


def _squared_unit(method: str) -> str:
    # Bias² and Variance are squared map distances: KL's unit on an MDS map, none on the others.
    return " (nats/text)" if method == "mds" else ""


def figure_title(r, method: str, scale: float) -> str:
    """What a stability map shows: the setting, that ellipses are 1 sd (times ``scale``), and the axes' unit."""
    from lmmap.maths.embedding import METHOD_LABELS as EMBEDDINGS

    sd = "1-sd ellipses" if scale == 1 else f"1-sd ellipses drawn {scale:g}× larger to be visible"
    embedding = EMBEDDINGS.get(method, method)
    if method == "mds":
        axes = f"{embedding}, on the map's scale: squared distance ≈ KL in nats/text, and so are Bias² and Variance"
    elif method == "pca":
        axes = f"{embedding}, as lmmap map draws it: squared distance ≈ 2N·KL (N texts), and so are Bias² and Variance"
    else:
        axes = f"{embedding}, as lmmap map draws it: the axes have no unit"
    return (f"{METHOD_LABELS[r.method]} n = {r.n:,} (d ≈ {np.mean(r.d):,.0f}), R = {r.R}: mean positions, {sd}\n"
            f"{axes}")


def _comparison(result):
    from lmmap.analyses.stability import StabilityComparison, StabilityResult

    if isinstance(result, StabilityResult):
        return StabilityComparison({result.label: result})
    return result


def write(result, outdir: str | os.PathLike, *, names=None, color_by: str | None = "model_type",
          text_set_id: str | None = None) -> dict[str, Path]:
    """Write Table 3, the per-model CSV, the reference coordinates, one ellipse map per setting and ``stability.json``.

    ``names``: the models' names (default: the map's). ``color_by``: the
    metadata column that colours the maps (no colours if the map has no such
    column). ``text_set_id``: the text set's identity, for the JSON's provenance block.
    """
    import pandas as pd

    from lmmap.maths.embedding import resolve_method
    from lmmap.report import plots
    from lmmap.report.map import axis_label

    comparison = _comparison(result)
    results = comparison.results
    first = comparison.first
    mm = comparison.model_map
    names = first.names if names is None else list(names)
    groups = None if mm is None else mm.groups(color_by)
    group_title = color_by if groups is not None else None

    files = Files(outdir)
    files.table("reference.csv", pd.DataFrame({"model": names, "x": first.reference[:, 0], "y": first.reference[:, 1]}))
    files.table("table3.csv", comparison.table3())
    method = resolve_method(first.embedding, len(names))
    frames = []
    for label, r in results.items():
        df = r.per_model(names)
        df.insert(0, "setting", label)
        frames.append(df)
        scale = plots.visible_ellipse_scale(r.mean, r.cov)
        title = figure_title(r, method, scale)
        hover = [f"Bias² {b:.3g}, Variance {v:.3g}, MSE {m:.3g}{_squared_unit(method)}"
                 for b, v, m in zip(r.bias2, r.variance, r.mse)]
        style = dict(groups=groups, ellipses=(r.mean, r.cov), ellipse_scale=scale, title=title,
                     group_title=group_title, axis_label=axis_label(method))
        files.figure(
            f"stability_{_slug(r.method, r.n)}",
            lambda p, r=r, style=style: plots.map_png(p, r.mean, names, **style),
            lambda p, r=r, style=style, hover=hover: plots.map_html(p, r.mean, names, hover=hover, **style),
        )
    files.table("stability_models.csv", pd.concat(frames, ignore_index=True))
    files.json("stability.json", {
        "K": len(names), "N": None if mm is None else int(mm.L.shape[1]), "R": comparison.R,
        "embedding": first.embedding, "random_state": first.embedding_random_state, "seed": first.random_state,
        "clip_threshold": None if mm is None else mm.threshold,
        "settings": [{"method": m, "n": n} for m, n in comparison.settings],
    }, **({} if text_set_id is None else {"text_set_id": text_set_id}))  # fmt: skip
    return files.paths


__all__ = ["write"]

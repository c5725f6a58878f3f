"""The files of a placement (:class:`lmmap.analyses.place.Placement`): ``write(placement, outdir)``.

``placement.csv`` (new_model, existing_model, kl, kl_se, rank, and with the
lineage test lineage_p, likely_parent), ``lineage.csv`` (each new model's
likely parent among the existing ones:
:func:`lmmap.analyses.lineage.likely_parents`), ``kl.csv``
(the subset map of existing and new models), ``coords.csv`` (model, x, y,
new), ``neighbors.csv``, ``map.png`` and ``map.html`` (existing models
coloured and labelled, new ones drawn large and named, each with a dashed
line to its nearest existing model by KL) and ``map.json`` (the map's
parameters, the subset, what was scored, with provenance). Every KL is in
the placement's unit (``result.unit``), which map.json records as ``kl_unit``.
:func:`placed_map_figure` draws the map for the adaptive writer too.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from lmmap.exceptions import InputError
from lmmap.report.files import Files


def write(result, outdir: str | os.PathLike, *, color_by: str | None = "model_type") -> dict[str, Path]:
    """Write ``result``'s files under ``outdir``; returns ``{file name: path}``.

    ``color_by``: the metadata column that colours the existing models. KL is written in ``result.unit``; the
    neighbour table is the result's (``k`` per model, chosen when placing).
    """
    from lmmap.report.map import hover_neighbors, title

    mm = result.map
    unit = result.unit
    groups = mm.groups(color_by)
    if color_by and groups is None and color_by != "model_type":
        raise InputError(f"no metadata column {color_by!r} to colour by; give one with metadata (a MODELS.csv)",
                         params=("color_by",))
    files = Files(outdir)
    files.table("placement.csv", result.table())
    if result.lineage is not None:
        files.table("lineage.csv", result.lineage)
    if result.kl_all is not None:  # None past lmmap.map.DENSE_MAX_K models: (K + m)² numbers
        files.table("kl.csv", result.kl_all, index=True)
    is_new = np.isin(mm.names, result.new_models)
    files.table("coords.csv", pd.DataFrame({"model": mm.names, "x": result.coords[:, 0], "y": result.coords[:, 1],
                                            "new": is_new}))
    table = result.neighbors
    files.table("neighbors.csv", table)
    placed_map_figure(
        files, result.coords, mm.names, result.new_models, result.existing_models, result.kl, groups=groups,
        hover=hover_neighbors(table, mm.names, n=3, unit="" if unit == "nats-per-text" else result.unit_label),
        method=result.method, color_by=color_by, metadata=mm.metadata,
        title=title(mm, result.method, models=f"{len(result.existing_models)} models + {len(result.new_models)} new",
                    unit=unit),
    )
    info = mm.describe(
        embedding=result.method,
        embedding_random_state=result.embedding_random_state,
        color_by=color_by,
        new_models=result.new_models,
        existing_models=len(result.existing_models),
        scored=result.scored,
        scoring_seconds=result.scoring_seconds,
        rebuilt=result.rebuilt,
        R=result.R,
        random_state=result.random_state,
        kl_unit=unit,
    )
    if result.lineage is not None:
        info["likely_parents"] = {r.model: (r.likely_parent or None) for r in result.lineage.itertuples(index=False)}
    sub = result.subset
    if sub is not None:
        info["subset"] = {"method": sub.method, "n": sub.n, "seed": sub.random_state, "d": sub.d}
    files.json("map.json", info)
    return files.paths


def placed_map_figure(files: Files, coords, names, new_models, existing_models, kl, *, groups, hover, title, method,
                      color_by, metadata=None) -> None:
    """``map.png`` and ``map.html`` of a placement: existing models coloured and labelled, new models drawn
    large and named, each with a dashed line to its nearest existing model by KL (``kl``: m×K).

    The lines the map's ``metadata`` declares (``base_model``, trajectories,
    layers) are drawn as on ``lmmap map``. A new model takes the colour of its
    own ``color_by`` value when the metadata has one, and otherwise the
    distinct :data:`plots.NEW_GROUP` style, not the grey of "unknown".
    """
    from lmmap.report import plots
    from lmmap.report.map import axis_label, declared_edges

    nearest = [existing_models[j] for j in np.asarray(kl).argmin(axis=1)] if len(new_models) else []
    if groups is not None:
        new = set(new_models)
        groups = [plots.NEW_GROUP if (n in new and g == plots.UNKNOWN) else g for n, g in zip(names, groups)]
    style = dict(
        groups=groups, highlight=list(new_models), title=title, highlight_label="new",
        edges=declared_edges(list(names), metadata) + [plots.Edges("placement", tuple(zip(new_models, nearest)))],
        axis_label=axis_label(method), group_title=color_by if groups is not None else None,
    )
    files.figure(
        "map",
        lambda path: plots.map_png(path, coords, names, **style),
        lambda path: plots.map_html(path, coords, names, hover=hover, **style),
    )

"""The files of a model map: ``write(result, outdir)`` for a :class:`lmmap.analyses.map.MapResult`.

``kl.csv`` (and ``kl_se.csv``; up to :data:`lmmap.map.DENSE_MAX_K` models, or
``kl.npy`` when asked for), ``coords.csv``, ``neighbors.csv``,
``lineage.csv`` when the metadata declares bases or the lineage test ran (the
declared base, the test's inferred parent, p-values, decision and ring of
each model: :func:`lmmap.analyses.map.lineage_table`), ``map.png``, ``map.html``
(with ``plotly.min.js``) and ``map.json`` (the map's parameters: the clipping
threshold above all, with provenance). The writer computes nothing:
:func:`lmmap.analyses.map.build_map` did; here every KL is converted to the
unit asked for, and the result is laid out and drawn. The pieces a map
picture is made of (title, axis label, lines, hover text) are here too, for
the writers of placed maps.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

import numpy as np

from lmmap.analyses.map import check_full_kl, full_kl_cost  # noqa: F401  (computed there; importable from here)
from lmmap.exceptions import InputError
from lmmap.report.files import Files


def write(result, outdir: str | os.PathLike, *, unit: str = "nats-per-text",
          color_by: str | None = "model_type") -> dict[str, Path]:
    """Write the map ``result`` (:func:`lmmap.analyses.map.build_map`); returns ``{file name: path}``.

    ``unit``: the unit of every KL written (``nats-per-text`` or
    ``bits-per-byte``); map.json records it as ``kl_unit``. ``color_by``: the
    metadata column that colours the map. ``lineage.csv`` (declared bases, or
    ``edges="lineage"``) gives each model's declared base, the lineage test's
    inferred parent, p-values and decision, whether it is circled
    (``flagged``), and for declared bases whether its nearest model by KL is in
    its lineage.

    ``kl.csv`` is written when the result holds the K×K KL matrix and the map
    has up to :data:`lmmap.map.DENSE_MAX_K` models (``kl_se.csv`` beside it with
    standard errors); ``kl.npy`` (float32, rows and columns in the order of
    map.json's ``models``) when the result was built with ``full_kl``.
    Deterministic: the same result gives the same files.
    """
    from lmmap.analyses.map import MapResult
    from lmmap.map import LINEAGE_TIE, UNIT_LABELS, check_unit
    from lmmap.report import plots

    if not isinstance(result, MapResult):
        raise InputError(f"write takes a MapResult (lmmap.analyses.map.build_map), not a {type(result).__name__}",
                         params=("result",))
    mm = result.map
    check_unit(unit)
    factor = mm.unit_factor(unit)  # refused before any file is written when the map cannot give this unit
    groups = mm.groups(color_by)
    if color_by and groups is None and color_by != "model_type":
        raise InputError(f"no metadata column {color_by!r} to colour by; give one with metadata (a MODELS.csv)",
                         params=("color_by",))
    files = Files(outdir)
    index = pd.Index(mm.names, name="model")
    kl_csv = result.kl is not None and writes_kl_csv(result)
    if kl_csv:
        files.table("kl.csv", pd.DataFrame(_in_unit(result.kl, factor), index=index, columns=mm.names), index=True)
    if result.full_kl:
        _write_kl_npy(files.path("kl.npy"), result.kl, factor)
    if result.kl_se is not None and kl_csv:
        files.table("kl_se.csv", pd.DataFrame(_in_unit(result.kl_se, factor), index=index, columns=mm.names),
                    index=True)
    coords = result.coords
    files.table("coords.csv", pd.DataFrame({"model": mm.names, "x": coords[:, 0], "y": coords[:, 1]}))
    table = result.neighbors
    if factor != 1.0:
        table = table.assign(**{c: table[c] * factor for c in ("kl", "kl_se") if c in table.columns})
    files.table("neighbors.csv", table)
    lineage = result.lineage
    if len(lineage) and factor != 1.0:
        lineage = lineage.assign(**{c: lineage[c] * factor for c in ("kl_to_base", "kl_to_nearest", "kl_to_lineage")})
    if len(lineage):
        files.table("lineage.csv", lineage)
    edge_sets, flagged = compose_edges(mm, result.edges, result.nearest_pairs, result.lineage, result.paths)
    hover = hover_neighbors(table, mm.names, n=3, unit=UNIT_LABELS[unit] if unit != "nats-per-text" else "")
    if len(lineage):
        hover = _hover_lineage(hover, mm.names, lineage)
    method = result.method
    style = dict(
        groups=groups, title=title(mm, method, unit=unit), edges=edge_sets, flagged=flagged,
        flagged_label=flagged_label(mm), axis_label=axis_label(method),
        group_title=color_by if groups is not None else None,
    )
    files.figure(
        "map",
        lambda path: plots.map_png(path, coords, mm.names, **style),
        lambda path: plots.map_html(path, coords, mm.names, hover=hover, **style),
    )
    info = mm.describe(embedding=method, embedding_requested=result.embedding,
                       embedding_random_state=result.embedding_random_state, color_by=color_by, edges=result.edges,
                       kl_unit=unit)
    if len(lineage):
        declared = lineage[lineage["base_model"].astype(str) != ""]
        info["lineage"] = {
            "declared": int(len(declared)),
            "consistent": int(declared["consistent"].astype(bool).sum()),  # nearest by KL in its own lineage
            "tie": LINEAGE_TIE,
            "flagged": result.flagged(),
        }
        if result.inferred is not None:
            t = result.inferred.table
            test = result.inferred.info
            info["lineage"]["test"] = {
                "alpha": test["alpha"], "correction": test["correction"], "rank": test["rank"], "null": test["null"],
                **{d: int((t["decision"] == d).sum()) for d in ("derived", "independent", "undecided")},
                **{a: int((t["agreement"] == a).sum()) for a in ("agree", "disagree", "unconfirmed")}}
    files.json("map.json", info)
    return files.paths


def _in_unit(values: np.ndarray, factor: float) -> np.ndarray:
    """KL in nats per text (``values``) in the unit whose factor is ``factor``."""
    return values if factor == 1.0 else values * factor


def writes_kl_csv(mm) -> bool:
    """Whether ``kl.csv`` is written for a map of ``mm.K`` models (a map or its result): up to
    :data:`lmmap.map.DENSE_MAX_K` (beyond, a CSV of K×K numbers is gigabytes that nobody reads; ``full_kl``
    gives them as ``kl.npy``)."""
    from lmmap.map import DENSE_MAX_K

    return mm.K <= DENSE_MAX_K


def _write_kl_npy(path: Path, kl: np.ndarray, factor: float) -> None:
    """The K×K KL as float32 ``.npy``, converted a block of rows at a time: no second K×K float64 array."""
    K = kl.shape[0]
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=kl.shape)
    step = max(1, (64 << 20) // (8 * K))
    for s in range(0, K, step):
        out[s:s + step] = _in_unit(kl[s:s + step], factor)
    out.flush()
    del out


def title(mm, method: str = "auto", models: str | None = None, unit: str = "nats-per-text") -> str:
    """What the map shows: models (``models`` replaces "K models"), texts, embedding and clipping, and the units
    of its axes and of the KL in its hover text and tables (``unit``), in three lines."""
    from lmmap.maths.embedding import METHOD_LABELS

    method = mm.embedding_method(method)
    d = mm.L.shape[1]
    texts = f"{d:,} texts" if mm.w is None else f"{d:,} of N = {mm.n_texts:,} texts (resampled)"
    first = f"{models or f'{mm.K} models'}, {texts}"
    if mm.threshold is None:
        clip = "no clipping"
    else:
        clip = f"log-likelihoods clipped at {mm.threshold:.4g} ({_ordinal(mm.clip_percentile)} percentile)"
    return f"Model map: {first}\n{METHOD_LABELS.get(method, method)}; {clip}\n{units_line(method, unit)}"


def units_line(method: str, unit: str = "nats-per-text") -> str:
    """The units of a map's axes (by embedding ``method``) and of the KL it reports (``unit``), for a title."""
    from lmmap.map import UNIT_LABELS

    kl = UNIT_LABELS.get(unit, unit)
    if method == "mds":
        axes = "squared map distance ≈ KL in nats/text"
    elif method == "pca":
        axes = "PCA of the log-likelihoods: squared distance ≈ 2N·KL"
    else:
        axes = f"{axis_label(method)} axes have no unit"
    return f"{axes}; KL in hover and tables: {kl}" if (method != "mds" or kl != "nats/text") else axes


def dense(mm) -> bool:
    """Whether the map (or its result) has too many models for every line and ring
    (:data:`plots.DENSE_MAP_MODELS`)."""
    from lmmap.report.plots import DENSE_MAP_MODELS

    return mm.K > DENSE_MAP_MODELS


def flagged_label(mm) -> str:
    """The legend's words for the red rings of :func:`map_edges` (the same on every map)."""
    from lmmap.report.plots import FLAG_LABEL

    return FLAG_LABEL


def map_edges(mm, mode: str = "auto", *, alpha: float = 0.05, random_state=0):
    """The lines of the map and the models to flag: ``(list of plots.Edges, flagged names)``, computed from
    ``mm`` by :mod:`lmmap.analyses.map` (the lineage test at ``alpha``, seeded by ``random_state``, where
    :func:`lmmap.analyses.map.runs_lineage_test` says) and laid out by :func:`compose_edges` (what
    :func:`write` draws)."""
    from lmmap.analyses.map import lineage_table, nearest_pairs, runs_lineage_test, trajectory_lines

    mode = mm.resolve_edges(mode)
    if mode == "none":
        return [], []
    pairs = nearest_pairs(mm) if mode == "nn" else ()
    lineage = None
    if mode in ("base_model", "lineage"):
        inferred = None
        if runs_lineage_test(mm, mode):
            from lmmap.analyses.lineage import lineage as lineage_test

            inferred = lineage_test(mm, alpha=alpha, random_state=random_state)
        lineage = lineage_table(mm, mm.lineage(), inferred)
    return compose_edges(mm, mode, pairs, lineage, trajectory_lines(mm))


def compose_edges(mm, mode: str, nearest_pairs, lineage, paths):
    """The lines of the map and the models to flag, ``(list of plots.Edges, flagged names)``, from what
    :func:`lmmap.analyses.map.build_map` found: the nearest-neighbour pairs, the lineage table
    (:func:`lmmap.analyses.map.lineage_table`) and the paths.

    ``nn``: each model to its nearest by KL (a mutual pair drawn once).
    ``base_model``: each model to its declared base (solid); the models the
    lineage test flags (column ``flagged``: its inferred parent lies outside
    the model's declared lineage, or a model without a declared lineage is
    derived from a declared one) are circled in red, with a dashed red line to
    that inferred parent. ``lineage``: the same, and a dashed grey line from
    each other model without a declared base that the test calls derived to
    its inferred parent(s). With any of them, when the metadata declares
    training trajectories (columns ``trajectory`` and ``step``), consecutive
    checkpoints of each are joined too (kind ``trajectory``), and so are
    consecutive layers of a lensed model (``layers_of``, ``layer``; kind
    ``layers``); ``none`` draws no line at all.

    Above :data:`plots.DENSE_MAP_MODELS` models the red lines are left out (the
    rings stay) and the declared lines' legend counts them.
    """
    from lmmap.report.plots import Edges

    if mode == "none":
        return [], []
    path_edges = [Edges(kind, tuple(pairs)) for kind, pairs in paths]
    if mode == "nn":
        return [Edges("nn", tuple(nearest_pairs))] + path_edges, []
    table = lineage
    has_base = table["base_model"].astype(str) != "" if len(table) else pd.Series([], dtype=bool)
    declared = table[has_base]
    sets = [Edges("lineage", tuple(zip(declared["model"], declared["base_model"])),
                  label=f"declared base_model ({len(declared)} lines)" if dense(mm) else None)]
    if "flagged" not in table.columns:  # no lineage test (a map of fewer than 4 models): no rings
        return sets + path_edges, []
    flag = table["flagged"].fillna(False).astype(bool).to_numpy()
    derived = (table["decision"] == "derived").to_numpy()

    def to_parents(rows):
        return tuple((m, p) for m, p1, p2 in zip(rows["model"], rows["inferred_parent"], rows["inferred_parent2"])
                     for p in (p1, p2) if isinstance(p, str) and p)

    if mode == "lineage":
        shown = table[derived & ~has_base.to_numpy() & ~(flag & (not dense(mm)))]
        if len(shown):
            sets.append(Edges("inferred", to_parents(shown)))
    if flag.any() and not dense(mm):
        sets.append(Edges("contradiction", to_parents(table[flag])))
    return sets + path_edges, list(table.loc[flag, "model"])


def declared_edges(names, metadata) -> list:
    """The lines a map's metadata declares (:func:`lmmap.analyses.map.declared_lines`) as :class:`plots.Edges`:
    each model to its ``base_model`` and the trajectory and layer paths, among ``names`` only. For placed maps,
    whose KL comes from a subset of texts."""
    from lmmap.analyses.map import declared_lines
    from lmmap.report.plots import Edges

    return [Edges(kind, pairs) for kind, pairs in declared_lines(names, metadata)]


def trajectory_edges(mm) -> list:
    """:class:`plots.Edges` of kind ``trajectory`` (consecutive checkpoints of each trajectory in step order) and
    ``layers`` (consecutive layers of each lensed model): :func:`lmmap.analyses.map.trajectory_lines`."""
    from lmmap.analyses.map import trajectory_lines
    from lmmap.report.plots import Edges

    return [Edges(kind, pairs) for kind, pairs in trajectory_lines(mm)]


def axis_label(method: str) -> str:
    from lmmap.maths.embedding import AXIS_LABELS

    return AXIS_LABELS.get(method, method)


def _ordinal(value: float) -> str:
    v = f"{value:g}"
    if not v.isdigit():
        return f"{v}th"
    n = int(v)
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _hover_lineage(hover: list[str], names: list[str], lineage: pd.DataFrame) -> list[str]:
    info = {r.model: r for r in lineage.itertuples(index=False)}
    tested = "decision" in lineage.columns
    out = []
    for name, text in zip(names, hover):
        r = info.get(name)
        if r is not None and isinstance(r.base_model, str) and r.base_model:
            text += f"\nbase_model: {r.base_model} (KL {r.kl_to_base:.3g})"
        if r is not None and tested:
            parents = " and ".join(p for p in (r.inferred_parent, r.inferred_parent2) if isinstance(p, str) and p)
            if r.decision == "derived":
                text += f"\nlineage test: derived from {parents} (p {r.p_adjusted:.2g})"
            else:
                text += f"\nlineage test: {r.decision} (p {r.p_adjusted:.2g})"
            if r.flagged:
                text += "\n(the test's parent is in another lineage)"
        out.append(text)
    return out


def hover_neighbors(table: pd.DataFrame, names: list[str], n: int = 3, unit: str = "") -> list[str]:
    """Hover text per model: its ``n`` nearest models with their KL (``unit``: a label after each value)."""
    top = table[table["rank"] <= n]
    u = f" {unit}" if unit else ""
    # One pass over plain lists: a pandas group per model took 15 s at 100,000 models, this under one.
    parts: dict = {}
    for model, nb, kl in zip(top["model"].tolist(), top["neighbor"].tolist(), top["kl"].tolist()):
        parts.setdefault(model, []).append(f"{nb} (KL {kl:.3g}{u})")
    return ["nearest: " + ", ".join(parts[m]) if m in parts else "" for m in names]

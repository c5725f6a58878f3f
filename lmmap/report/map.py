"""The files of a model map: ``write(mm, outdir)`` for a :class:`lmmap.map.ModelMap`.

``kl.csv`` (and ``kl_se.csv``; up to :data:`lmmap.map.DENSE_MAX_K` models, or
``kl.npy`` when asked for), ``coords.csv``, ``neighbors.csv``,
``lineage.csv`` when the metadata declares bases, ``map.png``, ``map.html``
(with ``plotly.min.js``) and ``map.json`` (the map's parameters: the clipping
threshold above all, with provenance). The pieces a map picture is made of
(title, axis label, lines, hover text) are here too, for the writers of
placed maps.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

import numpy as np

from lmmap.exceptions import InputError
from lmmap.report.files import Files


def write(
    mm,
    outdir: str | os.PathLike,
    *,
    embedding: str = "auto",
    color_by: str | None = "model_type",
    k: int = 10,
    se: bool = False,
    R: int = 100,
    random_state: int = 42,
    edges: str = "auto",
    unit: str = "nats-per-text",
    full_kl: bool = False,
) -> dict[str, Path]:
    """Write the map of ``mm``; returns ``{file name: path}``.

    ``embedding``: auto (classical MDS below 40 models, t-SNE above), mds,
    tsne, pca or umap; ``random_state`` seeds it. ``edges``: auto
    (``base_model`` when the metadata declares bases, else ``nn``), nn,
    base_model or none; with declared bases ``lineage.csv`` says for each
    model whether its nearest model by KL is in its lineage. ``se``: add
    bootstrap standard errors (``R`` replicates) to the neighbours and write
    ``kl_se.csv``. ``unit``: the unit of every KL written (``nats-per-text``
    or ``bits-per-byte``); map.json records it as ``kl_unit``.

    The K×K KL matrix is written as ``kl.csv`` up to :data:`lmmap.map.DENSE_MAX_K`
    models; beyond, nothing K×K is computed unless ``full_kl`` (then
    ``kl.npy``, float32, rows and columns in the order of map.json's
    ``models``; refused past :data:`lmmap.map.DENSE_MAX_BYTES`). ``full_kl``
    writes ``kl.npy`` on a small map too. ``se`` computes the K×K matrices whatever K (SEs of the
    neighbours), and writes ``kl_se.csv`` where ``kl.csv`` is written.
    """
    from lmmap.map import LINEAGE_TIE, UNIT_LABELS, check_unit
    from lmmap.report import plots

    check_unit(unit)
    factor = mm.unit_factor(unit)  # refused before any file is written when the map cannot give this unit
    if full_kl:
        check_full_kl(mm.K)
    method = mm.embedding_method(embedding)
    edge_mode = mm.resolve_edges(edges)
    groups = mm.groups(color_by)
    if color_by and groups is None and color_by != "model_type":
        raise InputError(f"no metadata column {color_by!r} to colour by; give one with metadata (a MODELS.csv)",
                         params=("color_by",))
    files = Files(outdir)
    index = pd.Index(mm.names, name="model")
    if writes_kl_csv(mm):
        files.table("kl.csv", mm.kl_frame(unit), index=True)
    if full_kl:
        _write_kl_npy(files.path("kl.npy"), mm, unit)
    if se and writes_kl_csv(mm):
        files.table("kl_se.csv", pd.DataFrame(mm.kl_se(R=R, unit=unit), index=index, columns=mm.names), index=True)
    coords = mm.embed(embedding, random_state=random_state)
    files.table("coords.csv", pd.DataFrame({"model": mm.names, "x": coords[:, 0], "y": coords[:, 1]}))
    table = mm.neighbor_table(k, se=se, R=R, unit=unit)
    files.table("neighbors.csv", table)
    lineage = mm.lineage()
    if len(lineage) and factor != 1.0:
        lineage = lineage.assign(**{c: lineage[c] * factor for c in ("kl_to_base", "kl_to_nearest", "kl_to_lineage")})
    if len(lineage):
        files.table("lineage.csv", lineage)
    edge_sets, flagged = map_edges(mm, edge_mode)
    hover = hover_neighbors(table, mm.names, n=3, unit=UNIT_LABELS[unit] if unit != "nats-per-text" else "")
    if len(lineage):
        hover = _hover_lineage(hover, mm.names, lineage)
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
    info = mm.describe(embedding=method, embedding_requested=embedding, embedding_random_state=random_state,
                       color_by=color_by, edges=edge_mode, kl_unit=unit)
    if len(lineage):
        info["lineage"] = {
            "declared": int(len(lineage)),
            "consistent": int(lineage["consistent"].sum()),
            "flagged": list(lineage.loc[~lineage["consistent"].astype(bool), "model"]),
            "tie": LINEAGE_TIE,
        }
    files.json("map.json", info)
    return files.paths


def writes_kl_csv(mm) -> bool:
    """Whether :func:`write` writes ``kl.csv``: up to :data:`lmmap.map.DENSE_MAX_K` models (beyond, a CSV of
    K×K numbers is gigabytes that nobody reads; ``full_kl`` gives them as ``kl.npy``)."""
    from lmmap.map import DENSE_MAX_K

    return mm.K <= DENSE_MAX_K


def full_kl_cost(K: int) -> str:
    """What ``--full-kl`` costs at K models, in words: the file and the memory to compute it."""
    def gb(n):
        return f"{n / 1e9:,.1f}" if n >= 1e9 else f"{n / 1e9:.2g}"

    # Memory: the float64 matrix and the Gram product it is made from.
    return f"{K:,}×{K:,}: a {gb(4 * K * K)} GB kl.npy (float32) and {gb(16 * K * K)} GB of memory to compute it"


def check_full_kl(K: int) -> None:
    """A one-line :class:`InputError` when the K×K KL matrix is larger than :data:`lmmap.map.DENSE_MAX_BYTES`."""
    from lmmap.map import DENSE_MAX_BYTES

    if 8 * K * K > DENSE_MAX_BYTES:
        raise InputError(
            f"--full-kl: the KL matrix of {K:,} models is {full_kl_cost(K)}, past the {DENSE_MAX_BYTES / 2**30:.3g} GiB "
            "limit on a K×K matrix in memory; neighbors.csv (-k) and `lmmap neighbors MODEL` need none",
            params=("full_kl",))


def _write_kl_npy(path: Path, mm, unit: str) -> None:
    """The K×K KL as float32 ``.npy``, converted a block of rows at a time: no second K×K float64 array."""
    G = mm.squared_distances()
    scale = mm.unit_factor(unit) / (2.0 * mm.n_texts)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=G.shape)
    step = max(1, (64 << 20) // (8 * mm.K))
    for s in range(0, mm.K, step):
        out[s:s + step] = G[s:s + step] * scale
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
    """Whether the map has too many models for every line and ring (:data:`plots.DENSE_MAP_MODELS`)."""
    from lmmap.report.plots import DENSE_MAP_MODELS

    return mm.K > DENSE_MAP_MODELS


def flagged_label(mm) -> str:
    """The legend's words for the red rings of :func:`map_edges` on this map."""
    if dense(mm):
        return "nearest by KL in another declared lineage"
    return "nearest model in another lineage"


def map_edges(mm, mode: str = "auto"):
    """The lines of the map and the models to flag: ``(list of plots.Edges, flagged names)``.

    ``nn``: each model to its nearest by KL (a mutual pair drawn once).
    ``base_model``: each model to its declared base, and a dashed red line
    from a model whose nearest model lies in another lineage to that
    nearest model (the model is flagged). With either, when the metadata
    declares training trajectories (columns ``trajectory`` and ``step``),
    consecutive checkpoints of each are joined too (kind ``trajectory``),
    and so are consecutive layers of a lensed model (``layers_of``,
    ``layer``; kind ``layers``);
    ``none`` draws no line at all.

    Above :data:`plots.DENSE_MAP_MODELS` models only what informs is drawn:
    the declared ``base_model`` lines (no dashed lines to the nearest model),
    and a ring only where the nearest model belongs to another *declared*
    lineage (a model with a base or with models derived from it), not to a
    model whose lineage nobody declared. The legend says so.
    """
    from lmmap.report.plots import Edges

    mode = mm.resolve_edges(mode)
    if mode == "none":
        return [], []
    if mode == "nn":
        idx, _ = mm.nearest(1)
        pairs = sorted({tuple(sorted((i, int(j)))) for i, j in enumerate(idx[:, 0])})
        return [Edges("nn", tuple((mm.names[a], mm.names[b]) for a, b in pairs))] + trajectory_edges(mm), []
    table = mm.lineage()
    bad = table[~table["consistent"].astype(bool)]
    sets = [Edges("lineage", tuple(zip(table["model"], table["base_model"])),
                  label=f"declared base_model ({len(table)} lines)" if dense(mm) else None)]
    if dense(mm):
        bases = mm.base_models()
        declared = set(bases) | set(bases.values())
        bad = bad[bad["nearest"].isin(declared)]
    elif len(bad):
        sets.append(Edges("contradiction", tuple(zip(bad["model"], bad["nearest"]))))
    return sets + trajectory_edges(mm), list(bad["model"])


def declared_edges(names, metadata) -> list:
    """The lines a map's metadata declares, whatever the KL says: each model to its ``base_model`` and the
    trajectory and layer paths (:func:`trajectory_edges`), among ``names`` only. For placed maps, whose KL
    comes from a subset of texts."""
    from types import SimpleNamespace

    from lmmap.map import LINEAGE_COLUMN
    from lmmap.report.plots import Edges

    if metadata is None or not len(names):
        return []
    meta = metadata.set_index("model") if "model" in metadata.columns else metadata
    meta = meta[~meta.index.duplicated()]
    out = []
    if LINEAGE_COLUMN in meta.columns:
        present = set(names)
        pairs = []
        for model, base in zip(names, meta[LINEAGE_COLUMN].reindex(names)):
            base = "" if base is None or (not isinstance(base, str) and pd.isna(base)) else str(base).strip()
            if base and base != model and base in present:
                pairs.append((model, base))
        if pairs:
            out.append(Edges("lineage", tuple(pairs)))
    return out + trajectory_edges(SimpleNamespace(names=list(names), metadata=meta))


def trajectory_edges(mm) -> list:
    """:class:`plots.Edges` of kind ``trajectory`` (consecutive checkpoints of each trajectory in step order) and
    ``layers`` (consecutive layers of each model scored with the logit lens).

    Empty when the metadata declares no trajectory. A trajectory that cannot
    be ordered (a step that is not a number) or has one checkpoint in the map
    is left out with a note: the map is still drawn.
    """
    import warnings

    from lmmap.analyses.trajectory import order_points, trajectories
    from lmmap.exceptions import LmmapWarning
    from lmmap.report.plots import Edges

    out = []
    for kind in ("trajectory", "layers"):
        pairs = []
        for name, members in trajectories(mm, kind).items():
            if len(members) < 2:
                continue  # one checkpoint: nothing to join, and nothing wrong
            try:
                points = order_points(name, members, kind)
            except InputError as exc:
                warnings.warn(f"{kind} {name!r} is not drawn on the map: {exc}", LmmapWarning, stacklevel=2)
                continue
            pairs.extend((a, b) for (a, _), (b, _) in zip(points[:-1], points[1:]))
        if pairs:
            out.append(Edges(kind, tuple(pairs)))
    return out


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
    out = []
    for name, text in zip(names, hover):
        r = info.get(name)
        if r is not None:
            text += f"\nbase_model: {r.base_model} (KL {r.kl_to_base:.3g})"
            if not r.consistent:
                text += f"\nnearest is in another lineage: {r.nearest}"
        out.append(text)
    return out


def hover_neighbors(table: pd.DataFrame, names: list[str], n: int = 3, unit: str = "") -> list[str]:
    """Hover text per model: its ``n`` nearest models with their KL (``unit``: a label after each value)."""
    top = table[table["rank"] <= n]
    u = f" {unit}" if unit else ""
    text = top.groupby("model", sort=False).apply(
        lambda g: "nearest: " + ", ".join(f"{nb} (KL {kl:.3g}{u})" for nb, kl in zip(g["neighbor"], g["kl"])),
        include_groups=False,
    )
    return [text.get(m, "") for m in names]

"""Files of an adaptive placement (:func:`lmmap.analyses.adaptive.place_adaptive`).

``placement.csv`` (as ``lmmap add``: new_model, existing_model, kl, kl_se,
rank), ``kl.csv`` (new models × existing models), ``adaptive.csv`` (one row
per new model: model, texts_scored, draws, rounds, se_reached, stopped_by),
``adaptive_trace.csv`` (the relative SE and the nearest model's KL after every
round) and ``adaptive_trace.png`` (relative SE against texts scored, the
target as a dotted line). With ``store`` given, also the map: ``coords.csv``,
``map.png`` and ``map.html`` (the existing models keep the positions of their
full map; see :func:`place_on_map`). Every file is written atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lmmap.report import plots
from lmmap.analyses.place import kl_frame, write_placed_map

FILES = ("placement.csv", "kl.csv", "adaptive.csv", "adaptive_trace.csv", "adaptive_trace.png")


def _csv(path: Path, df: pd.DataFrame, index: bool = False) -> Path:
    return plots.atomic_write(path, df.to_csv(index=index))


def place_on_map(result, store, *, embedding: str = "auto", random_state: int = 42) -> tuple[np.ndarray, str]:
    """2-D positions of the existing models (their full map) followed by the new ones; returns (coords, method).

    MDS (``auto`` below 40 models): the new models are placed from their KL
    estimates by Gower's formula (exact up to the estimates' error). t-SNE:
    each new model is placed against the fixed map (openTSNE transform) with
    features ``[q̂, e]`` against ``[Q, 0]``: its prediction on all N texts and
    one coordinate that makes its distance to its nearest model the estimate
    (:func:`lmmap.analyses.adaptive.completed_features`) — a few dozen texts of plain
    subset features would put a fine-tune anywhere near its family.
    """
    from lmmap.analyses.adaptive import completed_features
    from lmmap.maths.embedding import fit_embedding
    from lmmap.exceptions import InputError
    from lmmap.map import ModelMap
    from lmmap.analyses.place import place_points

    existing = result.existing_models
    clip = result.threshold is not None
    full = ModelMap.from_store(store, models=existing, clip=clip, threshold=result.threshold)
    method = full.embedding_method(embedding)
    if method == "mds":
        emb = fit_embedding(full.Q, "mds", n_texts=full.n_texts)
        return np.vstack([emb.coords, emb.place_by_kl(result.kl)]), method
    if method != "tsne":
        raise InputError(f"an adaptive placement is drawn on an mds or tsne map, not {method!r}")
    coords_old = full.embed("tsne", random_state=random_state)
    amap = result.amap
    X_new = np.vstack([completed_features(amap, r.draws, r.y, r.estimate)
                       for r in (result.runs[n] for n in result.new_models)])
    X_old = np.hstack([amap.Q, np.zeros((amap.K, 1))])
    return np.vstack([coords_old, place_points(X_old, coords_old, X_new, "tsne", random_state)]), method


def write_adaptive(result, outdir, store=None, *, embedding: str = "auto", random_state: int = 42,
                   color_by: str | None = "model_type") -> dict[str, Path]:
    """Write the adaptive placement's files into ``outdir`` (and the map, given ``store``); returns ``{name: path}``."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {n: out / n for n in FILES}
    _csv(paths["placement.csv"], result.table())
    _csv(paths["kl.csv"], kl_frame(result.new_models, result.existing_models, result.kl), index=True)
    _csv(paths["adaptive.csv"], result.adaptive_table())
    trace = result.trace_table()
    _csv(paths["adaptive_trace.csv"], trace)
    series = {m: (g["texts_scored"].to_numpy(), g["rel_se"].to_numpy()) for m, g in trace.groupby("model", sort=False)}
    if series:
        x_max = max(float(np.max(x)) for x, _ in series.values())
        series[f"target {result.target_se:g}"] = (np.array([0.0, x_max]), np.full(2, result.target_se))
        styles = {f"target {result.target_se:g}": ":"}
        plots.lines_png(paths["adaptive_trace.png"], series, xlabel="texts scored",
                        ylabel=f"largest relative SE of KL to the {result.neighbors} nearest", logy=True,
                        title="adaptive placement", styles=styles, figsize=(5.6, 4.0))
    else:
        paths.pop("adaptive_trace.png")
    if store is not None:
        coords, method = place_on_map(result, store, embedding=embedding, random_state=random_state)
        names = list(result.existing_models) + list(result.new_models)
        for n in ("coords.csv", "map.png", "map.html"):
            paths[n] = out / n
        _csv(paths["coords.csv"], pd.DataFrame({"model": names, "x": coords[:, 0], "y": coords[:, 1],
                                                "new": [False] * len(result.existing_models) + [True] * len(result.new_models)}))
        meta = store.metadata()
        groups = None
        if color_by and meta is not None and color_by in getattr(meta, "columns", []):
            col = meta.set_index("model")[color_by] if "model" in meta.columns else meta[color_by]
            groups = ["unknown" if pd.isna(v) else str(v) for v in col.reindex(names)]
        near = result.nearest(3)
        hover = [""] * len(result.existing_models) + [
            "nearest: " + ", ".join(f"{r.existing_model} (KL {r.kl:.3g} ± {r.kl_se:.2g})" for r in g.itertuples())
            for _, g in near.groupby("new_model", sort=False)]
        method_name = {"mds": "classical MDS of KL", "tsne": "t-SNE", "pca": "PCA"}.get(method, method)
        title = (f"{len(result.existing_models)} models + {len(result.new_models)} placed adaptively "
                 f"({method_name}; at most {max(r.texts_scored for r in result.runs.values())} of "
                 f"{result.n_texts} texts scored per new model)")
        write_placed_map(paths["map.png"], paths["map.html"], coords, names, result.new_models,
                         result.existing_models, result.kl, groups=groups, hover=hover, title=title, method=method,
                         color_by=color_by)
    result.paths = paths
    return paths

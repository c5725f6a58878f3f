"""Adding new models to an existing map from a resampled subset of texts (SPEC §4; paper §5.2).

The new models are scored on the subset's d texts only; the map of the
existing models (``subset.models``) and the new ones is then built from those
texts with the subset's weights ``w`` and its stored clipping threshold. The
KL estimate between a new model i and an existing model j is
``g̃_ij / (2N)`` with ``g̃_ij = ‖q̃_i − q̃_j‖²_w``; its standard error comes
from resampling the n draws behind the subset (as :mod:`lmmap.maths.bootstrap`).

Column centring does not change differences between models and each row is
centred on its own, so placing new models never changes the estimates between
existing ones. In the 2-D map the existing models keep their positions (those
of the full map, or of ``base_coords``) and the new ones are placed against
them (``rebuild=True`` refits everything): in an MDS map (the default below
40 models) by Gower's out-of-sample formula from their KL to the existing
models, so a new model lands where the full map would draw it; in a t-SNE map
by openTSNE's transform.

The numeric core (:func:`lmmap.maths.geometry.cross_squared_distances`, :func:`cross_sq_distance_se`,
:func:`place_points`) takes arrays; :func:`add_models` does the store, the
scoring and the files.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from lmmap.maths import geometry
from lmmap.maths.bootstrap import bootstrap_se, check_counts
from lmmap.maths.geometry import cross_squared_distances  # noqa: F401  (moved to core; still importable from here, as before)
from lmmap.exceptions import LmmapError, LmmapWarning
from lmmap.map import ModelMap, _axis_label, _hover_neighbors

# Two clipping thresholds that differ by less than this (relative) are the same map's.
_THRESHOLD_RTOL = 1e-9
# A new model this close (KL, computed from the difference of the two vectors) to an existing one is the same model.
IDENTICAL_KL = 1e-9


# -- numeric core -----------------------------------------------------------------------------


def cross_sq_distance_se(X_rows, X_cols, counts=None, R: int = 100, seed=0) -> np.ndarray:
    """Bootstrap standard error (m×K) of ``g̃_ij`` between two sets of models on the same d texts.

    ``X_rows``, ``X_cols``: features ``Q̃ W^{1/2}`` (m×d, K×d); ``counts``: the
    draw counts ``c`` of the d texts (default 1 each: the full text set). Each
    replicate redraws the n draws, ``c* ~ Multinomial(n, c/n)``, so text t's
    term is scaled by ``c*_t / c_t`` — the same scheme as
    :func:`lmmap.maths.bootstrap.bootstrap_sq_distance_se`, but O(m·K·d) per replicate
    instead of O(K²·d): only the new-versus-existing block is needed.
    """
    X_rows = np.asarray(X_rows, dtype=np.float64)
    X_cols = np.asarray(X_cols, dtype=np.float64)
    d = X_rows.shape[1]
    if X_cols.shape[1] != d:
        raise LmmapError(f"the two sets of models have {d} and {X_cols.shape[1]} texts: they must share the map's texts")
    c = check_counts(counts, d)
    # The squares do not depend on the replicate: weighting them by the multipliers
    # costs O((m + K)·d) per replicate, against the O(m·K·d) cross product.
    sq_rows, sq_cols = X_rows * X_rows, X_cols * X_cols

    def replicate(scale: np.ndarray) -> np.ndarray:
        return geometry.distances_from_gram(sq_rows @ scale, sq_cols @ scale, (X_rows * scale) @ X_cols.T)

    return bootstrap_se(replicate, c, R, seed)


def place_points(X_base, coords_base, X_new, method: str = "tsne", random_state: int = 42, **transform_kwargs) -> np.ndarray:
    """2-D positions (m×2) of new rows ``X_new`` in a map whose rows ``X_base`` sit at ``coords_base`` (fixed).

    ``tsne``: openTSNE's transform of the new points against the fixed
    reference (affinities from ``X_base``, whatever produced ``coords_base``).
    ``pca``, ``mds``: the PCA / classical MDS of ``X_base`` (whose own
    coordinates must be ``coords_base``) applied to ``X_new``; ``mds`` takes
    ``n_texts`` (N) so that squared distances are KL.
    """
    from lmmap.maths.embedding import Embedding, fit_embedding

    if method in ("pca", "mds"):
        kwargs = {"n_texts": transform_kwargs.pop("n_texts", None)} if method == "mds" else {}
        emb = fit_embedding(X_base, method, random_state=random_state, **kwargs)
        if not np.allclose(emb.coords, coords_base, atol=1e-6 * (1 + np.abs(coords_base).max())):
            raise LmmapError(f"coords_base are not the {method.upper()} of X_base: place new models with method='tsne'")
        return emb.transform(X_new)
    if method != "tsne":
        raise LmmapError(f"new models are placed with tsne, mds or pca, not {method!r}")
    emb = Embedding.from_coords(X_base, coords_base, random_state=random_state)
    return emb.transform(X_new, **transform_kwargs)


# -- the Python API ------------------------------------------------------------------------------


@dataclass(eq=False)
class Placement:
    """New models placed into an existing map (see :func:`add_models`).

    ``map``: the subset map of the existing and new models (existing first).
    ``kl``, ``kl_se``: m×K estimated KL from each new model to each existing
    one and its bootstrap standard error. ``coords``: 2-D positions of
    ``map.names``. ``scored``: models scored by this call and
    ``scoring_seconds`` the time that took (model loading included);
    ``failed``: models that could not be scored, with the reason.
    """

    new_models: list[str]
    existing_models: list[str]
    map: ModelMap
    kl: np.ndarray
    kl_se: np.ndarray
    coords: np.ndarray
    scored: list[str] = field(default_factory=list)
    scoring_seconds: float = 0.0
    rebuilt: bool = False
    failed: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """``placement.csv``: see :func:`placement_table`."""
        return placement_table(self.new_models, self.existing_models, self.kl, self.kl_se)

    def kl_frame(self) -> pd.DataFrame:
        """m×K KL estimates, new models as rows, existing models as columns."""
        return kl_frame(self.new_models, self.existing_models, self.kl)

    def nearest(self, k: int = 5) -> pd.DataFrame:
        t = self.table()
        return t[t["rank"] <= k].reset_index(drop=True)

    def summary(self) -> str:
        t = self.nearest(1)
        lines = [
            f"placed {len(self.new_models)} new model(s) among {len(self.existing_models)} on "
            f"{self.map.L.shape[1]} of N = {self.map.n_texts} texts"
            + (f"; scored {len(self.scored)} in {self.scoring_seconds:.1f} s" if self.scored else "")
            + ("; map rebuilt" if self.rebuilt else "; existing positions kept")
        ]
        for row in t.itertuples(index=False):
            lines.append(f"  {row.new_model}: nearest {row.existing_model} (KL {row.kl:.4g} ± {row.kl_se:.2g})")
        for name, why in self.failed.items():
            lines.append(f"  {name}: not placed ({why})")
        return "\n".join(lines)


def placement_table(new_models, existing_models, kl, kl_se) -> pd.DataFrame:
    """``placement.csv``: new_model, existing_model, kl, kl_se, rank (1 = nearest), nearest first.

    The one layout for every way of adding models (by a subset or adaptively).
    """
    m, K = kl.shape
    order = np.argsort(kl, axis=1, kind="stable")
    ex = np.asarray(existing_models, dtype=object)
    return pd.DataFrame(
        {
            "new_model": np.repeat(np.asarray(new_models, dtype=object), K),
            "existing_model": ex[order].ravel(),
            "kl": np.take_along_axis(kl, order, axis=1).ravel(),
            "kl_se": np.take_along_axis(kl_se, order, axis=1).ravel(),
            "rank": np.tile(np.arange(1, K + 1), m),
        }
    )


def kl_frame(new_models, existing_models, kl) -> pd.DataFrame:
    """``kl.csv`` of a placement: m×K KL estimates, new models as rows, existing models as columns."""
    return pd.DataFrame(kl, index=pd.Index(new_models, name="model"), columns=existing_models)


def _records_convention(records: dict, names) -> set:
    return {records[n].get("convention") for n in names if n in records}


def _check_new_models(store, models, subset, replace: bool) -> tuple[list[str], list[str]]:
    """Validate the names; returns (new models, existing models of the map)."""
    models = [str(m) for m in models]
    if not models:
        raise LmmapError("give at least one model to add")
    dup = pd.Index(models)[pd.Index(models).duplicated()]
    if len(dup):
        raise LmmapError(f"model {dup[0]!r} is given twice")
    in_map = [m for m in models if m in set(subset.models)]
    if in_map and not replace:
        raise LmmapError(
            f"{len(in_map)} model(s) are already in the map, e.g. {in_map[0]!r}; pass --replace "
            "(replace=True) to re-score and re-place them"
        )
    existing = [m for m in subset.models if m not in set(models)]
    if len(existing) < 1:
        raise LmmapError("no existing model would be left in the map to place the new ones against")
    return models, existing


def _needs_scoring(store, name: str, text_pos: np.ndarray, records: dict, replace: bool) -> bool:
    if replace or name not in records:
        return True
    if int(records[name].get("n_scored", -1)) == store.n_texts:
        return False
    have = store.vectors(name)["text_pos"].to_numpy()
    return not np.isin(text_pos, have).all()


def _score(store, names, sources, subset, convention, replace, score_kwargs, progress) -> tuple[float, dict]:
    """Score ``names`` on the subset's texts only (resumable, see :mod:`lmmap.scoring.hf`).

    Returns the wall seconds and each model's :class:`lmmap.scoring.hf.ScoreStatus`.
    """
    from lmmap.scoring.hf import score_models

    if progress:
        progress(f"scoring {len(names)} model(s) on the subset's {subset.d} texts (of {subset.n_texts})…")
    t0 = time.perf_counter()
    status = score_models(store, sources, names=names, text_pos=subset.text_pos, convention=convention, replace=replace,
                          **(score_kwargs or {}))
    return time.perf_counter() - t0, status


def _read_base_coords(base_coords, existing: list[str]) -> np.ndarray:
    if isinstance(base_coords, (str, os.PathLike)):
        path = Path(base_coords)
        if not path.exists():
            raise FileNotFoundError(f"base coordinates {path} do not exist (give the coords.csv of `lmmap map`)")
        df = pd.read_csv(path)
        where = str(path)
    else:
        df, where = pd.DataFrame(base_coords), "base_coords"
    if not {"model", "x", "y"} <= set(df.columns):
        raise LmmapError(f"{where} needs columns model, x, y (as `lmmap map` writes coords.csv)")
    df = df.drop_duplicates("model").set_index("model")
    missing = [m for m in existing if m not in df.index]
    if missing:
        raise LmmapError(
            f"{where} has no position for {len(missing)} of the map's models (e.g. {missing[0]!r}): "
            "it is the map of other models"
        )
    xy = df.loc[existing, ["x", "y"]].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(xy)):
        raise LmmapError(f"{where} has non-finite coordinates")
    return xy


def _full_map_if_possible(store, existing: list[str], subset, records: dict) -> ModelMap | None:
    """The full-text-set map of the existing models, when all of them have every text."""
    if any(int(records[m].get("n_scored", -1)) != store.n_texts for m in existing):
        return None
    full = ModelMap.from_store(store, models=existing, clip=subset.threshold is not None)
    if subset.threshold is not None and not np.isclose(full.threshold, subset.threshold, rtol=_THRESHOLD_RTOL, atol=0):
        raise LmmapError(
            f"the clipping threshold of the map's {len(existing)} models is now {full.threshold:.6g}, but the subset "
            f"recorded {subset.threshold:.6g}: their vectors changed since `lmmap select`; select again"
        )
    return full


def add_models(
    store,
    models,
    subset,
    outdir=None,
    *,
    names=None,
    convention: str | None = None,
    score_kwargs: dict | None = None,
    rebuild: bool = False,
    replace: bool = False,
    se_R: int = 100,
    se_seed: int = 0,
    k: int = 10,
    embedding: str = "auto",
    color_by: str | None = "model_type",
    random_state: int = 42,
    base_coords=None,
    progress: Callable[[str], None] | None = None,
) -> Placement:
    """Score ``models`` on ``subset``'s texts only and place them into the map of ``subset.models``.

    Parameters
    ----------
    store : the :class:`lmmap.Store` the subset was selected on.
    models : the new models (Hugging Face ids or paths to score, or names of
        models already in the store: those that have the subset's texts are
        not scored again).
    names : store the models under these names instead (one per model);
        default: a local directory's own name, a hub id as it is.
    subset : a :class:`lmmap.analyses.select.Subset` (``lmmap select``).
    outdir : write placement.csv, kl.csv, coords.csv, neighbors.csv, map.png,
        map.html and map.json there (None: write nothing).
    convention : scoring convention; default: that of the map's models.
        Another one is refused (SPEC §2: never mix conventions).
    score_kwargs : passed to :func:`lmmap.scoring.hf.score_models` (device, dtype, batch_tokens, ...).
    rebuild : refit the whole 2-D map instead of keeping the existing positions.
    replace : re-score models already in the store, and re-place models that
        are in the map (they are then treated as new).
    se_R, se_seed : bootstrap replicates and seed of the KL standard errors.
    k : neighbours per model in neighbors.csv.
    embedding : "auto" (default: classical MDS below 40 existing models,
        t-SNE from 40 on, as ``lmmap map``), "mds", "tsne" or "pca".
    base_coords : positions of the existing models (a coords.csv path or a
        DataFrame with model, x, y); default: the embedding of their full map
        (what ``lmmap map`` draws for them), or of the subset map when they
        lack some texts.
    """
    subset.check_store(store)
    subset.check_models(store)
    sources = [str(m) for m in models]
    if names is not None and len(list(names)) != len(sources):
        raise LmmapError(f"{len(list(names))} names for {len(sources)} models: give one name per model")
    if names is None:
        from lmmap.scoring.hf import default_model_name

        # The name shown on the map and in the tables: the directory's own name, not the path typed.
        names = [default_model_name(m) for m in sources]
    new, existing = _check_new_models(store, list(names), subset, replace)
    source_of = dict(zip(new, sources))
    records = store.records()

    map_conv = _records_convention(records, existing)
    if len(map_conv) > 1:
        raise LmmapError(f"the map's models were scored under several conventions ({sorted(map(str, map_conv))}); map one at a time")
    map_conv = next(iter(map_conv))
    if convention is None:
        convention = map_conv
    elif convention != map_conv:
        raise LmmapError(
            f"the map's models were scored under the {map_conv!r} convention; new models scored under "
            f"{convention!r} cannot join it (SPEC §2); drop --convention or use {map_conv!r}"
        )
    to_score = [m for m in new if _needs_scoring(store, m, subset.text_pos, records, replace)]
    for m in new:
        if m not in to_score and records[m].get("convention") != map_conv:
            raise LmmapError(
                f"model {m!r} is stored under the {records[m].get('convention')!r} convention but the map's "
                f"models under {map_conv!r}; re-score it with --convention {map_conv} --replace"
            )

    # The existing models' full map, when they have every text: checks that their vectors are still
    # those the subset was selected from (same threshold) before any scoring, and later gives their positions in the 2-D map.
    full = _full_map_if_possible(store, existing, subset, records)

    seconds, failed = 0.0, {}
    if to_score:
        seconds, status = _score(store, to_score, [source_of[m] for m in to_score], subset, convention, replace,
                                 score_kwargs, progress)
        failed = {m: str(st) for m, st in status.items() if not st.ok}
        if len(failed) == len(new):
            raise LmmapError("no model could be scored: " + "; ".join(failed.values()))
        if failed and progress:
            progress(f"{len(failed)} model(s) failed and are left out: {', '.join(failed)}")
        new = [m for m in new if m not in failed]
        to_score = [m for m in to_score if m not in failed]

    # Existing models first: their rows (and so their mutual KL) are exactly those of the subset map.
    mm = ModelMap.from_store(store, models=existing + new, subset=subset)
    K, m = len(existing), len(new)
    X = mm.features()
    X_old, X_new = X[:K], X[K:]
    KL = mm.kl()[K:, :K]
    se = geometry.kl_from_squared_distances(cross_sq_distance_se(X_new, X_old, subset.counts, R=se_R, seed=se_seed), mm.n_texts)

    _warn_identical(new, existing, X_new, X_old, mm.n_texts, KL)

    method = mm.embedding_method(embedding) if rebuild else _resolve_for(embedding, K)
    if rebuild:
        coords = mm.embed(embedding, random_state=random_state)
    else:
        base_map = full if (full is not None and method in ("tsne", "mds")) else None
        if base_map is None:
            # PCA places new rows by the fitted projection, so its base must be the subset map's own PCA.
            base_map = ModelMap.from_store(store, models=existing, subset=subset)
        if base_coords is not None:
            coords_old = _read_base_coords(base_coords, existing)
        else:
            coords_old = base_map.embed(method, random_state=random_state)
        if progress:
            progress(f"placing {m} model(s) into the map of {K} ({method})…")
        coords_new = None
        if method == "mds":
            # Gower's formula needs only the new models' KL to the existing ones: they land where the
            # full map would draw them, whatever texts they were scored on.
            from lmmap.maths.embedding import fit_embedding

            emb = fit_embedding(base_map.features(), "mds", n_texts=int(base_map.n_texts))
            if base_coords is None or np.allclose(emb.coords, coords_old, atol=1e-6 * (1 + np.abs(coords_old).max())):
                coords_new = emb.place_by_kl(KL)
            else:
                method = "tsne"  # given positions of another map: place by t-SNE against them
        elif base_coords is not None:
            method = "tsne"  # given positions: place by t-SNE against them, whatever made them
        if coords_new is None:
            coords_new = place_points(X_old, coords_old, X_new, method, random_state)
        coords = np.vstack([coords_old, coords_new])

    result = Placement(
        new_models=new, existing_models=existing, map=mm, kl=KL, kl_se=se, coords=coords,
        scored=to_score, scoring_seconds=seconds, rebuilt=rebuild, failed=failed,
    )
    if outdir is not None:
        result.paths = write_placement(result, outdir, subset=subset, k=k, color_by=color_by, embedding=method)
    return result


def write_placed_map(png, html, coords, names, new_models, existing_models, kl, *, groups, hover, title, method,
                     color_by) -> None:
    """The map of a placement (PNG and HTML): existing models coloured and labelled, new models drawn large and
    named, each with a dashed line to its nearest existing model by KL (``kl``: m×K)."""
    from lmmap.report import plots

    nearest = [existing_models[j] for j in np.asarray(kl).argmin(axis=1)] if len(new_models) else []
    style = dict(
        groups=groups, highlight=new_models, title=title, highlight_label="new",
        edges=[plots.Edges("placement", tuple(zip(new_models, nearest)))],
        axis_label=_axis_label(method), group_title=color_by if groups is not None else None,
    )
    plots.map_png(png, coords, names, **style)
    plots.map_html(html, coords, names, hover=hover, **style)


def _resolve_for(embedding: str, n_existing: int) -> str:
    from lmmap.maths.embedding import resolve_method

    # As `lmmap map` of the existing models would choose.
    return resolve_method(embedding, n_existing)


def _warn_identical(new, existing, X_new, X_old, n_texts, KL) -> None:
    """A LmmapWarning for each new model whose vector is that of an existing model (the same model twice)."""
    if not len(new):
        return
    nearest = KL.argmin(axis=1)
    for i, j in enumerate(nearest):
        # From the difference itself, not the Gram expansion, whose round-off is larger than this tolerance.
        direct = float(np.sum((X_new[i] - X_old[j]) ** 2)) / (2.0 * n_texts)
        if direct < IDENTICAL_KL:
            shown = f"KL ≈ {KL[i, j]:.0e}" if KL[i, j] > 0 else "KL = 0"
            warnings.warn(
                f"{new[i]!r} is identical to {existing[j]!r} ({shown}): the same model stored twice? "
                f"`lmmap rm {new[i]}` removes it",
                LmmapWarning,
                stacklevel=3,
            )


def write_placement(result: Placement, outdir, *, subset=None, k: int = 10, color_by: str | None = "model_type", embedding: str = "auto") -> dict[str, Path]:
    """Write placement.csv, kl.csv, coords.csv, neighbors.csv, map.png, map.html (with plotly.min.js) and map.json.

    The map: existing models coloured by ``color_by`` and labelled (up to 60
    models), new models highlighted and named, each with a dashed line to its
    nearest existing model by KL.
    """
    from lmmap.report import plots

    mm = result.map
    groups = mm.groups(color_by)
    if color_by and groups is None and color_by != "model_type":
        raise LmmapError(f"no metadata column {color_by!r} to colour by; give one with --metadata MODELS.csv")
    method = _resolve_for(embedding, len(result.existing_models)) if embedding == "auto" else embedding
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    names = ("placement.csv", "kl.csv", "coords.csv", "neighbors.csv", "map.png", "map.html", "map.json")
    paths = {n: out / n for n in names}
    plots.atomic_write(paths["placement.csv"], result.table().to_csv(index=False))
    plots.atomic_write(paths["kl.csv"], mm.kl_frame().to_csv())
    is_new = np.isin(mm.names, result.new_models)
    plots.atomic_write(
        paths["coords.csv"],
        pd.DataFrame({"model": mm.names, "x": result.coords[:, 0], "y": result.coords[:, 1], "new": is_new}).to_csv(index=False),
    )
    table = mm.neighbor_table(k)
    plots.atomic_write(paths["neighbors.csv"], table.to_csv(index=False))
    hover = _hover_neighbors(table, mm.names, n=3)
    title = mm.title(method, models=f"{len(result.existing_models)} models + {len(result.new_models)} new")
    write_placed_map(paths["map.png"], paths["map.html"], result.coords, mm.names, result.new_models,
                     result.existing_models, result.kl, groups=groups, hover=hover, title=title, method=method,
                     color_by=color_by)
    paths["plotly.min.js"] = out / plots.PLOTLY_JS
    info = mm.describe(
        embedding=method,
        color_by=color_by,
        new_models=result.new_models,
        existing_models=len(result.existing_models),
        scored=result.scored,
        scoring_seconds=result.scoring_seconds,
        rebuilt=result.rebuilt,
    )
    if subset is not None:
        info["subset"] = {"method": subset.method, "n": subset.n, "seed": subset.seed, "d": subset.d}
    plots.atomic_write(paths["map.json"], json.dumps(info, indent=2, default=str))
    return paths

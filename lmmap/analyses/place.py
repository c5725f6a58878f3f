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

:func:`place` is the analysis: the map of the existing models on the
subset's texts and the new models' log-likelihoods there in, a
:class:`Placement` out (KL, its bootstrap SE, 2-D positions). :func:`add_models`
is the store convenience: it checks the request, scores what is missing
(:func:`lmmap.scoring.score_models`), builds the maps with
``ModelMap.from_store`` and calls :func:`place`. The files are written by
:mod:`lmmap.report.place` (``lmmap.report.write(placement, outdir)``).
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from pathlib import Path

import numpy as np
import pandas as pd

from lmmap.maths import geometry
from lmmap.maths.bootstrap import cross_sq_distance_se
from lmmap.maths.geometry import cross_squared_distances  # noqa: F401  (lives in maths.geometry; still importable from here)
from lmmap.exceptions import InputError, LmmapWarning, MissingFileError, ScoringError, StoreError
import lmmap.map as map_module  # DENSE_MAX_K read at call time (tests lower it)
from lmmap.map import UNIT_LABELS, ModelMap, check_unit
from lmmap.progress import ProgressFn, say

if TYPE_CHECKING:  # annotations only: scoring is imported when a model is scored
    from lmmap.scoring.options import ExecutorOptions, ScoringOptions

# Two clipping thresholds that differ by less than this (relative) are the same map's.
_THRESHOLD_RTOL = 1e-9
# A new model this close (KL, computed from the difference of the two vectors) to an existing one is the same model.
IDENTICAL_KL = 1e-9
# In a map of more than lmmap.map.DENSE_MAX_K models: placement.csv lists (and the bootstrap SE is computed for)
# each new model's nearest this many existing models, not all K; a new model's position is the median of its
# nearest this many.
LARGE_TABLE_ROWS = 100
LARGE_PLACE_NEIGHBORS = 10


# -- numeric core -----------------------------------------------------------------------------


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
            raise InputError(f"coords_base are not the {method.upper()} of X_base: place new models with {{method='tsne'}}",
                             params=("coords_base", "method"))
        return emb.transform(X_new)
    if method != "tsne":
        raise InputError(f"new models are placed with tsne, mds or pca, not {{method={method!r}}}", params=("method",))
    emb = Embedding.from_coords(X_base, coords_base, random_state=random_state)
    return emb.transform(X_new, **transform_kwargs)


# -- the analysis ---------------------------------------------------------------------------------


@dataclass(eq=False, kw_only=True)
class PlacedModels:
    """New models placed into a map of existing ones: what every way of adding models has in common
    (:class:`Placement` by a subset of texts, :class:`lmmap.analyses.adaptive.AdaptiveResult` adaptively).

    Attributes
    ----------
    new_models, existing_models : the m new and K existing model names.
    kl, kl_se : (m, K) estimated KL ``g̃_ij / 2N`` from each new model to each existing one, and its standard
        error, in ``unit``.
    unit : the unit of ``kl`` and ``kl_se`` (and of every KL the result's files show): ``nats-per-text`` or
        ``bits-per-byte`` (:meth:`lmmap.map.ModelMap.unit_factor`).
    coords : (K + m, 2) positions of the existing models then the new ones in the 2-D map (None: no map);
        ``method`` the embedding that placed them, seeded by ``embedding_random_state``.
    random_state : the seed of the draws behind ``kl_se``.
    failed : models that could not be scored, with the reason; ``scoring_seconds`` the scoring time (model
        loading included).
    """

    new_models: list[str]
    existing_models: list[str]
    kl: np.ndarray
    kl_se: np.ndarray
    coords: np.ndarray | None = None
    method: str | None = None
    random_state: object = 0
    embedding_random_state: object = 42
    failed: dict = field(default_factory=dict)
    scoring_seconds: float = 0.0
    unit: str = "nats-per-text"
    table_rows: int | None = None
    lineage: pd.DataFrame | None = None
    lineage_p: np.ndarray | None = None

    @property
    def unit_label(self) -> str:
        return UNIT_LABELS[self.unit]

    def table(self) -> pd.DataFrame:
        """``placement.csv``: see :func:`placement_table` (each new model's ``table_rows`` nearest, or all)."""
        t = placement_table(self.new_models, self.existing_models, self.kl, self.kl_se, top=self.table_rows)
        if self.lineage_p is not None and self.lineage is not None:
            # The lineage test of each pair (Holm-adjusted within the new model's K tests) and its likely parent,
            # by index arrays: 10⁷ rows at 100 new models × 10⁵ existing ones.
            m, kk = len(self.new_models), len(t) // max(len(self.new_models), 1)
            i = np.repeat(np.arange(m), kk)
            j = np.argsort(self.kl, axis=1, kind="stable")[:, :kk].ravel()  # placement_table's order
            parent = dict(zip(self.lineage["model"], self.lineage["likely_parent"]))
            parent_j = pd.Index(self.existing_models).get_indexer([parent.get(n) for n in self.new_models])
            t["lineage_p"] = self.lineage_p[i, j]
            t["likely_parent"] = j == parent_j[i]
        return t

    def parent_line(self, model: str) -> str:
        """What the lineage test says of a new model, in words (empty when it did not run)."""
        if self.lineage is None:
            return ""
        r = self.lineage.set_index("model").loc[model]
        if r["decision"] == "derived":
            return f"; likely parent {r['likely_parent']} (lineage test p {r['p_adjusted']:.2g})"
        if r["decision"] == "ancestor":
            return f"; related to {r['related_to']}, which looks derived from it (p {r['p_adjusted']:.2g})"
        return f"; no likely parent among the existing models (closest {r['related_to']}, p {r['p_adjusted']:.2g})"

    def kl_frame(self) -> pd.DataFrame:
        """``kl.csv``: m×K KL estimates, new models as rows, existing models as columns."""
        return kl_frame(self.new_models, self.existing_models, self.kl)

    def nearest(self, k: int = 5) -> pd.DataFrame:
        """The ``k`` nearest existing models of each new one (placement.csv's columns up to rank)."""
        return placement_table(self.new_models, self.existing_models, self.kl, self.kl_se, top=k)

    def _failed_lines(self) -> list[str]:
        return [f"  {name}: not placed ({why})" for name, why in self.failed.items()]


@dataclass(eq=False, kw_only=True)
class Placement(PlacedModels):
    """New models placed into an existing map from a subset of texts (see :func:`place`, :func:`add_models`).

    Attributes (besides those of :class:`PlacedModels`)
    ----------
    map : the subset map of the existing and new models (existing first).
    kl_se : the bootstrap standard error of ``kl`` (``R`` replicates seeded by ``random_state``).
    coords : (K + m, 2) positions of ``map.names``; ``method`` the embedding that placed them.
    rebuilt : True when the whole 2-D map was refitted (the existing models may have moved).
    scored : models scored by :func:`add_models` (``scoring_seconds``: the time that took).
    subset : the :class:`lmmap.data.subset.Subset` whose texts the map is built on (or None).
    kl_all : ``kl.csv``: the (K + m)×(K + m) KL of ``map``, in ``unit``; None in a map of more than
        :data:`lmmap.map.DENSE_MAX_K` models (placement.csv then lists each new model's
        :data:`LARGE_TABLE_ROWS` nearest, ``table_rows``).
    neighbors : ``neighbors.csv``: each model's ``k`` nearest in ``map`` (:meth:`ModelMap.neighbor_table`);
        in a large map, the new models' only.
    """

    map: ModelMap
    coords: np.ndarray
    method: str = "auto"
    rebuilt: bool = False
    R: int = 100
    scored: list[str] = field(default_factory=list)
    subset: object = None
    kl_all: pd.DataFrame | None = None
    neighbors: pd.DataFrame | None = None
    k: int = 10

    def summary(self) -> str:
        t = self.nearest(1)
        lines = [
            f"placed {len(self.new_models)} new model(s) among {len(self.existing_models)} on "
            f"{self.map.L.shape[1]} of N = {self.map.n_texts} texts"
            + (f"; scored {len(self.scored)} in {self.scoring_seconds:.1f} s" if self.scored else "")
            + ("; map rebuilt" if self.rebuilt else "; existing positions kept")
        ]
        for row in t.itertuples(index=False):
            lines.append(f"  {row.new_model}: nearest {row.existing_model} "
                         f"(KL {format_estimate(row.kl, row.kl_se)} {self.unit_label})"
                         + self.parent_line(row.new_model))
        return "\n".join(lines + self._failed_lines())


def format_estimate(value: float, se: float) -> str:
    """``value ± se`` rounded alike: the SE to two significant figures and the value to the same decimals
    (``76.7 ± 5.0``; ``76.73 ± 5`` reads as if the two were known to different precision)."""
    if not np.isfinite(se) or se <= 0:
        return f"{value:.4g}"
    decimals = int(min(6, max(0, 1 - np.floor(np.log10(se)))))
    return f"{value:,.{decimals}f} ± {se:,.{decimals}f}"


def placement_table(new_models, existing_models, kl, kl_se, top: int | None = None) -> pd.DataFrame:
    """``placement.csv``: new_model, existing_model, kl, kl_se, rank (1 = nearest), nearest first; with ``top``,
    each new model's ``top`` nearest only.

    The one layout for every way of adding models (by a subset or adaptively).
    """
    m, K = kl.shape
    order = np.argsort(kl, axis=1, kind="stable")
    if top is not None:
        order = order[:, :top]
        K = order.shape[1]
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


def place(
    mm: ModelMap,
    new_names,
    L_new,
    *,
    base: ModelMap | None = None,
    base_coords=None,
    embedding: str = "auto",
    rebuild: bool = False,
    R: int = 100,
    random_state=0,
    embedding_random_state=42,
    unit: str = "nats-per-text",
    k: int = 10,
    progress: ProgressFn = None,
) -> Placement:
    """Place m new models into the map ``mm`` of K existing models from their log-likelihoods on ``mm``'s texts.

    The new rows are clipped with ``mm``'s threshold and centred with its
    weights ``w``; existing rows and their mutual KL are unchanged (column
    centring does not change differences between models).

    Parameters
    ----------
    mm : the map of the existing models on the d texts (a subset map:
        ``ModelMap.from_store(store, models=..., subset=...)``, with ``w``,
        the draw counts ``c`` and the subset's stored threshold).
    new_names : the m new model names (not in ``mm``).
    L_new : (m, d) their log-likelihoods on ``mm``'s texts, in ``mm``'s column order.
    base : the full-text-set map of the existing models: in an MDS or t-SNE
        map the existing models keep its positions (what ``lmmap map`` draws).
        Default: the positions of ``mm``'s own embedding.
    base_coords : positions of the existing models instead (a coords.csv path
        or a DataFrame with columns model, x, y); new models are then placed
        against them by t-SNE unless they are ``base``'s MDS.
    embedding : "auto" (classical MDS below 40 existing models, t-SNE from 40
        on, as ``lmmap map``), "mds", "tsne" or "pca".
    rebuild : refit the whole 2-D map instead of keeping the existing positions.
    R, random_state : bootstrap replicates and their seed for ``kl_se``.
    embedding_random_state : seeds the 2-D embedding.
    unit : the unit of the placement's KL and its SE: ``nats-per-text`` (default) or ``bits-per-byte``
        (divided by the ``w``-weighted mean UTF-8 bytes of ``mm``'s texts · ln 2; ``mm`` needs
        ``text_bytes``). The 2-D positions do not depend on it.
    k : neighbours per model in the placed map's neighbour table.
    progress : ``callable(Step)`` for a line on what is being placed.

    Returns
    -------
    Placement
    """
    from lmmap.maths.randomness import check_random_state
    from lmmap.params import check

    check_unit(unit)
    k = check("k", k)
    check_random_state(random_state)
    check_random_state(embedding_random_state, "embedding_random_state")  # deeper down it is called random_state
    new = [str(n) for n in new_names]
    existing = list(mm.names)
    d = mm.L.shape[1]
    L_new = np.asarray(L_new, dtype=np.float64)
    if L_new.ndim != 2 or L_new.shape != (len(new), d):
        raise InputError(f"L_new must be m×d = {len(new)}×{d} (one row per new model, the map's texts), got "
                         f"shape {L_new.shape}", params=("L_new",))
    if not new:
        raise InputError("new_names is empty: give at least one model to place", params=("new_names",))
    if base is not None and list(base.names) != existing:
        raise InputError("base must be the full map of the same existing models, in the same order",
                         params=("base",))
    full = ModelMap(
        existing + new, np.vstack([mm.L, L_new.astype(mm.L.dtype)]), threshold=mm.threshold, w=mm.w, n_texts=mm.n_texts,
        counts=mm.counts, metadata=mm.metadata, clip_percentile=mm.clip_percentile, text_set_id=mm.text_set_id,
        text_bytes=mm.text_bytes,
    )
    factor = full.unit_factor(unit)  # refused before any work when the map has no byte lengths
    K, m = len(existing), len(new)
    large = full.K > map_module.DENSE_MAX_K
    if large and not rebuild and base_coords is None:
        raise InputError(
            f"a map of {K:,} models is not embedded again to place {m} new one(s): give the positions of its "
            "models, {base_coords=MAPDIR/coords.csv} (written by `lmmap map`), or ask for {rebuild=True}",
            params=("base_coords", "rebuild"))
    X = full.features()
    X_old, X_new = X[:K], X[K:]
    # Only the m×K block: the (K + m)² matrix of a large map would not fit (80 GB at 10⁵ models).
    KL = geometry.kl_from_squared_distances(geometry.cross_squared_distances(X_new, X_old), full.n_texts)
    se = _placement_se(X_new, X_old, KL, mm.counts, R, random_state, full.n_texts, large)
    _warn_identical(new, existing, X_new, X_old, full.n_texts, KL)
    if rebuild:
        method = full.embedding_method(embedding)
        coords = full.embed(embedding, random_state=embedding_random_state)
    elif large:
        method = "tsne"
        say(progress, f"placing {m} model(s) among the {LARGE_PLACE_NEIGHBORS} nearest of {K:,} on the map…")
        coords_old = _read_base_coords(base_coords, existing)
        coords = np.vstack([coords_old, _median_of_nearest(coords_old, KL, LARGE_PLACE_NEIGHBORS)])
    else:
        method = mm.embedding_method(embedding)  # as `lmmap map` of the existing models would choose
        say(progress, f"placing {m} model(s) into the map of {K} ({method})…")
        coords, method = _keep_positions(mm, base, base_coords, KL, X_old, X_new, method, embedding_random_state)
    parents, parents_p = _likely_parents(full, new, existing, random_state)
    # Converted only now: Gower's placement and the identity check above work in nats per text (KL = g̃ / 2N).
    return Placement(
        lineage=parents, lineage_p=parents_p,
        new_models=new, existing_models=existing, map=full, kl=KL * factor, kl_se=se * factor, coords=coords,
        method=method, rebuilt=rebuild, R=R, random_state=random_state, embedding_random_state=embedding_random_state,
        unit=unit, kl_all=None if large else full.kl_frame(unit),
        neighbors=_new_neighbors(full, KL, K, k, factor) if large else full.neighbor_table(k, unit=unit), k=k,
        table_rows=LARGE_TABLE_ROWS if large else None,
    )


def _likely_parents(full: ModelMap, new: list[str], existing: list[str], random_state):
    """Each new model's likely parent among the existing ones (:func:`lmmap.analyses.lineage.likely_parents`), or
    ``(None, None)`` with a note when the map is too small for the lineage test's null."""
    from lmmap.analyses.lineage import likely_parents

    try:
        return likely_parents(full, new, among=existing, random_state=random_state)
    except InputError as exc:
        warnings.warn(f"no likely parents: {exc}", LmmapWarning, stacklevel=3)
        return None, None


def _placement_se(X_new, X_old, KL, counts, R, random_state, n_texts, large) -> np.ndarray:
    """The bootstrap SE of the m×K KL block; in a large map only for each new model's
    :data:`LARGE_TABLE_ROWS` nearest (NaN elsewhere): R·m·K·d multiply-adds would be hours at K = 10⁵."""
    if not large:
        return geometry.kl_from_squared_distances(
            cross_sq_distance_se(X_new, X_old, counts, R=R, random_state=random_state), n_texts)
    se = np.full(KL.shape, np.nan)
    near = np.argsort(KL, axis=1, kind="stable")[:, :LARGE_TABLE_ROWS]
    for i in range(KL.shape[0]):
        cols = near[i]
        se[i, cols] = geometry.kl_from_squared_distances(
            cross_sq_distance_se(X_new[i:i + 1], X_old[cols], counts, R=R, random_state=random_state)[0], n_texts)
    return se


def _median_of_nearest(coords_old: np.ndarray, KL: np.ndarray, n: int) -> np.ndarray:
    """Positions (m×2) of new models in a large t-SNE map: the median of the positions of their ``n`` nearest
    existing models by KL — openTSNE's own starting point for new points (``transform``'s "median"
    initialisation), without the K×K affinities an optimisation against the whole map would need."""
    near = np.argsort(KL, axis=1, kind="stable")[:, :n]
    return np.median(coords_old[near], axis=1)


def _new_neighbors(full: ModelMap, KL: np.ndarray, K: int, k: int, factor: float) -> pd.DataFrame:
    """``neighbors.csv`` of a placement into a large map: each new model's ``k`` nearest among the existing
    and the other new models (the existing models' own lists are those of `lmmap map`)."""
    names = np.asarray(full.names, dtype=object)
    m = KL.shape[0]
    X_new = full.features()[K:]
    among_new = geometry.kl_from_squared_distances(geometry.cross_squared_distances(X_new, X_new), full.n_texts)
    np.fill_diagonal(among_new, np.inf)
    both = np.hstack([KL, among_new])
    kk = int(min(k, full.K - 1))
    idx = np.argsort(both, axis=1, kind="stable")[:, :kk]
    vals = np.take_along_axis(both, idx, axis=1) * factor
    return pd.DataFrame({"model": np.repeat(names[K:], kk), "rank": np.tile(np.arange(1, kk + 1), m),
                         "neighbor": names[idx.ravel()], "kl": vals.ravel()})


def _keep_positions(mm, base, base_coords, KL, X_old, X_new, method, random_state) -> tuple[np.ndarray, str]:
    """Positions of the existing models (kept) and of the new ones (placed against them); returns (coords, method)."""
    # PCA places new rows by the fitted projection, so its base must be the subset map's own PCA.
    base_map = base if (base is not None and method in ("tsne", "mds")) else mm
    if base_coords is not None:
        coords_old = _read_base_coords(base_coords, list(mm.names))
    else:
        coords_old = base_map.embed(method, random_state=random_state)
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
    return np.vstack([coords_old, coords_new]), method


def _read_base_coords(base_coords, existing: list[str]) -> np.ndarray:
    if isinstance(base_coords, (str, os.PathLike)):
        path = Path(base_coords)
        if not path.exists():
            raise MissingFileError(f"base coordinates {path} do not exist (give the coords.csv of `lmmap map`)",
                                   params=("base_coords",))
        df = pd.read_csv(path, dtype={"model": str})
        if "model" in df.columns:
            # A model called NA, None, null or nan is a name here, not a missing value.
            df["model"] = pd.read_csv(path, usecols=["model"], dtype=str, na_filter=False)["model"].to_numpy()
        where = str(path)
    else:
        df, where = pd.DataFrame(base_coords), "base_coords"
    if not {"model", "x", "y"} <= set(df.columns):
        raise InputError(f"{where} needs columns model, x, y (as `lmmap map` writes coords.csv)", params=("base_coords",))
    df = df.drop_duplicates("model").set_index("model")
    missing = [m for m in existing if m not in df.index]
    if missing:
        raise InputError(
            f"{where} has no position for {len(missing)} of the map's models (e.g. {missing[0]!r}): "
            "it is the map of other models", params=("base_coords",),
        )
    xy = df.loc[existing, ["x", "y"]].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(xy)):
        raise InputError(f"{where} has non-finite coordinates", params=("base_coords",))
    return xy


def _warn_identical(new, existing, X_new, X_old, n_texts, KL) -> None:
    """A LmmapWarning for each new model whose vector is that of an existing model (the same model twice)."""
    if not len(new):
        return
    nearest = KL.argmin(axis=1)
    for i, j in enumerate(nearest):
        # From the difference itself, not the Gram expansion, whose round-off is larger than this tolerance.
        direct = float(geometry.kl_from_squared_distances(np.sum((X_new[i] - X_old[j]) ** 2), n_texts))
        if direct < IDENTICAL_KL:
            shown = f"KL ≈ {KL[i, j]:.0e}" if KL[i, j] > 0 else "KL = 0"
            warnings.warn(
                f"{new[i]!r} is identical to {existing[j]!r} ({shown}): the same model stored twice? "
                f"`lmmap rm {new[i]}` removes it",
                LmmapWarning,
                stacklevel=4,
            )


# -- the store convenience: check, score, map, place ------------------------------------------------


def _check_new_models(models, subset, replace: bool) -> tuple[list[str], list[str]]:
    """Validate the names; returns (new models, existing models of the map)."""
    models = [str(m) for m in models]
    if not models:
        raise InputError("give at least one model to add", params=("models",))
    dup = pd.Index(models)[pd.Index(models).duplicated()]
    if len(dup):
        raise InputError(f"model {dup[0]!r} is given twice", params=("models",))
    in_map = [m for m in models if m in set(subset.models)]
    if in_map and not replace:
        raise InputError(
            f"{len(in_map)} model(s) are already in the map, e.g. {in_map[0]!r}; pass {{replace=True}} to re-score and "
            "re-place them", params=("replace",),
        )
    existing = [m for m in subset.models if m not in set(models)]
    if len(existing) < 1:
        raise InputError("no existing model would be left in the map to place the new ones against", params=("models",))
    return models, existing


def _needs_scoring(store, name: str, text_pos: np.ndarray, records: dict, replace: bool) -> bool:
    if replace or name not in records:
        return True
    if int(records[name].get("n_scored", -1)) == store.n_texts:
        return False
    have = store.vectors(name)["text_pos"].to_numpy()
    return not np.isin(text_pos, have).all()


def _map_convention(records: dict, existing: list[str], convention: str | None) -> str:
    """The scoring convention of the map's models; another ``convention`` is refused (SPEC §2: never mix them)."""
    convs = {records[n].get("convention") for n in existing if n in records}
    if len(convs) > 1:
        raise StoreError(f"the map's models were scored under several conventions ({sorted(map(str, convs))}); "
                         "map one convention at a time")
    map_conv = next(iter(convs))
    if convention is not None and convention != map_conv:
        raise InputError(
            f"the map's models were scored under the {map_conv!r} convention; new models scored under "
            f"{convention!r} cannot join it (SPEC §2); drop {{convention={convention}}} or use {{convention={map_conv}}}",
            params=("convention",),
        )
    return map_conv


def _full_map_if_possible(store, existing: list[str], subset) -> ModelMap | None:
    """The full-text-set map of the existing models, when all of them have every text."""
    if not set(existing) <= set(store.complete_models()):
        return None
    full = ModelMap.from_store(store, models=existing, clip=subset.threshold is not None)
    if subset.threshold is not None and not np.isclose(full.threshold, subset.threshold, rtol=_THRESHOLD_RTOL, atol=0):
        raise InputError(
            f"the clipping threshold of the map's {len(existing)} models is now {full.threshold:.6g}, but the subset "
            f"recorded {subset.threshold:.6g}: their vectors changed since the subset was selected; select again",
            params=("subset",),
        )
    return full


def add_models(
    store,
    models,
    subset,
    *,
    names=None,
    convention: str | None = None,
    scoring: ScoringOptions | None = None,
    executor: ExecutorOptions | None = None,
    rebuild: bool = False,
    replace: bool = False,
    R: int = 100,
    random_state=0,
    embedding: str = "auto",
    embedding_random_state=42,
    base_coords=None,
    unit: str = "nats-per-text",
    k: int = 10,
    progress: ProgressFn = None,
) -> Placement:
    """Score ``models`` on ``subset``'s texts only and place them into the map of ``subset.models`` (:func:`place`).

    Parameters
    ----------
    store : the :class:`lmmap.Store` the subset was selected on.
    models : the new models (Hugging Face ids or paths to score, or names of
        models already in the store: those that have the subset's texts are
        not scored again).
    subset : a :class:`lmmap.data.subset.Subset` (``lmmap select``).
    names : store the models under these names instead (one per model);
        default: a local directory's own name, a hub id as it is.
    convention : scoring convention; default: that of the map's models.
        Another one is refused (SPEC §2: never mix conventions).
    scoring : how to score: a :class:`lmmap.scoring.ScoringOptions` (device, dtype, batch_tokens, ...); its
        convention is replaced by ``convention`` or the map's.
    executor : where to score: a :class:`lmmap.scoring.ExecutorOptions` (default: this process).
    rebuild : refit the whole 2-D map instead of keeping the existing positions.
    replace : re-score models already in the store, and re-place models that
        are in the map (they are then treated as new).
    R, random_state : bootstrap replicates and their seed for the KL standard errors.
    embedding, embedding_random_state, base_coords : the 2-D map, as in :func:`place`. By default the
        existing models keep the positions of their full map (what ``lmmap map`` draws for them), or of the
        subset map when they lack some texts.
    unit : the unit of the placement's KL, as in :func:`place`; checked (the subset's texts must
        have byte lengths for ``bits-per-byte``) before anything is scored.
    progress : ``callable(Step)``: scoring progress and a line per stage.

    Returns
    -------
    Placement (``lmmap.report.write(placement, outdir)`` writes its files)
    """
    from lmmap import scoring as scoring_api
    from lmmap.maths.bootstrap import check_replicates
    from lmmap.maths.randomness import check_random_state
    from lmmap.scoring.options import resolve_options

    check_unit(unit)
    scoring, executor = resolve_options(scoring, executor)  # wrong types refused before any work
    # Refused before anything is scored: a bad seed would otherwise surface only after the scoring it wasted.
    check_replicates(R)
    check_random_state(random_state)
    check_random_state(embedding_random_state, "embedding_random_state")
    subset.check_store(store)
    subset.check_models(store)
    sources = [str(m) for m in models]
    if names is not None and len(list(names)) != len(sources):
        raise InputError(f"names has {len(list(names))} names for {len(sources)} models: give one name per model",
                         params=("names",))
    if names is None:
        # The name shown on the map and in the tables: the directory's own name, not the path typed.
        names = [scoring_api.default_model_name(m) for m in sources]
    new, existing = _check_new_models(list(names), subset, replace)
    source_of = dict(zip(new, sources))
    records = store.records()
    map_conv = _map_convention(records, existing, convention)
    to_score = [m for m in new if _needs_scoring(store, m, subset.text_pos, records, replace)]
    for m in new:
        if m not in to_score and records[m].get("convention") != map_conv:
            raise InputError(
                f"model {m!r} is stored under the {records[m].get('convention')!r} convention but the map's "
                f"models under {map_conv!r}; re-score it with {{convention={map_conv}}} and {{replace=True}}",
                params=("convention", "replace"),
            )

    # The existing models' full map, when they have every text: checks that their vectors are still
    # those the subset was selected from (same threshold) before any scoring, and later gives their positions in the 2-D map.
    # A large map's existing models keep the positions given (base_coords): their full map (8 GB at 10⁵ models)
    # is not loaded for them.
    large = len(existing) > map_module.DENSE_MAX_K and base_coords is not None and not rebuild
    full = None if large else _full_map_if_possible(store, existing, subset)
    # The existing models' subset map does not change by scoring new ones: built now, it refuses a unit
    # the texts cannot give before anything is scored.
    mm = ModelMap.from_store(store, models=existing, subset=subset)
    mm.unit_factor(unit)

    seconds, failed = 0.0, {}
    if to_score:
        say(progress, f"scoring {len(to_score)} model(s) on the subset's {subset.d} texts (of {subset.n_texts})…")
        t0 = time.perf_counter()
        status = scoring_api.score_models(store, [source_of[m] for m in to_score], names=to_score,
                                          text_pos=subset.text_pos, convention=map_conv, replace=replace,
                                          progress=progress, options=scoring, executor=executor)
        seconds = time.perf_counter() - t0
        failed = {m: str(st) for m, st in status.items() if not st.ok}
        if len(failed) == len(new):
            raise ScoringError("no model could be scored: " + "; ".join(failed.values()))
        if failed:
            say(progress, f"{len(failed)} model(s) failed and are left out: {', '.join(failed)}")
        new = [m for m in new if m not in failed]
        to_score = [m for m in to_score if m not in failed]

    _, L_new = store.matrix(new, text_pos=subset.text_pos)
    result = place(mm, new, L_new, base=full, base_coords=base_coords, embedding=embedding, rebuild=rebuild, R=R,
                   random_state=random_state, embedding_random_state=embedding_random_state, unit=unit, k=k,
                   progress=progress)
    result.scored, result.scoring_seconds, result.failed, result.subset = to_score, seconds, failed, subset
    return result

"""The model map as an analysis (``lmmap map``): :func:`build_map` computes, :mod:`lmmap.report.map` writes.

From a :class:`lmmap.map.ModelMap` (``L`` clipped and double-centred into
``Q``, with weights ``w`` on a resampled subset), :func:`build_map` computes
everything the map's files show, once:

* the 2-D coordinates (classical MDS of KL below 40 models, t-SNE of
  ``Q W^{1/2}`` from 40 on; seeded by ``embedding_random_state``);
* each model's ``k`` nearest models by ``KL ≈ g/2N`` (exact, or from
  :mod:`lmmap.maths.knn` without a K×K matrix past :data:`lmmap.map.DENSE_MAX_K`
  models), and with ``se`` their bootstrap standard errors (``R`` replicates
  of the draws behind the map, seeded by ``random_state``);
* the K×K KL matrix only when it is small (up to :data:`lmmap.map.DENSE_MAX_K`
  models) or asked for (``full_kl``), and its standard errors with it;
* the lineage: the declared one (metadata ``base_model``: is each model's
  nearest in its own lineage?) and the inferred one, the lineage test of
  :mod:`lmmap.analyses.lineage` (each model's likely parent, its p-value and
  a decision; nothing K×K past :data:`lmmap.map.DENSE_MAX_K` models), run when
  the metadata declares bases or the lines ask for it (``edges="lineage"``);
  the red rings are the test's (``flagged``: see that module);
* the map's lines: nearest-neighbour pairs, the declared bases, the inferred
  parents of models without a declared base, training trajectories and the
  layers of lensed models.

Every KL of a :class:`MapResult` is in nats per text; the writer converts to
the unit asked for (:meth:`lmmap.map.ModelMap.unit_factor`), which is a
product, not a computation of the map.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lmmap.exceptions import InputError, LmmapWarning
from lmmap.map import LINEAGE_COLUMN, ModelMap
from lmmap.maths import geometry
from lmmap.progress import ProgressFn, say

# The kinds of path a map's metadata can declare (lmmap.analyses.trajectory.PATHS), in drawing order.
PATH_KINDS = ("trajectory", "layers")


@dataclass(eq=False)
class MapResult:
    """The model map: what :func:`build_map` computed and :mod:`lmmap.report.map` writes.

    Attributes
    ----------
    map : the :class:`~lmmap.map.ModelMap` (names, ``L``, ``Q``, threshold, ``w``, metadata).
    coords : (K, 2) positions of ``map.names`` in the 2-D map; ``method`` the embedding that made them
        (``embedding`` as asked, e.g. ``auto``), seeded by ``embedding_random_state``.
    neighbors : each model's ``k`` nearest models: columns model, rank, neighbor, kl (and kl_se with ``se``),
        KL in nats per text.
    kl : (K, K) ``KL ≈ g/2N`` in nats per text, float64 up to :data:`lmmap.map.DENSE_MAX_K` models; with
        ``full_kl`` on a larger map float32 (what ``kl.npy`` holds, computed a block of rows at a time);
        None when neither (``neighbors`` has each model's nearest).
    kl_se : (K, K) bootstrap standard error of ``kl`` (nats per text) with ``se``, else None.
    lineage : what ``lineage.csv`` holds (:func:`lineage_table`): with the lineage test (``inferred``) one row
        per model — the declared base and the test's inferred parent(s), statistic, p-values, decision,
        direction, ``flagged`` (the red ring) — beside the KL comparison of
        :meth:`lmmap.map.ModelMap.lineage` (for models with a declared base; KL in nats per text); without
        it that comparison alone (empty when the metadata declares no base).
    inferred : the :class:`lmmap.analyses.lineage.LineageResult` of the map (at level ``alpha``), or None when
        it was not run (no declared base and ``edges`` other than ``lineage``, ``edges="none"`` without
        declared bases, or fewer than :data:`lmmap.map.LINEAGE_TEST_MIN_MODELS` models).
    edges : the lines drawn (``nn``, ``base_model``, ``lineage`` or ``none``: ``auto`` resolved).
    nearest_pairs : with ``edges="nn"``, each model and its nearest by KL (a mutual pair once, sorted).
    paths : ``[(kind, pairs)]``, consecutive checkpoints of each training trajectory (``trajectory``) and
        consecutive layers of each lensed model (``layers``) declared by the metadata, empty with
        ``edges="none"``.
    k, se, R, random_state, full_kl : the settings the result was computed with.
    """

    map: ModelMap
    coords: np.ndarray
    method: str
    neighbors: pd.DataFrame
    lineage: pd.DataFrame
    edges: str
    embedding: str = "auto"
    embedding_random_state: object = 42
    kl: np.ndarray | None = None
    kl_se: np.ndarray | None = None
    nearest_pairs: tuple = ()
    paths: list = field(default_factory=list)
    k: int = 10
    se: bool = False
    R: int = 100
    random_state: object = 0
    full_kl: bool = False
    inferred: object = None
    alpha: float = 0.05

    @property
    def names(self) -> list[str]:
        return self.map.names

    def flagged(self) -> list[str]:
        """The models circled in red: the lineage test contradicts (or extends) the declared lineage."""
        t = self.lineage
        if "flagged" not in t.columns:
            return []
        return list(t.loc[t["flagged"].fillna(False).astype(bool), "model"])

    @property
    def K(self) -> int:
        return self.map.K


def build_map(
    mm: ModelMap,
    *,
    embedding: str = "auto",
    embedding_random_state=42,
    edges: str = "auto",
    k: int = 10,
    se: bool = False,
    R: int = 100,
    random_state=0,
    full_kl: bool = False,
    alpha: float = 0.05,
    progress: ProgressFn = None,
) -> MapResult:
    """The map of ``mm``: coordinates, neighbours (and KL), their standard errors, lineage and lines.

    Parameters
    ----------
    embedding : auto (classical MDS below 40 models, t-SNE from 40 on), mds, tsne, pca or umap.
    embedding_random_state : seeds the 2-D embedding (t-SNE, UMAP): the same seed gives the same coordinates.
    edges : auto (``lineage`` when the metadata declares bases, else ``nn``), nn, base_model, lineage (the declared
        lines and, dashed, the lineage test's inferred parents of models without a declared base) or none.
    k : neighbours per model (at least 1).
    se : add bootstrap standard errors (``R`` replicates seeded by ``random_state``) to the neighbours; this
        computes the K×K matrices whatever K.
    full_kl : compute the K×K KL matrix on a map of more than :data:`lmmap.map.DENSE_MAX_K` models too
        (refused past :data:`lmmap.map.DENSE_MAX_BYTES`: :func:`check_full_kl`).
    alpha : significance level of the lineage test (:func:`lmmap.analyses.lineage.lineage`, Holm-corrected
        within each model's K − 1 possible parents); its null's random pairs are seeded by ``random_state``.
    progress : ``callable(Step)``: a line per stage.

    Every setting is checked before any computation. Returns a :class:`MapResult`
    (``lmmap.report.write(result, outdir)`` writes its files).
    """
    import lmmap.map as map_module  # read at call time: the thresholds are module settings
    from lmmap.maths.bootstrap import check_replicates
    from lmmap.maths.randomness import check_random_state

    if full_kl:
        check_full_kl(mm.K)
    method = mm.embedding_method(embedding)
    edge_mode = mm.resolve_edges(edges)
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}", params=("k",))
    if se:
        check_replicates(R)
    from lmmap.maths.lineage import check_alpha

    alpha = check_alpha(alpha)
    check_random_state(random_state)
    check_random_state(embedding_random_state, "embedding_random_state")  # deeper down it is called random_state

    small = mm.K <= map_module.DENSE_MAX_K
    kl = None
    if small:
        say(progress, f"KL between {mm.K} models…")
        kl = mm.kl()
    elif full_kl:
        say(progress, f"the {mm.K:,}×{mm.K:,} KL matrix…")
        kl = _kl_float32(mm)
    kl_se = None
    if se:
        say(progress, f"bootstrap standard errors ({R} replicates)…")
        kl_se = mm.kl_se(R=R, random_state=random_state)
    say(progress, f"embedding {mm.K} models ({method})…")
    coords = mm.embed(embedding, random_state=embedding_random_state)
    say(progress, f"the {k} nearest models of each…")
    if small or se:
        # From the K×K matrix, as ModelMap.neighbor_table does whenever it has one (with se it is there anyway).
        idx, vals = geometry.nearest_neighbors(kl if small else mm.kl(), k)
        neighbors = _neighbor_frame(mm.names, idx, vals)
    else:
        neighbors = mm.neighbor_table(k)  # lmmap.maths.knn: nothing K×K
    if se:
        kk = len(neighbors) // mm.K
        cols = pd.Index(mm.names).get_indexer(neighbors["neighbor"])
        neighbors["kl_se"] = kl_se[np.repeat(np.arange(mm.K), kk), cols]
    inferred = None
    if runs_lineage_test(mm, edge_mode):
        from lmmap.analyses.lineage import lineage as lineage_test

        say(progress, f"the lineage test of {mm.K} models…")
        inferred = lineage_test(mm, alpha=alpha, random_state=random_state, coords=coords, progress=progress)
    lineage = lineage_table(mm, mm.lineage(), inferred)
    pairs, paths = (), []
    if edge_mode != "none":
        if edge_mode == "nn":
            pairs = nearest_pairs(mm)
        paths = trajectory_lines(mm)
    return MapResult(
        map=mm, coords=coords, method=method, embedding=embedding, embedding_random_state=embedding_random_state,
        neighbors=neighbors, kl=kl, kl_se=kl_se, lineage=lineage, edges=edge_mode, nearest_pairs=pairs, paths=paths,
        k=int(k), se=bool(se), R=int(R), random_state=random_state, full_kl=bool(full_kl), inferred=inferred,
        alpha=alpha,
    )


def runs_lineage_test(mm: ModelMap, edge_mode: str) -> bool:
    """Whether a map (``edge_mode`` resolved) runs the lineage test: it draws the inferred lines
    (``lineage``), or its metadata declares bases (the rings and ``lineage.csv`` are the test's) and it draws
    lines at all; never below :data:`lmmap.map.LINEAGE_TEST_MIN_MODELS` models."""
    from lmmap.map import LINEAGE_TEST_MIN_MODELS

    if mm.K < LINEAGE_TEST_MIN_MODELS or edge_mode == "none":
        return False
    return edge_mode == "lineage" or bool(mm.base_models())


# The columns lineage.csv takes from the lineage test, renamed where the map's table has the name already.
INFERRED_COLUMNS = {"parent": "inferred_parent", "parent2": "inferred_parent2", "decision": "decision",
                    "statistic": "statistic", "p_value": "p_value", "p_adjusted": "p_adjusted",
                    "direction": "direction", "flagged": "flagged"}


def lineage_table(mm: ModelMap, declared: pd.DataFrame, inferred) -> pd.DataFrame:
    """``lineage.csv``: ``declared`` (:meth:`lmmap.map.ModelMap.lineage`, the models with a declared base) alone
    when the test did not run; else one row per model — model, base_model (declared, or empty), the test's
    columns (:data:`INFERRED_COLUMNS`), nearest (by KL) and kl_to_nearest for every model, and the declared
    comparison's kl_to_base, kl_to_lineage, relation, consistent where there is a declared base."""
    if inferred is None:
        return declared
    t = inferred.table
    bases = mm.base_models()
    out = pd.DataFrame({"model": mm.names, "base_model": [bases.get(n, "") for n in mm.names]})
    for src, dst in INFERRED_COLUMNS.items():
        out[dst] = t[src].to_numpy()
    out["nearest"] = t["nearest_kl"].to_numpy()
    out["kl_to_nearest"] = t["kl_to_nearest"].to_numpy()
    extra = declared.set_index("model").reindex(mm.names)
    for c in ("kl_to_base", "kl_to_lineage", "relation", "consistent"):
        out[c] = extra[c].to_numpy() if c in extra.columns else np.nan
    return out


def _neighbor_frame(names, idx: np.ndarray, vals: np.ndarray) -> pd.DataFrame:
    """Columns model, rank, neighbor, kl from K×k neighbour indices and values (the layout of neighbors.csv)."""
    K, kk = idx.shape
    names = np.asarray(names, dtype=object)
    return pd.DataFrame({"model": np.repeat(names, kk), "rank": np.tile(np.arange(1, kk + 1), K),
                         "neighbor": names[idx.ravel()], "kl": vals.ravel()})


def full_kl_cost(K: int) -> str:
    """What the K×K KL matrix costs at K models, in words: the file (``kl.npy``) and the memory to compute it."""
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


def _kl_float32(mm: ModelMap) -> np.ndarray:
    """``g/2N`` as float32 (K×K), converted a block of rows at a time: no second K×K float64 array beside ``G``."""
    G = mm.squared_distances()
    out = np.empty(G.shape, dtype=np.float32)
    step = max(1, (64 << 20) // (8 * mm.K))
    for s in range(0, mm.K, step):
        out[s:s + step] = geometry.kl_from_squared_distances(G[s:s + step], mm.n_texts)
    return out


# -- the lines of a map ---------------------------------------------------------------------------


def nearest_pairs(mm: ModelMap) -> tuple:
    """Each model and its nearest by KL, as sorted name pairs in index order (a mutual pair once)."""
    idx, _ = mm.nearest(1)
    pairs = sorted({tuple(sorted((i, int(j)))) for i, j in enumerate(idx[:, 0])})
    return tuple((mm.names[a], mm.names[b]) for a, b in pairs)


def trajectory_lines(mm) -> list[tuple[str, tuple]]:
    """``[(kind, pairs)]``: consecutive checkpoints of each trajectory in step order (kind ``trajectory``) and
    consecutive layers of each model scored with the logit lens (kind ``layers``).

    ``mm``: anything with ``names`` and ``metadata``. Empty when the metadata declares no path. A path that
    cannot be ordered (a step that is not a number) is left out with a note: the map is still drawn.
    """
    from lmmap.analyses.trajectory import order_points, trajectories

    out = []
    for kind in PATH_KINDS:
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
            out.append((kind, tuple(pairs)))
    return out


def declared_lines(names, metadata) -> list[tuple[str, tuple]]:
    """``[(kind, pairs)]`` a map's metadata declares, whatever the KL says: each model to its ``base_model``
    (kind ``lineage``) and the trajectory and layer paths (:func:`trajectory_lines`), among ``names`` only.
    For placed maps, whose KL comes from a subset of texts."""
    from types import SimpleNamespace

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
            out.append(("lineage", tuple(pairs)))
    return out + trajectory_lines(SimpleNamespace(names=list(names), metadata=meta))


__all__ = ["MapResult", "build_map", "check_full_kl", "declared_lines", "full_kl_cost", "lineage_table",
           "nearest_pairs", "runs_lineage_test", "trajectory_lines"]

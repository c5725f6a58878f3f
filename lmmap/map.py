"""The model map: coordinates ``Q``, KL estimates, neighbours and 2-D embeddings.

``ModelMap`` wraps the numeric core (:mod:`lmmap.maths.geometry`) for named models.
Build it from arrays (``ModelMap(names, L)``) or from a store
(``ModelMap.from_store(store)``, optionally on a resampled subset of texts).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lmmap._version import __version__
from lmmap.maths import geometry
from lmmap.exceptions import InputError, LmmapWarning

MIN_MODELS = 3
# --edges: lines from each model to its nearest by KL, the declared lineage (metadata column base_model), the
# declared lineage plus the lineage test's inferred parents (lmmap.analyses.lineage), or none.
EDGE_MODES = ("auto", "nn", "base_model", "lineage", "none")
LINEAGE_COLUMN = "base_model"
# A nearest model in another lineage is flagged only if the model's own lineage is more than this much (relative KL)
# further away: a near tie says nothing about lineage.
LINEAGE_TIE = 0.10
# KL units: nats per text (KL = g / 2N), or bits per byte of text (Kishino et al. 2025):
# KL in nats per text / (mean UTF-8 bytes of the map's texts · ln 2).
# Above this many models neighbours are found without a K×K matrix (lmmap.maths.knn): blocked exact products,
# or a randomized projection with exact re-ranking once K²·N is too many flops.
DENSE_MAX_K = 2000
# The K×K matrices (kl, squared_distances) are refused past this size: a map of 100,000 models would need 80 GB.
DENSE_MAX_BYTES = 4 << 30
# The lineage test (lmmap.analyses.lineage) fits its null from pairs of models: it needs this many.
LINEAGE_TEST_MIN_MODELS = 4
# Neighbours per model that lineage() looks through for one of the model's own lineage before searching it.
LINEAGE_NEIGHBORS = 10
UNITS = ("nats-per-text", "bits-per-byte")
UNIT_LABELS = {"nats-per-text": "nats/text", "bits-per-byte": "bits/byte"}


def check_unit(unit: str) -> str:
    """``unit`` if it is one of :data:`UNITS`; a one-line :class:`InputError` otherwise (the spec's, ``unit``)."""
    from lmmap.params import check

    return check("unit", unit)


@dataclass(eq=False)
class ModelMap:
    """A map of K models from their log-likelihood matrix ``L`` (K×d).

    Parameters
    ----------
    names : K model names (unique).
    L : K×d log-likelihoods on the map's texts.
    threshold : clipping threshold. ``"auto"`` (default) computes the
        ``clip_percentile``-th percentile of ``L``; a number reuses a stored
        threshold (models added later are clipped with it); ``None`` switches
        clipping off.
    w : weights of the d texts when they are a resampled subset
        (``w_t = c(u_t)/(nπ_{u_t})``); ``None`` for the full text set.
    n_texts : N, the size of the full text set (default d). KL = g / (2N).
    counts : draw counts c of the d texts (subset maps), for bootstrap errors.
    metadata : optional DataFrame indexed by model (model_type, family, ...).
    text_bytes : UTF-8 length in bytes of each of the d texts (from the text
        set); needed for KL in bits per byte (``unit="bits-per-byte"``).
    store_state : the state of the store whose consolidated matrix this map is (all its models, every
        text: :attr:`lmmap.data.store.Store.matrix_state`), under which its neighbour lists can be kept
        (:meth:`lmmap.data.store.Store.save_neighbors`); None otherwise.
    """

    names: list[str]
    L: np.ndarray
    threshold: float | str | None = "auto"
    w: np.ndarray | None = None
    n_texts: int | None = None
    counts: np.ndarray | None = None
    metadata: pd.DataFrame | None = None
    clip_percentile: float = geometry.DEFAULT_CLIP_PERCENTILE
    text_set_id: str | None = None
    text_bytes: np.ndarray | None = None
    store_state: str | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.names = [str(n) for n in self.names]
        # A float32 L (the store's consolidated matrix of a large map) stays float32, and so does Q
        # (geometry.double_center_float32): 10⁵ models × 10⁴ texts are 4 GB each instead of 8.
        self.L = np.asarray(self.L)
        if self.L.dtype != np.float32:
            self.L = np.asarray(self.L, dtype=np.float64)
        if self.L.ndim != 2 or self.L.shape[0] != len(self.names):
            raise InputError(f"L must be K×d with one row per name; got {self.L.shape} for {len(self.names)} names",
                             params=("L", "names"))
        dup = pd.Index(self.names)[pd.Index(self.names).duplicated()]
        if len(dup):
            raise InputError(f"duplicate model name {dup[0]!r}: each model must appear once in a map", params=("names",))
        if len(self.names) < MIN_MODELS:
            raise InputError(
                f"a map needs at least {MIN_MODELS} models (double centering over models is meaningless "
                f"for fewer); got {len(self.names)}", params=("names",)
            )
        geometry.check_finite(self.L, self.names)
        if self.text_bytes is not None:
            self.text_bytes = np.asarray(self.text_bytes, dtype=np.float64)
            if self.text_bytes.shape != (self.L.shape[1],) or not (self.text_bytes > 0).all():
                raise InputError(f"text_bytes must hold one positive byte length per text ({self.L.shape[1]}), "
                                 f"got shape {self.text_bytes.shape}", params=("text_bytes",))
        if self.n_texts is None:
            self.n_texts = self.L.shape[1]
        if isinstance(self.threshold, str):
            if self.threshold != "auto":
                raise InputError(f"threshold must be 'auto', a number or None, got {self.threshold!r}", params=("threshold",))
            self.threshold = geometry.clip_threshold_sampled(self.L, self.clip_percentile)
        if self.L.dtype == np.float32:
            self.Q = geometry.double_center_float32(self.L, self.threshold, self.w)
        else:
            self.Q = geometry.double_center(geometry.clip(self.L, self.threshold), self.w)
        self._index = {n: i for i, n in enumerate(self.names)}

    # -- construction from a store --------------------------------------------
    @classmethod
    def from_store(cls, store, models=None, subset=None, clip: bool = True, threshold=None, allow_mixed: bool = False) -> "ModelMap":
        """The map of ``models`` from ``store`` — the one rule for which models define a map.

        ``models=None`` takes every model scored on all the map's texts (all N,
        or the subset's d); models scored on only some of them are left out
        with one :class:`~lmmap.exceptions.LmmapWarning` naming them
        (:meth:`lmmap.data.store.Store.matrix`). Named models must have them all.

        ``subset`` (a :class:`lmmap.analyses.select.Subset`): build from its d texts
        with its weights and its stored clipping threshold (SPEC §4).
        ``threshold``: reuse a stored threshold instead of computing one.
        """
        if subset is not None:
            subset.check_store(store)
            names, L = store.matrix(models, text_pos=subset.text_pos, allow_mixed=allow_mixed, dtype="auto")
            thr = subset.threshold if clip else None
            if threshold is not None and clip:
                thr = threshold
            return cls(
                names, L, threshold=thr, w=subset.weights, n_texts=store.n_texts, counts=subset.counts,
                metadata=store.metadata(), text_set_id=store.text_set_id,
                text_bytes=_store_text_bytes(store, subset.text_pos),
            )
        names, L = store.matrix(models, allow_mixed=allow_mixed, dtype="auto")
        state = getattr(store, "matrix_state", None) if models is None else None
        thr = (threshold if threshold is not None else "auto") if clip else None
        return cls(names, L, threshold=thr, metadata=store.metadata(), text_set_id=store.text_set_id,
                   text_bytes=_store_text_bytes(store, None), store_state=state)

    def add_metadata(self, extra: pd.DataFrame) -> None:
        """Add metadata columns (a DataFrame indexed by model); ``extra`` wins where both have a value."""
        have = self.metadata is not None and len(self.metadata)
        self.metadata = extra.combine_first(self.metadata) if have else extra

    # -- basic quantities -------------------------------------------------------
    @property
    def K(self) -> int:
        return len(self.names)

    def index_of(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise InputError(f"model {name!r} is not in this map ({self.K} models)", params=("name",)) from None

    def features(self) -> np.ndarray:
        """``Q W^{1/2}`` (K×d): plain Euclidean geometry equals the map's weighted one."""
        return geometry.weighted_features(self.Q, self.w)

    def squared_distances(self) -> np.ndarray:
        """``G`` with ``g_ij = ‖q_i − q_j‖²_w`` (K×K; refused past :data:`DENSE_MAX_BYTES`)."""
        if "G" not in self._cache:
            size = 8 * self.K * self.K
            if size > DENSE_MAX_BYTES:
                raise InputError(
                    f"a map of {self.K:,} models has a {self.K:,}×{self.K:,} KL matrix of {size / 2**30:.0f} GiB; "
                    "use neighbor_table(k) or neighbors(model), which need no K×K matrix (lmmap neighbors, "
                    "neighbors.csv)")
            self._cache["G"] = geometry.squared_distances(self.Q, self.w)
        return self._cache["G"]

    @property
    def mean_text_bytes(self) -> float | None:
        """Mean UTF-8 bytes of the map's texts (weighted by ``w`` on a subset map); None if unknown."""
        if self.text_bytes is None:
            return None
        if self.w is None:
            return float(self.text_bytes.mean())
        w = np.asarray(self.w, dtype=np.float64)
        return float((w * self.text_bytes).sum() / w.sum())

    def unit_factor(self, unit: str = "nats-per-text") -> float:
        """What KL in nats per text is multiplied by to give ``unit`` (1, or 1 / (mean bytes · ln 2))."""
        check_unit(unit)
        if unit == "nats-per-text":
            return 1.0
        if self.mean_text_bytes is None:
            raise InputError("{unit='bits-per-byte'} needs the byte lengths of the map's texts (text_bytes), which "
                             "this map lacks; build it with ModelMap.from_store or give text_bytes",
                             params=("unit",))
        return 1.0 / (self.mean_text_bytes * np.log(2.0))

    def kl(self, unit: str = "nats-per-text") -> np.ndarray:
        """Estimated ``KL(p_i, p_j) ≈ g_ij / (2N)`` (K×K, symmetric, zero diagonal).

        ``unit``: ``nats-per-text`` (default) or ``bits-per-byte`` (divided by
        the mean text bytes · ln 2, see :attr:`mean_text_bytes`).
        """
        f = self.unit_factor(unit)
        kl = geometry.kl_from_squared_distances(self.squared_distances(), self.n_texts)
        return kl if f == 1.0 else kl * f

    def kl_se(self, R: int = 100, random_state=0, unit: str = "nats-per-text") -> np.ndarray:
        """Bootstrap standard error of each KL estimate (K×K); see :mod:`lmmap.maths.bootstrap`."""
        f = self.unit_factor(unit)
        key = ("kl_se", R, random_state)
        if key not in self._cache:
            from lmmap.maths.bootstrap import bootstrap_sq_distance_se

            se = bootstrap_sq_distance_se(self.Q, self.w, self.counts, R=R, random_state=random_state)
            self._cache[key] = geometry.kl_from_squared_distances(se, self.n_texts)
        return self._cache[key] if f == 1.0 else self._cache[key] * f

    def kl_frame(self, unit: str = "nats-per-text") -> pd.DataFrame:
        return pd.DataFrame(self.kl(unit), index=pd.Index(self.names, name="model"), columns=self.names)

    # -- neighbours ---------------------------------------------------------------
    def neighbors(self, model: str, k: int = 10, se: bool = False, R: int = 100,
                  unit: str = "nats-per-text") -> pd.DataFrame:
        """The ``k`` models with the smallest estimated KL to ``model`` (KL in ``unit``)."""
        check_unit(unit)
        i = self.index_of(model)  # a clear error for an unknown name
        if self.K > DENSE_MAX_K and not se:
            # One row against all: 2·K·N flops, whatever K.
            from lmmap.maths import knn

            if k < 1:
                raise InputError(f"k must be at least 1, got {k}", params=("k",))
            # float32 candidates, then their g in float64: a float64 copy of a float32 map would be 8 GB at 10⁵
            idx, g = knn.exact_knn_rows(self.features(), [i], int(min(k, self.K - 1)), dtype=self.Q.dtype)
            kl = geometry.kl_from_squared_distances(g[0], self.n_texts) * self.unit_factor(unit)
            return pd.DataFrame({"model": model, "rank": np.arange(1, len(kl) + 1),
                                 "neighbor": np.asarray(self.names, dtype=object)[idx[0]], "kl": kl})
        table = self.neighbor_table(k, se=se, R=R, unit=unit)
        return table[table["model"] == model].reset_index(drop=True)

    def neighbor_table(self, k: int = 10, se: bool = False, R: int = 100, unit: str = "nats-per-text") -> pd.DataFrame:
        """For every model, its ``k`` nearest models: columns model, rank, neighbor, kl (and kl_se), KL in ``unit``."""
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}", params=("k",))
        if self.K > DENSE_MAX_K and not se:
            idx, vals = self._knn_lists(k)
            vals = vals * self.unit_factor(unit)
        else:
            idx, vals = geometry.nearest_neighbors(self.kl(unit), k)
        kk = idx.shape[1]
        names = np.asarray(self.names, dtype=object)
        table = pd.DataFrame(
            {
                "model": np.repeat(names, kk),
                "rank": np.tile(np.arange(1, kk + 1), self.K),
                "neighbor": names[idx.ravel()],
                "kl": vals.ravel(),
            }
        )
        if se:
            table["kl_se"] = self.kl_se(R=R, unit=unit)[np.repeat(np.arange(self.K), kk), idx.ravel()]
        return table

    def nearest(self, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """``(index, kl)``, both K×k: each model's ``k`` nearest models and their KL in nats per text.

        Up to :data:`DENSE_MAX_K` models from the K×K matrix, beyond from :mod:`lmmap.maths.knn` (no K×K matrix).
        """
        if k < 1:
            raise InputError(f"k must be at least 1, got {k}", params=("k",))
        if self.K > DENSE_MAX_K:
            return self._knn_lists(k)
        return geometry.nearest_neighbors(self.kl(), k)

    def _knn_lists(self, k: int, reuse_any: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The large-map neighbour lists ``(index, kl)``, K×min(k, K−1), cached.

        A longer list already found answers a shorter one with its first columns: exactly what a shorter exact
        search returns (ties are broken by index), and from more candidates than a shorter approximate one;
        ``reuse_any``: any list already found will do, whatever its
        length (lineage needs the nearest and prefers, but does not need, more)."""
        from lmmap.maths import knn

        k = int(min(k, self.K - 1))
        have = sorted(key[1] for key in self._cache if isinstance(key, tuple) and key[0] == "knn")
        longer = [h for h in have if h >= k] or (have if reuse_any else [])
        if longer:
            found = self._cache[("knn", longer[-1] if reuse_any else longer[0])]
            kk = found.idx.shape[1] if reuse_any else k
            return found.idx[:, :kk], found.kl[:, :kk]
        found = self._cache[("knn", k)] = knn.knn(self.features(), k, n_texts=self.n_texts, random_state=0)
        if found.recall is not None and found.recall < 0.99:
            warnings.warn(LmmapWarning(
                f"neighbours of {self.K:,} models found approximately: recall@{k} {found.recall:.3f} on a "
                f"sample of {len(found.recall_rows)} models (their KL values are exact)"), stacklevel=3)
        return found.idx, found.kl

    # -- embeddings ---------------------------------------------------------------
    def embedding_method(self, method: str = "auto") -> str:
        """The method ``method`` stands for in this map: ``auto`` is classical MDS below 40 models, t-SNE above."""
        from lmmap.maths.embedding import resolve_method

        resolved = resolve_method(method, self.K)
        if resolved == "mds" and self.K > DENSE_MAX_K and method == "auto":
            return "tsne"  # auto never asks for a K×K matrix past DENSE_MAX_K (only a lowered one gets here)
        if resolved == "mds" and self.K > DENSE_MAX_K:
            raise InputError(
                f"{{embedding='mds'}} is classical MDS of the {self.K:,}×{self.K:,} KL matrix "
                f"({8 * self.K * self.K / 1e9:,.1f} GB), past the {DENSE_MAX_K:,} models it is for; use "
                "{embedding='tsne'} (from the neighbour lists) or {embedding='pca'}", params=("embedding",))
        return resolved

    def embed(self, method: str = "auto", random_state: int = 42, **kwargs) -> np.ndarray:
        """2-D coordinates (K×2) of the models (see :mod:`lmmap.maths.embedding`).

        ``auto`` (default): classical MDS of the KL matrix for K < 40 (squared
        map distances ≈ KL, from below), t-SNE (PCA initialisation) of ``Q W^{1/2}`` from 40 on.
        """
        from lmmap.maths.embedding import DEFAULT_PERPLEXITY, embed

        resolved = self.embedding_method(method)
        if resolved == "mds":
            kwargs.setdefault("n_texts", int(self.n_texts))
        elif resolved == "tsne" and method == "auto":
            # Chosen here, so lowered here without a warning: a perplexity needs about 3× as many neighbours.
            kwargs.setdefault("perplexity", min(DEFAULT_PERPLEXITY, (self.K - 1) / 3))
        key = ("embed", resolved, random_state, tuple(sorted(kwargs.items())))
        if key not in self._cache:
            if resolved == "tsne" and self.K > DENSE_MAX_K:
                kwargs = {**kwargs, **self._tsne_neighbors(kwargs.get("perplexity", DEFAULT_PERPLEXITY))}
            self._cache[key] = embed(self.features(), method=resolved, random_state=random_state, **kwargs)
        return self._cache[key]

    def _tsne_neighbors(self, perplexity: float) -> dict:
        """The t-SNE of a large map: its 3·perplexity neighbours (and a PCA start) without a K×K matrix.

        Where the neighbour lists are exact (K²·d small enough, :func:`lmmap.maths.knn.resolve_method`) they are
        the lists of ``neighbor_table`` extended to 3·perplexity (its first k columns answer it after, for
        free); otherwise they come from the randomised projection of those lists, by its key
        (:func:`lmmap.maths.knn.projected_neighbors`): t-SNE needs 90 neighbours per model, not their exact
        distances, and re-ranking 90 exactly would cost 90·K·N multiply-adds."""
        from lmmap.maths import knn

        n = int(min(self.K - 1, max(1, round(3 * perplexity))))
        if knn.resolve_method("auto", self.K, self.Q.shape[1]) == "exact":
            idx, kl = self._knn_lists(n)
            return {"neighbors": (idx, kl * 2.0 * self.n_texts)}
        self._knn_lists(10, reuse_any=True)
        found = next(v for key, v in self._cache.items() if isinstance(key, tuple) and key[0] == "knn")
        idx, key = knn.projected_neighbors(found.projection, n)
        return {"neighbors": (idx, key), "initialization": found.projection.Z[:, :2]}

    # -- lineage and the lines of the map ------------------------------------------
    def base_models(self) -> dict[str, str]:
        """``{model: base_model}`` from the metadata column ``base_model`` (the Hugging Face model-card field).

        Only bases that are models of this map count; empty, unknown and self-references are ignored.
        """
        if self.metadata is None or LINEAGE_COLUMN not in self.metadata.columns:
            return {}
        col = self.metadata[LINEAGE_COLUMN].reindex(self.names)
        out = {}
        for model, base in zip(self.names, col):
            if base is None or (not isinstance(base, str) and pd.isna(base)):
                continue
            base = str(base).strip()
            if base and base != model and base in self._index:
                out[model] = base
        return out

    def lineage(self, tie: float | None = None) -> pd.DataFrame:
        """One row per model with a declared base in the map: is its nearest model by KL in the same lineage?

        Columns: model, base_model, nearest (by KL), kl_to_base,
        kl_to_nearest, kl_to_lineage (to the nearest model of its own lineage:
        the tree of base_model links it belongs to), relation of the nearest
        model (``base``; ``child``: a model derived from it; ``sibling``:
        another model from the same base; ``same lineage``: further up or down
        the tree; ``other lineage``) and consistent. A nearest model in another
        lineage is a contradiction only when the lineage's nearest is more than
        ``tie`` (default :data:`LINEAGE_TIE`, 10%) further away: closer calls
        are within the estimates' noise.
        """
        tie = LINEAGE_TIE if tie is None else float(tie)
        bases = self.base_models()
        columns = ["model", "base_model", "nearest", "kl_to_base", "kl_to_nearest", "kl_to_lineage", "relation",
                   "consistent"]  # fmt: skip
        if not bases:
            return pd.DataFrame(columns=columns)
        root = _lineage_roots(self.names, bases, self._kin_links())
        roots = np.array([root[n] for n in self.names], dtype=object)
        if self.K > DENSE_MAX_K:
            idx, vals, to_base, to_lineage = self._lineage_distances(bases, roots)
        else:
            KL = self.kl()
            idx, vals = geometry.nearest_neighbors(KL, 1)
        rows = []
        for n, (model, base) in enumerate(bases.items()):
            i = self._index[model]
            nearest = self.names[idx[i, 0]]
            if nearest == base:
                relation = "base"
            elif bases.get(nearest) == model:
                relation = "child"
            elif bases.get(nearest) == base:
                relation = "sibling"
            elif root[nearest] == root[model]:
                relation = "same lineage"
            else:
                relation = "other lineage"
            if self.K > DENSE_MAX_K:
                in_lineage, kl_base = float(to_lineage[n]), float(to_base[n])
            else:
                same = (roots == root[model]) & (np.arange(self.K) != i)
                in_lineage, kl_base = float(KL[i, same].min()), float(KL[i, self._index[base]])
            consistent = relation != "other lineage" or in_lineage <= (1.0 + tie) * float(vals[i, 0])
            rows.append((model, base, nearest, kl_base, float(vals[i, 0]), in_lineage, relation,
                         consistent))  # fmt: skip
        return pd.DataFrame(rows, columns=columns)

    def _lineage_distances(self, bases: dict[str, str], roots: np.ndarray):
        """What :meth:`lineage` reads from the K×K matrix on a small map, without it: ``(index, kl)`` of each
        model's nearest (K×1), and for each model of ``bases`` (in its order) the KL to its base and to the
        nearest model of its own lineage, all in nats per text.

        Cost: the neighbour lists (shared with :meth:`neighbor_table`), one pair per base, and a search within
        the lineage only for models none of whose listed neighbours is in it (a listed one is then the
        lineage's nearest, the lists being sorted; as exact as the lists are, see :func:`lmmap.maths.knn.knn`)."""
        from lmmap.maths import knn

        X = self.features()
        A = knn.row_norms(X)
        idx, kl = self._knn_lists(LINEAGE_NEIGHBORS, reuse_any=True)
        rows = np.array([self._index[m] for m in bases], dtype=np.int64)
        base_rows = np.array([self._index[b] for b in bases.values()], dtype=np.int64)
        to_base = geometry.kl_from_squared_distances(
            knn.pair_squared_distances(X, rows, base_rows[:, None], A)[:, 0], self.n_texts)
        listed = roots[idx[rows]] == roots[rows][:, None]
        to_lineage = np.where(listed.any(axis=1), kl[rows, listed.argmax(axis=1)], np.nan)
        missing = np.flatnonzero(~listed.any(axis=1))
        by_root: dict = {}
        for n in missing:
            by_root.setdefault(roots[rows[n]], []).append(n)
        for r, ns in by_root.items():
            g = _nearest_within(X, A, rows[ns], np.flatnonzero(roots == r))
            to_lineage[ns] = geometry.kl_from_squared_distances(g, self.n_texts)
        return idx[:, :1], kl[:, :1], to_base, to_lineage

    def _kin_links(self) -> list[tuple[str, str]]:
        """Pairs of models of one model's making besides base_model: a layer of the logit lens and its model
        (metadata ``layers_of``), checkpoints of one training run (``trajectory``) and the model it names."""
        if self.metadata is None:
            return []
        md = self.metadata.reindex(self.names)
        out = []
        for column in ("layers_of", "trajectory"):
            if column not in md.columns:
                continue
            first: dict[str, str] = {}
            for model, value in zip(self.names, md[column]):
                if not isinstance(value, str) or not value.strip():
                    continue
                value = value.strip()
                if value in self._index and value != model:
                    out.append((model, value))
                out.append((model, first.setdefault(value, model)))
        return out

    def resolve_edges(self, edges: str = "auto") -> str:
        """``auto`` → ``lineage`` (declared bases and the lineage test's inferred parents) when the metadata
        declares a base for some model of the map, else ``nn``; ``base_model`` on a map too small for the test."""
        if edges not in EDGE_MODES:
            raise InputError(f"edges must be one of {', '.join(EDGE_MODES)}, got {edges!r}", params=("edges",))
        if edges == "auto":
            if not self.base_models():
                return "nn"
            return "lineage" if self.K >= LINEAGE_TEST_MIN_MODELS else "base_model"
        if edges == "lineage" and self.K < LINEAGE_TEST_MIN_MODELS:
            raise InputError(f"edges='lineage' needs the lineage test, which needs a map of at least "
                             f"{LINEAGE_TEST_MIN_MODELS} models (got {self.K}): use {{edges='base_model'}} or "
                             "{edges='nn'}", params=("edges",))
        if edges == "base_model" and not self.base_models():
            have = self.metadata is not None and LINEAGE_COLUMN in self.metadata.columns
            raise InputError(
                ("no model's base_model names another model of the map" if have else "there is no metadata column base_model")
                + ": give one with {metadata=MODELS.csv} (columns model, base_model), or use {edges='nn'}", params=("metadata", "edges")
            )
        return edges

    def groups(self, column: str | None) -> list[str] | None:
        """The metadata column ``column`` for each model (``None`` if there is no such column)."""
        if column is None or self.metadata is None or column not in self.metadata.columns:
            return None
        col = self.metadata[column].reindex(self.names)
        return ["unknown" if pd.isna(v) else str(v) for v in col]

    # -- what a reader needs -----------------------------------------------------
    def describe(self, **extra) -> dict:
        """What a reader needs to reproduce or extend this map (the threshold above all)."""
        return {
            "lmmap_version": __version__,
            "models": self.names,
            "n_models": self.K,
            "n_texts": int(self.n_texts),
            "n_map_texts": int(self.L.shape[1]),
            "text_set_id": self.text_set_id,
            "clip_threshold": self.threshold,
            "clip_percentile": self.clip_percentile if self.threshold is not None else None,
            "weighted": self.w is not None,
            "mean_text_bytes": self.mean_text_bytes,
            **extra,
        }


def _store_text_bytes(store, text_pos) -> np.ndarray | None:
    """UTF-8 bytes of the store's texts (at ``text_pos``); None if one is empty (no bits per byte then)."""
    b = store.texts.text_bytes
    b = b if text_pos is None else b[np.asarray(text_pos, dtype=np.int64)]
    return b if (b > 0).all() else None


def _nearest_within(X, A, rows, members, block_bytes: int = 64 << 20) -> np.ndarray:
    """``min_j g_ij`` over ``members`` other than ``i`` itself, for each ``i`` in ``rows`` (float64, in blocks of
    rows × members: a lineage of the whole map costs one exact search, never a K×K matrix)."""
    b = int(max(1, min(1024, block_bytes // (8 * X.shape[1]))))
    out = np.full(len(rows), np.inf)
    for s in range(0, len(rows), b):
        ri = rows[s:s + b]
        Xi = np.asarray(X[ri], dtype=np.float64)
        for t in range(0, len(members), b):
            mj = members[t:t + b]
            g = geometry.distances_from_gram(A[ri], A[mj], Xi @ np.asarray(X[mj], dtype=np.float64).T)
            g[ri[:, None] == mj[None, :]] = np.inf
            np.minimum(out[s:s + b], g.min(axis=1), out=out[s:s + b])
    return np.maximum(out, 0.0)


def _lineage_roots(names: list[str], bases: dict[str, str], links=()) -> dict[str, str]:
    """Each model's lineage: the connected component of the base_model links and ``links`` (cycles allowed)."""
    parent = {n: n for n in names}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for model, base in [*bases.items(), *links]:
        a, b = find(model), find(base)
        if a != b:
            parent[a] = b
    return {n: find(n) for n in names}

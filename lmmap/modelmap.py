"""The model map: coordinates ``Q``, KL estimates, neighbours and 2-D embeddings.

``ModelMap`` wraps the numeric core (:mod:`lmmap.core`) for named models.
Build it from arrays (``ModelMap(names, L)``) or from a store
(``ModelMap.from_store(store)``, optionally on a resampled subset of texts).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__, core
from .exceptions import LmmapError

MIN_MODELS = 3


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
    """

    names: list[str]
    L: np.ndarray
    threshold: float | str | None = "auto"
    w: np.ndarray | None = None
    n_texts: int | None = None
    counts: np.ndarray | None = None
    metadata: pd.DataFrame | None = None
    clip_percentile: float = core.DEFAULT_CLIP_PERCENTILE
    text_set_id: str | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.names = [str(n) for n in self.names]
        self.L = np.asarray(self.L, dtype=np.float64)
        if self.L.ndim != 2 or self.L.shape[0] != len(self.names):
            raise LmmapError(f"L must be K×d with one row per name; got {self.L.shape} for {len(self.names)} names")
        dup = pd.Index(self.names)[pd.Index(self.names).duplicated()]
        if len(dup):
            raise LmmapError(f"duplicate model name {dup[0]!r}: each model must appear once in a map")
        if len(self.names) < MIN_MODELS:
            raise LmmapError(
                f"a map needs at least {MIN_MODELS} models (double centering over models is meaningless "
                f"for fewer); got {len(self.names)}"
            )
        core.check_finite(self.L, self.names)
        if self.n_texts is None:
            self.n_texts = self.L.shape[1]
        if isinstance(self.threshold, str):
            if self.threshold != "auto":
                raise LmmapError(f"threshold must be 'auto', a number or None, got {self.threshold!r}")
            self.threshold = core.clip_threshold(self.L, self.clip_percentile)
        self.Q = core.double_center(core.clip(self.L, self.threshold), self.w)
        self._index = {n: i for i, n in enumerate(self.names)}

    # -- construction from a store --------------------------------------------
    @classmethod
    def from_store(cls, store, models=None, subset=None, clip: bool = True, threshold=None, allow_mixed: bool = False) -> "ModelMap":
        """The map of ``models`` (default: every model in ``store``).

        ``subset`` (a :class:`lmmap.subset.Subset`): build from its d texts
        with its weights and its stored clipping threshold (SPEC §4).
        ``threshold``: reuse a stored threshold instead of computing one.
        """
        if subset is not None:
            subset.check_store(store)
            names, L = store.matrix(models, text_pos=subset.text_pos, allow_mixed=allow_mixed)
            thr = subset.threshold if clip else None
            if threshold is not None and clip:
                thr = threshold
            return cls(
                names, L, threshold=thr, w=subset.weights, n_texts=store.n_texts, counts=subset.counts,
                metadata=store.metadata(), text_set_id=store.text_set_id,
            )
        names, L = store.matrix(models, allow_mixed=allow_mixed)
        thr = (threshold if threshold is not None else "auto") if clip else None
        return cls(names, L, threshold=thr, metadata=store.metadata(), text_set_id=store.text_set_id)

    # -- basic quantities -------------------------------------------------------
    @property
    def K(self) -> int:
        return len(self.names)

    def index_of(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise LmmapError(f"model {name!r} is not in this map ({self.K} models)") from None

    def features(self) -> np.ndarray:
        """``Q W^{1/2}`` (K×d): plain Euclidean geometry equals the map's weighted one."""
        return core.weighted_features(self.Q, self.w)

    def squared_distances(self) -> np.ndarray:
        """``G`` with ``g_ij = ‖q_i − q_j‖²_w`` (K×K)."""
        if "G" not in self._cache:
            self._cache["G"] = core.squared_distances(self.Q, self.w)
        return self._cache["G"]

    def kl(self) -> np.ndarray:
        """Estimated ``KL(p_i, p_j) ≈ g_ij / (2N)`` (K×K, symmetric, zero diagonal)."""
        return core.kl_from_squared_distances(self.squared_distances(), self.n_texts)

    def kl_se(self, R: int = 100, seed: int = 0) -> np.ndarray:
        """Bootstrap standard error of each KL estimate (K×K); see :mod:`lmmap.bootstrap`."""
        key = ("kl_se", R, seed)
        if key not in self._cache:
            from .bootstrap import bootstrap_sq_distance_se

            se = bootstrap_sq_distance_se(self.Q, self.w, self.counts, R=R, seed=seed)
            self._cache[key] = core.kl_from_squared_distances(se, self.n_texts)
        return self._cache[key]

    def kl_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.kl(), index=pd.Index(self.names, name="model"), columns=self.names)

    # -- neighbours ---------------------------------------------------------------
    def neighbors(self, model: str, k: int = 10, se: bool = False, R: int = 100) -> pd.DataFrame:
        """The ``k`` models with the smallest estimated KL to ``model``."""
        self.index_of(model)  # a clear error for an unknown name
        table = self.neighbor_table(k, se=se, R=R)
        return table[table["model"] == model].reset_index(drop=True)

    def neighbor_table(self, k: int = 10, se: bool = False, R: int = 100) -> pd.DataFrame:
        """For every model, its ``k`` nearest models: columns model, rank, neighbor, kl (and kl_se)."""
        if k < 1:
            raise LmmapError(f"k must be at least 1, got {k}")
        KL = self.kl()
        idx, vals = core.nearest_neighbors(KL, k)
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
            table["kl_se"] = self.kl_se(R=R)[np.repeat(np.arange(self.K), kk), idx.ravel()]
        return table

    # -- embeddings ---------------------------------------------------------------
    def embed(self, method: str = "tsne", random_state: int = 42, **kwargs) -> np.ndarray:
        """2-D coordinates (K×2) of the models: t-SNE (PCA initialisation) of ``Q W^{1/2}``, or PCA."""
        key = ("embed", method, random_state, tuple(sorted(kwargs.items())))
        if key not in self._cache:
            from .embedding import embed

            self._cache[key] = embed(self.features(), method=method, random_state=random_state, **kwargs)
        return self._cache[key]

    def groups(self, column: str | None) -> list[str] | None:
        """The metadata column ``column`` for each model (``None`` if there is no such column)."""
        if column is None or self.metadata is None or column not in self.metadata.columns:
            return None
        col = self.metadata[column].reindex(self.names)
        return ["unknown" if pd.isna(v) else str(v) for v in col]

    # -- outputs -----------------------------------------------------------------
    def write(
        self,
        outdir: str | os.PathLike,
        embedding: str = "tsne",
        color_by: str | None = "model_type",
        k: int = 10,
        se: bool = False,
        R: int = 100,
        random_state: int = 42,
    ) -> dict[str, Path]:
        """Write ``kl.csv``, ``coords.csv``, ``neighbors.csv``, ``map.png``, ``map.html`` and ``map.json``."""
        from . import plots

        out = Path(outdir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {name: out / name for name in ("kl.csv", "coords.csv", "neighbors.csv", "map.png", "map.html", "map.json")}
        if se:
            paths["kl_se.csv"] = out / "kl_se.csv"
            pd.DataFrame(self.kl_se(R=R), index=pd.Index(self.names, name="model"), columns=self.names).to_csv(paths["kl_se.csv"])
        self.kl_frame().to_csv(paths["kl.csv"])
        coords = self.embed(embedding, random_state=random_state)
        pd.DataFrame({"model": self.names, "x": coords[:, 0], "y": coords[:, 1]}).to_csv(paths["coords.csv"], index=False)
        table = self.neighbor_table(k, se=se, R=R)
        table.to_csv(paths["neighbors.csv"], index=False)
        groups = self.groups(color_by)
        if color_by and groups is None and color_by != "model_type":
            raise LmmapError(f"no metadata column {color_by!r} to colour by; give one with --metadata MODELS.csv")
        hover = _hover_neighbors(table, self.names, n=3)
        title = f"{self.K} models, {self.L.shape[1]} texts" + ("" if self.w is None else f" (resampled from N={self.n_texts})")
        # Names on the picture while they stay readable; the HTML has them on hover at any size.
        plots.map_png(paths["map.png"], coords, self.names, groups=groups, title=title, label=self.K <= 40)
        plots.map_html(paths["map.html"], coords, self.names, groups=groups, hover=hover, title=title)
        paths["map.json"].write_text(json.dumps(self.describe(embedding=embedding, color_by=color_by), indent=2))
        return paths

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
            **extra,
        }


def _hover_neighbors(table: pd.DataFrame, names: list[str], n: int = 3) -> list[str]:
    top = table[table["rank"] <= n]
    text = top.groupby("model", sort=False).apply(
        lambda g: "nearest: " + ", ".join(f"{nb} (KL {kl:.3g})" for nb, kl in zip(g["neighbor"], g["kl"])),
        include_groups=False,
    )
    return [text.get(m, "") for m in names]

"""2-D maps of model coordinates (SPEC §3.4, resampling paper Appendix B.2).

The input is a K×D feature matrix ``X`` whose Euclidean distances carry the
model distances: rows ``q_i`` of ``Q`` on the full text set, or rows of
``Q̃_d W^{1/2}`` on a resampled subset (then ``‖x_i − x_j‖² = g̃_ij``).

* ``auto`` (default): ``mds`` for fewer than :data:`AUTO_TSNE_MIN_MODELS`
  (40) models, ``tsne`` from there on (:func:`resolve_method`). With a few
  dozen models t-SNE has too few neighbours per point for its perplexity to
  mean anything, and it is free to tear a small lineage apart; classical MDS
  keeps the KL ordering of the whole map (see README, "Which embedding").
* ``mds``: classical (Torgerson) MDS of the KL matrix taken as squared
  distances, ``KL_ij = ‖x_i − x_j‖² / (2N)``: the top two eigenvectors of
  ``B = −½ J·KL·J``, scaled by ``√λ``. Squared map distances approximate KL
  from below (they are KL projected onto the plane). It equals the PCA of
  ``X`` up to the factor ``1/√(2N)`` and a sign per axis, which is why new
  models can be placed exactly (Gower's out-of-sample formula).
* ``tsne``: t-SNE (van der Maaten & Hinton, 2008) through openTSNE,
  initialised with the first two principal components of ``X`` and a fixed
  ``random_state`` (42 in the paper), so a map is reproducible.
* ``pca``: the first two principal components (scikit-learn).
* ``umap``: UMAP, when the optional ``umap-learn`` package is installed.

:func:`fit_embedding` keeps what is needed to place new models into the map
without moving the existing ones (:meth:`Embedding.transform`); :func:`embed`
returns the coordinates only.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmmap.maths.geometry import check_matrix, cross_squared_distances, kl_from_squared_distances
from lmmap.maths.randomness import seed_of
from lmmap.exceptions import InputError, LmmapWarning

METHODS = ("auto", "mds", "tsne", "pca", "umap")
# Below this many models ``auto`` is classical MDS, from here on t-SNE.
AUTO_TSNE_MIN_MODELS = 40
# What the title and the axes of a map call each method.
METHOD_LABELS = {"mds": "classical MDS of KL", "tsne": "t-SNE", "pca": "PCA", "umap": "UMAP"}
AXIS_LABELS = {"mds": "MDS", "tsne": "t-SNE", "pca": "PC", "umap": "UMAP"}
DEFAULT_RANDOM_STATE = 42
DEFAULT_PERPLEXITY = 30.0
MIN_MODELS_TSNE = 3


@dataclass(frozen=True)
class Embedding:
    """A fitted 2-D map: ``coords`` (K×2) of the models that define it.

    ``transform(X_new)`` places new models (rows of the same feature space)
    into this map; the existing coordinates never move.
    """

    coords: np.ndarray
    method: str
    perplexity: float | None = None
    model: Any = field(default=None, repr=False, compare=False)

    def _n_features(self) -> int:
        if self.method == "tsne":
            return self.model.affinities.knn_index.data.shape[1]
        if self.method == "mds":
            return self.model.X.shape[1]
        return self.model.n_features_in_

    def transform(self, X_new, **kwargs) -> np.ndarray:
        """2-D positions (m×2) of new rows ``X_new`` (m×D) in this map.

        t-SNE: each new point is optimised against the fixed reference
        embedding (openTSNE ``TSNEEmbedding.transform``; its keyword arguments,
        e.g. ``perplexity`` (default 5), pass through). PCA/UMAP: the fitted
        model's ``transform``. MDS: Gower's out-of-sample projection of the
        new rows' squared distances to the map's rows (:meth:`place_by_kl`).
        """
        X_new = _as_features(X_new, "X_new")
        d = self._n_features()
        if X_new.shape[1] != d:
            raise InputError(
                f"X_new has {X_new.shape[1]} features but the map was built on {d}: "
                "compute the new models' features on the same texts (and weights) as the map's", params=("X_new",)
            )
        if self.method == "mds":
            return self.model.transform(X_new)
        return np.array(self.model.transform(X_new, **kwargs), dtype=np.float64)

    def place_by_kl(self, kl_new) -> np.ndarray:
        """MDS maps only: 2-D positions (m×2) of new models from their KL (m×K) to the map's K models.

        Gower's (1968) formula ``y = ½ Λ^{-1/2} Vᵀ (diag B − d²)`` with ``d² =
        KL``: exact for a new model whose KL estimates are those of the full
        map, and it needs no features, so a model scored on a resampled subset
        of texts lands where the full map would put it (up to the KL
        estimates' error) while the existing models keep their positions.
        """
        if self.method != "mds":
            raise InputError(f"models are placed from their KL only in an MDS map, this one is {self.method}")
        return self.model.place(np.atleast_2d(np.asarray(kl_new, dtype=np.float64)))

    @classmethod
    def from_coords(
        cls,
        X,
        coords,
        *,
        perplexity: float = DEFAULT_PERPLEXITY,
        random_state: int | None = DEFAULT_RANDOM_STATE,
        n_jobs: int = 1,
    ) -> "Embedding":
        """A t-SNE map with given ``coords`` (K×2) whose new points are placed using ``X``.

        Use it to add models to a map that was computed earlier (e.g. on the
        full ``Q``) while the features available now are different (e.g.
        ``Q̃_d W^{1/2}`` on a subset): affinities come from ``X``, positions
        from ``coords``, and nothing is re-optimised.
        """
        import openTSNE

        X = _as_features(X)
        coords = np.asarray(coords, dtype=np.float64)
        if coords.shape != (X.shape[0], 2):
            raise InputError(
                f"coords must be K×2 with one row per row of X ({X.shape[0]}), got shape {coords.shape}", params=("X", "coords")
            )
        _check_min_models(X, MIN_MODELS_TSNE, "tsne")
        perplexity = effective_perplexity(perplexity, X.shape[0])
        affinities = openTSNE.affinity.PerplexityBasedNN(
            X, perplexity=perplexity, method="exact", random_state=random_state, n_jobs=n_jobs
        )
        model = openTSNE.TSNEEmbedding(coords.copy(), affinities, random_state=random_state, n_jobs=n_jobs)
        return cls(coords=coords.copy(), method="tsne", perplexity=perplexity, model=model)


def embed(
    X,
    method: str = "tsne",
    random_state: int | None = DEFAULT_RANDOM_STATE,
    perplexity: float = DEFAULT_PERPLEXITY,
    **kwargs,
) -> np.ndarray:
    """2-D coordinates (K×2) of the rows of ``X`` (K×D); see :func:`fit_embedding`."""
    return fit_embedding(X, method=method, random_state=random_state, perplexity=perplexity, **kwargs).coords


def fit_embedding(
    X,
    method: str = "tsne",
    random_state: int | None = DEFAULT_RANDOM_STATE,
    perplexity: float = DEFAULT_PERPLEXITY,
    **kwargs,
) -> Embedding:
    """Fit a 2-D map of the rows of ``X`` (K×D) and keep what places new rows later.

    Parameters
    ----------
    X : array (K, D)
        Model features: rows of ``Q`` or of ``Q̃_d W^{1/2}``.
    method : {"auto", "mds", "tsne", "pca", "umap"}
        ``auto``: ``mds`` below 40 models, ``tsne`` from 40 on (:func:`resolve_method`).
    random_state : int or None
        Fixed for reproducible maps (the paper: 42).
    perplexity : float
        t-SNE only; lowered to ``(K − 1)/3`` with a warning when K is small.
    **kwargs
        Passed to ``openTSNE.TSNE``, ``sklearn.decomposition.PCA`` or
        ``umap.UMAP`` (e.g. ``n_jobs``, ``n_iter``). MDS takes ``n_texts``
        (N: distances² are then ``‖x_i − x_j‖²/(2N)`` = KL; default 1).
    """
    method = resolve_method(method, np.shape(X)[0] if np.ndim(X) == 2 else 0)
    X = _as_features(X)
    random_state = seed_of(random_state)
    if method == "mds":
        return _fit_mds(X, **kwargs)
    if method == "tsne":
        _check_min_models(X, MIN_MODELS_TSNE, "tsne")
        return _fit_tsne(X, random_state, effective_perplexity(perplexity, X.shape[0]), **kwargs)
    if method == "pca":
        return _fit_pca(X, random_state, **kwargs)
    return _fit_umap(X, random_state, **kwargs)


def resolve_method(method: str, n_models: int) -> str:
    """The embedding ``method`` stands for with ``n_models`` models: ``auto`` → ``mds`` (K < 40) or ``tsne``."""
    if method not in METHODS:
        raise InputError(f"unknown embedding method {method!r}: use one of {', '.join(METHODS)}", params=("method",))
    if method == "auto":
        return "mds" if n_models < AUTO_TSNE_MIN_MODELS else "tsne"
    return method


def effective_perplexity(perplexity: float, n_models: int) -> float:
    """The t-SNE perplexity actually used: ``min(perplexity, (K − 1)/3)``.

    A perplexity needs about 3·perplexity neighbours, and a model has only
    K − 1; a warning says when the requested value is lowered.
    """
    if not isinstance(perplexity, numbers.Real) or not np.isfinite(perplexity) or perplexity <= 0:
        raise InputError(f"perplexity must be a positive number (typically 5 to 50), got {perplexity!r}", params=("perplexity",))
    upper = (n_models - 1) / 3
    if perplexity > upper:
        warnings.warn(
            f"perplexity {perplexity:g} is too large for {n_models} models; using {upper:.3g} = (K - 1)/3",
            LmmapWarning,
            stacklevel=3,
        )
        return float(upper)
    return float(perplexity)


def _fit_tsne(X: np.ndarray, random_state, perplexity: float, neighbors=None, initialization=None,
              **kwargs) -> Embedding:
    import openTSNE

    if neighbors is not None:
        return _fit_tsne_large(X, random_state, perplexity, neighbors, initialization, **kwargs)

    params = dict(
        initialization="pca",
        random_state=random_state,
        # One thread keeps Barnes–Hut gradient sums in a fixed order, so the
        # same random_state gives the same map bit for bit.
        n_jobs=1,
        # Exact (brute-force) neighbours on X itself: for K ≈ 1,000 models and
        # D = 10,000 texts this is one K×K Gram product (< 1 s), faster than
        # building openTSNE's default Annoy index on such wide rows and free of
        # its approximation, so no PCA pre-reduction of X is needed.
        neighbors="exact",
    )
    params.update(kwargs)
    params["perplexity"] = perplexity
    model = openTSNE.TSNE(**params).fit(X)
    return Embedding(coords=np.array(model, dtype=np.float64), method="tsne", perplexity=perplexity, model=model)


def _fit_tsne_large(X, random_state, perplexity, neighbors, initialization, **kwargs) -> Embedding:
    """t-SNE of a large map from neighbours found without a K×K matrix (:mod:`lmmap.maths.knn`).

    ``neighbors``: ``(index, squared distance)``, both K×k (k ≈ 3·perplexity), the affinities' only input —
    openTSNE's own neighbour search would build an index of the K×N rows. Gradients by FFT-accelerated
    interpolation (Linderman et al. 2019; O(K) per iteration, against Barnes–Hut's O(K log K)) on every core,
    initialised by the first two principal components (``initialization``, or those of a randomised SVD of
    ``X``). On as many threads as there are cores the gradient sums are not added in a fixed order: the same
    ``random_state`` gives the same map up to rounding, not bit for bit (small maps use one thread and are).
    """
    import os

    import openTSNE

    idx, sq = (np.asarray(a) for a in neighbors)
    if idx.ndim != 2 or idx.shape[0] != X.shape[0] or sq.shape != idx.shape:
        raise InputError(f"neighbors must be two K×k arrays (index, squared distance) for the K = {X.shape[0]} rows "
                         f"of X, got shapes {idx.shape} and {sq.shape}", params=("neighbors",))
    n_jobs = kwargs.pop("n_jobs", os.cpu_count() or 1)
    knn_index = openTSNE.nearest_neighbors.PrecomputedNeighbors(idx.astype(np.int64), np.sqrt(np.maximum(sq, 0.0)))
    affinities = openTSNE.affinity.PerplexityBasedNN(perplexity=perplexity, knn_index=knn_index, n_jobs=n_jobs,
                                                     random_state=random_state)
    if initialization is None:
        from lmmap.maths.knn import randomized_projection

        initialization = randomized_projection(X, 2, n_iter=2, random_state=random_state).Z
    init = openTSNE.initialization.rescale(np.asarray(initialization, dtype=np.float64)[:, :2])
    params = dict(negative_gradient_method="fft", n_jobs=n_jobs, random_state=random_state)
    params.update(kwargs)
    model = openTSNE.TSNE(**params).fit(affinities=affinities, initialization=init)
    return Embedding(coords=np.array(model, dtype=np.float64), method="tsne", perplexity=perplexity, model=None)


class _ClassicalMDS:
    """Classical MDS of ``‖x_i − x_j‖² · scale`` and Gower's out-of-sample placement."""

    def __init__(self, X: np.ndarray, scale: float):
        self.X = X
        self.scale = scale
        # Double centring of squared distances is the Gram matrix of the model-centred rows.
        Xc = X - X.mean(axis=0, keepdims=True)
        B = (Xc @ Xc.T) * scale
        lam, V = np.linalg.eigh((B + B.T) / 2)
        order = np.argsort(lam)[::-1][:2]
        lam, V = np.clip(lam[order], 0.0, None), V[:, order]
        # Eigenvectors have no sign of their own; fix one so the same input gives the same picture.
        flip = np.sign(V[np.argmax(np.abs(V), axis=0), np.arange(V.shape[1])])
        V = V * np.where(flip == 0, 1.0, flip)
        self.lam, self.V = lam, V
        self.b = np.diag(B).copy()
        self.coords = V * np.sqrt(lam)
        self.explained = float(lam.sum() / max(np.trace(B), np.finfo(float).tiny))

    def place(self, d2: np.ndarray) -> np.ndarray:
        if d2.ndim != 2 or d2.shape[1] != self.V.shape[0]:
            raise InputError(
                f"KL to place new models must be m×K with K = {self.V.shape[0]} (one column per model of the map), "
                f"got shape {d2.shape}", params=("d2",)
            )
        inv = np.divide(1.0, np.sqrt(self.lam), out=np.zeros_like(self.lam), where=self.lam > 0)
        return 0.5 * ((self.b[None, :] - d2) @ self.V) * inv[None, :]

    def transform(self, X_new: np.ndarray) -> np.ndarray:
        d2 = cross_squared_distances(X_new, self.X) * self.scale
        return self.place(d2)


def _fit_mds(X: np.ndarray, n_texts: int | None = None) -> Embedding:
    _check_min_models(X, 2, "mds")
    if n_texts is not None and (not isinstance(n_texts, numbers.Integral) or n_texts <= 0):
        raise InputError(f"n_texts (N) must be a positive integer, got {n_texts!r}", params=("n_texts",))
    model = _ClassicalMDS(X, float(kl_from_squared_distances(1.0, n_texts)) if n_texts else 1.0)
    return Embedding(coords=model.coords.copy(), method="mds", model=model)


def _fit_pca(X: np.ndarray, random_state, **kwargs) -> Embedding:
    from sklearn.decomposition import PCA

    _check_min_models(X, 2, "pca")
    if X.shape[1] < 2:
        raise InputError(f"a PCA map needs at least 2 features (texts), got {X.shape[1]}", params=("X",))
    params = dict(n_components=2, random_state=random_state)
    params.update(kwargs)
    model = PCA(**params)
    coords = model.fit_transform(X)
    return Embedding(coords=np.asarray(coords, dtype=np.float64), method="pca", model=model)


def _fit_umap(X: np.ndarray, random_state, **kwargs) -> Embedding:
    try:
        import umap
    except ImportError as exc:
        raise InputError(
            "the UMAP map needs the optional package umap-learn: `pip install umap-learn`, "
            "or use {embedding='tsne'}", params=("embedding",)
        ) from exc
    _check_min_models(X, MIN_MODELS_TSNE, "umap")
    # UMAP's default of 15 neighbours cannot exceed the other models there are.
    params = dict(n_components=2, random_state=random_state, n_neighbors=min(15, X.shape[0] - 1))
    params.update(kwargs)
    model = umap.UMAP(**params)
    coords = model.fit_transform(X)
    return Embedding(coords=np.asarray(coords, dtype=np.float64), method="umap", model=model)


def _as_features(X, name: str = "X") -> np.ndarray:
    """``X`` checked (2-D, finite); a float32 ``X`` stays float32 — the features of a map of 10⁵ models are
    4 GB, and a float64 copy would double them (t-SNE and PCA work in float32 as well)."""
    if getattr(X, "dtype", None) == np.float32 and np.ndim(X) == 2 and 0 not in np.shape(X):
        X = np.ascontiguousarray(X)
        if not np.isfinite(X.sum(dtype=np.float64)):  # one pass, no K×N mask; NaN and ±inf survive it
            i = int(np.flatnonzero(~np.isfinite(X).all(axis=1))[0])
            raise InputError(f"{name} has a non-finite value in row {i}: re-score that model or drop it", params=(name,))
        return X
    return np.ascontiguousarray(check_matrix(X, name, columns="features", finite=True))


def _check_min_models(X: np.ndarray, minimum: int, method: str) -> None:
    if X.shape[0] < minimum:
        raise InputError(f"a {method} map needs at least {minimum} models, got {X.shape[0]}: add models", params=("X", "method"))


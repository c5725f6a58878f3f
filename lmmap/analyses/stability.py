"""Stability of the 2-D map under text resampling (SPEC §6; resampling paper §5.1, Appendix B.2).

R times: resample n texts (method M) from ``D_N``; build the map's features
``Q̃_d W^{1/2}`` from those texts alone (clip with the stored threshold,
w-weighted row centring, column centring; SPEC §4); embed them (t-SNE with
PCA initialisation and a fixed ``random_state``). Each 2-D configuration
``X_r`` is centred, ``Y_r = X_r − X̄_r``, and rotated/reflected onto the
centred reference ``Y_ref`` (t-SNE of the full ``Q``) by orthogonal
Procrustes, ``Z_r = Y_r U_r``. Per model i, over the R aligned positions
``z_i^(r)``:

* mean ``z̄_i`` and covariance ``Cov(z_i)`` (1/R normalisation, so its trace is
  the Variance below); the standard deviational ellipse has semi-axes
  ``√λ₁ ≥ √λ₂`` along the eigenvectors of ``Cov(z_i)`` (Yuill, 1971);
* ``MSE_i = ‖z̄_i − y_i^ref‖² (Bias²) + (1/R) Σ_r ‖z_i^(r) − z̄_i‖² (Variance)``.

Table 3 reports the medians over models. The numeric pieces (alignment,
moments, ellipses) are pure functions of arrays; :func:`map_stability` runs
the R embeddings (in parallel processes, with a progress bar).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
from scipy.linalg import orthogonal_procrustes

from lmmap.maths import geometry
from lmmap.analyses.errors import check_trials, check_workers, parallel_map
from lmmap.exceptions import LmmapError
from lmmap.maths.resampling import check_method, check_sample_size, importance, resample

DEFAULT_METHOD = "ls"
DEFAULT_N = 2900


# ----------------------------------------------------------------------------- alignment


def _as_configuration(Y, name: str = "Y") -> np.ndarray:
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim != 2 or Y.shape[1] != 2 or Y.shape[0] < 2:
        raise LmmapError(f"{name} must be a K×2 map configuration with K ≥ 2, got shape {Y.shape}")
    if not np.all(np.isfinite(Y)):
        raise LmmapError(f"{name} holds NaN or inf positions")
    return Y


def centre(Y) -> np.ndarray:
    """``Y − Ȳ``: the configuration moved so its centroid is the origin."""
    Y = np.asarray(Y, dtype=np.float64)
    return Y - Y.mean(axis=0, keepdims=True)


def procrustes_rotation(Y, Y_ref) -> np.ndarray:
    """The orthogonal ``U`` (2×2, rotation or reflection) minimising ``‖(Y − Ȳ)U − (Y_ref − Ȳ_ref)‖_F``."""
    Y = _as_configuration(Y)
    Y_ref = _as_configuration(Y_ref, "Y_ref")
    if Y.shape != Y_ref.shape:
        raise LmmapError(f"configurations differ in shape: {Y.shape} and reference {Y_ref.shape}")
    U, _ = orthogonal_procrustes(centre(Y), centre(Y_ref))
    return U


def align(Y, Y_ref) -> np.ndarray:
    """``Z = (Y − Ȳ) U``: ``Y`` centred and rotated/reflected onto the centred ``Y_ref`` (no scaling)."""
    return centre(Y) @ procrustes_rotation(Y, Y_ref)


def align_all(Ys, Y_ref) -> np.ndarray:
    """Align each of R configurations (R×K×2) to ``Y_ref``; returns the aligned R×K×2."""
    Ys = np.asarray(Ys, dtype=np.float64)
    if Ys.ndim != 3 or Ys.shape[2] != 2:
        raise LmmapError(f"configurations must be an R×K×2 array, got shape {Ys.shape}")
    return np.stack([align(Y, Y_ref) for Y in Ys])


# ----------------------------------------------------------------------------- per-model moments


def position_moments(Zs) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``z̄_i`` (K×2) and covariance ``Cov(z_i) = (1/R) Σ_r (z_i^(r) − z̄_i)(z_i^(r) − z̄_i)ᵀ`` (K×2×2)."""
    Zs = np.asarray(Zs, dtype=np.float64)
    if Zs.ndim != 3 or Zs.shape[2] != 2 or Zs.shape[0] < 1:
        raise LmmapError(f"aligned positions must be an R×K×2 array, got shape {Zs.shape}")
    mean = Zs.mean(axis=0)
    dev = Zs - mean
    cov = np.einsum("rki,rkj->kij", dev, dev) / Zs.shape[0]
    return mean, cov


def ellipse_axes(cov) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standard deviational ellipse of each ``Cov(z_i)``: semi-axes ``√λ₁ ≥ √λ₂`` and the major axis' angle (degrees, [0, 180))."""
    cov = np.asarray(cov, dtype=np.float64)
    if cov.ndim < 2 or cov.shape[-2:] != (2, 2):
        raise LmmapError(f"a covariance must be 2×2 (or K×2×2), got shape {cov.shape}")
    if not np.all(np.isfinite(cov)):
        raise LmmapError("a covariance holds NaN or inf: compute it from at least two finite positions")
    # eigh wants symmetric input; averaging removes round-off asymmetry.
    lam, vec = np.linalg.eigh((cov + np.swapaxes(cov, -1, -2)) / 2)
    # Round-off can leave a tiny negative eigenvalue for a degenerate Σ.
    semi = np.sqrt(np.clip(lam, 0.0, None))
    major = vec[..., :, 1]  # eigh sorts ascending
    angle = np.degrees(np.arctan2(major[..., 1], major[..., 0])) % 180.0
    return semi[..., 1], semi[..., 0], angle


def bias_variance(Zs, Y_ref) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per model: ``Bias² = ‖z̄_i − y_i^ref‖²``, ``Variance = (1/R)Σ_r‖z_i^(r) − z̄_i‖²`` and ``MSE = Bias² + Variance``.

    ``Y_ref`` is centred here (the aligned ``Z_r`` are centred by construction).
    """
    Zs = np.asarray(Zs, dtype=np.float64)
    Y_ref = centre(_as_configuration(Y_ref, "Y_ref"))
    if Zs.shape[1:] != Y_ref.shape:
        raise LmmapError(f"positions {Zs.shape[1:]} and reference {Y_ref.shape} differ in shape")
    mean, cov = position_moments(Zs)
    bias2 = np.sum((mean - Y_ref) ** 2, axis=1)
    variance = np.trace(cov, axis1=1, axis2=2)
    return bias2, variance, bias2 + variance


# ----------------------------------------------------------------------------- resampled maps


def resampled_features(L, u, w, threshold) -> np.ndarray:
    """``Q̃_d W^{1/2}`` from the d texts ``u`` alone: clip at ``threshold``, w-weighted double centring (SPEC §4)."""
    L_d = np.asarray(L)[:, np.asarray(u)]
    return geometry.weighted_features(geometry.double_center(geometry.clip(L_d, threshold), w), w)


def reference_map(Q, embedding: str = "tsne", random_state: int = 42, **embed_kwargs) -> np.ndarray:
    """The reference configuration: the embedding of the full ``Q`` (K×2); ``auto``: MDS below 40 models, t-SNE above."""
    from lmmap.maths.embedding import embed

    return embed(np.asarray(Q, dtype=np.float64), method=embedding, random_state=random_state, **embed_kwargs)


@dataclass
class StabilityResult:
    """R resampled maps aligned to the reference, and per-model statistics (see module docstring)."""

    method: str
    n: int
    reference: np.ndarray  # K×2, centred
    aligned: np.ndarray  # R×K×2
    d: np.ndarray  # (R,) unique texts per trial
    mean: np.ndarray  # K×2
    cov: np.ndarray  # K×2×2
    bias2: np.ndarray  # (K,)
    variance: np.ndarray  # (K,)
    mse: np.ndarray  # (K,)

    @classmethod
    def from_configurations(cls, method: str, n: int, Ys, reference, d) -> "StabilityResult":
        """Align raw configurations ``Ys`` (R×K×2) to ``reference`` and compute the statistics."""
        reference = centre(_as_configuration(reference, "reference"))
        Zs = align_all(Ys, reference)
        mean, cov = position_moments(Zs)
        bias2, variance, mse = bias_variance(Zs, reference)
        return cls(method, int(n), reference, Zs, np.asarray(d), mean, cov, bias2, variance, mse)

    @property
    def R(self) -> int:
        return self.aligned.shape[0]

    @property
    def label(self) -> str:
        return f"{self.method} n={self.n}"

    def medians(self) -> dict[str, float]:
        """Table 3's entries: median Bias², Variance and MSE over models."""
        return {
            "bias2": float(np.median(self.bias2)),
            "variance": float(np.median(self.variance)),
            "mse": float(np.median(self.mse)),
        }

    def per_model(self, names):
        """One row per model: reference and mean positions, covariance, ellipse, Bias², Variance, MSE."""
        import pandas as pd

        if len(names) != self.mean.shape[0]:
            raise LmmapError(f"{len(names)} names for {self.mean.shape[0]} models")
        major, minor, angle = ellipse_axes(self.cov)
        return pd.DataFrame({
            "model": list(names),
            "x_ref": self.reference[:, 0], "y_ref": self.reference[:, 1],
            "x_mean": self.mean[:, 0], "y_mean": self.mean[:, 1],
            "cov_xx": self.cov[:, 0, 0], "cov_xy": self.cov[:, 0, 1], "cov_yy": self.cov[:, 1, 1],
            "sd_major": major, "sd_minor": minor, "angle_deg": angle,
            "bias2": self.bias2, "variance": self.variance, "mse": self.mse,
        })  # fmt: skip


def table3(results: Mapping[str, StabilityResult] | list[StabilityResult]):
    """Table 3: one row per setting with the mean unique-text count d and the medians of Bias², Variance, MSE."""
    import pandas as pd

    items = results.items() if isinstance(results, Mapping) else [(r.label, r) for r in results]
    rows = []
    for label, r in items:
        rows.append({
            "setting": label, "method": r.method, "n": r.n, "R": r.R,
            "d_mean": float(np.mean(r.d)), "d_sd": float(np.std(r.d, ddof=1)) if r.R > 1 else 0.0,
            **r.medians(),
        })  # fmt: skip
    return pd.DataFrame(rows)


def _trial(ss, L, pi, n, threshold, embedding, random_state, embed_kwargs):
    """One resampled map: draw, build ``Q̃_d W^{1/2}``, embed. Returns (K×2 configuration, d)."""
    from lmmap.maths.embedding import embed

    u, _, w = resample(pi, n, np.random.default_rng(ss))
    X = resampled_features(L, u, w, threshold)
    return embed(X, method=embedding, random_state=random_state, **embed_kwargs), u.size


def _process_map(seeds, args, workers: int, progress, description: str) -> list:
    """The trials on ``workers`` processes (joblib/loky, one BLAS thread each).

    Processes, not threads: openTSNE's gradient loop holds the GIL for part
    of each iteration. joblib passes ``L`` to the workers as a shared memory
    map, not a copy per trial.
    """
    from joblib import Parallel, delayed

    from lmmap.analyses.errors import _progress

    with _progress(len(seeds), description, progress) as advance:
        runner = Parallel(n_jobs=workers, backend="loky", return_as="generator", inner_max_num_threads=1)
        out = []
        for result in runner(delayed(_trial)(ss, *args) for ss in seeds):
            out.append(result)
            advance()
    return out


def map_stability(
    L,
    method: str = DEFAULT_METHOD,
    n: int = DEFAULT_N,
    R: int = 100,
    threshold: float | None = None,
    Q=None,
    reference=None,
    embedding: str = "tsne",
    random_state: int = 42,
    seed: int = 0,
    workers: int = 1,
    progress=None,
    **embed_kwargs,
) -> StabilityResult:
    """R maps from n texts resampled by ``method``, aligned to the full-data reference (Appendix B.2).

    Parameters
    ----------
    L : K×N log-likelihoods of the map's models on ``D_N`` (unclipped).
    threshold : the map's clipping threshold (None: no clipping); used for the
        full ``Q`` and every resampled map alike.
    Q : the full map's coordinates, if already computed (``double_center(clip(L, threshold))``).
    reference : the full-data configuration (K×2), e.g. shared between settings;
        default: the embedding of ``Q``.
    embedding, random_state : the 2-D method (tsne | mds | pca | umap, or auto:
        mds below 40 models) and its fixed seed (42). MDS maps need no seed and
        are aligned by Procrustes like the others.
    seed : seed of the resampling; trial r uses its own stream, so results do
        not depend on ``workers``.
    workers : processes for the R embeddings (1: in this process).
    """
    L = np.asarray(L, dtype=np.float64)
    if L.ndim != 2 or L.shape[0] < 3:
        raise LmmapError(f"L must be K×N with at least 3 models, got shape {L.shape}")
    method = check_method(method)
    n = check_sample_size(n)
    R = check_trials(R)
    Q = geometry.double_center(geometry.clip(L, threshold)) if Q is None else np.asarray(Q, dtype=np.float64)
    if Q.shape != L.shape:
        raise LmmapError(f"Q {Q.shape} and L {L.shape} differ in shape")
    from lmmap.maths.embedding import DEFAULT_PERPLEXITY, effective_perplexity, resolve_method

    # Resolved once, so that every resampled map uses the method of the reference.
    embedding = resolve_method(embedding, L.shape[0])
    if embedding == "tsne":
        # Lowered once here (with one warning) rather than once per map.
        embed_kwargs["perplexity"] = effective_perplexity(embed_kwargs.get("perplexity", DEFAULT_PERPLEXITY), L.shape[0])
    if reference is None:
        reference = reference_map(Q, embedding, random_state, **embed_kwargs)
    reference = _as_configuration(reference, "reference")
    if reference.shape[0] != L.shape[0]:
        raise LmmapError(f"the reference places {reference.shape[0]} models, the map has {L.shape[0]}")
    pi = importance(Q, method)
    seeds = np.random.SeedSequence(seed).spawn(R)
    args = (L, pi, n, threshold, embedding, random_state, embed_kwargs)
    description = f"stability: {method} n={n}, R={R} maps"
    workers = check_workers(workers)
    if workers == 1:
        out = parallel_map(lambda ss: _trial(ss, *args), seeds, 1, progress, description)
    else:
        out = _process_map(seeds, args, workers, progress, description)
    Ys = np.stack([o[0] for o in out])
    d = np.array([o[1] for o in out])
    return StabilityResult.from_configurations(method, n, Ys, reference, d)

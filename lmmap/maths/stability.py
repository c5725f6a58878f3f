"""Stability of a 2-D map: Procrustes alignment, per-model moments, the standard deviational ellipse (SPEC §6).

numpy/scipy only. Each 2-D configuration ``X_r`` (K×2) is centred,
``Y_r = X_r − X̄_r``, and rotated/reflected onto the centred reference
``Y_ref`` by orthogonal Procrustes, ``Z_r = Y_r U_r`` (no scaling). Per
model i, over the R aligned positions ``z_i^(r)``:

* mean ``z̄_i`` and covariance ``Cov(z_i)`` (1/R normalisation, so its trace is
  the Variance below); the standard deviational ellipse has semi-axes
  ``√λ₁ ≥ √λ₂`` along the eigenvectors of ``Cov(z_i)`` (Yuill, 1971) —
  :func:`ellipse_axes`, the one ellipse of lmmap (the plots draw it);
* ``MSE_i = ‖z̄_i − y_i^ref‖² (Bias²) + (1/R) Σ_r ‖z_i^(r) − z̄_i‖² (Variance)``.

:func:`resampled_features` builds the features ``Q̃_d W^{1/2}`` of a map from
d resampled texts alone (SPEC §4). The R embeddings themselves are run by
:func:`lmmap.analyses.stability.map_stability`.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import orthogonal_procrustes

from lmmap.exceptions import InputError
from lmmap.maths import geometry


# ----------------------------------------------------------------------------- alignment


def as_configuration(Y, name: str = "Y") -> np.ndarray:
    """``Y`` as a finite K×2 float64 configuration with K ≥ 2 (``name``: the parameter, for messages)."""
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim != 2 or Y.shape[1] != 2 or Y.shape[0] < 2:
        raise InputError(f"{name} must be a K×2 map configuration with K ≥ 2, got shape {Y.shape}", params=(name,))
    if not np.all(np.isfinite(Y)):
        raise InputError(f"{name} holds NaN or inf positions", params=(name,))
    return Y


def centre(Y) -> np.ndarray:
    """``Y − Ȳ``: the configuration moved so its centroid is the origin."""
    Y = np.asarray(Y, dtype=np.float64)
    return Y - Y.mean(axis=0, keepdims=True)


def procrustes_rotation(Y, Y_ref) -> np.ndarray:
    """The orthogonal ``U`` (2×2, rotation or reflection) minimising ``‖(Y − Ȳ)U − (Y_ref − Ȳ_ref)‖_F``."""
    Y = as_configuration(Y)
    Y_ref = as_configuration(Y_ref, "Y_ref")
    if Y.shape != Y_ref.shape:
        raise InputError(f"configurations differ in shape: {Y.shape} and reference {Y_ref.shape}", params=("Y", "Y_ref"))
    U, _ = orthogonal_procrustes(centre(Y), centre(Y_ref))
    return U


def align(Y, Y_ref) -> np.ndarray:
    """``Z = (Y − Ȳ) U``: ``Y`` centred and rotated/reflected onto the centred ``Y_ref`` (no scaling)."""
    return centre(Y) @ procrustes_rotation(Y, Y_ref)


def align_all(Ys, Y_ref) -> np.ndarray:
    """Align each of R configurations (R×K×2) to ``Y_ref``; returns the aligned R×K×2."""
    Ys = np.asarray(Ys, dtype=np.float64)
    if Ys.ndim != 3 or Ys.shape[2] != 2:
        raise InputError(f"configurations must be an R×K×2 array, got shape {Ys.shape}", params=("Ys",))
    return np.stack([align(Y, Y_ref) for Y in Ys])


# ----------------------------------------------------------------------------- per-model moments


def position_moments(Zs) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``z̄_i`` (K×2) and covariance ``Cov(z_i) = (1/R) Σ_r (z_i^(r) − z̄_i)(z_i^(r) − z̄_i)ᵀ`` (K×2×2)."""
    Zs = np.asarray(Zs, dtype=np.float64)
    if Zs.ndim != 3 or Zs.shape[2] != 2 or Zs.shape[0] < 1:
        raise InputError(f"aligned positions must be an R×K×2 array, got shape {Zs.shape}", params=("Zs",))
    mean = Zs.mean(axis=0)
    dev = Zs - mean
    cov = np.einsum("rki,rkj->kij", dev, dev) / Zs.shape[0]
    return mean, cov


def ellipse_axes(cov) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standard deviational ellipse of each ``Cov(z_i)``: semi-axes ``√λ₁ ≥ √λ₂`` and the major axis' angle (degrees, [0, 180))."""
    cov = np.asarray(cov, dtype=np.float64)
    if cov.ndim < 2 or cov.shape[-2:] != (2, 2):
        raise InputError(f"a covariance must be 2×2 (or K×2×2), got shape {cov.shape}", params=("cov",))
    if not np.all(np.isfinite(cov)):
        raise InputError("a covariance holds NaN or inf: compute it from at least two finite positions", params=("cov",))
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
    Y_ref = centre(as_configuration(Y_ref, "Y_ref"))
    if Zs.shape[1:] != Y_ref.shape:
        raise InputError(f"positions {Zs.shape[1:]} and reference {Y_ref.shape} differ in shape", params=("Zs", "Y_ref"))
    mean, cov = position_moments(Zs)
    bias2 = np.sum((mean - Y_ref) ** 2, axis=1)
    variance = np.trace(cov, axis1=1, axis2=2)
    return bias2, variance, bias2 + variance


# ----------------------------------------------------------------------------- features of a resampled map


def resampled_features(L, u, w, threshold) -> np.ndarray:
    """``Q̃_d W^{1/2}`` from the d texts ``u`` alone: clip at ``threshold``, w-weighted double centring (SPEC §4)."""
    L_d = np.asarray(L)[:, np.asarray(u)]
    return geometry.weighted_features(geometry.double_center(geometry.clip(L_d, threshold), w), w)

"""Map stability formulas (SPEC §6; lmmap.maths.stability): Procrustes alignment, ellipses, Bias²/Variance/MSE."""

import numpy as np
import pytest

from lmmap.maths import geometry as core
from lmmap.exceptions import LmmapError
from lmmap.maths import stability as st


def rotation(theta):
    return np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


def test_procrustes_recovers_a_rotated_reflected_translated_copy_exactly():
    rng = np.random.default_rng(0)
    Y_ref = rng.normal(size=(50, 2)) * [3.0, 1.0]
    reflect = np.diag([1.0, -1.0])
    Y = Y_ref @ rotation(1.1) @ reflect + np.array([7.0, -4.0])
    Z = st.align(Y, Y_ref)
    np.testing.assert_allclose(Z, st.centre(Y_ref), atol=1e-12)
    U = st.procrustes_rotation(Y, Y_ref)
    np.testing.assert_allclose(U @ U.T, np.eye(2), atol=1e-12)
    assert np.linalg.det(U) == pytest.approx(-1.0)  # a reflection was needed


def test_alignment_does_not_rescale():
    rng = np.random.default_rng(1)
    Y_ref = rng.normal(size=(30, 2))
    Z = st.align(2.0 * Y_ref @ rotation(0.3), Y_ref)
    np.testing.assert_allclose(Z, 2.0 * st.centre(Y_ref), atol=1e-12)


def test_ellipse_axes_are_square_roots_of_covariance_eigenvalues():
    angle = np.radians(30.0)
    V = rotation(angle)
    cov = V @ np.diag([9.0, 0.25]) @ V.T
    major, minor, ang = st.ellipse_axes(cov)
    assert major == pytest.approx(3.0) and minor == pytest.approx(0.5) and ang == pytest.approx(30.0)
    rng = np.random.default_rng(2)
    A = rng.normal(size=(20, 2, 2))
    covs = A @ np.swapaxes(A, 1, 2)
    major, minor, _ = st.ellipse_axes(covs)
    lam = np.linalg.eigvalsh(covs)
    np.testing.assert_allclose(major, np.sqrt(lam[:, 1]))
    np.testing.assert_allclose(minor, np.sqrt(lam[:, 0]))


def test_moments_and_the_mse_decomposition():
    """Variance = tr Cov (1/R), and Bias² + Variance = (1/R)Σ_r‖z_i^(r) − y_i‖² exactly."""
    rng = np.random.default_rng(3)
    R, K = 40, 25
    Y_ref = st.centre(rng.normal(size=(K, 2)))
    Zs = Y_ref + 0.3 + rng.normal(scale=0.2, size=(R, K, 2))
    mean, cov = st.position_moments(Zs)
    np.testing.assert_allclose(mean, Zs.mean(axis=0))
    np.testing.assert_allclose(cov[4], np.cov(Zs[:, 4, :].T, ddof=0))
    bias2, variance, mse = st.bias_variance(Zs, Y_ref)
    np.testing.assert_allclose(variance, np.trace(cov, axis1=1, axis2=2))
    np.testing.assert_allclose(mse, np.mean(np.sum((Zs - Y_ref) ** 2, axis=2), axis=0))
    # the planted shift (0.3, 0.3) is the bias: Bias² ≈ 0.18 (± sampling of 40 trials)
    assert np.median(bias2) == pytest.approx(0.18, abs=0.02)
    assert np.median(variance) == pytest.approx(0.08, rel=0.15)


def test_resampled_features_give_the_weighted_distances():
    rng = np.random.default_rng(4)
    L = -rng.gamma(2.0, 100.0, size=(8, 200))
    u = np.array([1, 5, 9, 50, 120])
    w = np.array([2.0, 0.5, 1.0, 3.0, 1.5])
    X = st.resampled_features(L, u, w, threshold=-400.0)
    Qt = core.double_center(core.clip(L[:, u], -400.0), w)
    np.testing.assert_allclose(core.squared_distances(X), core.squared_distances(Qt, w), rtol=1e-10, atol=1e-8)


def test_alignment_validation():
    with pytest.raises(LmmapError, match="shape"):
        st.align(np.zeros((5, 2)), np.zeros((6, 2)))

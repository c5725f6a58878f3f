"""The numeric core against hand-computed values and a direct transcription of the formulas."""

import numpy as np
import pytest

from lmmap.maths import geometry as core


def direct_double_center(L, w=None):
    K, N = L.shape
    w = np.ones(N) if w is None else w
    R = np.empty_like(L)
    for i in range(K):
        m = sum(w[s] * L[i, s] for s in range(N)) / sum(w)
        for s in range(N):
            R[i, s] = L[i, s] - m
    Q = np.empty_like(L)
    for s in range(N):
        m = sum(R[i, s] for i in range(K)) / K
        for i in range(K):
            Q[i, s] = R[i, s] - m
    return Q


def direct_sq_distances(Q, w=None):
    K, N = Q.shape
    w = np.ones(N) if w is None else w
    G = np.zeros((K, K))
    for i in range(K):
        for j in range(K):
            G[i, j] = sum(w[s] * (Q[i, s] - Q[j, s]) ** 2 for s in range(N))
    return G


HAND_L = np.array([[0.0, 2, 4, 6], [1, 1, 1, 1], [2, 0, 1, 1]])


def test_double_center_hand_computed_3x4():
    Q = core.double_center(HAND_L)
    expected = np.array([[-7, -1, 2, 6], [2, 2, -1, -3], [5, -1, -1, -3]]) / 3
    np.testing.assert_allclose(Q, expected, atol=1e-12)
    np.testing.assert_allclose(Q.sum(axis=0), 0, atol=1e-12)


def test_kl_hand_computed_3x4():
    G = core.squared_distances(core.double_center(HAND_L))
    np.testing.assert_allclose(G, [[0, 20, 26], [20, 0, 2], [26, 2, 0]], atol=1e-9)
    KL = core.kl_from_squared_distances(G, n_texts=4)
    np.testing.assert_allclose(KL[0, 1], 2.5)
    np.testing.assert_allclose(KL[0, 2], 3.25)
    np.testing.assert_allclose(KL[1, 2], 0.25)


def test_clip_threshold_hand_computed():
    L = -np.arange(1.0, 13.0).reshape(3, 4)  # -1 .. -12
    # 2nd percentile by linear interpolation: -12 + 0.02 * 11 * 1 = -11.78
    assert core.clip_threshold(L) == pytest.approx(-11.78)
    C = core.clip(L, -11.78)
    assert C.min() == pytest.approx(-11.78)
    assert (C == np.maximum(L, -11.78)).all()
    assert core.clip(L, None).min() == -12


@pytest.mark.parametrize("weighted", [False, True])
def test_against_direct_transcription(weighted):
    rng = np.random.default_rng(1)
    L = -rng.gamma(3.0, 200.0, size=(7, 13))
    w = rng.uniform(0.1, 3.0, size=13) if weighted else None
    Q = core.double_center(L, w)
    np.testing.assert_allclose(Q, direct_double_center(L, w), atol=1e-9)
    G = core.squared_distances(Q, w)
    np.testing.assert_allclose(G, direct_sq_distances(Q, w), rtol=1e-9, atol=1e-6)
    # ‖q_i − q_j‖²/N is the variance over texts of log p_i − log p_j (SPEC §3.3)
    if not weighted:
        np.testing.assert_allclose(G[0, 1] / 13, np.var(L[0] - L[1]), rtol=1e-9)


def test_weighted_features_reproduce_weighted_distances():
    rng = np.random.default_rng(2)
    Q = rng.normal(size=(5, 9))
    w = rng.uniform(0.5, 2, size=9)
    X = core.weighted_features(Q, w)
    plain = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(plain, core.squared_distances(Q, w), atol=1e-9)


def test_nearest_neighbors_sorted_and_excluding_self():
    D = np.array([[0, 3, 1, 2], [3, 0, 5, 4], [1, 5, 0, 1], [2, 4, 1, 0.0]])
    idx, vals = core.nearest_neighbors(D, 2)
    np.testing.assert_array_equal(idx, [[2, 3], [0, 3], [0, 3], [2, 0]])
    np.testing.assert_array_equal(vals, [[1, 2], [3, 4], [1, 1], [1, 2]])
    idx, _ = core.nearest_neighbors(D, 10)  # k is capped at K-1
    assert idx.shape == (4, 3)


def test_check_finite_names_the_model():
    L = np.zeros((3, 4))
    L[1, 2] = np.nan
    with pytest.raises(ValueError, match="model 'b'.*non-finite"):
        core.check_finite(L, ["a", "b", "c"])


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="2-D"):
        core.double_center(np.zeros(5))
    with pytest.raises(ValueError, match="one weight per text"):
        core.double_center(np.zeros((3, 4)), w=np.ones(3))

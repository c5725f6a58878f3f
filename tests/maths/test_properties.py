"""Property tests of the maths (issue 23 §6): what must hold for *every* input, not only the hand-picked ones.

Hypothesis generates the matrices; every test runs a fixed, derandomised set of
examples with no example database, so a run in CI is the run on a laptop.
Tolerances are rounding tolerances scaled by the size of the numbers involved
(``RTOL`` × the largest squared norm), except for the statistical test of
Lemma 1, whose tolerance is derived from the estimator's own variance.

Properties (SPEC §3, §4, §6):

* geometry — ``G`` from the Gram matrix is symmetric, has a zero diagonal, is
  non-negative, equals the brute-force ``Σ_t w_t (q_i − q_j)²``; ``Q`` has zero
  row and column sums (weighted rows with ``w``); ``Q`` and ``G`` are invariant
  to adding a constant to any row (a model's normaliser) or column (a text's
  difficulty) of ``L``; ``G`` is permutation equivariant and scales as c²;
  ``‖q_i − q_j‖²/N`` is the variance over texts of ``L_i − L_j``; clipping.
* ModelMap.kl — symmetric, zero diagonal, non-negative; invariant (with its
  bootstrap SE) to row and column constants with clipping off, on the full
  text set and on a weighted one, and to one constant added to all of L with
  clipping on; ``KL = Var_s[L_i − L_j] / 2``.
* resampling — π is a distribution, invariant to row and column constants
  and the scale of L; the KL importance's O(K) identity; the
  counts and weights of a resample; ``E[g̃] = g`` and ``E[Σw] = #{π > 0}``
  over many draws (Lemma 1), and ``E[Σ_ij (g̃ − g)²] = distance_error``.
* stability — Procrustes: ``U`` orthogonal; alignment invariant to rotation,
  reflection and translation of the configuration, equivariant to its scale
  and to a rotation of the reference; optimal among orthogonal maps; ellipse
  axes and the MSE decomposition.
* knn — the blocked exact search equals the dense ``nearest_neighbors`` of
  ``squared_distances``; every method's values are the exact ``g`` of the
  indices it returns, sorted.
* ridge — the kernel path equals closed-form primal ridge with an
  unpenalised intercept; grouped folds never split a group.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lmmap.map import ModelMap
from lmmap.maths import geometry, knn, ridge
from lmmap.maths import resampling as rs
from lmmap.maths import stability

# Reproducible in CI: the same examples on every run, nothing read from or written to .hypothesis/.
PROPS = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
FEW = settings(PROPS, max_examples=10)
# The statistical test costs R draws per example: report a failing example as found, without minutes of shrinking.
STATISTICAL = settings(FEW, max_examples=8, phases=[Phase.explicit, Phase.reuse, Phase.generate])

# Rounding: squared distances from a Gram matrix lose about eps × (‖q_i‖² + ‖q_j‖²); 1e-9 leaves a wide margin.
RTOL = 1e-9

# -- strategies ------------------------------------------------------------------------------------------------------

finite = st.floats(min_value=-500.0, max_value=0.0, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def loglik_matrices(draw, min_K=2, max_K=6, min_N=2, max_N=12):
    """A K×N matrix of log-likelihood-like values (≤ 0), ties and constant columns included (hypothesis likes them)."""
    K = draw(st.integers(min_K, max_K))
    N = draw(st.integers(min_N, max_N))
    return draw(arrays(np.float64, (K, N), elements=finite))


@st.composite
def weights(draw, N):
    """Resampling weights: positive, finite, not all tiny."""
    return draw(arrays(np.float64, (N,), elements=st.floats(min_value=0.05, max_value=20.0)))


@st.composite
def matrix_and_weights(draw, **kw):
    L = draw(loglik_matrices(**kw))
    return L, draw(weights(L.shape[1]))


def scale_of(X) -> float:
    """The size of the squared distances of the rows of X: the tolerance unit for rounding."""
    X = np.asarray(X, dtype=np.float64)
    return float(np.max(np.sum(X * X, axis=1), initial=0.0)) + 1.0


def brute_G(Q, w=None):
    w = np.ones(Q.shape[1]) if w is None else np.asarray(w)
    diff = Q[:, None, :] - Q[None, :, :]
    return np.einsum("ijs,s->ij", diff * diff, w)


# -- geometry --------------------------------------------------------------------------------------------------------


@PROPS
@given(matrix_and_weights(), st.booleans())
def test_squared_distances_are_a_symmetric_nonnegative_hollow_matrix_equal_to_brute_force(Lw, weighted):
    L, w = Lw
    w = w if weighted else None
    Q = geometry.double_center(L, w)
    G = geometry.squared_distances(Q, w)
    assert G.shape == (L.shape[0],) * 2
    assert np.array_equal(G, G.T)  # exactly: a_i + a_j − 2·gram_ij, with a symmetric product
    assert np.all(np.diag(G) == 0.0)
    assert np.all(G >= 0.0)
    tol = RTOL * scale_of(geometry.weighted_features(Q, w))
    np.testing.assert_allclose(G, brute_G(Q, w), rtol=0, atol=tol)
    # Without the clip at 0, rounding may only go below 0 by rounding.
    raw = geometry.squared_distances(Q, w, nonnegative=False)
    assert raw.min() >= -tol


@PROPS
@given(matrix_and_weights(), st.booleans())
def test_double_centering_leaves_zero_row_and_column_sums(Lw, weighted):
    L, w = Lw
    w = w if weighted else np.ones(L.shape[1])
    Q = geometry.double_center(L, w if weighted else None)
    tol = 1e-12 * (np.abs(L).max() + 1.0) * L.size
    np.testing.assert_allclose(Q.sum(axis=0), 0.0, atol=tol)  # each text's mean over models
    np.testing.assert_allclose(Q @ w / w.sum(), 0.0, atol=tol)  # each model's (w-weighted) mean over texts


@PROPS
@given(matrix_and_weights(), st.booleans(), st.data())
def test_q_and_g_ignore_a_models_normaliser_and_a_texts_difficulty(Lw, weighted, data):
    """L + a·1ᵀ + 1·bᵀ has the same Q (so the same distances): rows and columns of L carry no absolute level."""
    L, w = Lw
    w = w if weighted else None
    K, N = L.shape
    consts = st.floats(min_value=-1000.0, max_value=1000.0)
    a = data.draw(arrays(np.float64, (K, 1), elements=consts), label="row constants")
    b = data.draw(arrays(np.float64, (1, N), elements=consts), label="column constants")
    Q0 = geometry.double_center(L, w)
    Q1 = geometry.double_center(L + a + b, w)
    size = np.abs(L).max() + np.abs(a).max() + np.abs(b).max() + 1.0
    np.testing.assert_allclose(Q1, Q0, rtol=0, atol=1e-12 * size * (K + N))
    G0, G1 = geometry.squared_distances(Q0, w), geometry.squared_distances(Q1, w)
    # Each entry of Q carries rounding of ~eps·size; a squared norm of a row is at most size²·Σw.
    tol = RTOL * size**2 * (N if w is None else w.sum())
    np.testing.assert_allclose(G1, G0, rtol=0, atol=tol)


@PROPS
@given(loglik_matrices(), st.data())
def test_distances_follow_a_permutation_of_models_ignore_one_of_texts_and_scale_quadratically(L, data):
    K, N = L.shape
    pm = np.array(data.draw(st.permutations(range(K)), label="model order"))
    pt = np.array(data.draw(st.permutations(range(N)), label="text order"))
    c = data.draw(st.floats(min_value=0.01, max_value=100.0), label="scale")
    G = geometry.squared_distances(geometry.double_center(L))
    tol = RTOL * scale_of(geometry.double_center(L))
    np.testing.assert_allclose(geometry.squared_distances(geometry.double_center(L[pm])), G[np.ix_(pm, pm)],
                               rtol=0, atol=tol)
    np.testing.assert_allclose(geometry.squared_distances(geometry.double_center(L[:, pt])), G, rtol=0, atol=tol)
    np.testing.assert_allclose(geometry.squared_distances(geometry.double_center(c * L)), c * c * G,
                               rtol=0, atol=tol * max(c * c, 1.0))


@PROPS
@given(loglik_matrices())
def test_scaled_distance_is_the_variance_over_texts_of_the_difference_of_two_rows(L):
    """SPEC §3: ‖q_i − q_j‖²/N = Var_s[L_is − L_js] (population variance); column centring does not change it."""
    K, N = L.shape
    G = geometry.squared_distances(geometry.double_center(L))
    var = np.var(L[:, None, :] - L[None, :, :], axis=2)
    np.testing.assert_allclose(G / N, var, rtol=0, atol=RTOL * scale_of(L - L.mean(axis=1, keepdims=True)) / N)
    np.testing.assert_allclose(geometry.kl_from_squared_distances(G, N), G / (2 * N), rtol=1e-15)


@PROPS
@given(matrix_and_weights())
def test_weighted_features_carry_the_weighted_geometry_and_cross_distances_agree(Lw):
    L, w = Lw
    Q = geometry.double_center(L, w)
    X = geometry.weighted_features(Q, w)
    tol = RTOL * scale_of(X)
    G = geometry.squared_distances(Q, w)
    np.testing.assert_allclose(geometry.squared_distances(X), G, rtol=0, atol=tol)
    cross = geometry.cross_squared_distances(X, X)
    off = ~np.eye(L.shape[0], dtype=bool)
    np.testing.assert_allclose(cross[off], G[off], rtol=0, atol=tol)
    assert np.all(cross >= 0)


@PROPS
@given(loglik_matrices(), st.floats(min_value=0.0, max_value=100.0))
def test_clipping_raises_only_the_entries_below_the_threshold(L, pct):
    t = geometry.clip_threshold(L, pct)
    assert L.min() <= t <= L.max()
    C = geometry.clip(L, t)
    assert np.all(C >= t)
    np.testing.assert_array_equal(C[L >= t], L[L >= t])
    np.testing.assert_array_equal(geometry.clip(C, t), C)  # idempotent
    np.testing.assert_array_equal(geometry.clip(L, None), L)
    assert geometry.clip_threshold(L, 0.0) == L.min() and geometry.clip_threshold(L, 100.0) == L.max()


@PROPS
@given(loglik_matrices(min_K=2), st.integers(1, 8))
def test_nearest_neighbors_are_sorted_exclude_self_and_read_the_matrix(L, k):
    G = geometry.squared_distances(geometry.double_center(L))
    idx, val = geometry.nearest_neighbors(G, k)
    K = G.shape[0]
    assert idx.shape == (K, min(k, K - 1))
    assert not np.any(idx == np.arange(K)[:, None])
    np.testing.assert_array_equal(val, np.take_along_axis(G, idx, axis=1))
    assert np.all(np.diff(val, axis=1) >= 0)
    # Nothing left out is nearer than the last one kept.
    masked = G + np.diag(np.full(K, np.inf))
    assert np.all(np.sort(masked, axis=1)[:, idx.shape[1] - 1] == val[:, -1])


# -- ModelMap.kl -----------------------------------------------------------------------------------------------------


@PROPS
@given(loglik_matrices(min_K=3), st.sampled_from(["auto", None]))
def test_modelmap_kl_is_symmetric_hollow_nonnegative_and_half_the_variance_of_differences(L, threshold):
    mm = ModelMap([f"m{i}" for i in range(L.shape[0])], L, threshold=threshold)
    KL = mm.kl()
    assert np.array_equal(KL, KL.T) and np.all(np.diag(KL) == 0) and np.all(KL >= 0)
    Lc = geometry.clip(L, mm.threshold)
    var = np.var(Lc[:, None, :] - Lc[None, :, :], axis=2)
    np.testing.assert_allclose(KL, var / 2, rtol=0, atol=RTOL * scale_of(mm.Q) / L.shape[1])


@PROPS
@given(matrix_and_weights(min_K=3), st.booleans(), st.data())
def test_modelmap_kl_ignores_row_and_column_constants_when_clipping_is_off(Lw, weighted, data):
    """A model's normaliser (a row constant) and a text's difficulty (a column constant) never move a KL, on the
    full text set or on a resampled one (w-weighted row means); nor its bootstrap standard error."""
    L, w = Lw
    w = w if weighted else None
    K, N = L.shape
    consts = st.floats(min_value=-1000.0, max_value=1000.0)
    a = data.draw(arrays(np.float64, (K, 1), elements=consts), label="model normalisers")
    b = data.draw(arrays(np.float64, (1, N), elements=consts), label="text difficulties")
    names = [f"m{i}" for i in range(K)]
    m0 = ModelMap(names, L, threshold=None, w=w)
    m1 = ModelMap(names, L + a + b, threshold=None, w=w)
    size = np.abs(L).max() + np.abs(a).max() + np.abs(b).max() + 1.0
    tol = RTOL * size**2 * (1.0 if w is None else w.max())
    np.testing.assert_allclose(m1.kl(), m0.kl(), rtol=0, atol=tol)
    se0, se1 = m0.kl_se(R=8, random_state=1), m1.kl_se(R=8, random_state=1)
    assert np.array_equal(se0, se0.T) and np.all(np.diag(se0) == 0) and np.all(se0 >= 0)
    np.testing.assert_allclose(se1, se0, rtol=0, atol=np.sqrt(tol * (m0.kl().max() + tol)) + tol)


@PROPS
@given(loglik_matrices(min_K=3), st.floats(min_value=-1000.0, max_value=1000.0))
def test_modelmap_kl_ignores_one_constant_added_to_every_entry_with_clipping_on(L, c):
    """Clipping at the 2nd percentile follows a shift of all of L (the threshold moves with it); a stored one too."""
    names = [f"m{i}" for i in range(L.shape[0])]
    m0, m1 = ModelMap(names, L), ModelMap(names, L + c)
    size = np.abs(L).max() + abs(c) + 1.0
    assert m1.threshold == pytest.approx(m0.threshold + c, abs=1e-12 * size)
    np.testing.assert_allclose(m1.kl(), m0.kl(), rtol=0, atol=RTOL * size**2)
    stored = float(np.median(L))
    s0, s1 = ModelMap(names, L, threshold=stored), ModelMap(names, L + c, threshold=stored + c)
    np.testing.assert_allclose(s1.kl(), s0.kl(), rtol=0, atol=RTOL * size**2)


# -- resampling ------------------------------------------------------------------------------------------------------


def _has_distances(L) -> bool:
    Q = geometry.double_center(L)
    return bool(np.abs(Q).max() > 1e-6 * (np.abs(L).max() + 1.0))


@PROPS
@given(loglik_matrices(), st.sampled_from(rs.METHODS))
def test_importance_is_a_probability_vector(L, method):
    assume(_has_distances(L))
    Q = geometry.double_center(L)
    pi = rs.importance(Q, method)
    assert pi.shape == (L.shape[1],) and np.all(pi >= 0) and pi.sum() == pytest.approx(1.0, abs=1e-12)
    if method == "uniform":
        np.testing.assert_allclose(pi, 1.0 / L.shape[1], rtol=1e-12)
    # Every text some pair of models scores differently (above rounding) can be drawn.
    spread = np.ptp(Q, axis=0)
    assert np.all(pi[spread > 1e-5 * spread.max()] > 0)


@PROPS
@given(loglik_matrices(), st.sampled_from(rs.METHODS), st.floats(min_value=0.1, max_value=10.0), st.data())
def test_importance_ignores_row_and_column_constants_and_the_scale_of_l(L, method, c, data):
    """π depends on Q only, up to a factor: shifts of rows and columns and a positive scale of L leave it alone."""
    assume(_has_distances(L))
    K, N = L.shape
    consts = st.floats(min_value=-1000.0, max_value=1000.0)
    a = data.draw(arrays(np.float64, (K, 1), elements=consts), label="row constants")
    b = data.draw(arrays(np.float64, (1, N), elements=consts), label="column constants")
    pi0 = rs.importance(geometry.double_center(L), method)
    pi1 = rs.importance(geometry.double_center(c * L + a + b), method)
    # Texts at the zero-importance cut (rounding-level columns) may fall either side of it: compare the others.
    Q = geometry.double_center(L)
    clear = np.ptp(Q, axis=0) > 1e-4 * np.ptp(Q, axis=0).max()
    np.testing.assert_allclose(pi1[clear], pi0[clear], rtol=1e-6, atol=1e-9)


@PROPS
@given(loglik_matrices(max_K=7))
def test_kl_importance_identity_equals_the_sum_over_all_pairs(L):
    """Σ_{i,j}(a_i − a_j)⁴ = 2K·Σa⁴ + 6(Σa²)² for centred columns: the O(K) form of the KL importance."""
    Q = geometry.double_center(L)
    diff = Q[:, None, :] - Q[None, :, :]
    brute = (diff**4).sum(axis=(0, 1))
    got = rs.pairwise_fourth_moments(Q)
    np.testing.assert_allclose(got, brute, rtol=1e-9, atol=1e-9 * (brute.max() + 1.0))
    np.testing.assert_allclose(rs.kl_scores(Q), np.sqrt(brute), rtol=1e-6, atol=1e-9 * (np.sqrt(brute).max() + 1))


@PROPS
@given(loglik_matrices(), st.sampled_from(rs.METHODS), st.integers(1, 500), st.integers(0, 2**32 - 1))
def test_a_resample_has_unique_sorted_texts_counts_summing_to_n_and_weights_c_over_n_pi(L, method, n, seed):
    assume(_has_distances(L))
    pi = rs.importance(geometry.double_center(L), method)
    u, c, w = rs.resample(pi, n, random_state=seed)
    assert np.all(np.diff(u) > 0) and c.sum() == n and np.all(c >= 1)
    assert np.all(pi[u] > 0)  # a text of zero importance is never drawn
    np.testing.assert_allclose(w, c / (n * pi[u]), rtol=1e-15)
    u2, c2, w2 = rs.resample(pi, n, random_state=seed)  # one seed, one draw
    assert np.array_equal(u, u2) and np.array_equal(c, c2) and np.array_equal(w, w2)


# Lemma 1 by simulation. The mean of R estimates has standard error sqrt(Var(g̃_ij)/R) with the exact variance of
# Lemma 2, Var(g̃_ij) = (1/n)(Σ_s δ_s⁴/π_s − g_ij²); g̃ is a mean of n·R i.i.d. draws, so the mean is close to normal.
# Z bounds |mean − g| / se for every pair of every example: with at most 15 pairs × 3 methods × 8 examples
# (360 nearly-normal z-scores) a correct estimator exceeds 5.5 with probability below 360 × 3.8e-8 < 2e-5.
R_DRAWS = 1000
Z = 5.5


@STATISTICAL
@given(loglik_matrices(min_K=2, max_K=6, min_N=3, max_N=10), st.integers(5, 40), st.integers(0, 2**32 - 1))
@pytest.mark.parametrize("method", rs.METHODS)
def test_lemma1_the_resampled_distance_is_unbiased_within_its_own_standard_error(method, L, n, seed):
    assume(_has_distances(L))
    Q = geometry.double_center(L)
    pi = rs.importance(Q, method)
    G = geometry.squared_distances(Q)
    live = pi > 0
    diff2 = (Q[:, None, :] - Q[None, :, :]) ** 2
    var = np.maximum(((diff2[..., live] ** 2) / pi[live]).sum(axis=2) - G**2, 0.0) / n  # Lemma 2
    # Texts of zero importance are never drawn: the estimator's mean is g without them (rounding-level, ≤ 1e-12·top).
    target = diff2[..., live].sum(axis=2)
    rng = np.random.default_rng(seed)
    acc, acc_sq, total_w, err2 = np.zeros_like(G), np.zeros_like(G), np.zeros(R_DRAWS), np.zeros(R_DRAWS)
    for r in range(R_DRAWS):
        u, c, w = rs.resample(pi, n, random_state=rng)
        g = rs.resampled_squared_distances(Q, u, w)
        acc += g
        total_w[r] = w.sum()
        err2[r] = np.sum((g - G) ** 2)
    mean = acc / R_DRAWS
    se = np.sqrt(var / R_DRAWS)
    rounding = RTOL * scale_of(Q)
    off = ~np.eye(G.shape[0], dtype=bool)
    excess = np.abs(mean - target)[off] - Z * se[off] - rounding
    assert np.all(excess <= 0), (
        f"{method}: E[g̃] ≠ g: worst |mean − g| = {np.abs(mean - target)[off].max():.4g} "
        f"against {Z}·se = {(Z * se[off]).max():.4g}")
    assert np.allclose(target, G, rtol=0, atol=1e-9 * (G.max() + 1.0))  # and that g is the map's g
    # E[Σ w] = the number of drawable texts (N when every π_s > 0): Σw averages n draws of 1/π.
    m = int(live.sum())
    var_w = max((1.0 / pi[live]).sum() - m * m, 0.0) / n
    assert abs(total_w.mean() - m) <= Z * np.sqrt(var_w / R_DRAWS) + 1e-9 * m
    # E[Σ_ij (g̃ − g)²] = distance_error (closed form), within the standard error of the simulated mean.
    expected = rs.distance_error(Q, pi, n)
    # (Its closed form subtracts Σ g² from Σ A/π: rounding of the size of Σ g², which is 0 only when Var(g̃) is.)
    assert abs(err2.mean() - expected) <= Z * err2.std() / np.sqrt(R_DRAWS) + RTOL * (np.sum(G * G) + rounding)


# -- stability (Procrustes) ------------------------------------------------------------------------------------------

coordinates = st.floats(min_value=-100.0, max_value=100.0, allow_nan=False)


@st.composite
def configurations(draw, min_K=3, max_K=12):
    """A K×2 configuration whose spread is not degenerate (a rotation of a point or a line is not unique)."""
    K = draw(st.integers(min_K, max_K))
    Y = draw(arrays(np.float64, (K, 2), elements=coordinates))
    s = np.linalg.svd(stability.centre(Y), compute_uv=False)
    assume(s[-1] > 1e-3 * max(s[0], 1.0) and s[0] - s[-1] > 1e-3 * s[0])
    return Y


def orthogonal(theta, reflect):
    R = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return R @ np.diag([1.0, -1.0]) if reflect else R


angles = st.floats(min_value=0.0, max_value=2 * np.pi)
shifts = arrays(np.float64, (2,), elements=st.floats(min_value=-1e3, max_value=1e3))


@PROPS
@given(configurations(), configurations(), angles, st.booleans(), shifts, st.floats(min_value=0.1, max_value=10.0))
def test_procrustes_alignment_is_invariant_to_rotation_reflection_and_translation_and_follows_scale(
        Y, Y_ref, theta, reflect, t, c):
    K = min(len(Y), len(Y_ref))
    Y, Y_ref = Y[:K], Y_ref[:K]
    assume(np.linalg.svd(stability.centre(Y), compute_uv=False)[-1] > 1e-3)
    U = stability.procrustes_rotation(Y, Y_ref)
    np.testing.assert_allclose(U @ U.T, np.eye(2), atol=1e-10)
    Z = stability.align(Y, Y_ref)
    size = np.abs(Y).max() + np.abs(t).max() + 1.0
    tol = 1e-8 * size * max(c, 1.0)
    M = orthogonal(theta, reflect)
    # The configuration moved rigidly (and mirrored) aligns to the same place ...
    np.testing.assert_allclose(stability.align(Y @ M + t, Y_ref), Z, atol=tol)
    # ... and scaled, to the same place scaled (alignment rotates, it does not rescale).
    np.testing.assert_allclose(stability.align(c * Y, Y_ref), c * Z, atol=tol)
    # The reference moved rigidly carries the aligned configuration with it; its scale and position do not matter.
    np.testing.assert_allclose(stability.align(Y, Y_ref @ M + t), Z @ M, atol=tol)
    np.testing.assert_allclose(stability.align(Y, c * Y_ref - t), Z, atol=tol)
    # Centred: the aligned configuration sits at the origin.
    np.testing.assert_allclose(Z.mean(axis=0), 0.0, atol=1e-9 * size)


@PROPS
@given(configurations(), configurations(), angles, st.booleans())
def test_procrustes_alignment_is_the_best_orthogonal_fit(Y, Y_ref, theta, reflect):
    K = min(len(Y), len(Y_ref))
    Y, Y_ref = Y[:K], Y_ref[:K]
    Z = stability.align(Y, Y_ref)
    best = np.linalg.norm(Z - stability.centre(Y_ref))
    other = np.linalg.norm(stability.centre(Y) @ orthogonal(theta, reflect) - stability.centre(Y_ref))
    assert best <= other + 1e-9 * (np.abs(Y).max() + np.abs(Y_ref).max() + 1.0) ** 2
    # A rigid copy of the reference is recovered exactly.
    np.testing.assert_allclose(stability.align(Y_ref @ orthogonal(theta, reflect) + 3.0, Y_ref),
                               stability.centre(Y_ref), atol=1e-8 * (np.abs(Y_ref).max() + 1.0))


@PROPS
@given(st.integers(1, 6), configurations(), st.data())
def test_ellipses_and_the_mse_decomposition(R, Y_ref, data):
    K = len(Y_ref)
    Zs = data.draw(arrays(np.float64, (R, K, 2), elements=coordinates), label="aligned positions")
    mean, cov = stability.position_moments(Zs)
    major, minor, angle = stability.ellipse_axes(cov)
    assert np.all(major >= minor) and np.all(minor >= 0)
    assert np.all((angle >= 0) & (angle < 180))
    trace = np.trace(cov, axis1=1, axis2=2)
    np.testing.assert_allclose(major**2 + minor**2, trace, rtol=1e-9, atol=1e-9 * (trace.max() + 1.0))
    bias2, variance, mse = stability.bias_variance(Zs, Y_ref)
    np.testing.assert_allclose(mse, bias2 + variance, rtol=1e-15)
    np.testing.assert_allclose(variance, ((Zs - mean) ** 2).sum(axis=2).mean(axis=0), rtol=1e-9,
                               atol=1e-9 * (variance.max() + 1.0))
    assert np.all(bias2 >= 0) and np.all(variance >= 0)


# -- knn --------------------------------------------------------------------------------------------------------------


@PROPS
@given(st.integers(2, 14), st.integers(1, 9), st.integers(1, 16), st.data())
def test_exact_knn_agrees_with_the_dense_computation(K, d, k, data):
    """Integer-valued features: every Gram product is exact, so ties are exact and must be broken by index alike."""
    X = data.draw(arrays(np.float64, (K, d), elements=st.integers(-6, 6).map(float)), label="X")
    G = geometry.squared_distances(X)
    idx0, g0 = geometry.nearest_neighbors(G, k)
    idx, g = knn.exact_knn(X, k)
    np.testing.assert_array_equal(idx, idx0)
    np.testing.assert_array_equal(g, g0)
    found = knn.knn(X, k, method="exact", dtype=np.float64, n_texts=d)
    np.testing.assert_array_equal(found.idx, idx0)
    np.testing.assert_allclose(found.kl, g0 / (2 * d), rtol=1e-15)
    rows = np.arange(K)[::2]
    ridx, rg = knn.exact_knn_rows(X, rows, k)
    np.testing.assert_array_equal(ridx, idx0[rows])
    np.testing.assert_array_equal(rg, g0[rows])


@FEW
@given(loglik_matrices(min_K=4, max_K=30, min_N=3, max_N=20), st.integers(1, 5), st.sampled_from(knn.METHODS),
       st.integers(0, 1000))
def test_every_knn_method_returns_exact_sorted_distances_of_the_neighbours_it_names(L, k, method, seed):
    Q = geometry.double_center(L)
    found = knn.knn(Q, k, method=method, random_state=seed, n_components=2, recall_rows=0)
    G = geometry.squared_distances(Q)
    K = len(Q)
    assert found.idx.shape == (K, min(k, K - 1))
    assert not np.any(found.idx == np.arange(K)[:, None])
    assert all(len(set(row)) == len(row) for row in found.idx.tolist())
    np.testing.assert_allclose(found.sqdist, np.take_along_axis(G, found.idx, axis=1), rtol=0,
                               atol=RTOL * scale_of(Q))
    assert np.all(np.diff(found.sqdist, axis=1) >= 0)


# -- ridge ------------------------------------------------------------------------------------------------------------


@PROPS
@given(st.integers(3, 12), st.integers(1, 8), st.integers(1, 3), st.floats(min_value=1e-3, max_value=1e3),
       st.integers(0, 2**32 - 1))
def test_kernel_ridge_path_equals_primal_ridge_with_an_intercept(n, p, T, alpha, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n + 2, p)) * rng.gamma(1.0, 3.0, size=p)
    Y = rng.normal(size=(n, T)) * 10
    train, test = np.arange(n), np.arange(n, n + 2)
    K_tr, K_te = ridge.centered_kernels(ridge.gram_matrix(X), train, test)
    pred = ridge.RidgePath.fit(K_tr, Y).predict(K_te, [alpha])[0]
    mu, ybar = X[train].mean(axis=0), Y.mean(axis=0)
    Xc = X[train] - mu
    beta = np.linalg.solve(Xc.T @ Xc + alpha * np.eye(p), Xc.T @ (Y - ybar))
    np.testing.assert_allclose(pred, ybar + (X[test] - mu) @ beta, rtol=1e-7, atol=1e-7 * (np.abs(Y).max() + 1))


@PROPS
@given(st.lists(st.sampled_from("abcdefghij"), min_size=2, max_size=40), st.integers(2, 5), st.integers(0, 1000))
def test_grouped_folds_never_split_a_group_and_leave_no_fold_empty(groups, n_folds, seed):
    assume(len(set(groups)) >= n_folds)
    folds = ridge.outer_folds(groups, n_folds=n_folds, random_state=seed)
    assert folds.shape == (len(groups),) and set(folds.tolist()) == set(range(n_folds))
    for g in set(groups):
        assert len({f for f, h in zip(folds.tolist(), groups) if h == g}) == 1

"""Nearest models without a K×K matrix (lmmap.maths.knn) against the dense path of lmmap.maths.geometry."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lmmap.exceptions import InputError
from lmmap.maths import geometry, knn
from synthetic import lineage_L, lowrank_L

# Largest relative difference allowed between a returned g (or KL) and the dense float64 one: rounding only.
RTOL = 1e-9


def dense(X, k):
    G = geometry.squared_distances(np.asarray(X, dtype=np.float64))
    idx, vals = geometry.nearest_neighbors(G, k)
    return idx, vals, G


def stable_reference(X, k):
    """Brute force from differences: every other row sorted by (g, index)."""
    X = np.asarray(X, dtype=np.float64)
    G = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(G, np.inf)
    idx = np.argsort(G, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(G, idx, axis=1)


@pytest.fixture(scope="module")
def small_Q():
    Q, _ = geometry.map_coordinates(lowrank_L(150, 300, n_families=12, seed=3))
    return Q


# -- exact -------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 5, 10, 149])
def test_exact_matches_dense_geometry(small_Q, k):
    idx0, g0, _ = dense(small_Q, k)
    idx, g = knn.exact_knn(small_Q, k)
    assert idx.dtype == np.int64 and g.dtype == np.float64 and idx.shape == (150, k)
    np.testing.assert_array_equal(idx, idx0)
    np.testing.assert_allclose(g, g0, rtol=RTOL)
    # the KL route of ModelMap: nearest_neighbors of g/(2N) gives the same lists and g/(2N) values
    N = small_Q.shape[1]
    kl_idx, kl = geometry.nearest_neighbors(geometry.kl_from_squared_distances(dense(small_Q, k)[2], N), k)
    np.testing.assert_array_equal(idx, kl_idx)
    np.testing.assert_allclose(geometry.kl_from_squared_distances(g, N), kl, rtol=RTOL)


def test_exact_float32_products_give_the_float64_answer(small_Q):
    idx0, g0, _ = dense(small_Q, 10)
    for X in (small_Q, small_Q.astype(np.float32)):
        idx, g = knn.exact_knn(X, 10, dtype=np.float32)
        ref_idx, ref_g, _ = dense(X, 10)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_allclose(g, ref_g, rtol=RTOL)
    np.testing.assert_array_equal(knn.exact_knn(small_Q.astype(np.float32), 10)[0], idx0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_blocked_equals_unblocked(small_Q, dtype):
    idx0, g0 = knn.exact_knn(small_Q, 7, dtype=dtype, block_rows=10_000)
    for b in (3, 16, 64, 149):
        idx, g = knn.exact_knn(small_Q, 7, dtype=dtype, block_rows=b)
        np.testing.assert_array_equal(idx, idx0)
        np.testing.assert_allclose(g, g0, rtol=1e-12)


def test_block_size_follows_the_memory_budget():
    assert knn._block_rows(100_000, 24, None) * 100_000 * 24 <= knn.BLOCK_BYTES
    assert knn._block_rows(10**9, 24, None) == 1
    with pytest.raises(InputError, match="block_rows"):
        knn.exact_knn(np.eye(3), 1, block_rows=0)


def test_ties_inside_the_list_ordered_by_index_like_geometry():
    # Row 0 has three neighbours at g = 1 (rows 1, 2, 3) and one far away.
    X = np.array([[0.0, 0], [1, 0], [0, 1], [-1, 0], [5, 5]])
    idx, g = knn.exact_knn(X, 3)
    np.testing.assert_array_equal(idx[0], [1, 2, 3])
    np.testing.assert_array_equal(g[0], [1, 1, 1])
    np.testing.assert_array_equal(idx, dense(X, 3)[0])


def test_ties_at_the_kth_distance_keep_the_lowest_indices():
    # 40 binary points in 3-D: many rows have more models at the k-th distance than places left.
    # argpartition alone (geometry.nearest_neighbors) keeps an arbitrary subset of those; exact_knn keeps the
    # lowest indices, as a stable sort of the dense row does. The distances listed agree either way.
    X = np.random.default_rng(0).integers(0, 2, (40, 3)).astype(float)
    idx, g = knn.exact_knn(X, 3)
    ref_idx, ref_g = stable_reference(X, 3)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(g, ref_g)
    np.testing.assert_array_equal(g, dense(X, 3)[1])
    # duplicates: the other copy is at 0 and comes first; the row itself never appears
    Xd = np.vstack([np.unique(X, axis=0)[:5]] * 2)
    idx, g = knn.exact_knn(Xd, 2)
    assert not (idx == np.arange(10)[:, None]).any()
    np.testing.assert_array_equal(idx[:, 0], np.r_[5:10, 0:5])
    np.testing.assert_array_equal(g[:, 0], 0.0)


@pytest.mark.parametrize("n", [1, 5, 50])
def test_selection_by_sampled_threshold_is_exact_with_ties(n):
    rng = np.random.default_rng(n)
    D = rng.integers(0, 30, (9, 4000)).astype(np.float32)  # hundreds of ties at every value
    D[3, ::16] = -np.arange(250)  # a row whose sampled columns hold its smallest values: the threshold fails
    D[5] = 7.0
    idx, vals = knn._smallest(D, n)
    ref = np.argsort(D, axis=1, kind="stable")[:, :n]
    np.testing.assert_array_equal(idx, ref)
    np.testing.assert_array_equal(vals, np.take_along_axis(D, ref, axis=1))


def test_exact_ties_on_a_large_map():
    X = np.random.default_rng(2).integers(0, 3, (1500, 4)).astype(float)  # 81 distinct points: ties everywhere
    ref_idx, ref_g = stable_reference(X, 12)
    for tile in (None, 200):  # ties split between tiles are merged by (g, index) too
        idx, g = knn.exact_knn(X, 12, block_rows=tile)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_array_equal(g, ref_g)
    idx, g = knn.exact_knn_rows(X, np.arange(0, 1500, 7), 12)
    np.testing.assert_array_equal(idx, ref_idx[::7])


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_exact_matches_brute_force(data):
    K = data.draw(st.integers(2, 12), label="K")
    d = data.draw(st.integers(1, 5), label="d")
    # Small integers: every Gram product is exact, so ties are exact and must be broken by index.
    X = data.draw(arrays(np.float64, (K, d), elements=st.integers(-3, 3).map(float)), label="X")
    k = data.draw(st.integers(1, K - 1), label="k")
    block = data.draw(st.sampled_from([None, 1, 2, 5]), label="block_rows")
    idx, g = knn.exact_knn(X, k, block_rows=block)
    ref_idx, ref_g = stable_reference(X, k)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(g, ref_g)


def test_exact_rows_is_the_same_search_for_a_sample(small_Q):
    idx0, g0 = knn.exact_knn(small_Q, 6)
    rows = np.array([149, 0, 17, 17, 80])
    for dtype in (np.float64, np.float32):
        idx, g = knn.exact_knn_rows(small_Q, rows, 6, dtype=dtype)
        np.testing.assert_array_equal(idx, idx0[rows])
        np.testing.assert_allclose(g, g0[rows], rtol=RTOL)
    idx, g = knn.exact_knn_rows(small_Q, [42], 3)
    assert idx.shape == (1, 3) and 42 not in idx


def test_k_is_capped_at_K_minus_1_and_bad_input_is_refused():
    X = np.arange(12.0).reshape(4, 3)
    assert knn.exact_knn(X, 10)[0].shape == (4, 3)
    with pytest.raises(InputError, match="k must"):
        knn.exact_knn(X, 0)
    with pytest.raises(InputError, match="at least 2 models"):
        knn.exact_knn(X[:1], 1)
    bad = X.copy()
    bad[2, 1] = np.nan
    with pytest.raises(InputError, match="row 2"):
        knn.exact_knn(bad, 1)
    with pytest.raises(InputError, match="dtype"):
        knn.exact_knn(X, 1, dtype=np.float16)
    with pytest.raises(InputError, match="rows"):
        knn.exact_knn_rows(X, [4], 1)
    with pytest.raises(InputError, match="method"):
        knn.knn(X, 1, method="fast")


# -- the projection ------------------------------------------------------------------------------------------------------

def test_projection_shortens_every_pair_and_states_its_mean_distortion_exactly(small_Q):
    K = small_Q.shape[0]
    p = knn.randomized_projection(small_Q, 8, random_state=0)
    assert p.Z.shape == (K, 8) and p.components.shape == (300, 8)
    np.testing.assert_allclose(p.components.T @ p.components, np.eye(8), atol=1e-12)
    G = geometry.squared_distances(small_Q)
    Gz = geometry.squared_distances(p.Z)
    scale = G.max()
    assert (Gz <= G + 1e-9 * scale).all()
    off = ~np.eye(K, dtype=bool)
    np.testing.assert_allclose(p.mean_distortion, (G - Gz)[off].mean(), rtol=1e-9)
    # per pair: g − ĝ ≤ (√ρ_i + √ρ_j)²
    root = np.sqrt(p.residual)
    assert ((G - Gz) <= (root[:, None] + root[None, :]) ** 2 + 1e-9 * scale).all()
    # captured: against the exact SVD's top 8 (a randomised basis captures at most as much)
    s = np.linalg.svd(small_Q, compute_uv=False)
    best = (s[:8] ** 2).sum() / (s ** 2).sum()
    assert best - 1e-3 <= p.captured <= best + 1e-12
    np.testing.assert_allclose(p.mean_distortion, 2 * p.residual.sum() / (K - 1), rtol=1e-9)  # Q is centred


def test_projection_is_reproducible_and_float64_sketch_agrees(small_Q):
    a = knn.randomized_projection(small_Q, 8, random_state=5)
    b = knn.randomized_projection(small_Q, 8, random_state=5)
    np.testing.assert_array_equal(a.Z, b.Z)
    c = knn.randomized_projection(small_Q, 8, random_state=5, dtype=np.float64)
    np.testing.assert_allclose(c.singular_values, a.singular_values, rtol=1e-3)


# -- approximate -------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lineages():
    """K = 3,000 models in 300 lineages (a base, 8 fine-tunes, a checkpoint) on N = 2,000 texts, and the exact
    neighbours of 400 sampled rows."""
    _, L, meta = lineage_L(N=2000, n_lineages=300, n_finetunes=8, n_checkpoints=1, n_scratch=0, seed=0)
    Q, _ = geometry.map_coordinates(L.astype(np.float32))
    rows = np.sort(np.random.default_rng(1).choice(Q.shape[0], 400, replace=False))
    return Q, meta, rows, knn.exact_knn_rows(Q, rows, 10)


def test_approximate_recall_on_lineages_and_exact_values(lineages):
    Q, meta, rows, (exact_idx, exact_g) = lineages
    assert Q.shape == (3000, 2000)
    idx, g = knn.approximate_knn(Q, 10, random_state=0)
    assert idx.shape == (3000, 10) and g.dtype == np.float64
    assert knn.recall_at_k(idx[rows], exact_idx) >= 0.99
    # every value is an exact g: against float64 Gram products of the same rows, to rounding
    A = np.einsum("ij,ij->i", Q, Q)
    ref = A[rows][:, None] + A[idx[rows]] - 2 * np.einsum("in,ikn->ik", Q[rows], Q[idx[rows]])
    np.testing.assert_allclose(g[rows], np.maximum(ref, 0), rtol=RTOL)
    hit = (idx[rows] == exact_idx).all(axis=1)
    np.testing.assert_allclose(g[rows][hit], exact_g[hit], rtol=RTOL)
    # a fine-tune's nearest model is in its own lineage
    fam = meta["family"].to_numpy()
    assert (fam[idx[:, 0]] == fam).mean() > 0.99


def test_noisy_models_do_not_crowd_the_candidates():
    # Models differ in how noisy they are. Ranking candidates by the projected distance ĝ alone pulls the noisiest
    # models into everyone's list (recall 0.92 here); the key with each row's residual ‖P⊥q‖² does not.
    rng = np.random.default_rng(1)
    L = lowrank_L(2000, 1000, n_families=200, noise=0.0, seed=1)
    L = L + 5 * rng.gamma(2, 1.5, size=(2000, 1)) * rng.normal(size=L.shape)
    Q, _ = geometry.map_coordinates(L)
    rows = np.arange(0, 2000, 5)
    exact_idx, _ = knn.exact_knn_rows(Q, rows, 10)
    idx, _ = knn.approximate_knn(Q, 10, random_state=0)
    assert knn.recall_at_k(idx[rows], exact_idx) >= 0.99


def test_approximate_with_every_model_a_candidate_is_exact(small_Q):
    idx0, g0, _ = dense(small_Q, 5)
    idx, g = knn.approximate_knn(small_Q, 5, n_components=4, n_candidates=10_000, random_state=0)
    np.testing.assert_array_equal(idx, idx0)
    np.testing.assert_allclose(g, g0, rtol=RTOL)
    with pytest.raises(InputError, match="n_candidates"):
        knn.approximate_knn(small_Q, 5, n_candidates=3)
    # float32 storage: values are float64 computations on the stored float32 numbers
    Q32 = small_Q.astype(np.float32)
    idx32, g32 = knn.approximate_knn(Q32, 5, n_components=4, n_candidates=10_000, random_state=0)
    ref_idx, ref_g, _ = dense(Q32, 5)
    np.testing.assert_array_equal(idx32, ref_idx)
    np.testing.assert_allclose(g32, ref_g, rtol=RTOL)


def test_approximate_on_a_rank_deficient_matrix():
    # rank 3 and duplicated rows: the sketch spans 3 directions and rounding noise; Z keeps all of Q
    rng = np.random.default_rng(4)
    X = rng.normal(size=(120, 3)) @ rng.normal(size=(3, 80))
    X = np.vstack([X, X[:10]])
    idx0, g0, _ = dense(X, 4)
    idx, g = knn.approximate_knn(X, 4, n_components=16, random_state=0)
    np.testing.assert_allclose(g, g0, rtol=1e-6, atol=1e-9 * g0.max())
    assert knn.recall_at_k(idx, idx0) > 0.95  # what differs is the order of (near-)duplicates at g ≈ 0
    p = knn.randomized_projection(X, 16, random_state=0)
    assert p.captured == pytest.approx(1.0, abs=1e-9) and p.mean_distortion < 1e-9 * g0.max()


def test_orthonormal_basis_falls_back_to_householder_on_a_singular_gram():
    Y = np.random.default_rng(0).normal(size=(50, 4))
    Y[:, 3] = Y[:, 1]  # exactly dependent: Cholesky of YᵀY fails
    B = knn._orth(Y)
    np.testing.assert_allclose(B.T @ B, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(B @ (B.T @ Y), Y, atol=1e-12)  # spans the columns of Y
    B = knn._orth(Y[:, :3])
    np.testing.assert_allclose(B.T @ B, np.eye(3), atol=1e-13)


def test_recall_at_k():
    exact = np.array([[1, 2, 3], [0, 2, 3]])
    assert knn.recall_at_k(exact, exact) == 1.0
    assert knn.recall_at_k(np.array([[3, 1, 9], [9, 9, 9]]), exact) == pytest.approx(2 / 6)
    assert knn.recall_at_k(np.array([[9, 9, 9, 3], [0, 2, 3, 9]]), exact) == pytest.approx(4 / 6)


# -- knn ---------------------------------------------------------------------------------------------------------------

def test_knn_auto_is_exact_for_small_maps(small_Q):
    res = knn.knn(small_Q, 5, n_texts=1000)
    assert res.method == "exact" and res.recall is None
    idx0, g0, _ = dense(small_Q, 5)
    np.testing.assert_array_equal(res.idx, idx0)
    np.testing.assert_allclose(res.kl, g0 / 2000, rtol=RTOL)
    assert knn.resolve_method("auto", 4_472, 10_000) == "exact"  # K²·d ≤ EXACT_MAX_FLOPS = 2·10¹¹
    assert knn.resolve_method("auto", 4_473, 10_000) == "approximate"
    assert knn.resolve_method("auto", 10_000, 10_000) == "approximate"
    assert knn.resolve_method("auto", 100_000, 1_000) == "approximate"


def test_knn_approximate_reports_its_recall(lineages):
    Q = lineages[0]
    res = knn.knn(Q, 10, method="approximate", random_state=3, recall_rows=100)
    assert res.method == "approximate" and res.n_components == 64 and res.n_candidates == 50
    assert res.recall >= 0.99 and res.recall_rows.shape == (100,)
    assert 0.5 < res.captured <= 1 and res.mean_distortion_kl > 0
    np.testing.assert_allclose(res.kl, res.sqdist / (2 * Q.shape[1]))


def test_knn_approximate_is_reproducible(small_Q):
    a, b = (knn.knn(small_Q, 5, method="approximate", n_components=4, n_candidates=8, random_state=3, recall_rows=20)
            for _ in range(2))
    np.testing.assert_array_equal(a.idx, b.idx)
    np.testing.assert_array_equal(a.recall_rows, b.recall_rows)
    assert a.recall == b.recall
    assert knn.knn(small_Q, 5, method="approximate", recall_rows=0, random_state=3).recall is None


def test_dense_neighbours_break_ties_by_index_like_knn():
    """geometry.nearest_neighbors keeps the lowest indices among models tied at the k-th value, as knn does."""
    from lmmap.maths import geometry

    X = np.random.default_rng(2).integers(0, 2, size=(40, 6)).astype(float)  # many exact ties
    G = geometry.squared_distances(X)
    idx, vals = geometry.nearest_neighbors(G, 5)
    for i in range(40):
        row = [(G[i, j], j) for j in range(40) if j != i]
        want = sorted(row)[:5]
        assert idx[i].tolist() == [j for _, j in want]
    kidx, _ = knn.exact_knn(X, 5)
    np.testing.assert_array_equal(idx, kidx)

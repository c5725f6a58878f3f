"""Error analysis formulas (SPEC §5; lmmap.maths.errors): the closed forms of Lemma 2, float32 rounding, grids and targets."""

import numpy as np

from synthetic import lowrank_L

from lmmap.maths import errors as me
from lmmap.maths import geometry as core
from lmmap.maths.resampling import importance, resample


def small_q(K=12, N=300, seed=1):
    return core.double_center(lowrank_L(K, N, rank=3, n_families=K, family_spread=1.0, member_spread=0.0, noise=1.0, seed=seed))


def test_fourth_power_sums_match_the_pairwise_definition():
    Q = small_q()
    pi = importance(Q, "kl")
    F = me.fourth_power_sums(Q, pi)
    diff = Q[:, None, :] - Q[None, :, :]  # K×K×N: fine at this size, never in the library
    brute = np.einsum("ijs,s->ij", diff**4, 1 / pi)
    np.testing.assert_allclose(F, brute, rtol=1e-9, atol=1e-9 * brute.max())


def test_lemma2_variance_matches_resampled_distances():
    """Var(g̃_ij) from Lemma 2 against 4,000 direct draws: within 10% (MC error ≈ 2.2% per pair, 6 pairs)."""
    Q = small_q(K=4, N=200)
    pi = importance(Q, "ls")
    n = 50
    rng = np.random.default_rng(2)
    draws = []
    for _ in range(4000):
        u, _, w = resample(pi, n, rng)
        draws.append(core.squared_distances(Q[:, u] * np.sqrt(w)))
    draws = np.array(draws)
    G = core.squared_distances(Q)
    iu = np.triu_indices(4, 1)
    np.testing.assert_allclose(draws.mean(axis=0)[iu], G[iu], rtol=0.03)  # Lemma 1: unbiased
    np.testing.assert_allclose(draws.var(axis=0)[iu], me.distance_variance(Q, pi, n)[iu], rtol=0.10)


def test_auto_precision_falls_back_to_float64_for_near_duplicate_models():
    Q = small_q(K=10, N=2000)
    Q[1] = Q[0] + 1e-6 * np.random.default_rng(0).standard_normal(Q.shape[1])  # a re-upload of model 0
    Q = Q - Q.mean(axis=0)
    precision, rounding = me.choose_precision(Q, "auto", smallest_tau=0.05)
    assert precision == "float64" and rounding > 1e-3


def test_default_grid_is_the_papers_capped_at_N():
    g = me.default_n_grid(10_000)
    assert g.size == 28 and g[0] == 10 and g[-1] == 10_000 and 90 in g and 900 in g and 5000 in g
    g = me.default_n_grid(2500)
    assert g[-1] == 2500 and 2000 in g and 3000 not in g


def test_default_targets_and_grid_scale_with_N():
    # N = 10,000 keeps the paper's values exactly.
    assert me.default_targets(10_000).tolist() == [500, 2500, 5000, 7500]
    assert me.default_n_grid(10_000).tolist() == [*range(10, 100, 10), *range(100, 1000, 100), *range(1000, 10_001, 1000)]
    # Smaller and larger text sets get targets at the same fractions, all below N, and a grid up to N.
    assert me.default_targets(300).tolist() == [15, 75, 150, 230]
    assert me.default_targets(1020).tolist() == [51, 260, 510, 770]
    g = me.default_n_grid(100_000)
    assert g[-1] == 100_000 and 50_000 in g and 9000 in g
    g = me.default_n_grid(300)
    assert g.tolist() == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 200, 300]

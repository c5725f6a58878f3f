"""Importance resampling (SPEC §4; resampling paper §3, Appendix C): statistical tests with fixed seeds.

Tolerances are stated in Monte-Carlo standard errors computed from the exact
variance of Lemma 2, so a test fails only on a real bias, not on noise.
"""

import numpy as np
import pytest

from lmmap.maths import geometry as core
from lmmap.maths import resampling as imp
from lmmap.exceptions import LmmapError


def _test_Q(K=8, N=300, seed=0):
    """A double-centred Q with heavy-tailed, heteroscedastic texts, like real log-likelihoods."""
    rng = np.random.default_rng(seed)
    scale = rng.gamma(1.5, 1.0, size=N)  # some texts matter far more than others
    models = rng.normal(size=(K, 3)) @ rng.normal(size=(3, N))  # low-rank structure between models
    L = -300 + models * scale + rng.standard_t(5, size=(K, N)) * 0.3 * scale
    return core.double_center(L), L


def _brute_fourth(Q):
    diff = Q[:, None, :] - Q[None, :, :]
    return (diff**4).sum(axis=(0, 1))


def _lemma2_variance(Q, pi, n):
    """Var(g̃_ij) = (1/n)(Σ_s δ_s⁴/π_s − g_ij²), δ_s = q_i(x_s) − q_j(x_s), by brute force over pairs."""
    diff2 = (Q[:, None, :] - Q[None, :, :]) ** 2
    g = diff2.sum(axis=2)
    return ((diff2**2 / pi).sum(axis=2) - g**2) / n


# -- the KL closed form ---------------------------------------------------------------------


@pytest.mark.parametrize("K,N,seed", [(2, 5, 0), (5, 40, 1), (13, 17, 2)])
def test_kl_closed_form_equals_brute_force(K, N, seed):
    Q, _ = _test_Q(K, N, seed)
    A = imp.pairwise_fourth_moments(Q)
    np.testing.assert_allclose(A, _brute_fourth(Q), rtol=1e-10)
    np.testing.assert_allclose(imp.kl_scores(Q), np.sqrt(_brute_fourth(Q)), rtol=1e-10)


def test_kl_closed_form_uses_differences_only():
    # A_s depends on differences between models only, so a per-text shift of the column changes nothing.
    Q, _ = _test_Q(6, 30, 3)
    shifted = Q + np.random.default_rng(0).normal(size=(1, 30)) * 100
    np.testing.assert_allclose(imp.pairwise_fourth_moments(shifted), _brute_fourth(Q), rtol=1e-8)


def test_ls_scores_are_squared_column_norms():
    Q, _ = _test_Q(7, 50, 4)
    np.testing.assert_allclose(imp.ls_scores(Q), (Q**2).sum(axis=0), rtol=1e-12)


@pytest.mark.parametrize("method", imp.METHODS)
def test_importance_is_a_distribution(method):
    Q, _ = _test_Q(6, 80, 5)
    pi = imp.importance(Q, method)
    assert pi.shape == (80,)
    assert np.all(pi > 0)
    assert pi.sum() == pytest.approx(1.0, abs=1e-12)
    if method == "uniform":
        np.testing.assert_allclose(pi, 1 / 80)


def test_texts_every_model_scores_alike_get_zero_probability():
    # L = a_i + b_s + E with E = 0 on texts 3 and 10 and each row of E summing to 0: on those
    # texts every model scores exactly as its overall level predicts, so their columns of Q are 0.
    rng = np.random.default_rng(6)
    E = rng.normal(size=(6, 60)) * 10
    alike = [3, 10]
    other = np.setdiff1d(np.arange(60), alike)
    E[:, alike] = 0
    E[:, other] -= E[:, other].mean(axis=1, keepdims=True)
    L = rng.normal(-300, 20, size=(6, 1)) + rng.normal(0, 50, size=(1, 60)) + E
    Q = core.double_center(L)
    for method in ("ls", "kl"):
        pi = imp.importance(Q, method)
        assert pi[3] == 0 and pi[10] == 0
        assert imp.n_zero_importance(pi) == 2
        u, c, w = imp.resample(pi, 5000, 0)
        assert 3 not in u and 10 not in u
    assert imp.n_zero_importance(imp.importance(Q, "uniform")) == 0


def test_importance_refuses_a_map_without_differences():
    Q = np.zeros((4, 10))
    with pytest.raises(LmmapError, match="zero for every text"):
        imp.importance(Q, "ls")
    with pytest.raises(LmmapError, match="unknown importance method"):
        imp.importance(Q, "length")


@pytest.mark.parametrize("bad", [0, -3, 2.5, "10", True, float("nan"), None])
def test_sample_size_must_be_a_positive_integer(bad):
    with pytest.raises(LmmapError, match="positive integer"):
        imp.check_sample_size(bad)


def test_sample_size_accepts_integral_numbers():
    assert imp.check_sample_size(np.int64(7)) == 7
    assert imp.check_sample_size(7.0) == 7


# -- resampling -----------------------------------------------------------------------------


def test_resample_counts_and_weights():
    Q, _ = _test_Q(5, 200, 7)
    pi = imp.importance(Q, "ls")
    u, c, w = imp.resample(pi, 1000, 1)
    assert c.sum() == 1000
    assert np.all(np.diff(u) > 0)
    np.testing.assert_allclose(w, c / (1000 * pi[u]))
    # Same seed, same draw.
    u2, c2, _ = imp.resample(pi, 1000, 1)
    np.testing.assert_array_equal(u, u2)
    np.testing.assert_array_equal(c, c2)


@pytest.mark.parametrize("method", imp.METHODS)
def test_expected_sum_of_weights_is_N(method):
    # E[Σw] = Σ_s E[c_s]/(nπ_s) = N; Var(Σw) = (1/n)(Σ_s 1/π_s − N²). Tolerance: 4 MC standard errors.
    Q, _ = _test_Q(6, 150, 8)
    N, n, R = 150, 60, 4000
    pi = imp.importance(Q, method)
    rng = np.random.default_rng(11)
    sums = np.array([imp.resample(pi, n, rng)[2].sum() for _ in range(R)])
    var = ((1 / pi).sum() - N**2) / n
    se = np.sqrt(var / R) if var > 0 else 1e-9
    assert abs(sums.mean() - N) <= 4 * se + 1e-9 * N
    if method == "uniform":
        np.testing.assert_allclose(sums, N)  # uniform weights c/(n/N) always sum to N


def test_expected_unique_matches_simulation_and_inverts():
    Q, _ = _test_Q(6, 400, 9)
    pi = imp.importance(Q, "ls")
    rng = np.random.default_rng(2)
    d_sim = np.mean([len(imp.resample(pi, 300, rng)[0]) for _ in range(500)])
    # Var(d) ≤ E[d]; the mean of 500 draws is within 4·sqrt(E[d]/500) of E[d].
    Ed = imp.expected_unique(pi, 300)[0]
    assert abs(d_sim - Ed) < 4 * np.sqrt(Ed / 500)
    n = imp.n_for_expected_unique(pi, 100)
    assert imp.expected_unique(pi, n)[0] >= 100 > imp.expected_unique(pi, n - 1)[0]
    with pytest.raises(LmmapError, match="not reachable"):
        imp.n_for_expected_unique(pi, 400)


# -- Lemma 1: unbiasedness ----------------------------------------------------------------


@pytest.mark.parametrize("method", imp.METHODS)
def test_lemma1_resampled_distances_are_unbiased(method):
    """Mean of g̃_ij over R resamples equals g_ij within 4.5 Monte-Carlo standard errors, every pair.

    The MC standard error of the mean is sqrt(Var(g̃_ij)/R) with Var from Lemma 2;
    with 28 pairs × 3 methods a correct estimator passes 4.5σ with probability > 0.9995.
    """
    Q, _ = _test_Q(8, 300, 10)
    n, R = 100, 3000
    pi = imp.importance(Q, method)
    G = core.squared_distances(Q)
    rng = np.random.default_rng(100 + imp.METHODS.index(method))
    acc = np.zeros_like(G)
    for _ in range(R):
        u, c, w = imp.resample(pi, n, rng)
        acc += imp.resampled_squared_distances(Q, u, w)
    mean = acc / R
    se = np.sqrt(np.maximum(_lemma2_variance(Q, pi, n), 0) / R)
    off = ~np.eye(8, dtype=bool)
    z = (mean[off] - G[off]) / se[off]
    assert np.all(np.abs(z) < 4.5), f"{method}: max |z| = {np.abs(z).max():.2f}"
    # And as a whole: the mean squared z-score of correct estimates is ≈ 1 (correlated, so loosely).
    assert np.mean(z**2) < 3.0


@pytest.mark.parametrize("method", imp.METHODS)
def test_lemma1_through_the_subset_map(method):
    """The map built from the subset alone (clip with the stored threshold, w-weighted row centring,
    column centring) is unbiased up to its known O(1/n) term.

    Re-centring the rows with the weighted mean gives g̃ = Σ_t w_t δ_t² − (Σ_t w_t δ_t)²/Σ_t w_t
    (δ relative to the full-map centring), whose expectation is g_ij − b_ij with
    b_ij ≈ (1/(nN)) Σ_s δ_s²/π_s. With n = 400 that is ~0.25% of g_ij; we allow
    4.5 MC standard errors plus 2·b_ij.
    """
    Q, L = _test_Q(6, 200, 12)
    N = L.shape[1]
    thr = core.clip_threshold(L)
    Qfull = core.double_center(core.clip(L, thr))
    G = core.squared_distances(Qfull)
    pi = imp.importance(Qfull, method)
    n, R = 400, 1500
    rng = np.random.default_rng(7)
    acc = np.zeros_like(G)
    for _ in range(R):
        u, c, w = imp.resample(pi, n, rng)
        Qd = core.double_center(core.clip(L[:, u], thr), w)
        acc += core.squared_distances(Qd, w)
    mean = acc / R
    diff2 = (Qfull[:, None, :] - Qfull[None, :, :]) ** 2
    bias = (diff2 / pi).sum(axis=2) / (n * N)
    se = np.sqrt(np.maximum(_lemma2_variance(Qfull, pi, n), 0) / R)
    off = ~np.eye(6, dtype=bool)
    assert np.all(np.abs(mean - G)[off] <= 4.5 * se[off] + 2 * bias[off])
    # The bias is really small: under 1% of every g_ij.
    assert np.all(bias[off] < 0.01 * G[off])


# -- Proposition 1 and LS optimality -------------------------------------------------------


def _candidate_pis(Q, rng):
    """π ∝ anything: uniform, LS, KL, powers of the column norm, random perturbations of each."""
    norms = np.sqrt(imp.ls_scores(Q))
    base = {
        "uniform": imp.importance(Q, "uniform"),
        "ls": imp.importance(Q, "ls"),
        "kl": imp.importance(Q, "kl"),
    }
    for p in (0.5, 1.0, 1.5, 3.0):
        base[f"norm^{p}"] = norms**p / (norms**p).sum()
    cands = dict(base)
    for name, pi in base.items():
        for r in range(5):
            x = pi * rng.lognormal(0, 0.3, size=pi.shape)
            cands[f"{name}*noise{r}"] = x / x.sum()
    return cands


def test_proposition1_kl_minimises_total_distance_variance():
    Q, _ = _test_Q(10, 400, 13)
    n = 200
    cands = _candidate_pis(Q, np.random.default_rng(0))
    errs = {name: imp.distance_error(Q, pi, n) for name, pi in cands.items()}
    best = min(errs, key=errs.get)
    assert best == "kl", f"smallest Σ Var(g̃) from {best}: {errs[best]:.4g} < KL {errs['kl']:.4g}"
    assert errs["kl"] < errs["uniform"] and errs["kl"] < errs["ls"]


def test_ls_minimises_gram_error():
    Q, _ = _test_Q(10, 400, 14)
    n = 200
    cands = _candidate_pis(Q, np.random.default_rng(1))
    errs = {name: imp.gram_error(Q, pi, n) for name, pi in cands.items()}
    best = min(errs, key=errs.get)
    assert best == "ls", f"smallest Gram error from {best}: {errs[best]:.4g} < LS {errs['ls']:.4g}"


def test_closed_form_errors_match_simulation():
    """distance_error and gram_error equal their Monte-Carlo values within 10% (R = 2000: the relative
    MC error of a mean of squared errors with these tails is about 3–5%)."""
    Q, _ = _test_Q(6, 150, 15)
    n, R = 80, 2000
    G = core.squared_distances(Q)
    gram = Q @ Q.T
    for method in imp.METHODS:
        pi = imp.importance(Q, method)
        rng = np.random.default_rng(20)
        sq_d = sq_g = 0.0
        for _ in range(R):
            u, c, w = imp.resample(pi, n, rng)
            sq_d += np.sum((imp.resampled_squared_distances(Q, u, w) - G) ** 2)
            Xw = Q[:, u] * np.sqrt(w)
            sq_g += np.sum((Xw @ Xw.T - gram) ** 2)
        assert sq_d / R == pytest.approx(imp.distance_error(Q, pi, n), rel=0.10), method
        assert sq_g / R == pytest.approx(imp.gram_error(Q, pi, n), rel=0.10), method


def test_distance_error_is_infinite_when_an_informative_text_cannot_be_drawn():
    Q, _ = _test_Q(4, 20, 16)
    pi = np.full(20, 1 / 19)
    pi[5] = 0.0
    assert imp.distance_error(Q, pi, 10) == np.inf


# -- resample sizes that leave no real subset ----------------------------------------------


def test_no_real_subset_note_and_suggestions_scale_with_N():
    from lmmap.maths.resampling import default_resample_size, no_real_subset_note, suggested_resample_size

    assert suggested_resample_size(300) == 75 and suggested_resample_size(10_000) == 2500
    assert default_resample_size(10_000) == 2900 and default_resample_size(1020) == 300
    note = no_real_subset_note(2900, 287, 300)
    assert note == "2900 draws pick 287 of the 300 texts (96%): no real subset; try n=75 (about N/4)"
    assert "as many draws as texts" in no_real_subset_note(10_000, 6320, 10_000)
    assert no_real_subset_note(2900, 2202, 10_000) is None  # the paper's LS setting is a real subset


def test_select_says_when_n_draws_leave_no_real_subset(tmp_path):
    import subprocess
    import sys

    from lmmap.data.store import Store
    from lmmap.data.texts import TextSet

    rng = np.random.default_rng(0)
    N = 300
    store = Store.create(tmp_path / "store", TextSet.from_texts([f"text {i}" for i in range(N)]))
    base = -rng.gamma(3, 50, size=N)
    store.write_models([{"name": f"m{i}", "loglik": np.minimum(base + rng.normal(0, 5, N), -0.01)} for i in range(5)])
    run = lambda n, out: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "lmmap", "select", "--store", str(tmp_path / "store"), "--method", "uniform", "--n", str(n),
         "-o", str(tmp_path / out)], capture_output=True, text=True, timeout=120)
    r = run(2900, "big.json")
    assert r.returncode == 0 and (tmp_path / "big.json").exists()  # says so, and does the rest
    assert "note:" in r.stderr and "2900 draws pick" in r.stderr and "no real subset; try --n 75" in r.stderr
    r = run(60, "small.json")
    assert r.returncode == 0 and "no real subset" not in r.stderr

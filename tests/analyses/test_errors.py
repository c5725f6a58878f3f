"""Error analysis (SPEC §5): the simulation, Table 1, calibration against a known population.

Statistical tests use fixed seeds and state their tolerances. The population
is a low-rank-plus-noise model matrix whose text effects have a heavy-tailed
(log-normal) scale, the situation where importance resampling pays off.
"""

import numpy as np
import pytest

from synthetic import lowrank_L

from lmmap.analyses import errors as ea
from lmmap.exceptions import InputError, LmmapError, LmmapWarning
from lmmap.map import ModelMap
from lmmap.maths import errors as me
from lmmap.maths import geometry as core
from lmmap.maths.resampling import importance, resample

# ----------------------------------------------------------------------------- data


def as_map(L):
    """The map of the rows of ``L`` (no clipping); for an already double-centred Q its Q is Q again."""
    return ModelMap([f"m{i}" for i in range(L.shape[0])], L, threshold=None)


def population(K=30, N0=50_000, rank=3, tail=0.6, seed=0):
    """L† (K×N0): text difficulty + model offsets + scale_s·(low rank + noise), scale_s log-normal."""
    rng = np.random.default_rng(seed)
    scale = rng.lognormal(0.0, tail, N0)
    difficulty = -300 + 50 * rng.standard_normal(N0)
    signal = rng.standard_normal((K, rank)) @ rng.standard_normal((rank, N0))
    return difficulty + rng.normal(0, 5, (K, 1)) + scale * (signal + 0.5 * rng.standard_normal((K, N0)))


@pytest.fixture(scope="module")
def pop():
    L = population()
    N = 2000
    g_dag = (N / L.shape[1]) * core.squared_distances(core.double_center(L))
    return L, g_dag, N


def small_q(K=12, N=300, seed=1):
    return core.double_center(lowrank_L(K, N, rank=3, n_families=K, family_spread=1.0, member_spread=0.0, noise=1.0, seed=seed))


# ----------------------------------------------------------------------------- closed forms against the simulation


@pytest.mark.parametrize("method", ["uniform", "ls", "kl"])
@pytest.mark.parametrize("error", ["relative", "absolute"])
def test_analytic_tau2_agrees_with_simulation_within_mc_error(method, error):
    Q = small_q(K=15, N=400)
    pi = importance(Q, method)
    grid = [20, 100, 400]
    t2, _ = ea.simulate_tau2(Q, pi, grid, R=300, error=error, random_state=3)
    se = t2.std(axis=0, ddof=1) / np.sqrt(t2.shape[0])
    z = (t2.mean(axis=0) - me.analytic_tau2(Q, pi, grid, error)) / se
    # Neighbouring grid points share a path, so |z| < 4 at every point is a loose joint bound.
    assert np.all(np.abs(z) < 4), z


def test_simulated_path_equals_direct_computation():
    """Each grid point of a trial path is exactly the g̃ of its cumulative counts (Gram accumulation is right)."""
    Q = small_q(K=10, N=250)
    pi = importance(Q, "ls")
    grid = np.array([7, 30, 31, 200])
    G = core.squared_distances(Q)
    t2, d = ea.simulate_tau2(Q, pi, grid, R=3, random_state=11, precision="float64")
    for r, ss in enumerate(np.random.SeedSequence(11).spawn(3)):
        rng = np.random.default_rng(ss)
        counts = np.zeros(Q.shape[1], dtype=np.int64)
        prev = 0
        for k, n in enumerate(grid):
            counts += rng.multinomial(n - prev, pi / pi.sum())
            prev = n
            u = np.flatnonzero(counts)
            w = counts[u] / (n * pi[u])
            G_tilde = core.squared_distances(Q[:, u], w)
            assert d[r, k] == u.size
            assert t2[r, k] == pytest.approx(me.mean_square_error(G_tilde, G), rel=1e-9)


def test_float32_gram_changes_tau_far_less_than_its_mc_error():
    Q = small_q(K=40, N=1000)
    pi = importance(Q, "uniform")
    grid = me.default_n_grid(1000)
    t64, _ = ea.simulate_tau2(Q, pi, grid, R=20, random_state=5, precision="float64")
    t32, _ = ea.simulate_tau2(Q, pi, grid, R=20, random_state=5, precision="float32")
    rel = np.abs(t32 - t64) / t64
    assert rel.max() < 1e-4  # same draws: only rounding differs
    precision, rounding = me.choose_precision(Q, "auto", smallest_tau=float(np.sqrt(t64.mean(0).min())))
    assert precision == "float32" and rounding < 1e-5


def test_results_do_not_depend_on_workers():
    Q = small_q()
    a = ea.analyse_errors(as_map(Q), R=6, random_state=4, workers=1, precision="float64")
    b = ea.analyse_errors(as_map(Q), R=6, random_state=4, workers=2, precision="float64")
    for m in a.methods:
        np.testing.assert_array_equal(a.tau2_trials[m], b.tau2_trials[m])
        np.testing.assert_array_equal(a.d_trials[m], b.d_trials[m])


# ----------------------------------------------------------------------------- grids and tables


def test_table1_picks_the_smallest_n_reaching_kappa_and_says_na():
    assert me.first_reaching([0.5, 0.3, 0.2, 0.25], 0.3) == 1
    assert me.first_reaching([0.5, 0.4], 0.3) is None
    assert ea.format_cell(2202.4, 19.2) == "2,202 ± 19"
    assert ea.format_cell(np.nan, np.nan) == "N/A"
    Q = small_q(K=15, N=1000)
    res = ea.analyse_errors(as_map(Q), R=10, targets=[100, 500, 900], random_state=0)
    t = res.texts_needed()
    assert set(t["method"]) == {"uniform", "ls", "kl"} and set(t["d"]) == {100, 500, 900}
    for row in t.itertuples():
        if row.cell == "N/A":
            assert np.all(res.sigma_hat(row.method) > row.kappa_d)
        else:
            k = int(np.flatnonzero(res.n_grid == row.n_prime)[0])
            assert res.sigma_hat(row.method)[k] <= row.kappa_d
            assert np.all(res.sigma_hat(row.method)[:k] > row.kappa_d)
    # Uniform resampling cannot beat direct sampling of d ≥ N/2 texts: σ̂ ≥ sqrt(2)·τ_unif,N ≈ κ̂_{N/2}.
    assert t.set_index(["method", "d"]).loc[("uniform", 900), "cell"] == "N/A"


def test_input_validation_messages():
    Q = small_q()
    with pytest.raises(LmmapError, match="unknown importance method"):
        ea.analyse_errors(as_map(Q), methods=["lss"])
    with pytest.raises(LmmapError, match="positive integers"):
        ea.analyse_errors(as_map(Q), n_grid=[0, 10])
    with pytest.raises(LmmapError, match="R"):
        ea.analyse_errors(as_map(Q), R=1)
    with pytest.warns(LmmapWarning, match="not below N"):  # noted and left N/A, the rest computed
        ea.analyse_errors(as_map(Q), targets=[5000], mode="analytic")
    with pytest.raises(LmmapError, match="one of relative, absolute"):
        ea.analyse_errors(as_map(Q), error="squared")
    with pytest.raises(LmmapError, match="workers"):
        ea.analyse_errors(as_map(Q), workers=0)


# ----------------------------------------------------------------------------- calibration on a population


@pytest.mark.parametrize("method", ["uniform", "ls", "kl"])
def test_sigma_hat_is_calibrated_against_the_population(pop, method):
    """σ̂_{M,n} (estimated from D_N alone) vs the actual RMS relative error of a resampled map against g†.

    20 draws of D_N (N = 2,000 of N0 = 50,000 texts); per draw σ̂² from R = 40
    simulated trials, and 5 resampled maps built as a user would (clip-free
    double centring with w-weighted row means) compared with g†. Tolerance ±25%.
    """
    L, g_dag, N = pop
    n = 500
    rng = np.random.default_rng(10)
    sigma2, actual = [], []
    for rep in range(20):
        idx = rng.choice(L.shape[1], N, replace=False)
        Q = core.double_center(L[:, idx])
        pi_u, pi_m = np.full(N, 1 / N), importance(Q, method)
        tau2_N = ea.simulate_tau2(Q, pi_u, [N], R=40, random_state=rep)[0].mean()
        tau2_n = ea.simulate_tau2(Q, pi_m, [n], R=40, random_state=1000 + rep)[0].mean()
        sigma2.append(tau2_N + tau2_n)
        for _ in range(5):
            u, _, w = resample(pi_m, n, rng)
            G_tilde = core.squared_distances(core.double_center(L[:, idx[u]], w), w)
            actual.append(me.mean_square_error(G_tilde, g_dag))
    ratio = np.sqrt(np.mean(sigma2) / np.mean(actual))
    print(f"{method}: σ̂ / actual RMS error = {ratio:.3f}")
    assert 0.75 <= ratio <= 1.25


def test_scaling_law_of_the_bootstrap_error(pop):
    """τ²_unif,n ≈ (N/n)·τ²_unif,N within ±15% on one D_N.

    The per-trial error is heavy-tailed here, so R = 2,000 trials keep the
    Monte-Carlo error of each τ² under 5% (checked) and the test meaningful.
    """
    L, _, N = pop
    idx = np.random.default_rng(20).choice(L.shape[1], N, replace=False)
    Q = core.double_center(L[:, idx])
    grid = np.array([200, 500, 1000, N])
    t2, _ = ea.simulate_tau2(Q, np.full(N, 1 / N), grid, R=2000, random_state=21, workers=2)
    tau2 = t2.mean(axis=0)
    assert np.all(t2.std(axis=0) / np.sqrt(t2.shape[0]) < 0.05 * tau2)
    predicted = (N / grid) * tau2[-1]
    print("τ²_unif,n / ((N/n)·τ²_unif,N):", np.round(tau2 / predicted, 3))
    np.testing.assert_allclose(tau2, predicted, rtol=0.15)


def test_ls_and_kl_need_fewer_unique_texts_than_uniform(pop):
    """The paper's central claim on the population: the d' ratio to uniform (Table 1) is well below 1."""
    L, _, N = pop
    idx = np.random.default_rng(30).choice(L.shape[1], N, replace=False)
    Q = core.double_center(L[:, idx])
    res = ea.analyse_errors(as_map(Q), R=30, targets=[250, 500, 800], random_state=31)
    table = res.texts_needed()
    ratio = res.ratio_to_uniform(table)
    print("\n" + table.pivot(index="method", columns="d", values="cell").to_string())
    print("d' ratio to uniform:\n" + ratio.round(3).to_string())
    assert ratio.notna().all().all()
    assert (ratio.to_numpy() < 0.8).all()
    # The closed form tells the same story.
    ratio_an = res.ratio_to_uniform(res.texts_needed(source="analytic"))
    assert (ratio_an.to_numpy() < 0.8).all()


# ----------------------------------------------------------------------------- defaults that scale with N


def test_table1_on_300_texts_has_rows_for_every_default_target():
    # The demo's 300 texts used to give an empty Table 1 (all targets ≥ N) and a crash downstream.
    Q = small_q(K=12, N=300)
    res = ea.analyse_errors(as_map(Q), R=5, mode="analytic")
    t = res.texts_needed(warn=False)
    assert sorted(set(t["d"])) == [15, 75, 150, 230]
    assert len(t) == 3 * 4 and set(t["method"]) == {"uniform", "ls", "kl"}
    assert (t["cell"] != "N/A").any()


def test_targets_not_below_N_are_noted_na_and_the_rest_computed():
    Q = small_q(K=12, N=300)
    with pytest.warns(LmmapWarning, match=r"d = 5,000 is not below N = 300.*targets=15,75,150,230"):
        res = ea.analyse_errors(as_map(Q), R=5, mode="analytic", targets=[100, 5000])
    with pytest.warns(LmmapWarning, match="not below N"):
        t = res.texts_needed()
    by_d = t.set_index(["method", "d"])
    assert (by_d.xs(5000, level="d")["cell"] == "N/A").all()
    assert (by_d.xs(5000, level="d")["note"] == "d ≥ N = 300").all()
    assert by_d.xs(100, level="d")["n_prime"].notna().any()  # the reachable target is computed


def test_texts_needed_never_returns_an_empty_table_silently():
    res = ea.analyse_errors(as_map(small_q(K=12, N=300)), R=5, mode="analytic")
    res.targets = np.zeros(0, dtype=np.int64)
    with pytest.raises(InputError, match="Table 1 has no target"):
        res.texts_needed()
    # Targets asked for but all ≥ N: rows that say N/A and why, not an empty table.
    with pytest.warns(LmmapWarning):
        t = res.texts_needed(targets=[400, 900])
    assert len(t) == 6 and (t["cell"] == "N/A").all() and t["note"].str.contains("d ≥ N").all()


def test_unreached_cells_say_why():
    Q = small_q(K=15, N=1000)
    res = ea.analyse_errors(as_map(Q), R=10, targets=[900], random_state=0)
    with pytest.warns(LmmapWarning, match=r"as accurate as d texts drawn at random \(κ̂_d\); resample sizes \(n_grid\)"):
        t = res.texts_needed()
    row = t.set_index(["method", "d"]).loc[("uniform", 900)]
    assert row["cell"] == "N/A" and "no n" in row["note"]


def test_analyse_errors_takes_a_full_map_and_records_its_seed(tmp_path):
    from lmmap import report

    Q = small_q(K=12, N=300)
    with pytest.raises(InputError, match="ModelMap"):
        ea.analyse_errors(Q, R=5, mode="analytic")
    subset_map = ModelMap([f"m{i}" for i in range(12)], Q[:, :50], threshold=None, w=np.full(50, 6.0), n_texts=300)
    with pytest.raises(InputError, match="full text set"):
        ea.analyse_errors(subset_map, R=5, mode="analytic")
    # A Generator draws the seed once; the result records it, and that int gives the same draws.
    res = ea.analyse_errors(as_map(Q), R=4, targets=[100], random_state=np.random.default_rng(7))
    again = ea.analyse_errors(as_map(Q), R=4, targets=[100], random_state=res.random_state)
    np.testing.assert_array_equal(res.tau2_trials["kl"], again.tau2_trials["kl"])
    paths = report.write(res, tmp_path)
    for name in ("errors.csv", "kappa.csv", "table1.csv", "table1_analytic.csv", "figure2.png", "figure2.html", "errors.json"):
        assert paths[name].stat().st_size > 0
    import json

    info = json.loads(paths["errors.json"].read_text())
    assert info["seed"] == res.random_state and "provenance" in info

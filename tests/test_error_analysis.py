"""Error analysis (SPEC §5): closed forms, the simulation, calibration against a known population.

Statistical tests use fixed seeds and state their tolerances. The population
is a low-rank-plus-noise model matrix whose text effects have a heavy-tailed
(log-normal) scale, the situation where importance resampling pays off.
"""

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lmmap.maths import geometry as core
from lmmap.analyses import errors as ea
from lmmap.exceptions import InputError, LmmapError, LmmapWarning
from lmmap.maths.resampling import importance, resample

# ----------------------------------------------------------------------------- data


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
    g_dag = (N / L.shape[1]) * ea.squared_distances(core.double_center(L))
    return L, g_dag, N


def small_q(K=12, N=300, seed=1):
    rng = np.random.default_rng(seed)
    L = rng.standard_normal((K, 3)) @ rng.standard_normal((3, N)) * rng.lognormal(0, 0.5, N) + rng.standard_normal((K, N))
    return core.double_center(L)


# ----------------------------------------------------------------------------- closed forms


def test_fourth_power_sums_match_the_pairwise_definition():
    Q = small_q()
    pi = importance(Q, "kl")
    F = ea.fourth_power_sums(Q, pi)
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
        draws.append(ea.squared_distances(Q[:, u] * np.sqrt(w)))
    draws = np.array(draws)
    G = ea.squared_distances(Q)
    iu = np.triu_indices(4, 1)
    np.testing.assert_allclose(draws.mean(axis=0)[iu], G[iu], rtol=0.03)  # Lemma 1: unbiased
    np.testing.assert_allclose(draws.var(axis=0)[iu], ea.distance_variance(Q, pi, n)[iu], rtol=0.10)


@pytest.mark.parametrize("method", ["uniform", "ls", "kl"])
@pytest.mark.parametrize("error", ["relative", "absolute"])
def test_analytic_tau2_agrees_with_simulation_within_mc_error(method, error):
    Q = small_q(K=15, N=400)
    pi = importance(Q, method)
    grid = [20, 100, 400]
    t2, _ = ea.simulate_tau2(Q, pi, grid, R=300, error=error, seed=3)
    se = t2.std(axis=0, ddof=1) / np.sqrt(t2.shape[0])
    z = (t2.mean(axis=0) - ea.analytic_tau2(Q, pi, grid, error)) / se
    # Neighbouring grid points share a path, so |z| < 4 at every point is a loose joint bound.
    assert np.all(np.abs(z) < 4), z


def test_simulated_path_equals_direct_computation():
    """Each grid point of a trial path is exactly the g̃ of its cumulative counts (Gram accumulation is right)."""
    Q = small_q(K=10, N=250)
    pi = importance(Q, "ls")
    grid = np.array([7, 30, 31, 200])
    G = ea.squared_distances(Q)
    t2, d = ea.simulate_tau2(Q, pi, grid, R=3, seed=11, precision="float64")
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
            assert t2[r, k] == pytest.approx(ea.mean_square_error(G_tilde, G), rel=1e-9)


def test_float32_gram_changes_tau_far_less_than_its_mc_error():
    Q = small_q(K=40, N=1000)
    pi = importance(Q, "uniform")
    grid = ea.default_n_grid(1000)
    t64, _ = ea.simulate_tau2(Q, pi, grid, R=20, seed=5, precision="float64")
    t32, _ = ea.simulate_tau2(Q, pi, grid, R=20, seed=5, precision="float32")
    rel = np.abs(t32 - t64) / t64
    assert rel.max() < 1e-4  # same draws: only rounding differs
    precision, rounding = ea.choose_precision(Q, "auto", smallest_tau=float(np.sqrt(t64.mean(0).min())))
    assert precision == "float32" and rounding < 1e-5


def test_auto_precision_falls_back_to_float64_for_near_duplicate_models():
    Q = small_q(K=10, N=2000)
    Q[1] = Q[0] + 1e-6 * np.random.default_rng(0).standard_normal(Q.shape[1])  # a re-upload of model 0
    Q = Q - Q.mean(axis=0)
    precision, rounding = ea.choose_precision(Q, "auto", smallest_tau=0.05)
    assert precision == "float64" and rounding > 1e-3


def test_results_do_not_depend_on_workers():
    Q = small_q()
    a = ea.analyse_errors(Q, R=6, seed=4, workers=1, precision="float64")
    b = ea.analyse_errors(Q, R=6, seed=4, workers=2, precision="float64")
    for m in a.methods:
        np.testing.assert_array_equal(a.tau2_trials[m], b.tau2_trials[m])
        np.testing.assert_array_equal(a.d_trials[m], b.d_trials[m])


# ----------------------------------------------------------------------------- grids and tables


def test_default_grid_is_the_papers_capped_at_N():
    g = ea.default_n_grid(10_000)
    assert g.size == 28 and g[0] == 10 and g[-1] == 10_000 and 90 in g and 900 in g and 5000 in g
    g = ea.default_n_grid(2500)
    assert g[-1] == 2500 and 2000 in g and 3000 not in g


def test_table1_picks_the_smallest_n_reaching_kappa_and_says_na():
    assert ea.first_reaching([0.5, 0.3, 0.2, 0.25], 0.3) == 1
    assert ea.first_reaching([0.5, 0.4], 0.3) is None
    assert ea.format_cell(2202.4, 19.2) == "2,202 ± 19"
    assert ea.format_cell(np.nan, np.nan) == "N/A"
    Q = small_q(K=15, N=1000)
    res = ea.analyse_errors(Q, R=10, targets=[100, 500, 900], seed=0)
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
        ea.analyse_errors(Q, methods=["lss"])
    with pytest.raises(LmmapError, match="positive integers"):
        ea.analyse_errors(Q, n_grid=[0, 10])
    with pytest.raises(LmmapError, match="R"):
        ea.analyse_errors(Q, R=1)
    with pytest.warns(LmmapWarning, match="not below N"):  # noted and left N/A, the rest computed
        ea.analyse_errors(Q, targets=[5000], mode="analytic")
    with pytest.raises(LmmapError, match="relative or absolute"):
        ea.analyse_errors(Q, error="squared")
    with pytest.raises(LmmapError, match="workers"):
        ea.analyse_errors(Q, workers=0)


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
        tau2_N = ea.simulate_tau2(Q, pi_u, [N], R=40, seed=rep)[0].mean()
        tau2_n = ea.simulate_tau2(Q, pi_m, [n], R=40, seed=1000 + rep)[0].mean()
        sigma2.append(tau2_N + tau2_n)
        for _ in range(5):
            u, _, w = resample(pi_m, n, rng)
            G_tilde = core.squared_distances(core.double_center(L[:, idx[u]], w), w)
            actual.append(ea.mean_square_error(G_tilde, g_dag))
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
    t2, _ = ea.simulate_tau2(Q, np.full(N, 1 / N), grid, R=2000, seed=21, workers=2)
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
    res = ea.analyse_errors(Q, R=30, targets=[250, 500, 800], seed=31)
    table = res.texts_needed()
    ratio = res.ratio_to_uniform(table)
    print("\n" + table.pivot(index="method", columns="d", values="cell").to_string())
    print("d' ratio to uniform:\n" + ratio.round(3).to_string())
    assert ratio.notna().all().all()
    assert (ratio.to_numpy() < 0.8).all()
    # The closed form tells the same story.
    ratio_an = res.ratio_to_uniform(res.texts_needed(source="analytic"))
    assert (ratio_an.to_numpy() < 0.8).all()


# ----------------------------------------------------------------------------- CLI


def _store(tmp_path, K=20, N=600):
    from lmmap.data.formats import write_vectors
    from lmmap.data.transfer import import_vectors
    from lmmap.data.texts import TextSet

    rng = np.random.default_rng(0)
    s = rng.lognormal(0, 0.5, N)
    L = np.minimum(-300 + 50 * rng.standard_normal(N) + s * (5 * rng.standard_normal((K, 3)) @ rng.standard_normal((3, N)) + 2 * rng.standard_normal((K, N))), -0.01)
    names = [f"fam{i % 3}/m{i}" for i in range(K)]
    ts = TextSet.from_texts([f"text number {i}" for i in range(N)])
    ts.save(tmp_path / "texts.jsonl")
    write_vectors(tmp_path / "L.npz", names, L, text_set_id=ts.identity)
    import_vectors(tmp_path / "store", tmp_path / "L.npz", texts=tmp_path / "texts.jsonl")
    return tmp_path / "store"


def test_errors_command_writes_tables_and_figure(tmp_path):
    from lmmap.cli import app

    store = _store(tmp_path)
    out = tmp_path / "err"
    args = ["errors", "--store", store, "-o", out, "--R", "5", "--n-grid", "10:90:20,100:500:200", "--targets", "300", "--workers", "2"]
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for name in ("errors.csv", "kappa.csv", "table1.csv", "table1_analytic.csv", "figure2.png", "figure2.html", "errors.json"):
        assert (out / name).stat().st_size > 0
    curves = pd.read_csv(out / "errors.csv")
    assert set(curves["method"]) == {"uniform", "ls", "kl"}
    # grid + N + target: 10,30,50,70,90,100,300,500,600
    assert sorted(curves["n"].unique()) == [10, 30, 50, 70, 90, 100, 300, 500, 600]
    assert (curves["sigma_hat"] >= curves["tau"]).all()
    table = pd.read_csv(out / "table1.csv")
    assert set(table["d"]) == {300}  # --targets gives the targets (no fixed 500 added)

    bad = CliRunner().invoke(app, ["errors", "--store", str(store), "-o", str(out), "--n-grid", "10:x"])
    assert bad.exit_code != 0 and "start:stop:step" in str(bad.exception)


# ----------------------------------------------------------------------------- defaults that scale with N


def test_default_targets_and_grid_scale_with_N():
    # N = 10,000 keeps the paper's values exactly.
    assert ea.default_targets(10_000).tolist() == [500, 2500, 5000, 7500]
    assert ea.default_n_grid(10_000).tolist() == [*range(10, 100, 10), *range(100, 1000, 100), *range(1000, 10_001, 1000)]
    # Smaller and larger text sets get targets at the same fractions, all below N, and a grid up to N.
    assert ea.default_targets(300).tolist() == [15, 75, 150, 230]
    assert ea.default_targets(1020).tolist() == [51, 260, 510, 770]
    g = ea.default_n_grid(100_000)
    assert g[-1] == 100_000 and 50_000 in g and 9000 in g
    g = ea.default_n_grid(300)
    assert g.tolist() == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 200, 300]


def test_table1_on_300_texts_has_rows_for_every_default_target():
    # The demo's 300 texts used to give an empty Table 1 (all targets ≥ N) and a crash downstream.
    Q = small_q(K=12, N=300)
    res = ea.analyse_errors(Q, R=5, mode="analytic")
    t = res.texts_needed(warn=False)
    assert sorted(set(t["d"])) == [15, 75, 150, 230]
    assert len(t) == 3 * 4 and set(t["method"]) == {"uniform", "ls", "kl"}
    assert (t["cell"] != "N/A").any()


def test_targets_not_below_N_are_noted_na_and_the_rest_computed():
    Q = small_q(K=12, N=300)
    with pytest.warns(LmmapWarning, match=r"d = 5,000 is not below N = 300.*--targets 15,75,150,230"):
        res = ea.analyse_errors(Q, R=5, mode="analytic", targets=[100, 5000])
    with pytest.warns(LmmapWarning, match="not below N"):
        t = res.texts_needed()
    by_d = t.set_index(["method", "d"])
    assert (by_d.xs(5000, level="d")["cell"] == "N/A").all()
    assert (by_d.xs(5000, level="d")["note"] == "d ≥ N = 300").all()
    assert by_d.xs(100, level="d")["n_prime"].notna().any()  # the reachable target is computed


def test_texts_needed_never_returns_an_empty_table_silently():
    res = ea.analyse_errors(small_q(K=12, N=300), R=5, mode="analytic")
    res.targets = np.zeros(0, dtype=np.int64)
    with pytest.raises(InputError, match="Table 1 has no target"):
        res.texts_needed()
    # Targets asked for but all ≥ N: rows that say N/A and why, not an empty table.
    with pytest.warns(LmmapWarning):
        t = res.texts_needed(targets=[400, 900])
    assert len(t) == 6 and (t["cell"] == "N/A").all() and t["note"].str.contains("d ≥ N").all()


def test_unreached_cells_say_why():
    Q = small_q(K=15, N=1000)
    res = ea.analyse_errors(Q, R=10, targets=[900], seed=0)
    with pytest.warns(LmmapWarning, match="reaches κ̂_d"):
        t = res.texts_needed()
    row = t.set_index(["method", "d"]).loc[("uniform", 900)]
    assert row["cell"] == "N/A" and "no n" in row["note"]


def test_errors_and_stability_commands_on_300_texts(tmp_path):
    """`lmmap errors` crashed (KeyError 'method') on the demo's 300 texts; `stability --n 2900` gave no subset silently."""
    import subprocess
    import sys

    store = _store(tmp_path, K=12, N=300)
    run = lambda *a: subprocess.run([sys.executable, "-m", "lmmap", *map(str, a)], capture_output=True, text=True, timeout=300)  # noqa: E731
    r = run("errors", "--store", store, "-o", tmp_path / "err", "--R", "5")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    t = pd.read_csv(tmp_path / "err" / "table1.csv")
    assert sorted(set(t["d"])) == [15, 75, 150, 230]
    r = run("errors", "--store", store, "-o", tmp_path / "err2", "--R", "5", "--mode", "analytic", "--targets", "100,5000")
    assert r.returncode == 0, r.stderr
    assert "note:" in r.stderr and "5,000 is not below N = 300" in r.stderr
    r = run("errors", "--store", store, "-o", tmp_path / "err3", "--R", "1")
    assert r.returncode == 1 and "R must be ≥ 2" in r.stderr and "Traceback" not in r.stderr
    r = run("stability", "--store", store, "-o", tmp_path / "stab", "--n", "2900", "--R", "2", "--embedding", "pca")
    assert r.returncode == 0, r.stderr
    assert "n=2900 draws pick about" in r.stderr and "of the 300 texts per map" in r.stderr and "try --n ~75" in r.stderr

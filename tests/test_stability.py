"""Map stability (SPEC §6): Procrustes alignment, ellipses, Bias²/Variance/MSE, resampled maps."""

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lmmap.maths import geometry as core
from lmmap.analyses import stability as st
from lmmap.exceptions import LmmapError


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


def clustered_L(K=30, N=600, seed=5):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, 3)) * 3
    U = centres[np.arange(K) % 5] + 0.3 * rng.normal(size=(K, 3))
    s = rng.lognormal(0, 0.5, N)
    return -300 + s * (U @ rng.normal(size=(3, N)) + rng.normal(size=(K, N)))


def test_more_texts_give_a_more_stable_map():
    """Median MSE over models falls with n (PCA maps, R = 20); results do not depend on workers."""
    L = clustered_L()
    small = st.map_stability(L, "uniform", 40, R=20, embedding="pca", seed=1)
    large = st.map_stability(L, "uniform", 2400, R=20, embedding="pca", seed=1, workers=2)
    assert large.medians()["mse"] < 0.5 * small.medians()["mse"]
    again = st.map_stability(L, "uniform", 2400, R=20, embedding="pca", seed=1, workers=1)
    np.testing.assert_allclose(again.aligned, large.aligned, rtol=1e-9, atol=1e-9)
    assert small.aligned.shape == (20, 30, 2) and np.all(small.d <= 40)
    t3 = st.table3({"small": small, "large": large})
    assert list(t3["setting"]) == ["small", "large"]
    assert t3.loc[1, "mse"] == pytest.approx(large.medians()["mse"])


def test_tsne_stability_runs_and_reports_per_model_rows():
    L = clustered_L(K=25, N=300)
    res = st.map_stability(L, "ls", 200, R=3, seed=0, perplexity=8, n_iter=100)
    df = res.per_model([f"m{i}" for i in range(25)])
    assert len(df) == 25 and np.all(df["sd_major"] >= df["sd_minor"])
    np.testing.assert_allclose(df["mse"], df["bias2"] + df["variance"])


def test_validation():
    L = clustered_L(K=10, N=50)
    with pytest.raises(LmmapError, match="R"):
        st.map_stability(L, "ls", 20, R=1, embedding="pca")
    with pytest.raises(LmmapError, match="unknown importance method"):
        st.map_stability(L, "lss", 20, R=2, embedding="pca")
    with pytest.raises(LmmapError, match="reference"):
        st.map_stability(L, "ls", 20, R=2, embedding="pca", reference=np.zeros((9, 2)))
    with pytest.raises(LmmapError, match="shape"):
        st.align(np.zeros((5, 2)), np.zeros((6, 2)))


def test_stability_command_compares_two_settings(tmp_path):
    from lmmap.cli import app
    from lmmap.data.formats import write_vectors
    from lmmap.data.transfer import import_vectors
    from lmmap.data.texts import TextSet

    L = np.minimum(clustered_L(K=20, N=300), -0.01)
    names = [f"fam{i % 5}/m{i}" for i in range(20)]
    ts = TextSet.from_texts([f"text {i}" for i in range(300)])
    ts.save(tmp_path / "texts.jsonl")
    write_vectors(tmp_path / "L.npz", names, L, text_set_id=ts.identity)
    import_vectors(tmp_path / "store", tmp_path / "L.npz", texts=tmp_path / "texts.jsonl")
    out = tmp_path / "stab"
    args = ["stability", "--store", tmp_path / "store", "-o", out, "--n", "100", "--R", "3",
            "--compare", "uniform:300", "--embedding", "pca", "--workers", "2"]  # fmt: skip
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    t3 = pd.read_csv(out / "table3.csv")
    assert list(t3["setting"]) == ["ls n=100", "uniform n=300"]
    per_model = pd.read_csv(out / "stability_models.csv")
    assert len(per_model) == 40 and set(per_model["model"]) == set(names)
    for name in ("reference.csv", "stability_ls-n100.png", "stability_ls-n100.html", "stability_uniform-n300.png", "stability.json"):
        assert (out / name).stat().st_size > 0
    bad = CliRunner().invoke(app, ["stability", "--store", str(tmp_path / "store"), "-o", str(out), "--compare", "uniform"])
    assert bad.exit_code != 0 and "METHOD:N" in str(bad.exception)


def test_stability_maps_name_every_model_and_auto_is_mds_for_small_maps(tmp_path):
    """Ellipse maps are labelled (≤ 60 models) and load plotly.js once for the whole report."""
    from synthetic import lineage_L
    from plotly_json import plotly_figure

    from lmmap.cli.errors_cmds import write_stability_report

    names, L, meta = lineage_L(N=300, n_lineages=3, seed=2)
    thr = core.clip_threshold(L)
    results = {
        f"{m} n=120": st.map_stability(L, m, 120, R=4, threshold=thr, embedding="auto", seed=1) for m in ("ls", "uniform")
    }
    mds_ref = st.reference_map(core.double_center(core.clip(L, thr)), "mds")
    np.testing.assert_allclose(results["ls n=120"].reference, st.centre(mds_ref), atol=1e-9)
    paths = write_stability_report(results, names, list(meta["model_type"]), tmp_path, "model_type")
    htmls = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".html")
    assert len(htmls) == 2 and (tmp_path / "plotly.min.js").exists()
    for name in htmls:
        data, _ = plotly_figure(tmp_path / name)
        shown = [v for t in data if t.get("legendgroup") and t["mode"] == "markers+text" for v in t["text"]]
        assert sorted(shown) == sorted(names)
        assert (tmp_path / name).stat().st_size < 150_000
    assert all(paths[p.replace(".html", ".png")].exists() for p in htmls)

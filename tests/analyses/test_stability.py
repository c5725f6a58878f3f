"""Map stability (SPEC §6): resampled maps of a ModelMap, Table 3, the report's ellipse maps."""

import numpy as np
import pytest

from lmmap.analyses import stability as st
from lmmap.exceptions import LmmapError
from lmmap.map import ModelMap
from lmmap.maths import geometry as core
from lmmap.maths.stability import centre
from synthetic import lowrank_L


def as_map(L, threshold=None):
    return ModelMap([f"m{i}" for i in range(L.shape[0])], L, threshold=threshold)


def clustered_L(K=30, N=600, seed=5):
    return lowrank_L(K, N, rank=3, n_families=5, family_spread=3.0, member_spread=0.3, noise=1.0, seed=seed)


def test_more_texts_give_a_more_stable_map():
    """Median MSE over models falls with n (PCA maps, R = 20); results do not depend on workers."""
    L = clustered_L()
    mm = as_map(L)
    small = st.map_stability(mm, method="uniform", n=40, R=20, embedding="pca", random_state=1)
    large = st.map_stability(mm, method="uniform", n=2400, R=20, embedding="pca", random_state=1, workers=2)
    assert large.medians()["mse"] < 0.5 * small.medians()["mse"]
    again = st.map_stability(mm, method="uniform", n=2400, R=20, embedding="pca", random_state=1, workers=1)
    np.testing.assert_allclose(again.aligned, large.aligned, rtol=1e-9, atol=1e-9)
    assert small.aligned.shape == (20, 30, 2) and np.all(small.d <= 40)
    t3 = st.table3({"small": small, "large": large})
    assert list(t3["setting"]) == ["small", "large"]
    assert t3.loc[1, "mse"] == pytest.approx(large.medians()["mse"])


def test_tsne_stability_runs_and_reports_per_model_rows():
    L = clustered_L(K=25, N=300)
    res = st.map_stability(as_map(L), method="ls", n=200, R=3, random_state=0, perplexity=8, n_iter=100)
    df = res.per_model([f"m{i}" for i in range(25)])
    assert df["model"].tolist() == res.per_model()["model"].tolist()  # the map's names by default
    assert len(df) == 25 and np.all(df["sd_major"] >= df["sd_minor"])
    np.testing.assert_allclose(df["mse"], df["bias2"] + df["variance"])


def test_validation():
    mm = as_map(clustered_L(K=10, N=50))
    with pytest.raises(LmmapError, match="R"):
        st.map_stability(mm, method="ls", n=20, R=1, embedding="pca")
    with pytest.raises(LmmapError, match="unknown importance method"):
        st.map_stability(mm, method="lss", n=20, R=2, embedding="pca")
    with pytest.raises(LmmapError, match="reference"):
        st.map_stability(mm, method="ls", n=20, R=2, embedding="pca", reference=np.zeros((9, 2)))
    with pytest.raises(LmmapError, match="ModelMap"):
        st.map_stability(clustered_L(K=10, N=50), method="ls", n=20, R=2, embedding="pca")


def test_stability_maps_name_every_model_and_auto_is_mds_for_small_maps(tmp_path):
    """Ellipse maps are labelled (≤ 60 models) and load plotly.js once for the whole report."""
    from synthetic import lineage_L
    from plotly_json import plotly_figure

    from lmmap import report

    names, L, meta = lineage_L(N=300, n_lineages=3, seed=2)
    thr = core.clip_threshold(L)
    mm = ModelMap(names, L, threshold=thr, metadata=meta)
    result = st.compare_stability(mm, [("ls", 120), ("uniform", 120)], R=4, embedding="auto", random_state=1)
    results = result.results
    assert list(results) == ["ls n=120", "uniform n=120"]
    mds_ref = st.reference_map(core.double_center(core.clip(L, thr)), "mds")
    np.testing.assert_allclose(results["ls n=120"].reference, centre(mds_ref), atol=1e-9)
    # Each setting alone gives the same numbers as in the comparison (one shared reference, the same seed).
    alone = st.map_stability(mm, method="uniform", n=120, R=4, embedding="auto", random_state=1)
    np.testing.assert_allclose(alone.aligned, results["uniform n=120"].aligned, atol=1e-12)
    paths = report.write(result, tmp_path, color_by="model_type")
    assert {"reference.csv", "table3.csv", "stability_models.csv", "stability.json"} <= set(paths)
    htmls = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".html")
    assert len(htmls) == 2 and (tmp_path / "plotly.min.js").exists()
    for name in htmls:
        data, _ = plotly_figure(tmp_path / name)
        shown = [v for t in data if t.get("legendgroup") and t["mode"] == "markers+text" for v in t["text"]]
        assert sorted(shown) == sorted(names)
        assert (tmp_path / name).stat().st_size < 150_000
    assert all(paths[p.replace(".html", ".png")].exists() for p in htmls)

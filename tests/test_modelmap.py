"""ModelMap: the Python API over the numeric core."""

import numpy as np
import pandas as pd
import pytest

from lmmap import ModelMap, core
from lmmap.exceptions import LmmapError


def clustered_L(K_per=4, N=60, seed=0):
    """Three families whose members share a per-family log-likelihood profile."""
    rng = np.random.default_rng(seed)
    base = -rng.gamma(3.0, 100.0, size=N)
    rows, names, fams = [], [], []
    for f in range(3):
        fam = base + rng.normal(0, 30, size=N)
        for m in range(K_per):
            rows.append(fam + rng.normal(0, 3, size=N) - rng.uniform(0, 5))
            names.append(f"fam{f}/m{m}")
            fams.append(f"fam{f}")
    return names, np.minimum(np.array(rows), -0.01), fams


def test_kl_and_neighbors_match_core():
    names, L, fams = clustered_L()
    mm = ModelMap(names, L)
    thr = core.clip_threshold(L)
    assert mm.threshold == pytest.approx(thr)
    expected = core.kl_from_squared_distances(core.squared_distances(core.double_center(np.maximum(L, thr))), L.shape[1])
    np.testing.assert_allclose(mm.kl(), expected)
    nb = mm.neighbors("fam1/m0", k=3)
    assert list(nb["neighbor"]) and all(n.startswith("fam1/") for n in nb["neighbor"])
    assert (np.diff(nb["kl"]) >= 0).all()
    assert mm.kl_frame().loc["fam0/m1", "fam2/m3"] == pytest.approx(mm.kl()[1, 11])


def test_stored_threshold_is_reused_and_clipping_can_be_off():
    names, L, _ = clustered_L()
    assert ModelMap(names, L, threshold=-100.0).L.min() == L.min()  # L itself is kept
    assert ModelMap(names, L, threshold=-100.0).threshold == -100.0
    off = ModelMap(names, L, threshold=None)
    np.testing.assert_allclose(off.Q, core.double_center(L))


def test_weighted_map_uses_full_N_for_kl():
    names, L, _ = clustered_L()
    w = np.full(L.shape[1], 2.0)
    mm = ModelMap(names, L, w=w, n_texts=2 * L.shape[1])
    np.testing.assert_allclose(mm.kl(), ModelMap(names, L).kl(), rtol=1e-10)


def test_bad_input():
    names, L, _ = clustered_L()
    with pytest.raises(LmmapError, match="at least 3 models"):
        ModelMap(names[:2], L[:2])
    with pytest.raises(LmmapError, match="duplicate model name 'fam0/m0'"):
        ModelMap(["fam0/m0"] * len(names), L)
    L2 = L.copy()
    L2[4, 7] = np.inf
    with pytest.raises(ValueError, match="model 'fam1/m0'"):
        ModelMap(names, L2)
    with pytest.raises(LmmapError, match="not in this map"):
        ModelMap(names, L).neighbors("nope")


def test_write_outputs(tmp_path):
    names, L, fams = clustered_L()
    names[0] = "<b>evil</b>"
    meta = pd.DataFrame({"model_type": fams}, index=pd.Index(names, name="model"))
    mm = ModelMap(names, L, metadata=meta)
    paths = mm.write(tmp_path, embedding="pca", k=3)
    kl = pd.read_csv(paths["kl.csv"], index_col=0)
    assert kl.index.name == "model" and list(kl.index) == names and list(kl.columns) == names
    np.testing.assert_allclose(kl.to_numpy(), mm.kl(), rtol=1e-12)
    coords = pd.read_csv(paths["coords.csv"])
    assert list(coords.columns) == ["model", "x", "y"] and len(coords) == 12
    nb = pd.read_csv(paths["neighbors.csv"])
    assert len(nb) == 12 * 3 and set(nb.columns) >= {"model", "rank", "neighbor", "kl"}
    html = paths["map.html"].read_text()
    assert "<b>evil" not in html and "&lt;b&gt;evil&lt;" in html
    assert paths["map.png"].stat().st_size > 10_000

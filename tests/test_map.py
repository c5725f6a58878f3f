"""ModelMap: the Python API over the numeric core."""

import json

import numpy as np
import pandas as pd
import pytest

from lmmap import ModelMap, report
from lmmap.analyses.map import build_map
from lmmap.report.map import map_edges
from lmmap.maths import geometry as core
from lmmap.exceptions import LmmapError
from plotly_json import plotly_array, plotly_figure


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
    paths = report.write(build_map(mm, embedding="pca", k=3), tmp_path)
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


# -- the picture: embedding, lines, lineage, labels -----------------------------------------------


def lineage_map(**kw):
    from synthetic import lineage_L

    names, L, meta = lineage_L(N=400, seed=0, **kw)
    return names, L, meta


def test_small_map_defaults_to_mds_and_its_title_says_what_the_map_is(tmp_path):
    names, L, meta = lineage_map()
    mm = ModelMap(names, L, metadata=meta)
    paths = report.write(build_map(mm), tmp_path, color_by="family")
    info = json.loads(paths["map.json"].read_text())
    assert info["embedding"] == "mds" and info["embedding_requested"] == "auto" and info["edges"] == "lineage"
    np.testing.assert_allclose(pd.read_csv(paths["coords.csv"])[["x", "y"]].to_numpy(), mm.embed("mds"))
    data, layout = plotly_figure(paths["map.html"])
    title = layout["title"]["text"]
    assert f"{mm.K} models, 400 texts" in title and "classical MDS of KL" in title
    assert f"clipped at {mm.threshold:.4g} (2nd percentile)" in title
    assert layout["xaxis"]["title"]["text"] == "MDS 1"
    points = [t for t in data if t.get("legendgroup")]
    # Hover names the --color-by column, and every model is labelled on the page.
    assert all("family: %{customdata[1]}" in t["hovertemplate"] for t in points)
    assert sorted(v for t in points for v in t["text"]) == sorted(names)
    assert (tmp_path / "plotly.min.js").exists() and paths["map.html"].stat().st_size < 100_000


def test_lineage_table_compares_each_declared_base_with_the_nearest_model_by_kl():
    names, L, meta = lineage_map()
    # Declare lin1-ft-1 a fine-tune of lin0: its nearest model (lin1) then lies in another declared lineage.
    meta.loc["lin1-ft-1", "base_model"] = "lin0"
    meta.loc["lin2-ft-2", "base_model"] = "not-in-the-map"  # unknown bases are ignored
    mm = ModelMap(names, L, metadata=meta)
    table = mm.lineage().set_index("model")
    assert "lin2-ft-2" not in table.index
    row = table.loc["lin1-ft-1"]
    assert row.base_model == "lin0" and row.nearest == "lin1" and not row.consistent and row.relation == "other lineage"
    assert row.kl_to_base == pytest.approx(mm.kl_frame().loc["lin1-ft-1", "lin0"])
    assert table.loc["lin0-ft-0", "relation"] == "base" and table["consistent"].sum() == len(table) - 1
    # Its own lineage (now lin0's) is far: a contradiction at any tolerance short of a huge one.
    assert row.kl_to_lineage == pytest.approx(mm.kl_frame().loc["lin1-ft-1", ["lin0", "lin0-ft-0", "lin0-ft-1", "lin0-step1"]].min())
    assert not mm.lineage(tie=1.0).set_index("model").loc["lin1-ft-1", "consistent"]
    assert mm.lineage(tie=row.kl_to_lineage / row.kl_to_nearest).set_index("model").loc["lin1-ft-1", "consistent"]


@pytest.fixture(scope="module")
def declared_ecosystem():
    """A lineage ecosystem (tests/lineage_ecosystem.py) whose metadata declares every true base but one wrong one
    (base1's first fine-tune declared from base0) and none for base2's models."""
    from lineage_ecosystem import lineage_ecosystem, store_metadata

    names, L, truth = lineage_ecosystem(N=1500, n_bases=12, n_independent=6, n_merges=0, seed=2)
    meta = store_metadata(truth, declare=1.0)
    wrong = next(n for n in names if n.startswith("base1-ft0"))
    meta.loc[wrong, "base_model"] = "base0"
    meta.loc[[n for n in names if n.startswith("base2-")], "base_model"] = ""
    return ModelMap(names, L, metadata=meta), truth, wrong


def test_rings_and_lines_come_from_the_lineage_test(declared_ecosystem, tmp_path):
    import lmmap.map as map_mod
    from lmmap.analyses.lineage import lineage

    mm, truth, wrong = declared_ecosystem
    res = build_map(mm)
    assert res.edges == "lineage" and res.inferred is not None
    t = res.lineage.set_index("model")
    assert list(t.index) == mm.names  # one row per model once the test has run
    # The wrongly declared fine-tune: the test finds its true parent, in another declared lineage → a ring.
    assert t.loc[wrong, "decision"] == "derived" and t.loc[wrong, "inferred_parent"] == "base1"
    assert res.flagged() == list(t.index[t["flagged"].astype(bool)]) and wrong in res.flagged()
    # The rule, recomputed from the metadata's lineages: derived, and (with a declared base) no inferred parent in
    # its declared lineage, or (without one) a parent in another declared lineage.
    bases = mm.base_models()
    roots = map_mod._lineage_roots(mm.names, bases, mm._kin_links())
    size = pd.Series(roots).value_counts()
    traj = mm.metadata["trajectory"].reindex(mm.names)
    for m, r in t.iterrows():
        parents = [p for p in (r.inferred_parent, r.inferred_parent2) if isinstance(p, str) and p]
        has_base = m in bases or (isinstance(traj[m], str) and size[roots[m]] > 1)
        if r.decision != "derived":
            want = False
        elif has_base:
            want = all(roots[p] != roots[m] for p in parents)
        else:
            want = any(size[roots[p]] > 1 and roots[p] != roots[m] for p in parents)
        assert bool(r.flagged) == want, m
    # Declared and agreeing models are not circled: rings are rare where the metadata is right.
    assert len(res.flagged()) <= 0.1 * mm.K
    # The same table as lineage() gives: the map computes no other test.
    alone = lineage(mm, alpha=res.alpha, random_state=res.random_state).table
    assert t["inferred_parent"].tolist() == alone["parent"].tolist()

    paths = report.write(res, tmp_path)
    csv = pd.read_csv(paths["lineage.csv"], keep_default_na=False)
    assert {"inferred_parent", "inferred_parent2", "p_value", "p_adjusted", "decision", "flagged"} <= set(csv.columns)
    assert csv.set_index("model").loc[wrong, "inferred_parent"] == "base1"
    info = json.loads(paths["map.json"].read_text())
    assert info["lineage"]["flagged"] == res.flagged() and info["lineage"]["test"]["alpha"] == 0.05
    data, _ = plotly_figure(paths["map.html"])
    by_name = {t.get("name", ""): t for t in data}
    assert by_name[f"lineage test: parent in another lineage ({len(res.flagged())})"]
    # Dashed lines from base2's undeclared models that the test calls derived to their inferred parents.
    edges, flagged = map_edges(mm)
    assert flagged == res.flagged()
    inferred = next(e for e in edges if e.kind == "inferred")
    undeclared = t[(t["base_model"] == "") & (t["decision"] == "derived")]
    assert ("base2-q0", "base2") in inferred.pairs
    assert {m for m, _ in inferred.pairs} == set(undeclared.index)
    assert all(m not in bases for m, _ in inferred.pairs)
    # base_model draws the declared lines and the rings only.
    edges, flagged2 = map_edges(mm, "base_model")
    assert [e.kind for e in edges if e.kind in ("inferred", "lineage")] == ["lineage"] and flagged2 == flagged


def test_a_small_map_draws_a_red_line_to_the_contradicting_parent():
    from lmmap.analyses.map import lineage_table
    from lmmap.report.map import compose_edges

    names, L, meta = lineage_map()
    mm = ModelMap(names, L, metadata=meta)
    assert mm.K <= 40
    table = lineage_table(mm, mm.lineage(), None)
    assert "flagged" not in table.columns
    # A lineage test's table, as the analysis returns it: lin1-ft-1 derived from lin0, scratch-0 from scratch-1.
    fake = mm.lineage().set_index("model").reindex(names)
    test = pd.DataFrame({"model": names, "parent": "", "parent2": "", "decision": "independent", "statistic": 0.0,
                         "p_value": 0.5, "p_adjusted": 1.0, "direction": "", "flagged": False,
                         "nearest_kl": fake["nearest"].fillna("lin0").tolist(), "kl_to_nearest": 0.1})
    test = test.set_index("model")
    test.loc["lin1-ft-1", ["parent", "decision", "flagged"]] = ["lin0", "derived", True]
    test.loc["scratch-0", ["parent", "decision"]] = ["scratch-1", "derived"]
    table = lineage_table(mm, mm.lineage(), type("R", (), {"table": test.reset_index()})())
    edges, flagged = compose_edges(mm, "lineage", (), table, [])
    kinds = {e.kind: e.pairs for e in edges}
    assert flagged == ["lin1-ft-1"] and kinds["contradiction"] == (("lin1-ft-1", "lin0"),)
    assert kinds["inferred"] == (("scratch-0", "scratch-1"),)
    assert set(kinds["lineage"]) == set(mm.base_models().items())
    edges, _ = compose_edges(mm, "base_model", (), table, [])
    assert sorted(e.kind for e in edges) == ["contradiction", "lineage"]


def test_edges_default_to_nearest_neighbours_without_base_model(tmp_path):
    names, L, meta = lineage_map()
    mm = ModelMap(names, L, metadata=meta.drop(columns="base_model"))
    assert mm.resolve_edges("auto") == "nn"
    with pytest.raises(LmmapError, match="at least 4 models"):
        ModelMap(names[:3], L[:3]).resolve_edges("lineage")
    (nn,), flagged = map_edges(mm, "auto")
    idx, _ = core.nearest_neighbors(mm.kl(), 1)
    expected = {tuple(sorted((names[i], names[j]))) for i, j in enumerate(idx[:, 0])}
    assert {tuple(sorted(p)) for p in nn.pairs} == expected and len(nn.pairs) == len(expected) and flagged == []
    assert map_edges(mm, "none") == ([], [])
    with pytest.raises(LmmapError, match="no metadata column base_model"):
        report.write(build_map(mm, edges="base_model"), tmp_path / "x")
    with pytest.raises(LmmapError, match="edges must be one of"):
        report.write(build_map(mm, edges="all"), tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()  # refused before anything is written
    paths = report.write(build_map(mm, embedding="pca", edges="none"), tmp_path / "z")
    assert "lineage.csv" not in paths and json.loads(paths["map.json"].read_text())["edges"] == "none"


def test_cli_map_takes_edges_and_embedding(tmp_path):
    from typer.testing import CliRunner

    from lmmap.cli import app
    from lmmap.data.store import Store
    from lmmap.data.texts import TextSet

    names, L, meta = lineage_map()
    store = Store.create(tmp_path / "store", TextSet.from_texts([f"text {i}" for i in range(L.shape[1])]))
    store.write_models([{"name": n, "loglik": row} for n, row in zip(names, L)])
    store.set_metadata(meta.reset_index())
    out = tmp_path / "map"
    res = CliRunner().invoke(app, ["map", "-o", str(out), "--store", str(store.path), "--edges", "nn"])
    assert res.exit_code == 0, res.output
    info = json.loads((out / "map.json").read_text())
    assert info["edges"] == "nn" and info["embedding"] == "mds" and (out / "lineage.csv").exists()
    res = CliRunner().invoke(app, ["map", "-o", str(tmp_path / "bad"), "--store", str(store.path), "--edges", "every"])
    assert res.exit_code != 0 and not (tmp_path / "bad").exists()


# -- KL units (issue 15 §4) -----------------------------------------------------------------


def test_bits_per_byte_is_the_variance_of_the_difference_over_two_mean_bytes_ln2():
    rng = np.random.default_rng(3)
    L = rng.normal(-100, 5, size=(4, 30))
    nbytes = rng.integers(50, 300, size=30)
    mm = ModelMap([f"m{i}" for i in range(4)], L, threshold=None, text_bytes=nbytes)
    # Independently: KL_ij = Σ_t (q_it − q_jt)² / 2N with q the double-centred L; per byte and in bits.
    Q = L - L.mean(0) - L.mean(1)[:, None] + L.mean()
    d = Q[0] - Q[2]
    nats = (d**2).sum() / (2 * 30)
    assert mm.kl()[0, 2] == pytest.approx(nats, rel=1e-12)
    # d has mean zero over texts only after centring across models; the variance form holds for the
    # centred difference of the raw rows:
    raw = L[0] - L[2]
    assert nats == pytest.approx(np.var(raw) / 2, rel=1e-12)
    bpb = np.var(raw) / (2 * nbytes.mean() * np.log(2))
    assert mm.kl("bits-per-byte")[0, 2] == pytest.approx(bpb, rel=1e-12)
    nb = mm.neighbors("m0", k=2, unit="bits-per-byte")
    assert nb["kl"].tolist() == pytest.approx(sorted(mm.kl("bits-per-byte")[0, [1, 2, 3]])[:2])


def test_a_subset_map_uses_the_weighted_mean_bytes():
    rng = np.random.default_rng(4)
    L = rng.normal(-50, 3, size=(3, 5))
    w = np.array([0.5, 2.0, 1.0, 1.0, 3.0])
    nbytes = np.array([100, 200, 300, 400, 500])
    mm = ModelMap(["a", "b", "c"], L, threshold=None, w=w, n_texts=20, text_bytes=nbytes)
    mean = (0.5 * 100 + 2 * 200 + 300 + 400 + 3 * 500) / 7.5
    assert mm.mean_text_bytes == pytest.approx(mean)
    np.testing.assert_allclose(mm.kl("bits-per-byte"), mm.kl() / (mean * np.log(2)), rtol=1e-12)


def test_unit_typos_and_maps_without_bytes_are_one_line_errors():
    mm = ModelMap(["a", "b", "c"], np.random.default_rng(0).normal(size=(3, 6)), threshold=None)
    with pytest.raises(LmmapError, match="unit must be one of nats-per-text, bits-per-byte, got 'bits-per-bytes'") as e:
        mm.kl("bits-per-bytes")
    assert e.value.params == ("unit",) and "\n" not in str(e.value)
    with pytest.raises(LmmapError, match="text_bytes"):
        mm.kl("bits-per-byte")


def test_cli_map_and_neighbors_take_a_unit(tmp_path):
    from typer.testing import CliRunner

    from lmmap.cli import app
    from lmmap.data.store import Store
    from lmmap.data.texts import TextSet

    names, L, meta = lineage_map()
    texts = [f"text {i}" + "é" * i for i in range(L.shape[1])]
    store = Store.create(tmp_path / "store", TextSet.from_texts(texts))
    store.write_models([{"name": n, "loglik": row} for n, row in zip(names, L)])
    out = tmp_path / "map"
    res = CliRunner().invoke(app, ["map", "-o", str(out), "--store", str(store.path), "--unit", "bits-per-byte"])
    assert res.exit_code == 0, res.output
    info = json.loads((out / "map.json").read_text())
    mean = np.mean([len(t.encode()) for t in texts])
    assert info["kl_unit"] == "bits-per-byte" and info["mean_text_bytes"] == pytest.approx(mean)
    kl = pd.read_csv(out / "kl.csv", index_col=0)
    nats = ModelMap.from_store(store).kl()
    np.testing.assert_allclose(kl.to_numpy(), nats / (mean * np.log(2)), rtol=1e-9)
    res = CliRunner().invoke(app, ["neighbors", names[0], "--store", str(store.path), "--unit", "bits-per-byte"])
    assert res.exit_code == 0 and "bits/byte" in res.output, res.output
    res = CliRunner().invoke(app, ["map", "-o", str(tmp_path / "bad"), "--store", str(store.path), "--unit", "bpb"])
    assert res.exit_code != 0 and res.exception.params == ("unit",) and not (tmp_path / "bad").exists()
    from lmmap.params import for_cli

    assert for_cli(res.exception).startswith("--unit must be one of")


@pytest.mark.parametrize("kin", ["layers_of", "trajectory"])
def test_layers_and_checkpoints_belong_to_their_models_lineage(kin):
    """Issue 22 §6: a fine-tune whose nearest model is a layer (or a checkpoint) of its own base is not flagged."""
    rng = np.random.default_rng(3)
    n = 400
    base = -rng.uniform(20, 80, n)
    kin_vec = base + rng.normal(0, 3.0, n)  # a layer of base (or an earlier checkpoint): far from base itself
    ft = kin_vec + rng.normal(0, 0.3, n)  # closest to that layer, declared a fine-tune of base
    other = -rng.uniform(20, 80, n)
    names = ["base", "base@layer2", "base-ft", "other", "other-ft"]
    L = np.vstack([base, kin_vec, ft, other, other + rng.normal(0, 0.3, n)])
    meta = pd.DataFrame(index=pd.Index(names, name="model"))
    meta["base_model"] = [None, None, "base", None, "other"]
    meta[kin] = [None, "base", None, None, None] if kin == "layers_of" else ["run", "run", None, None, None]
    mm = ModelMap(names, L, metadata=meta)
    row = mm.lineage().set_index("model").loc["base-ft"]
    assert row.nearest == "base@layer2" and row.kl_to_nearest < row.kl_to_base / 3
    assert row.relation == "same lineage" and row.consistent
    # without the kin column the same map flags it: the test tells the two apart
    plain = ModelMap(names, L, metadata=meta.drop(columns=[kin]))
    assert not plain.lineage().set_index("model").loc["base-ft", "consistent"]


def test_a_large_map_finds_neighbours_without_a_k_by_k_matrix(monkeypatch):
    """Issue 24: past DENSE_MAX_K the neighbour table and one model's neighbours come from lmmap.maths.knn and
    equal the dense float64 computation (geometry), without ever building the K×K matrix."""
    import lmmap.map as map_mod
    from lmmap.maths import geometry

    rng = np.random.default_rng(5)
    K, N = 240, 150
    fam = rng.normal(0, 3, (12, N))
    L = -50 + fam[rng.integers(0, 12, K)] + rng.normal(0, 1.0, (K, N))
    names = [f"m{i}" for i in range(K)]
    mm = ModelMap(names, L)
    G = geometry.squared_distances(mm.Q)  # independent: dense float64 from Q
    want_idx, want_g = geometry.nearest_neighbors(G, 5)
    monkeypatch.setattr(map_mod, "DENSE_MAX_K", 100)

    def no_dense(*a, **k):
        raise AssertionError("built the K×K matrix")

    monkeypatch.setattr(mm, "squared_distances", no_dense)
    table = mm.neighbor_table(5)
    got_idx = np.array([mm.index_of(n) for n in table["neighbor"]]).reshape(K, 5)
    np.testing.assert_array_equal(got_idx, want_idx)
    np.testing.assert_allclose(table["kl"].to_numpy().reshape(K, 5), want_g / (2 * N), rtol=1e-9)
    one = mm.neighbors("m7", k=5)
    assert one["neighbor"].tolist() == [names[j] for j in want_idx[7]]
    np.testing.assert_allclose(one["kl"], want_g[7] / (2 * N), rtol=1e-9)


def test_a_map_too_large_for_a_k_by_k_kl_says_what_to_use(monkeypatch):
    import lmmap.map as map_mod

    mm = ModelMap([f"m{i}" for i in range(50)], -np.random.default_rng(0).uniform(1, 9, (50, 20)))
    monkeypatch.setattr(map_mod, "DENSE_MAX_BYTES", 8 * 49 * 49)
    monkeypatch.setattr(map_mod, "DENSE_MAX_K", 40)
    with pytest.raises(LmmapError, match=r"50×50 KL matrix.*neighbor_table\(k\)"):
        mm.kl()
    assert len(mm.neighbors("m3", k=3)) == 3  # still answered, without the K×K matrix

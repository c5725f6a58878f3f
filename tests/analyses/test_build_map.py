"""build_map (issue 23 §4): the map as an analysis; report.map.write only writes what it computed."""

import inspect
import json

import numpy as np
import pandas as pd
import pytest

import lmmap.map as map_mod
from lmmap import ModelMap, report
from lmmap.analyses.map import MapResult, build_map
from lmmap.exceptions import InputError
from lmmap.report import map as map_report
from synthetic import lineage_L


def numpy_kl(L, threshold):
    """KL = g/2N from the raw rows: clip, centre rows then columns, pairwise squared differences."""
    Lc = np.maximum(L, threshold)
    Q = Lc - Lc.mean(axis=1, keepdims=True)
    Q = Q - Q.mean(axis=0, keepdims=True)
    return ((Q[:, None, :] - Q[None, :, :]) ** 2).sum(-1) / (2 * L.shape[1])


def numpy_neighbors(kl, k):
    masked = kl + np.diag(np.full(len(kl), np.inf))
    idx = np.argsort(masked, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(masked, idx, axis=1)


@pytest.fixture(scope="module")
def lineage_map():
    # 26 models: classical MDS by default; t-SNE, where asked, at a perplexity lowered with a note.
    names, L, meta = lineage_L(N=300, seed=2)
    meta.loc["lin1-ft-1", "base_model"] = "lin0"  # its nearest then lies in another lineage
    return ModelMap(names, L, metadata=meta)


def test_neighbours_and_kl_are_those_of_an_independent_numpy_computation(lineage_map):
    mm = lineage_map
    res = build_map(mm, k=4)
    want = numpy_kl(mm.L, mm.threshold)
    np.testing.assert_allclose(res.kl, want, rtol=1e-9, atol=1e-9 * want.max())
    idx, vals = numpy_neighbors(want, 4)
    nb = res.neighbors
    assert list(nb.columns) == ["model", "rank", "neighbor", "kl"] and len(nb) == 4 * mm.K
    names = np.asarray(mm.names, dtype=object)
    assert nb["neighbor"].tolist() == names[idx.ravel()].tolist()
    np.testing.assert_allclose(nb["kl"], vals.ravel(), rtol=1e-9)
    assert nb["model"].tolist() == np.repeat(names, 4).tolist() and nb["rank"].tolist() == [1, 2, 3, 4] * mm.K
    # Lineage: the declared contradiction is found, with its KL from the same matrix.
    row = res.lineage.set_index("model").loc["lin1-ft-1"]
    assert not row.consistent and row.nearest == "lin1"
    assert row.kl_to_base == pytest.approx(want[mm.index_of("lin1-ft-1"), mm.index_of("lin0")], rel=1e-9)
    assert res.edges == "lineage" and res.kl_se is None and res.nearest_pairs == ()
    # The lineage test ran: its table is the map's, a row per model, and the rings are its flags.
    assert res.inferred is not None and res.lineage["model"].tolist() == mm.names
    assert res.lineage["inferred_parent"].tolist() == res.inferred.table["parent"].tolist()
    assert res.flagged() == res.inferred.table.loc[res.inferred.table["flagged"], "model"].tolist()
    assert build_map(mm, edges="nn").inferred is not None  # declared bases: lineage.csv carries the test
    assert build_map(ModelMap(mm.names, mm.L), edges="nn").inferred is None  # nothing to test it against


def test_standard_errors_are_the_bootstrap_of_the_map_seeded_by_random_state(lineage_map):
    mm = lineage_map
    res = build_map(mm, k=3, se=True, R=20, random_state=5)
    np.testing.assert_allclose(res.kl_se, mm.kl_se(R=20, random_state=5))
    rows = [mm.index_of(m) for m in res.neighbors["model"]]
    cols = [mm.index_of(m) for m in res.neighbors["neighbor"]]
    np.testing.assert_allclose(res.neighbors["kl_se"], res.kl_se[rows, cols])
    other = build_map(mm, k=3, se=True, R=20, random_state=6)
    assert not np.allclose(other.kl_se, res.kl_se)
    np.testing.assert_array_equal(other.coords, res.coords)  # the bootstrap seed does not move the map


@pytest.mark.filterwarnings("ignore:perplexity")
def test_coordinates_are_deterministic_for_a_given_embedding_random_state(lineage_map):
    mm = lineage_map
    a = build_map(mm, embedding="tsne", embedding_random_state=3).coords
    fresh = ModelMap(mm.names, mm.L, metadata=mm.metadata)  # no cache shared with mm
    np.testing.assert_array_equal(build_map(fresh, embedding="tsne", embedding_random_state=3).coords, a)
    assert not np.allclose(build_map(fresh, embedding="tsne", embedding_random_state=4).coords, a)
    res = build_map(mm)
    assert res.method == "mds" and res.embedding == "auto"
    np.testing.assert_allclose(res.coords, mm.embed("mds"))


def test_nn_edges_pair_each_model_with_its_nearest(lineage_map):
    mm = lineage_map
    res = build_map(mm, edges="nn")
    idx, _ = numpy_neighbors(numpy_kl(mm.L, mm.threshold), 1)
    want = {tuple(sorted((mm.names[i], mm.names[j]))) for i, j in enumerate(idx[:, 0])}
    assert set(res.nearest_pairs) == want and len(res.nearest_pairs) == len(want)
    assert build_map(mm, edges="none").nearest_pairs == () and build_map(mm, edges="none").paths == []


def test_the_writer_is_deterministic_and_takes_no_random_state(lineage_map, tmp_path):
    params = inspect.signature(map_report.write).parameters
    assert list(params) == ["result", "outdir", "unit", "color_by"]
    assert all(p.kind == p.KEYWORD_ONLY for n, p in params.items() if n in ("unit", "color_by"))
    res = build_map(lineage_map, k=3, se=True, R=10)
    with pytest.raises(InputError, match="takes no option 'random_state'"):
        report.write(res, tmp_path / "x", random_state=1)
    a = report.write(res, tmp_path / "a")
    b = report.write(res, tmp_path / "b")
    assert sorted(a) == sorted(b)
    for name in a:
        if name == "map.json":
            strip = lambda p: {k: v for k, v in json.loads(p.read_text())["provenance"].items() if k != "created"}  # noqa: E731
            assert strip(a[name]) == strip(b[name])
            assert ({k: v for k, v in json.loads(a[name].read_text()).items() if k != "provenance"}
                    == {k: v for k, v in json.loads(b[name].read_text()).items() if k != "provenance"})
        else:
            assert a[name].read_bytes() == b[name].read_bytes(), name
    # What it writes is the result: KL, neighbours and coordinates as computed.
    np.testing.assert_allclose(pd.read_csv(a["kl.csv"], index_col=0).to_numpy(), res.kl, rtol=1e-12)
    pd.testing.assert_frame_equal(pd.read_csv(a["neighbors.csv"]), res.neighbors, check_exact=False, rtol=1e-12)
    np.testing.assert_allclose(pd.read_csv(a["coords.csv"])[["x", "y"]].to_numpy(), res.coords, rtol=1e-12)


def test_the_writer_computes_nothing(lineage_map, tmp_path, monkeypatch):
    res = build_map(lineage_map, k=3, edges="nn")

    def computes(*a, **k):
        raise AssertionError("the writer computed")

    for name in ("kl", "kl_se", "squared_distances", "embed", "neighbor_table", "nearest", "lineage"):
        monkeypatch.setattr(ModelMap, name, computes)
    paths = report.write(res, tmp_path / "w", unit="nats-per-text")
    assert {"kl.csv", "coords.csv", "neighbors.csv", "map.png", "map.html", "map.json"} <= set(paths)


def test_a_large_map_holds_no_kl_matrix_unless_asked(lineage_map, monkeypatch):
    dense = build_map(lineage_map, k=3)
    monkeypatch.setattr(map_mod, "DENSE_MAX_K", 10)
    mm = ModelMap(lineage_map.names, lineage_map.L, metadata=lineage_map.metadata)
    res = build_map(mm, k=3)
    assert res.kl is None and "G" not in mm._cache
    pd.testing.assert_frame_equal(res.neighbors, dense.neighbors, check_exact=False, rtol=1e-9)
    full = build_map(mm, k=3, full_kl=True)
    assert full.kl.dtype == np.float32
    np.testing.assert_allclose(full.kl, dense.kl, rtol=1e-6, atol=1e-7 * dense.kl.max())


def test_bad_settings_are_refused_before_anything_is_computed(lineage_map, monkeypatch):
    def computes(*a, **k):
        raise AssertionError("computed before the settings were checked")

    monkeypatch.setattr(ModelMap, "embed", computes)
    monkeypatch.setattr(ModelMap, "kl", computes)
    for kw, match in [(dict(edges="all"), "edges must be one of"), (dict(embedding="nope"), "embedding"),
                      (dict(k=0), "k must be at least 1"), (dict(se=True, R=1), r"\bR must be"),
                      (dict(embedding_random_state=-1), "embedding_random_state")]:
        with pytest.raises(InputError, match=match):
            build_map(lineage_map, **kw)
    monkeypatch.setattr(map_mod, "DENSE_MAX_BYTES", 8 * 10 * 10)
    with pytest.raises(InputError, match="--full-kl: the KL matrix of"):
        build_map(lineage_map, full_kl=True)


def test_report_write_of_a_model_map_says_to_build_the_map_first(lineage_map, tmp_path):
    with pytest.raises(InputError, match=r"a ModelMap is not a result: build its map first, .*build_map"):
        report.write(lineage_map, tmp_path / "m")
    assert not (tmp_path / "m").exists()
    assert report.writer_for(build_map(lineage_map)) is map_report
    assert isinstance(build_map(lineage_map), MapResult)

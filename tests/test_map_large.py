"""Issue 24: `lmmap map` past DENSE_MAX_K models needs nothing K×K unless --full-kl asks for it.

The thresholds are lowered so that ~300 models are a "large" map; every output that does not depend on the
K×K matrix (neighbors.csv, lineage.csv, the map's lines) must equal what the dense computation gives.
"""

import numpy as np
import pandas as pd
import pytest

import lmmap.map as map_mod
from lmmap import ModelMap, report
from lmmap.analyses.map import build_map
from lmmap.report.map import map_edges
from cli_main import run_main
from synthetic import lowrank_L, make_store

K, N = 300, 120


def lineage_metadata(names, families):
    """Declared lineages: families 0–19 hang off their first member; in families 20–29 a few models name a base
    in another family, so that their lineage's nearest lies far outside their neighbour lists."""
    first, bases = {}, []
    for name, fam in zip(names, families):
        head = first.setdefault(fam, name)
        bases.append(head if fam < 20 and head != name else None)
    loose = [i for i, f in enumerate(families) if f >= 20]
    for a, b in zip(loose[:6], loose[-6:]):
        if families[a] != families[b]:
            bases[a] = names[b]
    return pd.DataFrame({"model": names, "base_model": bases})


@pytest.fixture
def large_store(tmp_path):
    L = lowrank_L(K, N, n_families=30, seed=3)
    # The families of lowrank_L are drawn at random: recover them from the same generator's draw order.
    rng = np.random.default_rng(3)
    rng.normal(size=(30, 8))
    families = [int(f) for f in rng.integers(0, 30, K)]
    names = [f"fam{f}/m{i}" for i, f in enumerate(families)]
    meta = lineage_metadata(names, families)
    return make_store(tmp_path, names, L, meta), meta


def no_k_by_k(*a, **k):
    raise AssertionError("built the K×K matrix")


def read(path):
    return pd.read_csv(path, keep_default_na=False)


def same_lineage_csv(got, want):
    """lineage.csv of a large map against the dense one: the declared comparison (KL) exactly; the lineage test,
    which at large K works from a randomised basis and a sketch of the residuals, to the same verdicts for
    nearly every model."""
    kl_columns = ["model", "base_model", "nearest", "kl_to_nearest", "kl_to_base", "kl_to_lineage", "relation",
                  "consistent"]
    assert list(got.columns) == list(want.columns)
    numeric = ["kl_to_nearest", "kl_to_base", "kl_to_lineage"]
    a, b = got[kl_columns].copy(), want[kl_columns].copy()
    a[numeric], b[numeric] = a[numeric].apply(pd.to_numeric), b[numeric].apply(pd.to_numeric)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9)
    assert (got["decision"] == want["decision"]).mean() >= 0.9
    derived = (got["decision"] == "derived") & (want["decision"] == "derived")
    assert (got.loc[derived, "inferred_parent"] == want.loc[derived, "inferred_parent"]).mean() >= 0.9


def test_report_at_large_k_needs_no_k_by_k_matrix_and_equals_the_dense_one(large_store, tmp_path, monkeypatch):
    store, meta = large_store
    dense = ModelMap.from_store(store)
    want = report.write(build_map(dense), tmp_path / "dense")
    assert "kl.csv" in want and "lineage.csv" in want
    dense_lineage = dense.lineage()
    assert (~dense_lineage["consistent"]).any() and (dense_lineage["relation"] == "other lineage").any()

    monkeypatch.setattr(map_mod, "DENSE_MAX_K", 100)
    monkeypatch.setattr(map_mod, "DENSE_MAX_BYTES", 8 * 200 * 200)
    monkeypatch.setattr(ModelMap, "squared_distances", no_k_by_k)
    mm = ModelMap.from_store(store)
    got = report.write(build_map(mm), tmp_path / "large")
    for name in ("coords.csv", "neighbors.csv", "lineage.csv", "map.png", "map.html", "map.json"):
        assert got[name].exists(), name
    assert "kl.csv" not in got and not (tmp_path / "large" / "kl.csv").exists()
    pd.testing.assert_frame_equal(read(got["neighbors.csv"]), read(want["neighbors.csv"]), check_exact=False,
                                  rtol=1e-9)
    same_lineage_csv(read(got["lineage.csv"]), read(want["lineage.csv"]))
    pd.testing.assert_frame_equal(mm.lineage(), dense_lineage, check_exact=False, rtol=1e-9)
    # Some models' lineage lies outside their neighbour lists: their KL to it comes from the search within it.
    idx, _ = mm.nearest(10)
    roots = map_mod._lineage_roots(mm.names, mm.base_models())
    rows = [mm.index_of(m) for m in dense_lineage["model"]]
    assert any(all(roots[mm.names[j]] != roots[mm.names[i]] for j in idx[i]) for i in rows)
    assert map_edges(mm, "nn") == map_edges(dense, "nn")
    # The declared lines are the same; the rings are each map's lineage test's (see same_lineage_csv).
    large_edges, large_flagged = map_edges(mm, "base_model")
    dense_edges, dense_flagged = map_edges(dense, "base_model")
    assert large_edges[0] == dense_edges[0] and large_edges[0].kind == "lineage"
    written = read(got["lineage.csv"])
    assert large_flagged == list(written.loc[written["flagged"].astype(str) == "True", "model"])


def test_cli_map_at_large_k_writes_no_kl_and_says_how_to_get_it(large_store, tmp_path, monkeypatch):
    store, _ = large_store
    assert run_main("map", "-o", tmp_path / "dense", "--store", store.path)[0] == 0
    monkeypatch.setattr(map_mod, "DENSE_MAX_K", 100)
    monkeypatch.setattr(map_mod, "DENSE_MAX_BYTES", 8 * 200 * 200)
    monkeypatch.setattr(ModelMap, "squared_distances", no_k_by_k)
    out = tmp_path / "large"
    code, stdout, stderr = run_main("map", "-o", out, "--store", store.path)
    assert code == 0, stderr
    notes = [line for line in stderr.splitlines() if "--full-kl" in line]
    assert len(notes) == 1 and notes[0].startswith("note:") and "GB" in notes[0], stderr
    assert not (out / "kl.csv").exists() and not (out / "kl.npy").exists()
    for name in ("coords.csv", "neighbors.csv", "lineage.csv", "map.png", "map.html", "map.json"):
        assert (out / name).exists(), name
    pd.testing.assert_frame_equal(read(out / "neighbors.csv"), read(tmp_path / "dense" / "neighbors.csv"),
                                  check_exact=False, rtol=1e-9)
    same_lineage_csv(read(out / "lineage.csv"), read(tmp_path / "dense" / "lineage.csv"))

    code, stdout, stderr = run_main("map", "-o", tmp_path / "full", "--store", store.path, "--full-kl")
    assert code == 1 and not (tmp_path / "full").exists()
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --full-kl") and "300×300" in lines[0] and "GB" in lines[0]


def test_full_kl_writes_kl_npy_at_large_k(large_store, tmp_path, monkeypatch):
    store, _ = large_store
    want = ModelMap.from_store(store).kl()
    monkeypatch.setattr(map_mod, "DENSE_MAX_K", 100)
    out = tmp_path / "full"
    code, _, stderr = run_main("map", "-o", out, "--store", store.path, "--full-kl", "--edges", "nn")
    assert code == 0, stderr
    assert "note:" not in stderr and not (out / "kl.csv").exists()
    kl = np.load(out / "kl.npy")
    assert kl.dtype == np.float32 and kl.shape == (K, K)
    np.testing.assert_allclose(kl, want, rtol=1e-6, atol=1e-7 * want.max())


@pytest.fixture
def consolidated(monkeypatch):
    """Small stores keep the consolidated matrix too (its threshold is 10⁷ log-likelihoods)."""
    import lmmap.data.store.matrix as matrix_module

    monkeypatch.setattr(matrix_module, "MATRIX_MIN_ENTRIES", 0)


def test_neighbors_answers_from_the_lists_map_kept(large_store, tmp_path, monkeypatch, consolidated):
    """`lmmap map` of a large store keeps its neighbour lists under the store's state; `lmmap neighbors`
    then reads them without building the map, and a change of the store makes it compute them again."""
    store, _ = large_store
    store.rebuild_matrix()
    monkeypatch.setattr(map_mod, "DENSE_MAX_K", 100)
    assert run_main("map", "-o", tmp_path / "m", "--store", store.path, "-k", "12")[0] == 0
    kept = list((store.path / "matrix").glob("neighbors-*.parquet"))
    assert len(kept) == 1
    model = store.model_names()[7]
    want = ModelMap.from_store(store).neighbors(model, k=5)
    built = []
    real = ModelMap.from_store.__func__

    def counting(cls, *a, **kw):
        built.append(1)
        return real(cls, *a, **kw)

    monkeypatch.setattr(ModelMap, "from_store", classmethod(counting))
    code, out, err = run_main("neighbors", model, "--store", store.path, "-k", "5")
    assert code == 0, err
    assert not built  # answered from the kept lists
    listed = [line.split("│")[2].strip() for line in out.splitlines() if line.count("│") >= 3]
    assert listed == list(want["neighbor"])
    for value, kl in zip([line.split("│")[3].strip() for line in out.splitlines() if line.count("│") >= 3],
                         want["kl"]):
        assert float(value) == pytest.approx(kl, rel=1e-2)
    # more neighbours than were kept, or another state of the store: computed again
    assert run_main("neighbors", model, "--store", store.path, "-k", "13")[0] == 0 and len(built) == 1
    store.write_models([{"name": "newcomer", "loglik": store.matrix([model])[1][0] - 1.0}])
    assert not list((store.path / "matrix").glob("neighbors-*.parquet"))  # the write dropped the stale lists
    assert run_main("neighbors", model, "--store", store.path, "-k", "5")[0] == 0 and len(built) == 2
    assert store.check().ok


def test_tsne_of_a_large_map_keeps_neighbourhoods(monkeypatch):
    """Past DENSE_MAX_K the t-SNE affinities come from the knn lists (exact here, and from the randomised
    projection's key when the exact search would cost too much): most of a model's 10 nearest on the map
    are among its 30 nearest by KL, both ways."""
    from sklearn.neighbors import NearestNeighbors

    from lmmap.maths import knn

    L = lowrank_L(K, N, n_families=30, seed=4)
    monkeypatch.setattr(map_mod, "DENSE_MAX_K", 100)
    for exact_max in (knn.EXACT_MAX_FLOPS, 1.0):
        monkeypatch.setattr(knn, "EXACT_MAX_FLOPS", exact_max)
        mm = ModelMap([f"m{i}" for i in range(K)], L)
        coords = mm.embed("tsne", random_state=1)
        assert coords.shape == (K, 2) and np.isfinite(coords).all()
        near2d = NearestNeighbors(n_neighbors=11).fit(coords).kneighbors(coords, return_distance=False)[:, 1:]
        near_kl, _ = mm.nearest(30)
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(near2d, near_kl)])
        assert overlap > 0.7, overlap


def test_placing_into_a_large_map_needs_no_k_by_k_and_agrees_with_the_small_path(tmp_path, monkeypatch):
    from lmmap.analyses.place import LARGE_TABLE_ROWS, place
    from lmmap.exceptions import InputError

    m = 4
    L = lowrank_L(K + m, N, n_families=20, seed=5)
    names = [f"m{i}" for i in range(K)]
    new = [f"new{i}" for i in range(m)]
    mm = ModelMap(names, L[:K])
    coords = mm.embed("tsne")
    base = pd.DataFrame({"model": names, "x": coords[:, 0], "y": coords[:, 1]})
    small = place(mm, new, L[K:], base_coords=base)
    monkeypatch.setattr(map_mod, "DENSE_MAX_K", 100)
    with pytest.raises(InputError, match="base_coords=MAPDIR/coords.csv"):
        place(ModelMap(names, L[:K]), new, L[K:])
    monkeypatch.setattr(ModelMap, "squared_distances", no_k_by_k)
    large = place(ModelMap(names, L[:K].astype(np.float32)), new, L[K:], base_coords=base)
    np.testing.assert_allclose(large.kl, small.kl, rtol=1e-5)
    np.testing.assert_array_equal(large.coords[:K], coords)  # the existing models keep their positions
    near = np.argsort(large.kl, axis=1)[:, :10]
    np.testing.assert_allclose(large.coords[K:], np.median(coords[near], axis=1))
    t = large.table()
    assert len(t) == m * min(K, LARGE_TABLE_ROWS) and (t.groupby("new_model")["rank"].max() == LARGE_TABLE_ROWS).all()
    s = small.table().set_index(["new_model", "existing_model"])
    mine = t.set_index(["new_model", "existing_model"])
    np.testing.assert_allclose(mine["kl_se"], s.loc[mine.index, "kl_se"], rtol=1e-4)
    first = large.neighbors[large.neighbors["model"] == "new0"]
    want = small.neighbors[small.neighbors["model"] == "new0"]
    assert list(first["neighbor"]) == list(want["neighbor"])
    files = report.write(large, tmp_path / "placed")
    assert "kl.csv" not in files and {"placement.csv", "coords.csv", "map.png", "map.html"} <= set(files)


def test_cli_add_into_a_large_map_keeps_its_positions(large_store, tmp_path, monkeypatch):
    """`lmmap add` into a large map: placed against the map's coords.csv (no t-SNE of the whole map, nothing
    K×K), the served models scored by a back-end named on the command line; without --base-coords, one line."""
    store, _ = large_store
    monkeypatch.setattr(map_mod, "DENSE_MAX_K", 100)
    assert run_main("map", "-o", tmp_path / "m", "--store", store.path)[0] == 0
    assert run_main("select", "--store", store.path, "--method", "ls", "--n", 60, "-o", tmp_path / "s.json")[0] == 0
    monkeypatch.setattr(ModelMap, "squared_distances", no_k_by_k)
    monkeypatch.setattr(ModelMap, "embed", no_k_by_k)
    code, _, err = run_main("add", "fake-a", "--subset", tmp_path / "s.json", "--store", store.path,
                            "--backend", "fake", "-o", tmp_path / "added")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "--base-coords MAPDIR/coords.csv" in err, err
    code, out, err = run_main("add", "fake-a", "fake-b", "--subset", tmp_path / "s.json", "--store", store.path,
                              "--backend", "fake", "--base-coords", tmp_path / "m" / "coords.csv",
                              "-o", tmp_path / "added", "--no-progress")
    assert code == 0, err
    coords = pd.read_csv(tmp_path / "added" / "coords.csv")
    before = pd.read_csv(tmp_path / "m" / "coords.csv").set_index("model")
    kept = coords[~coords["new"]].set_index("model")
    np.testing.assert_allclose(kept[["x", "y"]].to_numpy(), before.loc[kept.index, ["x", "y"]].to_numpy())
    assert set(coords.loc[coords["new"], "model"]) == {"fake-a", "fake-b"}
    assert store.record("fake-a")["n_scored"] == len(pd.read_json(tmp_path / "s.json", typ="series")["texts"])
    assert not (tmp_path / "added" / "kl.csv").exists()

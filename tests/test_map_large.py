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
    for name in ("neighbors.csv", "lineage.csv"):
        pd.testing.assert_frame_equal(read(got[name]), read(want[name]), check_exact=False, rtol=1e-9)
    pd.testing.assert_frame_equal(mm.lineage(), dense_lineage, check_exact=False, rtol=1e-9)
    # Some models' lineage lies outside their neighbour lists: their KL to it comes from the search within it.
    idx, _ = mm.nearest(10)
    roots = map_mod._lineage_roots(mm.names, mm.base_models())
    rows = [mm.index_of(m) for m in dense_lineage["model"]]
    assert any(all(roots[mm.names[j]] != roots[mm.names[i]] for j in idx[i]) for i in rows)
    assert map_edges(mm, "nn") == map_edges(dense, "nn")
    assert map_edges(mm, "base_model") == map_edges(dense, "base_model")


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
    for name in ("neighbors.csv", "lineage.csv"):
        pd.testing.assert_frame_equal(read(out / name), read(tmp_path / "dense" / name), check_exact=False, rtol=1e-9)

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

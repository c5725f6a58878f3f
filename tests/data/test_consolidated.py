"""The consolidated matrix (issue 24): float32 segments kept beside the model files, in the same transactions.

Every assertion compares what a reader gets from the matrix with the model files' float64 values (the source
of truth) after writes, replacements, removals, compactions, hand edits and a hostile copy; the streaming
import is checked for its memory (tracemalloc) and for leaving nothing when a late batch is bad.
"""

from __future__ import annotations

import os
import tracemalloc
import warnings

import numpy as np
import pytest

import lmmap.data.formats.npz as npz_format
import lmmap.data.store.matrix as matrix_module
from lmmap.data.store import Store
from lmmap.data.texts import TextSet
from lmmap.data.transfer import import_vectors
from lmmap.exceptions import FormatError, LmmapWarning
from lmmap.map import ModelMap

N = 40


@pytest.fixture
def always(monkeypatch):
    """Keep the matrix whatever the store's size (the threshold is for 10⁷ log-likelihoods)."""
    monkeypatch.setattr(matrix_module, "MATRIX_MIN_ENTRIES", 0)


def _store(tmp_path, name="s"):
    return Store.create(tmp_path / name, TextSet.from_texts([f"text {i}" for i in range(N)]))


def _L(K, seed=0):
    return -np.random.default_rng(seed).gamma(5.0, 20.0, size=(K, N))


def _segments(store):
    return sorted(p.name for p in (store.path / "matrix").iterdir() if p.name.startswith("seg-"))


def _same_as_files(store, names=None):
    """The matrix's rows equal the files' float64 values to float32 rounding, in the same order."""
    got = store.consolidated(names)
    assert got is not None, "the matrix should answer"
    names32, L32 = got
    names64, L64 = store.matrix(names32)
    assert names32 == names64 and L32.dtype == np.float32
    np.testing.assert_allclose(L32, L64, rtol=2 ** -23, atol=0)
    return names32


def test_kept_in_step_through_writes_replacements_and_removals(tmp_path, always):
    s = _store(tmp_path)
    L = _L(30)
    s.write_models([{"name": f"m{i}", "loglik": L[i]} for i in range(10)])
    s.write_models([{"name": f"m{i}", "loglik": L[i]} for i in range(10, 20)])
    s.write_models([{"name": "partial", "loglik": L[0][:5], "text_pos": np.arange(5)}])
    with pytest.warns(LmmapWarning, match="left out 1 partial model"):
        names = _same_as_files(s)
    assert names == [f"m{i}" for i in range(20)]  # the order models were added, partial one left out
    s.write_models([{"name": "m4", "loglik": L[25]}], replace=True)
    s.remove_models(["m3", "partial"])
    names = _same_as_files(s)
    assert "m3" not in names and names[-1] == "m4"  # a replaced model is added anew
    np.testing.assert_allclose(s.consolidated(["m4"])[1][0], L[25], rtol=2 ** -23)
    # the index names exactly the model files: nothing stale, nothing left over
    index = s._matrix_index()
    assert set(index["key"]) == {f"models/{p.name}" for p in (s.path / "models").iterdir()}
    assert s.check().ok


def test_dead_rows_are_rewritten(tmp_path, always, monkeypatch):
    monkeypatch.setattr(matrix_module, "MAX_SEGMENTS", 3)
    s = _store(tmp_path)
    L = _L(12, seed=1)
    for i in range(12):
        s.write_models([{"name": f"m{i}", "loglik": L[i]}])
        assert len(_segments(s)) <= 4  # compacted as soon as a commit would leave more than MAX_SEGMENTS
    s.remove_models([f"m{i}" for i in range(0, 12, 2)])
    live = len(s._matrix_index())
    stored = sum(np.load(s.path / "matrix" / f, mmap_mode="r").shape[0] for f in _segments(s))
    assert stored <= 2 * live  # dead rows never outnumber live ones
    _same_as_files(s)
    assert s.check().ok


def test_a_hand_edit_makes_it_stale_and_a_large_read_rebuilds_it(tmp_path, always):
    s = _store(tmp_path)
    L = _L(8, seed=2)
    s.write_models([{"name": f"m{i}", "loglik": L[i]} for i in range(8)])
    os.remove(s.path / "models" / "m5.parquet")  # by hand: the index lists a file that is gone
    assert s.consolidated() is None  # stale: never answers for files it does not list
    report = s.check()
    assert any("out of step" in p and "'m5'" in p for p in report.problems())
    names, L32 = s.matrix(dtype="float32")  # falls back to the files, then rebuilds
    assert "m5" not in names and L32.dtype == np.float32
    assert s.consolidated() is not None and s.check().ok
    np.testing.assert_allclose(s.consolidated()[1], np.delete(L, 5, axis=0), rtol=2 ** -23)


def test_doctor_finds_values_that_are_not_the_files_and_repairs_them(tmp_path, always):
    s = _store(tmp_path)
    L = _L(6, seed=3)
    s.write_models([{"name": f"m{i}", "loglik": L[i]} for i in range(6)])
    seg = s.path / "matrix" / _segments(s)[0]
    a = np.load(seg)
    a[2, 7] += 0.5  # one value changed: the row's sum is no longer the file's
    np.save(seg, a)
    problems = s.check().problems()
    assert any("'m2'" in p and "not its file's values" in p for p in problems)
    assert s.check(repair=True).repaired
    assert s.check().ok
    _same_as_files(s)


def test_a_hostile_segment_is_never_unpickled_nor_followed(tmp_path, always):
    s = _store(tmp_path)
    s.write_models([{"name": f"m{i}", "loglik": r} for i, r in enumerate(_L(5, seed=4))])
    seg = s.path / "matrix" / _segments(s)[0]
    np.save(seg, np.array([{"x": 1}] * 5, dtype=object), allow_pickle=True)  # a pickle in disguise
    with pytest.warns(LmmapWarning, match="cannot be read"):
        assert s.consolidated() is None
    names, L = s.matrix(dtype="float32")  # the files answer
    assert len(names) == 5
    os.remove(seg)
    os.symlink("/etc/hostname", seg)  # a link out of the store: never read
    with pytest.warns(LmmapWarning, match="cannot be read"):
        assert s.consolidated() is None
    assert any("not a plain file" in p or "symbolic link" in p for p in s.check().problems())


def test_a_small_store_keeps_no_matrix(tmp_path):
    s = _store(tmp_path)
    s.write_models([{"name": f"m{i}", "loglik": r} for i, r in enumerate(_L(5, seed=5))])
    assert not (s.path / "matrix").exists()
    names, L = s.matrix(dtype="auto")
    assert L.dtype == np.float64  # below MATRIX_MIN_ENTRIES a map reads the float64 files


def test_import_streams_a_batch_at_a_time(tmp_path, always, monkeypatch):
    K = 300
    monkeypatch.setattr(npz_format, "STREAM_BYTES", 8 * N * 16)  # 16 rows per batch
    TextSet.from_texts([f"text {i}" for i in range(N)]).save(tmp_path / "t.jsonl")
    L = _L(K, seed=6)
    np.savez(tmp_path / "v.npz", L=L, models=np.array([f"m{i}" for i in range(K)]), n_tokens=np.full((K, N), 9))
    names = import_vectors(tmp_path / "s", tmp_path / "v.npz", texts=tmp_path / "t.jsonl")
    assert len(names) == K
    s = Store(tmp_path / "s")
    np.testing.assert_array_equal(s.matrix()[1], L)
    assert (s.vectors("m7")["n_tokens"] == 9).all()
    _same_as_files(s)
    assert len(_segments(s)) >= K // 16  # one segment per batch


def test_import_memory_does_not_grow_with_K(tmp_path, always, monkeypatch):
    monkeypatch.setattr(npz_format, "STREAM_BYTES", 8 * N * 32)
    TextSet.from_texts([f"text {i}" for i in range(N)]).save(tmp_path / "t.jsonl")
    peaks = []
    for K in (100, 800):
        np.savez(tmp_path / f"v{K}.npz", L=_L(K, seed=K), models=np.array([f"m{i}" for i in range(K)]))
        tracemalloc.start()
        import_vectors(tmp_path / f"s{K}", tmp_path / f"v{K}.npz", texts=tmp_path / "t.jsonl")
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    # 8× the models: L grows 8× (256 KB), the batch does not; names and records grow a little
    assert peaks[1] < 3 * peaks[0], peaks


def test_a_bad_row_in_a_late_batch_stores_nothing(tmp_path, always, monkeypatch):
    monkeypatch.setattr(npz_format, "STREAM_BYTES", 8 * N * 10)
    s = _store(tmp_path)
    L = _L(50, seed=7)
    L[43, 3] = np.nan
    np.savez(tmp_path / "v.npz", L=L, models=np.array([f"m{i}" for i in range(50)]))
    with pytest.raises(FormatError, match="'m43'.*non-finite"):
        import_vectors(s.path, tmp_path / "v.npz")
    assert s.model_names() == [] and not (s.path / "matrix").exists()
    assert s.check().ok


def test_float32_map_agrees_with_float64(tmp_path, always):
    """The map of a store read from its float32 matrix: the same neighbours, and KL within 1e-5 relative
    (measured here: below 2e-6), as the float64 map of the same vectors."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from synthetic import lowrank_L

    K = 120
    L = lowrank_L(K, N, n_families=8, seed=8)
    s = _store(tmp_path)
    s.write_models([{"name": f"m{i}", "loglik": L[i]} for i in range(K)])
    mm32 = ModelMap.from_store(s)
    mm64 = ModelMap([f"m{i}" for i in range(K)], L)
    assert mm32.L.dtype == np.float32 and mm32.Q.dtype == np.float32
    assert mm32.threshold == pytest.approx(mm64.threshold, rel=1e-6)
    t32, t64 = mm32.neighbor_table(5), mm64.neighbor_table(5)
    assert (t32["neighbor"] == t64["neighbor"]).mean() > 0.99  # near ties may swap
    kl32, kl64 = mm32.kl(), mm64.kl()
    off = ~np.eye(K, dtype=bool)
    assert np.max(np.abs(kl32[off] - kl64[off]) / kl64[off]) < 1e-5


def test_object_storage_keeps_the_same_matrix(tmp_path, always):
    """Through fsspec's in-memory file system: segments read as bytes (no memory map), kept in step."""
    url = f"memory://lmmap-{os.getpid()}-{id(tmp_path)}/store"
    s = Store.create(url, TextSet.from_texts([f"text {i}" for i in range(N)]))
    L = _L(12, seed=9)
    s.write_models([{"name": f"m{i}", "loglik": L[i]} for i in range(12)])
    s.remove_models(["m0"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        names, L32 = s.consolidated()
    assert names == [f"m{i}" for i in range(1, 12)]
    np.testing.assert_allclose(L32, L[1:], rtol=2 ** -23)
    assert s.check().ok

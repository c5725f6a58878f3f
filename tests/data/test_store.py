"""The store: round trips, readable without lmmap, atomic and safe under concurrent writers."""

import json
import subprocess
import sys
import textwrap

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from lmmap.exceptions import LmmapError, LmmapWarning
from lmmap.data.store import Store
from lmmap.data.texts import TextSet


@pytest.fixture
def texts():
    return TextSet.from_texts([f"text number {i} " * 3 for i in range(12)])


@pytest.fixture
def store(tmp_path, texts):
    return Store.create(tmp_path / "store", texts)


def vec(seed, n=12):
    return -np.random.default_rng(seed).gamma(2.0, 50.0, size=n)


def test_round_trip_and_record(store):
    v = vec(0)
    store.write_model("org/model-a", v, n_tokens=np.arange(12), record={"convention": "full", "dtype": "float32"})
    names, L = store.matrix()
    assert names == ["org/model-a"]
    np.testing.assert_array_equal(L[0], v)
    rec = store.record("org/model-a")
    assert rec["convention"] == "full" and rec["dtype"] == "float32"
    assert rec["text_set_id"] == store.text_set_id and rec["n_texts"] == 12
    assert store.vectors("org/model-a")["n_tokens"].tolist() == list(range(12))


def test_readable_without_lmmap(store):
    store.write_model("a", vec(1))
    store.write_model("b", vec(2))
    df = duckdb.sql(f"SELECT count(*) AS n, count(DISTINCT text_pos) AS t FROM '{store.path}/models/*.parquet'").df()
    assert df.n[0] == 24 and df.t[0] == 12
    t = pq.read_table(next((store.path / "models").glob("a.parquet")))
    assert json.loads(t.schema.metadata[b"lmmap"])["model"] == "a"
    assert pd.read_parquet(store.path / "texts.parquet")["text"].tolist() == store.texts.texts


def test_reopen_checks_text_set(tmp_path, texts):
    Store.create(tmp_path / "s", texts)
    assert Store.create(tmp_path / "s", texts, exist_ok=True).n_texts == 12
    with pytest.raises(FileExistsError):
        Store.create(tmp_path / "s", texts)
    other = TextSet.from_texts(["different"] * 1 + [f"t{i}" for i in range(11)])
    with pytest.raises(LmmapError, match="another text set"):
        Store.create(tmp_path / "s", other, exist_ok=True)
    with pytest.raises(LmmapError, match="not an lmmap store"):
        Store(tmp_path / "nowhere")


def test_bad_vectors_are_refused_and_nothing_written(store):
    with pytest.raises(LmmapError, match="'short' has 5 log-likelihoods.*12 texts"):
        store.write_model("short", vec(0, 5))
    bad = vec(0)
    bad[3] = np.nan
    with pytest.raises(LmmapError, match="'nan' has 1 non-finite.*position 3"):
        store.write_model("nan", bad)
    with pytest.raises(LmmapError, match="duplicate model name 'x'"):
        store.write_models([{"name": "x", "loglik": vec(1)}, {"name": "x", "loglik": vec(2)}])
    huge = vec(0)
    huge[7] = -1e150  # its square overflows float64: distances would be inf
    with pytest.raises(LmmapError, match="'huge' has a log-likelihood of -1e\\+150 at text position 7"):
        store.write_model("huge", huge)
    assert store.model_names() == []
    assert not list((store.path / "models").iterdir())  # no temporary files left behind
    assert not (store.path / ".staging").exists() or not list((store.path / ".staging").iterdir())
    with pytest.warns(LmmapWarning, match="'pos' has 12 positive log-likelihood"):
        store.write_model("pos", -vec(0))  # not physical for real texts, but stored: a warning, not a refusal
    store.remove_model("pos")
    store.write_model("x", vec(1))
    with pytest.raises(LmmapError, match="already in the store.*replace=True") as err:
        store.write_model("x", vec(2))
    assert err.value.params == ("replace",)  # the CLI shows --replace
    store.write_model("x", vec(2), replace=True)
    np.testing.assert_array_equal(store.matrix()[1][0], vec(2))


def test_partial_models_and_conventions(store):
    store.write_model("full", vec(1))
    store.write_model("part", vec(2, 4), text_pos=[9, 1, 5, 3])
    names, L = store.matrix(text_pos=[1, 3, 9])
    np.testing.assert_array_equal(L[1], vec(2, 4)[[1, 3, 0]])
    with pytest.warns(LmmapWarning, match="left out 1 partial model.*'part' \\(4 of 12 texts\\).*lmmap score NAME"):
        assert store.matrix()[0] == ["full"]
    assert store.complete_models() == ["full"] and store.partial_models() == ["part"]
    with pytest.raises(LmmapError, match="'part' was scored on 4 of the 12 texts"):
        store.matrix(["full", "part"])
    assert store.models_with_texts([1, 5]) == ["full", "part"]
    assert store.models_with_texts([0]) == ["full"]
    store.write_model("other-conv", vec(3), record={"convention": "full"})
    with pytest.raises(LmmapError, match="different conventions.*allow_mixed=True") as err:
        store.matrix(["full", "other-conv"])
    assert err.value.params == ("allow_mixed",)  # the CLI shows --allow-mixed
    assert store.matrix(["full", "other-conv"], allow_mixed=True)[1].shape == (2, 12)


def test_metadata_merge(store):
    store.set_metadata(pd.DataFrame({"model": ["a", "b"], "model_type": ["base", "chat"]}))
    store.set_metadata(pd.DataFrame({"model": ["b", "c"], "family": ["x", "y"]}))
    md = store.metadata()
    assert md.loc["a", "model_type"] == "base" and md.loc["b", "family"] == "x" and md.loc["c", "family"] == "y"
    with pytest.raises(LmmapError, match="names model 'a' twice"):
        store.set_metadata(pd.DataFrame({"model": ["a", "a"], "t": [1, 2]}))


def test_checkpoints(store):
    store.save_checkpoint("m", "k1", [0, 1], [-1.0, -2.0], [3, 3], [False, False])
    store.save_checkpoint("m", "k1", [2], [-3.0], [3], [True])
    df = store.load_checkpoint("m", "k1")
    assert df.text_pos.tolist() == [0, 1, 2] and df.truncated.tolist() == [False, False, True]
    assert len(store.load_checkpoint("m", "k2")) == 0  # other settings: stale chunks dropped
    assert len(store.load_checkpoint("m", "k1")) == 0
    store.clear_checkpoint("m")


WRITER = textwrap.dedent(
    """
    import sys, numpy as np, pandas as pd
    from lmmap.data.store import Store
    store = Store(sys.argv[1]); tag = sys.argv[2]
    for i in range(25):
        v = -np.random.default_rng(hash((tag, i)) % 2**32).gamma(2.0, 50.0, size=store.n_texts)
        store.write_model(f"{tag}-{i}", v)
        store.set_metadata(pd.DataFrame({"model": [f"{tag}-{i}"], "writer": [tag]}))
    """
)


def test_two_processes_writing_different_models(store):
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(store.path), tag]) for tag in ("p", "q")]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    names = store.model_names()
    assert sorted(names) == sorted([f"{t}-{i}" for t in "pq" for i in range(25)])
    _, L = store.matrix()
    assert np.isfinite(L).all()
    md = store.metadata()
    assert len(md) == 50 and (md.loc[[f"p-{i}" for i in range(25)], "writer"] == "p").all()
    assert not [p for p in (store.path / "models").iterdir() if p.name.startswith(".")]

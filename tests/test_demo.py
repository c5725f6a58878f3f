"""The offline demo builds real models on local text, scores them and maps them; fine-tunes land near their base."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from lmmap.store import Store  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("demo")]


@pytest.fixture(scope="module")
def demo(demo_full):
    return demo_full


def test_each_finetune_is_nearer_its_base_than_to_unrelated_models(demo):
    result, _ = demo
    kl = pd.read_csv(result["paths"]["kl.csv"], index_col=0)
    meta = Store(result["store"]).metadata()
    finetunes = meta.index[meta["model_type"] == "finetune"]
    scratch = meta.index[meta["model_type"] == "scratch"]
    assert len(finetunes) == 4 and len(scratch) >= 1
    for ft in finetunes:
        base = meta.loc[ft, "parent"]
        for other in scratch:
            assert kl.loc[ft, base] < kl.loc[ft, other], (ft, base, other)
    # And the checkpoint of the base run lies nearer the base than the from-scratch model does.
    ckpt = "base-step60"
    assert meta.loc[ckpt, "model_type"] == "checkpoint"
    assert kl.loc["base", ckpt] < min(kl.loc["base", s] for s in scratch)


def test_outputs_exist_and_every_model_is_a_loadable_checkpoint(demo):
    result, out = demo
    for name in ("kl.csv", "coords.csv", "neighbors.csv", "map.png", "map.html"):
        assert Path(result["paths"][name]).stat().st_size > 0
    store = Store(result["store"])
    records = store.records()
    assert len(records) == result["n_models"] == 13
    assert store.n_texts == result["n_texts"] == 300
    assert {r["scorer"] for r in records.values()} == {"lmmap"}
    assert set(store.texts.sources) == {"code", "docs", "legal"}
    for name in records:
        assert (out / "models" / name / "config.json").exists()
        assert (out / "models" / name / "tokenizer.json").exists()
    assert {"model_type", "family", "domain"} <= set(store.metadata().columns)


def test_a_second_run_reuses_models_and_scores(demo):
    from lmmap.demo import run_demo

    result, out = demo
    weights = {p: p.stat().st_mtime_ns for p in (out / "models").glob("*/model.safetensors")}
    added = {n: r["added_ns"] for n, r in Store(result["store"]).records().items()}
    again = run_demo(out, size="full", progress=False)
    assert {p: p.stat().st_mtime_ns for p in weights} == weights  # nothing retrained
    assert {n: r["added_ns"] for n, r in Store(again["store"]).records().items()} == added  # nothing rescored
    if result["seconds"] > 20:  # the fixture really built it (not reused from LMMAP_TEST_DEMO_DIR)
        assert again["seconds"] < result["seconds"] / 2


def test_the_demo_refuses_a_directory_that_is_not_its_own(tmp_path):
    from lmmap.demo import run_demo
    from lmmap.exceptions import LmmapError

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(LmmapError, match="not an lmmap demo directory"):
        run_demo(tmp_path, size="small", progress=False)
    assert os.listdir(tmp_path) == ["notes.txt"]

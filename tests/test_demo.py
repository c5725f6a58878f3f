"""The offline demo builds real models on local text, scores them and maps them; fine-tunes land near their base."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from lmmap.data.store import Store  # noqa: E402

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
    assert len(finetunes) == 5 and len(scratch) >= 1
    for ft in finetunes:
        base = meta.loc[ft, "base_model"]
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
    assert len(records) == result["n_models"] == 15
    assert store.n_texts == result["n_texts"] == 1020
    assert {r["scorer"] for r in records.values()} == {"lmmap"}
    assert set(store.texts.sources) == {"code", "docs", "legal"}
    for name in list(records) + result["held_out"]:
        assert (out / "models" / name / "config.json").exists()
        assert (out / "models" / name / "tokenizer.json").exists()
    meta = store.metadata()
    assert {"model_type", "family", "base_model", "domain"} <= set(meta.columns)
    assert meta["family"].nunique() >= 6  # enough lineages for grouped 5-fold cross-validation


def test_models_csv_and_scores_csv_describe_every_model(demo):
    result, out = demo
    store = Store(result["store"])
    models = pd.read_csv(out / "models.csv", keep_default_na=False).set_index("model")
    assert list(models.index) == store.model_names()  # the store's models, in the store's order
    assert {"model_type", "family", "base_model"} <= set(models.columns)
    for name, row in models.iterrows():
        if row["model_type"] in ("finetune", "checkpoint"):
            assert row["base_model"] in models.index and row["base_model"] != name
        else:
            assert row["base_model"] == ""  # bases and from-scratch models derive from nothing
    assert store.metadata()["base_model"].fillna("").to_dict() == models["base_model"].to_dict()

    scores = pd.read_csv(out / "scores.csv").set_index("model")
    held_out = result["held_out"]
    assert held_out == ["base2-ft-docs"] and not store.has_model(held_out[0])
    assert set(scores.index) == set(models.index) | set(held_out)
    assert list(scores.columns) == ["top5_code", "top5_docs", "top5_legal"]
    assert scores.to_numpy().min() > 0 and scores.to_numpy().max() < 100
    # Measured, not made up: on average a fine-tune gains on its own domain's held-out text over its base.
    ft = models[models["model_type"] == "finetune"]
    gains = [scores.loc[m, f"top5_{r.domain}"] - scores.loc[r.base_model, f"top5_{r.domain}"] for m, r in ft.iterrows()]
    assert np.mean(gains) > 0, gains
    # ... and the benchmark text is not in the text set.
    from lmmap.demo import demo_plan, demo_text_set
    import json

    corpus = json.loads((out / "data" / "corpus.json").read_text())["domains"]
    texts, bench = demo_text_set(corpus, demo_plan("full"), 0, out / "data")
    assert texts.identity == store.texts.identity
    assert not set(texts.texts) & {c for chunks in bench.values() for c in chunks}


def test_the_demo_reports_its_kl_figures_and_the_session(demo):
    result, _ = demo
    s = result["kl_summary"]
    check = result["finetune_check"]
    assert s["kl_to_base_min"] == min(r["kl_to_base"] for r in check) > 0
    assert s["ratio_min"] > 1  # every fine-tune is nearer its base than any from-scratch model
    assert any(line.startswith("lmmap add ") and "base2-ft-docs" in line for line in result["session"])


def test_a_second_run_reuses_models_and_scores(demo):
    from lmmap.demo import run_demo

    result, out = demo
    weights = {p: p.stat().st_mtime_ns for p in (out / "models").glob("*/model.safetensors")}
    added = {n: r["added_ns"] for n, r in Store(result["store"]).records().items()}
    cache = out / "data" / "scores-cache.json"
    cached, scores = cache.stat().st_mtime_ns, (out / "scores.csv").read_text()
    again = run_demo(out, size="full", progress=None)
    assert {p: p.stat().st_mtime_ns for p in weights} == weights  # nothing retrained
    assert cache.stat().st_mtime_ns == cached and (out / "scores.csv").read_text() == scores  # nothing re-measured
    assert {n: r["added_ns"] for n, r in Store(again["store"]).records().items()} == added  # nothing rescored
    if result["seconds"] > 20:  # the fixture really built it (not reused from LMMAP_TEST_DEMO_DIR)
        assert again["seconds"] < result["seconds"] / 2


def test_the_demo_refuses_a_directory_that_is_not_its_own(tmp_path):
    from lmmap.demo import run_demo
    from lmmap.exceptions import LmmapError

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(LmmapError, match="not an lmmap demo directory"):
        run_demo(tmp_path, size="small", progress=None)
    assert os.listdir(tmp_path) == ["notes.txt"]

"""``lmmap metadata set/show/from-cards`` and ``--metadata`` on the commands that draw a map (issue 26), through
the real command line (:func:`lmmap.cli.main`, its one-line errors and notes included)."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_main import run_main
from synthetic import make_store

from lmmap.data.store import Store

NAMES = ["openai-community/gpt2", "gpt2-chat", "pythia-70m", "[bold]x", "unrelated"]


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(3)
    L = -rng.gamma(3.0, 100.0, size=(1, 40)) + rng.normal(size=(len(NAMES), 40)) * 5
    s = make_store(tmp_path, NAMES, np.minimum(L, -0.01),
                   pd.DataFrame({"model": NAMES, "model_type": ["base", "finetune", "base", "base", "base"]}))
    return s


def csv_file(path: Path, rows: dict) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def one_error(code, out, err, *pieces):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), (code, out, err)
    for p in pieces:
        assert p in lines[0], (p, lines[0])


def test_set_merges_by_model_name_in_one_change(store, tmp_path):
    before = store.metadata()
    table = csv_file(tmp_path / "models.csv", {"model": ["gpt2-chat", "pythia-70m"], "base_model": ["openai-community/gpt2", None],
                                               "family": ["gpt2", "pythia"], "model_type": ["sft", None]})
    code, out, err = run_main("metadata", "set", table, "--store", store.path)
    assert code == 0, err
    assert "set 3 column(s) for 2 model(s)" in out and "new column(s): base_model, family" in out
    assert "stored value(s) changed: 1" in out  # model_type of gpt2-chat; an empty cell keeps what is stored
    md = Store(store.path).metadata()
    assert md.loc["gpt2-chat", "model_type"] == "sft" and md.loc["pythia-70m", "model_type"] == "base"
    assert md.loc["gpt2-chat", "base_model"] == "openai-community/gpt2" and md.loc["pythia-70m", "family"] == "pythia"
    assert md.loc["unrelated", "model_type"] == before.loc["unrelated", "model_type"]  # rows it does not name: kept


def test_set_refuses_names_not_in_the_store_with_did_you_mean(store, tmp_path):
    table = csv_file(tmp_path / "models.csv", {"model": ["gpt2-chta", "pythia-70m"], "family": ["gpt2", "pythia"]})
    code, out, err = run_main("metadata", "set", table, "--store", store.path)
    one_error(code, out, err, "models.csv: 1 model(s) not in the store", "'gpt2-chta' (did you mean 'gpt2-chat'?)",
              "nothing was changed", "--allow-unknown")
    assert "family" not in Store(store.path).metadata().columns
    code, out, err = run_main("metadata", "set", table, "--store", store.path, "--allow-unknown")
    assert code == 0, err
    assert "kept for model(s) not in the store (--allow-unknown): 'gpt2-chta'" in out
    assert Store(store.path).metadata().loc["gpt2-chta", "family"] == "gpt2"


def test_set_replace_and_dry_run(store, tmp_path):
    table = csv_file(tmp_path / "models.csv", {"model": ["pythia-70m"], "family": ["pythia"]})
    code, out, err = run_main("metadata", "set", table, "--store", store.path, "--replace", "--dry-run")
    assert code == 0, err
    assert "would set 1 column(s) for 1 model(s)" in out and "column(s) dropped (--replace): model_type" in out
    assert "nothing was changed (--dry-run)" in out
    assert list(Store(store.path).metadata().columns) == ["model_type"]
    code, out, err = run_main("metadata", "set", table, "--store", store.path, "--replace")
    assert code == 0, err
    md = Store(store.path).metadata()
    assert list(md.index) == ["pythia-70m"] and list(md.columns) == ["family"]


def test_set_tells_a_bad_file_in_one_line(store, tmp_path):
    bad = tmp_path / "models.csv"
    bad.write_text("model,family\ngpt2-chat,a\ngpt2-chat,b\n")
    code, out, err = run_main("metadata", "set", bad, "--store", store.path)
    one_error(code, out, err, "models.csv: model 'gpt2-chat' has more than one row (lines 2 and 3)")
    code, out, err = run_main("metadata", "set", tmp_path / "nothing.csv", "--store", store.path)
    one_error(code, out, err, "nothing.csv does not exist")


def test_show_in_every_format_prints_names_literally(store):
    code, out, err = run_main("metadata", "show", "--store", store.path, "--format", "json")
    assert code == 0, err
    rows = json.loads(out)
    assert {r["model"] for r in rows} == set(NAMES) and all(set(r) == {"model", "model_type"} for r in rows)
    code, out, err = run_main("metadata", "show", "--store", store.path, "--format", "csv")
    assert code == 0 and out.splitlines()[0] == "model,model_type" and len(out.splitlines()) == 1 + len(NAMES)
    code, out, err = run_main("metadata", "show", "--store", store.path)
    assert code == 0 and "[bold]x" in out and "metadata of 5 models" in out  # markup shown as written
    # A whole number stays whole where other rows are empty (pandas reads the column back as floats).
    big = csv_file(store.path.parent / "params.csv", {"model": ["pythia-70m"], "n_params": [6_738_415_616]})
    assert run_main("metadata", "set", big, "--store", store.path)[0] == 0
    code, out, err = run_main("metadata", "show", "--store", store.path, "--format", "csv")
    assert "pythia-70m,base,6738415616" in out.splitlines() and "unrelated,base," in out.splitlines()
    code, out, err = run_main("metadata", "show", "--store", store.path, "--format", "json")
    assert {r["model"]: r["n_params"] for r in json.loads(out)}["pythia-70m"] == 6_738_415_616
    code, out, err = run_main("metadata", "show", "--store", store.path, "--format", "yaml")
    one_error(code, out, err, "--format must be one of table, csv, json")


# -- from-cards -------------------------------------------------------------------------------------------------


def card(**fields) -> str:
    import yaml

    return f"---\n{yaml.safe_dump(fields, sort_keys=False)}---\n\n# Model card\n"


def cached_model(cache: Path, hub_id: str, files: dict) -> None:
    repo = cache / ("models--" + hub_id.replace("/", "--"))
    commit = hashlib.sha1(hub_id.encode()).hexdigest()
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir()
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / name).symlink_to(os.path.relpath(blob, snap))


def tiny_safetensors(n: int) -> bytes:
    raw = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}).encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(4 * n)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    hub = tmp_path / "hf" / "hub"
    hub.mkdir(parents=True)
    cached_model(hub, "openai-community/gpt2", {"README.md": card(license="mit", tags=["exbert"]),
                                                "model.safetensors": tiny_safetensors(1000)})
    cached_model(hub, "someone/gpt2-chat", {
        "README.md": card(library_name="transformers", license="apache-2.0", base_model="openai-community/gpt2",
                          base_model_relation="finetune", tags=["trl", "sft"]),
        "model.safetensors": tiny_safetensors(1200)})
    cached_model(hub, "EleutherAI/pythia-70m", {"README.md": card(license="apache-2.0", tags=["pytorch", "causal-lm"])})
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    return hub


def test_from_cards_reads_the_hub_cache_and_merges_lineage(store, cache):
    # gpt2-chat and pythia-70m were scored from the hub (their records name the hub id); gpt2 is stored by its id.
    for name, source in (("gpt2-chat", "someone/gpt2-chat"), ("pythia-70m", "EleutherAI/pythia-70m")):
        Store(store.path).write_models([{"name": name, "loglik": Store(store.path).vectors(name)["loglik"].to_numpy(),
                                         "record": {"scorer": "lmmap", "source": source}}], replace=True)
    code, out, err = run_main("metadata", "from-cards", "--store", store.path, "--dry-run")
    assert code == 0, err
    assert "note: 2 model(s) of the store have no card under" in err and "'unrelated'" in err
    assert "would set" in out and "nothing was changed (--dry-run)" in out
    assert "base_model" not in Store(store.path).metadata().columns
    code, out, err = run_main("metadata", "from-cards", "--store", store.path)
    assert code == 0, err
    md = Store(store.path).metadata()
    assert md.loc["gpt2-chat", "base_model"] == "openai-community/gpt2"
    assert md.loc["gpt2-chat", "base_model_relation"] == "finetune" and md.loc["gpt2-chat", "license"] == "apache-2.0"
    assert md.loc["gpt2-chat", "n_params"] == 1200 and md.loc["openai-community/gpt2", "n_params"] == 1000
    assert md.loc["pythia-70m", "tags"] == "pytorch, causal-lm" and md.loc["gpt2-chat", "model_type"] == "finetune"
    # The declared lineage is the map's: lineage.csv has the fine-tune and its base.
    code, out, err = run_main("map", "-o", store.path.parent / "map", "--store", store.path, "--embedding", "mds")
    assert code == 0, err
    lineage = pd.read_csv(store.path.parent / "map" / "lineage.csv", keep_default_na=False)
    declared = lineage[lineage["base_model"] != ""]  # one row per model (the lineage test ran); one base declared
    assert list(declared["model"]) == ["gpt2-chat"] and list(declared["base_model"]) == ["openai-community/gpt2"]


def test_from_cards_of_a_directory_that_is_not_there(store, tmp_path):
    code, out, err = run_main("metadata", "from-cards", tmp_path / "nowhere", "--store", store.path)
    one_error(code, out, err, "nowhere is not a directory")


# -- --metadata where a map is drawn, and predict --scores in other formats ---------------------------------------


def test_neighbors_and_stability_take_metadata(store, tmp_path):
    meta = csv_file(tmp_path / "models.csv", {"model": NAMES, "family": ["gpt2", "gpt2", "pythia", "[red]odd", "z"]})
    code, out, err = run_main("neighbors", "gpt2-chat", "-k", "4", "--store", store.path, "--metadata", meta)
    assert code == 0, err
    assert "family" in out and "pythia" in out and "[red]odd" in out
    code, out, err = run_main("stability", "-o", tmp_path / "st", "--store", store.path, "--metadata", meta,
                              "--color-by", "family", "--R", "3", "--embedding", "mds", "--n", "30")
    assert code == 0, err
    code, out, err = run_main("stability", "-o", tmp_path / "st2", "--store", store.path, "--color-by", "family",
                              "--R", "3", "--embedding", "mds", "--n", "30")
    one_error(code, out, err, "unknown --color-by column 'family'")


def test_predict_takes_an_lm_eval_output_folder(tmp_path):
    from synthetic import ecosystem

    names, L, Q, fam, table, _ = ecosystem(K=30, N=80, n_families=6, n_bench=1, seed=9)
    s = make_store(tmp_path, names, L, pd.DataFrame({"model": names, "lineage": fam}))
    runs = tmp_path / "lm-eval"
    for n in names[:27] + ["nobody/gpt2-xl"]:
        folder = runs / n.replace("/", "__")
        folder.mkdir(parents=True)
        value = float(table.loc[n, "bench0"]) / 100 if n in table.index else 0.5
        (folder / "results_2024-05-01T10-00-00.000001.json").write_text(json.dumps({
            "results": {"arc_easy": {"alias": "arc_easy", "acc,none": value, "acc_stderr,none": 0.01}},
            "config": {"model": "hf", "model_args": f"pretrained={n},dtype=float32"}, "model_name": n,
            "date": 1714557600.0}))
    code, out, err = run_main("predict", "--store", s.path, "--scores", runs, "-o", tmp_path / "pred",
                              "--group-by", "lineage", "--seeds", "1", "--no-plots")
    assert code == 0, err
    assert "note: matched 27 of 30 models of the map; the scores table names 1 model(s) that are not in the store: " \
           "'nobody/gpt2-xl'" in err
    assert "arc_easy:acc" in out and "3 model(s) without scores predicted" in out


def test_add_takes_metadata_for_its_placed_map(tmp_path, monkeypatch):
    """``add --metadata``: the placed map is coloured by the file's column (scored by the fake backend)."""
    import dataclasses

    from lmmap.analyses import place
    from lmmap.data.texts import TextSet
    from lmmap.scoring.driver import score_models
    from lmmap.scoring.options import ScoringOptions

    texts = TextSet.from_texts([f"text {i}: " + "abcdefgh"[i % 8] * (5 + i % 7) + " the end" for i in range(40)])
    s = Store.create(tmp_path / "store", texts)
    existing = [f"m{i}" for i in range(6)]
    score_models(s, existing, options=ScoringOptions(backend="fake"))
    code, out, err = run_main("select", "--method", "uniform", "--n", "30", "-o", tmp_path / "subset.json",
                              "--store", s.path)
    assert code == 0, err
    real = place.add_models
    monkeypatch.setattr(place, "add_models", lambda *a, scoring=None, **kw: real(
        *a, scoring=dataclasses.replace(scoring, backend="fake"), **kw))
    meta = csv_file(tmp_path / "models.csv", {"model": [*existing, "new"], "family": ["a", "a", "b", "b", "c", "c", "a"]})
    code, out, err = run_main("add", "new", "--subset", tmp_path / "subset.json", "-o", tmp_path / "placed",
                              "--store", s.path, "--metadata", meta, "--color-by", "family", "--embedding", "mds",
                              "--R", "2")
    assert code == 0, err
    assert "family" in (tmp_path / "placed" / "map.html").read_text()
    assert "family" not in Store(s.path).metadata().columns  # the file is for this command only
    code, out, err = run_main("add", "new2", "--subset", tmp_path / "subset.json", "-o", tmp_path / "placed2",
                              "--store", s.path, "--color-by", "family")
    one_error(code, out, err, "unknown --color-by column 'family'")  # refused before anything is scored
    assert not (tmp_path / "placed2").exists()

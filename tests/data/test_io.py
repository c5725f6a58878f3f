"""Importing the authors' released formats into a store, and exporting back."""

import json
import pickle

import numpy as np
import pytest

from lmmap.exceptions import LmmapError
from lmmap.data.transfer import export_vectors, import_vectors, model_table
from lmmap.data.store import Store
from lmmap.data.formats import read_vectors


@pytest.fixture
def authors_texts(tmp_path):
    p = tmp_path / "texts-10k-pile.jsonl"
    ids = [5, 17, 2, 40, 8, 11]  # the authors' `index` ids, not positions
    p.write_text("".join(json.dumps({"index": i, "text": f"text {i} " * 20, "pile_set_name": "Pile-CC"}) + "\n" for i in ids))
    return p, ids


def test_scorer_output_directory_maps_text_ids_to_positions(tmp_path, authors_texts):
    texts, ids = authors_texts
    out = tmp_path / "scores"
    out.mkdir()
    truth = {}
    rng = np.random.default_rng(0)
    for org, name in [("EleutherAI", "pythia-70m"), ("gpt2", "small"), ("org", "third")]:
        ll = -rng.uniform(100, 900, size=len(ids))
        truth[f"{org}/{name}"] = ll
        lines = [
            json.dumps({"index": i, "num-tokens": 200, "log-likelihood": float(v), "token-log-probs": [float(v) / 200] * 3})
            for i, v in zip(ids, ll)
        ]
        rng.shuffle(lines)  # line order must not matter: lines are matched by index
        (out / f"{org}--{name}_bfloat16.jsonl").write_text("\n".join(lines) + "\n")
    import_vectors(tmp_path / "store", out, texts=texts)
    store = Store(tmp_path / "store")
    names, L = store.matrix()
    for n, row in zip(names, L):
        np.testing.assert_allclose(row, truth[n])
    assert store.record("gpt2/small")["convention"] == "reference"


def test_model_data_pickle_brings_metadata(tmp_path, authors_texts):
    texts, ids = authors_texts
    rng = np.random.default_rng(1)
    records = [
        {
            "model_name": f"org/m{i}",
            "model_type": ["llama", "gpt2", "llama"][i],
            "model_size": 0.1 * (i + 1),
            "tags": ["a", "b"],
            "log-likelihood-10k": -rng.uniform(10, 100, size=len(ids)),
            "score_v1_ARC": 30.0 + i,
        }
        for i in range(3)
    ]
    pkl = tmp_path / "model-data-3.pkl"
    pkl.write_bytes(pickle.dumps(records))
    with pytest.raises(LmmapError, match="allow_pickle=True") as err:
        import_vectors(tmp_path / "store", pkl, texts=texts)
    assert err.value.params == ("allow_pickle",)  # the CLI shows --allow-pickle
    import_vectors(tmp_path / "store", pkl, texts=texts, allow_pickle=True)
    store = Store(tmp_path / "store")
    md = store.metadata()
    assert md.loc["org/m1", "model_type"] == "gpt2" and md.loc["org/m2", "score_v1_ARC"] == 32.0
    table = model_table(store)
    assert list(table["model"]) == ["org/m0", "org/m1", "org/m2"] and "model_type" in table.columns


@pytest.mark.parametrize("suffix", ["npz", "parquet", "csv"])
def test_export_round_trip(tmp_path, authors_texts, suffix):
    texts, ids = authors_texts
    src = tmp_path / "in.npz"
    L = -np.random.default_rng(2).uniform(1, 50, size=(4, len(ids)))
    np.savez(src, L=L, models=np.array(["a", "b", "c", "d"]))
    import_vectors(tmp_path / "store", src, texts=texts)
    out = export_vectors(Store(tmp_path / "store"), tmp_path / f"out.{suffix}")
    back = read_vectors(out)
    assert back.names == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(back.L, L)


def test_library_messages_name_parameters_and_the_cli_shows_flags(tmp_path, authors_texts):
    """Library errors name the Python parameter (``params``); the CLI rewrites each to its flag."""
    from lmmap.params import for_cli
    from lmmap.data.texts import TextSet

    texts, _ = authors_texts
    with pytest.raises(LmmapError, match="convention must be one of reference, full, got 'bogus'") as err:
        import_vectors(tmp_path / "store", tmp_path / "nothing-read.npz", texts=texts, convention="bogus")
    assert for_cli(err.value).startswith("--convention must be one of")
    assert not (tmp_path / "store").exists()  # checked before anything is read or created
    with pytest.raises(LmmapError, match="not an lmmap store yet.*text set as texts=TEXTS.jsonl") as err:
        import_vectors(tmp_path / "store", tmp_path / "nothing-read.npz")
    assert "text set as --texts TEXTS.jsonl to create it" in for_cli(err.value)
    store = Store.create(tmp_path / "store", TextSet.load(texts))
    store.write_model("part", -np.ones(2), text_pos=[0, 3])
    with pytest.warns(Warning, match="left out 1 partial"), pytest.raises(LmmapError, match="include_partial=True") as err:
        export_vectors(store, tmp_path / "w.npz")
    assert "pass --include-partial," in for_cli(err.value)

"""Reading and writing vectors in every supported format, and the errors bad files give."""

import json
import os
import pickle

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmmap.exceptions import LmmapError
from lmmap.data.formats import (
    Vectors,
    read_metadata_csv,
    read_model_list,
    read_vectors,
    scorer_model_name,
    write_vectors,
)

K, N = 5, 20
NAMES = ["meta-llama/Llama-2-7b-hf", "gpt2", "org/model,with comma", "EleutherAI/pythia-70m", "z/last"]


@pytest.fixture
def L():
    # Awkward doubles (not short decimals) so a lossy writer would be caught.
    rng = np.random.default_rng(7)
    return -rng.gamma(2.0, 300.0, size=(K, N)) - rng.random((K, N)) * 1e-9


@pytest.fixture
def n_tokens():
    return np.random.default_rng(8).integers(100, 300, size=(K, N))


# -- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".npz", ".parquet", ".csv"])
def test_write_then_read_returns_the_same_names_and_matrix(tmp_path, L, suffix):
    path = write_vectors(tmp_path / f"v{suffix}", NAMES, L)
    v = read_vectors(path)
    assert isinstance(v, Vectors)
    assert v.names == NAMES
    assert v.L.dtype == np.float64 and v.L.shape == (K, N)
    np.testing.assert_array_equal(v.L, L)  # exact, not approximate


@pytest.mark.parametrize("suffix", [".npz", ".parquet"])
def test_text_set_id_tokens_convention_and_metadata_survive(tmp_path, L, n_tokens, suffix):
    meta = pd.DataFrame(
        {"model_type": ["llama-2", "gpt2", "x", "pythia", "z"], "model_size": [7, 0.124, 1, 0.07, 2]},
        index=pd.Index(NAMES, name="model"),
    )
    path = write_vectors(
        tmp_path / f"v{suffix}", NAMES, L, text_set_id="sha256:abc", n_tokens=n_tokens, metadata=meta, convention="full"
    )
    v = read_vectors(path)
    assert v.text_set_id == "sha256:abc"
    assert v.extra["convention"] == "full"
    np.testing.assert_array_equal(v.extra["n_tokens"], n_tokens)
    assert v.metadata.loc["gpt2", "model_type"] == "gpt2"
    assert v.metadata.loc["meta-llama/Llama-2-7b-hf", "model_size"] == 7


def test_text_positions_of_a_subset_survive(tmp_path, L):
    pos = np.arange(N) * 3 + 1
    for suffix in (".npz", ".parquet", ".csv"):
        v = read_vectors(write_vectors(tmp_path / f"v{suffix}", NAMES, L, text_pos=pos))
        np.testing.assert_array_equal(v.extra["text_pos"], pos)
        np.testing.assert_array_equal(v.L, L)


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path, L):
    target = tmp_path / "out.npz"
    write_vectors(target, NAMES, L)
    write_vectors(target, NAMES[:2], L[:2])  # overwrite in place
    assert read_vectors(target).names == NAMES[:2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npz"]


def test_write_refuses_unknown_suffix_and_bad_shapes(tmp_path, L):
    with pytest.raises(LmmapError, match=r"\.npz, \.parquet or \.csv"):
        write_vectors(tmp_path / "v.xlsx", NAMES, L)
    with pytest.raises(LmmapError, match="5 rows"):
        write_vectors(tmp_path / "v.npz", NAMES, L[:3])
    with pytest.raises(LmmapError, match="duplicate model name 'gpt2'"):
        write_vectors(tmp_path / "v.npz", ["gpt2", "gpt2"], L[:2])
    assert list(tmp_path.iterdir()) == []


# -- the authors' pickles --------------------------------------------------------------


def _authors_dict_pickle(path, L, names=NAMES, protocol=4):
    # As raw_log-likelihood_1018.pkl: {model name: numpy float array of N}, insertion order = model order.
    path.write_bytes(pickle.dumps({n: L[i].copy() for i, n in enumerate(names)}, protocol=protocol))
    return path


def _authors_records(L, key="log-likelihood-10k"):
    return [
        {
            "model_name": name,
            "model_type": f"type{i % 2}",
            "model_size": [7, 0.124, 1.5, 0.07, 13][i],
            "created_at": "2024-04-20T00:53:57+00:00",
            "downloads": 100 * i,
            "tags": ["transformers", "pytorch", f"tag{i}"],
            key: L[i].copy(),
            "mean_logp": float(L[i].mean()),
            "score_v1_ARC": 50.0 + i,
            "score_v1_GSM8K": np.float64(10.0 * i),
        }
        for i, name in enumerate(NAMES)
    ]


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_authors_log_likelihood_dict_pickle(tmp_path, L, protocol):
    names = NAMES[::-1]  # not sorted: insertion order must be kept
    path = _authors_dict_pickle(tmp_path / "raw_log-likelihood_1018.pkl", L, names, protocol)
    v = read_vectors(path, allow_pickle=True)
    assert v.names == names
    np.testing.assert_array_equal(v.L, L)
    assert v.metadata is None and v.extra["format"] == "pickle-dict"


def test_pickle_is_refused_without_allow_pickle(tmp_path, L):
    path = _authors_dict_pickle(tmp_path / "raw_log-likelihood_1018.pkl", L)
    with pytest.raises(LmmapError, match="allow_pickle=True") as err:
        read_vectors(path)
    assert "allow_pickle" in err.value.params  # the CLI shows --allow-pickle
    # Content decides, not the name: a pickle called .npz is still refused as a pickle.
    disguised = _authors_dict_pickle(tmp_path / "innocent.npz", L)
    with pytest.raises(LmmapError, match="allow_pickle=True"):
        read_vectors(disguised)


def test_malicious_pickle_is_refused_even_when_allowed(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "raw_log-likelihood_1018.pkl"
    path.write_bytes(pickle.dumps({"gpt2": Payload()}))
    with pytest.raises(LmmapError, match="refusing to unpickle"):
        read_vectors(path, allow_pickle=True)
    assert not marker.exists()


@pytest.mark.parametrize("key", ["log-likelihood-10k", "raw_log-likelihood-10k"])
def test_authors_model_data_pickle_gives_vectors_and_metadata(tmp_path, L, key):
    path = tmp_path / "model-data-1018.pkl"
    path.write_bytes(pickle.dumps(_authors_records(L, key), protocol=4))
    v = read_vectors(path, allow_pickle=True)
    assert v.names == NAMES
    np.testing.assert_array_equal(v.L, L)
    assert v.extra["vector_key"] == key
    md = v.metadata
    assert list(md.index) == NAMES and md.index.name == "model"
    assert key not in md.columns and "model_name" not in md.columns
    assert md.loc["gpt2", "tags"] == "transformers;pytorch;tag1"
    assert md.loc["gpt2", "model_size"] == 0.124
    assert md.loc["z/last", "score_v1_ARC"] == 54.0
    assert md.loc["EleutherAI/pythia-70m", "score_v1_GSM8K"] == 30.0
    assert md.loc["gpt2", "created_at"] == "2024-04-20T00:53:57+00:00"
    assert md.loc["gpt2", "mean_logp"] == pytest.approx(L[1].mean())


def test_model_data_pickle_without_a_vector_names_the_model(tmp_path, L):
    records = _authors_records(L)
    del records[2]["log-likelihood-10k"]
    path = tmp_path / "model-data-1018.pkl"
    path.write_bytes(pickle.dumps(records))
    with pytest.raises(LmmapError, match="'org/model,with comma'"):
        read_vectors(path, allow_pickle=True)


def test_vectors_of_different_lengths_name_the_model(tmp_path, L):
    obj = {n: L[i].copy() for i, n in enumerate(NAMES)}
    obj["gpt2"] = obj["gpt2"][:-1]
    path = tmp_path / "raw.pkl"
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(LmmapError) as err:
        read_vectors(path, allow_pickle=True)
    msg = str(err.value)
    assert "'gpt2'" in msg and "19" in msg and "20" in msg and str(path) in msg


def test_nan_names_the_model_and_count(tmp_path, L):
    L = L.copy()
    L[3, [2, 5, 7]] = [np.nan, np.inf, np.nan]
    path = _authors_dict_pickle(tmp_path / "raw.pkl", L)
    with pytest.raises(LmmapError) as err:
        read_vectors(path, allow_pickle=True)
    msg = str(err.value)
    assert "'EleutherAI/pythia-70m'" in msg and " 3 " in msg and "text column 2" in msg


def test_pickle_of_something_else_is_explained(tmp_path):
    path = tmp_path / "name_type_color_1018.pkl"
    path.write_bytes(pickle.dumps({"data_info": ("model_name", "type"), "data": [("gpt2", "gpt2")]}))
    with pytest.raises(LmmapError, match="'data_info'"):
        read_vectors(path, allow_pickle=True)


# -- NPZ -----------------------------------------------------------------------------


def test_npz_missing_arrays_are_listed(tmp_path, L):
    path = tmp_path / "v.npz"
    np.savez(path, L=L)
    with pytest.raises(LmmapError, match="missing 'models'"):
        read_vectors(path)


def test_npz_with_object_names_is_refused_without_unpickling(tmp_path, L):
    path = tmp_path / "v.npz"
    np.savez(path, L=L, models=np.array(NAMES, dtype=object))
    with pytest.raises(LmmapError, match="string array"):
        read_vectors(path)


def test_npz_row_count_must_match_names(tmp_path, L):
    path = tmp_path / "v.npz"
    np.savez(path, L=L, models=np.array(NAMES[:4]))
    with pytest.raises(LmmapError, match="5 rows but 'models' names 4"):
        read_vectors(path)


def test_duplicate_model_names_are_refused(tmp_path, L):
    path = tmp_path / "v.npz"
    np.savez(path, L=L, models=np.array(["a", "b", "c", "b", "d"]))
    with pytest.raises(LmmapError, match="duplicate model name 'b'"):
        read_vectors(path)


# -- Parquet -------------------------------------------------------------------------------


def _long_frame(L, pos_col="text_pos"):
    return pd.DataFrame(
        {
            "model": np.repeat(NAMES, N),
            pos_col: np.tile(np.arange(N), K),
            "loglik": L.reshape(-1),
            "n_tokens": np.arange(K * N),
        }
    )


def test_parquet_long_in_any_row_order(tmp_path, L):
    df = _long_frame(L).sample(frac=1.0, random_state=0)  # shuffled rows
    path = tmp_path / "long.parquet"
    df.to_parquet(path, index=False)
    v = read_vectors(path)
    assert sorted(v.names) == sorted(NAMES)
    for name, row in zip(v.names, v.L):
        np.testing.assert_array_equal(row, L[NAMES.index(name)])
    got_tokens = dict(zip(v.names, v.extra["n_tokens"]))
    np.testing.assert_array_equal(got_tokens["gpt2"], np.arange(N, 2 * N))


def test_parquet_long_with_index_column_and_subset_of_texts(tmp_path, L):
    df = _long_frame(L, pos_col="index")
    df["index"] = df["index"] * 10 + 5  # the authors' text ids, not positions
    path = tmp_path / "long.parquet"
    df.to_parquet(path, index=False)
    v = read_vectors(path)
    assert v.names == NAMES
    np.testing.assert_array_equal(v.L, L)
    np.testing.assert_array_equal(v.extra["text_index"], np.arange(N) * 10 + 5)


def test_parquet_long_model_missing_a_text_is_named(tmp_path, L):
    df = _long_frame(L)
    df = df[~((df["model"] == "gpt2") & (df["text_pos"] == 11))]
    path = tmp_path / "long.parquet"
    df.to_parquet(path, index=False)
    with pytest.raises(LmmapError, match=r"'gpt2' lacks 1 of the 20 texts .*text_pos 11"):
        read_vectors(path)


def test_parquet_long_duplicate_row_is_named(tmp_path, L):
    df = _long_frame(L)
    df = pd.concat([df, df[(df["model"] == "z/last") & (df["text_pos"] == 4)]])
    path = tmp_path / "long.parquet"
    df.to_parquet(path, index=False)
    with pytest.raises(LmmapError, match=r"'z/last' scores 1 texts more than once"):
        read_vectors(path)


def test_parquet_wide(tmp_path, L):
    df = pd.DataFrame(L, columns=[f"t{j}" for j in range(N)])
    df.insert(0, "model", NAMES)
    path = tmp_path / "wide.parquet"
    df.to_parquet(path)  # with pandas' index column, which is not a text
    v = read_vectors(path)
    assert v.names == NAMES and v.L.shape == (K, N)
    np.testing.assert_array_equal(v.L, L)


def test_parquet_without_model_column(tmp_path):
    path = tmp_path / "one-model.parquet"
    pq.write_table(pa.table({"text_pos": [0, 1], "loglik": [-1.0, -2.0]}), path)
    with pytest.raises(LmmapError, match="no 'model' column"):
        read_vectors(path)


# -- CSV -------------------------------------------------------------------------------


def _csv(tmp_path, lines):
    path = tmp_path / "vectors.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_wide_reads_names_as_strings(tmp_path):
    path = _csv(tmp_path, ["model,a,b", "001,-1.5,-2", "gpt2,-3,-4e2"])
    v = read_vectors(path)
    assert v.names == ["001", "gpt2"]  # not the integer 1
    np.testing.assert_array_equal(v.L, [[-1.5, -2.0], [-3.0, -400.0]])


def test_csv_non_numeric_cell_names_line_and_column(tmp_path):
    path = _csv(tmp_path, ["model,0,1,2", "a,-1,-2,-3", "b,-1,-2,-3", "c,-1,oops,-3", "d,-1,-2,-3"])
    with pytest.raises(LmmapError) as err:
        read_vectors(path)
    msg = str(err.value)
    assert str(path) in msg and "line 4" in msg and "column '1'" in msg and "'oops'" in msg and "'c'" in msg


def test_csv_missing_cell_names_model_and_line(tmp_path):
    path = _csv(tmp_path, ["model,0,1,2", "a,-1,-2,-3", "b,-1,,-3"])
    with pytest.raises(LmmapError, match=r"model 'b' has 1 missing .*line 3, column '1'"):
        read_vectors(path)


def test_csv_needs_model_first(tmp_path):
    path = _csv(tmp_path, ["name,0,1", "a,-1,-2"])
    with pytest.raises(LmmapError, match="first column must be 'model'"):
        read_vectors(path)


def test_csv_duplicate_model(tmp_path):
    path = _csv(tmp_path, ["model,0,1", "a,-1,-2", "b,-1,-2", "a,-3,-4"])
    with pytest.raises(LmmapError, match="duplicate model name 'a'"):
        read_vectors(path)


# -- the authors' scorer output ---------------------------------------------------------------


def _scorer_file(path, L_row, n_tok, order=None):
    order = range(len(L_row)) if order is None else order
    with open(path, "w", encoding="utf-8") as f:
        for i in order:
            tokens = [float(L_row[i]) / 2, float(L_row[i]) / 2]
            line = {"index": int(i), "num-tokens": int(n_tok[i]), "log-likelihood": float(L_row[i]), "token-log-probs": tokens}
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    return path


@pytest.fixture
def scorer_dir(tmp_path, L, n_tokens):
    d = tmp_path / "likelihood"
    d.mkdir()
    files = ["EleutherAI--pythia-70m_float16.jsonl", "gpt2_bfloat16.jsonl", "meta-llama--Llama-2-7b-hf_float32.jsonl"]
    for k, name in enumerate(files):
        order = np.random.default_rng(k).permutation(N) if k == 1 else None  # one file out of order
        _scorer_file(d / name, L[k], n_tokens[k], order)
    return d


def test_scorer_directory(scorer_dir, L, n_tokens):
    v = read_vectors(scorer_dir)
    assert v.names == ["EleutherAI/pythia-70m", "gpt2", "meta-llama/Llama-2-7b-hf"]
    np.testing.assert_array_equal(v.L, L[:3])
    np.testing.assert_array_equal(v.extra["n_tokens"], n_tokens[:3])
    np.testing.assert_array_equal(v.extra["text_index"], np.arange(N))
    assert v.extra["dtype"] == {"EleutherAI/pythia-70m": "float16", "gpt2": "bfloat16", "meta-llama/Llama-2-7b-hf": "float32"}


def test_single_scorer_file(scorer_dir, L):
    v = read_vectors(scorer_dir / "gpt2_bfloat16.jsonl")
    assert v.names == ["gpt2"]
    np.testing.assert_array_equal(v.L, L[1:2])


def test_scorer_file_names():
    from pathlib import Path

    assert scorer_model_name(Path("Qwen--Qwen2.5-0.5B_bfloat16.jsonl")) == ("Qwen/Qwen2.5-0.5B", "bfloat16")
    assert scorer_model_name(Path("org--name_with_underscore_float16.jsonl")) == ("org/name_with_underscore", "float16")
    assert scorer_model_name(Path("org--model_v2.jsonl")) == ("org/model_v2", None)


def test_malformed_scorer_line_names_file_and_line(scorer_dir):
    path = scorer_dir / "gpt2_bfloat16.jsonl"
    lines = path.read_text().splitlines()
    lines[6] = lines[6][:-5]  # cut off the end of line 7
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LmmapError, match=rf"{path}:7: malformed JSON"):
        read_vectors(scorer_dir)


def test_scorer_line_without_index_names_line(scorer_dir):
    path = scorer_dir / "gpt2_bfloat16.jsonl"
    lines = path.read_text().splitlines()
    obj = json.loads(lines[2])
    del obj["index"]
    lines[2] = json.dumps(obj)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(LmmapError, match=rf"{path}:3: 'index' must be an integer"):
        read_vectors(path)


def test_scorer_models_on_different_texts(scorer_dir):
    path = scorer_dir / "meta-llama--Llama-2-7b-hf_float32.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(LmmapError, match=r"'meta-llama/Llama-2-7b-hf' is scored on 19 texts .*lacks index 19"):
        read_vectors(scorer_dir)


def test_scorer_duplicate_text(scorer_dir):
    path = scorer_dir / "gpt2_bfloat16.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines + [lines[0]]) + "\n")
    with pytest.raises(LmmapError, match="appears on two lines"):
        read_vectors(path)


def test_text_set_given_as_vectors_is_explained(tmp_path):
    path = tmp_path / "texts-10k-pile.jsonl"
    path.write_text(json.dumps({"index": 0, "text": "hello", "pile_set_name": "Pile-CC"}) + "\n")
    with pytest.raises(LmmapError, match="looks like a text set: give it as texts=texts-10k-pile.jsonl") as err:
        read_vectors(path)
    from lmmap.params import for_cli

    assert "give it as --texts texts-10k-pile.jsonl, not as vectors" in for_cli(err.value)


def test_directory_without_jsonl(tmp_path):
    with pytest.raises(LmmapError, match="no .jsonl files"):
        read_vectors(tmp_path)


# -- files that are not vectors -------------------------------------------------------------


def test_empty_and_unknown_files(tmp_path):
    empty = tmp_path / "v.npz"
    empty.write_bytes(b"")
    with pytest.raises(LmmapError, match="is empty"):
        read_vectors(empty)
    odd = tmp_path / "v.xlsx"
    odd.write_bytes(b"hello")
    with pytest.raises(LmmapError, match="cannot tell the format"):
        read_vectors(odd)
    with pytest.raises(LmmapError, match="does not exist"):
        read_vectors(tmp_path / "missing.npz")


# -- model lists and metadata tables ------------------------------------------------------------


def test_read_model_list(tmp_path):
    path = tmp_path / "models_1018.yaml"
    path.write_text("- aaditya/Llama3-OpenBioLLM-8B\n- gpt2\n- '001'\n")
    assert read_model_list(path) == ["aaditya/Llama3-OpenBioLLM-8B", "gpt2", "001"]
    path.write_text("models: [gpt2]\n")
    with pytest.raises(LmmapError, match="YAML list"):
        read_model_list(path)
    path.write_text("- gpt2\n- 7\n")
    with pytest.raises(LmmapError, match="item 2 is 7"):
        read_model_list(path)
    path.write_text("- gpt2\n- gpt2\n")
    with pytest.raises(LmmapError, match="duplicate model name 'gpt2'"):
        read_model_list(path)


def test_read_metadata_csv(tmp_path):
    path = tmp_path / "MODELS.csv"
    path.write_text("model,model_type,model_size\ngpt2,gpt2,0.124\n001,llama,7\n")
    md = read_metadata_csv(path)
    assert list(md.index) == ["gpt2", "001"] and md.index.name == "model"
    assert md.loc["001", "model_size"] == 7


def test_metadata_csv_needs_model_column(tmp_path):
    path = tmp_path / "MODELS.csv"
    path.write_text("name,model_type\ngpt2,gpt2\n")
    with pytest.raises(LmmapError, match=r"no 'model' column .*name, model_type"):
        read_metadata_csv(path)


def test_metadata_csv_duplicate_model_names_lines(tmp_path):
    path = tmp_path / "MODELS.csv"
    path.write_text("model,model_type\ngpt2,a\nllama,b\ngpt2,c\n")
    with pytest.raises(LmmapError, match=r"'gpt2' has more than one row \(lines 2 and 4\)"):
        read_metadata_csv(path)

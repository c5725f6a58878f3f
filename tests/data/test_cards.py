"""Model cards (issue 26): lineage, license, tags and parameter counts from local models and the HF cache.

The tests write cards as the hub writes them (YAML front matter: ``base_model`` a string or a list,
``base_model_relation``, ``license``, ``library_name``, a ``tags`` list), ``config.json`` files with the real
sizes of gpt2, pythia-70m and Llama-2-7b, and safetensors files, in the hub cache's real layout
(``models--org--name/{blobs,refs,snapshots}``, snapshot files linked to their blobs).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmmap.data.formats import cards as C
from lmmap.exceptions import FormatError, LmmapWarning

GPT2 = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "activation_function": "gelu_new",
        "n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024, "n_ctx": 1024, "vocab_size": 50257}
PYTHIA_70M = {"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox", "hidden_act": "gelu",
              "hidden_size": 512, "intermediate_size": 2048, "num_attention_heads": 8, "num_hidden_layers": 6,
              "max_position_embeddings": 2048, "rotary_pct": 0.25, "tie_word_embeddings": False, "vocab_size": 50304}
LLAMA2_7B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu", "hidden_size": 4096,
             "intermediate_size": 11008, "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
             "max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "tie_word_embeddings": False, "vocab_size": 32000}


def card(**fields) -> str:
    """A model card as the hub writes it: YAML front matter (block lists), then the markdown."""
    import yaml

    front = yaml.safe_dump(fields, sort_keys=False, allow_unicode=True)
    return f"---\n{front}---\n\n# Model card\n\nThis model is a fine-tuned version of something.\n"


def safetensors_bytes(shapes: dict[str, list[int]]) -> bytes:
    """A safetensors file (float32 zeros): 8-byte little-endian header length, the JSON header, the data."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in shapes.items():
        size = 4 * int(np.prod(shape))
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + bytes(offset)


def cached_model(cache: Path, hub_id: str, files: dict[str, bytes | str], commit: str | None = None) -> Path:
    """``hub_id`` in the hub cache's layout: blobs by hash, refs/main, snapshots/<commit>/ links to the blobs."""
    repo = cache / ("models--" + hub_id.replace("/", "--"))
    commit = commit or hashlib.sha1(hub_id.encode()).hexdigest()
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
    return snap


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf-home" / "hub"
    cache.mkdir(parents=True)
    cached_model(cache, "openai-community/gpt2", {
        "README.md": card(language="en", tags=["exbert"], license="mit"),
        "config.json": json.dumps(GPT2),
    })
    cached_model(cache, "someone/gpt2-chat", {
        "README.md": card(library_name="transformers", license="apache-2.0", base_model="openai-community/gpt2",
                          base_model_relation="finetune", tags=["generated_from_trainer", "trl", "sft"],
                          datasets=["HuggingFaceH4/ultrachat_200k"], **{"model-index": [{"name": "gpt2-chat", "results": []}]}),
        "config.json": json.dumps(GPT2),
        "model.safetensors": safetensors_bytes({"wte.weight": [50257, 8], "h.0.attn.c_attn.weight": [8, 24],
                                                "h.0.attn.c_attn.bias": [24]}),
    })
    cached_model(cache, "someone/merged-7b", {
        "README.md": card(base_model=["meta-llama/Llama-2-7b-hf", "openai-community/gpt2"], library_name="transformers",
                          tags=["mergekit", "merge"]),
        "config.json": json.dumps(LLAMA2_7B),
    })
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    return cache


def test_the_cache_is_found_where_huggingface_hub_looks(tmp_path, monkeypatch):
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert C.hf_cache_dir() == tmp_path / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert C.hf_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert C.hf_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert C.hf_cache_dir() == tmp_path / "cache"


def test_cached_models_are_found_by_their_hub_ids(hub_cache):
    found = C.find_models()
    assert [m.hub_id for m in found] == ["openai-community/gpt2", "someone/gpt2-chat", "someone/merged-7b"]
    gpt2 = found[0]
    assert gpt2.revision == hashlib.sha1(b"openai-community/gpt2").hexdigest() and gpt2.path.parent.name == "snapshots"


def test_refs_main_picks_the_snapshot(tmp_path):
    cache = tmp_path / "hub"
    snap = cached_model(cache, "org/m", {"README.md": card(license="mit"), "config.json": "{}"}, commit="a" * 40)
    other = snap.parent / ("b" * 40)
    other.mkdir()
    (other / "README.md").write_text(card(license="apache-2.0"))
    (m,) = C.find_models(cache)
    assert m.revision == "a" * 40 and C.read_card(m)["license"] == "mit"


def test_a_card_in_the_hubs_format_gives_its_fields(hub_cache):
    models = {m.hub_id: m for m in C.find_models()}
    chat = C.read_card(models["someone/gpt2-chat"])
    assert chat["base_model"] == "openai-community/gpt2" and chat["base_models"] is None
    assert chat["base_model_relation"] == "finetune" and chat["license"] == "apache-2.0"
    assert chat["library_name"] == "transformers" and chat["tags"] == "generated_from_trainer, trl, sft"
    # The weights are counted from the safetensors header: 50257·8 + 8·24 + 24.
    assert chat["n_params"] == 50257 * 8 + 8 * 24 + 24 and chat["n_params_source"] == "safetensors"
    merged = C.read_card(models["someone/merged-7b"])
    assert merged["base_model"] == "meta-llama/Llama-2-7b-hf"
    assert merged["base_models"] == "meta-llama/Llama-2-7b-hf, openai-community/gpt2"
    # No weights: the count is estimated from config.json, and says so.
    assert merged["n_params"] == 6_738_415_616 and merged["n_params_source"] == "config.json (estimate)"
    gpt2 = C.read_card(models["openai-community/gpt2"])
    assert gpt2["base_model"] is None and gpt2["license"] == "mit" and gpt2["n_params"] == 124_439_808


def test_lineage_from_the_hubs_base_model_tags():
    fields = C.card_fields({"tags": ["base_model:finetune:org/base", "text-generation"], "license": "other",
                            "license_name": "llama2"})
    assert fields["base_model"] == "org/base" and fields["base_model_relation"] == "finetune"
    assert fields["tags"] == "text-generation" and fields["license"] == "llama2"


@pytest.mark.parametrize("config,expected", [(GPT2, 124_439_808), (PYTHIA_70M, 70_426_624), (LLAMA2_7B, 6_738_415_616)])
def test_parameter_estimates_from_config_match_the_published_counts(config, expected):
    assert C.config_parameters(config) == expected


def test_the_safetensors_header_count_agrees_with_the_safetensors_library(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    tensors = {"a": np.zeros((3, 5), np.float16), "b": np.zeros((7,), np.float32), "c": np.zeros((2, 2, 2), np.int8)}
    st.save_file(tensors, str(tmp_path / "model.safetensors"))
    assert C.safetensors_parameters(tmp_path / "model.safetensors") == 15 + 7 + 8
    # Sharded weights: the index's files, each counted once.
    (tmp_path / "model.safetensors").unlink()
    st.save_file({"a": tensors["a"]}, str(tmp_path / "model-00001-of-00002.safetensors"))
    st.save_file({"b": tensors["b"]}, str(tmp_path / "model-00002-of-00002.safetensors"))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 58}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                                       "b": "model-00002-of-00002.safetensors"}}))
    assert C.count_parameters(tmp_path) == (22, "safetensors")


def test_damaged_files_are_named(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(FormatError, match=r"model.safetensors: not a safetensors file"):
        C.safetensors_parameters(bad)
    readme = tmp_path / "README.md"
    readme.write_text("---\nlicense: mit\nbase_model: [unclosed\n---\n")
    with pytest.raises(FormatError, match=r"README.md:\d+: the card's front matter is not valid YAML"):
        C.read_front_matter(readme)
    readme.write_text("---\nlicense: mit\n")
    with pytest.raises(FormatError, match="no closing '---' line"):
        C.read_front_matter(readme)
    readme.write_text("# just markdown\n")
    assert C.read_front_matter(readme) == {}


def test_a_model_with_a_damaged_card_is_left_out_with_a_note(tmp_path):
    good, bad = tmp_path / "good", tmp_path / "bad"
    for d in (good, bad):
        d.mkdir()
        (d / "config.json").write_text(json.dumps(GPT2))
    (good / "README.md").write_text(card(license="mit"))
    (bad / "README.md").write_text("---\ntags: [a\n---\n")
    with pytest.warns(LmmapWarning, match=r"bad: left out \(.*README.md:\d+: the card's front matter is not valid YAML"):
        table = C.read_cards(C.find_models(tmp_path))
    assert list(table.index) == ["good"] and table.loc["good", "license"] == "mit"


def test_local_directories_are_models_or_folders_of_models(tmp_path):
    (tmp_path / "runs" / "my-ft").mkdir(parents=True)
    (tmp_path / "runs" / "my-ft" / "config.json").write_text(json.dumps(GPT2))
    (tmp_path / "EleutherAI" / "pythia-70m").mkdir(parents=True)
    (tmp_path / "EleutherAI" / "pythia-70m" / "config.json").write_text(json.dumps(PYTHIA_70M))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.md").write_text("not a model")
    assert [m.model_id for m in C.find_models(tmp_path)] == ["EleutherAI/pythia-70m", "runs/my-ft"]
    assert [m.model_id for m in C.find_models(tmp_path / "runs" / "my-ft")] == ["my-ft"]
    with pytest.raises(FormatError, match="is not a directory"):
        C.find_models(tmp_path / "nothing")


def test_cards_are_matched_to_the_stores_models(hub_cache, tmp_path):
    local = tmp_path / "runs" / "gpt2-local"
    local.mkdir(parents=True)
    (local / "config.json").write_text(json.dumps(GPT2))
    (local / "README.md").write_text(card(base_model="someone/gpt2-chat", license="mit"))
    records = {
        # Scored from the hub: its record names the hub id; stored under another name.
        "gpt2": {"scorer": "lmmap", "source": "openai-community/gpt2"},
        "gpt2@layer3": {"scorer": "lmmap", "source": "openai-community/gpt2"},
        # Imported under its hub id.
        "someone/gpt2-chat": {"scorer": "import", "source": "/data/vectors.npz"},
        "unrelated": {"scorer": "lmmap", "source": "org/not-cached"},
    }
    meta, without, unused = C.card_metadata(records, hub_cache)
    assert set(meta.index) == {"gpt2", "gpt2@layer3", "someone/gpt2-chat"} and without == ["unrelated"]
    assert unused == ["someone/merged-7b"]
    # The base is a model of the store: written as its store name, so that the map draws the line.
    assert meta.loc["someone/gpt2-chat", "base_model"] == "gpt2"
    assert meta.loc["someone/gpt2-chat", "base_model_relation"] == "finetune"
    assert meta.loc["gpt2", "n_params"] == 124_439_808 and pd.isna(meta.loc["gpt2", "base_model"])
    assert meta.loc["gpt2@layer3", "license"] == "mit"
    # A local directory: matched by the directory its record names.
    records = {"gpt2-local": {"scorer": "lmmap", "source": str(local.resolve())}}
    meta, without, unused = C.card_metadata(records, tmp_path / "runs")
    assert meta.loc["gpt2-local", "base_model"] == "someone/gpt2-chat" and without == [] and unused == []
    # A layer of a fine-tune shares its card's license, not its lineage (its line is its own: layers_of).
    records["gpt2-local@layer1"] = {"scorer": "lmmap", "source": str(local.resolve())}
    meta, _, _ = C.card_metadata(records, tmp_path / "runs")
    assert meta.loc["gpt2-local@layer1", "license"] == "mit" and pd.isna(meta.loc["gpt2-local@layer1", "base_model"])

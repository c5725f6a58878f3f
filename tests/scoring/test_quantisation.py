"""Quantised checkpoints are recognised from their weights (issue 25): what ``lmmap score`` records as metadata
``quantisation``, so that the lineage test orders a model and its near-identical 8-bit copy."""

from __future__ import annotations

import numpy as np
import pytest

from lmmap.scoring.quantisation import matrix_grid, weight_grid


def _absmax(w, axis, levels):
    s = np.abs(w).max(axis=axis, keepdims=True) / levels
    return (np.round(w / s) * s).astype(np.float32)


@pytest.mark.parametrize("axis, levels, label", [
    (None, 127, "int8 absmax per tensor"), (1, 127, "int8 absmax per row"), (0, 127, "int8 absmax per column"),
    (1, 7, "int4 absmax per row"),
])
def test_each_grid_is_named(axis, levels, label):
    w = np.random.default_rng(0).normal(0, 0.02, (96, 384)).astype(np.float32)
    assert matrix_grid(_absmax(w, axis, levels)) == label


def test_group_and_min_max_grids_are_named():
    w = np.random.default_rng(0).normal(0, 0.02, (96, 384)).astype(np.float32)
    groups = _absmax(w.reshape(-1, 128), 1, 127).reshape(w.shape)
    assert matrix_grid(groups) == "int8 absmax per group of 128"
    lo, s = w.min(), (w.max() - w.min()) / 255
    assert matrix_grid((np.round((w - lo) / s) * s + lo).astype(np.float32)) == "uint8 min-max per tensor"


def test_float8_casts_are_named():
    torch = pytest.importorskip("torch")
    w = torch.randn(64, 256) * 0.02
    assert matrix_grid(w.to(torch.float8_e4m3fn).float().numpy()) == "float8 e4m3"
    assert matrix_grid(w.to(torch.float8_e5m2).float().numpy()) == "float8 e5m2"


def test_trained_like_float_weights_are_never_called_quantised():
    """400 float matrices of many shapes and scales, in float32 and float16: no grid (a grid needs 99% of the
    entries on it; by chance about 0.2–1.5%)."""
    rng = np.random.default_rng(1)
    for _ in range(300):
        w = rng.standard_t(5, (rng.integers(16, 300), rng.integers(16, 300))) * rng.uniform(1e-3, 1.0)
        assert matrix_grid(w.astype(np.float32)) is None
    eps16 = float(np.finfo(np.float16).eps)
    for _ in range(100):
        assert matrix_grid(rng.normal(0, 0.02, (96, 384)).astype(np.float16), eps=eps16) is None
    # ... while an 8-bit copy read in float16 is still told (the tolerance follows the precision).
    w = rng.normal(0, 0.02, (96, 384)).astype(np.float32)
    assert matrix_grid(_absmax(w, 0, 127).astype(np.float16), eps=eps16) == "int8 absmax per column"


def test_a_model_is_quantised_when_most_of_its_matrices_are():
    rng = np.random.default_rng(2)
    plain = [rng.normal(0, 0.02, (64, 256)).astype(np.float32) for _ in range(8)]
    assert weight_grid(plain) is None
    assert weight_grid([_absmax(m, 1, 127) for m in plain]) == "int8 absmax per row"
    assert weight_grid([_absmax(m, 1, 127) for m in plain[:4]] + plain[4:]) is None


def _int8_copy(src, dst):
    """``src`` with every weight matrix of its blocks rounded to 255 levels per output unit, saved to ``dst``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and "wte" not in name and "wpe" not in name:
                scale = p.abs().amax(dim=0, keepdim=True).clamp(min=1e-12) / 127.0
                p.copy_(torch.round(p / scale).clamp(-127, 127) * scale)
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


@pytest.mark.usefixtures("one_torch_thread")
def test_scoring_records_a_quantised_copy(tmp_path, tiny_gpt2_dir, stdlib_texts):
    """Through the real loading code: the copy's record and metadata say ``int8 absmax per column`` (GPT-2's
    Conv1D stores (in, out)), the original's nothing."""
    pytest.importorskip("transformers")
    from lmmap.data.store import Store
    from lmmap.data.texts import TextSet
    from lmmap.scoring import score_models

    copy = _int8_copy(tiny_gpt2_dir, tmp_path / "tiny-gpt2-int8")
    store = Store.create(tmp_path / "store", TextSet.from_texts([t[:300] for t in stdlib_texts[:12]]))
    out = score_models(store, [str(tiny_gpt2_dir), str(copy)], device="cpu", progress=False)
    assert all(s.ok for s in out.values())
    md = store.metadata()
    assert md.loc["tiny-gpt2-int8", "quantisation"] == "int8 absmax per column"
    assert "tiny-gpt2" not in md.index or not isinstance(md.loc["tiny-gpt2"].get("quantisation"), str)
    assert store.record("tiny-gpt2-int8")["quantisation"] == "int8 absmax per column"
    assert store.record("tiny-gpt2")["quantisation"] is None


def test_model_quantisation_reads_a_quantization_config():
    torch = pytest.importorskip("torch")
    from lmmap.scoring.hf import model_quantisation

    class Config:
        quantization_config = {"quant_method": "bitsandbytes", "load_in_8bit": True}

    model = torch.nn.Linear(4, 4)
    model.config = Config()
    assert model_quantisation(model) == "bitsandbytes 8-bit"
    Config.quantization_config = {"quant_method": "gptq", "bits": 4}
    assert model_quantisation(model) == "gptq 4-bit"


@pytest.mark.parametrize("axis, label", [(1, "int8 absmax per row"), (0, "int8 absmax per column")])
def test_a_large_matrix_is_read_in_whole_rows_and_whole_columns(axis, label):
    """Past MAX_ELEMENTS entries a matrix is read as two slices: a scale per column needs whole columns (the first
    rows alone would miss each column's maximum and fall off the grid)."""
    torch = pytest.importorskip("torch")
    from lmmap.scoring.hf import model_quantisation
    from lmmap.scoring.quantisation import MAX_ELEMENTS

    model = torch.nn.Sequential(torch.nn.Linear(2100, 2100, bias=False), torch.nn.Linear(2100, 2100, bias=False))
    assert model[0].weight.numel() > MAX_ELEMENTS
    assert model_quantisation(model) is None
    with torch.no_grad():
        for layer in model:
            w = layer.weight.numpy()
            layer.weight.copy_(torch.from_numpy(_absmax(w, axis, 127)))
    assert model_quantisation(model) == label

"""Scoring on a CUDA GPU (issue 12 §2): these tests run only where torch sees one.

CI has no GPU, so here they are skipped; on a GPU machine run
``scripts/gpu-check.sh`` (these tests, then ``benchmarks/bench_gpu.py``).
Each one checks the GPU against an independent computation: the same saved
model scored in float32 on the CPU, by the CPU path the rest of the suite
tests.

- float32 on the GPU, padded and packed (SDPA with a block-diagonal mask, or
  flash attention's varlen kernels where installed), equals the CPU within
  1e-3 nats per text (the vLLM agreement bound; kernels sum in other orders);
- bfloat16 on the GPU (fp32 log-softmax) through the store, with the token
  budget sized from free GPU memory, stays close to float32;
- a batch that really runs out of GPU memory (the allocator capped with
  ``torch.cuda.set_per_process_memory_fraction``) is split and retried,
  giving the uncapped run's sums;
- the Ray executor with ``gpus_per_model=1`` (where Ray is installed) stores
  what the local GPU run stores.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from lmmap.data.store import Store  # noqa: E402
from lmmap.data.texts import TextSet  # noqa: E402
from lmmap.scoring import score_models  # noqa: E402
from lmmap.scoring.hf import CUDA_BATCH_TOKENS_RANGE, HFScorer, load_model, score_texts  # noqa: E402
from text_pieces import text_pieces  # noqa: E402

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU is visible to torch"),
    pytest.mark.usefixtures("one_torch_thread"),
]


@pytest.fixture(scope="module")
def texts(stdlib_texts) -> list[str]:
    """Real texts of many lengths, some longer than the 64-token context."""
    return text_pieces(stdlib_texts[20:30], ((0, 20, 9), (500, 150, 17)))


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory, tiny_tokenizer):
    """A tiny Llama (grouped-query attention, RMSNorm, rotary positions), saved with ``save_pretrained``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=tiny_tokenizer.bos_token_id, eos_token_id=tiny_tokenizer.eos_token_id)
    torch.manual_seed(5)
    path = tmp_path_factory.mktemp("cuda") / "llama"
    LlamaForCausalLM(cfg).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_float32_on_the_gpu_equals_the_cpu_padded_and_packed(arch, tiny_gpt2_dir, llama_dir, texts):
    path = str(tiny_gpt2_dir if arch == "gpt2" else llama_dir)
    model, tok = load_model(path, device="cpu", dtype="float32")
    want, n_want, _ = score_texts(model, tok, texts, packing="off", batch_tokens=600)
    model, tok = load_model(path, device="cuda", dtype="float32")
    assert next(model.parameters()).device.type == "cuda"
    # a model that fits one GPU is on one GPU, not spread over all the visible ones
    assert len({str(d) for d in (getattr(model, "hf_device_map", None) or {}).values()}) <= 1
    assert HFScorer(model, tok).describe()["device"].startswith("cuda")
    for packing in ("off", "on"):
        scorer = HFScorer(model, tok, packing=packing)
        mode = scorer.prepare(np.arange(1, 40), 600)["mode"]
        assert ("packed" in mode) == (packing == "on"), mode
        got, n_got, _ = score_texts(model, tok, texts, packing=packing, batch_tokens=600)
        assert n_got.tolist() == n_want.tolist()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-3, err_msg=f"{arch}, packing={packing}")


def test_bfloat16_through_the_store_with_the_budget_from_free_memory(tiny_gpt2_dir, texts, tmp_path):
    ts = TextSet.from_texts(texts)
    cpu, gpu = Store.create(tmp_path / "cpu", ts), Store.create(tmp_path / "gpu", ts)
    score_models(cpu, [str(tiny_gpt2_dir)], device="cpu")
    st = score_models(gpu, [str(tiny_gpt2_dir)], device="cuda", dtype="bfloat16")["tiny-gpt2"]
    assert st.status == "scored", st
    rec = gpu.record("tiny-gpt2")
    assert rec["device"].startswith("cuda") and rec["dtype"] == "bfloat16"
    lo, hi = CUDA_BATCH_TOKENS_RANGE
    assert lo <= rec["batch_tokens"] <= hi and rec["batch_tokens"] % 256 == 0  # sized from free GPU memory
    a, b = cpu.vectors("tiny-gpt2")["loglik"].to_numpy(), gpu.vectors("tiny-gpt2")["loglik"].to_numpy()
    assert np.isfinite(b).all()
    # bf16 weights and activations, fp32 log-softmax: close to float32 per text, the same order of texts.
    assert np.median(np.abs(b - a) / np.abs(a)) < 2e-2
    assert np.corrcoef(a, b)[0, 1] > 0.999


def test_a_batch_that_runs_out_of_gpu_memory_is_split_and_retried(tmp_path, tiny_tokenizer, make_tiny_gpt2):
    """No stand-in: the caching allocator is capped so that a few rows fit and the whole batch does not."""
    path = make_tiny_gpt2(tmp_path / "wide", tiny_tokenizer, seed=2, n_embd=512, n_head=8, n_layer=2,
                          n_positions=256)
    model, tok = load_model(str(path), device="cuda", dtype="float32")
    rng = np.random.default_rng(0)
    ids = [rng.integers(1, len(tok), 256) for _ in range(64)]
    first = np.ones(len(ids), np.int64)
    free = HFScorer(model, tok, packing="off")
    free.prepare(ids[0], 64 * 256)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_reserved()
    torch.cuda.reset_peak_memory_stats()
    want = free.score(ids, first)  # the whole batch in one forward
    peak_all = torch.cuda.max_memory_reserved() - base
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    free.score(ids[:2], first[:2])
    peak_two = torch.cuda.max_memory_reserved() - base
    assert free.n_oom_splits == 0 and peak_all > 8 * peak_two, (peak_all, peak_two)
    total = torch.cuda.get_device_properties(0).total_memory
    capped = HFScorer(model, tok, packing="off")
    capped.prepare(ids[0], 64 * 256)
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction((base + 2 * peak_two) / total)
    try:
        got = capped.score(ids, first)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    assert capped.n_oom_splits > 0 and capped.token_cap < 64 * 256
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_ray_with_a_gpu_per_model_stores_what_the_local_gpu_run_stores(tiny_gpt2_dir, llama_dir, texts, tmp_path):
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # every Ray socket on 127.0.0.1
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray = pytest.importorskip("ray")
    ts = TextSet.from_texts(texts)
    local, other = Store.create(tmp_path / "local", ts), Store.create(tmp_path / "ray", ts)
    models = [str(tiny_gpt2_dir), str(llama_dir)]
    score_models(local, models, device="cuda", batch_tokens=600)
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        st = score_models(other, models, device="cuda", batch_tokens=600, executor="ray", gpus_per_model=1)
    finally:
        ray.shutdown()
    assert [s.status for s in st.values()] == ["scored", "scored"], st
    for name in ("tiny-gpt2", "llama"):
        a, b = local.vectors(name), other.vectors(name)
        np.testing.assert_allclose(b["loglik"].to_numpy(), a["loglik"].to_numpy(), rtol=0, atol=1e-5)
        rec = other.record(name)
        assert rec["executor"] == "ray" and rec["device"].startswith("cuda")

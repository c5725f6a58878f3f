"""Padding-free (packed) batches, out-of-memory splitting, and the CUDA token budget of the transformers backend.

Packed batches must give the numbers padded batches give (≤ 1e-4 nats in
float32) on real tiny models — GPT-2 (learned positions) and Llama (rotary
positions, grouped keys) built locally — and the tests check that packing
really happened (fewer tokens went through the decoder), so equal numbers
cannot come from two runs of the padded path.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from lmmap.exceptions import InputError, ScoringError  # noqa: E402
from text_pieces import text_pieces  # noqa: E402
from lmmap.scoring.hf import (  # noqa: E402
    CUDA_BATCH_TOKENS_RANGE, HFScorer, LogProbComputer, cuda_batch_tokens, cuda_device_map, load_model, score_texts,
    weight_bytes,
)

CONTEXT = 64
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def texts(stdlib_texts) -> list[str]:
    """Texts from a few characters to far beyond the context: batches mix very different lengths."""
    return text_pieces(stdlib_texts[20:30], ((0, 8, 5), (200, 60, 13), (900, 1200, 0)))


@pytest.fixture(scope="module")
def llama(tmp_path_factory, tiny_bos_tokenizer):
    """A tiny Llama (rotary positions, 4 query heads sharing 2 key heads) with a Llama-like BOS tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_bos_tokenizer
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=CONTEXT, initializer_range=0.2,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("models") / "tiny-llama"
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return load_model(str(path), device="cpu", dtype="float32")


class DecoderTokens:
    """Records the token slots (padding included) of each batch that goes through the decoder."""

    def __init__(self, model):
        self.calls: list[int] = []
        self.handle = model.base_model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.calls.append(int(ids.numel()))

    def close(self):
        self.handle.remove()


def run(model, tok, texts, packing, **kw):
    """Scores, and the slots of each forward (the probes at load time included)."""
    counter = DecoderTokens(model)
    try:
        out = score_texts(model, tok, texts, packing=packing, **kw)
    finally:
        counter.close()
    return out, counter.calls


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("convention", ["reference", "full"])
def test_packed_equals_padded(request, arch, convention, texts):
    model, tok = request.getfixturevalue(arch)
    # One batch for all texts: rows of 3 to 64 tokens side by side.
    budget = CONTEXT * len(texts)
    (ll_pad, n_pad, tr_pad), slots_pad = run(model, tok, texts, "off", convention=convention, batch_tokens=budget)
    (ll_pk, n_pk, tr_pk), slots_pk = run(model, tok, texts, "on", convention=convention, batch_tokens=budget)
    np.testing.assert_allclose(ll_pk, ll_pad, rtol=0, atol=1e-4)
    assert n_pk.tolist() == n_pad.tolist() and tr_pk.tolist() == tr_pad.tolist()
    # The largest forward is the batch (the probes are smaller).
    assert max(slots_pad) == len(texts) * CONTEXT
    assert max(slots_pk) < 0.8 * max(slots_pad)  # the padding really was packed away
    assert np.ptp(ll_pad) > 50  # texts of very different lengths and scores


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_packed_equals_padded_with_a_stride(request, arch, texts):
    model, tok = request.getfixturevalue(arch)
    kw = dict(max_length=32, stride=12, batch_tokens=32 * 400)
    (ll_pad, _, _), slots_pad = run(model, tok, texts, "off", **kw)
    (ll_pk, _, _), slots_pk = run(model, tok, texts, "on", **kw)
    np.testing.assert_allclose(ll_pk, ll_pad, rtol=0, atol=1e-4)
    # Most rows are full windows; the last windows and the short texts share lanes in the last batch.
    assert slots_pk[-1] < slots_pad[-1] and sum(slots_pk) < sum(slots_pad)


def test_rows_of_very_different_lengths_in_one_batch(llama):
    model, _ = llama
    rng = np.random.default_rng(0)
    lengths = [64, 2, 37, 3, 61, 9, 20, 2, 50]
    rows = [rng.integers(0, model.config.vocab_size, n) for n in lengths]
    first = np.array([1, 1, 5, 1, 30, 2, 1, 1, 49])  # strided windows score from later positions
    comp = LogProbComputer(model, packing="on")
    assert comp.can_pack and comp.layout == "packed (block mask)"
    with torch.inference_mode():
        alone = np.array([comp.row_logliks([r], f[None], layout="padded")[0] for r, f in zip(rows, first)])
        padded = comp.row_logliks(rows, first, layout="padded")
        packed = comp.row_logliks(rows, first, layout="packed")
        one_lane = comp.row_logliks(rows, first, layout="one-lane")  # flash attention's varlen layout
    lane, off, n_lanes, width = comp._packs(np.array(lengths))
    assert n_lanes < len(rows) and width == 64
    # No two rows overlap in a lane.
    ends = off + np.array(lengths)
    assert (ends <= width).all()
    for k in range(n_lanes):
        spans = sorted(zip(off[lane == k], ends[lane == k]))
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
    for got in (padded, packed, one_lane):
        np.testing.assert_allclose(got, alone, rtol=0, atol=1e-4)


def test_auto_packs_only_where_it_saves_a_lane(gpt2, texts):
    model, tok = gpt2
    comp = LogProbComputer(model, packing="auto")
    assert comp.layout == "packed where it saves padding (block mask)"
    equal = [np.arange(1, 40) % 100, np.arange(2, 41) % 100]
    assert comp._packs(np.array([39, 39]))[2] == 2  # nothing to gain: stays padded (mask-free causal path)
    counter = DecoderTokens(model)
    try:
        with torch.inference_mode():
            comp.row_logliks(equal, np.ones(2, np.int64))
            comp.row_logliks([equal[0], equal[1][:10], equal[1][:20]], np.ones(3, np.int64))
            comp.row_logliks([equal[0], equal[1][:30], equal[1][:20]], np.ones(3, np.int64))
    finally:
        counter.close()
    # Equal rows: padded (2 × 39). 39, 10, 20: the short two share a lane of 39 (2 × 39, not 3 × 39).
    # 39, 30, 20: no two fit in 39, so padded (3 × 39).
    assert counter.calls == [78, 78, 117]


def test_a_model_that_cannot_pack_falls_back_and_says_so(tmp_path, tiny_tokenizer, texts):
    # BLOOM's ALiBi attention takes no position_ids: packed rows would see each other.
    from transformers import BloomConfig, BloomForCausalLM

    cfg = BloomConfig(vocab_size=len(tiny_tokenizer), hidden_size=64, n_layer=2, n_head=2, initializer_range=0.2,
                      bos_token_id=tiny_tokenizer.bos_token_id, eos_token_id=tiny_tokenizer.eos_token_id)
    torch.manual_seed(0)
    BloomForCausalLM(cfg).save_pretrained(tmp_path / "bloom")
    tiny_tokenizer.save_pretrained(tmp_path / "bloom")
    model, tok = load_model(str(tmp_path / "bloom"), device="cpu")
    scorer = HFScorer(model, tok, packing="on")
    plan = scorer.prepare(np.asarray(tok(texts[3])["input_ids"]), 500)
    assert plan["mode"].startswith("hidden, padded (packing unsupported: ")
    assert not scorer.computer.can_pack
    ll_on, _, _ = score_texts(model, tok, texts[:12], packing="on", batch_tokens=500, max_length=CONTEXT)
    ll_off, _, _ = score_texts(model, tok, texts[:12], packing="off", batch_tokens=500, max_length=CONTEXT)
    np.testing.assert_array_equal(ll_on, ll_off)


def test_the_mode_names_the_layout(gpt2):
    model, tok = gpt2
    probe = np.arange(1, 20)
    assert HFScorer(model, tok, packing="off").prepare(probe, 100)["mode"] == "hidden, padded"
    assert HFScorer(model, tok, packing="on").prepare(probe, 100)["mode"] == "hidden, packed (block mask)"
    with pytest.raises(InputError, match="packing must be one of auto, on, off"):
        HFScorer(model, tok, packing="yes")


# -- out of memory: split and retry -------------------------------------------------------------


@pytest.fixture
def memory_limit(monkeypatch):
    """Make the decoder raise torch's OutOfMemoryError above ``limit[0]`` token slots (a stand-in for a GPU)."""
    limit = [10**9]
    calls = []

    def install(model):
        base = model.base_model
        real = base.forward

        def forward(*args, **kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            calls.append(int(ids.numel()))
            if ids.numel() > limit[0]:
                raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {ids.numel()} slots")
            return real(*args, **kwargs)

        monkeypatch.setattr(base, "forward", forward)
        return limit, calls

    return install


@pytest.mark.parametrize("packing", ["off", "on"])
def test_an_out_of_memory_batch_is_split_and_retried(gpt2, texts, memory_limit, packing):
    model, tok = gpt2
    want, n_want, _ = score_texts(model, tok, texts, packing=packing, batch_tokens=1000)
    limit, calls = memory_limit(model)
    limit[0] = 150
    scorer = HFScorer(model, tok, packing=packing)
    got, n_got, _ = _score_with(scorer, texts, batch_tokens=1000)
    # Rows are scored independently, so only float32 rounding (the matrix products' blocking follows the
    # batch's shape, ~1e-6 nats) differs; a row lost, doubled or misplaced by the split would be off by nats.
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    assert n_got.tolist() == n_want.tolist()
    assert scorer.n_oom_splits > 0 and scorer.token_cap < 1000
    assert max(calls) > 150  # batches did fail ...
    # ... and once the cap was lowered, later batches were cut before they ran: few failures in all.
    assert sum(c > 150 for c in calls) <= scorer.n_oom_splits


def _score_with(scorer, texts, **kw):
    from lmmap.scoring.driver import score_texts as driver_score_texts

    return driver_score_texts(scorer, texts, **kw)


def test_a_row_that_does_not_fit_alone_is_an_error_naming_model_and_length(gpt2, texts, memory_limit):
    model, tok = gpt2
    limit, _ = memory_limit(model)
    limit[0] = 40
    scorer = HFScorer(model, tok, name="tiny-gpt2", packing="off")
    with pytest.raises(ScoringError, match=r"model 'tiny-gpt2': one row of 64 tokens does not fit in memory") as err:
        _score_with(scorer, texts, batch_tokens=1000)
    assert "stride" in str(err.value) and "max_length" in str(err.value)
    assert err.value.params == ("max_length", "stride")


def test_other_errors_are_not_retried(gpt2, texts, monkeypatch):
    model, tok = gpt2
    scorer = HFScorer(model, tok)
    scorer.prepare(np.arange(1, 10), 100)
    monkeypatch.setattr(scorer.computer, "row_logliks", lambda ids, first: (_ for _ in ()).throw(ValueError("boom")))
    with pytest.raises(ValueError, match="boom"):
        scorer.score([np.arange(1, 10)] * 4, np.ones(4, np.int64))
    assert scorer.n_oom_splits == 0


# -- the CUDA token budget ------------------------------------------------------------------------


def test_a_model_that_fits_one_gpu_goes_on_one_gpu(tiny_gpt2_dir, gpt2, tmp_path):
    GiB = 2**30
    llama3_8b = 8_030_261_248 * 2  # bf16 bytes
    assert cuda_device_map(llama3_8b, 139 * GiB, 0) == {"": 0}  # an H200: the whole model on the current GPU
    assert cuda_device_map(llama3_8b, 139 * GiB, 3) == {"": 3}
    assert cuda_device_map(llama3_8b, 16 * GiB, 0) == "auto"  # weights over 80% of what is free: spread it
    assert cuda_device_map(70_553_706_496 * 2, 139 * GiB, 0) == "auto"  # Llama-3-70B in bf16 fits no single GPU
    # The weights are counted on the meta device, in the dtype asked for (a tied matrix once).
    model, _ = gpt2
    n = sum(p.numel() for p in model.parameters())
    assert weight_bytes(str(tiny_gpt2_dir), dtype=torch.float32) == 4 * n
    assert weight_bytes(str(tiny_gpt2_dir), dtype=torch.bfloat16) == 2 * n
    assert weight_bytes(str(tmp_path / "nothing"), dtype=torch.float32) is None


def test_cuda_batch_tokens_from_free_memory():
    GiB = 2**30
    # A Llama-3-8B shape in bf16 on an H200 after loading the weights (~16 GB): 120 GiB free.
    kw = dict(hidden_size=4096, intermediate_size=14336, vocab_size=128256, dtype_bytes=2, logits_memory=512 * 2**20)
    per_token = 2 * (8 * 4096 + 3 * 14336)  # 151,552 bytes
    usable = (120 * GiB - 2 * GiB - 512 * 2**20) * 0.5
    assert cuda_batch_tokens(120 * GiB, **kw) == min(CUDA_BATCH_TOKENS_RANGE[1], int(usable // per_token) // 256 * 256)
    # 24 GiB free (an RTX 6000 Ada with the 8B model loaded): (24 - 2 - 0.5) GiB / 2 / 151,552 = 76,163 → 76,032.
    assert cuda_batch_tokens(24 * GiB, **kw) == 76032
    assert cuda_batch_tokens(24 * GiB, **kw) % 256 == 0
    # Logits through the model's own forward cost a vocabulary row per token: far fewer tokens.
    assert cuda_batch_tokens(24 * GiB, **kw, logits_mode=True) == int(
        (22 * GiB - 512 * 2**20) * 0.5 // (per_token + 2 * 128256)) // 256 * 256
    # The logit lens over all 33 hidden states holds 33 × 4,096 more values per token until the forward ends.
    assert cuda_batch_tokens(24 * GiB, **kw, hidden_states=33) == int(
        (22 * GiB - 512 * 2**20) * 0.5 // (per_token + 2 * 33 * 4096)) // 256 * 256
    # Nearly full: the floor, and OOM splitting takes over from there.
    assert cuda_batch_tokens(1 * GiB, **kw) == CUDA_BATCH_TOKENS_RANGE[0]
    # A small model on a big GPU: the ceiling.
    assert cuda_batch_tokens(120 * GiB, hidden_size=768, intermediate_size=3072, vocab_size=50257, dtype_bytes=2,
                             logits_memory=512 * 2**20) == CUDA_BATCH_TOKENS_RANGE[1]


# -- benchmarks/bench_gpu.py: what can be checked without a GPU ---------------------------------


@pytest.fixture(scope="module")
def bench_gpu():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_gpu.py"
    spec = importlib.util.spec_from_file_location("bench_gpu", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_gpu_peaks_mfu_and_shapes(bench_gpu):
    peak = bench_gpu.peak_tflops
    # Names as torch.cuda.get_device_name() gives them.
    assert peak("NVIDIA H200") == 989.4 and peak("NVIDIA H100 80GB HBM3") == 989.4
    assert peak("NVIDIA H100 PCIe") == 756.0 and peak("NVIDIA H100 NVL") == 835.5
    assert peak("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak("NVIDIA RTX 6000 Ada Generation") == 364.2
    assert peak("NVIDIA L40S") == 362.1 and peak("NVIDIA L40") == 181.0 and peak("NVIDIA L4") == 121.0
    assert peak("NVIDIA GeForce GTX 1080") is None
    # 2 · 1.5e9 params · 2.4e6 tokens in 20 s on 989.4 TFLOP/s: 36.4%.
    assert bench_gpu.mfu(1_500_000_000, 2_400_000, 20.0, 989.4) == pytest.approx(7.2e15 / 20 / 989.4e12)
    assert bench_gpu.mfu(1, 1, 1.0, None) is None
    # The shapes are the published models': their parameter counts, built on the meta device (no memory).
    from transformers import AutoModelForCausalLM

    counts = {}
    for shape in bench_gpu.SHAPES:
        with torch.device("meta"):
            counts[shape] = bench_gpu.count_params(AutoModelForCausalLM.from_config(bench_gpu.make_config(shape)))
    assert counts == {"qwen2-1.5b": 1_543_714_304, "llama3-8b": 8_030_261_248}
    rows = bench_gpu.draw_rows(500, 1000)
    assert 230 < np.mean([len(r) for r in rows]) < 260 and all(r.max() < 1000 for r in rows)


def test_bench_gpu_without_a_gpu_says_so_and_exits_0(bench_gpu, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the benchmark would run")
    assert bench_gpu.main([]) == 0
    assert "no CUDA GPU is visible" in capsys.readouterr().out


def test_bench_gpu_methods_run_on_a_small_model(bench_gpu, gpt2, capsys):
    # The timing loops, on the CPU and a tiny model: they score every row and report in the format printed.
    model, tok = gpt2
    rows = [r % 500 for r in bench_gpu.draw_rows(30, 500, text_bytes=200)]
    far = float("inf")
    secs, tokens, done, plan = bench_gpu.run_lmmap_scorer(HFScorer(model, tok, packing="on"), rows, 300, far)
    assert done == 30 and tokens == sum(map(len, rows)) and plan["mode"].startswith("hidden, packed")
    secs_a, tokens_a, done_a = bench_gpu.run_authors(model, rows, 10, far)
    assert done_a == 10 and tokens_a == sum(map(len, rows[:10]))
    bench_gpu.report("qwen2-1.5b", "hf-packed", secs, tokens, done, 10**6, 100.0, done_a / secs_a)
    line = capsys.readouterr().out
    assert '"method": "hf-packed"' in line and '"x_authors"' in line

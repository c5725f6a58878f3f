"""The transformers backend: scoring real (tiny) models: batched results equal a plain one-text-at-a-time computation.

The reference computations here are written independently of lmmap: the
tokenizer's own truncation, one forward pass per text through the model's own
``forward``, a full log-softmax and a gather.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from typer.testing import CliRunner  # noqa: E402

from lmmap.cli import app  # noqa: E402
from lmmap.exceptions import LmmapError  # noqa: E402
from lmmap.scoring import encode_texts, score_models  # noqa: E402
from lmmap.scoring.hf import LogProbComputer, load_model, score_texts  # noqa: E402
from lmmap.data.store import Store  # noqa: E402
from lmmap.data.texts import TextSet  # noqa: E402
from text_pieces import text_pieces  # noqa: E402

CONTEXT = 64  # the tiny models' n_positions
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def texts(stdlib_texts) -> list[str]:
    """Real texts of many lengths: some fit the 64-token context, most are truncated."""
    return text_pieces(stdlib_texts[20:32], ((0, 20, 7), (300, 120, 11), (1000, 1024, 0)))


@pytest.fixture(scope="module")
def gpt2_bos(tiny_gpt2_bos_dir):
    return load_model(str(tiny_gpt2_bos_dir), device="cpu", dtype="float32")


def forward_logprobs(model, ids: list[int]) -> torch.Tensor:
    """log p(· | ids[:i]) for every i: one text, the model's own forward, full log-softmax."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    return torch.log_softmax(logits.float(), dim=-1)


def one_at_a_time(model, tokenizer, text: str, convention: str, max_length: int, adds_bos: bool):
    """``(loglik, n_tokens, truncated)`` the slow, obvious way."""
    prepend = convention == "full" and not adds_bos
    room = max_length - 1 if prepend else max_length
    ids = tokenizer(text, truncation=True, max_length=room)["input_ids"]
    truncated = len(tokenizer(text)["input_ids"]) > room
    if prepend:
        ids = [tokenizer.bos_token_id] + ids
    lp = forward_logprobs(model, ids)
    targets = torch.tensor(ids[1:])
    return float(lp[:-1].gather(1, targets[:, None]).sum()), len(ids), truncated


def misaligned_loglik(model, tokenizer, text: str) -> float:
    """What a scorer that read ``log p(token_t | tokens_<=t)`` (one position off) would report."""
    ids = tokenizer(text, truncation=True, max_length=CONTEXT)["input_ids"]
    lp = forward_logprobs(model, ids)
    return float(lp[1:].gather(1, torch.tensor(ids[1:])[:, None]).sum())


def one_at_a_time_strided(model, tokenizer, text: str, max_length: int, stride: int) -> float:
    """The sliding-window definition of the transformers perplexity guide, one window at a time."""
    ids = tokenizer(text)["input_ids"]
    total, prev_end = 0.0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + max_length, len(ids))
        lp = forward_logprobs(model, ids[begin:end])
        scored = torch.arange(max(prev_end, 1), end)  # each token once, the first never
        total += float(lp[scored - begin - 1, torch.tensor(ids)[scored]].sum())
        prev_end = end
        if end == len(ids):
            break
    return total


# -- correctness of the numbers ----------------------------------------------------------------


@pytest.mark.parametrize("convention", ["reference", "full"])
def test_batched_equals_one_text_at_a_time(gpt2, texts, convention):
    model, tok = gpt2
    # A small batch budget and logits memory: many batches with padding, many logits chunks per batch.
    ll, n_tokens, truncated = score_texts(
        model, tok, texts, convention=convention, batch_tokens=300, logits_memory=40 * len(tok) * 4
    )
    ref = [one_at_a_time(model, tok, t, convention, CONTEXT, adds_bos=False) for t in texts]
    np.testing.assert_allclose(ll, [r[0] for r in ref], rtol=0, atol=1e-4)
    assert n_tokens.tolist() == [r[1] for r in ref]
    assert truncated.tolist() == [r[2] for r in ref]
    assert 0 < truncated.sum() < len(texts)  # both kinds are exercised
    # The model is far from uniform: reading each target one position off changes every sum visibly.
    misaligned = [misaligned_loglik(model, tok, t) for t in texts[:10]]
    assert (np.abs(np.asarray(misaligned) - [r[0] for r in ref[:10]]) > 0.5).all()


@pytest.mark.parametrize("convention", ["reference", "full"])
def test_tokenizer_that_prepends_bos(gpt2_bos, texts, convention):
    model, tok = gpt2_bos
    assert tok("x")["input_ids"][0] == tok.bos_token_id  # the Llama-like layout under test
    ll, n_tokens, truncated = score_texts(model, tok, texts, convention=convention, batch_tokens=500)
    ref = [one_at_a_time(model, tok, t, convention, CONTEXT, adds_bos=True) for t in texts]
    np.testing.assert_allclose(ll, [r[0] for r in ref], rtol=0, atol=1e-4)
    assert n_tokens.tolist() == [r[1] for r in ref]
    assert truncated.tolist() == [r[2] for r in ref]
    # BOS is the unscored context, so every text token is scored in both conventions.
    enc = encode_texts(tok, texts[:3], convention, CONTEXT)
    assert enc.tokenizer_adds_bos and enc.prepended is None


def test_strided_equals_sliding_window_one_at_a_time(gpt2, texts):
    model, tok = gpt2
    L, S = 32, 12
    texts = texts[::2]  # short, medium and long ones
    ll, n_tokens, truncated = score_texts(model, tok, texts, max_length=L, stride=S, batch_tokens=200)
    ref = [one_at_a_time_strided(model, tok, t, L, S) for t in texts]
    np.testing.assert_allclose(ll, ref, rtol=0, atol=1e-4)
    assert not truncated.any()  # nothing is dropped
    assert n_tokens.tolist() == [len(tok(t)["input_ids"]) for t in texts]
    assert (n_tokens > 3 * L).sum() >= 3  # many texts need several windows


def test_soft_capped_logits_are_scored_through_the_models_own_forward(tmp_path, tiny_tokenizer, texts):
    # Gemma-2 soft-caps its logits after the output layer: output_layer(decoder(x)) is not its logits.
    from transformers import Gemma2Config, Gemma2ForCausalLM

    cfg = Gemma2Config(
        vocab_size=len(tiny_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=CONTEXT,
        final_logit_softcapping=2.0, initializer_range=0.2, pad_token_id=0,
        bos_token_id=tiny_tokenizer.bos_token_id, eos_token_id=tiny_tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    Gemma2ForCausalLM(cfg).save_pretrained(tmp_path / "gemma2")
    tiny_tokenizer.save_pretrained(tmp_path / "gemma2")
    model, tok = load_model(str(tmp_path / "gemma2"), device="cpu")
    assert LogProbComputer(model).mode == "logits"
    ll, _, _ = score_texts(model, tok, texts[:12], batch_tokens=150)
    ref = [one_at_a_time(model, tok, t, "reference", CONTEXT, adds_bos=False)[0] for t in texts[:12]]
    np.testing.assert_allclose(ll, ref, rtol=0, atol=1e-4)


def test_vocabulary_tiles_give_the_same_numbers(gpt2, texts):
    # 512 entries in tiles of 100 (the last one partial), 7 positions per tile: the running
    # log-normaliser must match one full log-softmax, and every target must be found in its tile.
    model, tok = gpt2
    comp = LogProbComputer(model, logits_memory=7 * 100 * 4, vocab_block=100)
    assert comp.tiled and comp.vocab_block == 100 and comp.chunk_positions == 7
    rows = [np.asarray(tok(t, truncation=True, max_length=CONTEXT)["input_ids"]) for t in texts[:12]]
    with torch.inference_mode():
        got = comp.row_logliks(rows, np.ones(len(rows), dtype=np.int64))
    want = [one_at_a_time(model, tok, t, "reference", CONTEXT, adds_bos=False)[0] for t in texts[:12]]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_output_layer_runs_in_bounded_chunks(gpt2):
    model, tok = gpt2
    comp = LogProbComputer(model, logits_memory=10 * len(tok) * 4)
    assert comp.mode == "hidden"
    assert comp.chunk_positions == 10  # float32 logits of 10 positions
    # A vocabulary 100x larger gets 100x fewer positions per chunk: the memory stays the same.
    assert LogProbComputer(model, logits_memory=1000 * len(tok) * 4).chunk_positions == 1000


def test_a_text_with_nothing_to_score_is_an_error_naming_it(gpt2):
    _, tok = gpt2
    one_token = next(c for c in "abcdefgh" if len(tok(c)["input_ids"]) == 1)
    with pytest.raises(LmmapError, match="position 7"):
        encode_texts(tok, [one_token], "reference", CONTEXT, positions=[7])
    assert encode_texts(tok, [one_token], "full", CONTEXT).n_tokens.tolist() == [2]


def test_bfloat16_stays_close_to_float32(tiny_gpt2_dir, texts):
    model32, tok = load_model(str(tiny_gpt2_dir), device="cpu", dtype="float32")
    model16, _ = load_model(str(tiny_gpt2_dir), device="cpu", dtype="bfloat16")
    assert next(model16.parameters()).dtype == torch.bfloat16
    ll32, _, _ = score_texts(model32, tok, texts[:20])
    ll16, _, _ = score_texts(model16, tok, texts[:20])
    assert np.isfinite(ll16).all()
    np.testing.assert_allclose(ll16, ll32, rtol=0.02)


# -- the store driver ----------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path, texts) -> Store:
    return Store.create(tmp_path / "store", TextSet.from_texts(texts))


def test_score_models_records_everything_and_skips_done_models(store, tiny_gpt2_dir, gpt2, texts):
    name = "tiny-gpt2"  # a directory's own name, not the path: short, and never a hidden file
    out = score_models(store, [str(tiny_gpt2_dir)], device="cpu", progress=False, batch_tokens=512)
    assert out[name].status == "scored" and out[name].n_scored == len(texts)
    rec = store.record(name)
    for key in ("convention", "truncation", "max_length", "dtype", "device", "scorer", "scorer_version", "revision",
                "tokenizer", "tokenizer_class", "tokenizer_adds_bos", "n_truncated", "texts_per_s", "tokens_per_s"):
        assert key in rec, key
    assert rec["convention"] == "reference" and rec["scorer"] == "lmmap" and rec["max_length"] == CONTEXT
    assert rec["truncation"] == "truncate" and rec["tokenizer_adds_bos"] is False
    assert str(tiny_gpt2_dir.resolve()) in rec["revision"]  # a local directory: path and weights' mtime
    v = store.vectors(name)
    assert rec["n_truncated"] == int(v["truncated"].sum()) > 0
    model, tok = gpt2
    np.testing.assert_allclose(v["loglik"], score_texts(model, tok, texts)[0], atol=1e-4)
    again = score_models(store, [str(tiny_gpt2_dir)], device="cpu", progress=False)
    assert again[name].status == "skipped" and "already in the store" in again[name].message
    assert not (store.path / "partial").exists() or not any((store.path / "partial").iterdir())


def test_a_subset_first_then_the_rest(store, tiny_gpt2_dir, texts):
    name = "tiny"
    first = score_models(store, [str(tiny_gpt2_dir)], names=[name], text_pos=[0, 3, 5], device="cpu", progress=False)
    assert first[name].n_scored == 3
    assert store.vectors(name)["text_pos"].tolist() == [0, 3, 5]
    rest = score_models(store, [str(tiny_gpt2_dir)], names=[name], device="cpu", progress=False)
    assert rest[name].status == "scored" and rest[name].n_scored == len(texts) - 3 and rest[name].n_resumed == 3
    assert store.vectors(name)["text_pos"].tolist() == list(range(len(texts)))
    # Other settings never extend a vector silently.
    other = score_models(store, [str(tiny_gpt2_dir)], names=[name], convention="full", device="cpu", progress=False)
    assert other[name].status == "skipped"


def test_failing_model_is_reported_and_the_others_are_scored(tmp_path, store, tiny_gpt2_dir):
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_gpt2_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a download cut short
    result = CliRunner().invoke(
        app, ["score", str(broken), str(tiny_gpt2_dir), "--store", str(store.path), "--device", "cpu", "--no-progress"]
    )
    assert result.exit_code != 0
    assert "broken-model" in result.output and "1 failed" in result.output
    assert store.has_model("tiny-gpt2") and not store.has_model("broken-model")


def test_non_finite_values_fail_the_model_and_store_nothing(tmp_path, store, tiny_tokenizer, make_tiny_gpt2):
    path = make_tiny_gpt2(tmp_path / "nan-model", tiny_tokenizer)
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(path)
    with torch.no_grad():
        model.transformer.ln_f.weight[3] = float("nan")
    model.save_pretrained(path)
    out = score_models(store, [str(path)], device="cpu", progress=False)
    st = out["nan-model"]
    assert st.status == "failed" and "non-finite" in st.message and "position" in st.message
    assert "'nan-model'" in st.message
    assert not store.has_model("nan-model")


def test_bad_options_are_refused_before_loading_anything(store, tiny_gpt2_dir):
    for kwargs, match in (
        (dict(convention="half"), "convention"),
        (dict(dtype="int8"), "dtype"),
        (dict(device="tpu"), "device"),
        (dict(batch_tokens=0), "batch_tokens"),
    ):
        with pytest.raises(LmmapError, match=match):
            score_models(store, [str(tiny_gpt2_dir)], progress=False, **kwargs)


# -- resumption after SIGKILL --------------------------------------------------------------------

KILLED_RUN = textwrap.dedent(
    """
    import sys, time
    import torch
    from lmmap.data.store import Store
    from lmmap.scoring import score_models

    torch.set_num_threads(1)
    save = Store.save_checkpoint

    def save_then_pause(self, *args, **kwargs):
        save(self, *args, **kwargs)
        time.sleep(0.4)  # room for the test to kill the run between checkpoints

    Store.save_checkpoint = save_then_pause
    score_models(sys.argv[1], [sys.argv[2]], device="cpu", batch_tokens=128, checkpoint_every=0, progress=False)
    """
)


def test_resume_after_sigkill_scores_only_the_missing_texts(tmp_path, texts, tiny_gpt2_dir):
    ts = TextSet.from_texts(texts)
    name = "tiny-gpt2"
    clean = Store.create(tmp_path / "clean", ts)
    score_models(clean, [str(tiny_gpt2_dir)], device="cpu", progress=False, batch_tokens=128)

    killed = Store.create(tmp_path / "killed", ts)
    script = tmp_path / "run.py"
    script.write_text(KILLED_RUN)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, str(script), str(killed.path), str(tiny_gpt2_dir)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    try:
        while not list((killed.path / "partial").glob("*/*/chunk-*.parquet")):
            if proc.poll() is not None:
                pytest.fail(f"the run ended before its first checkpoint: {proc.stdout.read().decode()[-2000:]}")
            if time.time() > deadline:
                pytest.fail("no checkpoint appeared within 120 s")
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not killed.has_model(name)  # nothing partial is recorded as complete

    result = CliRunner().invoke(
        app, ["score", str(tiny_gpt2_dir), "--store", str(killed.path), "--device", "cpu", "--no-progress",
              "--batch-tokens", "128"]
    )
    assert result.exit_code == 0, result.output
    assert "resuming from a checkpoint" in " ".join(result.output.split())  # rich wraps long paths
    rec = killed.record(name)
    resumed, scored = rec["n_texts_resumed"], rec["n_texts_scored_this_run"]
    assert 0 < resumed < len(texts)
    assert resumed + scored == len(texts)  # every text scored exactly once
    got, want = killed.vectors(name), clean.vectors(name)
    assert got["text_pos"].tolist() == list(range(len(texts)))
    np.testing.assert_allclose(got["loglik"], want["loglik"], rtol=0, atol=1e-4)
    assert got["n_tokens"].tolist() == want["n_tokens"].tolist()
    assert got["truncated"].tolist() == want["truncated"].tolist()
    assert not list((killed.path / "partial").glob("*/*/chunk-*.parquet"))  # checkpoints cleared


def test_the_command_line_shows_flags_where_the_library_names_parameters(store, tiny_gpt2_dir):
    import io
    from contextlib import redirect_stderr

    from lmmap.cli import main

    err = io.StringIO()
    with redirect_stderr(err), pytest.raises(SystemExit) as stop:
        main(["score", str(tiny_gpt2_dir), "--store", str(store.path), "--batch-tokens", "0"])
    assert stop.value.code == 1 and "--batch-tokens must be a positive integer, got 0" in " ".join(err.getvalue().split())
    runner = CliRunner()
    args = ["score", str(tiny_gpt2_dir), "--store", str(store.path), "--device", "cpu", "--no-progress",
            "--max-length", "16"]
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "(pass --replace to score it again)" in " ".join(again.output.split())


def test_fused_gelu_gives_the_models_own_numbers(tiny_gpt2_dir, gpt2):
    # load_model swaps GPT-2's six-op gelu_new for torch's fused tanh-GELU: the same function.
    from transformers import GPT2LMHeadModel
    from transformers.activations import GELUTanh, NewGELUActivation

    model, tok = gpt2
    assert isinstance(model.transformer.h[0].mlp.act, GELUTanh)
    original = GPT2LMHeadModel.from_pretrained(tiny_gpt2_dir).eval()
    assert isinstance(original.transformer.h[0].mlp.act, NewGELUActivation)
    ids = torch.tensor([tok("def f(x):\n    return x * 2  # doubled")["input_ids"]])
    with torch.no_grad():
        np.testing.assert_allclose(model(ids).logits.numpy(), original(ids).logits.numpy(), rtol=0, atol=1e-5)


def test_a_model_that_needs_its_own_code_is_not_run_and_the_flag_is_named(store, tiny_gpt2_dir, tmp_path):
    """A checkpoint whose config points at its own modelling code is refused unless the user says so, and the hint
    names the flag on the command line (the parameter in Python): trust is never assumed."""
    import io
    import json
    import shutil
    from contextlib import redirect_stderr

    from lmmap.cli import main

    own = tmp_path / "own-code"
    shutil.copytree(tiny_gpt2_dir, own)
    config = json.loads((own / "config.json").read_text())
    config.update(model_type="lmmap-own", auto_map={"AutoConfig": "configuration_own.OwnConfig",
                                                     "AutoModelForCausalLM": "modeling_own.OwnForCausalLM"})
    (own / "config.json").write_text(json.dumps(config))
    out = score_models(store, [str(own)], device="cpu", progress=False)
    assert out["own-code"].status == "failed" and "pass trust_remote_code=True if you trust it" in str(out["own-code"])
    err = io.StringIO()
    with redirect_stderr(err), pytest.raises(SystemExit) as stop:
        main(["score", str(own), "--store", str(store.path), "--device", "cpu", "--no-progress"])
    text = " ".join(err.getvalue().split())
    assert stop.value.code == 1 and "pass --trust-remote-code if you trust it" in text, text
    assert not store.has_model("own-code")

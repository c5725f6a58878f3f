"""The logit lens (``layers``): every layer of a real tiny model from one forward pass, against independent
computations.

Two independent references:

- a GPT-2 cut after block K (the same weights, ``n_layer=K``) scored plainly: its
  output is ``lm_head(ln_f(h_K))``, which is layer K's definition, computed by
  the model's own forward and lmmap's plain path (no hidden states read at all);
- for a Llama (grouped-query attention, RMSNorm), the model's ``hidden_states``
  put through ``model.model.norm`` and ``lm_head`` with one full log-softmax per
  text, by hand.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from cli_main import run_main  # noqa: E402
from lmmap.data.store import Store  # noqa: E402
from lmmap.data.texts import TextSet  # noqa: E402
from lmmap.exceptions import InputError, ScoringError  # noqa: E402
from lmmap.scoring import score_models  # noqa: E402
from lmmap.scoring.hf import HFScorer, LogProbComputer, load_model, score_texts  # noqa: E402
from lmmap.scoring.layers import LogitLens, parse_layers  # noqa: E402
from text_pieces import text_pieces  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
N_LAYER = 3


@pytest.fixture(scope="module")
def texts(stdlib_texts) -> list[str]:
    """Real texts of many lengths, some longer than the 64-token context."""
    return text_pieces(stdlib_texts[20:30], ((0, 20, 9), (500, 150, 17)))


@pytest.fixture(scope="module")
def gpt2_3(tmp_path_factory, tiny_tokenizer, make_tiny_gpt2):
    return make_tiny_gpt2(tmp_path_factory.mktemp("lens") / "gpt2-3", tiny_tokenizer, seed=3, n_layer=N_LAYER)


def cut_after(model, k: int):
    """The same GPT-2 with only its first ``k`` blocks (embeddings, ln_f and lm_head kept)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(**{**model.config.to_dict(), "n_layer": k})
    small = GPT2LMHeadModel(cfg).eval()
    missing, _unexpected = small.load_state_dict(model.state_dict(), strict=False)
    assert not [m for m in missing if "attn.bias" not in m], missing
    return small


def test_each_layer_equals_the_model_cut_after_that_block(gpt2_3, texts):
    model, tok = load_model(str(gpt2_3), device="cpu")
    lens, _, _ = score_texts(model, tok, texts, layers="all", batch_tokens=200)
    assert lens.shape == (len(texts), N_LAYER + 1)
    for k in range(N_LAYER + 1):
        plain, _, _ = score_texts(cut_after(model, k), tok, texts, batch_tokens=200)
        np.testing.assert_allclose(lens[:, k], plain, rtol=0, atol=1e-4, err_msg=f"layer {k}")
    # The last layer is the model itself: the final norm is not applied twice.
    whole, _, _ = score_texts(model, tok, texts, batch_tokens=200)
    np.testing.assert_allclose(lens[:, -1], whole, rtol=0, atol=1e-9)
    # Layers differ from one another (a lens that returned one layer for all would pass the line above).
    assert np.abs(np.diff(lens, axis=1)).min() > 1e-3


def test_a_llama_lens_equals_its_hidden_states_through_norm_and_head_by_hand(tmp_path, tiny_tokenizer, texts):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      bos_token_id=tiny_tokenizer.bos_token_id, eos_token_id=tiny_tokenizer.eos_token_id)
    torch.manual_seed(5)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "llama")
    tiny_tokenizer.save_pretrained(tmp_path / "llama")
    model, tok = load_model(str(tmp_path / "llama"), device="cpu")
    chosen = [0, 2, 3]
    got, _, _ = score_texts(model, tok, texts, layers="0,2,3", batch_tokens=300)
    want = np.zeros((len(texts), len(chosen)))
    with torch.no_grad():
        for i, text in enumerate(texts):
            ids = tok(text, add_special_tokens=False)["input_ids"][:64]  # reference convention: token 0 unscored
            out = model.model(torch.tensor([ids]), output_hidden_states=True)
            for j, k in enumerate(chosen):
                h = out.hidden_states[k][0]
                h = h if k == len(out.hidden_states) - 1 else model.model.norm(h)
                logp = torch.log_softmax(model.lm_head(h).double(), dim=-1)
                want[i, j] = float(logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum())
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_packed_and_padded_lens_agree(gpt2_3, texts):
    model, tok = load_model(str(gpt2_3), device="cpu")
    rows = [np.asarray(tok(t)["input_ids"][:64], np.int64) for t in texts[:9]]
    rows = [r for r in rows if len(r) >= 2]
    first = np.ones(len(rows), np.int64)
    lens = LogitLens(model, "all", None, "gpt2-3")
    comp = LogProbComputer(model, probe_ids=rows[0], packing="on", lens=lens)
    assert comp.can_pack, comp.layout
    with torch.inference_mode():
        padded = comp.row_logliks(rows, first, layout="padded")
        packed = comp.row_logliks(rows, first, layout="packed")
    assert padded.shape == (len(rows), N_LAYER + 1)
    np.testing.assert_allclose(packed, padded, rtol=0, atol=1e-4)


def test_layer_specs_and_bad_norms_are_refused_in_one_line(gpt2_3):
    assert parse_layers("all") == "all" and parse_layers("8, 0,4") == (0, 4, 8) and parse_layers([2, 1]) == (1, 2)
    for bad in ("", "x", "1,,2", "-1", [1.5], []):
        with pytest.raises(InputError, match="layers"):
            parse_layers(bad)
    model, tok = load_model(str(gpt2_3), device="cpu")
    with pytest.raises(InputError, match=r"layer 9 is out of range; it has hidden states 0\.\.3"):
        HFScorer(model, tok, layers=[0, 9])
    with pytest.raises(InputError, match="has no module 'transformer.nope'"):
        HFScorer(model, tok, layers="all", final_norm="transformer.nope")
    # The first block's norm runs once per forward, but it is not what the decoder's output comes from.
    with pytest.raises(ScoringError, match="does not give the decoder's output"):
        HFScorer(model, tok, layers="all", final_norm="transformer.h.0.ln_1")
    assert HFScorer(model, tok, layers="all", final_norm="transformer.ln_f").lens.norm_path == "transformer.ln_f"


def test_a_model_without_a_known_final_norm_is_refused(gpt2_3, monkeypatch):
    import lmmap.scoring.layers as layers_mod

    model, tok = load_model(str(gpt2_3), device="cpu")
    monkeypatch.setattr(layers_mod, "FINAL_NORM_ATTRS", ("norm",))  # as if GPT-2's ln_f were not in the table
    with pytest.raises(ScoringError, match=r"GPT2LMHeadModel\): no final norm found .*name the module with final_norm"):
        HFScorer(model, tok, layers="all")


@pytest.fixture
def store(tmp_path, texts) -> Store:
    return Store.create(tmp_path / "store", TextSet.from_texts(texts))


def test_the_driver_stores_each_layer_with_its_record_and_metadata(store, gpt2_3, texts):
    st = score_models(store, [str(gpt2_3)], layers="all", device="cpu", batch_tokens=300)["gpt2-3"]
    assert st.status == "scored" and "4 layers stored as gpt2-3@layer0 … gpt2-3@layer3" in st.message
    names = [f"gpt2-3@layer{k}" for k in range(N_LAYER + 1)]
    assert store.model_names() == sorted(names)
    model, tok = load_model(str(gpt2_3), device="cpu")
    want, _, _ = score_texts(model, tok, texts, layers="all")
    for k, n in enumerate(names):
        # Batches are cut differently here than in the driver: BLAS rounding differs (~1e-7).
        np.testing.assert_allclose(store.vectors(n)["loglik"], want[:, k], rtol=0, atol=1e-5)
        rec = store.record(n)
        assert (rec["layer"], rec["layers_of"], rec["final_norm"]) == (k, "gpt2-3", "transformer.ln_f")
        assert rec["logprob_path"].startswith("logit lens (4 layers, final norm transformer.ln_f)")
    meta = store.metadata()
    assert meta.loc[names, "layers_of"].tolist() == ["gpt2-3"] * 4 and meta.loc[names, "layer"].tolist() == [0, 1, 2, 3]
    # Plain scoring of the same model gives the last layer's vector, under its own name.
    score_models(store, [str(gpt2_3)], device="cpu")
    np.testing.assert_allclose(store.vectors("gpt2-3")["loglik"], store.vectors(names[-1])["loglik"], atol=1e-9)
    again = score_models(store, [str(gpt2_3)], layers="all", device="cpu")["gpt2-3"]
    assert again.status == "skipped" and "4 layers are already in the store" in again.message


def test_an_interrupted_lens_resumes_every_layer_from_its_checkpoint(tmp_path, gpt2_3, texts, monkeypatch):
    from lmmap.data.store import Interrupted

    ts = TextSet.from_texts(texts)
    clean = Store.create(tmp_path / "clean", ts)
    score_models(clean, [str(gpt2_3)], layers="1,3", device="cpu", batch_tokens=200)
    store = Store.create(tmp_path / "s", ts)
    save, calls = Store.save_checkpoint, []

    def save_then_interrupt(self, *args, **kwargs):
        save(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 4:  # two flushes of two layers
            raise KeyboardInterrupt

    monkeypatch.setattr(Store, "save_checkpoint", save_then_interrupt)
    with pytest.raises(Interrupted):
        score_models(store, [str(gpt2_3)], layers="1,3", device="cpu", batch_tokens=200, checkpoint_every=0)
    monkeypatch.setattr(Store, "save_checkpoint", save)
    assert store.model_names() == []
    st = score_models(store, [str(gpt2_3)], layers="1,3", device="cpu", batch_tokens=200)["gpt2-3"]
    assert 0 < st.n_resumed < len(texts) and st.n_resumed + st.n_scored == len(texts)
    for n in ("gpt2-3@layer1", "gpt2-3@layer3"):
        np.testing.assert_allclose(store.vectors(n)["loglik"], clean.vectors(n)["loglik"], rtol=0, atol=1e-9)
        assert store.checkpoint_chunks(n) == 0


def test_cli_layers_end_to_end_with_the_map_and_the_layers_report(store, gpt2_3, tmp_path, tiny_gpt2_dir):
    code, out, err = run_main("score", gpt2_3, "--layers", "all", "--store", store.path, "--device", "cpu",
                              "--no-progress")
    assert code == 0, err
    code, _, err = run_main("score", tiny_gpt2_dir, "--store", store.path, "--device", "cpu", "--no-progress")
    assert code == 0, err
    code, out, err = run_main("layers", "gpt2-3", "-o", tmp_path / "lay", "--store", store.path)
    assert code == 0, err
    table = pd.read_csv(tmp_path / "lay" / "layers.csv")
    assert table["layer"].tolist() == [0, 1, 2, 3] and table["kl_to_final"].iloc[-1] == 0
    assert np.isnan(table["kl_to_previous"].iloc[0]) and (table["kl_to_previous"].iloc[1:] > 0).all()
    for f in ("layers.png", "layers.html", "layers.json"):
        assert (tmp_path / "lay" / f).stat().st_size > 0
    code, _, err = run_main("map", "--store", store.path, "-o", tmp_path / "map", "--edges", "nn")
    assert code == 0, err
    assert "layers of a model (logit lens, in order)" in (tmp_path / "map" / "map.html").read_text()


@pytest.mark.parametrize("args, words", [
    (["--layers", "1,x"], "--layers must be 'all' or comma-separated layer indices"),
    (["--layers", "7"], "layer 7 is out of range; it has hidden states 0..3"),
    (["--final-norm", "model.norm"], "--final-norm needs layers"),
    (["--layers", "all", "--backend", "vllm"], "--backend vllm cannot score layers"),
])
def test_cli_bad_layer_options_are_one_line_errors(store, gpt2_3, args, words):
    code, out, err = run_main("score", gpt2_3, "--store", store.path, "--device", "cpu", "--no-progress", *args)
    assert code != 0 and words in err, err
    assert "Traceback" not in err and len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1
    assert store.model_names() == []


def test_a_layer_scored_on_some_texts_is_completed_by_its_name(store, gpt2_3, texts):
    score_models(store, [str(gpt2_3)], layers="1,3", device="cpu", text_pos=range(0, len(texts), 2))
    assert store.partial_models() == ["gpt2-3@layer1", "gpt2-3@layer3"]
    st = score_models(store, ["gpt2-3@layer1"], device="cpu")["gpt2-3"]
    assert st.status == "scored" and st.n_scored == len(texts) // 2
    model, tok = load_model(str(gpt2_3), device="cpu")
    want, _, _ = score_texts(model, tok, texts, layers=[1])
    np.testing.assert_allclose(store.vectors("gpt2-3@layer1")["loglik"], want[:, 0], rtol=0, atol=1e-5)
    assert store.partial_models() == ["gpt2-3@layer3"] and store.record("gpt2-3@layer1")["layer"] == 1


def test_more_layers_after_some_are_stored_scores_the_missing_ones_too(store, gpt2_3, texts):
    score_models(store, [str(gpt2_3)], layers="1", device="cpu")  # layer 1 complete, layer 3 not stored at all
    st = score_models(store, [str(gpt2_3)], layers="1,3", device="cpu")["gpt2-3"]
    assert st.status == "scored" and st.n_scored == len(texts)
    assert sorted(store.model_names()) == ["gpt2-3@layer1", "gpt2-3@layer3"] and store.partial_models() == []
    model, tok = load_model(str(gpt2_3), device="cpu")
    want, _, _ = score_texts(model, tok, texts, layers="1,3")
    for j, n in enumerate(("gpt2-3@layer1", "gpt2-3@layer3")):
        np.testing.assert_allclose(store.vectors(n)["loglik"], want[:, j], rtol=0, atol=1e-5)

"""Prompt→response texts under the tokenizer's chat template (issue 15 §3, ``--chat-template``).

Real tiny tokenizers with a chat template (ChatML and Llama 3's layouts, see
``chat_gpt2_dir`` in conftest.py), saved with ``save_pretrained`` and loaded
back with ``AutoTokenizer.from_pretrained`` beside a tiny GPT-2, as a user's
checkpoint is. The ids are checked against the template's text written out by
hand and against ``apply_chat_template``; the scores against the model's own
forward pass: full(ids) − full(prompt ids).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from lmmap.data.texts import PromptedText
from lmmap.exceptions import InputError
from lmmap.scoring.encoding import chat_template_id, encode_texts, make_rows

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

PAIRS = [
    ("What is two plus two?", "Four, of course."),
    ("Translate to French: cat", " chat"),
    ("", "An empty prompt: the turn headers are still the context."),
    ("Write a function.", "def f(x):\n    return x + 1\n"),
    ("Say it twice.", "\nTwice.\nTwice."),
    ("Indent the body.", "    return x + 1"),  # ChatML: "\n" + "    " merge into one token of the whole conversation
]
MERGING = len(PAIRS) - 1


def style_of(path) -> str:
    return path.name.rsplit("-", 1)[-1]


def by_hand(style: str, prompt: str, text: str) -> tuple[str, str]:
    """(prompt part, response part) as the template writes them, spelled out independently of Jinja."""
    if style == "chatml":
        return f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n", f"{text}<|im_end|>\n"
    head = f"<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{prompt.strip()}<|eot_id|>"
    return head + "<|start_header_id|>assistant<|end_header_id|>\n\n", f"{text.strip()}<|eot_id|>"


@pytest.fixture(scope="module")
def loaded(chat_gpt2_dir, one_torch_thread):
    """(model, tokenizer, style) loaded from disk through lmmap's loader (AutoTokenizer.from_pretrained)."""
    from lmmap.scoring.hf import load_model

    model, tok = load_model(str(chat_gpt2_dir), device="cpu", dtype="float32")
    return model, tok, style_of(chat_gpt2_dir)


def ids_of(tok, s: str) -> list[int]:
    return [int(x) for x in tok(s, add_special_tokens=False)["input_ids"]]


def chat_ids(tok, messages, **kw) -> list[int]:
    out = tok.apply_chat_template(messages, tokenize=True, **kw)
    return [int(x) for x in (out["input_ids"] if hasattr(out, "keys") else out)]


def full(model, ids) -> float:
    """Σ_{t≥1} log p(ids[t] | ids[<t]) from the model's own forward pass, in float64."""
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    return float(lp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum())


# -- (a) the ids -----------------------------------------------------------------------------------------


def test_the_template_survives_save_and_load(loaded, chat_styles):
    _, tok, style = loaded
    assert tok.chat_template == chat_styles[style]["template"]


def test_ids_are_the_templates_prompt_part_then_its_response_part(loaded):
    _, tok, style = loaded
    prompts, texts = [p for p, _ in PAIRS], [t for _, t in PAIRS]
    enc = encode_texts(tok, texts, prompts=prompts, chat_template=True)
    assert enc.chat_template and enc.prepended is None and not enc.truncated.any()
    for i, (p, t) in enumerate(PAIRS):
        head, rest = by_hand(style, p, t)
        want = ids_of(tok, head) + ids_of(tok, rest)
        assert enc.sequences[i].tolist() == want
        assert enc.first[i] == len(ids_of(tok, head)) and enc.n_tokens[i] == len(want)
        # the scored tokens are the response and the template's end of turn, nothing of the prompt
        scored = enc.sequences[i][enc.first[i]:].tolist()
        assert tok.decode(scored, skip_special_tokens=False) == rest
        # against transformers' own rendering: the prompt part is apply_chat_template with the generation prompt
        user = [{"role": "user", "content": p}]
        assert enc.sequences[i][: enc.first[i]].tolist() == chat_ids(tok, user, add_generation_prompt=True)
    # one BOS, written by the template (apply_chat_template adds no default specials)
    bos = tok.bos_token_id
    n_bos = [int((s == bos).sum()) for s in enc.sequences]
    assert n_bos == ([1] * len(PAIRS) if style == "llama3" else [0] * len(PAIRS))


def test_ids_equal_apply_chat_template_of_the_whole_conversation_where_it_extends_the_prompt(loaded):
    """Where the whole conversation's ids begin with the prompt part's ids they are the scored sequence as is.
    ChatML's generation prompt ends with "\\n", which this tokenizer's GPT-2 pre-tokenizer merges with a response's
    leading spaces into one token of the whole conversation: the sequence is then the prompt part's ids followed by
    the response part's, as in generation (where a rule on the whole conversation's ids would refuse the text)."""
    _, tok, style = loaded
    enc = encode_texts(tok, [PromptedText(t, p) for p, t in PAIRS], chat_template=True)
    extends = []
    for i, (p, t) in enumerate(PAIRS):
        user = [{"role": "user", "content": p}]
        head = chat_ids(tok, user, add_generation_prompt=True)
        whole = chat_ids(tok, user + [{"role": "assistant", "content": t}])
        extends.append(whole[: len(head)] == head)
        if extends[-1]:
            assert enc.sequences[i].tolist() == whole and enc.first[i] == len(head)
        else:  # the same text, cut into tokens at the prompt part's end
            assert enc.sequences[i][: enc.first[i]].tolist() == head
            assert tok.decode(enc.sequences[i].tolist(), skip_special_tokens=False) == tok.decode(
                whole, skip_special_tokens=False)
    assert [i for i, e in enumerate(extends) if not e] == ([MERGING] if style == "chatml" else [])


# -- (b) scores through lmmap's transformers scorer ---------------------------------------------------


@pytest.mark.parametrize("packing", ["off", "on"])
def test_hf_scores_equal_full_minus_full_of_the_prompt_part(loaded, chat_gpt2_dir, packing):
    from lmmap.scoring.driver import iter_scores
    from lmmap.scoring.hf import HFScorer

    model, tok, style = loaded
    scorer = HFScorer(model, tok, packing=packing)
    texts = [PromptedText(t, p) for p, t in PAIRS]
    enc = encode_texts(tok, texts, chat_template=True, max_length=scorer.context_length)
    got = np.full(len(texts), np.nan)
    for part in iter_scores(scorer, texts, max_length=scorer.context_length, encoded=enc):
        got[part.index] = part.loglik
    for i, (p, t) in enumerate(PAIRS):
        head, rest = by_hand(style, p, t)
        hid, rid = ids_of(tok, head), ids_of(tok, rest)
        assert got[i] == pytest.approx(full(model, hid + rid) - full(model, hid), abs=1e-4)
    # the template's context matters: the plain conditional score of the same pairs is another number
    plain = encode_texts(tok, texts, max_length=scorer.context_length)
    assert not np.array_equal(plain.sequences[0], enc.sequences[0])


# -- (c) truncation ----------------------------------------------------------------------------------------


def test_a_long_prompt_is_cut_from_the_left_keeping_the_templates_bos_and_flagged(loaded):
    model, tok, style = loaded
    L = 48
    pairs = [("A long prompt, repeated. " * 20, "Short reply."), ("Hi.", "A short reply too.")]
    enc = encode_texts(tok, [t for _, t in pairs], prompts=[p for p, _ in pairs], chat_template=True, max_length=L)
    assert enc.truncated.tolist() == [True, False]
    head, rest = by_hand(style, *pairs[0])
    hid, rid = ids_of(tok, head), ids_of(tok, rest)
    assert len(hid) + len(rid) > L
    keep_bos = [tok.bos_token_id] if style == "llama3" else []
    cut = keep_bos + hid[len(hid) - (L - len(rid) - len(keep_bos)):]
    seq = enc.sequences[0].tolist()
    assert seq == cut + rid and len(seq) == L == enc.n_tokens[0] and enc.first[0] == len(cut)
    # the end of the prompt part — the generation prompt — is what survives
    assert tok.decode(seq[enc.first[0] - 3: enc.first[0]], skip_special_tokens=False) == tok.decode(
        hid[-3:], skip_special_tokens=False)
    rows = make_rows(enc.sequences, L, None)
    from lmmap.scoring.driver import iter_scores
    from lmmap.scoring.hf import HFScorer

    scorer = HFScorer(model, tok, packing="off")
    got = {int(i): v for part in iter_scores(scorer, [t for _, t in pairs], max_length=L, encoded=enc)
           for i, v in zip(part.index, part.loglik)}
    assert got[0] == pytest.approx(full(model, cut + rid) - full(model, cut), abs=1e-4)
    assert rows.first.tolist() == enc.first.tolist()


def test_a_response_longer_than_the_context_keeps_one_token_of_context(loaded):
    _, tok, style = loaded
    L = 16
    text = "A response far longer than the context of sixteen tokens, so it is cut from the right."
    enc = encode_texts(tok, [text], prompts=["Q?"], chat_template=True, max_length=L)
    head, rest = by_hand(style, "Q?", text)
    hid, rid = ids_of(tok, head), ids_of(tok, rest)
    ctx = [tok.bos_token_id] if style == "llama3" else hid[-1:]
    assert enc.truncated.tolist() == [True]
    assert enc.sequences[0].tolist() == ctx + rid[: L - 1] and enc.first[0] == 1


# -- (d), (e) one-line errors ----------------------------------------------------------------------------------


def test_a_tokenizer_without_a_chat_template_is_a_one_line_error(tiny_gpt2_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_gpt2_dir))
    assert not tok.chat_template
    for call in (lambda: encode_texts(tok, ["reply"], prompts=["prompt"], chat_template=True),
                 lambda: chat_template_id(tok)):
        with pytest.raises(InputError, match="has no chat template; score without chat_template") as e:
            call()
        assert "\n" not in str(e.value) and e.value.params == ("chat_template",)


def test_chat_template_on_texts_without_prompts_is_a_one_line_error(loaded):
    _, tok, _ = loaded
    with pytest.raises(InputError, match="these texts carry no prompt") as e:
        encode_texts(tok, ["a", "b"], chat_template=True)
    assert "\n" not in str(e.value)


def fresh(chat_gpt2_dir, template):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(chat_gpt2_dir))
    tok.chat_template = template
    return tok


def test_a_template_whose_assistant_turn_does_not_extend_the_prompt_part_is_a_one_line_error(chat_gpt2_dir,
                                                                                          chat_styles):
    # The generation prompt opens a thinking block that the rendered assistant turn does not have.
    chatml = chat_styles["chatml"]["template"]
    thinking = chatml.replace("'<|im_start|>assistant\\n'", "'<|im_start|>assistant\\n<think>\\n'")
    assert thinking != chatml
    tok = fresh(chat_gpt2_dir, thinking)
    with pytest.raises(InputError, match=r"text at position 7: the chat template of .* does not extend the user "
                                         r"turn .* from character \d+: '<think>\\n' vs 'Four") as e:
        encode_texts(tok, ["Four."], prompts=["Two plus two?"], chat_template=True, positions=[7])
    assert "\n" not in str(e.value) and e.value.params == ("chat_template",)


def test_a_template_that_raises_is_a_one_line_error(chat_gpt2_dir):
    tok = fresh(chat_gpt2_dir, "{{ raise_exception('Conversation roles must be system then user') }}")
    with pytest.raises(InputError, match="fails on a user turn and an assistant turn: Conversation roles must") as e:
        encode_texts(tok, ["Four."], prompts=["Two plus two?"], chat_template=True)
    assert "\n" not in str(e.value)


# -- the template's identity for the stored record --------------------------------------------------------------


def test_chat_template_id_is_the_sha256_of_the_template_it_applies(loaded, chat_gpt2_dir, chat_styles):
    _, tok, style = loaded
    template = chat_styles[style]["template"]
    want = "sha256:" + hashlib.sha256(template.encode("utf-8")).hexdigest()[:16]
    assert chat_template_id(tok) == want  # after save_pretrained / from_pretrained: the same string
    other = chat_styles["llama3" if style == "chatml" else "chatml"]["template"]
    assert chat_template_id(fresh(chat_gpt2_dir, other)) != want
    assert chat_template_id(fresh(chat_gpt2_dir, template + "\n")) != want  # any change is another template
    # several named templates: the one apply_chat_template uses ("default")
    assert chat_template_id(fresh(chat_gpt2_dir, {"default": template, "tool_use": other})) == want
    with pytest.raises(InputError, match="several chat templates .* none named 'default'") as e:
        chat_template_id(fresh(chat_gpt2_dir, {"a": template, "b": other}))
    assert "\n" not in str(e.value)


# -- through the store and the CLI -------------------------------------------------------------------------


def test_score_chat_template_stores_the_templates_scores_and_identity(tmp_path, loaded, chat_gpt2_dir):
    from cli_main import run_main
    from lmmap.data.store import Store
    from lmmap.data.texts import TextSet
    from lmmap.scoring.hf import score_texts

    model, tok, style = loaded
    prompts, texts = zip(*PAIRS)
    store = Store.create(tmp_path / "store", TextSet.from_texts(list(texts), prompts=list(prompts)))
    code, _, err = run_main("score", chat_gpt2_dir, "--chat-template", "--store", store.path, "--device", "cpu",
                            "--no-progress", "--name", "chat")
    assert code == 0, err
    code, _, err = run_main("score", chat_gpt2_dir, "--store", store.path, "--device", "cpu", "--no-progress",
                            "--name", "plain")
    assert code == 0, err
    want, _, _ = score_texts(model, tok, [PromptedText(t, p) for p, t in PAIRS], chat_template=True)
    np.testing.assert_allclose(store.vectors("chat")["loglik"], want, rtol=0, atol=1e-5)
    for i, (p, t) in enumerate(PAIRS[:2]):
        head, rest = by_hand(style, p, t)
        hid, rid = ids_of(tok, head), ids_of(tok, rest)
        assert store.vectors("chat")["loglik"][i] == pytest.approx(full(model, hid + rid) - full(model, hid), abs=1e-4)
    rec, plain = store.record("chat"), store.record("plain")
    assert rec["chat_template"] == chat_template_id(tok) and "chat_template" not in plain
    assert rec["settings_key"] != store.record("plain")["settings_key"]
    assert not np.allclose(store.vectors("chat")["loglik"], store.vectors("plain")["loglik"])
    # Completing the model by its name keeps its settings: nothing to do, nothing changed.
    code, out, err = run_main("score", chat_gpt2_dir, "--chat-template", "--store", store.path, "--device", "cpu",
                              "--no-progress", "--name", "chat")
    assert code == 0 and "1 skipped" in out, err

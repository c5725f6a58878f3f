"""Prompt→response texts: log p(text | prompt) = full(prompt + text) − full(prompt), on every backend (issue 15 §3)."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from lmmap.data.store import Store
from lmmap.data.texts import PromptedText, TextSet, build_prompt_text_set, text_set_identity
from lmmap.exceptions import FormatError, InputError
from lmmap.scoring import BigramModel, ByteTokenizer, encode_texts, make_rows, score_models
from lmmap.scoring.fake import VOCAB_SIZE

PAIRS = [
    ("Question: what is two plus two?\nAnswer:", " Four, of course."),
    ("Translate to French: cat", " chat"),
    ("", "An empty prompt: scored as a plain text."),
    ("A long prompt " * 12, " and a short reply"),
]


# -- encoding ----------------------------------------------------------------------------------


def test_ids_are_prompt_with_specials_then_text_without_and_first_is_the_prompt_length():
    tok = ByteTokenizer(adds_bos=True)
    enc = encode_texts(tok, ["xyz"], prompts=["ab"])
    assert enc.sequences[0].tolist() == [256, 97, 98, 120, 121, 122]
    assert enc.first.tolist() == [3] and enc.sequences.first.tolist() == [3]
    rows = make_rows(enc.sequences, None, None)
    assert rows.first.tolist() == [3]


def test_prompted_texts_carry_their_prompt_through_copies_and_pickles():
    t = PromptedText("reply", "prompt")
    assert t == "reply" and pickle.loads(pickle.dumps(t)).prompt == "prompt"
    enc = encode_texts(ByteTokenizer(), [t])
    assert enc.first.tolist() == [6]


def test_truncation_keeps_the_response_and_cuts_the_prompt_from_the_left():
    tok = ByteTokenizer(adds_bos=True)
    enc = encode_texts(tok, ["XYZ", "0123456789"], prompts=["abcdefgh", "pq"], max_length=6)
    assert enc.sequences[0].tolist() == [256, ord("g"), ord("h"), ord("X"), ord("Y"), ord("Z")]
    assert enc.first[0] == 3 and enc.truncated.tolist() == [True, True]
    # the response alone does not fit: the BOS is its only context, the response is cut from the right
    assert enc.sequences[1].tolist() == [256] + [ord(c) for c in "01234"] and enc.first[1] == 1
    plain = encode_texts(ByteTokenizer(), ["XYZ"], prompts=["abcdefgh"], max_length=5)
    assert plain.sequences[0].tolist() == [ord("g"), ord("h"), ord("X"), ord("Y"), ord("Z")] and plain.first[0] == 2


def test_strided_windows_start_near_the_prompt_and_score_each_response_token_once():
    tok = ByteTokenizer()
    enc = encode_texts(tok, ["0123456789"], prompts=["abcdefghij"], max_length=6, stride=2)
    rows = make_rows(enc.sequences, 6, 2)
    scored = []
    for ids, f in zip(rows.ids, rows.first):
        scored += ids[f:].tolist()
        assert f >= 6 - 2 or ids is rows.ids[0]
    assert scored == [ord(c) for c in "0123456789"]


def test_a_missing_prompt_names_the_row():
    with pytest.raises(InputError, match="position 11 has no prompt"):
        encode_texts(ByteTokenizer(), ["a b", "c d"], prompts=["p", None], positions=[10, 11])


# -- text sets -----------------------------------------------------------------------------------


def test_text_set_identity_covers_the_prompts(tmp_path):
    a = TextSet.from_texts(["r1", "r2"], prompts=["p1", "p2"])
    b = TextSet.from_texts(["r1", "r2"], prompts=["p1", "other"])
    plain = TextSet.from_texts(["r1", "r2"])
    assert len({a.identity, b.identity, plain.identity}) == 3
    assert plain.identity == text_set_identity(["r1", "r2"])
    for suffix in (".jsonl", ".parquet"):
        back = TextSet.load(a.save(tmp_path / f"t{suffix}"))
        assert back.identity == a.identity and back.prompts == ["p1", "p2"]
        assert [t.prompt for t in back.texts] == ["p1", "p2"]
    np.testing.assert_array_equal(TextSet.from_texts(["aé", "b"]).text_bytes, [3, 1])


def test_a_jsonl_row_without_the_prompt_is_a_one_line_error_naming_it(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text('{"prompt": "p", "text": "a"}\n{"prompt": "q", "text": "b"}\n{"text": "c"}\n')
    with pytest.raises(FormatError, match=r"t\.jsonl:3: no 'prompt'") as e:
        TextSet.load(p)
    assert "\n" not in str(e.value)


def test_texts_build_with_prompt_and_text_fields(tmp_path):
    src = tmp_path / "chat.jsonl"
    src.write_text('{"q": "Hi?", "a": "Hello."}\n{"q": "Bye?", "a": "Goodbye."}\n')
    ts = build_prompt_text_set([src], prompt_field="q", text_field="a")
    assert ts.prompts == ["Hi?", "Bye?"] and ts.table.column("text").to_pylist() == ["Hello.", "Goodbye."]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": "Hi?", "a": "Hello."}\n{"a": "no prompt"}\n')
    with pytest.raises(FormatError, match=r"bad\.jsonl:2: no prompt field 'q'"):
        build_prompt_text_set([bad], prompt_field="q", text_field="a")


def test_cli_texts_build_prompt_field(tmp_path):
    from typer.testing import CliRunner

    from lmmap.cli import app

    src = tmp_path / "chat.jsonl"
    src.write_text('{"q": "Hi?", "a": "Hello."}\n{"a": "x"}\n')
    out = CliRunner().invoke(app, ["texts", "build", str(src), "-o", str(tmp_path / "o.jsonl"), "--prompt-field", "q",
                                   "--text-field", "a"])
    assert out.exit_code != 0


# -- the driver into a store (fake backend: exact bigram models) ----------------------------------


def bigram(model: BigramModel, ids) -> float:
    return sum(math.log((model.counts[a][b] + 1) / (model.counts[a].sum() + VOCAB_SIZE)) for a, b in zip(ids[:-1], ids[1:]))


def test_fake_backend_stores_full_minus_prompt(tmp_path):
    ts = TextSet.from_texts([t for _, t in PAIRS], prompts=[p for p, _ in PAIRS])
    store = Store.create(tmp_path / "s", ts)
    assert store.text_set_id == ts.identity
    score_models(store, ["a", "b"], backend="fake", max_length=4096)
    names, L = store.matrix()
    model = BigramModel.from_name("a")
    for j, (p, t) in enumerate(PAIRS):
        pid, tid = list(p.encode()), list(t.encode())
        want = bigram(model, pid + tid) - bigram(model, pid) if pid else bigram(model, tid)
        assert L[names.index("a"), j] == pytest.approx(want, rel=1e-12, abs=1e-9)
    assert store.vectors("a")["n_tokens"].tolist() == [len(p.encode()) + len(t.encode()) for p, t in PAIRS]


# -- a real tiny GPT-2: against full(ids) − full(prompt ids) -----------------------------------------


@pytest.mark.parametrize("fixture", ["tiny_gpt2_dir", "tiny_gpt2_bos_dir"])
def test_gpt2_conditional_equals_the_difference_of_full_scores(request, fixture):
    torch = pytest.importorskip("torch")
    from lmmap.scoring.hf import load_model

    model, tok = load_model(str(request.getfixturevalue(fixture)), device="cpu", dtype="float32")
    from lmmap.scoring.driver import score_texts
    from lmmap.scoring.hf import HFScorer  # noqa: F401

    def full(ids):
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        return float(sum(lp[i - 1, ids[i]] for i in range(1, len(ids))))

    pairs = [(p, t) for p, t in PAIRS if p]
    texts = [PromptedText(t, p) for p, t in pairs]
    from lmmap.scoring import get_backend

    scorer = get_backend("hf").load(str(request.getfixturevalue(fixture)), device="cpu")
    got, n_tokens, truncated = score_texts(scorer, texts)
    for (p, t), g, n in zip(pairs, got, n_tokens):
        pid = list(tok(p)["input_ids"])
        tid = list(tok(t, add_special_tokens=False)["input_ids"])
        if len(pid) + len(tid) > scorer.context_length:  # the long prompt: cut from the left, its BOS kept
            head = pid[:1] if pid[0] == tok.bos_token_id and fixture == "tiny_gpt2_bos_dir" else []
            pid = head + pid[len(pid) - (scorer.context_length - len(tid) - len(head)):]
        ids = pid + tid
        assert n == len(ids) <= scorer.context_length
        assert g == pytest.approx(full(ids) - full(pid), abs=1e-4)
    assert truncated.tolist() == [False, False, True]

"""Texts → token rows → batches, without torch (lmmap.scoring.encoding), and the package's light import."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from lmmap.exceptions import InputError
from lmmap.scoring import CONVENTIONS, ByteTokenizer, encode_texts, make_rows, plan_batches
from lmmap.scoring.encoding import resolve_max_length, rows_tokens, special_layout


def test_importing_the_scoring_package_loads_no_torch_transformers_rich_or_pandas():
    code = (
        "import sys, lmmap.scoring, lmmap.scoring.hf, lmmap.scoring.fake, lmmap.scoring.driver\n"
        "print(sorted(m for m in ('torch', 'transformers', 'rich', 'pandas', 'pyarrow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_conventions_exist_once():
    from lmmap.data import store

    assert CONVENTIONS is store.CONVENTIONS


def test_special_layout_of_both_tokenizer_layouts():
    assert special_layout(ByteTokenizer()) == ([], [])
    assert special_layout(ByteTokenizer(adds_bos=True)) == ([256], [])


def test_reference_and_full_conventions():
    tok = ByteTokenizer()
    ref = encode_texts(tok, ["abc", "hello"], "reference")
    assert [s.tolist() for s in ref.sequences] == [[97, 98, 99], [104, 101, 108, 108, 111]]
    assert ref.prepended is None and not ref.tokenizer_adds_bos
    full = encode_texts(tok, ["abc"], "full")
    assert full.sequences[0].tolist() == [256, 97, 98, 99] and full.prepended == 256
    # A tokenizer that puts a BOS in front: nothing is prepended in either convention.
    bos = ByteTokenizer(adds_bos=True)
    for convention in CONVENTIONS:
        enc = encode_texts(bos, ["abc"], convention)
        assert enc.sequences[0].tolist() == [256, 97, 98, 99] and enc.prepended is None and enc.tokenizer_adds_bos


def test_truncation_keeps_the_special_tokens_and_flags_the_text():
    enc = encode_texts(ByteTokenizer(adds_bos=True), ["abcdefgh", "ab"], "reference", max_length=5)
    assert enc.sequences[0].tolist() == [256, 97, 98, 99, 100]
    assert enc.truncated.tolist() == [True, False] and enc.n_tokens.tolist() == [5, 3]
    # With a stride nothing is cut: the windows cover the whole text.
    enc = encode_texts(ByteTokenizer(), ["abcdefgh"], "reference", max_length=5, stride=2)
    assert enc.n_tokens.tolist() == [8] and not enc.truncated.any()


def test_a_text_with_nothing_to_score_is_an_error_naming_it():
    with pytest.raises(InputError, match="position 7") as err:
        encode_texts(ByteTokenizer(), ["x"], "reference", positions=[7])
    assert "convention" in err.value.params
    assert encode_texts(ByteTokenizer(), ["x"], "full").n_tokens.tolist() == [2]


def test_bad_settings_name_the_parameter():
    with pytest.raises(InputError, match="convention") as err:
        encode_texts(ByteTokenizer(), ["abc"], "half")
    assert err.value.params == ("convention",)
    with pytest.raises(InputError, match="max_length"):
        resolve_max_length(64, 1, None)
    with pytest.raises(InputError, match="stride"):
        resolve_max_length(64, None, 64)
    assert resolve_max_length(64, None, None) == 64 and resolve_max_length(64, 10, 3) == 10


@pytest.mark.parametrize("L,S", [(5, 2), (8, 7), (4, 1)])
def test_windows_score_every_token_once_with_enough_context(L, S):
    seqs = [np.arange(n, dtype=np.int64) + 1000 * n for n in (2, 3, L, L + 1, 3 * L + 2, 50)]
    rows = make_rows(seqs, L, S)
    scored = {t: [] for t in range(len(seqs))}
    for ids, first, owner in zip(rows.ids, rows.first, rows.text):
        assert len(ids) <= L and first >= 1
        if scored[owner] or ids[0] != seqs[owner][0]:  # a later window: at least L - S tokens of context
            assert first >= L - S
        else:  # the first window starts at the text's first token
            assert first == 1
        scored[owner].extend(ids[first:].tolist())
    for t, seq in enumerate(seqs):
        assert scored[t] == seq[1:].tolist()  # each token once, the first never
    assert rows.lengths.sum() == rows_tokens(
        encode_texts(ByteTokenizer(), ["x" * len(s) for s in seqs], "reference", L, S), L, S
    )


def test_without_stride_a_text_is_one_row():
    seqs = [np.arange(n, dtype=np.int64) for n in (2, 9, 4)]
    rows = make_rows(seqs, None, None)
    assert rows.text.tolist() == [0, 1, 2] and rows.first.tolist() == [1, 1, 1]


def test_batches_hold_every_row_once_longest_first_within_the_budget():
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 300, size=500)
    batches = plan_batches(lengths, 1024)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    longest = [int(lengths[b].max()) for b in batches]
    assert longest == sorted(longest, reverse=True)
    assert all(len(b) * lengths[b].max() <= 1024 or len(b) == 1 for b in batches)
    # A row longer than the budget still gets a batch of its own.
    assert [b.tolist() for b in plan_batches(np.array([5000, 3]), 100)] == [[0], [1]]

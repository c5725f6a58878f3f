"""Texts → token rows → batches (torch-free: numpy and a tokenizer).

How a text is scored (SPEC §2)
------------------------------
``log p(x) = Σ_t log p(token_t | tokens_<t)`` over the tokenizer's default
encoding of x (its own special tokens included).

- ``convention="reference"`` (the authors' released data): score tokens 2..T.
  The first token is context only; if the tokenizer prepends a BOS (Llama),
  that BOS is the unscored token and every text token is scored.
- ``convention="full"``: when the tokenizer adds no BOS, lmmap prepends one
  (the EOS token where there is no BOS), so every token of the text is scored.

Texts longer than ``max_length`` (L, the model's context by default) are
truncated the way the tokenizer's own truncation does it (text tokens are cut,
special tokens kept) and flagged ``truncated``; ``stride=S`` scores them with a
sliding window instead: windows of L tokens starting every S tokens, each
scoring only the tokens the previous windows did not, with the rest of the
window as context.

``n_tokens`` is the length of the token sequence the text was scored as
(special tokens included, like the authors' ``num-tokens``); ``n_tokens - 1``
log-probabilities are summed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lmmap.data.conventions import CONVENTIONS, check_convention  # noqa: F401  (scoring's conventions are the store's)
from lmmap.exceptions import InputError

__all__ = [
    "CONVENTIONS", "Encoded", "Rows", "check_convention", "encode_texts", "make_rows", "plan_batches",
    "resolve_max_length", "rows_tokens", "special_layout",
]


def resolve_max_length(context_length: int, max_length: int | None, stride: int | None) -> int:
    """L: ``max_length``, or the model's ``context_length``; checks the ``stride`` against it."""
    L = int(context_length) if max_length is None else int(max_length)
    if L < 2:
        raise InputError(f"max_length must be at least 2, got {L}", params=("max_length",))
    if stride is not None and not 1 <= stride < L:
        raise InputError(f"stride must be between 1 and {L - 1} (the context length {L} less one), got {stride}",
                         params=("stride",))
    return L


def special_layout(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a text by default (e.g. ``[BOS]``, ``[]``)."""
    probe = "lmmap probe: Hello, world. 123"
    with_special = list(tokenizer(probe, add_special_tokens=True)["input_ids"])
    plain = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    n = len(plain)
    for k in range(len(with_special) - n + 1):
        if with_special[k : k + n] == plain:
            return with_special[:k], with_special[k + n :]
    # An unusual layout: take leading special tokens as the prefix.
    specials = set(tokenizer.all_special_ids)
    k = 0
    while k < len(with_special) and with_special[k] in specials:
        k += 1
    return with_special[:k], []


@dataclass
class Encoded:
    """Texts as token sequences ready to score (see :func:`encode_texts`)."""

    sequences: list[np.ndarray]  # int64 ids per text, after truncation (strided: the whole text)
    n_tokens: np.ndarray  # len of each sequence
    truncated: np.ndarray  # bool: tokens were dropped
    prefix: list[int]  # special tokens in front of the text (BOS), including one lmmap prepended
    suffix: list[int]
    prepended: int | None  # the token lmmap prepended (full convention), or None
    tokenizer_adds_bos: bool


def encode_texts(
    tokenizer,
    texts: Sequence[str],
    convention: str = "reference",
    max_length: int | None = None,
    stride: int | None = None,
    positions: Sequence[int] | None = None,
) -> Encoded:
    """Tokenize ``texts`` under ``convention``; truncate to ``max_length`` unless ``stride`` (sliding window).

    Raises if a text would have no scored token; the error names its position
    (``positions[i]`` when given).
    """
    check_convention(convention)
    prefix, suffix = special_layout(tokenizer)
    adds_bos = len(prefix) > 0
    prepended = None
    if convention == "full" and not adds_bos:
        prepended = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if prepended is None:
            raise InputError(
                f"tokenizer {tokenizer.name_or_path!r} has neither a BOS nor an EOS token, so the full convention "
                "has nothing to condition the first token on; use convention='reference'",
                params=("convention",),
            )
        prefix = [int(prepended)]
    texts = list(texts)
    ids = tokenizer(texts, add_special_tokens=True, return_attention_mask=False, verbose=False)["input_ids"] if texts else []
    n_pre, n_suf = len(prefix), len(suffix)
    keep = None
    if max_length is not None and stride is None:
        keep = max_length - n_pre - n_suf
        if keep < 1:
            raise InputError(f"max_length = {max_length} leaves no room for text after the special tokens",
                             params=("max_length",))
    sequences, n_tokens, truncated = [], np.empty(len(texts), np.int64), np.zeros(len(texts), bool)
    for i, seq in enumerate(ids):
        seq = np.asarray(seq, dtype=np.int64)
        if prepended is not None:
            seq = np.concatenate([[prepended], seq])
        if keep is not None and len(seq) > max_length:
            # As the tokenizer's own truncation: cut text tokens, keep the special tokens around them.
            seq = np.concatenate([seq[: n_pre + keep], seq[len(seq) - n_suf :]])
            truncated[i] = True
        if len(seq) < 2:
            pos = i if positions is None else int(positions[i])
            raise InputError(
                f"text at position {pos} encodes to {len(seq)} token under the {convention} convention with "
                f"{tokenizer.name_or_path!r}: nothing to score (the first token is only context); "
                "remove the text from the text set, or use convention='full'",
                params=("convention",),
            )
        sequences.append(seq)
        n_tokens[i] = len(seq)
    return Encoded(sequences, n_tokens, truncated, prefix, suffix, prepended, adds_bos)


@dataclass
class Rows:
    """Pieces of texts fed to the model: ``ids`` scores its tokens from ``first`` on; ``text`` is the owner."""

    ids: list[np.ndarray]
    first: np.ndarray
    text: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(r) for r in self.ids), np.int64, len(self.ids))


def make_rows(sequences: Sequence[np.ndarray], max_length: int | None, stride: int | None) -> Rows:
    """One row per text, or sliding windows of ``max_length`` every ``stride`` tokens for long texts.

    Window w covers ``[w·S, min(w·S + L, T))`` and scores the tokens from the
    previous window's end on, so every token is scored once, with at least
    ``L - S`` tokens of context (all earlier tokens in the first window).
    """
    ids, first, owner = [], [], []
    for t, seq in enumerate(sequences):
        T = len(seq)
        if stride is None or max_length is None or T <= max_length:
            ids.append(seq)
            first.append(1)
            owner.append(t)
            continue
        begin, prev_end = 0, 0
        while True:
            end = min(begin + max_length, T)
            ids.append(seq[begin:end])
            first.append(max(prev_end, 1) - begin)
            owner.append(t)
            if end == T:
                break
            prev_end = end
            begin += stride
    return Rows(ids, np.asarray(first, np.int64), np.asarray(owner, np.int64))


def scored_positions(lengths: np.ndarray, first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(row, pos)``: every scored token of a batch, as its row and its position in the row.

    Row b scores positions ``first[b] .. lengths[b] - 1``; the token at
    ``pos`` is predicted from position ``pos - 1``. Built with array
    operations, one entry per scored token and no Python object per token.
    """
    counts = np.asarray(lengths, np.int64) - first
    M = int(counts.sum())
    row = np.repeat(np.arange(len(counts)), counts)
    pos = np.repeat(first, counts) + (np.arange(M) - np.repeat(np.cumsum(counts) - counts, counts))
    return row, pos


def plan_batches(lengths: np.ndarray, batch_tokens: int) -> list[np.ndarray]:
    """Row indices per batch: longest first, each batch's rows × its longest row ≤ ``batch_tokens``.

    Sorting by length keeps padding small; longest first makes a batch that
    does not fit in memory fail at once, and keeps the ETA honest.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches, start, n = [], 0, len(order)
    while start < n:
        longest = int(lengths[order[start]])
        size = max(1, batch_tokens // max(longest, 1))
        batches.append(order[start : start + size])
        start += size
    return batches


def rows_tokens(enc: Encoded, L: int, stride: int | None) -> int:
    """Tokens the model will process: the rows' lengths (:func:`make_rows`), without building them.

    Strided, a text of T > L tokens has W = ⌈(T - L)/S⌉ + 1 windows, W - 1 of
    L tokens and a last one of T - (W - 1)·S: windows overlap, so more than
    the text's tokens.
    """
    if stride is None:
        return int(enc.n_tokens.sum())
    n = enc.n_tokens
    windows = np.where(n <= L, 1, np.ceil(np.maximum(n - L, 0) / stride).astype(np.int64) + 1)
    return int(np.where(n <= L, n, (windows - 1) * L + n - (windows - 1) * stride).sum())

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

Prompt→response texts (conditional log-likelihood)
--------------------------------------------------
A text with a prompt (a str with a ``prompt`` attribute, as
:class:`lmmap.data.texts.TextSet` gives them, or ``prompts=``) is scored as
``log p(text | prompt)``: the token ids are the prompt's encoding (with the
tokenizer's default special tokens) followed by the text's encoding without
special tokens, and only the text's tokens are summed — the first scored
position of the row is the prompt's length (``Encoded.first``), so the score
equals ``full(ids) − full(prompt ids)`` exactly, with any backend. The
convention plays no part (the prompt is the context), except for a prompt that
encodes to nothing: then the text is scored as a plain text. ``chat_template``:
the ids are the tokenizer's chat template (rendered by transformers'
``apply_chat_template``, which adds no default specials: a template that wants
a BOS writes it) applied to a user turn (the prompt) and an assistant turn
(the text); the prompt part is the template of the user turn with the
generation prompt, H, and the response part R is what the assistant turn adds
to it (the whole conversation renders as H + R): the ids are H's encoding
followed by R's, and every token of R is scored — the response and the
template's end of turn (e.g. ``<|im_end|>``). A template whose whole
conversation does not begin with H is refused; :func:`chat_template_id`
identifies the template for the stored record.
Truncation keeps the response and cuts the prompt from the left (the prompt's
leading special tokens — the tokenizer's BOS, also when a chat template writes
it — are kept), flagged ``truncated``; a response that alone does not fit is
cut from the right after one token of context.
``n_tokens`` is the length of the whole sequence, prompt included.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lmmap.data.conventions import CONVENTIONS, check_convention  # noqa: F401  (scoring's conventions are the store's)
from lmmap.exceptions import InputError

__all__ = [
    "CONVENTIONS", "Encoded", "Rows", "TokenSequences", "chat_template_id", "check_convention", "encode_texts",
    "make_rows", "plan_batches", "resolve_max_length", "rows_tokens", "special_layout",
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


class TokenSequences(list):
    """The token sequences of :class:`Encoded`, carrying ``first`` (each one's first scored position).

    :func:`make_rows` reads ``first`` from here when it is not given, so a
    caller that passes ``enc.sequences`` scores prompt→response texts right.
    """

    first: np.ndarray

    def __init__(self, sequences=(), first=None):
        super().__init__(sequences)
        self.first = np.ones(len(self), np.int64) if first is None else np.asarray(first, np.int64)


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
    first: np.ndarray | None = None  # first scored position of each sequence (1; a prompt's length)
    chat_template: bool = False

    def __post_init__(self):
        if self.first is None:
            self.first = getattr(self.sequences, "first", None)
        if self.first is None:
            self.first = np.ones(len(self.sequences), np.int64)
        self.first = np.asarray(self.first, np.int64)
        if not isinstance(self.sequences, TokenSequences):
            self.sequences = TokenSequences(self.sequences, self.first)
        else:
            self.sequences.first = self.first


def encode_texts(
    tokenizer,
    texts: Sequence[str],
    convention: str = "reference",
    max_length: int | None = None,
    stride: int | None = None,
    positions: Sequence[int] | None = None,
    prompts: Sequence[str | None] | None = None,
    chat_template: bool = False,
) -> Encoded:
    """Tokenize ``texts`` under ``convention``; truncate to ``max_length`` unless ``stride`` (sliding window).

    ``prompts`` (default: each text's ``prompt`` attribute, when texts carry
    one): score ``log p(text | prompt)`` (see the module's docstring);
    ``chat_template`` wraps prompt and text in the tokenizer's chat template.
    Raises if a text would have no scored token or lacks a prompt while
    others have one; the error names its position (``positions[i]`` when given).
    """
    check_convention(convention)
    texts = list(texts)
    if prompts is None:
        found = [getattr(t, "prompt", None) for t in texts]
        prompts = found if any(p is not None for p in found) else None
    if prompts is not None or chat_template:
        return _encode_prompted(tokenizer, texts, prompts, convention, max_length, stride, positions, chat_template)
    return _encode_plain(tokenizer, texts, convention, max_length, stride, positions)


def _encode_plain(tokenizer, texts, convention, max_length, stride, positions) -> Encoded:
    prefix, suffix = special_layout(tokenizer)
    adds_bos = len(prefix) > 0
    prepended = None
    if convention == "full" and not adds_bos:
        prepended = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if prepended is None:
            raise InputError(
                f"tokenizer {tokenizer.name_or_path!r} has neither a BOS nor an EOS token, so the full convention "
                "has nothing to condition the first token on; use {convention='reference'}",
                params=("convention",),
            )
        prefix = [int(prepended)]
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
                "remove the text from the text set, or use {convention='full'}",
                params=("convention",),
            )
        sequences.append(seq)
        n_tokens[i] = len(seq)
    return Encoded(sequences, n_tokens, truncated, prefix, suffix, prepended, adds_bos)


CHAT_CHUNK = 1024  # conversations rendered and tokenized per call: one batched tokenizer call each, bounded memory


def _chat_template_string(tokenizer) -> str:
    """The Jinja template ``apply_chat_template`` uses (a tokenizer may hold several by name), or an InputError."""
    name = getattr(tokenizer, "name_or_path", "the tokenizer")
    template = getattr(tokenizer, "chat_template", None)
    if not template or not hasattr(tokenizer, "apply_chat_template"):
        raise InputError(f"tokenizer {name!r} has no chat template; score without chat_template",
                         params=("chat_template",))
    if isinstance(template, str):
        return template
    try:
        return tokenizer.get_chat_template()
    except Exception as exc:  # transformers' own ValueError: several named templates and no "default"
        raise InputError(f"tokenizer {name!r} has several chat templates ({', '.join(sorted(map(str, template)))}) "
                         f"and none named 'default': {exc}".replace("\n", " "), params=("chat_template",)) from None


def chat_template_id(tokenizer) -> str:
    """``sha256:<16 hex>``: the identity of the chat template the tokenizer applies, for the stored record.

    The hash is over the Jinja template string (UTF-8) that
    ``tokenizer.apply_chat_template`` renders with (the ``"default"`` one of a
    tokenizer holding several), so two checkpoints sharing a template share
    the identity, and a changed template (a fixed whitespace, another
    generation prompt) gives another. Raises :class:`InputError` if the
    tokenizer has no chat template.
    """
    return "sha256:" + hashlib.sha256(_chat_template_string(tokenizer).encode("utf-8")).hexdigest()[:16]


def _render_chats(tokenizer, conversations, template: str, **kw) -> list[str]:
    """Each conversation rendered by ``template`` (batched), a template's own error as one line."""
    name = getattr(tokenizer, "name_or_path", "the tokenizer")
    try:
        out = tokenizer.apply_chat_template(conversations, chat_template=template, tokenize=False, **kw)
    except Exception as exc:
        # A template's own raise_exception (e.g. roles that must alternate) or a Jinja error: one line, not a traceback.
        if type(exc).__module__.split(".")[0] != "jinja2" and "TemplateError" not in type(exc).__name__:
            raise
        msg = " ".join(str(exc).split())
        raise InputError(f"the chat template of {name!r} fails on a user turn and an assistant turn: {msg}; "
                         "score without chat_template", params=("chat_template",)) from None
    return [out] if isinstance(out, str) else list(out)


def _chat_pieces(tokenizer, prompts, texts, where) -> tuple[list[list[int]], list[list[int]]]:
    """(prompt part, response part) ids of each text under the tokenizer's chat template.

    The prompt part is the template of the user turn with the generation
    prompt, H; the whole conversation W adds the assistant turn, and must
    extend H as a string (W = H + R). The ids are H's encoding followed by R's
    — the response and the template's end of turn — both without the
    tokenizer's default specials, as ``apply_chat_template`` encodes (a
    template that wants a BOS writes ``bos_token`` itself). These are the
    ids of ``apply_chat_template`` on W whenever H's ids are a prefix of W's;
    where a tokenizer merges the end of H with the start of R into one token
    (GPT-2's pre-tokenizer joins ChatML's closing newline with a response's
    leading spaces), they are still H's ids followed by R's, as in
    generation, where the response is sampled after H's ids.
    """
    name = getattr(tokenizer, "name_or_path", "the tokenizer")
    template = _chat_template_string(tokenizer)
    pids, tids = [], []
    for start in range(0, len(texts), CHAT_CHUNK):
        users = [[{"role": "user", "content": p}] for p in prompts[start : start + CHAT_CHUNK]]
        heads = _render_chats(tokenizer, users, template, add_generation_prompt=True)
        wholes = _render_chats(tokenizer, [u + [{"role": "assistant", "content": t}]
                                           for u, t in zip(users, texts[start : start + CHAT_CHUNK])], template)
        for k, (head, whole) in enumerate(zip(heads, wholes)):
            if not whole.startswith(head):
                at = next((j for j, (x, y) in enumerate(zip(head, whole)) if x != y), min(len(head), len(whole)))
                raise InputError(
                    f"text at position {where(start + k)}: the chat template of {name!r} does not extend the user "
                    "turn with the generation prompt when the assistant turn is added (they differ from character "
                    f"{at}: {head[at:at + 20]!r} vs {whole[at:at + 20]!r}), so the response cannot be told apart "
                    "from the prompt; score without chat_template", params=("chat_template",))
        rests = [w[len(h):] for h, w in zip(heads, wholes)]
        enc = lambda xs: tokenizer(xs, add_special_tokens=False, return_attention_mask=False,  # noqa: E731
                                   verbose=False)["input_ids"] if xs else []
        pids += [[int(x) for x in ids] for ids in enc(heads)]
        tids += [[int(x) for x in ids] for ids in enc(rests)]
    return pids, tids


def _encode_prompted(tokenizer, texts, prompts, convention, max_length, stride, positions, chat_template) -> Encoded:
    """Prompt ids + text ids; the first scored position is the prompt's length (see the module's docstring)."""
    name = getattr(tokenizer, "name_or_path", "the tokenizer")
    where = lambda i: i if positions is None else int(positions[i])  # noqa: E731
    if prompts is None:
        prompts = [getattr(t, "prompt", None) for t in texts]
    prompts = list(prompts)
    if len(prompts) != len(texts):
        raise InputError(f"prompts has {len(prompts)} entries for {len(texts)} texts; give one prompt per text",
                         params=("prompts",))
    if chat_template and texts and all(p is None for p in prompts):
        raise InputError("chat_template scores prompt→response texts, and these texts carry no prompt: give "
                         "prompts (a text set with a prompt field), or score without chat_template",
                         params=("chat_template",))
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise InputError(f"text at position {where(i)} has no prompt (got {type(p).__name__}) while others have "
                             "one: every text of a prompt→response text set needs a prompt", params=("prompts",))
    prefix, suffix = special_layout(tokenizer)
    adds_bos = len(prefix) > 0
    plain_prefix, prepended = list(prefix), None
    if convention == "full" and not adds_bos:
        prepended = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        plain_prefix = [] if prepended is None else [int(prepended)]
    texts = [str(t) for t in texts]
    if chat_template:
        pids, tids = _chat_pieces(tokenizer, prompts, texts, where)
        prepended = None  # the template's turn header is the context of every response, empty prompt or not
    else:
        pids = tokenizer(prompts, add_special_tokens=True, return_attention_mask=False, verbose=False)["input_ids"]
        tids = tokenizer(texts, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]
    n = len(texts)
    sequences, first = [], np.empty(n, np.int64)
    n_tokens, truncated = np.empty(n, np.int64), np.zeros(n, bool)
    L = None if (max_length is None or stride is not None) else int(max_length)
    for i in range(n):
        p = [int(x) for x in pids[i]]
        r = [int(x) for x in tids[i]]
        if not r:
            raise InputError(f"text at position {where(i)} encodes to no token with {name!r}: nothing to score; "
                             "remove it from the text set", params=("convention",))
        head_n = 0
        if not p:  # an empty prompt: the text is scored as a plain text under the convention
            p, f0 = plain_prefix, (len(plain_prefix) if plain_prefix else 1)
            if not plain_prefix and len(r) < 2:
                raise InputError(
                    f"text at position {where(i)} has an empty prompt and encodes to 1 token under the {convention} "
                    f"convention with {name!r}: nothing to score; use {{convention='full'}}", params=("convention",))
            head_n = len(p)
        else:
            f0 = len(p)
            if p[: len(prefix)] == prefix:  # a chat template's own BOS too: kept when the prompt is cut
                head_n = len(prefix)
        if L is not None and len(p) + len(r) > L:
            truncated[i] = True
            ctx = max(head_n, 1)
            if len(r) <= L - ctx:  # cut the prompt from the left, keep its leading special tokens
                keep = L - len(r) - head_n
                p = p[:head_n] + (p[len(p) - keep:] if keep > 0 else [])
            else:  # the response alone does not fit: one token (or the specials) of context, the response cut
                p = p[:head_n] if head_n else p[-1:]
                r = r[: L - len(p)]
            f0 = len(p) if p else 1
        seq = np.asarray(p + r, dtype=np.int64)
        sequences.append(seq)
        first[i] = f0
        n_tokens[i] = len(seq)
    return Encoded(TokenSequences(sequences, first), n_tokens, truncated, list(prefix), list(suffix), prepended,
                   adds_bos, first=first, chat_template=bool(chat_template))


@dataclass
class Rows:
    """Pieces of texts fed to the model: ``ids`` scores its tokens from ``first`` on; ``text`` is the owner."""

    ids: list[np.ndarray]
    first: np.ndarray
    text: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(r) for r in self.ids), np.int64, len(self.ids))


def make_rows(sequences: Sequence[np.ndarray], max_length: int | None, stride: int | None,
              first: Sequence[int] | None = None) -> Rows:
    """One row per text, or sliding windows of ``max_length`` every ``stride`` tokens for long texts.

    ``first``: each sequence's first scored position (default: the
    sequences' own ``first`` (:class:`TokenSequences`), else 1 — every token but the first).
    Window w covers ``[b + w·S, min(b + w·S + L, T))`` and scores the tokens from the
    previous window's end on, so every token is scored once, with at least
    ``L - S`` tokens of context (all earlier tokens in the first window).
    ``b`` is 0, or for a prompt of f tokens ``max(0, f - (L - S))``:
    windows over the prompt alone would score nothing.
    """
    if first is None:
        first = getattr(sequences, "first", None)
    starts = np.ones(len(sequences), np.int64) if first is None else np.asarray(first, np.int64)
    ids, first, owner = [], [], []
    for t, seq in enumerate(sequences):
        T, f = len(seq), int(starts[t])
        if stride is None or max_length is None or T <= max_length:
            ids.append(seq)
            first.append(f)
            owner.append(t)
            continue
        begin, prev_end = max(0, f - (max_length - stride)) if f > 1 else 0, f
        while True:
            end = min(begin + max_length, T)
            ids.append(seq[begin:end])
            first.append(max(prev_end, begin + 1) - begin)
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

"""Log-likelihood vectors from Hugging Face causal LMs (SPEC §2): batched, memory-bounded, resumable.

Two layers:

- :func:`score_texts` is pure compute: a loaded model and tokenizer and a list
  of texts in, ``(loglik, n_tokens, truncated)`` out.
- :func:`score_models` loads each model, scores the store's texts (or a subset
  of them), checkpoints as it goes so a killed run resumes where it stopped,
  and records the vector with everything SPEC §2 asks for.

How a text is scored
--------------------
``log p(x) = Σ_t log p(token_t | tokens_<t)`` over the tokenizer's default
encoding of x (its own special tokens included).

- ``convention="reference"`` (the authors' released data): score tokens 2..T.
  The first token is context only; if the tokenizer prepends a BOS (Llama),
  that BOS is the unscored token and every text token is scored.
- ``convention="full"``: when the tokenizer adds no BOS, lmmap prepends one
  (the EOS token where there is no BOS), so every token of the text is scored.

Texts longer than ``max_length`` (the model's context by default) are
truncated the way the tokenizer's own truncation does it (text tokens are cut,
special tokens kept) and flagged ``truncated``; ``stride=S`` scores them with a
sliding window instead: windows of ``max_length`` tokens starting every ``S``
tokens, each scoring only the tokens the previous windows did not, with the
rest of the window as context.

``n_tokens`` is the length of the token sequence the text was scored as
(special tokens included, like the authors' ``num-tokens``); ``n_tokens - 1``
log-probabilities are summed.

Speed and memory: texts are sorted by length and cut into batches of at most
``batch_tokens`` padded tokens. The model's decoder runs once per batch; its
hidden states at the scored positions only (never at padding) go through the
output layer in tiles of positions × vocabulary entries, each tile's logits in
float32, the log-normaliser accumulated across tiles (running maximum and
rescaled sum) and the target logit picked from its tile. So no
batch×length×vocabulary tensor exists: at most ``logits_memory`` bytes of
logits, however large the vocabulary. Models whose output is not
``lm_head(decoder(x))`` (logit soft-capping, scaling) are detected by a probe
at load time and scored from their own full logits instead, with batches
shrunk to keep those under ``FALLBACK_LOGITS_MEMORY``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from lmmap._version import __version__
from lmmap.exceptions import InputError, LmmapError, ScoringError, NonFiniteError as _NonFiniteBase

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise LmmapError(
        "scoring models needs torch and transformers: pip install 'lmmap[models]' "
        "(install the torch build for your machine first)"
    ) from exc

SCORER = "lmmap"
# Bump when a change can alter the numbers: checkpoints from another version are then not reused.
SCORER_VERSION = "1"
from lmmap.data.store import CONVENTIONS, Interrupted, ModelExistsError, check_model_name  # noqa: E402  (torch-free: import checks it too)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICES = ("auto", "cpu", "cuda", "mps")
# Padded tokens per batch. On a CPU, ~1,000 tokens already make the matrix products run at full
# rate, and larger batches are slower (measured: 1,024 beat 4,096 by ~10% for a 6×512 GPT-2) because
# the activations fall out of cache; GPUs want many more.
DEFAULT_BATCH_TOKENS = {"cpu": 1024, "mps": 8192, "cuda": 32768}
# Bytes of logits alive at once (float32, plus the half-precision ones they come from), and the
# vocabulary entries per tile. On a CPU, tiles of 1,024 positions × 2,048 entries (8 MiB) stay in cache,
# which runs the output layer about 1.4× faster than whole-vocabulary chunks; a GPU wants big tiles.
DEFAULT_LOGITS_MEMORY = {"cpu": 8 * 2**20, "mps": 256 * 2**20, "cuda": 512 * 2**20}
DEFAULT_VOCAB_BLOCK = {"cpu": 2048}
# Models scored through their own forward (see LogProbComputer) hold B×T×V logits: batches keep them under this.
FALLBACK_LOGITS_MEMORY = 2 * 2**30
DEFAULT_CHECKPOINT_EVERY = 60.0  # seconds between checkpoints
# Any of these in a model directory means its tokenizer was saved with it.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model",
                   "vocab.txt", "sentencepiece.bpe.model", "merges.txt", "tiktoken.model")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")


# -- settings -----------------------------------------------------------------------------


def resolve_device(device: str = "auto") -> "torch.device":
    """``auto`` picks cuda, then mps, then cpu; an explicit device must exist."""
    if device not in DEVICES and not re.fullmatch(r"cuda:\d+", str(device)):
        raise LmmapError(f"--device must be one of {', '.join(DEVICES)} (or cuda:N), got {device!r}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise LmmapError(f"--device {device}: no CUDA GPU is visible to torch {torch.__version__}; use --device cpu")
    if device == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise LmmapError("--device mps: the Apple MPS backend is not available here; use --device cpu")
    return torch.device(device)


def resolve_dtype(dtype: str) -> "torch.dtype":
    try:
        return DTYPES[str(dtype)]
    except KeyError:
        raise LmmapError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}") from None


def check_convention(convention: str) -> str:
    if convention not in CONVENTIONS:
        raise LmmapError(f"--convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")
    return convention


def model_context_length(model) -> int:
    """The model's context length, read from its config as the authors' scorer does."""
    cfg = model.config
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx"):
        v = getattr(cfg, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    return 2048


# -- loading ------------------------------------------------------------------------------


def describe_revision(source: str, revision: str | None = None) -> str:
    """What identifies the weights: the hub commit hash when known, else the directory and its files' mtime.

    Part of the checkpoint key, so a retrained local model never resumes from
    the old model's checkpoint.
    """
    path = Path(source)
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file()]
        weights = [p for p in files if p.name.endswith(WEIGHT_SUFFIXES)] or files
        newest = max((p.stat().st_mtime for p in weights), default=0.0)
        stamp = _dt.datetime.fromtimestamp(newest, _dt.timezone.utc).isoformat(timespec="microseconds")
        return f"{path.resolve()} (weights modified {stamp})"
    try:
        from transformers.utils import cached_file

        cfg = cached_file(source, "config.json", revision=revision, local_files_only=True,
                          _raise_exceptions_for_missing_entries=False)
    except Exception:  # not cached yet, or an old transformers: fall back to what the user asked for
        cfg = None
    if cfg:
        m = re.search(r"snapshots[/\\]([0-9a-f]{40})[/\\]", str(cfg))
        if m:
            return m.group(1)
    return revision or "main (commit unknown)"


def _accelerate_available() -> bool:
    try:
        import accelerate  # noqa: F401
    except ImportError:
        return False
    return True


def load_model(
    source: str,
    *,
    device: str = "auto",
    dtype: str = "float32",
    trust_remote_code: bool = False,
    revision: str | None = None,
    device_map: str | dict | None = None,
):
    """``(model, tokenizer)`` for a local directory or a hub name, in eval mode on ``device``.

    On CUDA the model is placed with ``device_map="auto"`` when accelerate is
    installed (as the authors' scorer does), so a model larger than one GPU
    spreads over the GPUs (and CPU memory) instead of failing. Remote code runs
    only when ``trust_remote_code`` is passed.
    """
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    path = Path(source)
    if not path.exists() and (source.startswith((".", "/", "~")) or source.count("/") > 1):
        raise LmmapError(f"model {source!r}: no such directory (and not a hub name of the form org/name)")
    if path.is_dir() and not (path / "config.json").exists():
        raise LmmapError(f"model {source!r}: the directory has no config.json; point at a save_pretrained() directory")
    if path.is_dir() and revision:
        raise LmmapError(f"model {source!r}: --revision applies to hub models, not to a local directory")
    if path.is_dir() and not any((path / f).exists() for f in TOKENIZER_FILES):
        raise ScoringError(
            f"model {source!r}: the directory has no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...); "
            "save the tokenizer next to the model with tokenizer.save_pretrained(DIR)"
        )
    if device_map is None and dev.type == "cuda" and dev.index is None and _accelerate_available():
        device_map = "auto"
    kwargs = dict(revision=revision, trust_remote_code=trust_remote_code)
    # transformers renamed torch_dtype to dtype in 4.56; older releases reject the new name.
    dtype_kw = "dtype" if _version_tuple(transformers.__version__) >= (4, 56) else "torch_dtype"
    try:
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(
                source, **kwargs, **{dtype_kw: torch_dtype}, device_map=device_map,
            )
    except Exception as exc:
        needs_code = "trust_remote_code" in str(exc) and not trust_remote_code
        hint = "; it needs its own modelling code: pass --trust-remote-code if you trust it" if needs_code else ""
        raise LmmapError(f"model {source!r} could not be loaded: {type(exc).__name__}: {_first_line(exc)}{hint}") from exc
    if device_map is None:
        model.to(dev)
    model.eval()
    return model, tokenizer


@contextlib.contextmanager
def _quiet_transformers():
    """No per-shard loading bars: lmmap shows its own progress, one line per model."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


# -- encoding -----------------------------------------------------------------------------


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
            raise LmmapError(
                f"tokenizer {tokenizer.name_or_path!r} has neither a BOS nor an EOS token, so the full convention "
                "has nothing to condition the first token on; use --convention reference"
            )
        prefix = [int(prepended)]
    texts = list(texts)
    ids = tokenizer(texts, add_special_tokens=True, return_attention_mask=False, verbose=False)["input_ids"] if texts else []
    n_pre, n_suf = len(prefix), len(suffix)
    keep = None
    if max_length is not None and stride is None:
        keep = max_length - n_pre - n_suf
        if keep < 1:
            raise LmmapError(f"--max-length {max_length} leaves no room for text after the special tokens")
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
            raise LmmapError(
                f"text at position {pos} encodes to {len(seq)} token under the {convention} convention with "
                f"{tokenizer.name_or_path!r}: nothing to score (the first token is only context); "
                "remove the text from the text set, or use --convention full"
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


# -- the log-probability computation ------------------------------------------------------


class LogProbComputer:
    """Sums of target log-probabilities for batches of rows, with bounded logits memory.

    ``mode`` is ``"hidden"`` when the model's logits equal its output layer
    applied to its decoder's hidden states (checked on a probe input). Then
    the output layer runs only at scored positions, one tile of
    ``chunk_positions`` positions × ``vocab_block`` vocabulary entries at a
    time, and the log-normaliser is accumulated across the vocabulary tiles
    (a running maximum and a rescaled running sum of exponentials, in
    float32). On a CPU the tiles are sized to stay in cache, which makes the
    output layer's matrix product and the exponentials markedly faster than
    one pass over full-vocabulary logits; memory no longer grows with the
    vocabulary at all. Otherwise ``"logits"``: the model's own forward, its
    logits converted to float32 a chunk of positions at a time, batches
    shrunk so that those logits stay under ``FALLBACK_LOGITS_MEMORY``.
    """

    def __init__(self, model, logits_memory: int | None = None, probe_ids: np.ndarray | None = None,
                 vocab_block: int | None = None):
        self.model = model
        self.input_device = model.get_input_embeddings().weight.device
        self.head = model.get_output_embeddings()
        self.vocab_size = int(self.head.weight.shape[0]) if self.head is not None else int(model.config.vocab_size)
        self.param_dtype = next(model.parameters()).dtype
        self.base = getattr(model, "base_model", None)
        head_device = self.head.weight.device if self.head is not None else self.input_device
        if logits_memory is None:
            logits_memory = DEFAULT_LOGITS_MEMORY.get(head_device.type, DEFAULT_LOGITS_MEMORY["cuda"])
        if logits_memory <= 0:
            raise LmmapError(f"logits memory must be positive, got {logits_memory}")
        self.logits_memory = int(logits_memory)
        block = vocab_block or DEFAULT_VOCAB_BLOCK.get(head_device.type, self.vocab_size)
        self.vocab_block = max(1, min(int(block), self.vocab_size))
        self.mode = "hidden" if self._hidden_path_matches(probe_ids) else "logits"
        # Tiles need the plain weight matrix; any other output module (quantised, hooked) is called whole.
        self.tiled = (
            self.mode == "hidden" and type(self.head) is torch.nn.Linear and self.head.weight.device.type != "meta"
        )
        if not self.tiled:
            self.vocab_block = self.vocab_size

    @property
    def chunk_positions(self) -> int:
        """Positions per tile: float32 logits (+ the half-precision ones they come from) within ``logits_memory``."""
        per_position = self.vocab_block * (4 + (2 if self.param_dtype != torch.float32 else 0))
        return max(1, self.logits_memory // per_position)

    def max_batch_tokens(self, batch_tokens: int) -> int:
        """The token budget: in ``logits`` mode the model's own B×T×V logits must fit the memory bound too."""
        if self.mode == "hidden":
            return batch_tokens
        itemsize = torch.tensor([], dtype=self.param_dtype).element_size()
        return max(1, min(batch_tokens, FALLBACK_LOGITS_MEMORY // (self.vocab_size * itemsize)))

    def _decoder_hidden(self, input_ids, attention_mask):
        out = self.base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return out[0] if isinstance(out, tuple) else out.last_hidden_state

    def _hidden_path_matches(self, probe_ids) -> bool:
        if self.head is None or self.base is None or self.base is self.model or not hasattr(self.head, "weight"):
            return False
        ids = np.arange(1, 9) % self.vocab_size if probe_ids is None or len(probe_ids) < 2 else np.asarray(probe_ids[:16])
        x = torch.as_tensor(ids, dtype=torch.long, device=self.input_device)[None, :]
        try:
            with torch.inference_mode():
                full = self.model(input_ids=x, use_cache=False).logits.float()
                hidden = self._decoder_hidden(x, None)
                mine = self.head(hidden.to(self.head.weight.device)).float().to(full.device)
        except Exception:  # a decoder with another calling convention: use the model's own forward
            return False
        if mine.shape != full.shape:
            return False
        tol = 1e-4 if self.param_dtype == torch.float32 else 2e-2
        scale = 1.0 + float(full.abs().max())
        return bool((mine - full).abs().max() <= tol * scale)

    def row_logliks(self, ids: Sequence[np.ndarray], first: np.ndarray) -> np.ndarray:
        """``Σ_{p ≥ first[b]} log p(ids[b][p] | ids[b][:p])`` for each row b, as float64."""
        B = len(ids)
        lengths = np.fromiter((len(r) for r in ids), np.int64, B)
        T = int(lengths.max())
        padded = np.zeros((B, T), dtype=np.int64)
        for b, r in enumerate(ids):
            padded[b, : len(r)] = r
        counts = lengths - first
        M = int(counts.sum())
        row = np.repeat(np.arange(B), counts)
        pos = np.repeat(first, counts) + (np.arange(M) - np.repeat(np.cumsum(counts) - counts, counts))
        targets = padded[row, pos]
        input_ids = torch.from_numpy(padded).to(self.input_device)
        # All rows of equal length need no mask, which lets attention take its causal fast path.
        mask = None
        if (lengths != T).any():
            mask = torch.from_numpy((np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)).to(self.input_device)
        if self.mode == "hidden":
            hidden = self._decoder_hidden(input_ids, mask)
            # Hidden states at the positions that predict a scored token: padding never reaches the output layer.
            src = hidden[torch.from_numpy(row).to(hidden.device), torch.from_numpy(pos - 1).to(hidden.device)]
            del hidden
            logp = self._head_logprobs(src, torch.from_numpy(targets))
        else:
            logits_all = self.model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
            r = torch.from_numpy(row).to(logits_all.device)
            p = torch.from_numpy(pos - 1).to(logits_all.device)
            tgt = torch.from_numpy(targets).to(logits_all.device)
            logp = torch.empty(M, dtype=torch.float32)
            chunk = self.chunk_positions
            for s in range(0, M, chunk):
                logits = logits_all[r[s : s + chunk], p[s : s + chunk]].float()
                logp[s : s + chunk] = _target_logprobs(logits, tgt[s : s + chunk]).cpu()
                del logits
            del logits_all
        sums = torch.zeros(B, dtype=torch.float64).index_add_(0, torch.from_numpy(row), logp.double())
        return sums.numpy()

    def _head_logprobs(self, src: "torch.Tensor", targets: "torch.Tensor") -> "torch.Tensor":
        """``log softmax(head(src))[target]`` per row, tile by tile (see the class docstring)."""
        dev = self.head.weight.device
        targets = targets.to(dev)
        M, chunk, vb, V = src.shape[0], self.chunk_positions, self.vocab_block, self.vocab_size
        out = torch.empty(M, dtype=torch.float32)
        weight, bias = self.head.weight, getattr(self.head, "bias", None)
        for s in range(0, M, chunk):
            h = src[s : s + chunk].to(dev)
            t = targets[s : s + chunk]
            if not self.tiled:
                out[s : s + chunk] = _target_logprobs(self.head(h).float(), t).cpu()
                continue
            n = h.shape[0]
            run_max = torch.full((n,), -float("inf"), device=dev)
            run_sum = torch.zeros(n, device=dev)
            target_logit = torch.empty(n, device=dev)
            for v0 in range(0, V, vb):
                v1 = min(v0 + vb, V)
                tile = torch.nn.functional.linear(h, weight[v0:v1], None if bias is None else bias[v0:v1]).float()
                here = ((t >= v0) & (t < v1)).nonzero()[:, 0]
                target_logit[here] = tile[here, t[here] - v0]
                new_max = torch.maximum(run_max, tile.amax(dim=-1))
                # Rescale the sum so far to the new maximum, then add this tile's exponentials (in place).
                run_sum.mul_((run_max - new_max).exp_()).add_(tile.sub_(new_max[:, None]).exp_().sum(dim=-1))
                run_max = new_max
                del tile
            out[s : s + chunk] = (target_logit - run_sum.log_() - run_max).cpu()
        return out


def _target_logprobs(logits: "torch.Tensor", targets: "torch.Tensor") -> "torch.Tensor":
    """``logit[target] - logsumexp(logits)`` per row, in float32 (SPEC §2 numerics).

    ``logits`` (float32, a chunk nobody else holds) is overwritten: shifting and
    exponentiating in place makes two passes over it and allocates nothing
    of its size, where ``torch.logsumexp`` allocates a temporary as large.
    """
    target = logits.gather(1, targets[:, None])[:, 0]
    peak = logits.amax(dim=-1, keepdim=True)
    lse = logits.sub_(peak).exp_().sum(dim=-1).log_().add_(peak[:, 0])
    return target - lse


# -- pure compute: texts in, vectors out --------------------------------------------------


@dataclass
class TextScores:
    """Log-likelihoods of the texts at ``index`` (positions in the list given), as they complete."""

    index: np.ndarray
    loglik: np.ndarray
    n_tokens: np.ndarray
    truncated: np.ndarray


class NonFiniteError(_NonFiniteBase):
    """A model produced NaN or ±inf for a text (SPEC §2: an error, never a stored number)."""

    def __init__(self, message: str, position: int):
        super().__init__(message)
        self.position = position


def iter_scores(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    convention: str = "reference",
    max_length: int | None = None,
    stride: int | None = None,
    batch_tokens: int | None = None,
    logits_memory: int | None = None,
    positions: Sequence[int] | None = None,
    progress: "ScoreProgress | None" = None,
    encoded: Encoded | None = None,
    info: dict | None = None,
) -> Iterator[TextScores]:
    """Score ``texts`` batch by batch, yielding the texts each batch completes.

    ``positions`` only name texts in error messages (default: 0..n-1).
    ``info``, when given, receives how the batches were computed (``mode``,
    ``batch_tokens``, ``n_batches``).
    """
    L = resolve_max_length(model, max_length, stride)
    enc = encoded or encode_texts(tokenizer, texts, convention, L, stride, positions)
    rows = make_rows(enc.sequences, L, stride)
    if len(rows.ids) == 0:
        return
    computer = LogProbComputer(model, logits_memory, probe_ids=rows.ids[0])
    budget = computer.max_batch_tokens(batch_tokens or default_batch_tokens(model))
    if budget < 1:
        raise LmmapError(f"--batch-tokens must be positive, got {batch_tokens}")
    lengths = rows.lengths
    batches = plan_batches(lengths, budget)
    if info is not None:
        info.update(mode=computer.mode, batch_tokens=int(budget), n_batches=len(batches), n_rows=len(rows.ids))
    n_texts = len(enc.sequences)
    remaining = np.bincount(rows.text, minlength=n_texts)
    total = np.zeros(n_texts, dtype=np.float64)
    with torch.inference_mode():
        for batch in batches:
            sums = computer.row_logliks([rows.ids[i] for i in batch], rows.first[batch])
            owners = rows.text[batch]
            np.add.at(total, owners, sums)
            np.subtract.at(remaining, owners, 1)
            done = np.unique(owners[remaining[owners] == 0])
            bad = done[~np.isfinite(total[done])]
            if len(bad):
                pos = int(bad[0]) if positions is None else int(positions[bad[0]])
                raise NonFiniteError(
                    f"non-finite log-likelihood ({total[bad[0]]}) for the text at position {pos}", pos
                )
            if progress is not None:
                progress.advance(len(done), int(lengths[batch].sum()))
            if len(done):
                yield TextScores(done, total[done].copy(), enc.n_tokens[done], enc.truncated[done])


def resolve_max_length(model, max_length: int | None, stride: int | None) -> int:
    L = model_context_length(model) if max_length is None else int(max_length)
    if L < 2:
        raise LmmapError(f"--max-length must be at least 2, got {L}")
    if stride is not None and not 1 <= stride < L:
        raise LmmapError(f"--stride must be between 1 and max_length - 1 = {L - 1}, got {stride}")
    return L


def default_batch_tokens(model) -> int:
    dev = model.get_input_embeddings().weight.device.type
    return DEFAULT_BATCH_TOKENS.get(dev, DEFAULT_BATCH_TOKENS["cpu"])


def score_texts(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    convention: str = "reference",
    max_length: int | None = None,
    stride: int | None = None,
    batch_tokens: int | None = None,
    logits_memory: int | None = None,
    progress: bool = False,
    description: str = "scoring",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(loglik, n_tokens, truncated)`` of each text under a loaded model (see the module docstring).

    Pure compute: nothing is read from or written to a store. Raises
    :class:`NonFiniteError` if a text's log-likelihood is NaN or infinite.
    """
    L = resolve_max_length(model, max_length, stride)
    enc = encode_texts(tokenizer, texts, convention, L, stride)
    n = len(enc.sequences)
    loglik = np.full(n, np.nan)
    with ScoreProgress(description, n, _rows_tokens(enc, L, stride), enabled=progress) as bar:
        for part in iter_scores(
            model, tokenizer, texts, convention=convention, max_length=L, stride=stride,
            batch_tokens=batch_tokens, logits_memory=logits_memory, progress=bar, encoded=enc,
        ):
            loglik[part.index] = part.loglik
    return loglik, enc.n_tokens.copy(), enc.truncated.copy()


def _rows_tokens(enc: Encoded, L: int, stride: int | None) -> int:
    """Tokens the model will process (windows overlap, so more than the texts' tokens when strided)."""
    if stride is None:
        return int(enc.n_tokens.sum())
    n = enc.n_tokens
    windows = np.where(n <= L, 1, np.ceil(np.maximum(n - L, 0) / stride).astype(np.int64) + 1)
    return int(np.where(n <= L, n, (windows - 1) * stride + L).sum())


# -- progress -----------------------------------------------------------------------------


class ScoreProgress:
    """A rich progress bar over tokens (so the ETA is right), showing texts, texts/s and tokens/s."""

    def __init__(self, description: str, n_texts: int, n_tokens: int, enabled: bool = True, console=None):
        self.enabled = enabled
        self.n_texts, self.n_tokens = n_texts, max(n_tokens, 1)
        self.texts_done, self.tokens_done = 0, 0
        self.description = description
        self.console = console
        self._progress = None

    def __enter__(self):
        self.start = time.perf_counter()
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            from rich.console import Console

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[texts]}/{task.fields[n_texts]} texts"),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console or Console(stderr=True),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                self.description, total=self.n_tokens, texts=0, n_texts=self.n_texts, rate=""
            )
        return self

    def advance(self, texts: int, tokens: int) -> None:
        self.texts_done += texts
        self.tokens_done += tokens
        if self._progress is not None:
            self._progress.update(self._task, advance=tokens, texts=self.texts_done, rate=self.rate_text())

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def rate_text(self) -> str:
        e = max(self.elapsed, 1e-9)
        return f"{self.texts_done / e:,.1f} texts/s {self.tokens_done / e:,.0f} tok/s"

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.stop()
        return False


# -- the store-level driver ---------------------------------------------------------------


@dataclass
class ScoreStatus:
    """What happened to one model: ``status`` is ``"scored"``, ``"skipped"`` or ``"failed"``."""

    model: str
    status: str
    message: str = ""
    n_scored: int = 0  # texts scored in this run
    n_resumed: int = 0  # texts taken from a checkpoint (or already stored)
    n_truncated: int = 0
    seconds: float = 0.0
    texts_per_s: float = 0.0
    tokens_per_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def __str__(self) -> str:
        return self.status + (f": {self.message}" if self.message else "")


@dataclass
class ScoringSettings:
    """Everything that changes the numbers; its hash keys checkpoints and says whether stored texts can be extended."""

    convention: str
    dtype: str
    max_length: int
    stride: int | None
    revision: str
    text_set_id: str

    @property
    def truncation(self) -> str:
        return "truncate" if self.stride is None else "strided"

    def key(self, name: str) -> str:
        payload = {"model": name, "scorer_version": SCORER_VERSION, **self.__dict__}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def score_models(
    store,
    models: Sequence[str],
    *,
    names: Sequence[str] | None = None,
    text_pos: Iterable[int] | None = None,
    device: str = "auto",
    dtype: str = "float32",
    convention: str = "reference",
    batch_tokens: int | None = None,
    max_length: int | None = None,
    stride: int | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    replace: bool = False,
    progress: bool = True,
    checkpoint_every: float = DEFAULT_CHECKPOINT_EVERY,
    device_map: str | None = None,
    logits_memory: int | None = None,
    console=None,
) -> dict[str, ScoreStatus]:
    """Score each model on the store's texts (or on ``text_pos`` only) and store its vector.

    ``models``: local directories, hub names, or names of models in the store
    (scored by lmmap: completes them from the source in their record, under
    their recorded settings). Each is stored under ``names[i]``, by default a
    short name: a directory's own name (``./runs/my-checkpoint`` →
    ``my-checkpoint``), a hub id as it is (``org/name``); two models that
    would get one name are refused. A model already in the store is skipped
    (unless ``replace``), or extended with the texts it lacks when it was
    scored under the same settings. A model that fails to load or gives a
    non-finite value is reported as ``failed`` and nothing is recorded for it;
    the others go on. Scoring saves a checkpoint every ``checkpoint_every``
    seconds (0: after every batch), so a killed run resumes with the missing
    texts only.
    """
    from lmmap.data.store import Store

    store = store if isinstance(store, Store) else Store(store)
    models = [str(m) for m in models]
    if not models:
        raise InputError("name at least one model to score")
    per_model: list[dict] = [{} for _ in models]
    if names is None:
        names = []
        stored = None
        for i, m in enumerate(models):
            if not Path(m).expanduser().exists():
                stored = store.records() if stored is None else stored
                if m in stored:  # a stored model's name: complete it from the source it was scored from
                    models[i], own = _stored_source(store, m, stored[m], revision)
                    # completing keeps the recorded settings; --replace rescores under the ones given
                    per_model[i] = {} if replace else own
                    names.append(m)
                    continue
            names.append(default_model_name(m))
    else:
        names = [str(n) for n in names]
    if len(names) != len(models):
        raise InputError(f"{len(names)} names for {len(models)} models: give one name per model")
    for n in names:
        check_model_name(n)
    first: dict[str, str] = {}
    for src, n in zip(models, names):
        if n in first:
            if first[n] == src:
                raise InputError(f"model {n!r} is listed twice; give each model once")
            raise InputError(
                f"models {first[n]!r} and {src!r} would both be stored as {n!r}; "
                "score them one at a time with --name NAME (names=[...] in Python)"
            )
        first[n] = src
    check_convention(convention)
    resolve_dtype(dtype)
    resolve_device(device)
    if batch_tokens is not None and batch_tokens < 1:
        raise LmmapError(f"--batch-tokens must be positive, got {batch_tokens}")
    if max_length is not None and max_length < 2:
        raise LmmapError(f"--max-length must be at least 2, got {max_length}")
    if stride is not None and stride < 1:
        raise LmmapError(f"--stride must be positive, got {stride}")
    if checkpoint_every < 0:
        raise LmmapError(f"checkpoint_every must be >= 0 seconds, got {checkpoint_every}")
    positions = _check_positions(text_pos, store.n_texts)
    from rich.markup import escape

    if console is None and progress:
        from rich.console import Console

        console = Console(stderr=True)
    say = console.print if console is not None else (lambda *a, **k: None)
    options = dict(
        device=device, dtype=dtype, convention=convention, batch_tokens=batch_tokens, max_length=max_length,
        stride=stride, trust_remote_code=trust_remote_code, revision=revision, replace=replace, progress=progress,
        checkpoint_every=checkpoint_every, device_map=device_map, logits_memory=logits_memory, console=console,
    )
    out = {}
    for source, name, own in zip(models, names, per_model):
        try:
            status = _score_one(store, source, name, positions, say=say, **{**options, **own})
        except Interrupted as exc:
            raise Interrupted(f"{name!r}: {exc}{_done_before(out)}") from None
        except KeyboardInterrupt:
            n = store.checkpoint_chunks(name)
            kept = (f"{n} checkpoint chunk(s) of {name!r} kept; rerun the same command to resume" if n
                    else f"nothing of {name!r} was scored yet")
            raise Interrupted(kept + _done_before(out)) from None
        except NonFiniteError as exc:
            hint = " (try --dtype float32)" if dtype != "float32" else ""
            status = ScoreStatus(name, "failed", f"model {name!r}: {exc}; nothing was stored for it{hint}")
        except LmmapError as exc:
            status = ScoreStatus(name, "failed", str(exc) if name in str(exc) else f"model {name!r}: {exc}")
        except Exception as exc:  # one model's failure must not stop the others
            hint = ""
            if "out of memory" in str(exc).lower() or isinstance(exc, MemoryError):
                hint = " (out of memory: lower --batch-tokens"
                hint += ")" if _accelerate_available() else ", or pip install accelerate so that a large model is spread over devices)"
            status = ScoreStatus(name, "failed", f"model {name!r}: {type(exc).__name__}: {_first_line(exc)}{hint}")
        finally:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        out[name] = status
        style = {"scored": "green", "skipped": "yellow", "failed": "bold red"}[status.status]
        text = name + (f": {status.message}" if status.message else "")
        say(f"[{style}]{status.status}[/] {escape(text)}", highlight=False)
    return out


def _done_before(out: dict) -> str:
    done = [n for n, st in out.items() if st.status == "scored"]
    return f"; {len(done)} model(s) finished before it are stored" if done else ""


def default_model_name(source: str) -> str:
    """The name a model is stored under by default: a local directory's own name; a hub id as it is."""
    path = Path(source).expanduser()
    if path.exists():
        return path.resolve().name or str(path.resolve())
    return source


def _stored_source(store, name: str, rec: dict, revision) -> tuple[str, dict]:
    """Where to load stored model ``name`` from, and the settings it was scored under."""
    if rec.get("scorer") != SCORER or not rec.get("source"):
        raise InputError(
            f"model {name!r} was imported ({rec.get('source') or 'from a file'}), not scored by lmmap, so lmmap "
            f"does not know where the model is: score it with `lmmap score PATH_OR_HUB_ID --name {name}`"
        )
    own = {k: rec[k] for k in ("convention", "dtype", "max_length", "stride") if rec.get(k) is not None}
    return str(rec["source"]), own


def _check_positions(text_pos, n_texts: int) -> np.ndarray:
    if text_pos is None:
        return np.arange(n_texts, dtype=np.int64)
    pos = np.asarray(list(text_pos) if not isinstance(text_pos, np.ndarray) else text_pos, dtype=np.int64)
    if pos.ndim != 1 or len(pos) == 0:
        raise LmmapError("text_pos must be a non-empty list of text positions")
    if pos.min() < 0 or pos.max() >= n_texts:
        raise LmmapError(f"text positions must lie in 0..{n_texts - 1}; got {int(pos.min())}..{int(pos.max())}")
    return np.unique(pos)


def _score_one(store, source, name, positions, *, say, device, dtype, convention, batch_tokens, max_length, stride,
               trust_remote_code, revision, replace, progress, checkpoint_every, device_map, logits_memory,
               console) -> ScoreStatus:
    existing = None
    if store.has_model(name) and not replace:
        existing = store.vectors(name)
        if np.isin(positions, existing["text_pos"].to_numpy()).all():
            store.clear_redundant_checkpoints(name)  # e.g. chunks of a scorer that lost a race for it
            return ScoreStatus(name, "skipped", "already in the store (pass --replace to score it again)",
                               n_resumed=len(positions))
    t_load = time.perf_counter()
    model, tokenizer = load_model(source, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
                                  revision=revision, device_map=device_map)
    try:
        load_seconds = time.perf_counter() - t_load
        L = resolve_max_length(model, max_length, stride)
        settings = ScoringSettings(convention, dtype, L, stride, describe_revision(source, revision), store.text_set_id)
        key = settings.key(name)
        todo = positions
        kept = None  # rows already stored for this model that the new vector keeps
        if existing is not None:
            old = store.record(name)
            if old.get("settings_key") != key:
                raise LmmapError(
                    f"model {name!r} is already in the store on {len(existing)} texts under other settings "
                    f"({_settings_summary(old)}), and lacks some of the texts asked for; pass --replace to rescore it"
                )
            kept = existing
            todo = np.setdiff1d(positions, existing["text_pos"].to_numpy())
        ck = store.load_checkpoint(name, key)
        ck = ck[ck["text_pos"].isin(todo)]
        todo = np.setdiff1d(todo, ck["text_pos"].to_numpy())
        n_before = len(positions) - len(todo)
        if len(ck):
            say(f"{name}: resuming from a checkpoint: {len(ck)} of {len(positions)} texts already scored",
                highlight=False, markup=False)
        texts = store.texts.texts
        new = _score_positions(
            store, name, key, model, tokenizer, [texts[i] for i in todo], todo, convention=convention, max_length=L,
            stride=stride, batch_tokens=batch_tokens, logits_memory=logits_memory, progress=progress,
            checkpoint_every=checkpoint_every, console=console,
        )
        enc_info = new.pop("encoding")
        parts = [p for p in (kept, ck, new["frame"]) if p is not None and len(p)]
        import pandas as pd

        frame = pd.concat(parts, ignore_index=True).sort_values("text_pos") if parts else None
        record = _record(model, tokenizer, settings, key, source, device, enc_info, new, n_before, load_seconds, batch_tokens)
        wanted_all = len(frame) == store.n_texts
        try:
            store.write_model(
                name, frame["loglik"].to_numpy(), n_tokens=frame["n_tokens"].to_numpy(),
                truncated=frame["truncated"].to_numpy(), text_pos=None if wanted_all else frame["text_pos"].to_numpy(),
                record=record, replace=replace or existing is not None,
            )
        except ModelExistsError:
            # Another process stored this model while this one scored it.
            theirs = store.record(name)
            covered = np.isin(positions, store.vectors(name)["text_pos"].to_numpy()).all()
            if theirs.get("settings_key") == key and covered:
                store.clear_checkpoint(name)
                return ScoreStatus(name, "skipped", "was completed by another process meanwhile; its stored vector "
                                   "(same settings) is kept", n_resumed=len(positions))
            raise ScoringError(
                f"model {name!r} was stored by another process meanwhile under other settings "
                f"({_settings_summary(theirs)}); pass --replace to overwrite it with this run's"
            ) from None
        store.clear_checkpoint(name)
        n_trunc = int(frame["truncated"].sum())
        msg = f"{len(todo)} texts scored" + (f", {n_before} resumed" if n_before else "")
        msg += f", {n_trunc} truncated to {L} tokens" if stride is None else f", strided (window {L}, stride {stride})"
        if len(todo):
            msg += f" ({new['texts_per_s']:.1f} texts/s, {new['tokens_per_s']:,.0f} tokens/s)"
        return ScoreStatus(name, "scored", msg, n_scored=len(todo), n_resumed=n_before, n_truncated=n_trunc,
                           seconds=new["seconds"], texts_per_s=new["texts_per_s"], tokens_per_s=new["tokens_per_s"])
    finally:
        del model


def _score_positions(store, name, key, model, tokenizer, texts, positions, *, convention, max_length, stride,
                     batch_tokens, logits_memory, progress, checkpoint_every, console) -> dict:
    """Score ``texts`` (at store ``positions``), saving checkpoints; the finished rows as a DataFrame."""
    import pandas as pd

    enc = encode_texts(tokenizer, texts, convention, max_length, stride, positions)
    done = {"text_pos": [], "loglik": [], "n_tokens": [], "truncated": []}
    pending = {k: [] for k in done}
    last_ck = time.perf_counter()

    def flush():
        if pending["text_pos"]:
            cat = {k: np.concatenate(v) for k, v in pending.items()}
            store.save_checkpoint(name, key, cat["text_pos"], cat["loglik"], cat["n_tokens"], cat["truncated"])
            for k, v in pending.items():
                done[k].extend(v)
                v.clear()

    desc = name if len(name) <= 40 else "…" + name[-39:]
    info: dict = {}
    with ScoreProgress(desc, len(texts), _rows_tokens(enc, max_length, stride), enabled=progress, console=console) as bar:
        try:
            for part in iter_scores(
                model, tokenizer, texts, convention=convention, max_length=max_length, stride=stride,
                batch_tokens=batch_tokens, logits_memory=logits_memory, positions=positions, progress=bar, encoded=enc,
                info=info,
            ):
                pending["text_pos"].append(positions[part.index])
                pending["loglik"].append(part.loglik)
                pending["n_tokens"].append(part.n_tokens)
                pending["truncated"].append(part.truncated)
                if time.perf_counter() - last_ck >= checkpoint_every:
                    flush()
                    last_ck = time.perf_counter()
        except BaseException:
            # Keep what is finished (Ctrl-C, a bad text, out of memory): the next run resumes from it.
            flush()
            raise
        seconds = bar.elapsed
    for k, v in pending.items():
        done[k].extend(v)
    empty = {"text_pos": np.int64, "loglik": np.float64, "n_tokens": np.int64, "truncated": bool}
    frame = pd.DataFrame({k: np.concatenate(v) if v else np.array([], dtype=empty[k]) for k, v in done.items()})
    tokens = int(enc.n_tokens.sum())
    return {
        "frame": frame,
        "seconds": seconds,
        "texts_per_s": len(texts) / seconds if seconds > 0 else 0.0,
        "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
        "encoding": enc,
        "info": info,
    }


def _record(model, tokenizer, settings: ScoringSettings, key, source, device, enc: Encoded, run: dict, n_before,
            load_seconds, batch_tokens) -> dict:
    """The SPEC §2 record stored with the vector."""
    import transformers

    info = run.get("info") or {}
    first_param = next(model.parameters())
    return {
        "convention": settings.convention,
        "truncation": settings.truncation,
        "stride": settings.stride,
        "max_length": settings.max_length,
        "dtype": settings.dtype,
        "device": str(first_param.device) if not getattr(model, "hf_device_map", None) else "device_map:auto",
        "device_requested": device,
        "scorer": SCORER,
        "scorer_version": SCORER_VERSION,
        "settings_key": key,
        # absolute for a local directory: `lmmap score NAME` completes the model from any directory
        "source": str(Path(source).expanduser().resolve()) if Path(source).expanduser().is_dir() else str(source),
        "revision": settings.revision,
        "architecture": (getattr(model.config, "architectures", None) or [type(model).__name__])[0],
        "tokenizer": getattr(tokenizer, "name_or_path", str(source)),
        "tokenizer_class": type(tokenizer).__name__,
        "tokenizer_adds_bos": bool(enc.tokenizer_adds_bos),
        "prepended_token": enc.prepended,
        "n_texts_scored_this_run": int(len(enc.sequences)),
        "n_texts_resumed": int(n_before),
        "seconds": round(run["seconds"], 3),
        "load_seconds": round(load_seconds, 3),
        "texts_per_s": round(run["texts_per_s"], 3),
        "tokens_per_s": round(run["tokens_per_s"], 1),
        "batch_tokens": info.get("batch_tokens", batch_tokens or default_batch_tokens(model)),
        "logprob_path": info.get("mode"),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "lmmap_scorer": f"lmmap {__version__}",
    }


def _settings_summary(rec: dict) -> str:
    keys = ("scorer", "convention", "dtype", "max_length", "truncation", "revision")
    return ", ".join(f"{k}={rec.get(k)}" for k in keys if rec.get(k) is not None)

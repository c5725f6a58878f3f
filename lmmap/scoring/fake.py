"""A deterministic fake backend: exact log-probabilities of tiny bigram models over bytes (torch-free).

For tests and examples that need real scoring behaviour (batches, windows,
checkpoints, resumption, placement) without torch. It goes through the same
driver as the transformers backend: ``score_models(store, ["a", "b"],
backend="fake")`` or ``backend=FakeBackend(...)``.

The model
---------
Tokens are the UTF-8 bytes of the text (ids 0..255), plus BOS = 256 and
EOS = 257; V = 258. A bigram model with add-one smoothing over counts c:

    p(b | a) = (c[a, b] + 1) / (Σ_b' c[a, b'] + V)

so ``log p(x) = Σ_{t ≥ 2} log p(x_t | x_{t-1})`` under the reference
convention, and with a BOS in front under the full one. The counts come from
training text (:meth:`BigramModel.from_texts`) or from a seed derived from
the model's name (:meth:`BigramModel.from_name`), so every name is a
different, reproducible model. A count may be NaN, to make a model that
gives non-finite values.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from lmmap.exceptions import InputError, ScoringError
from lmmap.scoring.encoding import scored_positions

BOS, EOS = 256, 257
VOCAB_SIZE = 258
FAKE_DTYPES = ("float32", "bfloat16", "float16")


class ByteTokenizer:
    """UTF-8 bytes as token ids, with the calling convention of a Hugging Face tokenizer.

    ``adds_bos``: put BOS in front of every text (the Llama layout); by
    default no special token is added (the GPT-2 layout).
    """

    bos_token_id = BOS
    eos_token_id = EOS
    all_special_ids = [BOS, EOS]

    def __init__(self, adds_bos: bool = False):
        self.adds_bos = bool(adds_bos)
        self.name_or_path = "bytes+bos" if adds_bos else "bytes"

    def __len__(self) -> int:
        return VOCAB_SIZE

    def _one(self, text: str, add_special_tokens: bool) -> np.ndarray:
        ids = np.frombuffer(str(text).encode("utf-8"), dtype=np.uint8).astype(np.int64)
        if add_special_tokens and self.adds_bos:
            ids = np.concatenate([[BOS], ids])
        return ids

    def __call__(self, text, add_special_tokens: bool = True, **_ignored) -> dict:
        if isinstance(text, str):
            return {"input_ids": self._one(text, add_special_tokens)}
        return {"input_ids": [self._one(t, add_special_tokens) for t in text]}


@dataclass
class BigramModel:
    """Counts ``c`` (V × V) of a bigram model with add-one smoothing; ``logp[a, b] = log p(b | a)``."""

    counts: np.ndarray
    logp: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        c = np.asarray(self.counts, dtype=np.float64)
        if c.shape != (VOCAB_SIZE, VOCAB_SIZE):
            raise InputError(f"counts must have shape ({VOCAB_SIZE}, {VOCAB_SIZE}), got {c.shape}", params=("counts",))
        self.counts = c
        self.logp = np.log(c + 1.0) - np.log(c.sum(axis=1) + VOCAB_SIZE)[:, None]

    @classmethod
    def from_name(cls, name: str, max_count: int = 20) -> "BigramModel":
        """Counts drawn uniformly from 0..max_count-1 with a seed derived from ``name``."""
        seed = int.from_bytes(hashlib.sha256(str(name).encode("utf-8", "surrogatepass")).digest()[:8], "little")
        return cls(np.random.default_rng(seed).integers(0, max_count, size=(VOCAB_SIZE, VOCAB_SIZE)))

    @classmethod
    def from_texts(cls, texts: Sequence[str], tokenizer: ByteTokenizer | None = None) -> "BigramModel":
        """Counts of the bigrams of ``texts`` (as ``tokenizer`` encodes them)."""
        tok = tokenizer or ByteTokenizer()
        counts = np.zeros((VOCAB_SIZE, VOCAB_SIZE), dtype=np.float64)
        for ids in tok(list(texts))["input_ids"]:
            np.add.at(counts, (ids[:-1], ids[1:]), 1.0)
        return cls(counts)

    def fingerprint(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.counts).tobytes()).hexdigest()[:16]


class FakeScorer:
    """A :class:`BigramModel` as a :class:`~lmmap.scoring.protocol.Scorer` (``delay``: seconds slept per batch)."""

    default_batch_tokens = 1024

    def __init__(self, model: BigramModel, *, name: str = "fake", context_length: int = 64, adds_bos: bool = False,
                 delay: float = 0.0):
        self.model, self.name = model, name
        self.tokenizer = ByteTokenizer(adds_bos)
        self.context_length = int(context_length)
        self.delay = float(delay)

    def prepare(self, probe_ids: np.ndarray, batch_tokens: int | None) -> dict:
        return {"mode": "bigram", "batch_tokens": batch_tokens or self.default_batch_tokens}

    def score(self, ids: Sequence[np.ndarray], first: np.ndarray) -> np.ndarray:
        if self.delay:
            time.sleep(self.delay)
        B = len(ids)
        lengths = np.fromiter((len(r) for r in ids), np.int64, B)
        flat = np.concatenate(ids) if B else np.zeros(0, np.int64)
        row, pos = scored_positions(lengths, first)
        at = (np.cumsum(lengths) - lengths)[row] + pos  # the token's index in the concatenated rows
        return np.bincount(row, weights=self.model.logp[flat[at - 1], flat[at]], minlength=B).astype(np.float64)

    def describe(self) -> dict:
        return {"device": "cpu", "architecture": "BigramModel", "tokenizer": self.tokenizer.name_or_path,
                "tokenizer_class": type(self.tokenizer).__name__, "backend": "fake"}

    def close(self) -> None:
        pass


class FakeBackend:
    """Loads :class:`FakeScorer` objects by name.

    ``models``: name → :class:`BigramModel`; a name not in it fails to load
    (a :class:`~lmmap.exceptions.ScoringError`). Without ``models`` every
    name loads ``BigramModel.from_name(name)``.
    """

    name = "fake"

    def __init__(self, models: dict[str, BigramModel] | None = None, *, context_length: int = 64,
                 adds_bos: bool = False, delay: float = 0.0):
        self.models = None if models is None else dict(models)
        self.context_length, self.adds_bos, self.delay = context_length, adds_bos, delay

    def model(self, source: str) -> BigramModel:
        if self.models is None:
            return BigramModel.from_name(source)
        if source not in self.models:
            raise ScoringError(f"model {source!r}: no such fake model (known: {', '.join(map(repr, self.models))})")
        return self.models[source]

    def check(self, *, device: str, dtype: str) -> None:
        from lmmap.scoring.hf import check_device

        check_device(device)
        if str(dtype) not in FAKE_DTYPES:
            raise InputError(f"dtype must be one of {', '.join(FAKE_DTYPES)}, got {dtype!r}", params=("dtype",))

    def load(self, source: str, *, device: str = "cpu", dtype: str = "float32", trust_remote_code: bool = False,
             revision: str | None = None, device_map=None, logits_memory: int | None = None) -> FakeScorer:
        return FakeScorer(self.model(source), name=source, context_length=self.context_length, adds_bos=self.adds_bos,
                          delay=self.delay)

    def revision(self, source: str, revision: str | None) -> str:
        return f"fake bigram {self.model(source).fingerprint()}"

    def failure_hint(self, exc: BaseException) -> tuple[str, tuple[str, ...]]:
        return "", ()

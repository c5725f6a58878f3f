"""What the scoring driver needs from a model backend, and what it returns (torch-free).

A *backend* (:class:`Backend`) turns a source string (a directory, a hub id,
a fake model's name) into a loaded :class:`Scorer`. The driver
(:mod:`lmmap.scoring.driver`) does everything else the same way for every
backend: it tokenises with the scorer's tokenizer
(:func:`lmmap.scoring.encoding.encode_texts`), cuts rows and batches, sums the
rows' log-probabilities into texts' log-likelihoods, checkpoints and stores.

A batch is a list of token rows ``ids[b]`` (int64 arrays) and, per row, the
first position ``first[b]`` whose token is scored; the scorer returns

    ``Σ_{p ≥ first[b]} log p(ids[b][p] | ids[b][:p])``

per row, as float64. A text is one row, or several windows of it when scored
with a stride, so the text's log-likelihood is the sum of its rows'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from lmmap.exceptions import NonFiniteError  # noqa: F401  (importable from here, as before)


@runtime_checkable
class Tokenizer(Protocol):
    """The part of a Hugging Face tokenizer that :func:`~lmmap.scoring.encoding.encode_texts` uses."""

    bos_token_id: int | None
    eos_token_id: int | None
    all_special_ids: list[int]
    name_or_path: str

    def __call__(self, text, add_special_tokens: bool = True, **kwargs) -> dict: ...


@runtime_checkable
class Scorer(Protocol):
    """A loaded model that gives log-probabilities of token rows.

    ``name``: what was loaded (the source), for messages. ``tokenizer``:
    encodes the texts. ``context_length``: the longest row the model takes
    (the default ``max_length``). ``default_batch_tokens``: padded tokens
    per batch when none are asked for.
    """

    name: str
    tokenizer: Tokenizer
    context_length: int
    default_batch_tokens: int

    def prepare(self, probe_ids: np.ndarray, batch_tokens: int | None) -> dict:
        """Get ready to score rows like ``probe_ids`` (the first row to score).

        Returns ``{"mode": str, "batch_tokens": int}``: how the
        log-probabilities will be computed, and the padded tokens per batch
        to use (``batch_tokens``, or the backend's default when None, lowered
        if the backend needs it).
        """

    def score(self, ids: Sequence[np.ndarray], first: np.ndarray) -> np.ndarray:
        """``Σ_{p ≥ first[b]} log p(ids[b][p] | ids[b][:p])`` for each row b (float64, shape ``(len(ids),)``)."""

    def describe(self) -> dict:
        """Fields of the stored record that only the backend knows.

        ``device``, ``architecture``, ``tokenizer``, ``tokenizer_class``, and
        any other (library versions); see :func:`lmmap.scoring.driver.score_models`.
        """

    def close(self) -> None:
        """Free the model's memory (called once scoring of this model is over, even after an error)."""


@runtime_checkable
class Backend(Protocol):
    """Loads :class:`Scorer` objects; ``name`` (``"hf"``, ``"fake"``) identifies it.

    A backend is made available under its name by one line,
    ``register_backend(name, "module:Class")`` in
    :mod:`lmmap.scoring.registry`, or by another package's entry point in the
    group ``lmmap.backends``. Besides the members below it may set
    ``load_options``: the backend-specific fields of
    :class:`~lmmap.scoring.options.ScoringOptions` its ``load`` takes as
    keywords (``("packing", "layers", "final_norm")`` for transformers;
    ``("base_url", "api_key_env")`` for a backend that scores through a
    server: its URL, and the name of the environment variable holding its
    API key). Such an option is passed only when set, and refused for a
    backend that does not list it.
    """

    name: str

    def check(self, *, device: str, dtype: str) -> None:
        """Raise :class:`~lmmap.exceptions.InputError` for a device or dtype this backend cannot use (nothing loaded)."""

    def load(self, source: str, *, device: str, dtype: str, trust_remote_code: bool, revision: str | None,
             device_map, logits_memory: int | None, **backend_options) -> Scorer:
        """Load ``source``; raise :class:`~lmmap.exceptions.ScoringError` (or InputError) if it cannot be.

        ``backend_options``: those of ``load_options`` that are set (e.g.
        ``base_url="http://localhost:8000/v1"``, ``api_key_env="OPENAI_API_KEY"``).
        """

    def revision(self, source: str, revision: str | None) -> str:
        """What identifies the weights of ``source`` (part of the checkpoint key)."""

    def failure_hint(self, exc: BaseException) -> tuple[str, tuple[str, ...]]:
        """A hint to append to the message of an unexpected failure (e.g. out of memory), and the parameters it names."""


# -- results --------------------------------------------------------------------------------


@dataclass
class TextScores:
    """Log-likelihoods of the texts at ``index`` (positions in the list given), as they complete."""

    index: np.ndarray
    loglik: np.ndarray
    n_tokens: np.ndarray
    truncated: np.ndarray


@dataclass
class ScoreStatus:
    """What happened to one model: ``status`` is ``"scored"``, ``"skipped"`` or ``"failed"``.

    ``params``: the Python parameters ``message`` names (the CLI shows their flags).
    """

    model: str
    status: str
    message: str = ""
    n_scored: int = 0  # texts scored in this run
    n_resumed: int = 0  # texts taken from a checkpoint (or already stored)
    n_truncated: int = 0
    seconds: float = 0.0
    texts_per_s: float = 0.0
    tokens_per_s: float = 0.0
    params: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def __str__(self) -> str:
        # ``message`` keeps its parameter mentions in braces for the CLI; Python readers get the Python names.
        from lmmap.params import python_message

        return self.status + (f": {python_message(self.message, self.params)}" if self.message else "")

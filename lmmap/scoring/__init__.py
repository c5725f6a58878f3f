"""Log-likelihood vectors of language models on the store's texts (SPEC §2).

    protocol   what a backend and a loaded scorer provide; ScoreStatus (torch-free)
    encoding   texts → token rows → batches; the conventions (torch-free)
    driver     score_models: store, checkpoints, resumption; progress events, no printing
    hf         the transformers backend (torch imported only when a model is loaded); packed batches, OOM retry
    vllm       the vLLM backend (vllm imported only when a model is loaded)
    fake       exact bigram models over bytes, for tests without torch
    executor   Ray: one task per (model, shard of texts); the driver alone writes the store

``import lmmap.scoring`` loads neither torch nor transformers nor rich, pandas or pyarrow. Call
the driver as ``lmmap.scoring.score_models(...)`` (tests replace that
attribute).
"""

from lmmap.scoring.driver import (
    DEFAULT_CHECKPOINT_EVERY,
    SCORER,
    SCORER_VERSION,
    ScoringSettings,
    default_model_name,
    get_backend,
    iter_scores,
    score_models,
    score_texts,
)
from lmmap.scoring.encoding import Encoded, check_convention, encode_texts, make_rows, plan_batches
from lmmap.scoring.fake import BigramModel, ByteTokenizer, FakeBackend, FakeScorer
from lmmap.scoring.protocol import Backend, NonFiniteError, Scorer, ScoreStatus, TextScores, Tokenizer

__all__ = [
    "Backend", "BigramModel", "ByteTokenizer", "CONVENTIONS", "DEFAULT_CHECKPOINT_EVERY", "Encoded", "FakeBackend",
    "FakeScorer", "NonFiniteError", "SCORER", "SCORER_VERSION", "ScoreStatus", "Scorer", "ScoringSettings",
    "TextScores", "Tokenizer", "check_convention", "default_model_name", "encode_texts", "get_backend",
    "iter_scores", "make_rows", "plan_batches", "score_models", "score_texts",
]


def __getattr__(name: str):
    if name == "CONVENTIONS":  # read from the store on first use (see lmmap.scoring.encoding)
        from lmmap.data.store import CONVENTIONS

        return CONVENTIONS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

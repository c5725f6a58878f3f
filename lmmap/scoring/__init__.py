"""Log-likelihood vectors of language models on the store's texts (SPEC §2).

    protocol     what a backend and a loaded scorer provide; ScoreStatus (torch-free)
    options      ScoringOptions (how to score) and ExecutorOptions (where): frozen, checked on construction
    registry     backends by name: register_backend / get_backend; plug-ins by entry points (group lmmap.backends)
    encoding     texts → token rows → batches; the conventions (torch-free)
    compute      iter_scores / score_texts: a loaded scorer and texts in, log-likelihoods out
    bookkeeping  what both executors share: stored or not, resume plans, records, failures, the store write
    driver       score_models: store, checkpoints, resumption; progress events, no printing
    executor     Ray: one task per (model, shard of texts); the driver alone writes the store
    hf           the transformers backend (torch imported only when a model is loaded); packed batches, OOM retry
    vllm         the vLLM backend (vllm imported only when a model is loaded)
    fake         exact bigram models over bytes, for tests without torch

Imports go one way (a test walks them): driver → executor → bookkeeping,
compute, options, registry → protocol; backends import bookkeeping, compute
and encoding, never the driver. ``import lmmap.scoring`` loads neither torch
nor transformers nor rich, pandas or pyarrow. Call the driver as
``lmmap.scoring.score_models(...)`` (tests replace that attribute).
"""

from lmmap.scoring.bookkeeping import SCORER, SCORER_VERSION, ScoringSettings
from lmmap.scoring.compute import iter_scores, score_texts
from lmmap.scoring.driver import default_model_name, score_models
from lmmap.scoring.encoding import Encoded, check_convention, encode_texts, make_rows, plan_batches
from lmmap.scoring.fake import BigramModel, ByteTokenizer, FakeBackend, FakeScorer
from lmmap.scoring.options import DEFAULT_CHECKPOINT_EVERY, ExecutorOptions, ScoringOptions
from lmmap.scoring.protocol import Backend, NonFiniteError, Scorer, ScoreStatus, TextScores, Tokenizer
from lmmap.scoring.registry import backend_names, get_backend, register_backend

__all__ = [
    "Backend", "BigramModel", "ByteTokenizer", "CONVENTIONS", "DEFAULT_CHECKPOINT_EVERY", "Encoded", "ExecutorOptions",
    "FakeBackend", "FakeScorer", "NonFiniteError", "SCORER", "SCORER_VERSION", "ScoreStatus", "Scorer",
    "ScoringOptions", "ScoringSettings", "TextScores", "Tokenizer", "backend_names", "check_convention",
    "default_model_name", "encode_texts", "get_backend", "iter_scores", "make_rows", "plan_batches",
    "register_backend", "score_models", "score_texts",
]


def __getattr__(name: str):
    if name == "CONVENTIONS":  # read from the store on first use (see lmmap.scoring.encoding)
        from lmmap.data.store import CONVENTIONS

        return CONVENTIONS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

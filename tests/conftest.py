"""Shared fixtures: tiny real transformers models built locally (nothing is downloaded).

The tokenizers are byte-level BPE trained with ``tokenizers`` on files of the
Python standard library; the models are GPT-2 configurations with random
weights, saved with ``save_pretrained`` and loaded back the way a user's
checkpoint is. Weights are initialised with a large spread so that the
predicted distributions are far from uniform: a scorer that read the wrong
position or token would give visibly different numbers.

Fixtures other test files can use:

- ``stdlib_texts``: a list of ~1 MB of real text (stdlib ``*.py`` sources)
- ``tiny_tokenizer`` / ``tiny_bos_tokenizer``: ``PreTrainedTokenizerFast``;
  the second prepends ``<s>`` like Llama's
- ``tiny_gpt2_dir`` / ``tiny_gpt2_bos_dir``: saved model directories
  (2 layers, width 64, context 64 tokens, vocabulary 512)
- ``make_tiny_gpt2``: ``make_tiny_gpt2(path, tokenizer, **config) -> path``
  for a model of your own (another seed or size)
"""

from __future__ import annotations

import os
import sysconfig

# Under pytest-xdist two workers share the two cores: one BLAS/torch thread each,
# set before numpy or torch is imported, or the threads fight each other.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
from pathlib import Path

import pytest

TINY_VOCAB = 512
TINY_CONFIG = dict(n_layer=2, n_embd=64, n_head=2, n_positions=64, initializer_range=0.2)


def _stdlib_files(limit: int = 40) -> list[Path]:
    lib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in lib.glob("*.py") if p.stat().st_size > 8_000)
    return files[:limit]


@pytest.fixture(scope="session")
def stdlib_texts() -> list[str]:
    return [p.read_text(encoding="utf-8", errors="replace") for p in _stdlib_files()]


def train_tiny_tokenizer(texts: list[str], vocab_size: int = TINY_VOCAB, prepend_bos: bool = False):
    """A byte-level BPE ``PreTrainedTokenizerFast``; ``prepend_bos`` adds ``<s>`` in front like Llama's tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    if prepend_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
        )
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="<|endoftext|>")
    # GPT-2's layout: one token serves as BOS and EOS and the tokenizer adds neither.
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


def save_tiny_gpt2(path, tokenizer, seed: int = 0, **config) -> Path:
    """Save a random GPT-2 model and ``tokenizer`` to ``path`` with ``save_pretrained``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **{**TINY_CONFIG, **config},
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(cfg)
    path = Path(path)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer(stdlib_texts):
    return train_tiny_tokenizer(stdlib_texts[:20])


@pytest.fixture(scope="session")
def tiny_bos_tokenizer(stdlib_texts):
    return train_tiny_tokenizer(stdlib_texts[:20], prepend_bos=True)


@pytest.fixture(scope="session")
def make_tiny_gpt2():
    return save_tiny_gpt2


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    return save_tiny_gpt2(tmp_path_factory.mktemp("models") / "tiny-gpt2", tiny_tokenizer, seed=0)


@pytest.fixture(scope="session")
def tiny_gpt2_bos_dir(tmp_path_factory, tiny_bos_tokenizer) -> Path:
    return save_tiny_gpt2(tmp_path_factory.mktemp("models") / "tiny-gpt2-bos", tiny_bos_tokenizer, seed=1)


@pytest.fixture(scope="session")
def demo_full(tmp_path_factory):
    """The full offline demo (13 trained models, 300 texts), built once per test session.

    Tests that use it are marked ``xdist_group("demo")`` so that under
    ``pytest -n 2 --dist loadgroup`` one worker builds it and runs them all.
    Set LMMAP_TEST_DEMO_DIR to keep the built demo between runs.
    """
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from lmmap.demo import run_demo

    root = Path(os.environ.get("LMMAP_TEST_DEMO_DIR") or tmp_path_factory.mktemp("demo-full") / "out")
    result = run_demo(root, size="full", progress=None)
    return result, root

"""Fixtures shared by the scoring tests that run real (tiny) transformers models."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for the module: tiny models gain nothing from more, and on a shared machine (or under
    pytest-xdist, one torch per worker) spinning OpenMP threads slow them several-fold."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def gpt2(tiny_gpt2_dir, one_torch_thread):
    """The tiny GPT-2 of tests/conftest.py, loaded through lmmap's own loader (float32, CPU)."""
    from lmmap.scoring.hf import load_model

    return load_model(str(tiny_gpt2_dir), device="cpu", dtype="float32")


# An offline hub cache holding lmmap-test/tiny-run at step10/step30/step60 (+ main): see hub_cache.py.
from hub_cache import tiny_run_cache, tiny_run_checkpoints, tiny_run_hub  # noqa: E402,F401  (fixtures)


# -- tokenizers with a chat template (issue 15 §3, --chat-template) -------------------------------------

# The templates' text holds Jinja's escapes (a backslash and n), as chat_template.jinja files do.
# ChatML (Qwen's layout): no BOS, turns between <|im_start|> and <|im_end|>.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Llama 3's layout: the template writes the BOS itself (the tokenizer also prepends it to plain text), contents trimmed.
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
CHAT_STYLES = {
    "chatml": dict(template=CHATML_TEMPLATE, specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                   bos="<|endoftext|>", eos="<|im_end|>", prepend_bos=False),
    "llama3": dict(template=LLAMA3_TEMPLATE,
                   specials=["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
                   bos="<|begin_of_text|>", eos="<|eot_id|>", prepend_bos=True),
}


def train_chat_tokenizer(texts: list[str], style: str, template: str | None = None, vocab_size: int = 512):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with the special tokens and chat template of ``style``
    (``template`` replaces the style's template)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    st = CHAT_STYLES[style]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=st["specials"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    if st["prepend_bos"]:
        tok.post_processor = processors.TemplateProcessing(single=f"{st['bos']} $A",
                                                           special_tokens=[(st["bos"], tok.token_to_id(st["bos"]))])
    others = [t for t in st["specials"] if t not in (st["bos"], st["eos"])]
    out = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=st["bos"], eos_token=st["eos"],
                                  additional_special_tokens=others)
    out.chat_template = st["template"] if template is None else template
    return out


@pytest.fixture(scope="session", params=sorted(CHAT_STYLES))
def chat_gpt2_dir(request, tmp_path_factory, stdlib_texts, make_tiny_gpt2):
    """A tiny GPT-2 saved with a tokenizer that has a chat template (``request.param``: ``chatml`` or ``llama3``),
    context 128 tokens; load it with ``AutoTokenizer.from_pretrained`` / ``lmmap.scoring.hf.load_model``."""
    tok = train_chat_tokenizer(stdlib_texts[:20], request.param)
    return make_tiny_gpt2(tmp_path_factory.mktemp("models") / f"tiny-gpt2-{request.param}", tok, seed=3,
                          n_positions=128)


@pytest.fixture(scope="session")
def chat_styles() -> dict:
    """The chat layouts of ``chat_gpt2_dir``: style → its ``template``, ``specials``, ``bos``, ``eos``."""
    return CHAT_STYLES

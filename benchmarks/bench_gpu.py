"""GPU scoring throughput: lmmap's HF backend (padded, packed), vLLM, and the authors' one-text method, with MFU.

Runs only where CUDA is visible (elsewhere it says so and exits 0). For each
model shape — Qwen2-1.5B and Llama-3-8B, built from their configurations with
random weights on the GPU, nothing downloaded — it scores texts of 1,024
bytes (token ids drawn directly: lengths like those of 1 KB English texts
under these tokenizers, ~4.2 bytes a token; the text's content does not
change the work) and prints, as each method finishes:

- texts/s and tokens/s;
- MFU: ``2 · params · tokens / seconds / peak``, ``params`` every parameter
  (tied embeddings once), ``peak`` the GPU's dense bf16 tensor rate from
  :data:`PEAK_BF16_TFLOPS` (``--peak-tflops`` for a GPU not in it);
- the ratio to the authors' method (shimo-lab/modelmap: one text per
  forward, a full log-softmax, a Python loop over tokens — as
  ``benchmarks/bench_scoring.py`` times it), timed on a subset of the texts;
- the minutes 10,000 texts would take, against the paper's Table 2 (one RTX
  6000 Ada: Qwen2-1.5B 4.78 min, Llama-3-8B 8.06 min).

Methods: ``hf-padded`` (``packing="off"``), ``hf-packed`` (``packing="on"``;
flash attention's varlen kernels when flash-attn is installed, else SDPA
with a block-diagonal mask), ``vllm`` (lmmap's vLLM backend with
``load_format="dummy"``, if vLLM is installed), ``authors``. The HF backend
runs through ``HFScorer.score`` on the batches lmmap's driver plans
(``plan_batches``), and its token budget comes from free GPU memory unless
``--batch-tokens`` is given.

The defaults fit in well under 10 minutes on one H100/H200 (10,000 texts for
the 1.5B shape, 2,000 for the 8B shape, 200 for the authors' method):

    python benchmarks/bench_gpu.py                       # both shapes, every method
    python benchmarks/bench_gpu.py --shapes qwen2-1.5b --texts 10000 --methods hf-packed,vllm
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from the vendors' data sheets. Matched against
# torch.cuda.get_device_name() in lower case, first match wins: more specific names come first.
PEAK_BF16_TFLOPS = (
    ("gh200", 989.4),
    ("h200 nvl", 835.5),
    ("h200", 989.4),
    ("h100 nvl", 835.5),
    ("h100 pcie", 756.0),
    ("h100", 989.4),  # SXM
    ("h800", 989.4),
    ("b200", 2250.0),
    ("a100", 312.0),
    ("a800", 312.0),
    ("rtx 6000 ada", 364.2),
    ("l40s", 362.1),
    ("l40", 181.0),
    ("l4", 121.0),
    ("a10g", 70.0),
    ("a10", 125.0),
    ("rtx 4090", 165.2),
)

# The model shapes of the paper's Table 2, as their published configurations.
SHAPES = {
    "qwen2-1.5b": dict(
        arch="qwen2", vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
        num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1e6,
        tie_word_embeddings=True, paper_minutes=4.78, default_texts=10_000,
    ),
    "llama3-8b": dict(
        arch="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192, rope_theta=5e5,
        tie_word_embeddings=False, paper_minutes=8.06, default_texts=2_000,
    ),
}
METHODS = ("hf-padded", "hf-packed", "vllm", "authors")
BYTES_PER_TOKEN = 4.2  # 1 KB of English under the Qwen2 / Llama-3 tokenizers: ~240 tokens


def peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of the GPU called ``device_name`` (None if it is not in the table)."""
    name = device_name.lower()
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in name:
            return tflops
    return None


def mfu(n_params: int, tokens: int, seconds: float, peak: float | None) -> float | None:
    """Model FLOP utilisation: ``2 · params · tokens / seconds`` over ``peak`` TFLOP/s (None without a peak)."""
    if peak is None or seconds <= 0:
        return None
    return 2.0 * n_params * tokens / seconds / (peak * 1e12)


def draw_rows(n_texts: int, vocab: int, seed: int = 0, text_bytes: int = 1024) -> list[np.ndarray]:
    """Token rows like ``n_texts`` texts of ``text_bytes`` bytes: a BOS, then ~bytes/4.2 (±8%) random ids."""
    rng = np.random.default_rng(seed)
    mean = text_bytes / BYTES_PER_TOKEN
    lengths = np.clip(np.round(rng.normal(mean, 0.08 * mean, n_texts)), 16, None).astype(np.int64)
    return [np.concatenate([[1], rng.integers(2, vocab, n - 1)]).astype(np.int64) for n in lengths]


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields a tied matrix once


# -- the shapes ---------------------------------------------------------------------------


def make_config(shape: str):
    from transformers import LlamaConfig, Qwen2Config

    spec = {k: v for k, v in SHAPES[shape].items() if k not in ("arch", "paper_minutes", "default_texts")}
    cls = Qwen2Config if SHAPES[shape]["arch"] == "qwen2" else LlamaConfig
    return cls(**spec, bos_token_id=1, eos_token_id=2, dtype="bfloat16")


def build_model(shape: str, attn: str):
    """The shape with random weights, built directly on the GPU in bf16 (seconds, nothing written to disk)."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg = make_config(shape)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation=attn)
    return model.eval()


def tiny_tokenizer(vocab: int):
    """A word-level tokenizer the HF scorer and vLLM's loader can hold; rows are ids drawn directly."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"<unk>": 0, "<s>": 1, "</s>": 2}, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


# -- the methods --------------------------------------------------------------------------


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_lmmap_scorer(scorer, rows, batch_tokens, deadline):
    """Score ``rows`` as lmmap's driver does (length-sorted batches); (seconds, tokens, rows done, plan)."""
    from lmmap.scoring.encoding import plan_batches

    plan = scorer.prepare(rows[0], batch_tokens)
    lengths = np.fromiter((len(r) for r in rows), np.int64, len(rows))
    batches = plan_batches(lengths, int(plan["batch_tokens"]))
    first = np.ones(len(rows), np.int64)
    # Warm-up: the first batch compiles kernels and grows the allocator's pools.
    scorer.score([rows[i] for i in batches[0]], first[batches[0]])
    _sync()
    done, tokens = 0, 0
    t0 = time.perf_counter()
    for b in batches:
        sums = scorer.score([rows[i] for i in b], first[b])
        done += len(b)
        tokens += int(lengths[b].sum())
        if time.perf_counter() > deadline:
            break
    _sync()
    assert np.isfinite(sums).all()
    return time.perf_counter() - t0, tokens, done, plan


def run_authors(model, rows, n, deadline):
    """shimo-lab/modelmap's loop: one text per forward, full log-softmax, a float() per token."""
    import torch

    done, tokens, dev = 0, 0, model.device
    for r in rows[:2]:  # warm-up
        with torch.no_grad():
            model(torch.as_tensor(r, device=dev)[None], use_cache=True)
    _sync()
    t0 = time.perf_counter()
    for r in rows[:n]:
        tokens_t = torch.as_tensor(r, device=dev)[None]
        with torch.no_grad():
            logits = model(tokens_t, use_cache=True).logits
            log_probs = torch.log_softmax(logits, dim=-1)
            next_tokens = tokens_t[0, 1:]
            sum(float(log_probs[0, i, next_tokens[i]]) for i in range(tokens_t.shape[1] - 1))
        done += 1
        tokens += len(r)
        if time.perf_counter() > deadline:
            break
    return time.perf_counter() - t0, tokens, done


def report(shape, method, seconds, tokens, done, n_params, peak, authors_rate, note=""):
    rate = done / seconds
    u = mfu(n_params, tokens, seconds, peak)
    line = {
        "shape": shape, "method": method, "texts": done, "seconds": round(seconds, 2),
        "texts_per_s": round(rate, 1), "tokens_per_s": round(tokens / seconds),
        "mfu": None if u is None else round(u, 4),
        "min_per_10k_texts": round(10_000 / rate / 60, 2),
        "paper_min_per_10k": SHAPES[shape]["paper_minutes"],
        "x_authors": None if not authors_rate else round(rate / authors_rate, 1),
    }
    if note:
        line["note"] = note
    print(json.dumps(line), flush=True)
    return rate


def bench_shape(shape, args, peak, budget_end):
    import torch

    from lmmap.scoring.hf import HFScorer

    n_texts = args.texts or SHAPES[shape]["default_texts"]
    vocab = SHAPES[shape]["vocab_size"]
    rows = draw_rows(n_texts, vocab, seed=1)
    methods = [m for m in args.methods.split(",") if m]
    try:
        import flash_attn  # noqa: F401

        attn = "flash_attention_2"
    except ImportError:
        attn = "sdpa"
    t = time.perf_counter()
    model = build_model(shape, attn)
    n_params = count_params(model)
    print(f"# {shape}: {n_params / 1e9:.2f} B parameters, attention {attn}, built in {time.perf_counter() - t:.0f} s; "
          f"{n_texts} texts, {sum(map(len, rows)):,} tokens", flush=True)
    tok = tiny_tokenizer(vocab)
    authors_rate, scorer = None, None
    # Each method may take at most its share of what is left, so one slow method cannot eat the others' time.
    share = lambda k: time.perf_counter() + max(10.0, (budget_end - time.perf_counter()) / max(1, k))  # noqa: E731
    if "authors" in methods:
        secs, tokens, done = run_authors(model, rows, min(args.authors_texts, n_texts), share(len(methods)))
        authors_rate = report(shape, "authors", secs, tokens, done, n_params, peak, None)
    for k, method in enumerate(m for m in methods if m.startswith("hf-")):
        packing = "off" if method == "hf-padded" else "on"
        scorer = HFScorer(model, tok, name=shape, packing=packing)
        secs, tokens, done, plan = run_lmmap_scorer(scorer, rows, args.batch_tokens, share(len(methods) - k))
        report(shape, method, secs, tokens, done, n_params, peak, authors_rate,
               note=f"mode {plan['mode']}, batch_tokens {plan['batch_tokens']}, oom splits {scorer.n_oom_splits}")
    del model, scorer
    import gc

    gc.collect()  # the HF model must be gone before vLLM claims its share of the GPU
    torch.cuda.empty_cache()
    if "vllm" in methods:
        bench_vllm(shape, rows, n_params, peak, authors_rate, tok, share(1))


def bench_vllm(shape, rows, n_params, peak, authors_rate, tok, deadline):
    try:
        from lmmap.scoring.vllm import VLLMBackend, vllm_available
    except ImportError as exc:
        print(f"# vllm: skipped (lmmap's vLLM backend is not importable: {exc})", flush=True)
        return
    if not vllm_available():
        print("# vllm: skipped (vLLM is not installed)", flush=True)
        return
    with tempfile.TemporaryDirectory() as d:
        # Only the configuration and a tokenizer: load_format="dummy" makes vLLM draw random weights itself.
        make_config(shape).save_pretrained(d)
        tok.save_pretrained(d)
        t = time.perf_counter()
        # enforce_eager: no CUDA-graph capture at start-up (graphs speed up decoding, not prompt scoring).
        backend = VLLMBackend(load_format="dummy", gpu_memory_utilization=0.85, enforce_eager=True)
        try:
            scorer = backend.load(d, device="auto", dtype="bfloat16")
        except Exception as exc:  # report and go on: the other figures stand
            print(f"# vllm: could not start: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                  flush=True)
            return
        print(f"# vllm: engine started in {time.perf_counter() - t:.0f} s", flush=True)
        try:
            secs, tokens, done, plan = run_lmmap_scorer(scorer, rows, None, deadline)
            report(shape, "vllm", secs, tokens, done, n_params, peak, authors_rate, note=f"mode {plan['mode']}")
        finally:
            scorer.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, of {', '.join(SHAPES)}")
    ap.add_argument("--texts", type=int, default=None,
                    help="texts per shape (default: 10,000 for qwen2-1.5b, 2,000 for llama3-8b)")
    ap.add_argument("--authors-texts", type=int, default=200, help="texts the authors' method scores (default 200)")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    ap.add_argument("--batch-tokens", type=int, default=None, help="HF token budget (default: from free GPU memory)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak, for a GPU not in the table")
    ap.add_argument("--time-budget", type=float, default=480.0,
                    help="seconds for the whole run; each method stops early (and says how many texts it did) "
                         "rather than overrun (default 480)")
    args = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("bench_gpu: torch is not installed; nothing to measure")
        return 0
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA GPU is visible to torch; this benchmark runs only on a GPU (nothing measured)")
        return 0
    bad = [s for s in args.shapes.split(",") if s not in SHAPES]
    bad += [m for m in args.methods.split(",") if m not in METHODS]
    if bad:
        ap.error(f"unknown shape or method: {', '.join(bad)}")
    name = torch.cuda.get_device_name()
    peak = args.peak_tflops or peak_tflops(name)
    print(f"# {name}: dense bf16 peak {peak if peak else 'unknown (pass --peak-tflops for MFU)'} TFLOP/s; "
          f"torch {torch.__version__}", flush=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    end = time.perf_counter() + args.time_budget
    shapes = args.shapes.split(",")
    for k, shape in enumerate(shapes):
        shape_end = time.perf_counter() + (end - time.perf_counter()) / (len(shapes) - k)
        bench_shape(shape, args, peak, shape_end)
    return 0


if __name__ == "__main__":
    sys.exit(main())

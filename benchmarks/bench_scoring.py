"""Scoring throughput and memory: lmmap against the authors' method and lm-evaluation-harness.

One run measures, on this CPU:

- a GPT-2-shaped model (6 layers, width 512, 8 heads, context 1,024,
  vocabulary 50,257, random weights, saved with ``save_pretrained``) with a
  byte-level BPE tokenizer of 50,257 tokens trained on local text, scoring 200
  texts of 1,024 bytes cut from local text (Python sources, the language
  reference, licences);
- **lmmap** (``score_texts``: length-sorted batches, the output layer run in
  chunks at scored positions only), reference and full convention, float32
  and bfloat16;
- **authors**: the published scorer's method (shimo-lab/modelmap
  ``LikelihoodCalculator``) — one text at a time, the model's forward, a full
  log-softmax, a Python loop over tokens;
- **lm-eval**: EleutherAI lm-evaluation-harness ``HFLM.loglikelihood_rolling``
  on the same in-memory model, at the best of several batch sizes. Its
  windows start with the EOS token, which is lmmap's ``full`` convention for
  a tokenizer without BOS, so the numbers are compared;
- texts/s, tokens/s and ratios; the model FLOP/s reached as a fraction of the
  machine's float32 matrix-product rate (numpy, 2048×2048);
- peak working memory (peak RSS above the loaded model) of each method, and
  how it grows with the vocabulary (50,257 → 201,088 tokens).

Each method runs in its own worker process (so its peak memory is its own)
that loads the model once. The texts are cut into slices and the workers
score slice after slice in turn, the numpy matmul rate being measured between
them, in two rounds; each slice counts its best time. So other jobs on a
shared machine slow every method alike instead of whichever happened to run
at a bad moment. Nothing is downloaded: the
tokenizer and model are built locally and cached in ``$LMMAP_BENCH_CACHE``
(default ``~/.cache/lmmap/bench``).

    python benchmarks/bench_scoring.py            # the full comparison (~20 min on 2 cores)
    python benchmarks/bench_scoring.py --quick    # 40 texts, one round, no bfloat16, no vocabulary sweep
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = dict(n_layer=6, n_embd=512, n_head=8, n_positions=1024)
VOCAB = 50_257
BIG_VOCAB = 201_088
CACHE = Path(os.environ.get("LMMAP_BENCH_CACHE", Path.home() / ".cache" / "lmmap" / "bench"))


# -- assets -------------------------------------------------------------------------------


def prepare(n_texts: int, seed: int = 0) -> tuple[Path, Path]:
    """The model directory and the text set (built once, then cached)."""
    model_dir = CACHE / f"gpt2-6x512-v{VOCAB}"
    if not (model_dir / "lmmap-bench.json").exists():
        print(f"building the benchmark model in {model_dir} (once)…", flush=True)
        save_gpt2s([model_dir], train_bpe(VOCAB), MODEL, seeds=[seed], vocab_size=VOCAB)
    return model_dir, cached_text_set(n_texts, 1024, seed)


def local_documents() -> list[str]:
    """Text found on this machine (the demo's code, docs and legal documents)."""
    from lmmap.demo import code_documents, docs_documents, legal_documents

    return [t for f in (code_documents, docs_documents, legal_documents) for _, t in f()]


def cached_text_set(n_texts: int, chunk_bytes: int, seed: int) -> Path:
    """``n_texts`` chunks of exactly ``chunk_bytes`` bytes of local text, as a text-set file (built once)."""
    texts_path = CACHE / f"texts-{n_texts}x{chunk_bytes}.jsonl"
    if not texts_path.exists():
        from lmmap.data.texts import build_text_set

        with tempfile.TemporaryDirectory() as d:
            src = Path(d) / "docs.jsonl"
            src.write_text("\n".join(json.dumps({"text": t}) for t in local_documents()), encoding="utf-8")
            build_text_set([src], chunk_bytes=chunk_bytes, min_bytes=chunk_bytes, n=n_texts,
                           random_state=seed).save(texts_path)
    return texts_path


def train_bpe(vocab: int):
    """A GPT-2-style byte-level BPE tokenizer of ``vocab`` tokens trained on local text (nothing downloaded)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(local_documents(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


def save_gpt2s(dirs: list[Path], tokenizer, shape: dict, seeds, vocab_size: int | None = None, **config) -> None:
    """A randomly initialised GPT-2 of ``shape`` per directory (seed by seed), saved with its tokenizer."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    vocab_size = vocab_size or len(tokenizer)
    for seed, d in zip(seeds, dirs):
        torch.manual_seed(seed)
        cfg = GPT2Config(vocab_size=vocab_size, bos_token_id=tokenizer.eos_token_id,
                         eos_token_id=tokenizer.eos_token_id, **config, **shape)
        GPT2LMHeadModel(cfg).save_pretrained(d)
        tokenizer.save_pretrained(d)
        (d / "lmmap-bench.json").write_text(json.dumps({"vocab": vocab_size, "seed": seed, **shape}))


# -- the three methods --------------------------------------------------------------------


def make_lmmap(model, tok, spec):
    from lmmap.scoring.hf import score_texts

    def run(texts):
        return score_texts(model, tok, texts, convention=spec["convention"], batch_tokens=spec.get("batch") or None)[0]

    return run


def make_authors(model, tok, spec):
    """The published scorer's loop (shimo-lab/modelmap, LikelihoodCalculator._calculate_likelihood)."""
    import torch

    max_length = model.config.n_positions

    def run(texts):
        out = []
        for text in texts:
            tokens = tok.encode(text, return_tensors="pt", truncation=True, max_length=max_length)
            with torch.no_grad():
                logits = model(tokens, use_cache=True).logits
                log_probs = torch.log_softmax(logits, dim=-1)
                next_tokens = tokens[0, 1:]
                token_log_probs = [float(log_probs[0, i, next_tokens[i]]) for i in range(tokens.shape[1] - 1)]
            out.append(sum(token_log_probs))
        return out

    return run


def make_lm_eval(model, tok, spec):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=spec.get("batch") or 1, device="cpu",
              max_length=model.config.n_positions)

    def run(texts):
        reqs = [Instance(request_type="loglikelihood_rolling", doc={}, arguments=(t,), idx=i) for i, t in enumerate(texts)]
        return lm.loglikelihood_rolling(reqs, disable_tqdm=True)

    return run


METHODS = {"lmmap": make_lmmap, "authors": make_authors, "lm-eval": make_lm_eval}


# -- a worker process: one method, one loaded model ---------------------------------------


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak_rss() -> None:
    # Writing 5 to clear_refs resets VmHWM (Linux), so the peak read later is the scoring's own.
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def worker_main(spec: dict) -> None:
    """Load the model, warm up, then score the slices asked for on stdin (one JSON line each)."""
    import torch

    from lmmap.scoring.hf import load_model
    from lmmap.data.texts import TextSet

    texts = TextSet.load(spec["texts"]).texts
    model, tok = load_model(spec["model"], device="cpu", dtype=spec["dtype"])
    if spec.get("vocab") and spec["vocab"] != model.config.vocab_size:
        # A wider output layer on the same body: memory as the vocabulary grows (weights random, ids unchanged).
        model.resize_token_embeddings(spec["vocab"])
        model.eval()
    run = METHODS[spec["method"]](model, tok, spec)
    run(texts[:2])  # first-call allocations and kernel selection are not the method's cost
    _reset_peak_rss()
    reply = {"rss_loaded_mb": _rss_mb("VmRSS"), "threads": torch.get_num_threads(),
             "vocab": int(model.get_output_embeddings().weight.shape[0])}
    print("READY " + json.dumps(reply), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("quit"):
            print("DONE " + json.dumps({"peak_rss_mb": _rss_mb("VmHWM")}), flush=True)
            return
        t0 = time.perf_counter()
        ll = run(texts[cmd["start"] : cmd["stop"]])
        seconds = time.perf_counter() - t0
        print("DONE " + json.dumps({"seconds": seconds, "loglik": [float(x) for x in ll]}), flush=True)


class Worker:
    """A method in its own process, driven slice by slice."""

    def __init__(self, label: str, method: str, model_dir: Path, texts_path: Path, **spec):
        self.label, self.method = label, method
        self.spec = {"method": method, "model": str(model_dir), "texts": str(texts_path), "dtype": "float32",
                     "convention": "reference", **spec}
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", json.dumps(self.spec)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self.log, text=True,
        )
        self.seconds, self.times, self.loglik, self.error = 0.0, [], [], None
        self.info = self._read("READY")

    def _read(self, tag: str) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.log.seek(0)
                tail = [ln for ln in self.log.read().strip().splitlines() if "Running loglik" not in ln][-2:]
                self.error = " | ".join(tail) or f"exit {self.proc.wait()}"
                raise RuntimeError(self.error)
            if line.startswith(tag + " "):
                return json.loads(line[len(tag) + 1 :])

    def score(self, start: int, stop: int, keep: bool = True) -> None:
        self.proc.stdin.write(json.dumps({"start": start, "stop": stop}) + "\n")
        self.proc.stdin.flush()
        r = self._read("DONE")
        self.seconds += r["seconds"]
        self.times.append(r["seconds"])
        if keep:
            self.loglik += r["loglik"]

    def close(self) -> dict:
        self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
        self.proc.stdin.flush()
        r = self._read("DONE")
        self.proc.wait()
        os.unlink(self.log.name)
        return {**self.info, **r}


def start_worker(label, method, model_dir, texts_path, **spec) -> Worker | str:
    try:
        return Worker(label, method, model_dir, texts_path, **spec)
    except Exception as exc:
        return f"{label}: {exc}"


# -- FLOPs and the machine's matmul rate --------------------------------------------------


def matmul_rate(n: int = 2048, repeats: int = 5) -> float:
    """Best float32 FLOP/s of numpy's ``a @ b`` for n×n matrices."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def model_flops(lengths: np.ndarray, vocab: int, n_layer: int, d: int) -> float:
    """Useful forward FLOPs for texts of ``lengths`` tokens (matrix products only, padding excluded).

    Per token and layer: 2·12·d² (QKV, projection, 4d MLP) and, for causal
    attention scores and mixing, 2·d·(t+1) on average over positions; the
    output layer 2·d·V at the T−1 scored positions.
    """
    T = lengths.astype(np.float64)
    body = 2 * 12 * d * d * n_layer * T
    attention = 2 * d * n_layer * T * (T + 1)
    head = 2 * d * vocab * (T - 1)
    return float((body + attention + head).sum())


# -- the report ---------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=200, help="number of texts (default 200)")
    ap.add_argument("--slices", type=int, default=5, help="slices the texts are scored in, methods taking turns")
    ap.add_argument("--repeats", type=int, default=2, help="rounds over the slices; each slice counts its best")
    ap.add_argument("--quick", action="store_true", help="40 texts; skip bfloat16 and the vocabulary sweep")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker_main(json.loads(args.worker))
    report(args)


def report(args) -> None:
    import torch
    from transformers import AutoTokenizer

    from lmmap.data.texts import TextSet

    n = 40 if args.quick else args.texts
    if args.quick:
        args.repeats = 1
    model_dir, texts_path = prepare(max(n, 200))
    texts = TextSet.load(texts_path).texts[:n]
    tok = AutoTokenizer.from_pretrained(model_dir)
    lengths = np.asarray([len(ids) for ids in tok(texts)["input_ids"]])
    tokens = int(lengths.sum())
    flops = model_flops(lengths, VOCAB, MODEL["n_layer"], MODEL["n_embd"])
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"load average {os.getloadavg()[0]:.1f} at the start")
    print(f"model: GPT-2, {MODEL['n_layer']} layers, width {MODEL['n_embd']}, vocabulary {VOCAB:,}, random weights")
    print(f"texts: {n} × 1,024 bytes = {tokens:,} tokens ({lengths.mean():.0f} per text); "
          f"{flops / 1e12:.2f} TFLOP of useful forward matrix products\n", flush=True)

    lm_eval_note, best_bs = "", None
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        lm_eval_note = "lm-eval is not installed (pip install lm-eval accelerate): its rows are missing"
    if not lm_eval_note:
        k = min(n, 20)
        sweep = {b: start_worker(f"bs={b}", "lm-eval", model_dir, texts_path, batch=b) for b in (1, 4, 16)}
        ok = {b: w for b, w in sweep.items() if isinstance(w, Worker)}
        for w in ok.values():
            w.score(0, k)
            w.close()
        if ok:
            best_bs = min(ok, key=lambda b: ok[b].seconds)
            print(f"lm-eval batch size on {k} texts: "
                  + ", ".join(f"{b}: {w.seconds:.1f} s" for b, w in ok.items()) + f" → {best_bs}", flush=True)
        else:
            lm_eval_note = "lm-eval failed to run: " + "; ".join(map(str, sweep.values()))

    plan = [("lmmap float32", "lmmap", {}), ("authors' method float32", "authors", {})]
    if best_bs is not None:
        plan.append((f"lm-eval rolling float32 bs={best_bs}", "lm-eval", {"batch": best_bs}))
    plan.append(("lmmap float32, full convention", "lmmap", {"convention": "full"}))
    if not args.quick:
        plan.append(("lmmap bfloat16", "lmmap", {"dtype": "bfloat16"}))
    workers, failed = [], []
    for label, method, spec in plan:
        w = start_worker(label, method, model_dir, texts_path, **spec)
        (workers if isinstance(w, Worker) else failed).append(w)

    bounds = np.linspace(0, n, args.slices + 1).astype(int)
    slices = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
    rates = np.zeros((args.repeats, len(slices)))
    for r in range(args.repeats):
        for i, (a, b) in enumerate(slices):
            rates[r, i] = matmul_rate()
            k = (i + r) % len(workers)
            for w in workers[k:] + workers[:k]:  # each method leads in turn
                w.score(a, b, keep=(r == 0))
            print(f"  round {r + 1}/{args.repeats}, slice {i + 1}/{len(slices)}: "
                  + ", ".join(f"{w.label.split(' ')[0]} {w.times[-1]:.1f} s" for w in workers)
                  + f"; numpy matmul {rates[r, i] / 1e9:.0f} GFLOP/s", flush=True)
    for w in workers:
        w.result = w.close()
        # Each slice's best time over the rounds: a burst from another job on the machine hits one
        # round, not all of them.
        w.seconds = float(np.asarray(w.times).reshape(args.repeats, len(slices)).min(axis=0).sum())
        w.slice_seconds = np.asarray(w.times).reshape(args.repeats, len(slices)).min(axis=0)
    rate = float(np.median(rates))
    # A method's fraction is its FLOPs over the matmul FLOPs the machine reached (best of the rounds)
    # just before each of its slices.
    around = rates.max(axis=0)
    print(f"\nnumpy float32 2048×2048 matmul between slices: median {rate / 1e9:.0f} GFLOP/s "
          f"(range {rates.min() / 1e9:.0f}–{rates.max() / 1e9:.0f}); load average now {os.getloadavg()[0]:.1f}")
    print(f"(other jobs share this machine: absolute figures are noisy; the methods took turns and each slice "
          f"counts its best of {args.repeats} rounds, so ratios are fairer)\n")

    authors = next((w for w in workers if w.method == "authors"), None)
    print(f"{'method':36s} {'texts/s':>8s} {'tokens/s':>9s} {'× authors':>9s} {'GFLOP/s':>8s} {'of matmul':>9s} {'peak MB':>8s}")
    for w in workers:
        s = w.seconds
        ratio = f"{authors.seconds / s:9.2f}" if authors else " " * 9
        work = w.result["peak_rss_mb"] - w.result["rss_loaded_mb"]
        attainable = float(np.dot(w.slice_seconds, around))
        print(f"{w.label:36s} {n / s:8.2f} {tokens / s:9.0f} {ratio} {flops / s / 1e9:8.1f} {flops / attainable:9.0%} {work:8.0f}")
    for f in failed:
        print(f"  failed: {f}")
    if lm_eval_note:
        print(f"  {lm_eval_note}")
    print("(of matmul: the method's FLOP/s over the numpy float32 matmul rate measured before each of its slices;")
    print(" peak MB: peak resident memory above the loaded model while scoring)")

    by = {w.label: np.asarray(w.loglik) for w in workers}
    print("\nagreement:")
    if authors and "lmmap float32" in by:
        print(f"  lmmap (reference) vs authors: max |Δ| = {np.abs(by['lmmap float32'] - by[authors.label]).max():.1e} "
              f"nats per text (log-likelihoods around {np.median(by['lmmap float32']):.0f})")
    le = next((w for w in workers if w.method == "lm-eval"), None)
    if le and "lmmap float32, full convention" in by:
        print(f"  lmmap (full convention) vs lm-eval loglikelihood_rolling: max |Δ| = "
              f"{np.abs(by['lmmap float32, full convention'] - by[le.label]).max():.1e} nats per text")
    if "lmmap bfloat16" in by:
        rel = np.abs(by["lmmap bfloat16"] - by["lmmap float32"]) / np.abs(by["lmmap float32"])
        bf = next(w for w in workers if w.label == "lmmap bfloat16")
        fp = next(w for w in workers if w.label == "lmmap float32")
        print(f"  lmmap bfloat16 vs float32: median relative difference {np.median(rel):.1e}, "
              f"max {rel.max():.1e}; {fp.seconds / bf.seconds:.2f}× faster")
    fp32 = [w for w in workers if "float32" in w.label and "full" not in w.label]
    if fp32:
        fastest = min(fp32, key=lambda w: w.seconds)
        print(f"\nfastest in float32: {fastest.label}"
              + (f", {min(w.seconds for w in fp32 if w is not fastest) / fastest.seconds:.2f}× the next" if len(fp32) > 1 else ""))

    if not args.quick:
        vocab_sweep(model_dir, texts_path, best_bs)


def vocab_sweep(model_dir, texts_path, best_bs, k: int = 16) -> None:
    """Peak working memory at two vocabulary sizes: lmmap's output layer runs in bounded chunks."""
    print(f"\npeak working memory as the vocabulary grows ({k} texts):")
    print(f"{'method':36s} " + " ".join(f"{f'V={v:,}':>12s}" for v in (VOCAB, BIG_VOCAB)))
    rows = [("lmmap", "lmmap", {}), ("authors' method", "authors", {})]
    if best_bs is not None:
        rows.append((f"lm-eval bs={best_bs}", "lm-eval", {"batch": best_bs}))
    for label, method, spec in rows:
        cells = []
        for v in (VOCAB, BIG_VOCAB):
            w = start_worker(label, method, model_dir, texts_path, vocab=v, **spec)
            if isinstance(w, Worker):
                w.score(0, k)
                r = w.close()
                cells.append(f"{r['peak_rss_mb'] - r['rss_loaded_mb']:9.0f} MB")
            else:
                cells.append("failed")
        print(f"{label:36s} " + " ".join(f"{c:>12s}" for c in cells), flush=True)


if __name__ == "__main__":
    main()

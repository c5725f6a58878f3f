"""Texts/s of the vLLM backend against the transformers backend, on this CPU (issue 12 §1; not a timed test).

One backend per process (vLLM binds threads and memory for the whole process), the model loaded
once and excluded from the time, the texts scored twice and the faster pass kept:

    .venv-vllm/bin/python scripts/bench-vllm-cpu.py --backend vllm MODEL_DIR TEXTS.jsonl
    .venv-vllm/bin/python scripts/bench-vllm-cpu.py --backend hf   MODEL_DIR TEXTS.jsonl

TEXTS.jsonl: one {"text": ...} per line. Prints one JSON line: backend, load (engine start-up)
seconds, texts/s, tokens/s. CPU figures: they say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", choices=("hf", "vllm"), required=True)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch-tokens", type=int, default=None)
    ap.add_argument("model")
    ap.add_argument("texts")
    a = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from lmmap.scoring import get_backend
    from lmmap.scoring.driver import score_texts

    texts = [json.loads(line)["text"] for line in open(a.texts, encoding="utf-8") if line.strip()]
    t0 = time.perf_counter()
    scorer = get_backend(a.backend).load(a.model, device="cpu" if a.backend == "hf" else "auto", dtype=a.dtype)
    load = time.perf_counter() - t0
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        loglik, n_tokens, _ = score_texts(scorer, texts, batch_tokens=a.batch_tokens)
        best = min(best, time.perf_counter() - t0)
    scorer.close()
    print(json.dumps({"backend": a.backend, "dtype": a.dtype, "texts": len(texts), "load_s": round(load, 1),
                      "texts_per_s": round(len(texts) / best, 1), "tokens_per_s": round(int(n_tokens.sum()) / best),
                      "sum_loglik": float(loglik.sum())}))


if __name__ == "__main__":
    main()

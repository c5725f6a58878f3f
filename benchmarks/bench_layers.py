"""The cost of the logit lens: ``layers="all"`` against one plain scoring run of the same model.

On the GPT-2 shape of ``bench_scoring.py`` (6 layers, width 512, vocabulary
50,257, random weights, built and cached locally) and its 1-KB texts, one
process scores slices of the texts plainly and with every layer (7 hidden
states: the embeddings and 6 blocks), in turn, two rounds, and keeps each
slice's best time, so other jobs on a shared machine slow both alike. It
prints seconds, tokens/s, the ratio lens/plain, and that ratio against the
7 plain runs that scoring each layer as its own model would take. The
lens's last layer is checked against the plain score.

    python benchmarks/bench_layers.py              # 200 texts, float32
    python benchmarks/bench_layers.py --n 60 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scoring import MODEL, prepare  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="texts (1 KB each)")
    ap.add_argument("--slices", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()

    import torch

    from lmmap.data.texts import TextSet
    from lmmap.scoring.hf import load_model, score_texts

    torch.set_num_threads(1)
    model_dir, texts_path = prepare(200)
    texts = list(TextSet.load(texts_path).texts)[: args.n]
    model, tok = load_model(str(model_dir), device="cpu", dtype=args.dtype)
    cuts = np.array_split(np.arange(len(texts)), args.slices)
    best = {"plain": [np.inf] * len(cuts), "lens": [np.inf] * len(cuts)}
    out = {"plain": [None] * len(cuts), "lens": [None] * len(cuts)}
    n_tokens = 0
    for r in range(args.rounds):
        for i, idx in enumerate(cuts):
            part = [texts[j] for j in idx]
            for kind in ("plain", "lens"):
                t0 = time.perf_counter()
                ll, nt, _ = score_texts(model, tok, part, layers="all" if kind == "lens" else None)
                best[kind][i] = min(best[kind][i], time.perf_counter() - t0)
                out[kind][i] = ll
                if r == 0 and kind == "plain":
                    n_tokens += int(nt.sum())
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    plain, lens = sum(best["plain"]), sum(best["lens"])
    k = out["lens"][0].shape[1]
    diff = max(float(np.abs(a[:, -1] - b).max()) for a, b in zip(out["lens"], out["plain"]))
    print(f"GPT-2 {MODEL['n_layer']}L/{MODEL['n_embd']}/50k, {args.dtype}, {len(texts)} texts of 1 KB, "
          f"{n_tokens:,} tokens, 1 thread")
    print(f"  plain scoring      {plain:7.2f} s   {n_tokens / plain:8.0f} tokens/s")
    print(f"  --layers all ({k})  {lens:7.2f} s   {n_tokens / lens:8.0f} tokens/s")
    print(f"  cost of all {k} layers = {lens / plain:.2f}x one plain run "
          f"(scoring each layer as its own model: {k}x; the lens saves {1 - lens / (k * plain):.0%})")
    print(f"  last layer vs plain score: max |diff| {diff:.2e} nats per text")


if __name__ == "__main__":
    main()

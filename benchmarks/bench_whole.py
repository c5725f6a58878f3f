"""Scoring as whole processes: each method in a process of its own, timed from after the model loads.

The measure issue 12 states its CPU goals in ("whole processes minus the ~5 s
both spend loading"): for each method, a fresh Python process loads the
benchmark model of ``bench_scoring.py`` (GPT-2 6L/512/50k, built and cached
locally) and scores all its 1-KB texts once, one thread; the methods take
turns, ``--rounds`` times, and each keeps its best time. Prints the times and
the ratios to the authors' one-text-at-a-time method.

    python benchmarks/bench_whole.py                 # 200 texts, 2 rounds: authors, lmmap fp32, lmmap bf16
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = (("authors", "float32"), ("lmmap", "float32"), ("lmmap", "bfloat16"))


def one(method: str, dtype: str, n: int) -> None:
    """In the child process: load, then time the scoring of ``n`` texts; print the seconds."""
    import time

    import torch

    sys.path.insert(0, str(HERE))
    from bench_scoring import METHODS, prepare

    from lmmap.data.texts import TextSet
    from lmmap.scoring.hf import load_model

    torch.set_num_threads(1)
    model_dir, texts_path = prepare(200)
    texts = list(TextSet.load(texts_path).texts)[:n]
    model, tok = load_model(str(model_dir), device="cpu", dtype=dtype)
    run = METHODS[method](model, tok, {"convention": "reference"})
    t0 = time.perf_counter()
    run(texts)
    print(f"{time.perf_counter() - t0:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="texts (at most 200)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--child", nargs=2, metavar=("METHOD", "DTYPE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        one(*args.child, args.n)
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    best: dict = {}
    for r in range(args.rounds):
        for method, dtype in RUNS:
            out = subprocess.run([sys.executable, __file__, "--n", str(args.n), "--child", method, dtype], env=env,
                                 capture_output=True, text=True, check=True).stdout.split()
            best[(method, dtype)] = min(best.get((method, dtype), float("inf")), float(out[-1]))
            print(f"round {r + 1}: {method} {dtype} {float(out[-1]):.1f} s", flush=True)
    base = best[("authors", "float32")]
    print(f"{args.n} texts of 1 KB, GPT-2 6L/512/50k, one thread, best of {args.rounds}:")
    for (method, dtype), s in best.items():
        print(f"  {method:8s} {dtype:9s} {s:7.1f} s   {base / s:.2f}x the authors' method")


if __name__ == "__main__":
    main()

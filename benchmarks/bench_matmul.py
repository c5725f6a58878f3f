"""The ceiling of fp32 scoring on this CPU: matrix-product rates, one thread, at the scoring benchmark's shapes.

``bench_scoring.py`` spends about 80% of lmmap's float32 time in matrix
products (the output layer's tiles and the blocks' linear layers). This
prints the rate (GFLOP/s, best of several) each kind of product reaches on
one core, so that the scorer's speed can be read against the hardware
rather than against another program:

- the output layer, ``h @ W.T`` for a batch of 1,024 positions (width 512)
  against vocabulary tiles of 1,024–8,192 rows (what lmmap computes) and the
  whole 50,257-row vocabulary at once (what a full ``logits`` does);
- GPT-2's block products in their own layout (``addmm``, ``Conv1D``) and as
  ``F.linear`` with transposed weights (a layout change lmmap could make);
- the same output-layer products through numpy's BLAS on one thread (a
  second implementation), and in bfloat16 through torch.

    python benchmarks/bench_matmul.py
"""

from __future__ import annotations

import time

import numpy as np

T, D, V = 1024, 512, 50257


def rate(fn, flops: float, reps: int = 10) -> float:
    """GFLOP/s of ``fn`` (best of ``reps`` after two warm-ups)."""
    fn()
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return flops / best / 1e9


def main() -> None:
    import torch
    import torch.nn.functional as F
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    h, W = torch.randn(T, D, generator=gen), torch.randn(V, D, generator=gen)
    print(f"one thread; torch {torch.__version__}, numpy {np.__version__}; GFLOP/s, best of 10")
    print(f"output layer, {T} positions × width {D}:")
    for tile in (1024, 2048, 4096, 8192):
        Wt = W[:tile]
        print(f"  torch  fp32  tile of {tile:>6,} rows   {rate(lambda: h @ Wt.T, 2 * T * D * tile):6.1f}")
    print(f"  torch  fp32  all {V:,} rows      {rate(lambda: h @ W.T, 2 * T * D * V, 3):6.1f}")
    hb, Wb = h.to(torch.bfloat16), W[:2048].to(torch.bfloat16)
    print(f"  torch  bf16  tile of  2,048 rows   {rate(lambda: hb @ Wb.T, 2 * T * D * 2048):6.1f}")
    hn, Wn = h.numpy(), W.numpy()
    with threadpool_limits(1):
        print(f"  numpy  fp32  tile of  2,048 rows   {rate(lambda: hn @ Wn[:2048].T, 2 * T * D * 2048):6.1f}")
        print(f"  numpy  fp32  all {V:,} rows      {rate(lambda: hn @ Wn.T, 2 * T * D * V, 3):6.1f}")
    print("GPT-2 block products (in → out):")
    for n_in, n_out in ((D, 3 * D), (D, D), (D, 4 * D), (4 * D, D)):
        x, w, b = torch.randn(T, n_in, generator=gen), torch.randn(n_in, n_out, generator=gen), torch.randn(n_out)
        wl = w.t().contiguous()
        flops = 2 * T * n_in * n_out
        print(f"  {n_in:>5} → {n_out:<5}  addmm (Conv1D) {rate(lambda: torch.addmm(b, x, w), flops, 20):6.1f}"
              f"   F.linear {rate(lambda: F.linear(x, wl, b), flops, 20):6.1f}")


if __name__ == "__main__":
    main()

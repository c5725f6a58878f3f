"""Nearest models without K×K (issue 24): exact blocked search, approximate search, and the dense path.

A synthetic ecosystem with lineage structure (``tests/synthetic.py:lineage_L``:
lineages of a base, 8 fine-tunes and a checkpoint), K = 10,000 models × N =
10,000 texts by default, ``L`` stored in float32. For each method it prints
the time, the peak memory it allocated (tracemalloc: numpy reports its
arrays) and, against the dense float64 path, whether the neighbour lists
agree (recall@k over all K rows) and the largest difference of the KL values
listed:

- dense: ``geometry.squared_distances`` + ``kl_from_squared_distances`` +
  ``nearest_neighbors`` (K×K float64: 800 MB at K = 10,000);
- exact, float64 and float32 products (``knn.exact_knn``);
- approximate (``knn.knn(method="approximate")``: randomised SVD, 50
  candidates per row in 64 dimensions, exact float64 re-ranking; its own
  recall on 200 sampled rows is printed too), with the time of each stage.

``--scale-K`` adds a run of the approximate search alone on a larger map
(recall measured on 200 rows against the exact search of those rows).

    python benchmarks/bench_knn.py [--K 10000] [--N 10000] [--k 10] [--no-dense] [--scale-K 100000 --scale-N 1000]

Two BLAS threads (OMP/OPENBLAS_NUM_THREADS=2 unless set).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")

import argparse  # noqa: E402
import gc  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from lmmap.maths import geometry, knn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the synthetic data the tests use
from synthetic import lineage_L  # noqa: E402


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Phase:
    """Wall time, process CPU time, the 1-minute load average at the end, and the tracemalloc peak (MB above
    what was allocated at the start) of a ``with`` block. The machine is shared: read wall times with the load."""

    def __enter__(self):
        gc.collect()
        tracemalloc.reset_peak()
        self.base = tracemalloc.get_traced_memory()[0]
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.c0
        self.load = os.getloadavg()[0]
        self.peak_mb = (tracemalloc.get_traced_memory()[1] - self.base) / 2**20
        return False

    def __str__(self):
        return f"{self.seconds:7.1f} s (cpu {self.cpu:6.1f} s, load {self.load:4.1f})  {self.peak_mb:6.0f} MB"


class Stages:
    """A progress callback that notes when each stage of the approximate search starts."""

    def __init__(self):
        self.marks = [("start", time.perf_counter())]

    def __call__(self, step):
        if step.task is None and step.message:
            self.marks.append((step.message, time.perf_counter()))
        elif step.done == 0 and step.task and not step.finished:
            self.marks.append((step.task, time.perf_counter()))

    def lines(self, end):
        marks = self.marks + [("end", end)]
        return [(name, t1 - t0) for (name, t0), (_, t1) in zip(marks[1:-1], marks[2:])]


def lineage_matrix(K: int, N: int, seed: int = 0) -> np.ndarray:
    """``L`` (float32) of ``K`` models: lineages of a base, 8 fine-tunes and a checkpoint (10 models each)."""
    per = 10
    n_lineages = -(-K // per)
    _, L, _ = lineage_L(N=N, n_lineages=n_lineages, n_finetunes=per - 2, n_checkpoints=1, n_scratch=0, seed=seed)
    return np.ascontiguousarray(L[:K], dtype=np.float32)


def compare(name, ph, idx, g, ref_idx, G, n_texts):
    """One line: time, memory, recall@k and max |ΔKL| against the dense float64 values of the same pairs."""
    K = idx.shape[0]
    line = f"  {name:<36} {ph}"
    if ref_idx is not None:
        line += f"   recall@{idx.shape[1]} {knn.recall_at_k(idx, ref_idx):.5f}"
        line += f"   same lists {np.mean((idx == ref_idx).all(axis=1)):.4f}"
    if G is not None:
        ref = G[np.arange(K)[:, None], idx]
        dkl = np.abs(g - ref) / (2 * n_texts)
        rel = np.max(np.abs(g - ref) / np.maximum(ref, np.finfo(float).tiny))
        line += f"   max|ΔKL| {dkl.max():.2e} nats (rel {rel:.1e})"
    print(line, flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--K", type=int, default=10_000)
    ap.add_argument("--N", type=int, default=10_000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--no-dense", action="store_true", help="skip the dense K×K path")
    ap.add_argument("--no-exact64", action="store_true", help="skip the float64 exact search")
    ap.add_argument("--scale-K", type=int, default=0, help="also run the approximate search alone at this K")
    ap.add_argument("--scale-N", type=int, default=1_000)
    args = ap.parse_args()
    K, N, k = args.K, args.N, args.k
    print(f"K = {K:,} models × N = {N:,} texts, k = {k}; BLAS threads {os.environ['OPENBLAS_NUM_THREADS']}; "
          f"numpy {np.__version__}")
    tracemalloc.start()

    t0 = time.perf_counter()
    L = lineage_matrix(K, N)
    Q, _ = geometry.map_coordinates(L)
    del L
    print(f"  synthetic L (float32) and Q (float64)    {time.perf_counter() - t0:8.1f} s   Q {Q.nbytes / 2**20:.0f} MB",
          flush=True)

    G = ref_idx = None
    if not args.no_dense:
        with Phase() as ph:
            G = geometry.squared_distances(Q)
            ref_idx, _ = geometry.nearest_neighbors(geometry.kl_from_squared_distances(G, N), k)
        compare("dense (K×K float64)", ph, ref_idx, G[np.arange(K)[:, None], ref_idx], None, None, N)

    if not args.no_exact64:
        with Phase() as ph:
            idx64, g64 = knn.exact_knn(Q, k)
        compare("exact_knn float64", ph, idx64, g64, ref_idx, G, N)
        if ref_idx is None:
            ref_idx = idx64
    with Phase() as ph:
        idx32, g32 = knn.exact_knn(Q, k, dtype=np.float32)
    compare("exact_knn float32 + float64 re-rank", ph, idx32, g32, ref_idx, G, N)
    if ref_idx is None:
        ref_idx = idx32

    stages = Stages()
    with Phase() as ph:
        res = knn.knn(Q, k, method="approximate", random_state=0, progress=stages)
    compare("approximate (knn)", ph, res.idx, res.sqdist, ref_idx, G, N)
    for name, s in stages.lines(time.perf_counter()):
        print(f"      {name:<52} {s:7.1f} s")
    print(f"      r = {res.n_components}, C = {res.n_candidates}: captured {res.captured:.4f} of the spread, "
          f"mean KL distortion of the projection {res.mean_distortion_kl:.3g} nats; "
          f"sampled recall@{k} {res.recall:.4f} on {res.recall_rows.size} rows")
    if G is not None:
        kl_nn = G[np.arange(K)[:, None], ref_idx] / (2 * N)
        print(f"      KL of the exact {k} nearest: median {np.median(kl_nn):.3g}, max {kl_nn.max():.3g} nats")
    del G
    print(f"  process peak RSS {rss_mb():.0f} MB")

    if args.scale_K:
        del Q
        gc.collect()
        KS, NS = args.scale_K, args.scale_N
        t0 = time.perf_counter()
        Q, _ = geometry.map_coordinates(lineage_matrix(KS, NS, seed=1))
        print(f"\nK = {KS:,} × N = {NS:,}: synthetic {time.perf_counter() - t0:.1f} s, Q {Q.nbytes / 2**20:.0f} MB")
        stages = Stages()
        with Phase() as ph:
            res = knn.knn(Q, k, method="approximate", random_state=0, progress=stages)
        print(f"  {'approximate (knn)':<36} {ph}   sampled recall@{k} {res.recall:.4f} on {res.recall_rows.size} rows")
        for name, s in stages.lines(time.perf_counter()):
            print(f"      {name:<52} {s:7.1f} s")
        A = knn.row_norms(Q)
        rows = res.recall_rows
        ref = A[rows][:, None] + A[res.idx[rows]] - 2 * np.einsum("in,ikn->ik", Q[rows], Q[res.idx[rows]])
        print(f"      max |ΔKL| vs float64 on the sampled rows {np.abs(res.sqdist[rows] - ref).max() / (2 * NS):.2e} nats")
        print(f"  process peak RSS {rss_mb():.0f} MB")


if __name__ == "__main__":
    main()

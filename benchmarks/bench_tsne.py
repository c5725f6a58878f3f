"""Time the t-SNE map of the paper's size: K = 1,018 models × D = 10,000 texts.

    python benchmarks/bench_tsne.py [--models 1018] [--texts 10000] [--n-jobs 1]

Prints the wall time of :func:`lmmap.maths.embedding.embed` (PCA initialisation,
exact neighbours, random_state 42) and the process's peak resident memory.
Target: under 30 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np


def peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=1018)
    parser.add_argument("--texts", type=int, default=10_000)
    parser.add_argument("--n-jobs", type=int, default=1)
    args = parser.parse_args(argv)

    from lmmap.maths.embedding import embed

    # Double-centred like Q, so the input has the structure lmmap passes in.
    X = np.random.default_rng(0).standard_normal((args.models, args.texts))
    X -= X.mean(axis=1, keepdims=True)
    X -= X.mean(axis=0, keepdims=True)

    start = time.perf_counter()
    Y = embed(X, method="tsne", random_state=42, n_jobs=args.n_jobs)
    seconds = time.perf_counter() - start
    assert Y.shape == (args.models, 2) and np.isfinite(Y).all()
    print(
        f"t-SNE of K={args.models} x D={args.texts} (n_jobs={args.n_jobs}): "
        f"{seconds:.1f} s, peak RSS {peak_rss_mib():.0f} MiB"
    )


if __name__ == "__main__":
    main()

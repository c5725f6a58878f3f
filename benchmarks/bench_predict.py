"""Prediction benchmark: K = 1,018 models × N = 10,000 texts, 8 targets, 5 seeds (random data).

Times ``lmmap.analyses.predict.predict_scores`` end to end: Gram matrix, outer
5-fold grouped CV × 5 seeds with α from an inner 5-fold CV for every target,
and the fit-on-all predictions for unscored models. Target (the issue): under
2 minutes. The figures are not drawn (they are not part of the fit).

    python benchmarks/bench_predict.py [--K 1018] [--N 10000] [--targets 8] [--seeds 5] [--workers 1]
"""

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lmmap.maths import geometry as core
from lmmap.analyses.predict import predict_scores

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the synthetic data the tests use
from synthetic import lowrank_L  # noqa: E402


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--K", type=int, default=1018)
    ap.add_argument("--N", type=int, default=10000)
    ap.add_argument("--targets", type=int, default=8, help="score columns + mean + mean log-likelihood")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--types", type=int, default=60, help="distinct model types (groups)")
    ap.add_argument("--workers", "--jobs", type=int, default=1, help="folds fitted in parallel (threads)")
    args = ap.parse_args()
    K, N = args.K, args.N
    rng = np.random.default_rng(0)
    L, latent = lowrank_L(K, N, return_latent=True)
    Q, _ = core.map_coordinates(L)
    n_scores = args.targets - 2  # + benchmark_mean + mean_loglik
    scores = 50 + 10 * latent[:, :n_scores] + rng.normal(size=(K, n_scores)) * 3
    names = [f"org{i % 50}/model-{i}" for i in range(K)]
    table = pd.DataFrame(np.clip(scores, 0, 100), index=pd.Index(names, name="model"), columns=[f"task{j}" for j in range(n_scores)])
    table = table.iloc[: K - 18]  # 18 models unscored: predicted by the fit on all the others
    groups = [f"type{i % args.types}" for i in range(K)]

    t0 = time.perf_counter()
    report = predict_scores(Q, names, table, groups=groups, mean_loglik_values=L.mean(axis=1), n_repeats=args.seeds, group_column="type", workers=args.workers)
    elapsed = time.perf_counter() - t0
    print(f"K={K} N={N} targets={report.summary.shape[0]} seeds={args.seeds} workers={args.workers}: {elapsed:.1f} s (target < 120 s), peak {peak_mb():.0f} MB")
    print(report.summary[["target", "n_models", "r_mean", "r_sd", "alpha"]].to_string(index=False))
    print(f"{len(report.new)} new predictions, {int(report.predictions['flagged'].sum())} flagged")


if __name__ == "__main__":
    main()

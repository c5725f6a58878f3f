"""The lineage test (issue 25) on synthetic ecosystems with known lineage, where the nearest model by KL fails.

For each ecosystem (``tests/lineage_ecosystem.py``: bases, fine-tunes moved far along shared domain
directions, heavy fine-tunes, quantisations, merges of two lineages and of two fine-tunes of one base, checkpoint runs with their
``trajectory``/``step`` metadata, independent models; no ``base_model`` declared) it runs
:func:`lmmap.analyses.lineage.lineage` on all N texts and on an LS subset of about N/4 unique texts
(:func:`lmmap.analyses.select.select`), and prints per kind of derived model

- recall: the share called ``derived`` with a true parent as ``parent`` (merges: either parent; "both" says
  how many had both),
- precision: of those called ``derived``, the share whose parent is right,

and for the unrelated: the false-positive rate among truly unrelated pairs (pairs called related at α), and
the share of models with no parent (bases, independent models) called derived. The nearest model by KL
is shown beside for comparison. ``--K`` runs one large map for time (K models, N texts).

    python benchmarks/bench_lineage.py [--seeds 5] [--N 2000] [--bases 20] [--small] [--sibling-merges M] [--alpha 0.05]
    python benchmarks/bench_lineage.py --K 10000 --N 10000

Two BLAS threads (OMP/OPENBLAS_NUM_THREADS=2 unless set).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from lmmap.analyses.lineage import lineage  # noqa: E402
from lmmap.analyses.select import select  # noqa: E402
from lmmap.map import ModelMap  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the synthetic data the tests use
from lineage_ecosystem import lineage_ecosystem, store_metadata, unrelated_pairs  # noqa: E402

KINDS = ("finetune", "heavy", "quant", "merge", "checkpoint")


def score(result, truth, unrel):
    t = result.table.set_index("model")
    out = {}
    for kind in KINDS:
        models = truth.index[(truth["kind"] == kind) & truth["parents"].map(bool)]
        if kind == "checkpoint":  # the run's final model is the last checkpoint's child
            models = truth.index[truth["parents"].map(bool) & (truth["trajectory"] != "")]
        n = len(models)
        called = [m for m in models if t.loc[m, "decision"] == "derived"]
        right = [m for m in called if t.loc[m, "parent"] in truth.loc[m, "parents"]]
        both = [m for m in called if {t.loc[m, "parent"], t.loc[m, "parent2"]} == set(truth.loc[m, "parents"])]
        kl_right = sum(t.loc[m, "nearest_kl"] in truth.loc[m, "parents"] for m in models)
        out[kind] = dict(n=n, recall=len(right) / n if n else np.nan,
                         precision=len(right) / len(called) if called else np.nan,
                         both=len(both), kl=kl_right / n if n else np.nan)
    names = list(result.map.names)
    idx = {m: i for i, m in enumerate(names)}
    p = result.pairs
    sig = p[p["significant"]]
    fp = sum(unrel[idx[a], idx[b]] for a, b in zip(sig["model_a"], sig["model_b"]))
    n_unrel = unrel.sum() / 2
    roots = truth.index[~truth["parents"].map(bool) & truth["kind"].isin(["base", "independent"])]
    false_derived = sum(t.loc[m, "decision"] == "derived" and unrel[idx[m], idx[t.loc[m, "parent"]]]
                        for m in names)
    out["unrelated"] = dict(pairs=int(n_unrel), fpr=fp / n_unrel, false_derived=false_derived / len(names),
                            roots_derived=sum(t.loc[m, "decision"] == "derived" for m in roots) / len(roots))
    return out


def ecosystem(seed, args):
    if args.small:  # about the held-out ecosystem: six bases, four domains, 64 models
        return lineage_ecosystem(N=args.N, n_bases=6, ft_per_base=4, heavy_per_base=1, quant_per_base=1,
                                 n_merges=3, n_checkpoint_runs=2, checkpoints_per_run=3, n_independent=10,
                                 n_sibling_merges=3 if args.sibling_merges is None else args.sibling_merges, seed=seed)
    return lineage_ecosystem(N=args.N, n_bases=args.bases, n_independent=args.bases // 2, heavy_per_base=1,
                             n_sibling_merges=6 if args.sibling_merges is None else args.sibling_merges, seed=seed)


def run(seed, args):
    names, L, truth = ecosystem(seed, args)
    md = store_metadata(truth)
    unrel = unrelated_pairs(truth)
    mm = ModelMap(names, L, metadata=md)
    t0 = time.perf_counter()
    full = lineage(mm, alpha=args.alpha, random_state=seed)
    t_full = time.perf_counter() - t0
    sub = select(mm, "ls", int(args.N * 0.38), random_state=seed, unbound=True)
    ms = ModelMap(names, L[:, sub.text_pos], threshold=sub.threshold, w=sub.weights, n_texts=args.N, metadata=md)
    part = lineage(ms, alpha=args.alpha, random_state=seed)
    return score(full, truth, unrel), score(part, truth, unrel), len(sub.text_pos), full.info["rank"], t_full, len(names)


def summarise(results, label):
    print(f"\n{label}")
    print(f"  {'kind':11s} {'n':>4s} {'recall':>7s} {'precision':>9s} {'merges: both':>12s} {'KL-nearest':>10s}")
    for kind in KINDS:
        rows = [r[kind] for r in results]
        n = sum(r["n"] for r in rows)
        rec = np.nanmean([r["recall"] for r in rows])
        prec = np.nanmean([r["precision"] for r in rows])
        both = sum(r["both"] for r in rows)
        kl = np.nanmean([r["kl"] for r in rows])
        print(f"  {kind:11s} {n:4d} {rec:7.3f} {prec:9.3f} {both if kind == 'merge' else '':>12} {kl:10.3f}")
    u = [r["unrelated"] for r in results]
    print(f"  unrelated pairs: {sum(x['pairs'] for x in u):,}; false-positive rate "
          f"{np.mean([x['fpr'] for x in u]):.5f}; models with a parent from another lineage "
          f"{np.mean([x['false_derived'] for x in u]):.3f}; bases/independents called derived "
          f"{np.mean([x['roots_derived'] for x in u]):.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--N", type=int, default=2000)
    ap.add_argument("--bases", type=int, default=20)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--K", type=int, default=None, help="time one map of about K models instead")
    ap.add_argument("--small", action="store_true", help="ecosystems of 66 models (six bases) instead of 158")
    ap.add_argument("--sibling-merges", type=int, default=None,
                    help="merges of two fine-tunes of one base per ecosystem (default 6, --small 3)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    if args.K:
        nb = max(4, args.K // 8)
        names, L, truth = lineage_ecosystem(N=args.N, n_bases=nb, n_independent=nb // 2, heavy_per_base=1,
                                            n_merges=nb // 10, n_checkpoint_runs=nb // 20, seed=0)
        mm = ModelMap(names, L.astype(np.float32), metadata=store_metadata(truth))
        t0 = time.perf_counter()
        res = lineage(mm, alpha=args.alpha)
        dt = time.perf_counter() - t0
        print(f"K = {mm.K:,} models, N = {args.N:,} texts: lineage table in {dt:.0f} s (rank {res.info['rank']}, "
              f"{len(res.pairs):,} pairs tested)")
        summarise([score(res, truth, unrelated_pairs(truth))], "large map, all texts")
        return
    full, part, ds, ranks, times = [], [], [], [], []
    for seed in range(args.seeds):
        f, p, d, r, t, K = run(seed, args)
        full.append(f), part.append(p), ds.append(d), ranks.append(r), times.append(t)
    print(f"{args.seeds} ecosystems of {K} models, N = {args.N} texts, alpha = {args.alpha}; rank chosen "
          f"{min(ranks)}–{max(ranks)}; {np.mean(times):.1f} s per lineage table")
    summarise(full, "all texts")
    summarise(part, f"LS subset, d = {int(np.mean(ds))} unique texts ({np.mean(ds) / args.N:.0%} of N)")


if __name__ == "__main__":
    main()

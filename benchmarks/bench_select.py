"""Time ``select`` at the paper's size, and ``add`` against scoring everything on the demo ecosystem.

    python benchmarks/bench_select.py [--models 1018] [--texts 10000] [--n 2900] [--store-too]
                                      [--demo [--demo-dir lmmap-demo] [--fraction 0.22]]

Part 1 (random data, K = 1,018 × N = 10,000): the wall time of
:func:`lmmap.analyses.select.select` from the full map for uniform, LS and KL sampling
(importance π in O(KN), one multinomial draw, the Subset). Target: under 1 s
each. ``--store-too`` also times ``select`` from a store on disk (reading the
K vectors, clipping and double centring included).

Part 2 (``--demo``, needs ``lmmap.demo``): hold some demo models out, select
with LS from the rest at n giving d ≈ 22% of N, then time scoring the
held-out models on the d texts against scoring them on all N texts, and
report each one's Pearson correlation between its KL estimates to the
existing models from the subset and from the full text set (the paper, §5.2:
over 4× faster, r = 0.996–0.997).
"""

from __future__ import annotations

import argparse
import tempfile
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the synthetic data the tests use
from synthetic import lowrank_L  # noqa: E402


def bench_select(K: int, N: int, n: int, store_too: bool) -> None:
    from lmmap import ModelMap
    from lmmap.analyses.select import select

    L = lowrank_L(K, N)
    names = [f"model-{i:04d}" for i in range(K)]
    t0 = time.perf_counter()
    mm = ModelMap(names, L)
    print(f"full map of K={K} x N={N} (clip + double centring): {time.perf_counter() - t0:.2f} s")
    for method in ("uniform", "ls", "kl"):
        times = []
        for rep in range(3):
            t0 = time.perf_counter()
            sub = select(mm, method, n, random_state=rep, unbound=True)
            times.append(time.perf_counter() - t0)
        status = "ok" if max(times) < 1.0 else "OVER 1 s"
        print(f"select --method {method:7s} --n {n}: d = {sub.d:5d}, best {min(times):.3f} s, worst {max(times):.3f} s [{status}]")

    if store_too:
        from lmmap.data.store import Store
        from lmmap.data.texts import TextSet

        with tempfile.TemporaryDirectory() as tmp:
            store = Store.create(Path(tmp) / "store", TextSet.from_texts([f"text {i}" for i in range(N)]))
            store.write_models([{"name": nm, "loglik": row} for nm, row in zip(names, L)])
            for method in ("uniform", "ls", "kl"):
                t0 = time.perf_counter()
                sub = select(store, method, n, random_state=0)
                print(f"select from a store on disk ({method}): {time.perf_counter() - t0:.2f} s (reading {K} vectors included)")


HELD_OUT = ("base-ft-docs", "base2-ft-code", "scratch-legal")  # and a middle training checkpoint


def bench_demo(demo_dir: str, fraction: float, seed: int, repeats: int = 3) -> None:
    """Paper §5.2 / Table 2 on the demo ecosystem: scoring time on the subset vs all texts, and KL correlation."""
    import shutil

    from lmmap import ModelMap
    from lmmap.maths import resampling as imp
    from lmmap.demo import run_demo
    from lmmap.analyses.place import add_models
    from lmmap.scoring import score_models
    from lmmap.data.store import Store
    from lmmap.analyses.select import select

    t0 = time.perf_counter()
    demo = run_demo(demo_dir, size="full", progress=False)
    print(f"demo ecosystem ready in {time.perf_counter() - t0:.0f} s: {demo['n_models']} models, {demo['n_texts']} texts")
    models_dir = Path(demo["models_dir"])
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(demo["store"], Path(tmp) / "store")  # the demo's own store stays as it was
        store = Store(Path(tmp) / "store")
        N = store.n_texts
        names = store.complete_models()
        meta = store.metadata()
        ckpts = [m for m in names if m in meta.index and meta.loc[m, "model_type"] == "checkpoint"]
        held = [m for m in HELD_OUT if m in names] + ckpts[len(ckpts) // 2 : len(ckpts) // 2 + 1]
        rest = [m for m in names if m not in held]
        pi = imp.importance(ModelMap.from_store(store, models=rest).Q, "ls")
        n = imp.n_for_expected_unique(pi, fraction * N)
        sub = select(store, "ls", n, random_state=seed, models=rest)
        print(f"LS subset from {len(rest)} models: n = {n}, d = {sub.d} of N = {N} ({100 * sub.d / N:.1f}%); "
              f"{len(held)} held-out models added back")
        sources = [str(models_dir / m) for m in held]
        res = add_models(store, sources, sub, score_kwargs=dict(device="cpu"), embedding="pca")
        # Time scoring on the subset against scoring on every text, the same way (model loading
        # excluded); the best of `repeats` runs, as other processes share the CPU.
        def best_seconds(text_pos, tag):
            times = {m: [] for m in held}
            for rep in range(repeats):
                status = score_models(store, sources, names=[f"{m}@{tag}" for m in held], text_pos=text_pos,
                                      device="cpu", replace=True)
                for m in held:
                    times[m].append(status[f"{m}@{tag}"].seconds)
            return {m: min(t) for m, t in times.items()}

        t_sub = best_seconds(sub.text_pos, "subset")
        t_all = best_seconds(None, "all")
        full = ModelMap.from_store(store, models=rest + held, threshold=sub.threshold)
        K = len(rest)
        print(f"{'new model':16s} {'subset':>9s} {'all N':>9s} {'speed-up':>9s} {'KL corr':>8s}")
        rs, ups = [], []
        for i, m in enumerate(held):
            r = float(np.corrcoef(res.kl[i], full.kl()[K + i, :K])[0, 1])
            a, b = t_sub[m], t_all[m]
            rs.append(r)
            ups.append(b / a)
            print(f"{m:16s} {a:8.2f}s {b:8.2f}s {b / a:8.1f}x {r:8.4f}")
        total = sum(t_all.values()) / sum(t_sub.values())
        n_tok = store.vectors(rest[0])["n_tokens"].to_numpy()
        print(f"tokens to score: {n_tok[sub.text_pos].sum():,} on the subset vs {n_tok.sum():,} on all texts "
              f"({n_tok.sum() / n_tok[sub.text_pos].sum():.2f}x: the speed-up where compute dominates)")
        print(f"{'all':16s} {sum(t_sub.values()):8.2f}s {sum(t_all.values()):8.2f}s {total:8.1f}x")
        print(f"`add` itself (scoring {len(held)} models with loading, then placing): {res.scoring_seconds:.1f} s of scoring")
        print(f"scoring speed-up {total:.1f}x overall ({min(ups):.1f}-{max(ups):.1f}x per model; paper: >4x at d/N = 22%), "
              f"KL correlation {min(rs):.4f}-{max(rs):.4f} (paper: 0.996-0.997)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=1018)
    parser.add_argument("--texts", type=int, default=10_000)
    parser.add_argument("--n", type=int, default=2900, help="draws (the paper's §5.2 setting: 2,900)")
    parser.add_argument("--store-too", action="store_true", help="also time select from a store on disk")
    parser.add_argument("--demo", action="store_true", help="also run part 2 on the demo ecosystem")
    parser.add_argument("--demo-dir", default="lmmap-demo", help="the demo's directory (built there if absent; cached)")
    parser.add_argument("--fraction", type=float, default=0.22, help="target d/N for part 2 (the paper: 2,192/10,000)")
    args = parser.parse_args(argv)
    bench_select(args.models, args.texts, args.n, args.store_too)
    if args.demo:
        bench_demo(args.demo_dir, args.fraction, 0)


if __name__ == "__main__":
    main()

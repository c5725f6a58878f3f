"""Adaptive placement against the fixed LS subset: texts scored at the same accuracy.

    python benchmarks/bench_adaptive.py [--models 1000] [--texts 10000] [--held 40] [--n-fixed 2900]
                                        [--targets 0.05 0.1 0.2] [--round 32] [--demo-store lmmap-demo/store]
                                        [--no-synthetic]

Synthetic ecosystem (tests/synthetic.py ``ecosystem_L``: bases, fine-tunes,
merges, unrelated models; K = 1,000 × N = 10,000 by default). ``--held``
models (fine-tunes, merges and unrelated ones in proportion) are held out of
the map; each is placed

* by the fixed LS subset of the paper (n = 2,900 draws from LS on the
  existing map, the weighted subset estimator of SPEC §4), and
* adaptively (:func:`lmmap.analyses.adaptive.simulate`, rounds of 32 draws, stop at
  the target relative SE of the KL to the 5 nearest models),

with scoring simulated by a lookup in the full matrix (numpy only). For each
it reports the unique texts scored, the Pearson r of the model's KL row to
the full-data row, whether its nearest existing model is the full-data one,
and how many of the full-data 5 nearest are among the estimated 5 nearest.
The goal: r ≥ 0.99 and the same nearest neighbour with ≤ 25% of the fixed
subset's texts. Distributions over the held-out models are printed
(median, quartiles, worst), never one model.

``--demo-store``: the same, leaving each model of a store of full vectors
(e.g. the demo's) out in turn, with the fixed subset scaled to n = 2,900·N/10,000
(one distribution over all held-out models; ``--no-synthetic`` runs only this).

``--fake-store N``: end to end through a store and the scoring driver (issue 22
§4): N synthetic texts, 16 fake bigram models (:mod:`lmmap.scoring.fake`, 4
bases with 3 fine-tunes each) scored on all of them, and a new fine-tune placed
by :func:`lmmap.analyses.adaptive.place_adaptive` at each ``--targets`` value.
For each: rounds, unique texts, how it stopped, wall seconds, the lines a
terminal would keep (messages and finished bars), against scoring the same
model on all N texts once. Runs on the code it is given (``PYTHONPATH``), so
the same command measures before and after a change.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from lmmap.analyses import adaptive as ad  # noqa: E402
from lmmap.maths.resampling import importance  # noqa: E402


def _metrics(g_est, g_true, se=None, k=5, tie=0.05):
    """Pearson r, same nearest, nearest within ``tie`` of the true nearest's KL, top-k overlap,
    relative error of the KL to the true nearest, whether its 95% interval covers it."""
    r = float(np.corrcoef(g_est, g_true)[0, 1])
    top_t = np.argsort(g_true, kind="stable")[:k]
    top_e = np.argsort(g_est, kind="stable")[:k]
    j = top_t[0]
    rel = g_est[j] / g_true[j] - 1
    cover = np.nan if se is None else float(abs(g_est[j] - g_true[j]) <= 1.96 * se[j])
    return (r, bool(top_e[0] == j), bool(g_true[top_e[0]] <= (1 + tie) * g_true[j]), len(set(top_t) & set(top_e)),
            rel, cover)


def _dist(x):
    x = np.asarray(x, dtype=float)
    q = np.percentile(x, [0, 25, 50, 75, 100])
    return f"min {q[0]:.4g}  q1 {q[1]:.4g}  median {q[2]:.4g}  q3 {q[3]:.4g}  max {q[4]:.4g}"


def report(rows, held, kinds, n_fixed):
    d_fixed = np.median([r[0] for r in rows["fixed"]])
    for key, rs in rows.items():
        texts, r, nn1, nn_tie, top5, rel, cover, stopped, rounds = map(list, zip(*rs))
        name = "fixed LS n=%d" % n_fixed if key == "fixed" else f"adaptive target {key}"
        print(f"-- {name}")
        print(f"   unique texts  {_dist(texts)}   (median {100 * np.median(texts) / d_fixed:.0f}% of fixed; "
              f"{np.mean(np.array(texts) <= 0.25 * d_fixed):.0%} of the models within 25%, "
              f"{np.sum(texts) / (d_fixed * len(texts)):.0%} of the fixed subset's texts in all)")
        if key != "fixed":
            n_all = sum(s == "all-texts" for s in stopped)
            print(f"   rounds        {_dist(rounds)}   (stopped by all-texts: {n_all})")
        print(f"   Pearson r     {_dist(r)}")
        print(f"   same nearest  {np.mean(nn1):.0%}   (or one within 5% of its KL: {np.mean(nn_tie):.0%})   "
              f"top-5 overlap {_dist(top5)}")
        print(f"   KL to the true nearest: relative error mean {np.mean(rel):+.4f} (bias; ± {np.std(rel) / np.sqrt(len(rel)):.4f} "
              f"MC), RMS {np.sqrt(np.mean(np.square(rel))):.4f}" + (
              f", 95% interval covers {np.mean(cover):.0%}" if key != "fixed" else ""))
        ok = np.array(r) >= 0.99
        print(f"   r ≥ 0.99 and same nearest: {(ok & np.array(nn1)).mean():.0%}; "
              f"r ≥ 0.99 and nearest within 5%: {(ok & np.array(nn_tie)).mean():.0%}" + (
            f"   stopped by max-texts: {sum(s == 'max-texts' for s in stopped)}" if key != "fixed" else ""))
        if kinds is not None:
            for kind in sorted(set(kinds[h] for h in held)):
                sel = [i for i, h in enumerate(held) if kinds[h] == kind]
                print(f"     {kind:10s} texts median {np.median([texts[i] for i in sel]):6.0f}  "
                      f"worst r {min(r[i] for i in sel):.4f}  same nearest {np.mean([nn1[i] for i in sel]):.0%}")


def run(L, held, kinds, n_fixed, targets, round_size, seed, label, verbose=True):
    K = L.shape[0]
    rest = np.setdiff1d(np.arange(K), held)
    t0 = time.perf_counter()
    amap = ad.prepare_map(L[rest])
    if verbose:
        print(f"\n== {label}: {len(rest)} existing models × {L.shape[1]} texts, {len(held)} held out "
              f"(map prepared in {time.perf_counter() - t0:.1f} s)")
    pi_ls = importance(amap.Q, "ls")
    rng = np.random.default_rng(seed)
    rows = {"fixed": []}
    truths = {h: ad.true_sq_distances(amap, L[h]) for h in held}
    for h in held:
        s = ad.draw_round(pi_ls, n_fixed, rng)
        u, c = np.unique(s, return_counts=True)
        w = c / (n_fixed * pi_ls[u])
        y = amap.y_of(L[h][u], u)
        delta = y[None, :] - amap.Q[:, u]
        g = (delta * delta) @ w - (delta @ w) ** 2 / w.sum()
        rows["fixed"].append((len(u), *_metrics(g, truths[h]), "fixed", 1))
    for target in targets:
        rows[target] = []
        t0 = time.perf_counter()
        for i, h in enumerate(held):
            run_ = ad.simulate(amap, L[h], target_se=target, neighbors=5, round_size=round_size, random_state=seed + 1000 + i)
            rows[target].append((run_.texts_scored, *_metrics(run_.estimate.g, truths[h], run_.estimate.se),
                                 run_.stopped_by, run_.rounds))
        rows[target + 0.0] = rows.pop(target)
        if verbose:
            print(f"   (adaptive, target {target}: {time.perf_counter() - t0:.1f} s for {len(held)} models)")
    if verbose:
        report(rows, held, kinds, n_fixed)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--texts", type=int, default=10000)
    ap.add_argument("--held", type=int, default=40)
    ap.add_argument("--n-fixed", type=int, default=2900)
    ap.add_argument("--targets", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    ap.add_argument("--round", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--demo-store", type=Path, default=Path("lmmap-demo/store"))
    ap.add_argument("--no-synthetic", action="store_true", help="Only the demo store.")
    ap.add_argument("--fake-store", type=int, metavar="N", help="Only the end-to-end run on a store of N texts "
                    "scored by the fake backend.")
    a = ap.parse_args(argv)

    from synthetic import ecosystem_L

    if a.fake_store:
        return _fake_store(a.fake_store, a.targets, a.round, a.seed)
    if a.no_synthetic:
        return _demo(a)
    # K = bases·(1 + fine-tunes per base) + merges + unrelated.
    n_bases = max(3, a.models // 10)
    n_merges = max(1, (a.models - 9 * n_bases) * 6 // 10)
    n_unrel = max(1, a.models - 9 * n_bases - n_merges)
    t0 = time.perf_counter()
    names, L, kinds, _ = ecosystem_L(a.texts, n_bases=n_bases, ft_per_base=8, n_merges=n_merges, n_unrelated=n_unrel,
                                     seed=a.seed)
    print(f"synthetic ecosystem: K = {len(names)} ({n_bases} bases, {8 * n_bases} fine-tunes, {n_merges} merges, "
          f"{n_unrel} unrelated) × N = {a.texts} in {time.perf_counter() - t0:.1f} s")
    rng = np.random.default_rng(a.seed)
    kinds_arr = np.array(kinds)
    want = {"finetune": a.held // 2, "merge": a.held // 4, "unrelated": a.held - a.held // 2 - a.held // 4}
    held = np.concatenate([rng.choice(np.flatnonzero(kinds_arr == k), size=min(v, int((kinds_arr == k).sum()) - 1),
                                      replace=False) for k, v in want.items()])
    run(L, np.sort(held), kinds, a.n_fixed, a.targets, a.round, a.seed, "synthetic")
    _demo(a)


def _demo(a):
    if a.demo_store.exists():
        from lmmap.data.store import Store

        store = Store(a.demo_store)
        models = store.complete_models()
        _, Ld = store.matrix(models)
        n_fixed = int(round(a.n_fixed * Ld.shape[1] / 10000)) or 1
        rows = {}
        for h in range(len(models)):  # leave each model out in turn; one distribution over all of them
            one = run(Ld, np.array([h]), None, n_fixed, a.targets, a.round, a.seed + h, f"demo store, {models[h]} held out",
                      verbose=False)
            for key, rs in one.items():
                rows.setdefault(key, []).extend(rs)
        print(f"\n== demo store {a.demo_store}: {len(models)} models × {Ld.shape[1]} texts, each held out in turn "
              f"(fixed LS n = {n_fixed})")
        report(rows, list(range(len(models))), None, n_fixed)
    else:
        print(f"\n(no demo store at {a.demo_store}: `lmmap demo` builds one; skipped)")


def _fake_store(N, targets, round_size, seed):
    import tempfile

    from lmmap.data.store import Store
    from lmmap.data.texts import TextSet
    from lmmap.scoring import score_models
    from lmmap.scoring.fake import BigramModel, FakeBackend

    rng = np.random.default_rng(seed)
    words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(2, 9))) for _ in range(400)]
    texts = [" ".join(rng.choice(words, rng.integers(10, 60))) for _ in range(N)]
    models = {}
    for b in range(4):
        base = BigramModel.from_name(f"base{b}").counts
        models[f"base{b}"] = BigramModel(base)
        for f in range(3):
            models[f"base{b}-ft{f}"] = BigramModel(base + rng.integers(0, 6, base.shape))
    new = BigramModel(models["base1"].counts + rng.integers(0, 6, base.shape))
    print(f"fake store: {N} texts, {len(models)} existing bigram models, a new fine-tune of base1; round {round_size}")
    for target in targets:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store.create(Path(tmp) / "store", TextSet.from_texts(texts))
            backend = FakeBackend({**models, "new": new})
            score_models(store, list(models), backend=backend)
            kept = []

            def progress(step):
                # What a terminal keeps: each message, and each bar once it is finished.
                if (step.task is None and step.message) or step.finished:
                    kept.append(str(step))

            t0 = time.perf_counter()
            res = ad.place_adaptive(store, ["new"], names=["new"], target_se=target, round_size=round_size,
                                    random_state=seed, score_kwargs={"backend": backend}, embedding=None,
                                    progress=progress)
            t_adaptive = time.perf_counter() - t0
            t0 = time.perf_counter()
            score_models(store, ["new"], names=["all"], backend=backend)
            t_all = time.perf_counter() - t0
            r = res.adaptive_table().iloc[0]
            print(f"  target {target:g}: {r['rounds']} rounds, {r['texts_scored']} of {N} texts, stopped_by "
                  f"{r['stopped_by']}, se_reached {r['se_reached']:.3g}; {t_adaptive:.1f} s "
                  f"(scoring all {N} texts once: {t_all:.1f} s); {len(kept)} lines kept on screen")


if __name__ == "__main__":
    main()

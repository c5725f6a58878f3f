"""Adaptive placement on real (tiny) language models: texts scored, KL-row r and nearest model (issue 25).

    python benchmarks/bench_adaptive_real.py [--workdir /tmp/adaptive-real] [--demo /tmp/lineage-demo]
                                             [--texts 3000] [--targets default] [--leave-one-out]

**The map.** The demo's ecosystem (``lmmap demo``: tiny GPT-2 models trained
on CPU from this machine's Python sources, docs and licences; its trained
models and tokenizer are reused from ``--demo``, which ``python -m lmmap demo
-o DIR`` builds) grown with :data:`EXTRA` models trained here by the demo's own
:func:`lmmap.demo.train_model` (cached in ``WORKDIR/models``): eight more base
runs on other mixtures with their checkpoints, fine-tunes of them and of the
demo's bases (one a fine-tune of a fine-tune), from-scratch runs with another
seed — 56 models in the map — and **seven derivatives of one base**
(``base2``: the demo's held-out ``base2-ft-docs`` and six more fine-tunes at
other domains, learning rates, lengths and seeds) held out of it, as the
issue's "held-out ecosystem" was. Every model is scored (float32, CPU) on
``--texts`` texts of 384 bytes cut from the demo corpus's *held-out*
documents (code, docs and legal: 1,800 + 700 + 500 by default) into
``WORKDIR/store``.

**The measurement.** Each held-out model is placed against the 56-model map

* by the fixed LS subset — what ``lmmap select --method ls --n n`` draws with
  n = 0.29·N (2,900 per 10,000 texts, as ``bench_adaptive.py`` and the paper),
  estimated by the weighted subset estimator; its unique texts d are the
  reference (the issue's 692 of 3,000);
* adaptively with the default settings of ``lmmap add --adaptive``
  (:func:`lmmap.analyses.adaptive.simulate`: the same rounds and draws as
  the driver, the scoring a lookup in the stored vectors — the scores of a
  model at a text do not depend on when it is scored), and at each
  ``--targets`` value given.

For each: texts scored (mean and % of the fixed subset's mean d), Pearson r
of the model's KL row to the exact full-text row, the same nearest model,
the adaptive run's stopping reason and rounds, and the likely parent the
adaptive run found (issue 25: it should be ``base2``). ``--leave-one-out``
also holds each of the map's 56 models out in turn (one distribution).
Runs on the code it is given (``PYTHONPATH``): the same command measures
before and after a change.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_adaptive import _dist, _metrics  # noqa: E402
from lmmap.analyses import adaptive as ad  # noqa: E402
from lmmap.maths.resampling import importance  # noqa: E402

FIXED_PER_TEXT = 0.29  # draws of the fixed LS subset per text (2,900 of 10,000)
HELD_BASE = "base2"


def _extra_models(seed: int = 0):
    from lmmap.demo import DemoModel as M

    bases = [  # name, seed, mix, steps, lr, checkpoints
        ("base4", 10, (0.4, 0.3, 0.3), 100, 2e-3, (30, 60)),
        ("base5", 11, (0.2, 0.6, 0.2), 90, 2e-3, (30, 60)),
        ("base6", 12, (0.3, 0.2, 0.5), 100, 3e-3, (30,)),
        ("base7", 13, (1 / 3, 1 / 3, 1 / 3), 80, 2e-3, (40,)),
        ("base8", 14, (0.7, 0.15, 0.15), 100, 2e-3, (50,)),
        ("base9", 15, (0.1, 0.5, 0.4), 100, 2e-3, (50,)),
        ("base10", 16, (0.5, 0.1, 0.4), 90, 3e-3, (45,)),
        ("base11", 17, (0.25, 0.25, 0.5), 100, 2e-3, (50,)),
    ]
    out = [M(n, "base", n, "mix", st, lr, seed + s, checkpoints=ck, mix=mx) for n, s, mx, st, lr, ck in bases]
    fts = [("base4", "code"), ("base4", "docs"), ("base4", "legal"), ("base5", "code"), ("base5", "legal"),
           ("base5", "docs"), ("base6", "docs"), ("base6", "code"), ("base6", "legal"), ("base7", "legal"),
           ("base8", "docs"), ("base9", "code"), ("base10", "code"), ("base10", "docs"), ("base11", "legal"),
           ("base3", "docs"), ("base3", "code")]
    sd = {b[0]: b[1] for b in bases} | {"base": 0, "base2": 1, "base3": 3}
    out += [M(f"{b}-ft-{d}", "finetune", b, d, 25, 3e-4, seed + sd[b], parent=b) for b, d in fts]
    out += [M("base-ft-code-hi", "finetune", "base", "code", 25, 1e-3, seed, parent="base"),
            M("base-ft-docs-long", "finetune", "base", "docs", 60, 3e-4, seed, parent="base"),
            M("base4-ft-code-ft-docs", "finetune", "base4", "docs", 25, 3e-4, seed + 10, parent="base4-ft-code")]
    out += [M(f"scratch-{d}-s2", "scratch", f"scratch-{d}-s2", d, 50, 2e-3, seed + 20) for d in ("code", "docs", "legal")]
    held = [M("base2-ft-legal", "finetune", "base2", "legal", 25, 3e-4, seed + 1, parent="base2", held_out=True),
            M("base2-ft-code-hi", "finetune", "base2", "code", 25, 1e-3, seed + 1, parent="base2", held_out=True),
            M("base2-ft-docs-long", "finetune", "base2", "docs", 60, 3e-4, seed + 1, parent="base2", held_out=True),
            M("base2-ft-mix", "finetune", "base2", "mix", 30, 5e-4, seed + 1, parent="base2", held_out=True),
            M("base2-ft-legal-lo", "finetune", "base2", "legal", 25, 1e-4, seed + 1, parent="base2", held_out=True),
            M("base2-ft-code-s2", "finetune", "base2", "code", 40, 3e-4, seed + 5, parent="base2", held_out=True)]
    return out + held


def build(workdir: Path, demo: Path, n_texts: int, say=print):
    """The store of the grown ecosystem (cached): returns (store, held-out names)."""
    import torch
    from transformers import AutoTokenizer

    from lmmap import demo as dm
    from lmmap.data.store import Store
    from lmmap.data.texts import TextSet, build_text_set
    from lmmap.scoring import score_models

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    plan = dm.demo_plan("full", 0)
    corpus = json.loads((demo / "data" / "corpus.json").read_text())["domains"]
    tokenizer = AutoTokenizer.from_pretrained(demo / "tokenizer")
    models_dir = workdir / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    demo_names = sorted(p.name for p in (demo / "models").iterdir() if (p / "lmmap-demo.json").exists())
    for n in demo_names:
        if not (models_dir / n).exists():
            (models_dir / n).symlink_to((demo / "models" / n).resolve())
    extra = _extra_models()
    todo = [m for m in extra if not all((models_dir / n / "lmmap-demo.json").exists()
                                        for n in [m.name, *(f"{m.name}-step{k}" for k in m.checkpoints)])]
    if todo:
        streams = dm.token_streams(corpus, tokenizer)
        t0 = time.perf_counter()
        for m in todo:
            dm.train_model(m, plan, tokenizer, streams, models_dir, "bench-adaptive-real", None)
            say(f"  trained {m.name} ({time.perf_counter() - t0:.0f} s)")
    # The text set: 384-byte chunks of each domain's held-out documents (none seen in training).
    quota = {"code": int(0.6 * n_texts), "docs": int(round(0.7 / 3 * n_texts))}
    quota["legal"] = n_texts - quota["code"] - quota["docs"]
    store_path = workdir / "store"
    if not (store_path / "store.json").exists():
        texts, sources, seen = [], [], set()
        for k, name in enumerate(dm.DOMAINS):
            path = workdir / "data" / f"heldout-{name}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(json.dumps({"text": t}) for _, t in corpus[name]["heldout"]))
            ts = build_text_set([path], chunk_bytes=384, min_bytes=192)
            keep = [t for t in ts.texts if t not in seen]
            if len(keep) < quota[name]:
                raise SystemExit(f"only {len(keep)} held-out {name} chunks, {quota[name]} wanted: lower --texts")
            pick = sorted(np.random.default_rng([0, k]).permutation(len(keep))[: quota[name]])
            texts += [keep[i] for i in pick]
            sources += [name] * quota[name]
            seen.update(texts)
        Store.create(store_path, TextSet.from_texts(texts, sources=sources))
    store = Store(store_path)
    table = [dict(model=m.name, model_type=m.model_type, family=m.family, base_model=m.parent or "",
                  domain=m.domain) for m in [*dm.demo_plan("full", 0).models, *extra]]
    for m in [*dm.demo_plan("full", 0).models, *extra]:
        table += [dict(model=f"{m.name}-step{k}", model_type="checkpoint", family=m.family, base_model=m.name,
                       domain=m.domain) for k in m.checkpoints]
    import pandas as pd

    names = [r["model"] for r in table]
    pending = [n for n in names if not store.has_model(n)]
    if pending:
        say(f"  scoring {len(pending)} models on {store.n_texts} texts…")
        t0 = time.perf_counter()
        status = score_models(store, [str(models_dir / n) for n in pending], names=pending, device="cpu",
                              dtype="float32")
        bad = {n: str(s) for n, s in status.items() if not s.ok}
        if bad:
            raise SystemExit(f"scoring failed: {bad}")
        say(f"  scored in {time.perf_counter() - t0:.0f} s")
        store.set_metadata(pd.DataFrame(table))
    held = [m.name for m in [*dm.demo_plan("full", 0).models, *extra] if m.held_out]
    return store, held


def _fixed(amap, row, truth, n_fixed, rng):
    """The fixed LS subset (n_fixed draws from LS on the existing map, the weighted subset estimator)."""
    pi_ls = importance(amap.Q, "ls")
    s = ad.draw_round(pi_ls, n_fixed, rng)
    u, c = np.unique(s, return_counts=True)
    w = c / (n_fixed * pi_ls[u])
    delta = amap.y_of(row[u], u)[None, :] - amap.Q[:, u]
    g = (delta * delta) @ w - (delta @ w) ** 2 / w.sum()
    return len(u), _metrics(g, truth)


def measure(L, names, held, targets, seed=0, label="", show_each=True):
    """Fixed LS vs adaptive (defaults, and each target) for the held-out rows of L against the rest."""
    rest = [i for i in range(len(names)) if i not in set(held)]
    amap = ad.prepare_map(L[rest])
    N = L.shape[1]
    n_fixed = int(round(FIXED_PER_TEXT * N))
    rng = np.random.default_rng(seed)
    rows = {"fixed": []}
    ex = [names[i] for i in rest]
    for h in held:
        truth = ad.true_sq_distances(amap, L[h])
        d, m = _fixed(amap, L[h], truth, n_fixed, rng)
        rows["fixed"].append(dict(model=names[h], texts=d, r=m[0], nn=m[1], true_nn=ex[int(np.argmin(truth))]))
        for t in targets:
            kw = {} if t == "default" else {"target_se": float(t)}
            t0 = time.perf_counter()
            run = ad.simulate(amap, L[h], random_state=seed + 1000 + h, **kw)
            m = _metrics(run.estimate.g, truth, run.estimate.se)
            parent = getattr(run, "likely_parent", None)
            rows.setdefault(t, []).append(dict(
                model=names[h], texts=run.texts_scored, r=m[0], nn=m[1], rounds=run.rounds, stopped=run.stopped_by,
                nearest=ex[int(np.argmin(run.estimate.g))], true_nn=ex[int(np.argmin(truth))],
                parent=None if parent is None else ex[parent], seconds=time.perf_counter() - t0))
    d_fixed = float(np.mean([r["texts"] for r in rows["fixed"]]))
    print(f"\n== {label}: {len(rest)} models in the map × N = {N} texts, {len(held)} held out; fixed LS subset "
          f"n = {n_fixed} draws → mean d = {d_fixed:.0f} unique texts")
    for key, rs in rows.items():
        texts = np.array([r["texts"] for r in rs], dtype=float)
        r = np.array([r["r"] for r in rs])
        nn = np.array([r["nn"] for r in rs])
        name = "fixed LS" if key == "fixed" else ("adaptive, default settings" if key == "default"
                                                  else f"adaptive, --target-se {key}")
        print(f"-- {name}: texts mean {texts.mean():.0f} = {100 * texts.mean() / d_fixed:.0f}% of fixed "
              f"({_dist(texts)});  r {_dist(r)};  same nearest {nn.sum()}/{len(nn)};  "
              f"r ≥ 0.99 and same nearest {int(((r >= 0.99) & nn).sum())}/{len(nn)}")
        if key != "fixed":
            stops = {s: sum(x["stopped"] == s for x in rs) for s in sorted({x["stopped"] for x in rs})}
            rounds = np.array([x["rounds"] for x in rs])
            print(f"   stopped by {stops}; rounds mean {rounds.mean():.1f} max {rounds.max()}")
            if show_each:
                for x in rs:
                    print(f"     {x['model']:22s} {x['texts']:5d} texts {x['rounds']:2d} rounds r {x['r']:.5f} "
                          f"nearest {x['nearest']}{'' if x['nn'] else ' (true: ' + x['true_nn'] + ')'}"
                          f"  likely parent {x['parent']}")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/adaptive-real"))
    ap.add_argument("--demo", type=Path, default=Path("/tmp/lineage-demo"))
    ap.add_argument("--texts", type=int, default=3000)
    ap.add_argument("--targets", nargs="+", default=["default"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--leave-one-out", action="store_true")
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--no-build", action="store_true", help="Measure on the models already in WORKDIR/store.")
    a = ap.parse_args(argv)
    if not a.no_build and not (a.demo / "models").exists():
        raise SystemExit(f"no demo at {a.demo}: `python -m lmmap demo -o {a.demo}` builds one")
    if a.no_build:  # measure on the models the store has now (a build under way elsewhere)
        from lmmap.data.store import Store

        store = Store(a.workdir / "store")
        held_names = [m.name for m in _extra_models() if m.held_out] + ["base2-ft-docs"]
    else:
        store, held_names = build(a.workdir, a.demo, a.texts)
    if a.build_only:
        return
    names = store.complete_models()
    _, L = store.matrix(names)
    held = [names.index(n) for n in held_names if n in names]
    measure(L, names, held, a.targets, a.seed, f"held-out derivatives of {HELD_BASE}")
    if a.leave_one_out:
        rest = [i for i in range(len(names)) if i not in set(held)]
        Lm, nm = L[rest], [names[i] for i in rest]
        all_rows = {}
        for h in range(len(nm)):
            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()):
                one = measure(Lm, nm, [h], a.targets, a.seed + h, "")
            for k, v in one.items():
                all_rows.setdefault(k, []).extend(v)
        d_fixed = float(np.mean([r["texts"] for r in all_rows["fixed"]]))
        print(f"\n== each of the map's {len(nm)} models held out in turn (against the other {len(nm) - 1})")
        for key, rs in all_rows.items():
            texts = np.array([r["texts"] for r in rs], dtype=float)
            r = np.array([r["r"] for r in rs])
            nn = np.array([r["nn"] for r in rs])
            print(f"-- {key}: texts mean {texts.mean():.0f} = {100 * texts.mean() / d_fixed:.0f}% of fixed; "
                  f"r {_dist(r)}; same nearest {nn.mean():.0%}; r ≥ 0.99 and same nearest "
                  f"{((r >= 0.99) & nn).mean():.0%}")


if __name__ == "__main__":
    main()

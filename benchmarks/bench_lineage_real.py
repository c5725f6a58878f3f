"""The lineage test (issue 25) on real tiny language models with known lineage.

    python benchmarks/bench_lineage_real.py [--workdir /tmp/adaptive-real] [--demo /tmp/lineage-demo] [--texts 3000]

The ecosystem is ``bench_adaptive_real.py``'s (built and cached by it, or here: the demo's tiny GPT-2
models grown to 63 by the demo's own training code — 11 bases on different mixtures with their
checkpoints, 32 fine-tunes on three domains at several learning rates and lengths, one fine-tune of a
fine-tune, six models trained from scratch on one domain each), all scored on 3,000 held-out texts.
The map declares what ``lmmap score --revisions`` records for checkpoints (``trajectory``, ``step``) and
no ``base_model``. Printed, for all texts and for an LS subset of a quarter of them:

- fine-tunes: the share called ``derived`` from their true parent (recall), and of those called derived
  the share with the right parent (precision);
- checkpoints and the runs' final models: the parent is the previous point of the run;
- models with no parent (from-scratch models, and each run's first checkpoint): the share called derived
  from a model of another lineage;
- the nearest model by KL, for comparison.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def truth_table():
    """Every model of the ecosystem: kind, true parent (the previous point for a run), lineage root."""
    from bench_adaptive_real import _extra_models

    from lmmap import demo as dm

    import dataclasses

    plan = dm.demo_plan("full", 0)
    plan = dataclasses.replace(plan, models=(*plan.models, *_extra_models()))
    t = dm.model_table(plan, held_out=True).set_index("model")
    rows = {}
    for name, r in t.iterrows():
        kind = r["model_type"]
        parent = r["base_model"] or ""
        if kind == "checkpoint" or (isinstance(r["trajectory"], str) and r["trajectory"]):
            pts = t[t["trajectory"] == r["trajectory"]].sort_values("step")
            order = list(pts.index)
            k = order.index(name)
            parent = order[k - 1] if k else ""
            kind = "checkpoint" if kind == "checkpoint" else "run final"
        rows[name] = dict(kind=kind, parent=parent, trajectory=r["trajectory"] or "", step=r["step"])
    truth = pd.DataFrame.from_dict(rows, orient="index")

    def root(n):
        p = truth.loc[n, "parent"]
        return root(p) if p else n
    truth["root"] = [root(n) for n in truth.index]
    return truth


def score(result, truth):
    t = result.table.set_index("model")
    out = {}
    for kind in ("finetune", "checkpoint", "run final"):
        models = [m for m in t.index if truth.loc[m, "kind"] == kind and truth.loc[m, "parent"]]
        called = [m for m in models if t.loc[m, "decision"] == "derived"]
        right = [m for m in called if t.loc[m, "parent"] == truth.loc[m, "parent"]]
        same = [m for m in called if truth.loc[t.loc[m, "parent"], "root"] == truth.loc[m, "root"]]
        kl = sum(t.loc[m, "nearest_kl"] == truth.loc[m, "parent"] for m in models)
        out[kind] = dict(n=len(models), recall=len(right) / max(len(models), 1),
                         precision=len(right) / max(len(called), 1), lineage=len(same) / max(len(called), 1),
                         undecided=sum(t.loc[m, "decision"] != "derived" for m in models), kl=kl / max(len(models), 1))
    roots = [m for m in t.index if not truth.loc[m, "parent"]]
    wrong = [m for m in roots if t.loc[m, "decision"] == "derived"
             and truth.loc[t.loc[m, "parent"], "root"] != truth.loc[m, "root"]]
    out["roots"] = dict(n=len(roots), wrong=len(wrong), names=wrong)
    return out


def show(label, s):
    print(f"\n{label}")
    print(f"  {'kind':11s} {'n':>3s} {'recall':>7s} {'precision':>9s} {'own lineage':>11s} {'not derived':>11s} "
          f"{'KL-nearest':>10s}")
    for kind in ("finetune", "checkpoint", "run final"):
        r = s[kind]
        print(f"  {kind:11s} {r['n']:3d} {r['recall']:7.3f} {r['precision']:9.3f} {r['lineage']:11.3f} "
              f"{r['undecided']:11d} {r['kl']:10.3f}")
    r = s["roots"]
    print(f"  models with no parent: {r['n']}, given a parent in another lineage: {r['wrong']} {r['names']}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/adaptive-real"))
    ap.add_argument("--demo", type=Path, default=Path("/tmp/lineage-demo"))
    ap.add_argument("--texts", type=int, default=3000)
    ap.add_argument("--alpha", type=float, default=0.05)
    a = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    from bench_adaptive_real import build

    from lmmap.analyses.lineage import lineage
    from lmmap.analyses.select import select
    from lmmap.map import ModelMap

    store, _ = build(a.workdir, a.demo, a.texts)
    truth = truth_table()
    names = [n for n in store.complete_models() if n in truth.index]
    md = truth.loc[names, ["trajectory", "step"]].copy()
    md["trajectory"] = md["trajectory"].replace("", np.nan)
    full_map = ModelMap.from_store(store, models=names)
    mm = ModelMap(names, full_map.L, threshold=full_map.threshold, metadata=md)
    print(f"{mm.K} real models × N = {mm.L.shape[1]} texts; trajectory/step declared, no base_model")
    full = lineage(mm, alpha=a.alpha, coords=False)
    show(f"all texts (rank {full.info['rank']})", score(full, truth))
    sub = select(mm, "ls", int(0.38 * mm.L.shape[1]), random_state=0, unbound=True)
    ms = ModelMap(names, mm.L[:, sub.text_pos], threshold=sub.threshold, w=sub.weights, n_texts=mm.L.shape[1],
                  metadata=md)
    part = lineage(ms, alpha=a.alpha, coords=False)
    show(f"LS subset, d = {len(sub.text_pos)} unique texts ({len(sub.text_pos) / mm.L.shape[1]:.0%} of N)",
         score(part, truth))


if __name__ == "__main__":
    main()

"""The lineage test (issue 25) on real tiny language models with known lineage.

    python benchmarks/bench_lineage_real.py [--workdir /tmp/adaptive-real] [--demo /tmp/lineage-demo] [--texts 3000]
                                            [--no-quantisation] [--subsets R] [--fixture PATH] [--distillation]
                                            [--misses]

The ecosystem is ``bench_adaptive_real.py``'s (built and cached by it, or here: the demo's tiny GPT-2
models grown to 63 by the demo's own training code — 11 bases on different mixtures with their
checkpoints, 32 fine-tunes on three domains at several learning rates and lengths, one fine-tune of a
fine-tune, six models trained from scratch on one domain each), all scored on 3,000 held-out texts, and 12
more built here in ``WORKDIR/lineage-extra`` (transformers' ``from_pretrained``/``save_pretrained``, scored
by ``score_models`` into a store of the same texts): 8-bit copies of seven models (each weight matrix of the
blocks rounded to 255 levels per output unit, absmax, as LLM.int8 stores them; embeddings kept) and five
merges (the weight average of two fine-tunes: four of one base, one of two bases). The map declares what
``lmmap score`` records — ``trajectory`` and ``step`` for checkpoints (``--revisions``), ``quantisation``
for a checkpoint whose weights lie on a quantisation grid (``--no-quantisation`` leaves it out) — and no
``base_model``. Printed, for all texts and for an LS subset of a quarter of them:

- fine-tunes, 8-bit copies and merges (either parent): the share called ``derived`` from their true
  parent (recall), and of those called derived the share with the right parent (precision); the fine-tunes of
  the issue's kind (one per base and domain, 25 steps at lr 3e-4: "one recipe") also apart;
- checkpoints and the runs' final models: the parent is the previous point of the run;
- models with no parent (from-scratch models, and each run's first checkpoint): the share called derived
  from a model of another lineage;
- the nearest model by KL, for comparison;
- ``--misses``: every model not found right (what it was called, and its statistic), and every model without a
  parent given one in another lineage.

Merges of two fine-tunes of one base are also counted apart ("one base"), right only with both parents.

``--subsets R`` also draws R smaller maps of the issue's shape (six of the eleven base lineages, each with
everything derived from it, the six from-scratch models, and the copies and merges whose parents are all
kept: 31–53 models) and prints the same figures summed over them, on all texts and on an LS subset of each.
``--fixture PATH`` saves the second of those maps for ``tests/analyses/test_lineage_real.py`` and stops.
``--distillation`` adds three
students distilled from a teacher (:data:`DISTILLED`: trained from scratch, as the teacher's architecture, on the
KL divergence from the teacher's next-token distribution over the training mix) and prints whether each is called
derived from its teacher.
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
    # The kind of fine-tune: one per base and domain, at the demo's recipe (25 steps, lr 3e-4).
    runs = {m.name for m in plan.models if m.model_type == "base"}
    recipe = {m.name for m in plan.models if m.model_type == "finetune" and m.parent in runs and m.steps == 25
              and m.lr == 3e-4 and m.domain != "mix"}
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
        rows[name] = dict(kind=kind, parent=parent, trajectory=r["trajectory"] or "", step=r["step"],
                          recipe=name in recipe)
    for name, (kind, parents) in extra_models().items():
        rows[name] = dict(kind=kind, parent=parents[0], trajectory="", step=np.nan, recipe=False)
    truth = pd.DataFrame.from_dict(rows, orient="index")
    truth["parents"] = [extra_models().get(n, ("", (p,) if p else ()))[1] for n, p in truth["parent"].items()]

    def root(n):
        p = truth.loc[n, "parent"]
        return root(p) if p else n
    truth["root"] = [root(n) for n in truth.index]
    return truth


# 8-bit copies (of a model: its parent) and merges (the weight average of two fine-tunes: their parents).
QUANTISED = ("base", "base3", "base4", "base5", "base6", "base7", "base-ft-code")
MERGES = (("base4-ft-code", "base4-ft-docs"), ("base5-ft-code", "base5-ft-legal"), ("base6-ft-docs", "base6-ft-legal"),
          ("base-ft-code", "base-ft-docs"), ("base3-ft-code", "base4-ft-legal"))


# Distilled students: (student, teacher, seed). Trained like a base (100 steps, lr 2e-3, the three domains in equal
# shares) on the teacher's next-token distributions (KL(teacher ‖ student), temperature 1) instead of the text.
DISTILLED = (("distil-base4", "base4", 40), ("distil-base6", "base6", 41), ("distil-base-ft-code", "base-ft-code", 42))


def build_distilled(workdir: Path, demo: Path, extra, say=print):
    """Train and score the :data:`DISTILLED` students into the ``extra`` store (cached)."""
    import json
    import time

    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from lmmap import demo as dm

    out = workdir / "lineage-extra" / "models"
    plan = dm.demo_plan("full", 0)
    todo = [d for d in DISTILLED if not (out / d[0] / "config.json").exists()]
    if todo:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        corpus = json.loads((demo / "data" / "corpus.json").read_text())["domains"]
        tokenizer = AutoTokenizer.from_pretrained(demo / "tokenizer")
        streams = dm.token_streams(corpus, tokenizer)
        for name, teacher_name, seed in todo:
            t0 = time.perf_counter()
            teacher = AutoModelForCausalLM.from_pretrained(workdir / "models" / teacher_name).eval()
            torch.manual_seed(seed)
            student = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                                 eos_token_id=tokenizer.eos_token_id, **plan.model_config()))
            student.train()
            steps, lr = 100, 2e-3
            opt = torch.optim.AdamW(student.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
            rng = np.random.default_rng(seed)
            for step in range(steps):
                for group in opt.param_groups:
                    group["lr"] = dm._lr_at(step, steps, lr)
                x = torch.from_numpy(dm.sample_batch(streams, "mix", plan.batch_size, plan.context, rng))
                with torch.no_grad():
                    target = F.log_softmax(teacher(input_ids=x).logits, dim=-1)
                logp = F.log_softmax(student(input_ids=x).logits, dim=-1)
                loss = F.kl_div(logp, target, log_target=True, reduction="batchmean") / x.shape[1]
                loss.backward()
                torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
            student.save_pretrained(out / name)
            tokenizer.save_pretrained(out / name)
            say(f"  distilled {name} from {teacher_name} ({time.perf_counter() - t0:.0f} s, last KL {loss.item():.3f})")
    _score_missing(extra, out, [d[0] for d in DISTILLED], say, "distilled students")


def extra_models():
    """``{name: (kind, parents)}`` of the 8-bit copies and merges built here."""
    out = {f"{m}-int8": ("quant", (m,)) for m in QUANTISED}
    out |= {f"merge-{a}+{b}": ("merge", (a, b)) for a, b in MERGES}
    return out


def _int8(model):
    """Each weight matrix of the transformer blocks rounded to 255 levels per output unit (absmax scaling, as
    LLM.int8 stores them) and back; embeddings, biases and norms kept."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim != 2 or "wte" in name or "wpe" in name or "lm_head" in name:
                continue
            # GPT-2's Conv1D stores (in, out): one scale per output unit is a max over dim 0.
            scale = p.abs().amax(dim=0, keepdim=True).clamp(min=1e-12) / 127.0
            p.copy_(torch.round(p / scale).clamp(-127, 127) * scale)
    return model


def build_extra(workdir: Path, store, say=print):
    """The 8-bit copies and merges, saved under ``WORKDIR/lineage-extra/models`` and scored into a store of the
    same texts; returns that store."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmmap.data.store import Store

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    root = workdir / "lineage-extra"
    src = workdir / "models"
    out = root / "models"
    out.mkdir(parents=True, exist_ok=True)
    for name, (kind, parents) in extra_models().items():
        if (out / name / "config.json").exists():
            continue
        model = AutoModelForCausalLM.from_pretrained(src / parents[0])
        if kind == "quant":
            _int8(model)
        else:
            other = AutoModelForCausalLM.from_pretrained(src / parents[1]).state_dict()
            done = set()  # GPT-2 ties the output layer to the embeddings: one tensor, averaged once
            with torch.no_grad():
                for k, v in model.state_dict().items():
                    if v.is_floating_point() and v.data_ptr() not in done:
                        done.add(v.data_ptr())
                        v.copy_(0.5 * v + 0.5 * other[k])
        model.save_pretrained(out / name)
        AutoTokenizer.from_pretrained(src / parents[0]).save_pretrained(out / name)
    if not (root / "store" / "store.json").exists():
        Store.create(root / "store", store.texts)
    extra = Store(root / "store")
    _score_missing(extra, out, list(extra_models()), say, "8-bit copies and merges")
    return extra


def _score_missing(store, models_dir: Path, names, say, what):
    """Score the models of ``names`` (saved under ``models_dir``) that ``store`` does not hold yet."""
    from lmmap.scoring import score_models

    pending = [n for n in names if not store.has_model(n)]
    if pending:
        say(f"  scoring {len(pending)} {what} on {store.n_texts} texts…")
        status = score_models(store, [str(models_dir / n) for n in pending], names=pending, device="cpu",
                              dtype="float32")
        bad = {n: str(s) for n, s in status.items() if not s.ok}
        if bad:
            raise SystemExit(f"scoring failed: {bad}")


KINDS = ("finetune", "quant", "merge", "checkpoint", "run final", "distilled")
# Rows of the table: each kind; the fine-tunes of the recipe (one per base and domain) apart; and the
# merges of two fine-tunes of one base apart, counted right only with both parents.
ROWS = ("finetune", "  one recipe", "quant", "merge", "  one base", "checkpoint", "run final", "distilled")


def _of_row(truth, row):
    if row in KINDS:
        return truth["kind"] == row
    if row == "  one recipe":
        return (truth["kind"] == "finetune") & truth["recipe"]
    one_base = [len({truth.loc[p, "root"] for p in ps}) == 1 for ps in truth["parents"]]
    return (truth["kind"] == "merge") & np.array(one_base, dtype=bool)


def score(result, truth):
    """Counts per kind (summed over maps by :func:`add`; :func:`show` turns them into shares), and the misses."""
    t = result.table.set_index("model")
    out = {}
    for row in ROWS:
        of_kind = _of_row(truth, row)
        models = [m for m in t.index if truth.loc[m, "parent"] and of_kind[m]]
        called = [m for m in models if t.loc[m, "decision"] == "derived"]
        if row == "  one base":
            right = [m for m in called if {t.loc[m, "parent"], t.loc[m, "parent2"]} == set(truth.loc[m, "parents"])]
        else:
            right = [m for m in called if t.loc[m, "parent"] in truth.loc[m, "parents"]]
        same = [m for m in called if truth.loc[t.loc[m, "parent"], "root"] == truth.loc[m, "root"]]
        kl = sum(t.loc[m, "nearest_kl"] in truth.loc[m, "parents"] for m in models)
        misses = [f"{m} (from {' + '.join(truth.loc[m, 'parents'])}): {t.loc[m, 'decision']}"
                  + (f" from {' + '.join(x for x in (t.loc[m, 'parent'], t.loc[m, 'parent2']) if x)}"
                     if t.loc[m, "decision"] == "derived" else "") + f", statistic {t.loc[m, 'statistic']:.1f}"
                  for m in models if m not in right]
        out[row] = dict(n=len(models), right=len(right), called=len(called), same=len(same), kl=kl,
                        undecided=len(models) - len(called), misses=misses)
    roots = [m for m in t.index if not truth.loc[m, "parent"]]
    wrong = [m for m in roots if t.loc[m, "decision"] == "derived"
             and truth.loc[t.loc[m, "parent"], "root"] != truth.loc[m, "root"]]
    out["roots"] = dict(n=len(roots), wrong=len(wrong), names=wrong,
                        misses=[f"{m}: from {t.loc[m, 'parent']}, statistic {t.loc[m, 'statistic']:.1f}"
                                for m in wrong])
    return out


def add(total, s):
    if total is None:
        return s
    for key, r in s.items():
        for f, v in r.items():
            total[key][f] += v
    return total


def show(label, s, misses=False):
    print(f"\n{label}")
    print(f"  {'kind':13s} {'n':>3s} {'recall':>7s} {'precision':>9s} {'own lineage':>11s} {'not derived':>11s} "
          f"{'KL-nearest':>10s}")
    for kind in ROWS:
        r = s[kind]
        if not r["n"]:
            continue
        n, c = max(r["n"], 1), max(r["called"], 1)
        print(f"  {kind:13s} {r['n']:3d} {r['right'] / n:7.3f} {r['right'] / c:9.3f} {r['same'] / c:11.3f} "
              f"{r['undecided']:11d} {r['kl'] / n:10.3f}")
    r = s["roots"]
    names = r["names"] if len(r["names"]) <= 6 else sorted(set(r["names"]))
    print(f"  models with no parent: {r['n']}, given a parent in another lineage: {r['wrong']} {names}")
    if misses:
        print("  misses:")
        for row in (*ROWS, "roots"):
            for m in s[row]["misses"]:
                print(f"    {row.strip()}: {m}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/adaptive-real"))
    ap.add_argument("--demo", type=Path, default=Path("/tmp/lineage-demo"))
    ap.add_argument("--texts", type=int, default=3000)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--subsets", type=int, default=0, help="also draw this many maps of six base lineages")
    ap.add_argument("--fixture", type=Path, help="save the test fixture of real log-likelihoods here (tests/fixtures/"
                    "lineage_real_map.npz) and stop")
    ap.add_argument("--distillation", action="store_true", help="add three distilled students (DISTILLED)")
    ap.add_argument("--misses", action="store_true", help="list every model not found right, and why")
    ap.add_argument("--no-quantisation", action="store_true",
                    help="leave out the metadata `quantisation` that scoring recorded for the 8-bit copies")
    a = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    from bench_adaptive_real import build

    from lmmap.analyses.lineage import lineage
    from lmmap.analyses.select import select
    from lmmap.map import ModelMap

    store, _ = build(a.workdir, a.demo, a.texts)
    extra = build_extra(a.workdir, store)
    truth = truth_table()
    if a.distillation:
        build_distilled(a.workdir, a.demo, extra)
        rows = pd.DataFrame([dict(kind="distilled", parent=t, trajectory="", step=np.nan, recipe=False, parents=(t,),
                                  root=truth.loc[t, "root"]) for _, t, _ in DISTILLED], index=[d[0] for d in DISTILLED])
        truth = pd.concat([truth, rows])
    names = [n for n in store.complete_models() if n in truth.index]
    full_map = ModelMap.from_store(store, models=names)
    extra_names = list(extra_models()) + ([d[0] for d in DISTILLED] if a.distillation else [])
    _, L_extra = extra.matrix(extra_names)
    names += extra_names
    md = truth.loc[names, ["trajectory", "step"]].copy()
    md["trajectory"] = md["trajectory"].replace("", np.nan)
    if not a.no_quantisation:  # what `lmmap score` recorded of the 8-bit copies' checkpoints
        found = extra.metadata()
        md["quantisation"] = found["quantisation"].reindex(names) if "quantisation" in found else np.nan
        print(f"quantisation recorded by scoring: {int(md['quantisation'].notna().sum())} of "
              f"{len(QUANTISED)} 8-bit copies")
    mm = ModelMap(names, np.vstack([full_map.L, L_extra]), threshold=full_map.threshold, metadata=md)
    print(f"{mm.K} real models × N = {mm.L.shape[1]} texts; trajectory/step declared, no base_model")
    if a.fixture:
        return save_fixture(mm, truth, a.fixture)
    full = lineage(mm, alpha=a.alpha, coords=False)
    show(f"all texts (rank {full.info['rank']})", score(full, truth), a.misses)
    sub = select(mm, "ls", int(0.38 * mm.L.shape[1]), random_state=0, unbound=True)
    ms = ModelMap(names, mm.L[:, sub.text_pos], threshold=sub.threshold, w=sub.weights, n_texts=mm.L.shape[1],
                  metadata=md)
    part = lineage(ms, alpha=a.alpha, coords=False)
    show(f"LS subset, d = {len(sub.text_pos)} unique texts ({len(sub.text_pos) / mm.L.shape[1]:.0%} of N)",
         score(part, truth), a.misses)
    if a.subsets:
        whole, ls = subsets(mm, truth, a.subsets, a.alpha)
        show(f"{a.subsets} maps of six base lineages, all texts", whole, a.misses)
        show(f"{a.subsets} maps of six base lineages, LS subsets (38% of N drawn, about a quarter unique)", ls,
             a.misses)


def six_lineage_maps(mm, truth, n_maps):
    """``n_maps`` maps of six of the base lineages (drawn at random, seed 0) with everything derived from them, the
    from-scratch models, and the copies and merges whose parents are all kept."""
    from lmmap.map import ModelMap

    rng = np.random.default_rng(0)
    sizes = truth.loc[mm.names].groupby("root").size()
    lineages = sorted(sizes[sizes > 1].index)
    for _ in range(n_maps):
        keep_roots = set(rng.choice(lineages, 6, replace=False)) | set(sizes[sizes == 1].index)
        keep = [n for n in mm.names if truth.loc[n, "root"] in keep_roots
                and all(truth.loc[p, "root"] in keep_roots for p in truth.loc[n, "parents"])]
        pos = [mm.names.index(n) for n in keep]
        yield ModelMap(keep, mm.L[pos], threshold=mm.threshold, metadata=mm.metadata.loc[keep])


def subsets(mm, truth, n_maps, alpha):
    """The counts of :func:`score` summed over :func:`six_lineage_maps`: ``(all texts, LS subset)``."""
    from lmmap.analyses.lineage import lineage
    from lmmap.analyses.select import select
    from lmmap.map import ModelMap

    def tagged(counts, r, K):
        for row in counts.values():
            row["misses"] = [f"map {r} ({K} models): {m}" for m in row["misses"]]
        return counts

    total = part = None
    for r, sm in enumerate(six_lineage_maps(mm, truth, n_maps)):
        total = add(total, tagged(score(lineage(sm, alpha=alpha, coords=False), truth.loc[sm.names]), r, sm.K))
        sub = select(sm, "ls", int(0.38 * sm.L.shape[1]), random_state=0, unbound=True)
        ms = ModelMap(sm.names, sm.L[:, sub.text_pos], threshold=sub.threshold, w=sub.weights,
                      n_texts=sm.L.shape[1], metadata=sm.metadata)
        part = add(part, tagged(score(lineage(ms, alpha=alpha, coords=False), truth.loc[sm.names]), r, sm.K))
    return total, part


def save_fixture(mm, truth, path: Path):
    """The second of :func:`six_lineage_maps` (50 models: three merges of one base's fine-tunes, a merge of two
    bases' fine-tunes, five 8-bit copies) as ``tests/analyses/test_lineage_real.py`` reads it: ``L`` in units of
    1e-4 nats (int64; an 8-bit copy differs from its original by 3e-4 nats per text on average), the names, and
    each model's kind, parents, trajectory, step and recorded quantisation (JSON)."""
    import json

    sm = list(six_lineage_maps(mm, truth, 2))[1]
    md = sm.metadata
    info = {n: dict(kind=truth.loc[n, "kind"], parents=list(truth.loc[n, "parents"]),
                    trajectory=md.loc[n, "trajectory"] if isinstance(md.loc[n, "trajectory"], str) else None,
                    step=None if pd.isna(md.loc[n, "step"]) else int(md.loc[n, "step"]),
                    quantisation=md.loc[n, "quantisation"] if isinstance(md.loc[n, "quantisation"], str) else None)
            for n in sm.names}
    np.savez_compressed(path, L=np.round(sm.L * 1e4).astype(np.int64), names=np.array(sm.names),
                        models=np.array(json.dumps(info)), threshold=np.array(sm.threshold))
    print(f"saved {sm.K} models × {sm.L.shape[1]} texts to {path} ({path.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()

"""Synthetic model ecosystems with known lineage, where the nearest model by KL is the wrong answer.

:func:`lineage_ecosystem` builds ``L`` (K×N log-likelihoods) for a population of
independent base models and what is derived from them:

* a **base** is the text's difficulty + its position in the population's
  low-rank skill space (shared structure) + its own per-text idiosyncrasy;
* a **fine-tune** is its parent's vector + a *large* shift along its domain's
  direction — one direction per domain, shared by every model fine-tuned on
  that domain (gains on the domain's texts, a little forgetting elsewhere) —
  + small noise of its own: the nearest model by KL is then another fine-tune
  on the same domain, from another lineage;
* a **heavy fine-tune** moves further and changes more of its own texts;
* a **quantisation** is its parent + tiny noise, a little worse overall;
* a **merge** averages two parents from different lineages (+ a little noise);
* **checkpoints** are points along a training path from an early, poor state
  (shared by every run: an untrained model is like any other) to the final
  model; their idiosyncrasy is the final model's, grown along the path. Each
  checkpoint is the parent of the next and the last the parent of the final
  model ("a checkpoint is an ancestor"), declared by metadata ``trajectory`` and
  ``step`` as ``lmmap score --revisions`` records them;
* an **independent** model is a base with no relatives in the map.

Every text has a scale (log-normal: some texts separate models far more than
others), as real log-likelihoods have. Imported as a plain module by the tests
and by ``benchmarks/bench_lineage.py``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

KINDS = ("base", "finetune", "heavy", "quant", "merge", "checkpoint", "independent")


def lineage_ecosystem(N=2000, n_bases=20, n_domains=4, ft_per_base=3, heavy_per_base=0, quant_per_base=1,
                      n_merges=6, n_checkpoint_runs=4, checkpoints_per_run=3, n_independent=10, rank=8,
                      idio=1.0, ft_shift=2.5, ft_noise=0.3, heavy_noise=0.9, quant_noise=0.08, merge_noise=0.2,
                      n_sibling_merges=0, seed=0):
    """A synthetic ecosystem; returns ``(names, L, truth)``.

    ``truth``: a DataFrame indexed by model with columns ``kind`` (:data:`KINDS`), ``parents`` (a tuple of the
    true parents' names, empty for bases and independent models), ``lineage`` (the base it descends from),
    ``domain`` (fine-tunes), ``trajectory`` and ``step`` (checkpoint runs: the metadata a store would hold).
    ``n_sibling_merges``: merges of two fine-tunes of one base (kind ``merge``, a weight average with a quarter of
    ``merge_noise``; drawn last so that the rest of the ecosystem is the same with or without them).

    Scales (per text, in units of the text's scale): the skill structure has sd about 1.5, a base's
    idiosyncrasy ``idio``, a fine-tune's domain shift ``ft_shift`` (so ``‖shift‖² ≫`` the distance between
    two unrelated models' idiosyncrasies on the domain's texts), own noise ``ft_noise``, a quantisation's
    ``quant_noise``.
    """
    rng = np.random.default_rng(seed)
    scale = rng.lognormal(0.0, 0.5, N)
    difficulty = -rng.gamma(3.0, 100.0, N)
    domain_of_text = rng.integers(0, n_domains, N)
    F = rng.normal(0, 1, (rank, N))
    # A domain's direction: large gains on its texts, a little forgetting on the others.
    D = np.stack([np.where(domain_of_text == k, rng.gamma(2.0, 1.0, N), -0.15 * rng.gamma(2.0, 1.0, N))
                  for k in range(n_domains)])
    untrained = rng.normal(0, 1, N) * 2.0 - 3.0  # where every run starts, shared by every early checkpoint

    names, rows, meta = [], [], []

    def add(name, row, kind, parents=(), lineage="", domain="", trajectory="", step=np.nan):
        names.append(name)
        rows.append(row)
        meta.append(dict(model=name, kind=kind, parents=tuple(parents), lineage=lineage, domain=domain,
                         trajectory=trajectory, step=step))

    def fresh(extra=0.0):
        u = rng.normal(0, 1.5 / np.sqrt(rank), rank)
        return difficulty + scale * (u @ F + idio * rng.normal(0, 1, N)) - rng.uniform(0, 10) + extra

    base_rows = {}
    for b in range(n_bases):
        name = f"base{b}"
        row = fresh()
        base_rows[name] = row
        add(name, row, "base", lineage=name)
        for t in range(ft_per_base):
            k = int(rng.integers(n_domains))
            a = ft_shift * rng.uniform(0.8, 1.2)
            ft = row + scale * (a * D[k] + ft_noise * rng.normal(0, 1, N)) - rng.uniform(0, 3)
            add(f"{name}-ft{t}-d{k}", ft, "finetune", (name,), name, f"d{k}")
        for t in range(heavy_per_base):
            k = int(rng.integers(n_domains))
            a = 1.5 * ft_shift * rng.uniform(0.8, 1.2)
            ft = row + scale * (a * D[k] + heavy_noise * rng.normal(0, 1, N)) - rng.uniform(0, 5)
            add(f"{name}-heavy{t}-d{k}", ft, "heavy", (name,), name, f"d{k}")
        for t in range(quant_per_base):
            q = row + scale * quant_noise * rng.normal(0, 1, N) - rng.uniform(0.5, 2.0)
            add(f"{name}-q{t}", q, "quant", (name,), name)
    pool = [n for n, m in zip(names, meta) if m["kind"] in ("base", "finetune")]
    lineage_of = {m["model"]: m["lineage"] for m in meta}
    for m in range(n_merges):
        while True:
            a, b = rng.choice(len(pool), 2, replace=False)
            if lineage_of[pool[a]] != lineage_of[pool[b]]:
                break
        lam = rng.uniform(0.35, 0.65)
        row = lam * rows[names.index(pool[a])] + (1 - lam) * rows[names.index(pool[b])] \
            + scale * merge_noise * rng.normal(0, 1, N)
        add(f"merge{m}", row, "merge", (pool[a], pool[b]), lineage_of[pool[a]])
    for c in range(n_checkpoint_runs):
        name = f"run{c}"
        final = fresh()
        steps = [int(1000 * (s + 1)) for s in range(checkpoints_per_run)]
        total = 1000 * (checkpoints_per_run + 1)
        prev = None
        for s in steps:
            t = s / total
            row = t * final + (1 - t) * (difficulty + scale * untrained - 50) \
                + scale * 0.3 * (1 - t) * rng.normal(0, 1, N)
            add(f"{name}@step{s}", row, "checkpoint", (prev,) if prev else (), name, trajectory=name, step=s)
            prev = f"{name}@step{s}"
        add(name, final, "base", (prev,), name, trajectory=name, step=total)
    for i in range(n_independent):
        add(f"indep{i}", fresh(), "independent", lineage=f"indep{i}")
    fts = [n for n, m in zip(names, meta) if m["kind"] == "finetune"]
    for m in range(n_sibling_merges):
        while True:
            a, b = rng.choice(len(fts), 2, replace=False)
            if lineage_of[fts[a]] == lineage_of[fts[b]]:
                break
        # Little variation of its own: measured on real weight averages of two tiny fine-tunes, the merge's residual
        # correlations with its parents are those of a weighted mean of the two, nothing added.
        lam = rng.uniform(0.35, 0.65)
        row = lam * rows[names.index(fts[a])] + (1 - lam) * rows[names.index(fts[b])] \
            + scale * 0.25 * merge_noise * rng.normal(0, 1, N)
        add(f"smerge{m}", row, "merge", (fts[a], fts[b]), lineage_of[fts[a]])
    L = np.minimum(np.array(rows), -0.01)
    truth = pd.DataFrame(meta).set_index("model")
    return names, L, truth


def store_metadata(truth: pd.DataFrame, declare: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """The metadata a store would hold for ``truth``: ``trajectory``/``step`` of checkpoint runs, and the true
    first parent as ``base_model`` for a fraction ``declare`` of the derived models (0: none declared)."""
    rng = np.random.default_rng(seed)
    md = truth[["trajectory", "step"]].copy()
    md["trajectory"] = md["trajectory"].replace("", np.nan)
    md["base_model"] = ""
    for model, parents in truth["parents"].items():
        if parents and truth.loc[model, "kind"] != "checkpoint" and rng.random() < declare:
            md.loc[model, "base_model"] = parents[0]
    return md


def unrelated_pairs(truth: pd.DataFrame) -> np.ndarray:
    """Boolean K×K: True where two models share no ancestry (different lineages, no merge between them)."""
    names = list(truth.index)
    K = len(names)
    idx = {n: i for i, n in enumerate(names)}
    # Ancestors of each model (itself included), through every parent.
    anc = {}

    def ancestors(n):
        if n not in anc:
            anc[n] = {n}
            for p in truth.loc[n, "parents"]:
                anc[n] |= ancestors(p)
        return anc[n]

    A = np.zeros((K, K), dtype=bool)
    sets = [ancestors(n) for n in names]
    roots = [frozenset(a for a in s if not truth.loc[a, "parents"]) for s in sets]
    for i in range(K):
        for j in range(K):
            A[i, j] = not (roots[i] & roots[j])
    np.fill_diagonal(A, False)
    _ = idx
    return A

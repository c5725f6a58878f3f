"""Synthetic log-likelihood matrices shared by the tests (imported as a plain module)."""

import numpy as np


def family_L(N, K_per=4, n_fam=3, seed=0, spread_shape=1.0, spread_scale=10.0, noise=0.3):
    """Families of models sharing a log-likelihood profile; texts differ a lot in how much they separate models.

    Returns ``(names, L, families)`` with ``L`` of shape (n_fam·K_per)×N.
    """
    rng = np.random.default_rng(seed)
    base = -rng.gamma(3.0, 100.0, size=N)
    spread = rng.gamma(spread_shape, spread_scale, size=N)
    names, rows, fams = [], [], []
    for f in range(n_fam):
        fam = base + rng.normal(0, 1, size=N) * spread
        for m in range(K_per):
            rows.append(fam + rng.normal(0, noise, size=N) * spread - rng.uniform(0, 5))
            names.append(f"fam{f}/m{m}")
            fams.append(f"fam{f}")
    return names, np.minimum(np.array(rows), -0.01), fams


def lineage_L(N=400, n_lineages=6, n_finetunes=2, n_checkpoints=1, n_scratch=2, n_domains=4, seed=0):
    """A demo-like ecosystem: lineages (a base, its fine-tunes and checkpoints) plus models trained from scratch.

    Texts belong to ``n_domains`` domains and differ in difficulty. A model's
    log-likelihood is the text's difficulty plus its own skill profile
    (a point in a low-dimensional latent space, shared texts' loadings) plus
    per-text noise. A fine-tune is its base plus a gain on one domain's texts
    and a small change; a checkpoint is its base made uniformly worse and
    noisier (partly trained). Scratch models have their own profile.

    Returns ``(names, L, metadata)``: ``metadata`` is indexed by model with
    columns ``model_type`` (base / finetune / checkpoint / scratch), ``family``,
    ``base_model`` (the declared parent, empty for bases and scratch models)
    and ``domain``.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    rank = 8
    domain = rng.integers(0, n_domains, size=N)
    difficulty = -rng.gamma(3.0, 100.0, size=N)
    loadings = rng.normal(0, 1, size=(rank, N)) * rng.gamma(2.0, 4.0, size=N)

    def profile(skill, scale=1.0):
        return difficulty + skill @ loadings + rng.normal(0, 2.0 * scale, size=N)

    names, rows, meta = [], [], []

    def add(name, row, model_type, family, base_model="", dom="mix"):
        names.append(name)
        rows.append(row)
        meta.append(dict(model=name, model_type=model_type, family=family, base_model=base_model, domain=dom))

    for f in range(n_lineages):
        base = f"lin{f}"
        skill = rng.normal(0, 1, size=rank)
        add(base, profile(skill), "base", base)
        for j in range(n_finetunes):
            d = (f + j) % n_domains
            gain = np.where(domain == d, rng.gamma(2.0, 6.0, size=N), 0.0)
            add(f"{base}-ft-{d}", profile(skill + rng.normal(0, 0.15, size=rank)) + gain, "finetune", base, base, f"d{d}")
        for c in range(n_checkpoints):
            t = (c + 1) / (n_checkpoints + 1)
            add(f"{base}-step{c + 1}", profile(skill * (0.5 + 0.5 * t), scale=2.0) - 20 * (1 - t), "checkpoint", base, base)
    for s in range(n_scratch):
        d = s % n_domains
        add(f"scratch-{s}", profile(rng.normal(0, 1, size=rank)) - 15, "scratch", f"scratch-{s}", "", f"d{d}")
    metadata = pd.DataFrame(meta).set_index("model")
    return names, np.minimum(np.array(rows), -0.01), metadata


def ecosystem_L(N, n_bases=8, ft_per_base=3, n_merges=4, n_unrelated=3, rank=6, seed=0,
                base_noise=0.6, ft_shift=0.15, ft_noise=0.12, merge_noise=0.1):
    """A model ecosystem with known structure: bases, their fine-tunes, merges of two bases, unrelated models.

    Texts differ in difficulty (a common offset every row shares), in how much
    they separate models (``spread``) and in which latent "domains" they load
    on (``rank`` directions). A base model is a point in domain space plus its
    own per-text noise; a fine-tune is its base plus a small domain shift and
    a little per-text noise; a merge is a convex combination of two bases plus
    a little noise; an unrelated model is a base with no relatives.

    Returns ``(names, L, kinds, parents)``: ``kinds[i]`` in base | finetune |
    merge | unrelated and ``parents[i]`` the names of the model(s) it derives
    from (empty for bases and unrelated models).
    """
    rng = np.random.default_rng(seed)
    difficulty = -rng.gamma(3.0, 100.0, size=N)
    spread = rng.gamma(2.0, 5.0, size=N)
    F = rng.normal(0, 1, size=(rank, N)) * spread

    def fresh():
        z = rng.normal(0, 1, size=rank)
        return difficulty + z @ F + base_noise * rng.normal(0, 1, size=N) * spread - rng.uniform(0, 20)

    names, rows, kinds, parents = [], [], [], []
    bases = []
    for b in range(n_bases):
        row = fresh()
        bases.append(row)
        names.append(f"base{b}"), rows.append(row), kinds.append("base"), parents.append(())
        for t in range(ft_per_base):
            shift = ft_shift * rng.normal(0, 1, size=rank) @ F
            ft = row + shift + ft_noise * rng.normal(0, 1, size=N) * spread - rng.uniform(0, 5)
            names.append(f"base{b}/ft{t}"), rows.append(ft), kinds.append("finetune"), parents.append((f"base{b}",))
    for m in range(n_merges):
        i, j = rng.choice(n_bases, size=2, replace=False)
        lam = rng.uniform(0.3, 0.7)
        row = lam * bases[i] + (1 - lam) * bases[j] + merge_noise * rng.normal(0, 1, size=N) * spread
        names.append(f"merge{m}(base{i},base{j})"), rows.append(row), kinds.append("merge")
        parents.append((f"base{i}", f"base{j}"))
    for u in range(n_unrelated):
        names.append(f"unrelated{u}"), rows.append(fresh()), kinds.append("unrelated"), parents.append(())
    return names, np.minimum(np.array(rows), -0.01), kinds, parents

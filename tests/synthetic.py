"""Synthetic log-likelihood matrices, the one source of them for the tests and the benchmarks.

:func:`lowrank_L` is the generator: text difficulty, model families in a
low-rank latent space, texts that separate models by log-normal amounts, and
per-text noise. The ecosystems below add known structure on top (families,
lineages of bases, fine-tunes and checkpoints, merges, benchmark scores that
are a linear function of the map) for the tests that check a map recovers it.
Imported as a plain module (``pythonpath = ["tests"]``; the benchmarks add
``tests/`` to ``sys.path``).
"""

import numpy as np
import pandas as pd


def lowrank_L(K, N, *, rank=8, n_families=40, family_spread=2.0, member_spread=0.5, noise=2.0, text_scale=0.5,
              seed=0, return_latent=False):
    """A K×N log-likelihood-like matrix (negative): K models in ``n_families`` families of a rank-``rank`` space.

    ``L = difficulty_t + offset_i + s_t·(u_iᵀ v_t + noise·ε_it)`` with text difficulty ``-Gamma(4, 80)``,
    a model offset ``N(0, 20²)``, text scales ``s_t ~ LogNormal(0, text_scale)`` (some texts separate models
    far more than others) and each model's ``u_i`` its family's centre plus ``member_spread`` noise.
    ``return_latent``: also return the K×rank ``u`` (to build scores that depend on the map).
    """
    rng = np.random.default_rng(seed)
    families = rng.normal(size=(n_families, rank)) * family_spread
    U = families[rng.integers(0, n_families, K)] + member_spread * rng.normal(size=(K, rank))
    scale = rng.lognormal(0.0, text_scale, N)
    difficulty = -rng.gamma(4.0, 80.0, N)
    L = difficulty + rng.normal(0, 20, (K, 1)) + scale * (U @ rng.normal(size=(rank, N)) + noise * rng.normal(size=(K, N)))
    L = np.minimum(L, -0.01)
    return (L, U) if return_latent else L


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


def ecosystem(K=120, N=400, n_families=24, n_bench=3, noise=2.0, seed=0):
    """Models in families; L has low-rank structure; each benchmark is a linear function of Q plus noise.

    Returns names, L, Q, families, scores (DataFrame, in [0, 100]) and the noiseless part of the scores.
    """
    rng = np.random.default_rng(seed)
    fam = rng.integers(0, n_families, size=K)
    fam_latent = rng.normal(size=(n_families, 4))
    latent = fam_latent[fam] + 0.5 * rng.normal(size=(K, 4))
    L = -rng.gamma(3.0, 100.0, size=N)[None, :] + latent @ rng.normal(size=(4, N)) * 15 + rng.normal(size=(K, N)) * 3
    L = np.minimum(L, -0.01)
    from lmmap.maths import geometry

    Q, _ = geometry.map_coordinates(L, clip_percentile=None)
    # A linear function of the coordinates: project Q on directions in its dominant row space.
    U, s, Vt = np.linalg.svd(Q, full_matrices=False)
    signal = Q @ (Vt[:4].T @ rng.normal(size=(4, n_bench)))
    signal = 50 + 12 * (signal - signal.mean(0)) / signal.std(0)
    scores = np.clip(signal + noise * rng.normal(size=signal.shape), 0, 100)
    names = [f"fam{f}/model-{i}" for i, f in enumerate(fam)]
    table = pd.DataFrame(scores, index=pd.Index(names, name="model"), columns=[f"bench{j}" for j in range(n_bench)])
    return names, L, Q, [f"fam{f}" for f in fam], table, signal


def make_store(tmp_path, names, L, metadata=None):
    """A store at ``tmp_path/store`` with the models ``names`` (rows of L) and optional metadata."""
    from lmmap.data.store import Store
    from lmmap.data.texts import TextSet

    texts = TextSet.from_texts([f"text number {i}" for i in range(L.shape[1])])
    store = Store.create(tmp_path / "store", texts)
    store.write_models([{"name": n, "loglik": L[i]} for i, n in enumerate(names)])
    if metadata is not None:
        store.set_metadata(metadata)
    return store


class LookupScorer:
    """Stands in for :func:`lmmap.scoring.score_models`: known rows, stored as scoring would store them."""

    def __init__(self, rows: dict):
        self.rows, self.calls = rows, 0

    def __call__(self, store, models, *, names=None, text_pos=None, convention="reference", **kw):
        from lmmap.scoring import ScoreStatus

        self.calls += 1
        out = {}
        for src, name in zip(models, names or models):
            have = store.vectors(name)["text_pos"].to_numpy() if store.has_model(name) else np.zeros(0, np.int64)
            pos = np.union1d(have, np.asarray(text_pos))
            store.write_model(name, self.rows[src][pos], text_pos=pos, record={"convention": convention},
                              replace=store.has_model(name))
            out[name] = ScoreStatus(name, "scored", n_scored=len(pos) - len(have))  # newly scored, as score_models
        return out

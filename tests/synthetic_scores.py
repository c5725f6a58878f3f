"""Benchmark scores that are a known linear function of the map's coordinates, and a store holding their L.

(For tests/synthetic.py: the lead merges this generator there.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lmmap.maths import geometry


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

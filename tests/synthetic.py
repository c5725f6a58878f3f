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

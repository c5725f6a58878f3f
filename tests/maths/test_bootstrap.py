"""Bootstrap standard errors of g̃ against their analytic value."""

import numpy as np

from lmmap.maths.bootstrap import bootstrap_sq_distance_se


def test_full_map_se_matches_multinomial_variance():
    # With c* ~ Multinomial(N, 1/N), Var(Σ_s c*_s δ_s) = N · var_s(δ_s), δ_s = (q_i(x_s) − q_j(x_s))².
    rng = np.random.default_rng(0)
    Q = rng.standard_t(4, size=(4, 300))
    se = bootstrap_sq_distance_se(Q, R=3000, random_state=1)
    delta = (Q[:, None, :] - Q[None, :, :]) ** 2
    analytic = np.sqrt(Q.shape[1] * delta.var(axis=2))
    off = ~np.eye(4, dtype=bool)
    np.testing.assert_allclose(se[off], analytic[off], rtol=0.06)  # MC error of an SD with R=3000: ~1.3%
    assert np.all(np.diag(se) == 0)


def test_weighted_se_matches_resampling_variance():
    # Subset map: n draws with counts c and weights w = c/(nπ); resampling the draws gives
    # Var = n · var over draws of (δ/(nπ)) — checked against that closed form.
    rng = np.random.default_rng(3)
    Q = rng.normal(size=(3, 50))
    pi = rng.uniform(0.5, 1.5, size=50)
    pi /= pi.sum()
    n = 400
    c = rng.multinomial(n, pi)
    keep = c > 0
    Qd, cd, pid = Q[:, keep], c[keep], pi[keep]
    w = cd / (n * pid)
    se = bootstrap_sq_distance_se(Qd, w, cd, R=4000, random_state=2)
    delta = (Qd[0] - Qd[1]) ** 2 / (n * pid)  # one draw's contribution
    mean = (cd * delta).sum() / n
    analytic = np.sqrt(n * ((cd * (delta - mean) ** 2).sum() / n))
    assert abs(se[0, 1] / analytic - 1) < 0.06


def test_fewer_than_two_replicates_is_a_one_line_input_error():
    import pytest

    from lmmap.exceptions import InputError

    Q = np.random.default_rng(0).normal(size=(3, 20))
    for R in (1, 0, -5, True, 2.5):
        with pytest.raises(InputError, match="R must be an integer from 2 to"):
            bootstrap_sq_distance_se(Q, R=R)


def test_map_se_with_one_replicate_says_so(tmp_path):
    """`lmmap map --se --R 1` printed a bare ValueError; now one line naming R."""
    import subprocess
    import sys

    from lmmap.data.store import Store
    from lmmap.data.texts import TextSet

    rng = np.random.default_rng(1)
    store = Store.create(tmp_path / "store", TextSet.from_texts([f"text {i}" for i in range(30)]))
    store.write_models([{"name": f"m{i}", "loglik": -rng.gamma(3, 10, size=30)} for i in range(4)])
    r = subprocess.run([sys.executable, "-m", "lmmap", "map", "--store", str(tmp_path / "store"), "-o", str(tmp_path / "m"),
                        "--se", "--R", "1", "--embedding", "pca"], capture_output=True, text=True, timeout=120)
    import re

    assert r.returncode == 1 and re.search(r"--R must be an integer from 2 to", r.stderr), r.stderr
    assert "Traceback" not in r.stderr and "ValueError" not in r.stderr

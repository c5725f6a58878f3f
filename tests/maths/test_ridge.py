"""Ridge maths (SPEC §7): α grids, the eigen path, folds identical to scikit-learn's, grouped CV, noise ceiling."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, GroupKFold, KFold
from sklearn.preprocessing import KernelCenterer
from synthetic import ecosystem

from lmmap.exceptions import InputError, LmmapError
from lmmap.maths import ridge as P


# ----------------------------------------------------------------------------- numeric core


def test_alpha_grids_follow_spec_and_differ():
    assert np.allclose(P.alpha_grid("score"), [10.0**k for k in range(1, 10)])
    assert np.allclose(P.alpha_grid("loglik"), [10.0**k for k in range(-4, 5)])
    assert not np.array_equal(P.alpha_grid("score"), P.alpha_grid("loglik"))
    with pytest.raises(LmmapError, match="unknown target kind"):
        P.alpha_grid("accuracy")


def test_ridge_path_equals_sklearn_ridge():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 200)) * 3 + 7  # an offset: the intercept must be handled
    Y = X[:, :3] @ rng.normal(size=(3, 2)) + rng.normal(size=(50, 2))
    train, test = np.arange(40), np.arange(40, 50)
    alphas = [1e-3, 1.0, 1e2, 1e5]
    K_tr, K_te = P.centered_kernels(P.gram_matrix(X), train, test)
    pred = P.RidgePath.fit(K_tr, Y[train]).predict(K_te, alphas)
    for a, alpha in enumerate(alphas):
        ref = Ridge(alpha=alpha).fit(X[train], Y[train]).predict(X[test])
        np.testing.assert_allclose(pred[a], ref, rtol=1e-7, atol=1e-7)


def sklearn_reference(X, y, groups, grid, seed, n_folds=5, n_inner=5, clip=None):
    """The protocol written directly with scikit-learn: GroupKFold(shuffle) outside, GridSearchCV(Ridge) inside."""
    oof = np.empty(len(y))
    outer = GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for train, test in outer.split(X, y, groups):
        inner = KFold(n_splits=n_inner, shuffle=True, random_state=seed)
        search = GridSearchCV(Ridge(), {"alpha": list(grid)}, cv=inner, scoring="neg_mean_squared_error")
        search.fit(X[train], y[train])
        pred = search.predict(X[test])
        oof[test] = pred if clip is None else np.clip(pred, *clip)
    return oof


def test_cross_validation_equals_plain_scikit_learn():
    names, L, Q, fam, table, _ = ecosystem(K=60, N=150, n_families=15, n_bench=1, noise=5.0, seed=2)
    y_score = table["bench0"].to_numpy()
    y_ll = L.mean(axis=1)
    Y = np.column_stack([y_score, y_ll])
    cv = P.cross_validate(Q, Y, fam, [P.SCORE_ALPHAS, P.LOGLIK_ALPHAS], [(0, 100), None], random_state=[0, 3])
    for s, seed in enumerate([0, 3]):
        ref_score = sklearn_reference(Q, y_score, fam, P.SCORE_ALPHAS, seed, clip=(0, 100))
        ref_ll = sklearn_reference(Q, y_ll, fam, P.LOGLIK_ALPHAS, seed)
        np.testing.assert_allclose(cv.oof[s, :, 0], ref_score, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(cv.oof[s, :, 1], ref_ll, rtol=1e-6, atol=1e-6)
    # the in-library scikit-learn path agrees too
    ref = P.cross_validate(Q, Y, fam, [P.SCORE_ALPHAS, P.LOGLIK_ALPHAS], [(0, 100), None], random_state=[0], solver="sklearn")
    np.testing.assert_allclose(cv.oof[0], ref.oof[0], rtol=1e-6, atol=1e-6)
    assert np.array_equal(cv.alphas[0], ref.alphas[0])


def test_no_group_on_both_sides_and_seeds_change_the_assignment():
    rng = np.random.default_rng(0)
    groups = rng.choice([f"type{i}" for i in range(23)], size=200)
    X = rng.normal(size=(200, 30))
    Y = X[:, :2] + rng.normal(size=(200, 2))
    cv = P.cross_validate(X, Y, groups, random_state=range(4))
    assignments = []
    for s in range(4):
        folds = cv.folds[s, :, 0]
        assert set(folds) == set(range(5))  # every model in exactly one test fold
        for f in range(5):
            assert not set(groups[folds == f]) & set(groups[folds != f])
        # every group sits in a single fold
        assert all(len(set(folds[groups == g])) == 1 for g in set(groups))
        assignments.append({g: folds[groups == g][0] for g in set(groups)})
    assert all(assignments[0] != a for a in assignments[1:])
    # a fixed seed reproduces
    again = P.cross_validate(X, Y, groups, random_state=[0])
    assert np.array_equal(again.folds[0], cv.folds[0]) and np.array_equal(again.oof[0], cv.oof[0])


def test_alpha_chosen_from_its_own_grid_and_scores_clipped():
    names, L, Q, fam, table, _ = ecosystem(K=80, N=200, n_families=20, n_bench=1, noise=1.0, seed=4)
    y = table["bench0"].to_numpy().copy()
    y[:10] = 100.0  # scores at the edge of the range: unclipped predictions would leave it
    # An exact linear function of the coordinates wants the least shrinkage, below the score grid.
    Vt = np.linalg.svd(Q, full_matrices=False)[2]
    y_ll = -300 + Q @ (Vt[0] - Vt[1])
    Y = np.column_stack([y, y_ll])
    cv = P.cross_validate(Q, Y, fam, [P.SCORE_ALPHAS, P.LOGLIK_ALPHAS], [(0, 100), None], random_state=[0, 1])
    assert set(np.unique(cv.alphas[:, :, 0])) <= set(P.SCORE_ALPHAS)
    assert set(np.unique(cv.alphas[:, :, 1])) <= set(P.LOGLIK_ALPHAS)
    assert np.nanmin(cv.alphas[:, :, 1]) < P.SCORE_ALPHAS.min()
    assert cv.oof[:, :, 0].min() >= 0 and cv.oof[:, :, 0].max() <= 100
    ll = cv.oof[:, :, 1]  # not clipped to [0, 100]
    assert (ll < 0).any() and (ll > 100).any()
    assert (cv.pearson()[:, 1] > 0.99).all()


@pytest.mark.parametrize("noise", [3.0, 8.0])
def test_r_approaches_the_noise_ceiling(noise):
    names, L, Q, fam, table, signal = ecosystem(K=300, N=400, n_families=60, n_bench=2, noise=noise, seed=5)
    Y = table.to_numpy()
    ceiling = np.array([np.corrcoef(signal[:, j], Y[:, j])[0, 1] for j in range(Y.shape[1])])
    cv = P.cross_validate(Q, Y, fam, [P.SCORE_ALPHAS] * 2, [(0, 100)] * 2, random_state=range(3))
    r = cv.pearson().mean(axis=0)
    assert np.all(r > ceiling - 0.02), (r, ceiling)
    assert np.all(r < ceiling + 0.02), (r, ceiling)


def test_missing_targets_use_their_own_rows():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(60, 20))
    Y = X[:, :2] @ np.array([[3.0, 0], [0, 3.0]]) + 0.1 * rng.normal(size=(60, 2))
    Y[:7, 1] = np.nan
    cv = P.cross_validate(X, Y, None, [P.LOGLIK_ALPHAS] * 2, random_state=[0])
    assert np.isnan(cv.oof[0, :7, 1]).all() and (cv.folds[0, :7, 1] == -1).all()
    assert np.isfinite(cv.oof[0, :, 0]).all()
    assert (cv.pearson() > 0.95).all()



# ----------------------------------------------------------------------------- the splitters are scikit-learn's


@pytest.mark.parametrize("n,k,seed", [(10, 5, 0), (37, 5, 3), (200, 5, 11), (6, 3, 7)])
def test_inner_splits_equal_shuffled_kfold(n, k, seed):
    ours = P.inner_splits(n, k, seed)
    ref = list(KFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(n)))
    assert len(ours) == len(ref)
    for (tr, va), (rtr, rva) in zip(ours, ref):
        assert np.array_equal(tr, rtr) and np.array_equal(va, rva)


@pytest.mark.parametrize("seed", [0, 1, 4, 123])
def test_outer_folds_equal_shuffled_group_kfold(seed):
    rng = np.random.default_rng(seed)
    groups = np.asarray([f"type{i}" for i in rng.integers(0, 17, size=90)], dtype=object)
    folds = P.outer_folds(groups, 5, seed)
    ref = np.full(groups.size, -1)
    for f, (_, test) in enumerate(GroupKFold(n_splits=5, shuffle=True, random_state=seed).split(np.zeros(90), groups=groups)):
        ref[test] = f
    assert np.array_equal(folds, ref)


def test_centered_kernels_equal_kernel_centerer():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(30, 12)) + 3
    G = P.gram_matrix(X)
    train, test = np.arange(0, 30, 2), np.arange(1, 30, 2)
    K_tr, K_te = P.centered_kernels(G, train, test)
    c = KernelCenterer().fit(G[np.ix_(train, train)])
    assert np.array_equal(K_tr, c.transform(G[np.ix_(train, train)]))
    assert np.array_equal(K_te, c.transform(G[np.ix_(test, train)]))


def test_ridge_maths_imports_numpy_and_scipy_only():
    code = ("import lmmap.maths.ridge, sys; "
            "print([m for m in ('pandas', 'pyarrow', 'torch', 'rich', 'matplotlib', 'sklearn') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

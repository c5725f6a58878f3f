"""Benchmark-score prediction (SPEC §7): grouped CV, α grids, noise ceiling, contamination, new models, bad input, CLI."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, GroupKFold, KFold
from typer.testing import CliRunner

from lmmap.maths import geometry as core
from lmmap.analyses import predict as P
from lmmap.cli import app
from lmmap.exceptions import InputError, LmmapError, LmmapWarning
from lmmap.data.store import Store
from lmmap.data.texts import TextSet

runner = CliRunner()


# ----------------------------------------------------------------------------- synthetic ecosystems


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
    Q, _ = core.map_coordinates(L, clip_percentile=None)
    # A linear function of the coordinates: project Q on directions in its dominant row space.
    U, s, Vt = np.linalg.svd(Q, full_matrices=False)
    signal = Q @ (Vt[:4].T @ rng.normal(size=(4, n_bench)))
    signal = 50 + 12 * (signal - signal.mean(0)) / signal.std(0)
    scores = np.clip(signal + noise * rng.normal(size=signal.shape), 0, 100)
    names = [f"fam{f}/model-{i}" for i, f in enumerate(fam)]
    table = pd.DataFrame(scores, index=pd.Index(names, name="model"), columns=[f"bench{j}" for j in range(n_bench)])
    return names, L, Q, [f"fam{f}" for f in fam], table, signal


def make_store(tmp_path, names, L, metadata=None) -> Store:
    texts = TextSet.from_texts([f"text number {i}" for i in range(L.shape[1])])
    store = Store.create(tmp_path / "store", texts)
    store.write_models([{"name": n, "loglik": L[i]} for i, n in enumerate(names)])
    if metadata is not None:
        store.set_metadata(metadata)
    return store


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
    cv = P.cross_validate(Q, Y, fam, [P.SCORE_ALPHAS, P.LOGLIK_ALPHAS], [(0, 100), None], seeds=[0, 3])
    for s, seed in enumerate([0, 3]):
        ref_score = sklearn_reference(Q, y_score, fam, P.SCORE_ALPHAS, seed, clip=(0, 100))
        ref_ll = sklearn_reference(Q, y_ll, fam, P.LOGLIK_ALPHAS, seed)
        np.testing.assert_allclose(cv.oof[s, :, 0], ref_score, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(cv.oof[s, :, 1], ref_ll, rtol=1e-6, atol=1e-6)
    # the in-library scikit-learn path agrees too
    ref = P.cross_validate(Q, Y, fam, [P.SCORE_ALPHAS, P.LOGLIK_ALPHAS], [(0, 100), None], seeds=[0], solver="sklearn")
    np.testing.assert_allclose(cv.oof[0], ref.oof[0], rtol=1e-6, atol=1e-6)
    assert np.array_equal(cv.alphas[0], ref.alphas[0])


def test_no_group_on_both_sides_and_seeds_change_the_assignment():
    rng = np.random.default_rng(0)
    groups = rng.choice([f"type{i}" for i in range(23)], size=200)
    X = rng.normal(size=(200, 30))
    Y = X[:, :2] + rng.normal(size=(200, 2))
    cv = P.cross_validate(X, Y, groups, seeds=range(4))
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
    again = P.cross_validate(X, Y, groups, seeds=[0])
    assert np.array_equal(again.folds[0], cv.folds[0]) and np.array_equal(again.oof[0], cv.oof[0])


def test_alpha_chosen_from_its_own_grid_and_scores_clipped():
    names, L, Q, fam, table, _ = ecosystem(K=80, N=200, n_families=20, n_bench=1, noise=1.0, seed=4)
    y = table["bench0"].to_numpy().copy()
    y[:10] = 100.0  # scores at the edge of the range: unclipped predictions would leave it
    # An exact linear function of the coordinates wants the least shrinkage, below the score grid.
    Vt = np.linalg.svd(Q, full_matrices=False)[2]
    y_ll = -300 + Q @ (Vt[0] - Vt[1])
    Y = np.column_stack([y, y_ll])
    cv = P.cross_validate(Q, Y, fam, [P.SCORE_ALPHAS, P.LOGLIK_ALPHAS], [(0, 100), None], seeds=[0, 1])
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
    cv = P.cross_validate(Q, Y, fam, [P.SCORE_ALPHAS] * 2, [(0, 100)] * 2, seeds=range(3))
    r = cv.pearson().mean(axis=0)
    assert np.all(r > ceiling - 0.02), (r, ceiling)
    assert np.all(r < ceiling + 0.02), (r, ceiling)


def test_missing_targets_use_their_own_rows():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(60, 20))
    Y = X[:, :2] @ np.array([[3.0, 0], [0, 3.0]]) + 0.1 * rng.normal(size=(60, 2))
    Y[:7, 1] = np.nan
    cv = P.cross_validate(X, Y, None, [P.LOGLIK_ALPHAS] * 2, seeds=[0])
    assert np.isnan(cv.oof[0, :7, 1]).all() and (cv.folds[0, :7, 1] == -1).all()
    assert np.isfinite(cv.oof[0, :, 0]).all()
    assert (cv.pearson() > 0.95).all()


# ----------------------------------------------------------------------------- model-level API


def test_predict_scores_report_contamination_and_new_models(tmp_path):
    names, L, Q, fam, table, signal = ecosystem(K=150, N=300, n_families=30, n_bench=3, noise=2.0, seed=7)
    cheater = names[5]
    table.loc[cheater, "bench1"] = min(100.0, table.loc[cheater, "bench1"] + 35)
    hidden = names[-12:]  # "just added": no scores yet
    truth = table.loc[hidden].copy()
    scored = table.drop(index=hidden)
    report = P.predict_scores(Q, names, scored, groups=fam, mean_loglik_values=L.mean(axis=1), seeds=3, group_column="family")

    s = report.summary.set_index("target")
    assert list(s.index) == ["bench0", "bench1", "bench2", "benchmark_mean", "mean_loglik"]
    assert (s.loc[["bench0", "bench2", "benchmark_mean"], "r_mean"] > 0.9).all()
    assert (s["r_sd"] >= 0).all() and (s.loc[:"benchmark_mean", "n_models"] == 138).all()
    assert s.loc["mean_loglik", "n_models"] == 150 and s.loc["mean_loglik", "kind"] == "loglik"

    flagged = report.flagged()
    hit = flagged[(flagged["target"] == "bench1") & (flagged["model"] == cheater)]
    assert len(hit) == 1 and hit["residual"].iloc[0] > 20
    assert (flagged["target"] != "mean_loglik").all()
    assert len(flagged) <= 0.06 * len(report.predictions)  # a 2-sd rule flags few honest models

    new = report.new
    assert set(new["model"]) == set(hidden)
    assert set(new["target"]) == {"bench0", "bench1", "bench2", "benchmark_mean"}
    for b in ("bench0", "bench2"):
        got = new[new["target"] == b].set_index("model").loc[hidden]
        err = got["predicted"] - truth[b]
        assert np.abs(err).mean() < 4 * 2.0  # within a few noise sds
        inside = (truth[b] >= got["lower"]) & (truth[b] <= got["upper"])
        assert inside.mean() >= 0.75 and (got["lower"] <= got["predicted"]).all() and (got["upper"] >= got["predicted"]).all()

    paths = report.write(tmp_path / "out")
    for name in ("correlations.csv", "predictions.csv", "contamination.csv", "new_predictions.csv", "predict.json"):
        assert paths[name].stat().st_size > 0
    for slug in ("bench0", "benchmark_mean", "mean_loglik"):
        assert paths[f"pred_{slug}.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "plotly" in paths[f"pred_{slug}.html"].read_text()
    contamination = pd.read_csv(paths["contamination.csv"])
    assert cheater in set(contamination["model"])


def test_missing_values_are_dropped_per_target_and_counted():
    names, L, Q, fam, table, _ = ecosystem(K=60, N=150, n_families=15, n_bench=2, seed=8)
    table.loc[names[:4], "bench0"] = np.nan
    table.loc[names[4:6], "bench1"] = np.nan
    report = P.predict_scores(Q, names, table, groups=fam, seeds=1)
    s = report.summary.set_index("target")
    assert s.loc["bench0", "n_missing"] == 4 and s.loc["bench0", "n_models"] == 56
    assert s.loc["bench1", "n_missing"] == 2 and s.loc["bench1", "n_models"] == 58
    assert s.loc["benchmark_mean", "n_missing"] == 6
    assert any("bench0: 4 missing" in n for n in report.notes)
    assert set(report.new.loc[report.new["target"] == "bench0", "model"]) == set(names[:4])


def test_models_not_in_the_map_are_listed_and_ignored():
    names, L, Q, fam, table, _ = ecosystem(K=60, N=150, n_families=15, n_bench=1, seed=9)
    extra = pd.DataFrame({"bench0": [50.0, 60.0]}, index=pd.Index(["ghost/a", "ghost/b"], name="model"))
    report = P.predict_scores(Q, names, pd.concat([table, extra]), groups=fam, seeds=1)
    assert report.targets.ignored == ["ghost/a", "ghost/b"]
    assert any("ghost/a" in n and "ignored" in n for n in report.notes)
    assert "ghost/a" not in set(report.predictions["model"])


def test_bad_scores_tables_are_refused_clearly():
    names, L, Q, fam, table, _ = ecosystem(K=40, N=100, n_families=10, n_bench=2, seed=10)
    bad = table.astype(object)
    bad.loc[names[3], "bench1"] = "n.a."
    with pytest.raises(LmmapError, match=r"'bench1' has a non-numeric entry 'n.a.' for model .*line 5"):
        P.predict_scores(Q, names, bad, groups=fam, seeds=1)
    frac = table / 100
    frac.loc[names[0], "bench0"] = 1.5
    P.predict_scores(Q, names, frac, groups=fam, seeds=1, score_range=None)  # fine without a range
    with pytest.raises(LmmapError, match=r"outside \[0, 100\].*rescale"):
        P.predict_scores(Q, names, table * 2, groups=fam, seeds=1)


def test_fewer_groups_than_folds_names_the_counts():
    names, L, Q, fam, table, _ = ecosystem(K=40, N=100, n_families=3, n_bench=1, seed=11)
    with pytest.raises(LmmapError, match=r"needs at least 5 groups; there are 3 among 40 models"):
        P.predict_scores(Q, names, table, groups=fam, seeds=1)
    report = P.predict_scores(Q, names, table, groups=fam, seeds=1, n_folds=3)
    assert report.summary["n_groups"].iloc[0] == 3


def test_group_column_lookup_and_absent_column():
    names, L, Q, fam, table, _ = ecosystem(K=40, N=100, n_families=10, n_bench=1, seed=12)
    meta = pd.DataFrame({"family": fam, "size": 1.0}, index=pd.Index(names, name="model"))
    groups, col = P.resolve_groups("family", names, None, meta)
    assert groups == fam and col == "family"
    assert P.resolve_groups("none", names, meta) == (None, None)
    # Only a column that would work is suggested: 'size' is a number, not a grouping.
    with pytest.raises(LmmapError, match=r"no column 'model_type'.*--group-by family \(10 groups\).*--group-by none") as info:
        P.resolve_groups("model_type", names, None, meta)
    assert "size" not in str(info.value)
    # a group column inside the scores table is used for grouping, not predicted
    with_type = table.assign(family=fam)
    store_free = P.predict_scores(Q, names, with_type, groups=fam, seeds=1, exclude=["family"])
    assert "family" not in set(store_free.summary["target"])


# ----------------------------------------------------------------------------- stores, subsets, CLI


def test_predict_store_with_a_subset_uses_weighted_features(tmp_path):
    from lmmap.analyses.select import select

    names, L, Q, fam, table, _ = ecosystem(K=60, N=300, n_families=15, n_bench=2, seed=13)
    store = make_store(tmp_path, names, L, pd.DataFrame({"model": names, "model_type": fam}))
    sub = select(store, "ls", n=200, seed=0)
    report = P.predict_store(store, table, subset=sub, seeds=1)
    assert report.settings["n_features"] == sub.d and report.settings["group_by"] == "model_type"
    ml = report.predictions[report.predictions["target"] == "mean_loglik"].set_index("model")["true"]
    expected = (L[:, sub.text_pos] @ sub.weights) / sub.weights.sum()
    np.testing.assert_allclose(ml.loc[names].to_numpy(), expected)
    full = P.predict_store(store, table, seeds=1)
    assert full.settings["n_features"] == 300
    assert (report.summary.set_index("target").loc[["bench0", "bench1"], "r_mean"] > 0.8).all()


def test_models_added_on_a_subset_get_predicted_scores(tmp_path):
    """`lmmap add` workflow: a new model scored on the subset's texts only, no benchmark results yet."""
    from lmmap.analyses.select import select

    names, L, Q, fam, table, _ = ecosystem(K=61, N=300, n_families=16, n_bench=2, seed=17)
    old, new_name = names[:-1], names[-1]
    store = make_store(tmp_path, old, L[:-1], pd.DataFrame({"model": old, "model_type": fam[:-1]}))
    sub = select(store, "ls", n=250, seed=1)
    store.write_model(new_name, L[-1, sub.text_pos], text_pos=sub.text_pos)
    store.set_metadata(pd.DataFrame({"model": [new_name], "model_type": [fam[-1]]}))
    scores = table.drop(index=new_name)

    full = P.predict_store(store, scores, seeds=1)
    assert new_name not in set(full.new["model"])
    assert any("--subset" in n and new_name in n for n in full.notes)

    report = P.predict_store(store, scores, subset=sub, seeds=1)
    got = report.new[report.new["model"] == new_name].set_index("target")
    assert list(got.index) == ["bench0", "bench1", "benchmark_mean"]
    for b in ("bench0", "bench1"):
        assert abs(got.loc[b, "predicted"] - table.loc[new_name, b]) < 15
        assert got.loc[b, "lower"] < got.loc[b, "predicted"] < got.loc[b, "upper"]


def test_scores_default_to_the_store_metadata(tmp_path):
    names, L, Q, fam, table, _ = ecosystem(K=40, N=100, n_families=10, n_bench=2, seed=14)
    meta = table.rename(columns=lambda c: f"score_v1_{c}").assign(model_type=fam).reset_index()
    store = make_store(tmp_path, names, L, meta)
    report = P.predict_store(store, seeds=1)
    assert list(report.summary["target"]) == ["score_v1_bench0", "score_v1_bench1", "benchmark_mean", "mean_loglik"]
    bare = make_store(tmp_path / "bare", names, L)
    with pytest.raises(LmmapError, match="give --scores SCORES.csv"):
        P.predict_store(bare, seeds=1)


def test_cli_predict_end_to_end(tmp_path):
    names, L, Q, fam, table, _ = ecosystem(K=50, N=120, n_families=10, n_bench=2, seed=15)
    store = make_store(tmp_path, names, L, pd.DataFrame({"model": names, "lineage": fam}))
    scores = tmp_path / "scores.csv"
    table.drop(index=names[:3]).to_csv(scores)
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["predict", "--store", str(store.path), "--scores", str(scores), "-o", str(out), "--group-by", "lineage", "--seeds", "2"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "bench0" in result.output and "3 model(s) without scores predicted" in result.output
    corr = pd.read_csv(out / "correlations.csv")
    assert list(corr["target"]) == ["bench0", "bench1", "benchmark_mean", "mean_loglik"]
    assert {"r_seed0", "r_seed1"} <= set(corr.columns)
    assert set(pd.read_csv(out / "new_predictions.csv")["model"]) == set(names[:3])
    assert (out / "pred_bench1.png").exists() and (out / "pred_mean_loglik.html").exists()


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "lmmap", *map(str, args)], capture_output=True, text=True, timeout=120)


def test_cli_predict_bad_input_messages(tmp_path):
    names, L, Q, fam, table, _ = ecosystem(K=30, N=80, n_families=4, n_bench=1, seed=16)
    store = make_store(tmp_path, names, L, pd.DataFrame({"model": names, "lineage": fam}))
    scores = tmp_path / "scores.csv"
    table.to_csv(scores)
    res = run_cli("predict", "--store", store.path, "--scores", scores, "-o", tmp_path / "o1")
    assert res.returncode == 1 and "no column 'model_type'" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("predict", "--store", store.path, "--scores", scores, "-o", tmp_path / "o2", "--group-by", "lineage")
    assert res.returncode == 1 and "--group-by lineage gives 4 group(s) among the 30 models, fewer than the 5 folds" in res.stderr
    # No other column has enough groups: no --group-by COLUMN is suggested, only what works.
    assert "--folds 4" in res.stderr and "--group-by none" in res.stderr and "groups)" not in res.stderr
    res = run_cli("predict", "--store", store.path, "--scores", scores, "-o", tmp_path / "o3", "--group-by", "lineage", "--folds", "4", "--seeds", "1", "--no-plots")
    assert res.returncode == 0, res.stderr


# ----------------------------------------------------------------------------- file names, notes, advice


def test_figure_names_are_unique_and_bounded():
    names = ["x y", "x_y", "x_y_1", "X_Y", "a" * 300, "é/../b", "", "."]
    slugs = P.figure_slugs(names)
    assert len({s.lower() for s in slugs}) == len(names)  # distinct even on a case-insensitive file system
    assert all(0 < len(s) <= 100 and not s.startswith(".") and "/" not in s for s in slugs)
    assert slugs[1] == "x_y" and slugs[2] == "x_y_1"  # clean names stay as they are
    assert P.figure_slugs(names) == slugs  # deterministic


def test_predict_writes_one_figure_per_target_even_when_names_collide(tmp_path):
    names, L, Q, fam, table, _ = ecosystem(K=30, N=60, n_families=6, n_bench=3, seed=21)
    table.columns = ["x y", "x_y", "x_y_1"]
    report = P.predict_scores(Q, names, table, groups=fam, seeds=1, include_mean=True)
    paths = report.write_figures(tmp_path)
    # 3 benchmarks + their mean: 4 targets, 8 files (the old names wrote 3 of 6 for the three benchmarks)
    assert len(paths) == 8 and len({p.name for p in paths.values()}) == 8
    assert all(p.exists() for p in paths.values())


def test_alpha_at_the_edge_of_its_grid_is_noted():
    rng = np.random.default_rng(5)
    names, L, Q, fam, table, _ = ecosystem(K=40, N=80, n_families=8, n_bench=1, seed=22)
    noise = pd.DataFrame({"noise": rng.uniform(40, 60, size=len(names))}, index=table.index)  # unrelated to the map
    with pytest.warns(LmmapWarning, match=r"noise: α = 1e\+09, the largest of its grid 1e\+01..1e\+09"):
        report = P.predict_scores(Q, names, noise, groups=fam, seeds=2, include_mean=False)
    assert any("largest of its grid" in n for n in report.notes)


def test_scores_for_models_not_in_the_store_are_named(tmp_path):
    names, L, Q, fam, table, _ = ecosystem(K=30, N=60, n_families=6, n_bench=1, seed=23)
    store = make_store(tmp_path, names, L, pd.DataFrame({"model": names, "model_type": fam}))
    typo = names[0].replace("model", "modle")
    extra = pd.DataFrame({"bench0": [50.0, 40.0]}, index=pd.Index([typo, "nobody/x"], name="model"))
    with pytest.warns(LmmapWarning, match=r"not in the store: .*did you mean '" + re.escape(names[0]) + "'"):
        report = P.predict_store(store, pd.concat([table, extra]), seeds=1)
    note = next(n for n in report.notes if "not in the store" in n)
    assert "2 model(s)" in note and "'nobody/x'" in note


def test_group_by_advice_names_only_columns_that_would_work(tmp_path):
    from synthetic import lineage_L

    names, L, meta = lineage_L(N=200, n_lineages=6, seed=3)
    store = make_store(tmp_path, names, L, meta.reset_index())
    scores = pd.DataFrame({"bench": np.linspace(20, 80, len(names))}, index=pd.Index(names, name="model"))
    # model_type has 4 values (base, finetune, checkpoint, scratch): too few for 5 folds.
    with pytest.raises(InputError, match=r"--group-by model_type gives 4 group\(s\).*--group-by family \(8 groups\)") as info:
        P.predict_store(store, scores, seeds=1)
    assert "--folds 4" in str(info.value) and "--group-by seed" not in str(info.value)
    report = P.predict_store(store, scores, group_by="family", seeds=1)
    assert report.summary["n_groups"].min() >= 5


# ----------------------------------------------------------------------------- the demo ecosystem (real models)


@pytest.fixture(scope="module")
def demo_dir(demo_full):
    return demo_full[1]


@pytest.mark.slow
@pytest.mark.xdist_group("demo")
def test_demo_ecosystem_accuracy_predicted_from_coordinates(demo_dir, capsys):
    """Real targets: the demo's scores.csv (next-token accuracy on held-out text of each domain), grouped by lineage."""
    store = Store(demo_dir / "store")
    meta = store.metadata()
    scores = P.read_scores(demo_dir / "scores.csv")
    # The default grouping (model_type: 4 types) cannot make 5 folds; the advice names the lineage column.
    with pytest.raises(InputError, match=r"--group-by family \(\d+ groups\)"):
        P.predict_store(store, scores, seeds=1)
    with pytest.warns(LmmapWarning, match="not in the store: 'base2-ft-docs'"):  # the held-out model has scores
        report = P.predict_store(store, scores, group_by="family", seeds=5)

    s = report.summary.set_index("target")
    with capsys.disabled():
        print("\nthe demo ecosystem, grouped by lineage (family):")
        print(scores.round(2).to_string())
        print(s[["n_models", "n_groups", "r_mean", "r_sd", "rmse", "alpha"]].round(3).to_string())
    assert list(s.index) == ["top5_code", "top5_docs", "top5_legal", "benchmark_mean", "mean_loglik"]
    assert (s["n_groups"] >= 5).all() and (s["n_models"] == len(meta)).all()
    fam = meta["family"].reindex(report.predictions["model"]).to_numpy()
    for seed in report.settings["seeds"]:
        folds = report.predictions[f"fold_seed{seed}"].to_numpy()
        for f in set(folds):
            assert not set(fam[folds == f]) & set(fam[folds != f])
    assert report.predictions.loc[report.predictions["kind"] == "score", "predicted"].between(0, 100).all()
    assert np.isfinite(s["r_mean"]).all()

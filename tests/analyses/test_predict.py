"""Benchmark-score prediction (SPEC §7) on a map and from a store: targets, contamination, new models, notes, advice."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from synthetic import ecosystem, make_store

from lmmap.analyses import predict as P
from lmmap.data.store import Store
from lmmap.exceptions import InputError, LmmapError, LmmapWarning
from lmmap.report import write


# ----------------------------------------------------------------------------- model-level API


def test_predict_scores_report_contamination_and_new_models(tmp_path):
    names, L, Q, fam, table, signal = ecosystem(K=150, N=300, n_families=30, n_bench=3, noise=2.0, seed=7)
    cheater = names[5]
    table.loc[cheater, "bench1"] = min(100.0, table.loc[cheater, "bench1"] + 35)
    hidden = names[-12:]  # "just added": no scores yet
    truth = table.loc[hidden].copy()
    scored = table.drop(index=hidden)
    report = P.predict_scores(Q, names, scored, groups=fam, mean_loglik_values=L.mean(axis=1), n_repeats=3, group_column="family")

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

    paths = write(report, tmp_path / "out")
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
    report = P.predict_scores(Q, names, table, groups=fam, n_repeats=1)
    s = report.summary.set_index("target")
    assert s.loc["bench0", "n_missing"] == 4 and s.loc["bench0", "n_models"] == 56
    assert s.loc["bench1", "n_missing"] == 2 and s.loc["bench1", "n_models"] == 58
    assert s.loc["benchmark_mean", "n_missing"] == 6
    assert any("bench0: 4 missing" in n for n in report.notes)
    assert set(report.new.loc[report.new["target"] == "bench0", "model"]) == set(names[:4])


def test_models_not_in_the_map_are_listed_and_ignored():
    names, L, Q, fam, table, _ = ecosystem(K=60, N=150, n_families=15, n_bench=1, seed=9)
    extra = pd.DataFrame({"bench0": [50.0, 60.0]}, index=pd.Index(["ghost/a", "ghost/b"], name="model"))
    report = P.predict_scores(Q, names, pd.concat([table, extra]), groups=fam, n_repeats=1)
    assert report.targets.ignored == ["ghost/a", "ghost/b"]
    assert any("ghost/a" in n and "ignored" in n for n in report.notes)
    assert "ghost/a" not in set(report.predictions["model"])


def test_bad_scores_tables_are_refused_clearly():
    names, L, Q, fam, table, _ = ecosystem(K=40, N=100, n_families=10, n_bench=2, seed=10)
    bad = table.astype(object)
    bad.loc[names[3], "bench1"] = "n.a."
    with pytest.raises(LmmapError, match=r"'bench1' has a non-numeric entry 'n.a.' for model .*line 5"):
        P.predict_scores(Q, names, bad, groups=fam, n_repeats=1)
    frac = table / 100
    frac.loc[names[0], "bench0"] = 1.5
    P.predict_scores(Q, names, frac, groups=fam, n_repeats=1, score_range=None)  # fine without a range
    with pytest.raises(LmmapError, match=r"outside \[0, 100\].*rescale"):
        P.predict_scores(Q, names, table * 2, groups=fam, n_repeats=1)


def test_fewer_groups_than_folds_names_the_counts():
    names, L, Q, fam, table, _ = ecosystem(K=40, N=100, n_families=3, n_bench=1, seed=11)
    with pytest.raises(LmmapError, match=r"needs at least 5 groups; there are 3 among 40 models"):
        P.predict_scores(Q, names, table, groups=fam, n_repeats=1)
    report = P.predict_scores(Q, names, table, groups=fam, n_repeats=1, n_folds=3)
    assert report.summary["n_groups"].iloc[0] == 3


def test_group_column_lookup_and_absent_column():
    names, L, Q, fam, table, _ = ecosystem(K=40, N=100, n_families=10, n_bench=1, seed=12)
    meta = pd.DataFrame({"family": fam, "size": 1.0}, index=pd.Index(names, name="model"))
    groups, col = P.resolve_groups("family", names, None, meta)
    assert groups == fam and col == "family"
    assert P.resolve_groups("none", names, meta) == (None, None)
    # Only a column that would work is suggested: 'size' is a number, not a grouping.
    with pytest.raises(LmmapError, match=r"no column 'model_type'.*group_by='family' \(10 groups\).*group_by='none'") as info:
        P.resolve_groups("model_type", names, None, meta)
    assert "size" not in str(info.value)
    # a group column inside the scores table is used for grouping, not predicted
    with_type = table.assign(family=fam)
    store_free = P.predict_scores(Q, names, with_type, groups=fam, n_repeats=1, exclude=["family"])
    assert "family" not in set(store_free.summary["target"])


# ----------------------------------------------------------------------------- stores, subsets, CLI


def test_predict_store_with_a_subset_uses_weighted_features(tmp_path):
    from lmmap.analyses.select import select

    names, L, Q, fam, table, _ = ecosystem(K=60, N=300, n_families=15, n_bench=2, seed=13)
    store = make_store(tmp_path, names, L, pd.DataFrame({"model": names, "model_type": fam}))
    sub = select(store, "ls", n=200, random_state=0)
    report = P.predict_store(store, table, subset=sub, n_repeats=1)
    assert report.settings["n_features"] == sub.d and report.settings["group_by"] == "model_type"
    ml = report.predictions[report.predictions["target"] == "mean_loglik"].set_index("model")["true"]
    expected = (L[:, sub.text_pos] @ sub.weights) / sub.weights.sum()
    np.testing.assert_allclose(ml.loc[names].to_numpy(), expected)
    full = P.predict_store(store, table, n_repeats=1)
    assert full.settings["n_features"] == 300
    assert (report.summary.set_index("target").loc[["bench0", "bench1"], "r_mean"] > 0.8).all()


def test_models_added_on_a_subset_get_predicted_scores(tmp_path):
    """`lmmap add` workflow: a new model scored on the subset's texts only, no benchmark results yet."""
    from lmmap.analyses.select import select

    names, L, Q, fam, table, _ = ecosystem(K=61, N=300, n_families=16, n_bench=2, seed=17)
    old, new_name = names[:-1], names[-1]
    store = make_store(tmp_path, old, L[:-1], pd.DataFrame({"model": old, "model_type": fam[:-1]}))
    sub = select(store, "ls", n=250, random_state=1)
    store.write_model(new_name, L[-1, sub.text_pos], text_pos=sub.text_pos)
    store.set_metadata(pd.DataFrame({"model": [new_name], "model_type": [fam[-1]]}))
    scores = table.drop(index=new_name)

    full = P.predict_store(store, scores, n_repeats=1)
    assert new_name not in set(full.new["model"])
    assert any("--subset" in n and new_name in n for n in full.notes)

    report = P.predict_store(store, scores, subset=sub, n_repeats=1)
    got = report.new[report.new["model"] == new_name].set_index("target")
    assert list(got.index) == ["bench0", "bench1", "benchmark_mean"]
    for b in ("bench0", "bench1"):
        assert abs(got.loc[b, "predicted"] - table.loc[new_name, b]) < 15
        assert got.loc[b, "lower"] < got.loc[b, "predicted"] < got.loc[b, "upper"]


def test_scores_default_to_the_store_metadata(tmp_path):
    names, L, Q, fam, table, _ = ecosystem(K=40, N=100, n_families=10, n_bench=2, seed=14)
    meta = table.rename(columns=lambda c: f"score_v1_{c}").assign(model_type=fam).reset_index()
    store = make_store(tmp_path, names, L, meta)
    report = P.predict_store(store, n_repeats=1)
    assert list(report.summary["target"]) == ["score_v1_bench0", "score_v1_bench1", "benchmark_mean", "mean_loglik"]
    bare = make_store(tmp_path / "bare", names, L)
    with pytest.raises(LmmapError, match="give scores=SCORES.csv"):
        P.predict_store(bare, n_repeats=1)


def test_alpha_at_the_edge_of_its_grid_is_noted():
    rng = np.random.default_rng(5)
    names, L, Q, fam, table, _ = ecosystem(K=40, N=80, n_families=8, n_bench=1, seed=22)
    noise = pd.DataFrame({"noise": rng.uniform(40, 60, size=len(names))}, index=table.index)  # unrelated to the map
    with pytest.warns(LmmapWarning, match=r"noise: α = 1e\+09, the largest of its grid 1e\+01..1e\+09"):
        report = P.predict_scores(Q, names, noise, groups=fam, n_repeats=2, include_mean=False)
    assert any("largest of its grid" in n for n in report.notes)


def test_scores_for_models_not_in_the_store_are_named(tmp_path):
    names, L, Q, fam, table, _ = ecosystem(K=30, N=60, n_families=6, n_bench=1, seed=23)
    store = make_store(tmp_path, names, L, pd.DataFrame({"model": names, "model_type": fam}))
    typo = names[0].replace("model", "modle")
    extra = pd.DataFrame({"bench0": [50.0, 40.0]}, index=pd.Index([typo, "nobody/x"], name="model"))
    with pytest.warns(LmmapWarning, match=r"not in the store: .*did you mean '" + re.escape(names[0]) + "'"):
        report = P.predict_store(store, pd.concat([table, extra]), n_repeats=1)
    note = next(n for n in report.notes if "not in the store" in n)
    assert "2 model(s)" in note and "'nobody/x'" in note


def test_group_by_advice_names_only_columns_that_would_work(tmp_path):
    from synthetic import lineage_L

    names, L, meta = lineage_L(N=200, n_lineages=6, seed=3)
    store = make_store(tmp_path, names, L, meta.reset_index())
    scores = pd.DataFrame({"bench": np.linspace(20, 80, len(names))}, index=pd.Index(names, name="model"))
    # model_type has 4 values (base, finetune, checkpoint, scratch): too few for 5 folds.
    with pytest.raises(InputError, match=r"group_by='model_type' gives 4 group\(s\).*group_by='family' \(8 groups\)") as info:
        P.predict_store(store, scores, n_repeats=1)
    assert "n_folds=4" in str(info.value) and "group_by='seed'" not in str(info.value)
    assert set(info.value.params) == {"group_by", "n_folds"}
    report = P.predict_store(store, scores, group_by="family", n_repeats=1)
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
    with pytest.raises(InputError, match=r"group_by='family' \(\d+ groups\)"):
        P.predict_store(store, scores, n_repeats=1)
    with pytest.warns(LmmapWarning, match="not in the store: 'base2-ft-docs'"):  # the held-out model has scores
        report = P.predict_store(store, scores, group_by="family", n_repeats=5)

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


# ----------------------------------------------------------------------------- one map in, the same draws


def test_predict_on_a_map_equals_predict_store_and_random_state_gives_the_old_seeds(tmp_path):
    from lmmap.map import ModelMap

    names, L, Q, fam, table, _ = ecosystem(K=40, N=100, n_families=10, n_bench=2, seed=25)
    store = make_store(tmp_path, names, L, pd.DataFrame({"model": names, "model_type": fam}))
    via_store = P.predict_store(store, table, n_repeats=3)
    mm = ModelMap.from_store(store)
    on_map = P.predict(mm, table, n_repeats=3)
    pd.testing.assert_frame_equal(on_map.summary, via_store.summary)
    # n_repeats=3 from random_state=0 are the seeds 0, 1, 2; a list of seeds is used as given.
    listed = P.predict(mm, table, random_state=[0, 1, 2])
    assert listed.settings["seeds"] == [0, 1, 2]
    np.testing.assert_array_equal(listed.cv.oof, on_map.cv.oof)
    shifted = P.predict(mm, table, n_repeats=2, random_state=1)
    assert shifted.settings["seeds"] == [1, 2]
    np.testing.assert_array_equal(shifted.cv.oof, on_map.cv.oof[1:])
    with pytest.raises(InputError) as info:
        P.predict(mm, table, n_repeats=0)
    assert info.value.params == ("n_repeats",)
    with pytest.raises(InputError, match="n_repeats = 2 but random_state lists 3 seeds"):
        P.predict(mm, table, n_repeats=2, random_state=[0, 1, 2])

"""The prediction report's files: tables, predict.json, one figure per target with safe, distinct names."""

from __future__ import annotations

import json

import pandas as pd
from synthetic import ecosystem

from lmmap.analyses import predict as P
from lmmap.report import write
from lmmap.report.predict import figure_slugs




def test_figure_names_are_unique_and_bounded():
    names = ["x y", "x_y", "x_y_1", "X_Y", "a" * 300, "é/../b", "", "."]
    slugs = figure_slugs(names)
    assert len({s.lower() for s in slugs}) == len(names)  # distinct even on a case-insensitive file system
    assert all(0 < len(s) <= 100 and not s.startswith(".") and "/" not in s for s in slugs)
    assert slugs[1] == "x_y" and slugs[2] == "x_y_1"  # clean names stay as they are
    assert figure_slugs(names) == slugs  # deterministic


def test_predict_writes_one_figure_per_target_even_when_names_collide(tmp_path):
    names, L, Q, fam, table, _ = ecosystem(K=30, N=60, n_families=6, n_bench=3, seed=21)
    table.columns = ["x y", "x_y", "x_y_1"]
    report = P.predict_scores(Q, names, table, groups=fam, n_repeats=1, include_mean=True)
    paths = {name: p for name, p in write(report, tmp_path).items() if name.startswith("pred_")}
    # 3 benchmarks + their mean: 4 targets, 8 files (the old names wrote 3 of 6 for the three benchmarks)
    assert len(paths) == 8 and len({p.name for p in paths.values()}) == 8
    assert all(p.exists() for p in paths.values())
    # predict.json says which file shows which target
    figures = json.loads((tmp_path / "predict.json").read_text())["figures"]
    assert sorted(figures.values()) == sorted(["x y", "x_y", "x_y_1", "benchmark_mean"])
    assert {f"{stem}.png" for stem in figures} | {f"{stem}.html" for stem in figures} == set(paths)




def test_report_writes_todays_files_and_no_figures_without_plots(tmp_path):
    names, L, Q, fam, table, _ = ecosystem(K=40, N=80, n_families=8, n_bench=2, seed=24)
    result = P.predict_scores(Q, names, table.drop(index=names[:2]), groups=fam, n_repeats=2, group_column="family")
    paths = write(result, tmp_path, plots=False)
    assert set(paths) == {"correlations.csv", "predictions.csv", "contamination.csv", "new_predictions.csv", "predict.json"}
    pd.testing.assert_frame_equal(pd.read_csv(paths["correlations.csv"]), result.summary, check_dtype=False)
    assert list(pd.read_csv(paths["predictions.csv"]).columns) == list(result.predictions.columns)
    assert set(pd.read_csv(paths["new_predictions.csv"])["model"]) == set(names[:2])
    info = json.loads(paths["predict.json"].read_text())
    assert info["seeds"] == [0, 1] and info["group_by"] == "family" and "provenance" in info and "figures" not in info

"""``lmmap predict`` on the command line: end to end, and bad input told with the command's flags."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
from synthetic import ecosystem, make_store
from typer.testing import CliRunner

from lmmap.cli import app

runner = CliRunner()


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

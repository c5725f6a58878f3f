"""Training trajectories (issue 15 §1): the analysis, its files, the map's path and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lmmap import report
from lmmap.analyses.map import build_map
from lmmap.analyses.trajectory import TrajectoryResult, trajectory
from lmmap.exceptions import InputError
from lmmap.map import ModelMap
from lmmap.report.map import map_edges


def run_map(N=300, seed=0):
    """A final model, three checkpoints converging to it (listed out of step order) and two unrelated models.

    Returns names, L and metadata; checkpoint k is the final model plus noise shrinking with its step.
    """
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(-80, 10, N)
    final = difficulty + rng.normal(0, 3, N)
    rows = {"run@300": final}
    for step, scale in ((100, 4.0), (10, 8.0), (50, 6.0)):  # not in step order: the analysis sorts
        rows[f"run@{step}"] = final + rng.normal(0, scale, N) - 0.02 * scale
    rows["other-a"] = difficulty + rng.normal(0, 5, N)
    rows["other-b"] = difficulty + rng.normal(0, 5, N)
    names = list(rows)
    L = np.stack([rows[n] for n in names])
    meta = pd.DataFrame({"trajectory": ["run", "run", "run", "run", "", ""],
                         "step": ["300", "100", "10", "50", "", ""],
                         "model_type": ["base", "checkpoint", "checkpoint", "checkpoint", "base", "base"]},
                        index=pd.Index(names, name="model"))
    return names, L, meta


def independent_kl(L):
    """KL = ‖q_i − q_j‖² / (2N) with Q the double-centred L (no clipping), written out here on purpose."""
    Q = L - L.mean(axis=1, keepdims=True) - L.mean(axis=0, keepdims=True) + L.mean()
    d2 = ((Q[:, None, :] - Q[None, :, :]) ** 2).sum(-1)
    return d2 / (2 * L.shape[1])


def test_kl_columns_follow_step_order_and_match_an_independent_computation():
    names, L, meta = run_map()
    mm = ModelMap(names, L, threshold=None, metadata=meta)
    res = trajectory(mm, "run")
    assert isinstance(res, TrajectoryResult) and res.unit == "nats-per-text"
    t = res.table
    assert list(t.columns) == ["model", "step", "kl_to_previous", "kl_to_final"]
    assert t["model"].tolist() == ["run@10", "run@50", "run@100", "run@300"] and t["step"].tolist() == [10, 50, 100, 300]
    assert res.final == "run@300"
    KL = independent_kl(L)
    i = [names.index(m) for m in t["model"]]
    assert np.isnan(t["kl_to_previous"].iloc[0])
    np.testing.assert_allclose(t["kl_to_previous"].to_numpy()[1:], [KL[i[k], i[k - 1]] for k in range(1, 4)], rtol=1e-9)
    np.testing.assert_allclose(t["kl_to_final"].to_numpy(), KL[i, i[-1]], rtol=1e-9, atol=1e-12)
    assert t["kl_to_final"].iloc[-1] == 0
    # The noise shrinks with the step, so the KL to the final model does too.
    assert np.all(np.diff(t["kl_to_final"].to_numpy()) < 0)


def test_bits_per_byte_scales_the_same_table():
    names, L, meta = run_map()
    mm = ModelMap(names, L, metadata=meta, text_bytes=np.full(L.shape[1], 200))
    nats, bits = trajectory(mm, "run"), trajectory(mm, "run", unit="bits-per-byte")
    np.testing.assert_allclose(bits.table["kl_to_final"], nats.table["kl_to_final"] / (200 * np.log(2)))
    assert bits.unit_label != nats.unit_label


def test_errors_are_one_line_and_name_the_problem():
    names, L, meta = run_map()
    mm = ModelMap(names, L, metadata=meta)
    with pytest.raises(InputError, match=r"no trajectory 'nope'.*known trajectories: 'run'") as exc:
        trajectory(mm, "nope")
    assert exc.value.params == ("name",) and "\n" not in str(exc.value)
    with pytest.raises(InputError, match="known trajectories: none"):
        trajectory(ModelMap(names, L, metadata=meta.drop(columns="trajectory")), "run")
    short = meta.copy()
    short.loc[["run@100", "run@10", "run@50"], "trajectory"] = ""
    with pytest.raises(InputError, match="has 1 checkpoint.*at least 2"):
        trajectory(ModelMap(names, L, metadata=short), "run")
    bad = meta.copy()
    bad.loc["run@50", "step"] = "fifty"
    with pytest.raises(InputError, match=r"model 'run@50'.*'fifty', not a number") as exc:
        trajectory(ModelMap(names, L, metadata=bad), "run")
    assert exc.value.params == ("name",)
    with pytest.raises(InputError):
        trajectory(mm, "run", unit="bits-per-token")


def test_writer_writes_table_figures_and_parameters(tmp_path):
    names, L, meta = run_map()
    mm = ModelMap(names, L, metadata=meta)
    res = trajectory(mm, "run")
    paths = report.write(res, tmp_path / "lin")
    assert {"trajectory.csv", "trajectory.png", "trajectory.html", "trajectory.json"} <= set(paths)
    back = pd.read_csv(paths["trajectory.csv"])
    pd.testing.assert_frame_equal(back, res.table, check_dtype=False)
    info = json.loads(paths["trajectory.json"].read_text())
    assert info["trajectory"] == "run" and info["final"] == "run@300" and info["log_axes"] is False
    assert "provenance" in info
    from plotly_json import plotly_figure

    data, layout = plotly_figure(paths["trajectory.html"])
    assert layout["xaxis"].get("type") == "linear" and len(data) == 2
    # hover names the checkpoint behind each point, in step order
    assert data[1]["customdata"] == res.table["model"].tolist()
    paths = report.write(res, tmp_path / "log", log_axes=True)
    _, layout = plotly_figure(paths["trajectory.html"])
    assert layout["xaxis"]["type"] == "log" and layout["yaxis"]["type"] == "log"
    assert json.loads(paths["trajectory.json"].read_text())["log_axes"] is True
    assert paths["trajectory.png"].stat().st_size > 1000


def test_html_escapes_user_strings(tmp_path):
    names, L, meta = run_map()
    names = [n.replace("run@", "<b>r</b>@") for n in names]
    meta.index = pd.Index(names, name="model")
    meta["trajectory"] = meta["trajectory"].replace("run", "<i>x</i>")
    res = trajectory(ModelMap(names, L, metadata=meta), "<i>x</i>")
    html = report.write(res, tmp_path)["trajectory.html"].read_text()
    assert "<b>r</b>" not in html and "<i>x</i>" not in html


def test_map_draws_each_trajectory_as_a_path_in_step_order(tmp_path):
    names, L, meta = run_map()
    mm = ModelMap(names, L, metadata=meta)
    path = [("run@10", "run@50"), ("run@50", "run@100"), ("run@100", "run@300")]
    for mode in ("nn", "auto"):
        sets, _ = map_edges(mm, mode)
        traj = [e for e in sets if e.kind == "trajectory"]
        assert len(traj) == 1 and list(traj[0].pairs) == path
        assert any(e.kind == "nn" for e in sets)  # in addition to the chosen mode
    assert map_edges(mm, "none") == ([], [])
    # No trajectory columns: the map's lines are as before.
    plain = ModelMap(names, L, metadata=meta.drop(columns=["trajectory", "step"]))
    assert [e.kind for e in map_edges(plain, "nn")[0]] == ["nn"]
    # A trajectory that cannot be ordered is left out with a note; the map is still drawn.
    bad = meta.copy()
    bad.loc["run@50", "step"] = "?"
    with pytest.warns(UserWarning, match="not drawn"):
        sets, _ = map_edges(ModelMap(names, L, metadata=bad), "nn")
    assert [e.kind for e in sets] == ["nn"]
    # The written map carries the path (its legend entry in the HTML).
    paths = report.write(build_map(mm, edges="nn"), tmp_path)
    assert "training trajectory" in paths["map.html"].read_text()


def test_cli_end_to_end(tmp_path):
    from typer.testing import CliRunner

    from lmmap.cli import app
    from synthetic import make_store

    names, L, meta = run_map()
    store = make_store(tmp_path, names, L, meta.reset_index())
    out = tmp_path / "traj"
    res = CliRunner().invoke(app, ["trajectory", "run", "--store", str(store.path), "-o", str(out), "--log",
                                   "--unit", "bits-per-byte"])
    assert res.exit_code == 0, res.output
    t = pd.read_csv(out / "trajectory.csv")
    assert t["model"].tolist() == ["run@10", "run@50", "run@100", "run@300"]
    expected = trajectory(ModelMap.from_store(store), "run", unit="bits-per-byte").table
    np.testing.assert_allclose(t["kl_to_final"], expected["kl_to_final"])
    assert json.loads((out / "trajectory.json").read_text())["log_axes"] is True
    assert (out / "trajectory.png").exists() and (out / "trajectory.html").exists()
    res = CliRunner().invoke(app, ["trajectory", "nope", "--store", str(store.path), "-o", str(tmp_path / "no")])
    assert res.exit_code != 0 and not (tmp_path / "no").exists()


def test_cli_error_is_one_line(tmp_path, capsys):
    from lmmap.cli import main
    from synthetic import make_store

    names, L, meta = run_map()
    store = make_store(tmp_path, names, L, meta.reset_index())
    with pytest.raises(SystemExit) as exc:
        main(["trajectory", "nope", "--store", str(store.path), "-o", str(tmp_path / "no")])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "no trajectory 'nope'" in err and "known trajectories: 'run'" in err


def test_demo_table_declares_the_base_trajectory():
    from lmmap.demo import demo_plan, model_table

    t = model_table(demo_plan()).set_index("model")
    base = t[t["trajectory"] == "base"]
    assert base.index.tolist() == ["base-step10", "base-step30", "base-step60", "base"]
    assert base["step"].tolist() == [10, 30, 60, 100]
    assert t.loc["scratch-code", "trajectory"] == "" and pd.isna(t.loc["scratch-code", "step"])

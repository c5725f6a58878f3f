"""The command line end to end: texts build → init → import → models → export → map → neighbors."""

import json
import pickle
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lmmap.cli import app
from lmmap.store import Store
from lmmap.texts import TextSet

STDLIB = Path(sysconfig.get_paths()["stdlib"])
runner = CliRunner()


def run_ok(*args):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def run_cli(*args, env_store=None):
    """The installed entry point in a fresh process (real argument parsing, real error handling)."""
    return subprocess.run([sys.executable, "-m", "lmmap", *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.fixture
def texts_file(tmp_path):
    out = tmp_path / "texts.jsonl"
    run_ok("texts", "build", STDLIB / "email", "-o", out, "--chunk-bytes", "512", "--min-bytes", "200", "--n", "40", "--seed", "1")
    return out


def family_vectors(N, K_per=3, seed=0):
    rng = np.random.default_rng(seed)
    base = -rng.gamma(3.0, 100.0, size=N)
    vecs = {}
    for f in range(3):
        fam = base + rng.normal(0, 30, size=N)
        for m in range(K_per):
            vecs[f"fam{f}/m{m}"] = np.minimum(fam + rng.normal(0, 3, size=N), -0.01)
    return vecs


def test_full_workflow(tmp_path, texts_file, monkeypatch):
    store = tmp_path / "store"
    monkeypatch.setenv("LMMAP_STORE", str(store))
    run_ok("init", "--texts", texts_file)
    N = len(TextSet.load(texts_file))
    vecs = family_vectors(N)
    # the authors' released format: a pickled dict {model: vector}
    pkl = tmp_path / "raw_log-likelihood.pkl"
    pkl.write_bytes(pickle.dumps(vecs))
    meta = tmp_path / "models.csv"
    pd.DataFrame({"model": list(vecs), "model_type": [n.split("/")[0] for n in vecs]}).to_csv(meta, index=False)

    refused = run_cli("import", "--vectors", pkl, "--store", store)
    assert refused.returncode != 0 and "--allow-pickle" in refused.stderr and "Traceback" not in refused.stderr
    run_ok("import", "--vectors", pkl, "--allow-pickle", "--metadata", meta)
    assert Store(store).model_names() == list(vecs)

    out = run_ok("models")
    assert "fam2/m1" in out and "fam2" in out

    exported = tmp_path / "all.npz"
    run_ok("export", "-o", exported)
    data = np.load(exported, allow_pickle=False)
    np.testing.assert_array_equal(data["L"], np.stack(list(vecs.values())))

    mapdir = tmp_path / "map"
    run_ok("map", "-o", mapdir, "--embedding", "pca", "-k", "3")
    for f in ("kl.csv", "coords.csv", "neighbors.csv", "map.png", "map.html", "map.json"):
        assert (mapdir / f).exists(), f
    assert json.loads((mapdir / "map.json").read_text())["clip_threshold"] < 0

    out = run_ok("neighbors", "fam1/m2", "-k", "2", "--se", "--R", "20")
    rows = [line for line in out.splitlines() if "fam" in line and "nearest" not in line]
    assert len(rows) == 2 and all("fam1/" in r for r in rows)


def test_errors_are_one_line_messages(tmp_path, texts_file):
    store = tmp_path / "s"
    r = run_cli("map", "-o", tmp_path / "m", "--store", store)
    assert r.returncode == 1 and "not an lmmap store" in r.stderr and "Traceback" not in r.stderr
    run_ok("init", "--texts", texts_file, "--store", store)
    N = len(TextSet.load(texts_file))
    np.savez(tmp_path / "two.npz", L=-np.ones((2, N)) - np.arange(2 * N).reshape(2, N), models=np.array(["a", "b"]))
    run_ok("import", "--vectors", tmp_path / "two.npz", "--store", store)
    r = run_cli("map", "-o", tmp_path / "m", "--store", store)
    assert r.returncode == 1 and "at least 3 models" in r.stderr
    r = run_cli("import", "--vectors", tmp_path / "two.npz", "--store", store)
    assert r.returncode == 1 and "already in the store" in r.stderr
    np.savez(tmp_path / "short.npz", L=-np.ones((1, N - 1)), models=np.array(["c"]))
    r = run_cli("import", "--vectors", tmp_path / "short.npz", "--store", store)
    assert r.returncode == 1 and "another text set" in r.stderr

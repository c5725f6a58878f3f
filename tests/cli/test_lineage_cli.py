"""``lmmap lineage`` and ``lmmap provenance`` on the command line; bad input in one line."""

from __future__ import annotations

import pandas as pd
from cli_main import run_main
from lineage_ecosystem import lineage_ecosystem
from synthetic import make_store


def _store(tmp_path, n_bases=6):
    names, L, truth = lineage_ecosystem(N=300, n_bases=n_bases, n_independent=3, n_merges=1, n_checkpoint_runs=1,
                                        seed=4)
    md = pd.DataFrame({"model": names, "base_model": ""})
    return make_store(tmp_path, names, L, md), names


def test_lineage_and_provenance_end_to_end(tmp_path):
    store, names = _store(tmp_path)
    out = tmp_path / "out"
    code, stdout, stderr = run_main("lineage", "--store", store.path, "-o", out, "--alpha", "0.05")
    assert code == 0, stderr
    assert "derived" in stdout and (out / "lineage.csv").exists() and (out / "pairs.parquet").exists()
    t = pd.read_csv(out / "lineage.csv", keep_default_na=False)
    assert list(t["model"]) == names
    code, stdout, stderr = run_main("provenance", "base0", "base0-q0", "--store", store.path)
    assert code == 0, stderr
    assert "related" in stdout and "texts carrying the evidence" in stdout


def test_bad_input_is_one_error_line(tmp_path):
    store, names = _store(tmp_path)
    code, out, err = run_main("lineage", "--store", store.path, "-o", tmp_path / "o", "--alpha", "1.5")
    assert code == 1 and "--alpha must be" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_main("provenance", "base0", "nosuchmodel", "--store", store.path)
    assert code == 1 and "nosuchmodel" in err and len(err.strip().splitlines()) == 1
    small = make_store(tmp_path / "small", names[:3], _L3(), None)
    code, out, err = run_main("lineage", "--store", small.path, "-o", tmp_path / "o2")
    assert code == 1 and len(err.strip().splitlines()) == 1


def _L3():
    import numpy as np

    return -np.random.default_rng(0).gamma(2.0, 10.0, (3, 300))

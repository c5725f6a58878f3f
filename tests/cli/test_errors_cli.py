"""`lmmap errors` and `lmmap stability` on small stores: files written, options parsed, one-line errors and notes."""

import numpy as np
import pandas as pd
from typer.testing import CliRunner
from synthetic import lowrank_L


def _store(tmp_path, K=20, N=600):
    from lmmap.data.formats import write_vectors
    from lmmap.data.transfer import import_vectors
    from lmmap.data.texts import TextSet

    rng = np.random.default_rng(0)
    s = rng.lognormal(0, 0.5, N)
    L = np.minimum(-300 + 50 * rng.standard_normal(N) + s * (5 * rng.standard_normal((K, 3)) @ rng.standard_normal((3, N)) + 2 * rng.standard_normal((K, N))), -0.01)
    names = [f"fam{i % 3}/m{i}" for i in range(K)]
    ts = TextSet.from_texts([f"text number {i}" for i in range(N)])
    ts.save(tmp_path / "texts.jsonl")
    write_vectors(tmp_path / "L.npz", names, L, text_set_id=ts.identity)
    import_vectors(tmp_path / "store", tmp_path / "L.npz", texts=tmp_path / "texts.jsonl")
    return tmp_path / "store"


def test_errors_command_writes_tables_and_figure(tmp_path):
    from lmmap.cli import app

    store = _store(tmp_path)
    out = tmp_path / "err"
    args = ["errors", "--store", store, "-o", out, "--R", "5", "--n-grid", "10:90:20,100:500:200", "--targets", "300", "--workers", "2"]
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for name in ("errors.csv", "kappa.csv", "table1.csv", "table1_analytic.csv", "figure2.png", "figure2.html", "errors.json"):
        assert (out / name).stat().st_size > 0
    curves = pd.read_csv(out / "errors.csv")
    assert set(curves["method"]) == {"uniform", "ls", "kl"}
    # grid + N + target: 10,30,50,70,90,100,300,500,600
    assert sorted(curves["n"].unique()) == [10, 30, 50, 70, 90, 100, 300, 500, 600]
    assert (curves["sigma_hat"] >= curves["tau"]).all()
    table = pd.read_csv(out / "table1.csv")
    assert set(table["d"]) == {300}  # --targets gives the targets (no fixed 500 added)

    bad = CliRunner().invoke(app, ["errors", "--store", str(store), "-o", str(out), "--n-grid", "10:x"])
    assert bad.exit_code != 0 and "start:stop:step" in str(bad.exception)


def test_errors_and_stability_commands_on_300_texts(tmp_path):
    """`lmmap errors` crashed (KeyError 'method') on the demo's 300 texts; `stability --n 2900` gave no subset silently."""
    import subprocess
    import sys

    store = _store(tmp_path, K=12, N=300)
    run = lambda *a: subprocess.run([sys.executable, "-m", "lmmap", *map(str, a)], capture_output=True, text=True, timeout=300)  # noqa: E731
    r = run("errors", "--store", store, "-o", tmp_path / "err", "--R", "5")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    t = pd.read_csv(tmp_path / "err" / "table1.csv")
    assert sorted(set(t["d"])) == [15, 75, 150, 230]
    r = run("errors", "--store", store, "-o", tmp_path / "err2", "--R", "5", "--mode", "analytic", "--targets", "100,5000")
    assert r.returncode == 0, r.stderr
    assert "note:" in r.stderr and "5,000 is not below N = 300" in r.stderr
    r = run("errors", "--store", store, "-o", tmp_path / "err3", "--R", "1")
    assert r.returncode == 1 and "--R must be an integer from 2 to 100,000" in r.stderr and "Traceback" not in r.stderr
    r = run("stability", "--store", store, "-o", tmp_path / "stab", "--n", "2900", "--R", "2", "--embedding", "pca")
    assert r.returncode == 0, r.stderr
    assert "2900 draws pick about" in r.stderr and "of the 300 texts per map" in r.stderr and "try --n 75" in r.stderr


def clustered_L(K=30, N=600, seed=5):
    return lowrank_L(K, N, rank=3, n_families=5, family_spread=3.0, member_spread=0.3, noise=1.0, seed=seed)


def test_stability_command_compares_two_settings(tmp_path):
    from lmmap.cli import app
    from lmmap.data.formats import write_vectors
    from lmmap.data.transfer import import_vectors
    from lmmap.data.texts import TextSet

    L = np.minimum(clustered_L(K=20, N=300), -0.01)
    names = [f"fam{i % 5}/m{i}" for i in range(20)]
    ts = TextSet.from_texts([f"text {i}" for i in range(300)])
    ts.save(tmp_path / "texts.jsonl")
    write_vectors(tmp_path / "L.npz", names, L, text_set_id=ts.identity)
    import_vectors(tmp_path / "store", tmp_path / "L.npz", texts=tmp_path / "texts.jsonl")
    out = tmp_path / "stab"
    args = ["stability", "--store", tmp_path / "store", "-o", out, "--n", "100", "--R", "3",
            "--compare", "uniform:300", "--embedding", "pca", "--workers", "2"]  # fmt: skip
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    t3 = pd.read_csv(out / "table3.csv")
    assert list(t3["setting"]) == ["ls n=100", "uniform n=300"]
    per_model = pd.read_csv(out / "stability_models.csv")
    assert len(per_model) == 40 and set(per_model["model"]) == set(names)
    for name in ("reference.csv", "stability_ls-n100.png", "stability_ls-n100.html", "stability_uniform-n300.png", "stability.json"):
        assert (out / name).stat().st_size > 0
    bad = CliRunner().invoke(app, ["stability", "--store", str(tmp_path / "store"), "-o", str(out), "--compare", "uniform"])
    assert bad.exit_code != 0 and "METHOD:N" in str(bad.exception)


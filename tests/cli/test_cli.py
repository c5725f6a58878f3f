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
from lmmap.data.store import Store
from lmmap.data.texts import TextSet

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


# -- one error path, notes, literal printing (issue 10 §4/§5/§7, issue 13 §3) -----------------------------------

import io  # noqa: E402
import logging  # noqa: E402
import warnings  # noqa: E402

import click  # noqa: E402
import typer.main  # noqa: E402
from rich.console import Console  # noqa: E402

from cli_main import run_main  # noqa: E402
from lmmap.cli._app import lit, output_dir, visible  # noqa: E402
from lmmap.exceptions import LmmapError, LmmapWarning  # noqa: E402


@pytest.fixture
def small_store(tmp_path, texts_file):
    store = tmp_path / "store"
    run_ok("init", "--texts", texts_file, "--store", store)
    N = len(TextSet.load(texts_file))
    vecs = family_vectors(N)
    np.savez(tmp_path / "v.npz", L=np.stack(list(vecs.values())), models=np.array(list(vecs)))
    meta = pd.DataFrame({"model": list(vecs)})
    for j in range(10):  # as many columns as the demo's models.csv and more
        meta[f"column_{j}"] = [f"value-{j}-{i}" for i in range(len(vecs))]
    meta["model_type"] = [n.split("/")[0] for n in vecs]
    meta["family"] = [n[:4] for n in vecs]
    meta.to_csv(tmp_path / "meta.csv", index=False)
    run_ok("import", "--vectors", tmp_path / "v.npz", "--metadata", tmp_path / "meta.csv", "--store", store)
    return store


def test_version():
    code, out, _ = run_main("--version")
    assert code == 0 and out.strip() == f"lmmap {__import__('lmmap').__version__}"


def _commands(cmd, path=("lmmap",)):
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from _commands(sub, (*path, name))


def test_every_command_option_and_argument_has_help():
    missing = []
    for path, cmd in _commands(typer.main.get_command(app)):
        if not (cmd.help or cmd.short_help):
            missing.append(" ".join(path))
        for p in cmd.params:
            if not (getattr(p, "help", None) or "").strip():
                missing.append(f"{' '.join(path)} {p.opts[0] if p.opts else p.name}")
    assert not missing, f"no help text: {missing}"


def test_help_shows_flags_without_a_bool_type():
    result = runner.invoke(app, ["neighbors", "--help"], env={"COLUMNS": "120"}, catch_exceptions=False)
    assert result.exit_code == 0
    assert "<bool>" not in result.output
    no_clip = next(line for line in result.output.splitlines() if "--no-clip" in line)
    assert "Do not clip" in no_clip
    k = next(line for line in result.output.splitlines() if " -k " in line)
    assert "<int>" in k


def test_models_readable_when_piped_and_machine_formats(small_store):
    code, out, err = run_main("models", "--store", small_store)
    assert code == 0, err
    rows = [line for line in out.splitlines() if "/m" in line]
    assert len(rows) == 9  # one line per model: nothing folded into strips
    header = next(line for line in out.splitlines() if "model" in line and "n_scored" in line)
    for col in ("convention", "model_type", "family", "complete"):
        assert col in header
    assert "column_3" not in header  # the default view stays narrow
    code, out, _ = run_main("models", "--store", small_store, "--columns", "all")
    assert code == 0 and "column_9" in out and len([line for line in out.splitlines() if "/m" in line]) == 9
    code, out, _ = run_main("models", "--store", small_store, "--format", "json")
    rows = json.loads(out)
    assert [r["model"] for r in rows] == Store(small_store).model_names()
    assert rows[0]["complete"] is True and rows[0]["column_9"] == "value-9-0"
    code, out, _ = run_main("models", "--store", small_store, "--format", "csv", "--columns", "family,n_scored")
    df = pd.read_csv(io.StringIO(out))
    assert list(df.columns) == ["model", "family", "n_scored"] and len(df) == 9


def test_models_unknown_column_or_format_suggests(small_store):
    code, _, err = run_main("models", "--store", small_store, "--columns", "modle_type")
    assert code == 1 and "did you mean 'model_type'" in err and "column_9" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_main("models", "--store", small_store, "--format", "jsn")
    assert code == 1 and "did you mean 'json'" in err


def test_unknown_model_and_color_by_suggest_before_any_work(small_store, tmp_path):
    code, _, err = run_main("neighbors", "fam1/m7", "--store", small_store)
    assert code == 1 and "did you mean 'fam1/m" in err and "lmmap models" in err
    out = tmp_path / "map"
    code, _, err = run_main("map", "-o", out, "--embedding", "pca", "--color-by", "famliy", "--store", small_store)
    assert code == 1 and "did you mean 'family'" in err and not out.exists()


def test_missing_store_says_how_to_point_at_one(tmp_path):
    code, _, err = run_main("models", "--store", tmp_path / "nowhere")
    assert code == 1 and "lmmap init --texts" in err and "--store" in err and "$LMMAP_STORE" in err


def test_failed_map_leaves_no_output_directory(small_store, tmp_path):
    out = tmp_path / "new" / "map"
    code, _, err = run_main("map", "-o", out, "--embedding", "bogus", "--store", small_store)
    assert code == 1 and "bogus" in err
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "kept"
    existing.mkdir()
    (existing / "mine.txt").write_text("x")
    code, _, _ = run_main("map", "-o", existing, "--embedding", "bogus", "--store", small_store)
    assert code == 1 and (existing / "mine.txt").read_text() == "x"


@pytest.mark.parametrize("command", ["predict", "add", "stability"])
def test_a_command_failing_midway_leaves_no_output_directory(small_store, tmp_path, command):
    """A failure inside the computation (predict, add) or at its checks (stability's --color-by) leaves no output."""
    out = tmp_path / "new" / "out"
    if command == "predict":
        (tmp_path / "scores.csv").write_text("model,bench\nnot-a-model,0.5\n")
        args = ["predict", "--scores", tmp_path / "scores.csv", "-o", out]
    elif command == "add":
        args = ["add", tmp_path / "no-such-model-dir", "--subset", tmp_path / "no-subset.json", "-o", out]
    else:
        args = ["stability", "-o", out, "--R", "2", "--color-by", "no_such_column"]
    code, _, err = run_main(*args, "--store", small_store)
    assert code == 1 and err.startswith("error:"), err
    assert not (tmp_path / "new").exists()


def test_output_dir_context_manager(tmp_path):
    with output_dir(tmp_path / "a" / "b") as d:
        (d / "f").write_text("ok")
    assert (tmp_path / "a" / "b" / "f").exists()
    with pytest.raises(RuntimeError):
        with output_dir(tmp_path / "c" / "d") as d:
            (d / "half").write_text("x")
            raise RuntimeError("boom")
    assert not (tmp_path / "c").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(LmmapError, match="not a directory"):
        with output_dir(tmp_path / "file"):
            pass


def test_internal_errors_are_one_line_exit_2_and_traceback_only_when_debugging(small_store, monkeypatch):
    import lmmap.data.transfer

    def broken(store):
        raise KeyError("method")

    monkeypatch.setattr(lmmap.data.transfer, "model_table", broken)
    code, out, err = run_main("models", "--store", small_store)
    assert code == 2 and "Traceback" not in err + out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("internal error: KeyError: 'method'")
    assert "this is a bug in lmmap" in lines[0] and "LMMAP_DEBUG=1" in lines[0]
    monkeypatch.setenv("LMMAP_DEBUG", "1")
    code, _, err = run_main("models", "--store", small_store)
    assert code == 2 and "Traceback" in err and "KeyError" in err


def test_user_file_errors_are_one_line(tmp_path):
    code, _, err = run_main("texts", "info", tmp_path / "[bold]missing.jsonl")
    assert code == 1 and err.startswith("error: ") and "[bold]missing.jsonl" in err and len(err.strip().splitlines()) == 1


def test_ctrl_c_exits_130_with_one_line(small_store, monkeypatch):
    import lmmap.data.transfer

    def interrupted(store):
        raise KeyboardInterrupt("3 of 5 models kept; rerun to resume")

    monkeypatch.setattr(lmmap.data.transfer, "model_table", interrupted)
    code, out, err = run_main("models", "--store", small_store)
    assert code == 130 and err.strip() == "interrupted: 3 of 5 models kept; rerun to resume" and "Traceback" not in out

    def bare(store):
        raise KeyboardInterrupt

    monkeypatch.setattr(lmmap.data.transfer, "model_table", bare)
    code, _, err = run_main("models", "--store", small_store)
    assert code == 130 and err.strip() == "interrupted"


def test_warnings_and_logged_warnings_become_one_note_each(small_store, monkeypatch):
    import lmmap.data.transfer

    real = lmmap.data.transfer.model_table

    def noisy(store):
        for _ in range(3):
            warnings.warn("metadata for 2 model(s) not in the store ignored, e.g. 'ghost'", UserWarning)
        warnings.warn("perplexity lowered\n   to 2", LmmapWarning)
        logging.getLogger("openTSNE.affinity").warning("k_neighbors is over 3 times the perplexity")
        return real(store)

    monkeypatch.setattr(lmmap.data.transfer, "model_table", noisy)
    code, _, err = run_main("models", "--store", small_store)
    assert code == 0
    lines = err.strip().splitlines()
    assert lines == [
        "note: metadata for 2 model(s) not in the store ignored, e.g. 'ghost'",
        "note: perplexity lowered to 2",
        "note: k_neighbors is over 3 times the perplexity",
    ]


NASTY_STRINGS = [
    "[bold red]x", "[/bold]", "[/]", "[link=http://e.vil]click[/link]", "x\\", "\\[bold]", ":smile:",
    "a\x1b[31mb", "\x1b]8;;http://x\x07y", "r\u202eq", "c1\x9bx", "nul\x00", "cr\rx", "new\nline", "bad\ud800",
]


@pytest.mark.parametrize("s", NASTY_STRINGS)
def test_lit_prints_exactly_what_was_written(s):
    shown = visible(s)
    assert all(ch not in shown for ch in "\x1b\x07\x9b\x00\r\n\u202e\ud800")
    for ch in ("\x1b", "\u202e", "\ud800", "\n"):
        if ch in s:
            assert ascii(ch)[1:-1] in shown  # \x1b, \u202e, \ud800, \n: as the 4/6 characters themselves
    buf = io.StringIO()
    Console(file=buf, width=200, color_system=None, emoji=False).print(f"<{lit(s)}>", highlight=False)
    assert buf.getvalue() == f"<{shown}>\n"


def test_errors_and_tables_print_names_literally(small_store, tmp_path):
    names = ["[bold red]x", "[/bold]", "[link=http://e.vil]y[/link]", "a\x1b[31mb"]
    N = Store(small_store).n_texts
    np.savez(tmp_path / "m.npz", L=np.stack(list(family_vectors(N, seed=3).values()))[:4], models=np.array(names))
    run_ok("import", "--vectors", tmp_path / "m.npz", "--store", small_store)
    code, out, err = run_main("models", "--store", small_store)
    assert code == 0 and all(n in out for n in names[:3]) and "a\\x1b[31mb" in out and "\x1b" not in out
    code, out, err = run_main("neighbors", "[/bold]", "-k", "12", "--store", small_store)
    assert code == 0 and "[bold red]x" in out and "[link=http://e.vil]y[/link]" in out and "\x1b" not in out
    code, _, err = run_main("neighbors", "[bold]nope\x1b[2J", "--store", small_store)
    assert code == 1 and "[bold]nope\\x1b[2J" in err and "\x1b" not in err

"""What the command line prints, read as a newcomer reads it (issue 22 §7, §8, §16, §17).

§16: a usage error (a missing option, an unknown option, a value of the wrong
type, an unknown command) was click's usage block and framed box, exit 2 —
the code the README keeps for lmmap's own bugs. Now it is one ``error:`` line
that names the option and says what to give, exit 1, like every refusal;
``--help`` is unchanged. §17: ``rm`` suggests close names; Ctrl-C during
``add --adaptive`` says a rerun resumes. §7: nats per text is the one default
unit (``scale`` defaulted to bits per byte), every KL column names its unit,
and ``scale``'s bracketed range says it is the interquartile range. §8: a
column of numbers shares its decimals (no ``80.18`` above ``111.7``, no
``76.73 ± 5``), symbols on a printed line are said in words, and notes name
the command line's flags (``--subset``, ``--n-grid``), not Python arguments.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from cli_main import run_main

N = 20
NAMES = [f"fam{f}/m{m}" for f in range(3) for m in range(3)]


def _matrix(K: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = -rng.gamma(3.0, 100.0, size=N)
    fams = [base + rng.normal(0, 40, size=N) for _ in range(3)]
    return np.stack([np.minimum(fams[i // 3] + rng.normal(0, 6, size=N), -0.01) for i in range(K)])


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A store of 9 models in 3 families (base_model, family, a trajectory) plus one partial model, and scores."""
    root = tmp_path_factory.mktemp("messages")
    texts = [f"Text {i}: " + " ".join(f"w{(i * 7 + j) % 31}" for j in range(40)) for i in range(N)]
    (root / "texts.jsonl").write_text("".join(json.dumps({"index": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    np.savez(root / "v.npz", L=_matrix(len(NAMES)), models=np.array(NAMES))
    np.savez(root / "part.npz", L=_matrix(1, seed=5)[:, :12], models=np.array(["partial"]), text_pos=np.arange(12))
    pd.DataFrame({
        "model": NAMES,
        "model_type": ["base" if n.endswith("m0") else "finetune" for n in NAMES],
        "family": [n[:4] for n in NAMES],
        "base_model": ["" if n.endswith("m0") else n[:4] + "/m0" for n in NAMES],
        "trajectory": ["fam0" if n.startswith("fam0") else "" for n in NAMES],
        "step": [int(n[-1]) * 10 + 10 if n.startswith("fam0") else np.nan for n in NAMES],
    }).to_csv(root / "meta.csv", index=False)
    pd.DataFrame({"model": NAMES, "bench": np.linspace(20, 80, len(NAMES))}).to_csv(root / "scores.csv", index=False)
    store = root / "store"
    for args in (["init", "--texts", root / "texts.jsonl"],
                 ["import", "--vectors", root / "v.npz", "--metadata", root / "meta.csv"],
                 ["import", "--vectors", root / "part.npz"]):
        code, _, err = run_main(*args, "--store", store)
        assert code == 0, err
    return root


def one_error(code, out, err, *needles):
    """Exit 1, nothing on stdout, and one ``error:`` line holding every needle (no usage block, no box)."""
    assert code == 1, (code, out, err)
    lines = [line for line in err.strip().splitlines() if not line.startswith("note: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Usage" not in err and "╭" not in err and "Try '" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# -- §16 usage errors -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, needles", [
    (["map"], ["missing option -o/--output", "give the output directory"]),
    (["export"], ["missing option -o/--output", "FILE.parquet"]),
    (["select", "-o", "{tmp}/s.json", "--n", "3"], ["missing option --method", "one of uniform, ls, kl"]),
    (["neighbors"], ["missing argument MODEL", "a model in the store"]),
    (["map", "-o"], ["option -o/--output needs a value"]),
    (["map", "-o", "{tmp}/out", "--embeding", "pca"], ["unknown option --embeding", "did you mean --embedding?",
                                                         "`lmmap map --help`"]),
    (["map", "-o", "{tmp}/out", "--bogus"], ["unknown option --bogus for `lmmap map`", "`lmmap map --help` lists"]),
    (["map", "-o", "{tmp}/out", "-K", "3"], ["unknown option -K", "did you mean -k?"]),
    (["map", "-o", "{tmp}/out", "-k", "zero"], ["-k takes a whole number, not 'zero'"]),
    (["map", "-o", "{tmp}/out", "--R", "2.5"], ["--R takes a whole number, not '2.5'"]),
    (["predict", "-o", "{tmp}/out", "--threshold", "high"], ["--threshold takes a number, not 'high'"]),
    (["map", "-o", "{tmp}/out", "extra"], ["unexpected argument(s) for `lmmap map`: extra"]),
    (["modles"], ["unknown command 'modles'", "did you mean 'models'?"]),
    (["texts", "biuld"], ["unknown command 'biuld'", "did you mean 'build'?", "`lmmap texts --help`"]),
])
def test_usage_errors_are_one_line_exit_1(tmp_path, args, needles):
    code, out, err = run_main(*[a.format(tmp=tmp_path) for a in args])
    one_error(code, out, err, *needles)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, needles", [
    (["map", "-o", "{tmp}/out", "--embedding", "tnse"], ["--embedding must be one of auto, mds, tsne, pca, umap, got 'tnse'; did you mean 'tsne'?"]),
    (["stability", "-o", "{tmp}/out", "--embedding", "MDS"], ["--embedding must be one of auto, mds, tsne, pca, umap, got 'MDS'; did you mean 'mds'?"]),
    (["map", "-o", "{tmp}/out", "--color-by", "famly"], ["did you mean 'family'?"]),
    (["select", "--method", "lss", "--n", "5", "-o", "{tmp}/out/s.json"], ["'lss'", "uniform, ls, kl"]),
    (["map", "-o", "{tmp}/out", "--unit", "bits"], ["--unit", "nats-per-text"]),
])
def test_a_bad_choice_is_one_line_with_close_matches(root, tmp_path, args, needles):
    code, out, err = run_main(*[a.format(tmp=tmp_path) for a in args], "--store", root / "store")
    one_error(code, out, err, *needles)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [["--help"], ["map", "--help"], ["texts", "build", "--help"]])
def test_help_is_unchanged(args):
    code, out, err = run_main(*args)
    assert code == 0 and "Usage: lmmap" in out and "Options" in out and err == "", (code, out, err)


@pytest.mark.parametrize("args", [[], ["texts"]])
def test_a_bare_group_prints_its_help_and_succeeds(args):
    code, out, err = run_main(*args)
    assert code == 0 and "Usage: lmmap" in out and "Commands" in out and "error" not in err, (code, out, err)


def test_version_and_a_command_exit_0(root):
    assert run_main("--version")[0] == 0
    code, out, _ = run_main("models", "--store", root / "store")
    assert code == 0 and "fam2/m2" in out


def test_usage_error_in_a_real_process(tmp_path):
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "lmmap", "map", "-o", tmp_path / "o", "-k", "zero"],
                       capture_output=True, text=True, timeout=120)
    one_error(p.returncode, p.stdout, p.stderr, "-k takes a whole number")


# -- §17 rm's suggestions, Ctrl-C during add --adaptive ---------------------------------------------------------------

def test_rm_suggests_close_names_and_removes_nothing(root, tmp_path):
    import shutil

    store = tmp_path / "store"
    shutil.copytree(root / "store", store)
    code, out, err = run_main("rm", "fam0/m1", "fam1/mO", "zzz", "--store", store)
    one_error(code, out, err, "not in the store: 'fam1/mO' (did you mean ", "'fam1/m0'", "'zzz'; nothing was removed")
    assert "fam0/m1" in run_main("models", "--store", store)[1]


def test_ctrl_c_during_add_adaptive_says_a_rerun_resumes(root, tmp_path, monkeypatch):
    import lmmap.analyses.adaptive
    from lmmap.data.store import Interrupted

    def interrupted(*a, **k):
        raise KeyboardInterrupt()

    monkeypatch.setattr(lmmap.analyses.adaptive, "place_adaptive", interrupted)
    code, out, err = run_main("add", "some/model", "--adaptive", "-o", tmp_path / "out", "--store", root / "store")
    assert code == 130, (code, out, err)
    assert err.strip().startswith("interrupted: ") and "rerun the same command to resume" in err, err
    assert "kept in the store" in err and not (tmp_path / "out").exists()

    # Interrupted while scoring: the scorer's own account comes first, the resume advice once.
    def while_scoring(*a, **k):
        raise Interrupted("2 checkpoint chunk(s) of 'm' kept; rerun the same command to resume")

    monkeypatch.setattr(lmmap.analyses.adaptive, "place_adaptive", while_scoring)
    code, _, err = run_main("add", "some/model", "--adaptive", "-o", tmp_path / "out", "--store", root / "store")
    assert code == 130 and "2 checkpoint chunk(s) of 'm' kept" in err and err.count("rerun") == 1, err


# -- §7 one default unit, printed -------------------------------------------------------------------------------------

def test_scale_defaults_to_nats_per_text_and_labels_its_iqr(root, tmp_path):
    code, out, err = run_main("scale", "-o", tmp_path / "scale", "--store", root / "store")
    assert code == 0, err
    assert "(nats/text; median and interquartile range" in out
    lines = [line for line in out.splitlines() if line.startswith("  ") and " median " in line]
    assert lines and all(re.search(r"\[IQR [\d,.]+–[\d,.]+\]", line) for line in lines), out
    assert json.loads((tmp_path / "scale" / "scale.json").read_text())["unit"] == "nats-per-text"

    import warnings

    from lmmap.analyses.scale import scale
    from lmmap.data.store import Store
    from lmmap.map import ModelMap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the partial model left out of the map
        mm = ModelMap.from_store(Store(root / "store"))
    assert scale(mm).unit == "nats-per-text"


def _cells(out: str, column: int) -> list[str]:
    return [row.split("│")[column].strip() for row in out.splitlines() if row.startswith("│")]


def _decimals(cell: str) -> int:
    return len(cell.split(".")[1]) if "." in cell else 0


@pytest.mark.parametrize("unit, label", [(None, "KL (nats/text)"), ("bits-per-byte", "KL (bits/byte)")])
def test_neighbors_names_its_unit_and_rounds_alike(root, unit, label):
    extra = ["--unit", unit] if unit else []
    code, out, err = run_main("neighbors", "fam0/m0", "-k", "8", "--se", "--R", "20", *extra, "--store", root / "store")
    assert code == 0, err
    assert label in out
    kl, se = _cells(out, 3), _cells(out, 4)
    assert len(kl) == 8 and len({_decimals(c) for c in kl + se}) == 1, (kl, se)


def test_trajectory_rounds_its_kl_alike(root, tmp_path):
    code, out, err = run_main("trajectory", "fam0", "-o", tmp_path / "t", "--store", root / "store")
    assert code == 0, err
    values = re.findall(r"to (?:previous|final)\s+([\d,]+(?:\.\d+)?)", out)
    assert len(values) >= 5 and len({_decimals(v) for v in values}) == 1, out


# -- §8 numbers, words, flags -----------------------------------------------------------------------------------------

def test_shared_decimals_and_significant_figures():
    from lmmap.cli._app import fixed, shared_decimals, sig

    d = shared_decimals([80.18, 94.53, 111.7, 169.1], [2.7, 16])
    assert [fixed(v, d) for v in (80.18, 111.7, 16)] == ["80.2", "111.7", "16.0"]
    assert [sig(v) for v in (1.1, 1.77, 14.7, 6.0, 99.96)] == ["1.10", "1.77", "14.7", "6.00", "100"]
    assert fixed(-0.0001, 2) == "0.00" and fixed(float("nan"), 2) == "–"


def test_an_estimate_and_its_se_share_their_decimals():
    from lmmap.analyses.place import format_estimate

    assert format_estimate(76.73, 5.0) == "76.7 ± 5.0"
    assert format_estimate(79.77, 2.9) == "79.8 ± 2.9"


def test_a_rate_reads_the_same_in_the_bar_and_the_line_after_it():
    from lmmap.cli._progress import RichProgress
    from lmmap.progress import Step, format_rate

    assert (format_rate(198.3), format_rate(98.04), format_rate(33484.2)) == ("198.3", "98.0", "33,484")
    detail = RichProgress._detail(Step(task="train", done=30, total=60, unit="steps", info={"loss": 6.0}), 0.0)
    assert "loss 6.00" in detail


def test_select_says_what_the_weights_sum_is(root, tmp_path):
    code, out, err = run_main("select", "--method", "uniform", "--n", 12, "-o", tmp_path / "s.json",
                              "--store", root / "store")
    assert code == 0, err
    assert "Σw" not in out and "weights summing to" in out and "(expected 20, the texts they stand for)" in out
    assert "log-likelihoods clipped at" in out


def test_errors_says_its_symbols_in_words(root, tmp_path):
    code, out, err = run_main("errors", "-o", tmp_path / "e", "--mode", "analytic", "--store", root / "store")
    assert code == 0, err
    assert "Gram" not in out and "error of the KL estimates from all N texts (τ_unif,N)" in out
    assert "needed to match d random texts (κ̂_d)" in " ".join(out.split())


def test_notes_name_flags_not_python_arguments(root, tmp_path):
    code, out, err = run_main("predict", "--scores", root / "scores.csv", "--group-by", "family", "--folds", 3,
                              "--seeds", 1, "-o", tmp_path / "p", "--no-plots", "--store", root / "store")
    assert code == 0, err
    note = next(line for line in err.splitlines() if "scored on only some texts" in line)
    assert "(--subset SUBSET.json)" in note and "subset=" not in note and "on the command line" not in note

    from lmmap.params import cli_message

    # A mention in braces is the flag on the command line; a bare word stays a word.
    assert cli_message("resample sizes ({n_grid}) up to n = 3,060 may reach it", ("n_grid",)) == \
        "resample sizes (--n-grid) up to n = 3,060 may reach it"
    assert cli_message("or pass {allow_other_texts} to use its positions", ("allow_other_texts",)) == \
        "or pass --allow-other-texts to use its positions"
    assert cli_message("no metadata column: give metadata", ("metadata",)) == "no metadata column: give metadata"


def test_the_table1_note_names_the_n_grid_flag(root, tmp_path):
    code, out, err = run_main("errors", "-o", tmp_path / "e", "--mode", "analytic", "--n-grid", "2:3:1",
                              "--targets", 15, "--store", root / "store")
    assert code == 0, err
    note = next(line for line in err.splitlines() if "N/A" in line)
    assert "resample sizes (--n-grid) up to n = 60" in note and "n_grid" not in note, note

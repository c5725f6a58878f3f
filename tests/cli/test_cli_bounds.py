"""Counts, seeds and sizes out of range (issue 21 §5): one line naming the flag, before any work.

Each case ended in an ``internal error`` (exit 2) or ran unbounded before:
``predict --seeds 2147483648`` grew memory until the kernel killed it,
``demo --threads 10**20`` overflowed torch. Now each is exit 1 with one
``error:`` line that names the flag and says what is allowed, and the work it
would have started (building the map, scoring, training, reading the
sources) never starts: those entry points raise :class:`WorkStarted`, which
``main()`` does not catch. The library refuses the same values with an
:class:`~lmmap.exceptions.InputError` naming the Python parameter.

Also here: models named like missing values (``NA``, ``None``, ``null``,
``nan`` …) keep their metadata (§5 b).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from cli_main import run_main
from lmmap.exceptions import InputError

N = 20
NAMES = [f"fam{f}/m{m}" for f in range(3) for m in range(3)]
BIG = str(10**22)  # 23 digits: past numpy's int64 and numpy's seeds


class WorkStarted(BaseException):
    """Raised where a command's work begins; a BaseException, so that main() lets it through to the test."""


def _matrix(K: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = -rng.gamma(3.0, 100.0, size=N)
    return np.stack([np.minimum(base + rng.normal(0, 30, size=N), -0.01) for _ in range(K)])


def _texts_file(path):
    texts = [f"Text {i}: " + " ".join(f"w{(i * 7 + j) % 31}" for j in range(40)) for i in range(N)]
    path.write_text("".join(json.dumps({"index": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A store of 9 models with metadata, a subset of it, a scores file and a text file."""
    root = tmp_path_factory.mktemp("bounds")
    texts = _texts_file(root / "texts.jsonl")
    store = root / "store"
    np.savez(root / "v.npz", L=_matrix(len(NAMES)), models=np.array(NAMES))
    pd.DataFrame({"model": NAMES, "model_type": [n[:4] for n in NAMES]}).to_csv(root / "meta.csv", index=False)
    pd.DataFrame({"model": NAMES, "bench": np.linspace(20, 80, len(NAMES))}).to_csv(root / "scores.csv", index=False)
    for args in (["init", "--texts", texts], ["import", "--vectors", root / "v.npz", "--metadata", root / "meta.csv"],
                 ["select", "--method", "uniform", "--n", 12, "-o", root / "subset.json"]):
        code, _, err = run_main(*args, "--store", store)
        assert code == 0, err
    return root


@pytest.fixture
def no_work(monkeypatch):
    """Every place where a command's work starts raises WorkStarted."""
    import lmmap.data.texts
    import lmmap.demo
    import lmmap.scoring
    from lmmap.map import ModelMap

    def started(*a, **k):
        raise WorkStarted()

    monkeypatch.setattr(ModelMap, "from_store", started)  # every map, select, errors, stability, predict, add
    monkeypatch.setattr(lmmap.scoring, "score_models", started)
    monkeypatch.setattr(lmmap.demo, "_run_demo", started)
    monkeypatch.setattr(lmmap.data.texts, "iter_documents", started)
    try:
        import torch
    except ImportError:
        pass
    else:
        # A regression must not start 10**5 OpenMP threads on a shared machine; small counts are the commands' own.
        set_num_threads = torch.set_num_threads

        def guarded(n):
            if n > 64:
                raise WorkStarted()
            set_num_threads(n)

        monkeypatch.setattr(torch, "set_num_threads", guarded)


def _s(root):
    return ["--store", root / "store"]


def _p(root):
    return ["predict", "--scores", root / "scores.csv", "--group-by", "none", "-o", root / "out", *_s(root)]


def _add(root):
    return ["add", "new-model", "-o", root / "out", "--threads", "1", *_s(root)]


# (command line, the flag the error must name, a fragment saying what is allowed)
CASES = {
    "select seed -1": (lambda r: ["select", "--method", "uniform", "--n", 10, "--seed", -1, "-o", r / "out" / "s.json",
                                  *_s(r)], "--seed", "up to 4,294,967,295"),
    "select seed 10**22": (lambda r: ["select", "--method", "uniform", "--n", 10, "--seed", BIG, "-o",
                                      r / "out" / "s.json", *_s(r)], "--seed", "up to 4,294,967,295"),
    "errors eps0 1e-300": (lambda r: ["errors", "--mode", "analytic", "--eps0", "1e-300", "-o", r / "out", *_s(r)],
                           "--eps0", "from 1e-150"),
    "errors eps0 inf": (lambda r: ["errors", "--mode", "analytic", "--eps0", "inf", "-o", r / "out", *_s(r)],
                        "--eps0", "from 1e-150"),
    "errors n-grid of 10**12 sizes": (lambda r: ["errors", "--n-grid", "1:1000000000000:1", "-o", r / "out", *_s(r)],
                                      "--n-grid", "at most 10,000"),
    "errors n-grid of 10**13 draws": (lambda r: ["errors", "--n-grid", "10000000000000", "-o", r / "out", *_s(r)],
                                      "--n-grid", "at most 1,000,000,000,000"),
    "errors seed 2**32": (lambda r: ["errors", "--seed", 2**32, "-o", r / "out", *_s(r)], "--seed", "4,294,967,295"),
    "errors workers 10**20": (lambda r: ["errors", "--workers", 10**20, "-o", r / "out", *_s(r)], "--workers",
                              "give at most"),
    "predict folds -1": (lambda r: [*_p(r), "--folds", -1], "--folds", "an integer ≥ 2"),
    "predict folds 0": (lambda r: [*_p(r), "--folds", 0], "--folds", "an integer ≥ 2"),
    "predict folds 2**31": (lambda r: [*_p(r), "--folds", 2**31], "--folds", "give at most 9"),
    "predict inner-folds 0": (lambda r: [*_p(r), "--inner-folds", 0], "--inner-folds", "an integer ≥ 2"),
    "predict inner-folds 2**31": (lambda r: [*_p(r), "--inner-folds", 2**31], "--inner-folds", "give at most 9"),
    "predict seed 10**22": (lambda r: [*_p(r), "--seed", BIG], "--seed", "4,294,967,295"),
    "predict seed + seeds past 2**32": (lambda r: [*_p(r), "--seed", 2**32 - 2], "--seed", "the 5 seeds from it"),
    "predict seeds 2**31": (lambda r: [*_p(r), "--seeds", 2**31], "--seeds", "give at most 10,000"),
    "predict seeds 0": (lambda r: [*_p(r), "--seeds", 0], "--seeds", "a positive integer"),
    "predict level 1.5": (lambda r: [*_p(r), "--level", 1.5], "--level", "between 0 and 1"),
    "predict threshold nan": (lambda r: [*_p(r), "--threshold", "nan"], "--threshold", "finite"),
    "predict workers 10**20": (lambda r: [*_p(r), "--workers", 10**20], "--workers", "give at most"),
    "map tsne-seed 10**22": (lambda r: ["map", "-o", r / "out", "--tsne-seed", BIG, *_s(r)], "--tsne-seed",
                             "4,294,967,295"),
    # map has no --seed: the message used to say "--seed must be ..." (issue 23).
    "map tsne-seed -1": (lambda r: ["map", "-o", r / "out", "--tsne-seed", -1, *_s(r)], "--tsne-seed must be",
                         "up to 4,294,967,295"),
    "stability seed -1": (lambda r: ["stability", "-o", r / "out", "--seed", -1, *_s(r)], "--seed", "4,294,967,295"),
    "stability tsne-seed 2**32": (lambda r: ["stability", "-o", r / "out", "--tsne-seed", 2**32, *_s(r)],
                                  "--tsne-seed", "4,294,967,295"),
    "stability workers 10**20": (lambda r: ["stability", "-o", r / "out", "--workers", 10**20, *_s(r)], "--workers",
                                 "give at most"),
    "stability n 10**22": (lambda r: ["stability", "-o", r / "out", "--n", BIG, *_s(r)], "--n",
                           "up to 1,000,000,000,000"),
    "stability compare 10**22": (lambda r: ["stability", "-o", r / "out", "--compare", f"uniform:{BIG}", *_s(r)],
                                 "--compare", "up to 1,000,000,000,000"),
    "add adaptive neighbors 10**22": (lambda r: [*_add(r), "--adaptive", "--neighbors", BIG], "--neighbors",
                                      "give at most 9"),
    "add adaptive neighbors 10": (lambda r: [*_add(r), "--adaptive", "--neighbors", 10], "--neighbors",
                                  "give at most 9"),
    "add adaptive round 10**22": (lambda r: [*_add(r), "--adaptive", "--round", BIG], "--round", "give at most 32"),
    "add adaptive max-texts 10**22": (lambda r: [*_add(r), "--adaptive", "--max-texts", BIG], "--max-texts",
                                      "give at most 20"),
    "add adaptive seed -1": (lambda r: [*_add(r), "--adaptive", "--seed", -1], "--seed", "4,294,967,295"),
    "add adaptive tsne-seed 10**22": (lambda r: [*_add(r), "--adaptive", "--tsne-seed", BIG], "--tsne-seed",
                                      "4,294,967,295"),
    "add subset seed 10**22": (lambda r: [*_add(r), "--subset", r / "subset.json", "--seed", BIG], "--seed",
                               "4,294,967,295"),
    "add subset tsne-seed -1": (lambda r: [*_add(r), "--subset", r / "subset.json", "--tsne-seed", -1], "--tsne-seed",
                                "4,294,967,295"),
    "score threads 10**20": (lambda r: ["score", "new-model", "--threads", 10**20, *_s(r)], "--threads",
                             "give at most"),
    "score checkpoint-every nan": (lambda r: ["score", "new-model", "--checkpoint-every", "nan", "--threads", 1,
                                              *_s(r)], "--checkpoint-every", "≥ 0"),
    "demo threads 10**20": (lambda r: ["demo", "-o", r / "out", "--threads", 10**20], "--threads", "give at most"),
    "demo threads 100000": (lambda r: ["demo", "-o", r / "out", "--threads", 100000], "--threads", "give at most"),
    "demo seed -1": (lambda r: ["demo", "-o", r / "out", "--seed", -1, "--threads", 1], "--seed", "4,294,967,295"),
    "demo seed 10**22": (lambda r: ["demo", "-o", r / "out", "--seed", BIG, "--threads", 1], "--seed",
                         "4,294,967,295"),
    # The demo draws from the seeds seed..seed+3: the library narrows the spec's range.
    "demo seed 2**32-2": (lambda r: ["demo", "-o", r / "out", "--seed", 2**32 - 2, "--threads", 1], "--seed",
                          "4,294,967,292"),
    "texts build seed -1": (lambda r: ["texts", "build", r / "texts.jsonl", "-o", r / "out" / "t.jsonl", "--n", 5,
                                       "--seed", -1], "--seed", "4,294,967,295"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_out_of_range_value_is_one_line_naming_the_flag_before_any_work(root, no_work, case):
    make, flag, allowed = CASES[case]
    code, out, err = run_main(*make(root))
    assert code == 1, (code, out, err)  # 2 would be an internal error or a usage error
    assert "internal error" not in err and "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    line = lines[0]
    assert flag in line, line
    assert allowed in line, line
    # The Python parameter is not shown to a command-line user.
    for word in ("random_state", "n_folds", "n_inner", "n_repeats", "round_size", "embedding_random_state"):
        assert word not in line, line
    assert not (root / "out").exists()


def test_values_at_the_bounds_are_accepted(root):
    # The largest seed numpy takes, and folds = the number of models (leave-one-out).
    code, _, err = run_main("select", "--method", "uniform", "--n", 10, "--seed", 2**32 - 1, "-o",
                            root / "ok" / "s.json", *_s(root))
    assert code == 0, err
    code, _, err = run_main("predict", "--scores", root / "scores.csv", "--group-by", "none", "-o", root / "ok" / "p",
                            "--folds", len(NAMES), "--inner-folds", 2, "--seeds", 2, "--seed", 2**32 - 2, "--no-plots",
                            *_s(root))
    assert code == 0, err
    assert json.loads((root / "ok" / "p" / "predict.json").read_text())["seeds"] == [2**32 - 2, 2**32 - 1]


# -- the library names its parameters ------------------------------------------------------------------------------


def _predict_inputs():
    rng = np.random.default_rng(0)
    names = [f"m{i}" for i in range(9)]
    return rng.normal(size=(9, 4)), names, pd.DataFrame({"b": rng.uniform(20, 80, 9)}, index=names)


@pytest.mark.parametrize("kw, param", [
    (dict(n_folds=2**31), "n_folds"), (dict(n_folds=-1), "n_folds"), (dict(n_inner=0), "n_inner"),
    (dict(n_inner=10), "n_inner"), (dict(n_repeats=2**31), "n_repeats"), (dict(random_state=10**22), "random_state"),
    (dict(random_state=-1), "random_state"), (dict(random_state=2**32 - 1), "random_state"),
    (dict(level=1.0), "level"), (dict(threshold=math.nan), "threshold"), (dict(workers=10**20), "workers"),
])
def test_predict_scores_refuses_with_the_parameter(kw, param):
    from lmmap.analyses.predict import predict_scores

    X, names, scores = _predict_inputs()
    with pytest.raises(InputError) as e:
        predict_scores(X, names, scores, **kw)
    assert e.value.params == (param,) and param in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("call, param", [
    (lambda: __import__("lmmap.maths.randomness", fromlist=["x"]).seed_of(2**32), "random_state"),
    (lambda: __import__("lmmap.maths.randomness", fromlist=["x"]).seed_of(-1), "random_state"),
    (lambda: __import__("lmmap.parallel", fromlist=["x"]).resolve_threads(10**20), "threads"),
    (lambda: __import__("lmmap.parallel", fromlist=["x"]).check_workers(10**20), "workers"),
    (lambda: __import__("lmmap.maths.errors", fromlist=["x"]).check_eps0(1e-300), "eps0"),
    (lambda: __import__("lmmap.maths.errors", fromlist=["x"]).check_eps0(math.nan), "eps0"),
    (lambda: __import__("lmmap.maths.errors", fromlist=["x"]).check_n_grid(np.arange(1, 20_000)), "n_grid"),
    (lambda: __import__("lmmap.analyses.adaptive", fromlist=["x"]).check_parameters(0.1, 10**22, None, 32, 100, K=5),
     "neighbors"),
    (lambda: __import__("lmmap.analyses.adaptive", fromlist=["x"]).check_parameters(0.1, 5, 10**22, 32, 100),
     "max_texts"),
    (lambda: __import__("lmmap.analyses.adaptive", fromlist=["x"]).check_parameters(0.1, 5, None, 10**22, 100),
     "round_size"),
    (lambda: __import__("lmmap.analyses.adaptive", fromlist=["x"]).check_parameters(0.1, 6, None, 32, 100, K=5),
     "neighbors"),
    (lambda: __import__("lmmap.scoring.checkpoints", fromlist=["x"]).expand_checkpoints(
        ["a", "b"], trajectory="t", steps=f"{BIG},5"), "steps"),
    (lambda: __import__("lmmap.scoring.checkpoints", fromlist=["x"]).expand_checkpoints(
        ["a", "b"], trajectory="t", steps="nan,5"), "steps"),
])
def test_library_checks_name_the_parameter(call, param):
    with pytest.raises(InputError) as e:
        call()
    assert param in e.value.params and "\n" not in str(e.value)


def test_the_default_neighbors_fit_a_small_map():
    from lmmap.analyses.adaptive import resolve_neighbors

    assert resolve_neighbors(None, 3) == 3 and resolve_neighbors(None, 40) == 5 and resolve_neighbors(3, 3) == 3


def test_the_environment_thread_count_is_capped(monkeypatch):
    from lmmap.parallel import auto_threads, max_threads

    monkeypatch.setenv("OMP_NUM_THREADS", str(10**20))
    assert auto_threads() == max_threads()


# -- models named like missing values (§5 b) ------------------------------------------------------------------------

NA_NAMES = ["NA", "None", "null", "nan", "NaN", "N/A", "n/a", "NULL", "#N/A", "<NA>", "-nan", "1.#IND", "plain"]


def test_models_named_like_missing_values_get_their_metadata(tmp_path):
    texts = _texts_file(tmp_path / "texts.jsonl")
    np.savez(tmp_path / "v.npz", L=_matrix(len(NA_NAMES), seed=3), models=np.array(NA_NAMES))
    # Written by hand, as a user would: the names unquoted; "NA" in another column is still a missing value.
    rows = [f"{n},type{i % 3},{'NA' if n == 'plain' else i}" for i, n in enumerate(NA_NAMES)]
    (tmp_path / "models.csv").write_text("model,model_type,size\n" + "\n".join(rows) + "\n")
    store = tmp_path / "store"
    assert run_main("init", "--texts", texts, "--store", store)[0] == 0
    code, _, err = run_main("import", "--vectors", tmp_path / "v.npz", "--metadata", tmp_path / "models.csv",
                            "--store", store)
    assert code == 0, err
    code, out, err = run_main("models", "--store", store, "--format", "json")
    assert code == 0, err
    got = {r["model"]: (r.get("model_type"), r.get("size")) for r in json.loads(out)}
    assert got == {n: (f"type{i % 3}", None if n == "plain" else i) for i, n in enumerate(NA_NAMES)}


def test_base_coords_of_models_named_like_missing_values(tmp_path):
    from lmmap.analyses.place import _read_base_coords

    names = ["NA", "None", "null", "nan", "007"]
    path = tmp_path / "coords.csv"
    path.write_text("model,x,y,new\n" + "\n".join(f"{n},{i}.5,{-i},False" for i, n in enumerate(names)) + "\n")
    xy = _read_base_coords(path, list(reversed(names)))
    np.testing.assert_array_equal(xy, [[i + 0.5, -i] for i in reversed(range(len(names)))])

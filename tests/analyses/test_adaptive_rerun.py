"""`lmmap add --adaptive` run again (issue 21 §6): after it finished, or after a kill that came after its store change.

The same command must finish the job from what is stored — write the same
placement files, scoring nothing — as `lmmap score` does for a model already
scored. Before the fix a model that had reached every text (an adaptive run
scores the rest once half the texts are drawn) was refused as "already in the
store … give the new model another name", and no output was written.

Scoring is replaced by a lookup in known rows (stored as scoring stores
them), so that what a run scores can be counted.
"""

import json

import numpy as np
import pandas as pd
import pytest

from cli_main import run_main
from lmmap.analyses import adaptive as ad
from lmmap.data.store import Store
from lmmap.data.texts import TextSet
from synthetic import family_L

N = 240
# Maps of a few models lower t-SNE's perplexity and say so; expected here.
pytestmark = pytest.mark.filterwarnings("ignore:perplexity .* is too large")

TABLES = ("placement.csv", "kl.csv", "adaptive.csv", "adaptive_trace.csv", "coords.csv")
# adaptive.json also records the scoring time, which a rerun that scores nothing cannot repeat.
SETTINGS = ("new_models", "existing_models", "n_texts", "target_se", "neighbors", "clip_threshold", "random_state",
            "embedding", "embedding_random_state", "failed", "kl_unit")
# target_se 0.001 runs until half the texts are drawn and then scores them all: the model ends complete,
# the case that was refused. 0.2 stops early with a partial vector.
COMPLETE, PARTIAL = "0.001", "0.2"


class CountingScorer:
    """Stands in for :func:`lmmap.scoring.score_models`: known rows, stored as scoring stores them, texts counted."""

    def __init__(self, rows: dict):
        self.rows, self.calls, self.scored = rows, 0, 0

    def __call__(self, store, models, *, names=None, text_pos=None, convention="reference", **kw):
        from lmmap.scoring import ScoreStatus

        self.calls += 1
        out = {}
        for src, name in zip(models, names or models):
            have = store.vectors(name)["text_pos"].to_numpy() if store.has_model(name) else np.zeros(0, np.int64)
            todo = np.setdiff1d(np.asarray(text_pos), have)
            if not len(todo):
                out[name] = ScoreStatus(name, "skipped")
                continue
            pos = np.union1d(have, todo)
            store.write_model(name, self.rows[src][pos], text_pos=pos, record={"convention": convention},
                              replace=store.has_model(name))
            self.scored += len(todo)
            out[name] = ScoreStatus(name, "scored", n_scored=len(todo))
        return out


@pytest.fixture(scope="module")
def eco():
    names, L, fams = family_L(N, K_per=4, n_fam=3, seed=5)
    rows = {"src0": L[names.index("fam0/m3")], "src1": L[names.index("fam1/m3")]}
    keep = [i for i, n in enumerate(names) if not n.endswith("/m3")]
    return [names[i] for i in keep], L[keep], [fams[i] for i in keep], rows


def _store(path, eco) -> Store:
    names, L, fams, _ = eco
    store = Store.create(path, TextSet.from_texts([f"text {i} " + "x" * (i % 7) for i in range(N)]))
    store.write_models([{"name": n, "loglik": row, "record": {"convention": "reference"}} for n, row in zip(names, L)])
    store.set_metadata(pd.DataFrame({"model": names, "model_type": fams}))
    return store


def _scorer(monkeypatch, eco) -> CountingScorer:
    import lmmap.scoring

    scorer = CountingScorer(eco[3])
    monkeypatch.setattr(lmmap.scoring, "score_models", scorer)
    return scorer


def _add(store, out, target, source="src0"):
    return run_main("add", source, "--adaptive", "--name", "ft", "--target-se", target, "--round", 16, "--seed", 3,
                    "--threads", 1, "--no-progress", "-o", out, "--store", store.path)


def _outputs(out) -> dict:
    got = {name: (out / name).read_text() for name in TABLES}
    settings = json.loads((out / "adaptive.json").read_text())
    got["adaptive.json"] = {k: settings.get(k) for k in SETTINGS}
    got["files"] = sorted(p.name for p in out.iterdir())
    return got


def _one_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "internal error" not in err and "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("target", [COMPLETE, PARTIAL])
def test_the_same_command_twice_finishes_and_writes_the_same_outputs(eco, tmp_path, monkeypatch, target):
    store = _store(tmp_path / "store", eco)
    out = tmp_path / "out"
    first = _scorer(monkeypatch, eco)
    code, _, err = _add(store, out, target)
    assert code == 0, err
    n_scored = store.record("ft")["n_scored"]
    assert first.scored == n_scored > 0
    assert (n_scored == N) == (target == COMPLETE)  # the complete case is the one that was refused
    before = _outputs(out)

    again = _scorer(monkeypatch, eco)
    code, stdout, err = _add(store, out, target)
    assert code == 0, err
    assert "error" not in err
    assert again.calls == 0  # finished from the stored texts: nothing loaded or scored
    assert store.record("ft")["n_scored"] == n_scored
    assert _outputs(out) == before
    assert "placed 1 new model(s) adaptively" in stdout


def test_a_run_killed_after_its_store_change_is_finished_by_the_same_command(eco, tmp_path, monkeypatch):
    import lmmap.report

    clean = _store(tmp_path / "clean", eco)
    _scorer(monkeypatch, eco)
    code, _, err = _add(clean, tmp_path / "ref", COMPLETE)
    assert code == 0, err

    store = _store(tmp_path / "store", eco)
    out = tmp_path / "out"
    killed = _scorer(monkeypatch, eco)

    def killed_before_the_outputs(*a, **k):
        raise KeyboardInterrupt()

    with monkeypatch.context() as m:
        m.setattr(lmmap.report, "write", killed_before_the_outputs)
        code, _, err = _add(store, out, COMPLETE)
    assert code == 130, err
    assert not out.exists()  # no half-written output
    assert store.record("ft")["n_scored"] == N and killed.scored == N  # the store change was made

    rerun = _scorer(monkeypatch, eco)
    code, _, err = _add(store, out, COMPLETE)
    assert code == 0, err
    assert rerun.calls == 0
    assert _outputs(out) == _outputs(tmp_path / "ref")


@pytest.mark.parametrize("target", [COMPLETE, PARTIAL])
def test_a_model_stored_as_the_command_stores_it_is_placed_by_the_command(eco, tmp_path, monkeypatch, target):
    clean = _store(tmp_path / "clean", eco)
    _scorer(monkeypatch, eco)
    code, _, err = _add(clean, tmp_path / "ref", target)
    assert code == 0, err

    # What the command had done to the store when it was killed before its outputs: the library's run.
    store = _store(tmp_path / "store", eco)
    _scorer(monkeypatch, eco)
    ad.place_adaptive(store, ["src0"], names=["ft"], target_se=float(target), round_size=16, random_state=3,
                      embedding=None)
    rerun = _scorer(monkeypatch, eco)
    code, _, err = _add(store, tmp_path / "out", target)
    assert code == 0, err
    assert rerun.calls == 0
    assert _outputs(tmp_path / "out") == _outputs(tmp_path / "ref")


def test_another_model_under_an_adaptive_name_is_refused(eco, tmp_path, monkeypatch):
    store = _store(tmp_path / "store", eco)
    _scorer(monkeypatch, eco)
    code, _, err = _add(store, tmp_path / "first", COMPLETE)
    assert code == 0, err
    stored = store.vectors("ft")["loglik"].to_numpy()

    other = _scorer(monkeypatch, eco)
    out = tmp_path / "out"
    code, _, err = _add(store, out, COMPLETE, source="src1")
    assert code == 1
    line = _one_error(err)
    # Its stored texts would have been taken as the other model's placement.
    assert "'ft' was added adaptively from 'src0', not 'src1'" in line and "--name" in line and "lmmap rm" in line
    assert other.calls == 0 and not out.exists()
    np.testing.assert_array_equal(store.vectors("ft")["loglik"].to_numpy(), stored)
    # What the message says to do works: rm takes the run's marker with the model.
    assert run_main("rm", "ft", "--store", store.path)[0] == 0
    code, _, err = _add(store, out, PARTIAL, source="src1")
    assert code == 0, err
    assert other.scored == store.record("ft")["n_scored"] > 0


def test_a_complete_model_not_added_adaptively_is_still_refused(eco, tmp_path, monkeypatch):
    store = _store(tmp_path / "store", eco)
    scorer = _scorer(monkeypatch, eco)
    out = tmp_path / "out"
    code, _, err = run_main("add", "fam0/m0", "--adaptive", "--threads", 1, "--no-progress", "-o", out,
                            "--store", store.path)
    assert code == 1
    assert "already in the store on all 240 texts" in _one_error(err)
    assert scorer.calls == 0 and not out.exists()

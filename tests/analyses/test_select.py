"""Subsets of texts: selection from a store, the SUBSET.json file, bad input, and the subset map end to end."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lmmap import ModelMap
from lmmap.maths import geometry as core
from lmmap.maths import resampling as imp
from lmmap.cli import app
from lmmap.exceptions import FormatError, InputError, LmmapError, LmmapWarning
from lmmap.data.store import Store
from lmmap.analyses.select import select
from lmmap.data.subset import Subset
from lmmap.data.texts import TextSet
from synthetic import family_L  # noqa: E402

runner = CliRunner()




def make_store(path, N=120, seed=0, **kw):
    names, L, fams = family_L(N, seed=seed, **kw)
    texts = TextSet.from_texts([f"text number {i} " * 3 for i in range(N)], index=np.arange(N) + 1000)
    store = Store.create(path, texts)
    store.write_models([{"name": n, "loglik": row} for n, row in zip(names, L)])
    store.set_metadata(pd.DataFrame({"model": names, "model_type": fams}))
    return store, names, L


@pytest.fixture
def store(tmp_path):
    return make_store(tmp_path / "store")


def test_select_from_store_records_everything(store):
    store, names, L = store
    sub = select(store, "ls", 80, random_state=3)
    full = ModelMap(names, L)  # the full map with clipping: the source of π and the threshold
    pi = imp.importance(full.Q, "ls")
    assert sub.models == names
    assert sub.threshold == pytest.approx(full.threshold)
    assert sub.n == 80 and sub.random_state == 3 and sub.method == "ls"
    assert sub.counts.sum() == 80 and sub.d == len(sub.text_pos) <= 80
    np.testing.assert_allclose(sub.pi, pi[sub.text_pos])
    np.testing.assert_allclose(sub.weights, sub.counts / (80 * pi[sub.text_pos]))
    np.testing.assert_array_equal(sub.text_index, sub.text_pos + 1000)
    assert sub.text_set_id == store.text_set_id and sub.n_texts == 120
    # Same seed, same subset; another seed, another one.
    np.testing.assert_array_equal(select(store, "ls", 80, random_state=3).text_pos, sub.text_pos)
    assert not np.array_equal(select(store, "ls", 80, random_state=4).text_pos, sub.text_pos)


def test_select_from_a_map_and_a_model_subset(store):
    store, names, L = store
    sub = select(store, "kl", 50, random_state=0, models=names[:6])
    assert sub.models == names[:6]
    mm = ModelMap(names[:6], L[:6])
    assert sub.threshold == pytest.approx(mm.threshold)
    sub2 = select(mm, "kl", 50, random_state=0, texts=store.texts)
    np.testing.assert_array_equal(sub2.text_pos, sub.text_pos)
    np.testing.assert_allclose(sub2.weights, sub.weights)
    assert sub2.text_set_id == store.text_set_id
    np.testing.assert_array_equal(sub2.text_index, sub.text_index)
    sub2.check_store(store)
    with pytest.raises(LmmapError, match="full text set"):
        select(ModelMap.from_store(store, subset=sub), "ls", 10)
    unclipped = select(store, "ls", 50, clip=False)
    assert unclipped.threshold is None


def test_partially_scored_models_do_not_define_the_map(store):
    store, names, L = store
    store.write_model("partial", L[0, :30] - 1, text_pos=np.arange(30))
    with pytest.warns(LmmapWarning, match="left out 1 partial model"):  # the map's one rule, with its note
        sub = select(store, "uniform", 40, random_state=0)
    assert "partial" not in sub.models and len(sub.models) == len(names)


def test_save_load_round_trip(store, tmp_path):
    store, names, _ = store
    sub = select(store, "kl", 100, random_state=1)
    path = sub.save(tmp_path / "sub" / "SUBSET.json")
    info = json.loads(path.read_text())
    for key in ("method", "n", "seed", "text_set_id", "models", "threshold", "n_texts", "texts"):
        assert key in info
    assert set(info["texts"][0]) == {"pos", "index", "count", "pi", "w"}
    back = Subset.load(path)
    for attr in ("text_pos", "text_index", "counts", "pi", "weights"):
        np.testing.assert_array_equal(getattr(back, attr), getattr(sub, attr))  # floats round-trip exactly
    assert (back.method, back.n, back.random_state, back.models, back.threshold) == (sub.method, sub.n, sub.random_state, sub.models, sub.threshold)
    back.check_store(store)
    assert not list(path.parent.glob(".*.tmp"))


def test_save_texts_writes_the_d_texts(store, tmp_path):
    store, _, _ = store
    sub = select(store, "ls", 60, random_state=2)
    out = sub.save_texts(tmp_path / "texts.jsonl", store)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == sub.d
    assert [r["index"] for r in rows] == list(sub.text_index)
    all_texts = store.texts.texts
    assert [r["text"] for r in rows] == [all_texts[p] for p in sub.text_pos]
    # The texts of a fresh selection travel with it; a loaded subset needs the store.
    sub.save_texts(tmp_path / "again.jsonl")
    assert (tmp_path / "again.jsonl").read_text() == out.read_text()
    loaded = Subset.load(sub.save(tmp_path / "s.json"))
    with pytest.raises(LmmapError, match="give the store"):
        loaded.save_texts(tmp_path / "x.jsonl")
    with pytest.raises(LmmapError, match="JSONL"):
        sub.save_texts(tmp_path / "x.csv", store)


def test_subset_from_another_text_set_is_refused(store, tmp_path):
    store, _, _ = store
    sub = select(store, "ls", 60, random_state=0)
    other, _, _ = make_store(tmp_path / "other", N=120, seed=0)
    # Same N, different texts: the identity differs.
    texts = TextSet.from_texts([f"another text {i} " * 3 for i in range(120)])
    other = Store.create(tmp_path / "other2", texts)
    with pytest.raises(LmmapError, match="another text set"):
        sub.check_store(other)
    with pytest.raises(LmmapError, match="another text set"):
        ModelMap.from_store(other, subset=sub)
    smaller, _, _ = make_store(tmp_path / "small", N=100)
    with pytest.raises(LmmapError, match="120 texts but the store's text set has 100"):
        sub.check_store(smaller)


def test_subset_of_another_map_is_detected(store, tmp_path):
    store, names, L = store
    sub = select(store, "ls", 60, random_state=0)
    sub.check_models(store)
    store.remove_model(names[0])
    with pytest.raises(LmmapError, match="another map"):
        sub.check_models(store)


def test_damaged_or_edited_files_are_refused(store, tmp_path):
    store, _, _ = store
    sub = select(store, "ls", 60, random_state=0)
    path = sub.save(tmp_path / "s.json")
    info = json.loads(path.read_text())

    def write(mutate, name):
        d = json.loads(json.dumps(info))
        mutate(d)
        p = tmp_path / name
        p.write_text(json.dumps(d))
        return p

    cases = {
        "weights": (lambda d: d["texts"][0].update(w=d["texts"][0]["w"] * 2), "not c/\\(nπ\\)"),
        "counts": (lambda d: d["texts"][0].update(count=d["texts"][0]["count"] + 1), "sum to 61 but n = 60"),
        "format": (lambda d: d.update(format="other"), "not an lmmap subset"),
        "missing": (lambda d: d.pop("n_texts"), "'n_texts' is missing"),
        "range": (lambda d: d["texts"][-1].update(pos=10_000), "outside"),
        "n": (lambda d: d.update(n=0), "positive integer"),
        "n_float": (lambda d: d.update(n=60.5), "'n' is 60.5, not an integer"),
        "pi": (lambda d: d["texts"][0].update(pi=0.0), "probability"),
    }
    for name, (mutate, msg) in cases.items():
        with pytest.raises(LmmapError, match=msg):
            Subset.load(write(mutate, name + ".json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LmmapError, match="not valid JSON"):
        Subset.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="lmmap select"):
        Subset.load(tmp_path / "absent.json")
    with pytest.raises(FormatError, match="is a directory"):
        Subset.load(tmp_path)
    # A text id that is not the store's at that position: edited, or another text set's numbering.
    p = write(lambda d: d["texts"][0].update(index=-5), "index.json")
    with pytest.raises(LmmapError, match="not in the store at position"):
        Subset.load(p).check_store(store)


# -- identity: a subset always knows which texts it indexes (issue 10 §4) ---------------------------------------


def test_select_from_a_bare_map_needs_its_texts_or_an_explicit_unbound(store, tmp_path):
    store, names, L = store
    bare = ModelMap(names, L)  # no store, no text set: positions alone
    with pytest.raises(InputError, match="texts=TextSet.*unbound=True"):
        select(bare, "ls", 50, random_state=0)
    bound = select(bare, "ls", 50, random_state=0, texts=store.texts)
    assert bound.text_set_id == store.text_set_id and not bound.unbound
    back = Subset.load(bound.save(tmp_path / "bound.json"))
    assert back.text_set_id == store.text_set_id
    back.check_store(store)
    # The wrong texts for the map are refused, not recorded.
    with pytest.raises(InputError, match="texts has 100 texts"):
        select(bare, "ls", 50, texts=TextSet.from_texts([f"t{i}" for i in range(100)]))
    with pytest.raises(InputError, match="not the text set the map was built on"):
        select(ModelMap.from_store(store), "ls", 50, texts=TextSet.from_texts([f"t{i}" for i in range(120)]))
    with pytest.raises(InputError, match="bare ModelMap"):
        select(store, "ls", 50, unbound=True)


def test_unbound_subset_is_refused_by_a_store_unless_allowed(store, tmp_path):
    store, names, L = store
    sub = select(ModelMap(names, L), "ls", 50, random_state=0, unbound=True)
    assert sub.unbound and sub.text_set_id is None
    path = sub.save(tmp_path / "unbound.json")
    info = json.loads(path.read_text())
    assert info["unbound"] is True and info["n_texts"] == 120 and info["text_set_id"] is None
    loaded = Subset.load(path)
    assert loaded.unbound
    # Another store of the same size: positions would silently index other texts.
    other = Store.create(tmp_path / "other", TextSet.from_texts([f"another text {i} " * 3 for i in range(120)]))
    for target in (store, other):
        with pytest.raises(InputError, match="does not record which text set.*allow_other_texts"):
            loaded.check_store(target)
        with pytest.raises(InputError, match="unbound.json: .*allow_other_texts"):
            Subset.load(path, store=target)
        with pytest.raises(InputError, match="allow_other_texts") as exc:
            ModelMap.from_store(target, subset=loaded)
        assert "allow_other_texts" in exc.value.params
    with pytest.warns(LmmapWarning, match="allow_other_texts"):
        loaded.check_store(store, allow_other_texts=True)
    with pytest.warns(LmmapWarning):
        rebound = Subset.load(path, store=store, allow_other_texts=True)
    assert rebound.text_set_id == store.text_set_id and not rebound.unbound
    np.testing.assert_array_equal(rebound.text_index, store.texts.index[rebound.text_pos])
    mm = ModelMap.from_store(store, subset=rebound)  # bound now: no further override needed
    assert mm.K == len(names)
    # The size is checked even when other texts are allowed.
    smaller, _, _ = make_store(tmp_path / "small", N=100)
    with pytest.raises(InputError, match="120 texts but the store's text set has 100"):
        loaded.check_store(smaller, allow_other_texts=True)


def test_subset_of_another_text_set_needs_the_override_too(store, tmp_path):
    store, _, _ = store
    sub = select(store, "ls", 60, random_state=0)
    other = Store.create(tmp_path / "other", TextSet.from_texts([f"another text {i} " * 3 for i in range(120)]))
    with pytest.raises(InputError, match="another text set.*allow_other_texts"):
        sub.check_store(other)
    with pytest.warns(LmmapWarning, match="another text set"):
        moved = sub.bind(other, allow_other_texts=True)
    assert moved.text_set_id == other.text_set_id
    np.testing.assert_array_equal(moved.text_pos, sub.text_pos)


def test_old_subset_file_without_identity_loads_as_unbound(store, tmp_path):
    store, _, _ = store
    info = select(store, "ls", 60, random_state=0).to_dict()
    info.pop("text_set_id")
    info.pop("unbound")
    p = tmp_path / "old.json"
    p.write_text(json.dumps(info))
    old = Subset.load(p)
    assert old.unbound and old.text_set_id is None
    with pytest.raises(InputError, match="does not record which text set"):
        old.check_store(store)


def test_a_subset_cannot_be_built_without_identity_by_accident(store):
    store, _, _ = store
    fields = {k: v for k, v in vars(select(store, "ls", 60, random_state=0)).items() if not k.startswith("_")}
    with pytest.raises(InputError, match="must record the identity"):
        Subset(**{**fields, "text_set_id": None})
    with pytest.raises(InputError, match="do not also mark it unbound"):
        Subset(**{**fields, "unbound": True})


# -- damaged subset files: every field checked, every message says what is wrong (§5, §7) ------------------------

SUBSET_FILE_CASES = [
    # (id, mutate(info), fragment)
    ("pi-string", lambda d: d["texts"][0].update(pi="abc"), "field 'texts[0].pi' is 'abc', not a number"),
    ("pi-null", lambda d: d["texts"][1].update(pi=None), "field 'texts[1].pi' is missing"),
    ("pi-nan", lambda d: d["texts"][0].update(pi=float("nan")), "'texts[0].pi' is nan, not a finite number"),
    ("pi-above-1", lambda d: d["texts"][0].update(pi=1.5), "π = 1.5"),
    ("count-negative", lambda d: (d["texts"][0].update(count=-1), d["texts"][1].update(count=d["texts"][1]["count"] + 2)),
     "is -1; a count is how often the text was drawn, at least 1"),
    ("count-zero", lambda d: d["texts"][2].update(count=0), "at least 1"),
    ("count-float", lambda d: d["texts"][0].update(count=1.5), "'texts[0].count' is 1.5, not an integer"),
    ("counts-sum", lambda d: d["texts"][0].update(count=d["texts"][0]["count"] + 1), "the counts sum to 61 but n = 60"),
    ("pos-fraction", lambda d: d["texts"][0].update(pos=d["texts"][0]["pos"] + 0.5), "'texts[0].pos'"),
    ("pos-string", lambda d: d["texts"][0].update(pos="3"), "'texts[0].pos' is '3'"),
    ("pos-bool", lambda d: d["texts"][0].update(pos=True), "'texts[0].pos' is True"),
    ("pos-1e30", lambda d: d["texts"][0].update(pos=10**30), "'texts[0].pos'"),
    ("pos-negative", lambda d: d["texts"][0].update(pos=-3), "text position -3 (text 0) is outside 0..119"),
    ("pos-out-of-range", lambda d: d["texts"][-1].update(pos=10_000), "text position 10000"),
    ("pos-duplicate", lambda d: d["texts"][1].update(pos=d["texts"][0]["pos"]), "unique and sorted"),
    ("index-float", lambda d: d["texts"][0].update(index=2.5), "'texts[0].index' is 2.5"),
    ("row-not-object", lambda d: d["texts"].__setitem__(0, [1, 2]), "texts[0] is [1, 2], not an object"),
    ("row-missing-w", lambda d: d["texts"][0].pop("w"), "'texts[0].w' is missing"),
    ("texts-not-list", lambda d: d.update(texts="abc"), "field 'texts' is 'abc', not a list"),
    ("texts-empty", lambda d: d.update(texts=[], d=0), "holds no texts"),
    ("d-mismatch", lambda d: d.update(d=d["d"] + 1), "but lists"),
    ("d-string", lambda d: d.update(d="many"), "field 'd' is 'many'"),
    ("n-string", lambda d: d.update(n="60"), "field 'n' is '60'"),
    ("n_texts-string", lambda d: d.update(n_texts="abc"), "field 'n_texts' is 'abc'"),
    ("n_texts-zero", lambda d: d.update(n_texts=0), "field 'n_texts' is 0; it must be at least 1"),
    ("n_texts-missing", lambda d: d.pop("n_texts"), "field 'n_texts' is missing"),
    ("n_excluded-negative", lambda d: d.update(n_excluded=-1), "'n_excluded' is -1"),
    ("version-string", lambda d: d.update(version="2"), "field 'version' is '2'"),
    ("version-newer", lambda d: d.update(version=99), "newer lmmap"),
    ("method-number", lambda d: d.update(method=5), "field 'method' is 5, not a string"),
    ("method-unknown", lambda d: d.update(method="variance"), "unknown importance method"),
    ("models-string", lambda d: d.update(models="abc"), "field 'models' is 'abc', not a list"),
    ("models-numbers", lambda d: d.update(models=[1, 2]), "models must be a list of model names"),
    ("threshold-string", lambda d: d.update(threshold="low"), "field 'threshold' is 'low'"),
    ("seed-string", lambda d: d.update(seed="x"), "field 'seed' is 'x'"),
    ("text_set_id-number", lambda d: d.update(text_set_id=5), "field 'text_set_id' is 5, not a string"),
    ("unbound-and-id", lambda d: d.update(unbound=True), "both text_set_id"),
    ("weights-edited", lambda d: d["texts"][0].update(w=d["texts"][0]["w"] * 2), "not c/(nπ)"),
    ("format-other", lambda d: d.update(format="other"), "not an lmmap subset"),
]


@pytest.mark.parametrize("mutate, fragment", [pytest.param(m, f, id=i) for i, m, f in SUBSET_FILE_CASES])
def test_damaged_subset_file_is_a_one_line_format_error(store, tmp_path, mutate, fragment):
    store, _, _ = store
    info = select(store, "ls", 60, random_state=0).to_dict()
    mutate(info)
    p = tmp_path / "SUBSET.json"
    p.write_text(json.dumps(info))
    with pytest.raises(FormatError) as exc:
        Subset.load(p)
    msg = str(exc.value)
    assert "\n" not in msg and str(p) in msg and fragment in msg, msg


@pytest.mark.parametrize("content", ["[1, 2]", '"text"', "null", "{not json", "[" * 100_000, '{"format": "lmmap-subset"}'])
def test_subset_file_that_is_not_a_subset(tmp_path, content):
    p = tmp_path / "SUBSET.json"
    p.write_text(content)
    with pytest.raises(FormatError) as exc:
        Subset.load(p)
    assert "\n" not in str(exc.value) and str(p) in str(exc.value)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "7"])
def test_select_refuses_bad_n(store, bad):
    store, _, _ = store
    with pytest.raises(LmmapError, match="positive integer"):
        select(store, "ls", bad)


def test_select_refuses_unknown_method_and_empty_store(store, tmp_path):
    store, _, _ = store
    with pytest.raises(LmmapError, match="unknown importance method"):
        select(store, "variance", 10)
    empty = Store.create(tmp_path / "empty", TextSet.from_texts(["a text", "another"]))
    with pytest.raises(LmmapError, match="no model"):
        select(empty, "ls", 10)


def test_texts_every_model_scores_alike_are_excluded_and_counted(tmp_path):
    N = 80
    rng = np.random.default_rng(5)
    alike = [7, 20, 33]
    other = np.setdiff1d(np.arange(N), alike)
    E = rng.normal(size=(6, N)) * 20
    E[:, alike] = 0
    E[:, other] -= E[:, other].mean(axis=1, keepdims=True)
    L = rng.normal(-400, 20, size=(6, 1)) + rng.normal(0, 30, size=(1, N)) + E
    store = Store.create(tmp_path / "s", TextSet.from_texts([f"t{i}" for i in range(N)]))
    store.write_models([{"name": f"m{i}", "loglik": row} for i, row in enumerate(L)])
    sub = select(store, "ls", 5000, random_state=0, clip=False)  # clipping would break the exact structure
    assert sub.n_excluded == 3
    assert not set(alike) & set(sub.text_pos)
    assert sub.d == N - 3  # 5000 draws reach every other text
    assert select(store, "uniform", 10, clip=False).n_excluded == 0


# -- the subset map end to end ------------------------------------------------------------------


def test_subset_map_from_store_end_to_end(store):
    store, names, L = store
    sub = select(store, "ls", 90, random_state=7)
    mm = ModelMap.from_store(store, subset=sub)
    N = 120
    # By hand: clip with the stored threshold, w-weighted row centring, column centring.
    Ld = np.maximum(L[:, sub.text_pos], sub.threshold)
    w = sub.weights
    Qd = Ld - (Ld @ w / w.sum())[:, None]
    Qd -= Qd.mean(axis=0, keepdims=True)
    np.testing.assert_allclose(mm.Q, Qd, atol=1e-9)
    diff = Qd[:, None, :] - Qd[None, :, :]
    G = (w * diff**2).sum(axis=2)
    np.testing.assert_allclose(mm.kl(), G / (2 * N), rtol=1e-9, atol=1e-12)
    assert mm.threshold == sub.threshold and mm.n_texts == N
    # Features Q̃ W^{1/2}: plain distances equal the weighted ones.
    X = mm.features()
    np.testing.assert_allclose(core.squared_distances(X), G, rtol=1e-9, atol=1e-9)
    # Neighbours: families stay together.
    nb = mm.neighbor_table(k=3)
    same = [a.split("/")[0] == b.split("/")[0] for a, b in zip(nb["model"], nb["neighbor"])]
    assert np.mean(same) == 1.0
    # The map's KL agrees with the full map's to within the resampling error.
    full = ModelMap.from_store(store)
    off = ~np.eye(len(names), dtype=bool)
    r = np.corrcoef(mm.kl()[off], full.kl()[off])[0, 1]
    assert r > 0.98
    coords = mm.embed("pca")
    assert coords.shape == (len(names), 2)


def test_subset_map_needs_the_texts(store):
    store, names, L = store
    sub = select(store, "ls", 90, random_state=7)
    store.write_model("partial", L[0, :10] - 1, text_pos=np.arange(10))
    with pytest.raises(LmmapError, match="lacks"):
        ModelMap.from_store(store, models=names + ["partial"], subset=sub)


# -- the command line ------------------------------------------------------------------------


def test_cli_select_and_map_from_subset(store, tmp_path):
    store, names, _ = store
    out = tmp_path / "SUBSET.json"
    texts = tmp_path / "sub.jsonl"
    res = runner.invoke(
        app,
        ["select", "--store", str(store.path), "--method", "kl", "--n", "70", "--seed", "5", "-o", str(out),
         "--exclude", names[0], "--texts-out", str(texts)],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    sub = Subset.load(out)
    assert sub.method == "kl" and sub.n == 70 and sub.random_state == 5 and names[0] not in sub.models
    assert len(texts.read_text().splitlines()) == sub.d
    assert "unique texts" in res.output
    mm = ModelMap.from_store(store, subset=sub)
    assert mm.K == len(names)  # every stored model can be mapped on the subset's texts
    res = runner.invoke(
        app, ["map", "--store", str(store.path), "--subset", str(out), "-o", str(tmp_path / "map"), "--embedding", "pca"],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    kl = pd.read_csv(tmp_path / "map" / "kl.csv", index_col="model")
    np.testing.assert_allclose(kl.loc[mm.names, mm.names].to_numpy(), mm.kl(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("n,msg", [("0", "positive integer"), ("-4", "positive integer"), ("2.5", "positive integer"), ("many", "positive integer")])
def test_cli_select_bad_n(store, tmp_path, n, msg):
    store, _, _ = store
    proc = subprocess.run(
        [sys.executable, "-m", "lmmap", "select", "--store", str(store.path), "--method", "ls", "--n", n, "-o", str(tmp_path / "s.json")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert msg in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


def test_report_writer_of_a_subset(store, tmp_path):
    from lmmap.report import select as writer

    store, _, _ = store
    sub = select(store, "ls", 60, random_state=2)
    paths = writer.write(sub, tmp_path / "out", texts=True)
    assert set(paths) == {"SUBSET.json", "texts.jsonl"}
    back = Subset.load(paths["SUBSET.json"])
    np.testing.assert_array_equal(back.text_pos, sub.text_pos)
    assert len(paths["texts.jsonl"].read_text().splitlines()) == sub.d

"""The store as a transaction: names never hidden, imports all or nothing (even when killed), partial
vectors never breaking the store, non-physical values refused, and the store's repair tools."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_main import run_main

from lmmap.exceptions import InputError, LmmapError, LmmapWarning
from lmmap.data.formats import read_vectors
from lmmap.data.transfer import export_vectors, import_vectors
from lmmap.data.store import RECORD_KEY, Store, legacy_filename, model_filename
from lmmap.data.texts import TextSet

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

HARD_NAMES = [".hidden", "..", "../../x", "a/b", "x" * 300, "é" * 100, "[bold]x", "[/bold]", "Ab", "aB"]


def lmmap(*args, check=True) -> subprocess.CompletedProcess:
    """Run the real `lmmap` entry point in this process (output captured; a subprocess costs seconds)."""
    code, out, err = run_main(*args)
    p = subprocess.CompletedProcess(args, code, out, " ".join(err.split()))
    if check:
        assert p.returncode == 0, p.stdout + p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    return p


@pytest.fixture
def texts_file(tmp_path):
    p = tmp_path / "texts.jsonl"
    TextSet.from_texts([f"text number {i} " * 4 for i in range(8)]).save(p)
    return p


def vectors(k, n=8, seed=0):
    return -np.random.default_rng(seed).uniform(10, 100, size=(k, n))


def stray_files(store_path: Path) -> list[str]:
    out = [str(p.relative_to(store_path)) for p in store_path.rglob("*.tmp")]
    staging = store_path / ".staging"
    if staging.exists():
        out += [str(p.relative_to(store_path)) for p in staging.iterdir()]
    return out


# -- 1. names ------------------------------------------------------------------------------------


def test_file_names_are_visible_bounded_and_distinct():
    stems = [model_filename(n) for n in HARD_NAMES]
    assert len(set(stems)) == len(stems)
    assert len({s.lower() for s in stems}) == len(stems)  # also on a case-insensitive file system
    for n, f in zip(HARD_NAMES, stems):
        assert not f.startswith(".") and "/" not in f and len(f.encode()) < 255, (n, f)
    assert model_filename("org/name") == "org%2Fname.parquet"  # readable
    assert model_filename("a~b") != model_filename("a%7Eb")
    with pytest.raises(InputError, match="cannot be empty"):
        model_filename("")


def test_hard_names_import_and_are_listed_exported_and_mapped_once(tmp_path, texts_file):
    npz = tmp_path / "v.npz"
    L = vectors(len(HARD_NAMES))
    np.savez(npz, L=L, models=np.array(HARD_NAMES + []))
    store = tmp_path / "store"
    lmmap("import", "--vectors", npz, "--texts", texts_file, "--store", store)
    listed = json.loads(lmmap("models", "--store", store, "--format", "json").stdout)
    assert sorted(r["model"] for r in listed) == sorted(HARD_NAMES)
    for suffix in ("npz", "parquet"):
        out = tmp_path / f"out.{suffix}"
        lmmap("export", "-o", out, "--store", store)
        back = read_vectors(out)
        assert sorted(back.names) == sorted(HARD_NAMES)
        np.testing.assert_array_equal(back.L[[back.names.index(n) for n in HARD_NAMES]], L)
    lmmap("map", "-o", tmp_path / "map", "--store", store, "--embedding", "pca")
    coords = pd.read_csv(tmp_path / "map" / "coords.csv", keep_default_na=False)
    assert sorted(coords["model"]) == sorted(HARD_NAMES)
    # a second import of the same names is refused as a whole
    p = lmmap("import", "--vectors", npz, "--store", store, check=False)
    assert p.returncode == 1 and "10 model(s) already in the store" in p.stderr


def test_stores_written_by_0_1_0_are_read_and_repaired(tmp_path, texts_file):
    store = Store.create(tmp_path / "store", TextSet.load(texts_file))
    # what lmmap 0.1.0 wrote: percent-encoded names, leading dots and upper case kept
    for name, seed in (("./my-checkpoint", 1), ("EleutherAI/pythia-70m", 2)):
        t = pa.table({"text_pos": pa.array(np.arange(8), pa.int32()), "loglik": vectors(1, seed=seed)[0],
                      "n_tokens": pa.array(np.full(8, 5), pa.int32()), "truncated": np.zeros(8, bool)})
        rec = {"model": name, "convention": "reference", "scorer": "import", "n_scored": 8, "n_texts": 8,
               "text_set_id": store.text_set_id, "added_ns": seed}
        pq.write_table(t.replace_schema_metadata({RECORD_KEY: json.dumps(rec).encode()}),
                       store.path / "models" / legacy_filename(name))
    (store.path / "models" / ".0123abcd.tmp").write_bytes(b"half")  # a 0.1.0 import killed midway
    assert (store.path / "models" / ".%2Fmy-checkpoint.parquet").exists()
    assert store.model_names() == ["./my-checkpoint", "EleutherAI/pythia-70m"]
    assert store.has_model("./my-checkpoint") and store.matrix()[1].shape == (2, 8)
    report = Store(store.path, recover=False).check()
    assert len(report.old_names) == 2 and report.stray_files == ["models/.0123abcd.tmp"]
    p = lmmap("doctor", "--store", store.path, check=False)
    assert p.returncode == 1 and "0.1.0-style name" in p.stdout and "doctor --repair" in p.stdout
    lmmap("doctor", "--repair", "--store", store.path)
    assert sorted(p.name for p in (store.path / "models").iterdir()) == sorted(
        model_filename(n) for n in ("./my-checkpoint", "EleutherAI/pythia-70m"))
    assert Store(store.path).model_names() == ["./my-checkpoint", "EleutherAI/pythia-70m"]
    assert "no problems found (2 models)" in lmmap("doctor", "--store", store.path).stdout


# -- 2. all or nothing ------------------------------------------------------------------------------


def test_metadata_clash_and_duplicates_are_decided_before_anything_is_stored(tmp_path, texts_file):
    store = tmp_path / "store"
    np.savez(tmp_path / "a.npz", L=vectors(2), models=np.array(["m1", "m2"]))
    (tmp_path / "a.csv").write_text("model,size\nm1,7\nm2,13\n")
    import_vectors(store, tmp_path / "a.npz", texts=texts_file, metadata=tmp_path / "a.csv")
    # `size` was numeric; now '7B' arrives: stored as text with a note, models and metadata together
    np.savez(tmp_path / "b.npz", L=vectors(2, seed=1), models=np.array(["m3", "m4"]))
    (tmp_path / "b.csv").write_text("model,size\nm3,7B\nm4,1.5B\nghost,3\n")
    with pytest.warns(LmmapWarning) as notes:
        import_vectors(store, tmp_path / "b.npz", metadata=tmp_path / "b.csv")
    text = " | ".join(str(w.message) for w in notes)
    assert "'size'" in text and "stored as text" in text and "'ghost'" in text
    md = Store(store).metadata()
    assert md["size"].tolist() == ["7", "13", "7B", "1.5B"]
    # a metadata file naming a model twice: refused, nothing stored
    np.savez(tmp_path / "c.npz", L=vectors(1, seed=2), models=np.array(["m5"]),
             metadata_json=np.array(json.dumps([{"model": "m5", "t": 1}, {"model": "m5", "t": 2}])))
    with pytest.raises(LmmapError, match="m5"):
        import_vectors(store, tmp_path / "c.npz")
    assert Store(store).model_names() == ["m1", "m2", "m3", "m4"] and stray_files(Path(store)) == []


def _import_cmd(npz, store):
    return [sys.executable, "-m", "lmmap", "import", "--vectors", str(npz), "--store", str(store)]


@pytest.mark.slow  # ~40 s: 13 real `lmmap import` processes
def test_import_killed_at_random_moments_leaves_none_or_all(tmp_path):
    """SIGKILL and SIGINT a real `lmmap import` of 200 models × 2,000 texts at 12 moments."""
    n_models, n_texts = 200, 2000
    ts = TextSet.from_texts([f"t{i}" for i in range(n_texts)])
    npz = tmp_path / "big.npz"
    names = [f"org/model-{i}" for i in range(n_models)]
    np.savez(npz, L=-np.random.default_rng(0).uniform(1, 500, size=(n_models, n_texts)), models=np.array(names))
    rng = random.Random(1)
    # first the length of an uninterrupted run, to spread the kills over it
    ref = Store.create(tmp_path / "ref", ts)
    t0 = time.perf_counter()
    subprocess.run(_import_cmd(npz, ref.path), env=ENV, check=True, capture_output=True, timeout=300)
    duration = time.perf_counter() - t0
    assert len(ref.model_names()) == n_models
    outcomes = []
    for trial in range(12):
        store = Store.create(tmp_path / f"s{trial}", ts)
        sig = signal.SIGINT if trial % 3 == 2 else signal.SIGKILL
        proc = subprocess.Popen(_import_cmd(npz, store.path), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if trial < 4:  # right when the first staged model file appears
            deadline = time.time() + 120
            while not list((store.path / ".staging").glob("*/*.parquet")) and proc.poll() is None:
                assert time.time() < deadline
                time.sleep(0.0005)
        elif sig == signal.SIGINT:
            # Ctrl-C once lmmap runs (a Ctrl-C while Python is still importing modules is the interpreter's)
            deadline = time.time() + 120
            while not (store.path / ".staging").exists() and proc.poll() is None:
                assert time.time() < deadline
                time.sleep(0.001)
            time.sleep(rng.uniform(0, 0.3) * duration)
        else:
            time.sleep(rng.uniform(0.3, 1.1) * duration)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
        err = err.decode()
        assert "Traceback" not in err, err
        if sig == signal.SIGINT and proc.returncode == 130:
            assert "interrupted: nothing was imported" in err or "committed" in err, err
        if trial % 4 == 0:
            lmmap("models", "--store", store.path)  # the next command cleans up ...
        Store(store.path)  # ... as does opening the store, which every command does first
        n = len(Store(store.path).model_names())
        assert n in (0, n_models), (trial, sig, n)
        assert stray_files(store.path) == [], (trial, stray_files(store.path))
        if n:
            np.testing.assert_array_equal(Store(store.path).matrix()[1], ref.matrix()[1])
        outcomes.append((sig.name, proc.returncode, n))
    # the kills did hit the import before its end at least once
    assert any(n == 0 for _, _, n in outcomes), outcomes
    print("kill outcomes (signal, exit code, models after):", outcomes)


def test_a_replace_killed_midway_is_rolled_forward_by_the_next_command(tmp_path, texts_file):
    """The state a kill between the journal and the last rename leaves: the next opener completes it."""
    store = Store.create(tmp_path / "store", TextSet.load(texts_file))
    store.write_models([{"name": n, "loglik": v} for n, v in zip("pqr", vectors(3))])
    bad = vectors(3, seed=5)
    bad[2, 4] = np.inf
    with pytest.raises(LmmapError, match="'r' has 1 non-finite"):
        store.write_models([{"name": n, "loglik": v} for n, v in zip("pqr", bad)], replace=True)
    np.testing.assert_array_equal(store.matrix()[1], vectors(3))  # refused as a whole
    from lmmap.data.storage import local as store_mod

    real = store_mod._apply

    def die_after_first_rename(root, ops, txdir):
        real(root, ops[:1], txdir)
        raise SystemExit("killed")

    store_mod._apply = die_after_first_rename
    try:
        with pytest.raises(SystemExit):
            store.write_models([{"name": n, "loglik": v} for n, v in zip("pqr", vectors(3, seed=7))], replace=True,
                               metadata=pd.DataFrame({"model": ["p"], "family": ["x"]}))
    finally:
        store_mod._apply = real
    assert list((store.path / ".staging").glob("*/COMMIT"))  # half published: p new, q and r old
    np.testing.assert_array_equal(pq.read_table(store.path / "models" / "q.parquet")["loglik"], vectors(3)[1])
    reopened = Store(store.path)
    np.testing.assert_array_equal(reopened.matrix()[1], vectors(3, seed=7))
    assert reopened.metadata().loc["p", "family"] == "x"
    assert stray_files(store.path) == []


# -- 3. partial vectors ---------------------------------------------------------------------------


def test_partial_models_are_left_out_with_a_note_and_exported_as_they_are(tmp_path, texts_file):
    store = Store.create(tmp_path / "store", TextSet.load(texts_file))
    store.write_models([{"name": n, "loglik": v} for n, v in zip(["a", "b"], vectors(2))])
    store.write_model("newm", vectors(1, n=3, seed=9)[0], text_pos=[6, 1, 4])
    with pytest.warns(LmmapWarning, match=r"left out 1 partial model.*'newm' \(3 of 8 texts\).*lmmap score NAME"):
        names, L = store.matrix()
    assert names == ["a", "b"]
    p = lmmap("export", "-o", tmp_path / "all.parquet", "--store", store.path)
    long = pd.read_parquet(tmp_path / "all.parquet")
    assert len(long) == 2 * 8 + 3 and sorted(long.loc[long.model == "newm", "text_pos"]) == [1, 4, 6]
    p = lmmap("export", "-o", tmp_path / "w.csv", "--store", store.path)
    assert "left out 1 partial model" in p.stderr and "--include-partial" in p.stderr
    assert read_vectors(tmp_path / "w.csv").names == ["a", "b"]
    with pytest.warns(LmmapWarning, match="left out 1 partial"):
        assert read_vectors(export_vectors(store, tmp_path / "w2.npz")).names == ["a", "b"]
    z = np.load(export_vectors(store, tmp_path / "w3.npz", include_partial=True))
    row = z["L"][list(z["models"]).index("newm")]
    assert np.isnan(row[[0, 2, 3, 5, 7]]).all() and row[1] == vectors(1, n=3, seed=9)[0][1]


def test_rm_removes_models_and_their_metadata_atomically(tmp_path, texts_file):
    store = Store.create(tmp_path / "store", TextSet.load(texts_file))
    store.write_models([{"name": n, "loglik": v} for n, v in zip(["a", "b", "c"], vectors(3))],
                       metadata=pd.DataFrame({"model": ["a", "b", "c"], "family": ["x", "y", "z"]}))
    p = lmmap("rm", "a", "nope", "--store", store.path, check=False)
    assert p.returncode == 1 and "'nope'" in p.stderr and "nothing was removed" in p.stderr
    assert store.model_names() == ["a", "b", "c"]
    p = lmmap("rm", "a", "c", "--store", store.path)
    assert "removed 2 model(s)" in p.stdout
    assert store.model_names() == ["b"] and store.metadata().index.tolist() == ["b"]
    assert stray_files(store.path) == []


# -- 4. values ----------------------------------------------------------------------------------


def test_non_physical_values_and_bogus_conventions(tmp_path, texts_file):
    store = tmp_path / "store"
    L = vectors(3)
    L[1, 5] = -3e150
    np.savez(tmp_path / "huge.npz", L=L, models=np.array(["ok", "huge", "ok2"]))
    p = lmmap("import", "--vectors", tmp_path / "huge.npz", "--texts", texts_file, "--store", store, check=False)
    assert p.returncode == 1 and "'huge'" in p.stderr and "text position 5" in p.stderr
    assert Store(store).model_names() == []
    L[1, 5] = 0.25
    np.savez(tmp_path / "pos.npz", L=L, models=np.array(["ok", "pos", "ok2"]))
    p = lmmap("import", "--vectors", tmp_path / "pos.npz", "--store", store)
    assert "note:" in p.stderr and "'pos' has 1 positive" in p.stderr
    assert Store(store).model_names() == ["ok", "pos", "ok2"]
    np.savez(tmp_path / "c.npz", L=vectors(1), models=np.array(["c"]))
    p = lmmap("import", "--vectors", tmp_path / "c.npz", "--store", store, "--convention", "bogus", check=False)
    assert p.returncode == 1 and "--convention must be one of reference, full" in p.stderr
    np.savez(tmp_path / "d.npz", L=vectors(1), models=np.array(["d"]), text_pos=np.arange(8) + 0.5)
    with pytest.raises(LmmapError, match="whole"):
        import_vectors(store, tmp_path / "d.npz")
    assert "c" not in Store(store).model_names() and "d" not in Store(store).model_names()


# -- doctor ---------------------------------------------------------------------------------------


def test_doctor_reports_and_repairs_leftovers(tmp_path, texts_file):
    store = Store.create(tmp_path / "store", TextSet.load(texts_file))
    store.write_model("m", vectors(1)[0], record={"settings_key": "k1"})
    # a dead transaction (no journal), a dead writer's temporary file, an orphan checkpoint, a damaged file
    dead = store.path / ".staging" / "123-999999-dead"
    dead.mkdir(parents=True)
    (dead / "000001.parquet").write_bytes(b"x")
    (store.path / ".metadata.parquet.999999.abc.tmp").write_bytes(b"x")
    store.save_checkpoint("m", "k1", [0, 1], [-1.0, -2.0], [3, 3], [False, False])
    (store.path / "models" / "junk.parquet").write_bytes(b"not parquet")
    rep = Store(store.path, recover=False).check()
    assert rep.staging and rep.stray_files and rep.orphan_checkpoints and rep.unreadable == [
        "models/junk.parquet (not a readable Parquet file (ArrowInvalid))"]
    rep = Store(store.path, recover=False).check(repair=True)
    assert rep.repaired
    again = Store(store.path, recover=False).check()
    assert again.ok, again.problems()
    assert (store.path / "damaged" / "junk.parquet").exists() and store.model_names() == ["m"]


# -- scoring: names, completing a partial model, races, messages ------------------------------------


@pytest.fixture
def code_store(tmp_path, stdlib_texts):
    chunks = [t[i:i + 300] for t in stdlib_texts[20:26] for i in range(0, 6000, 300)]
    return Store.create(tmp_path / "store", TextSet.from_texts(chunks[:40]))


def _cli(args, cwd=None):
    from typer.testing import CliRunner

    from lmmap.cli import app

    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return CliRunner().invoke(app, [str(a) for a in args])
    finally:
        os.chdir(old)


def test_a_model_scored_from_a_path_gets_a_short_name_and_is_listed(tmp_path, code_store, tiny_gpt2_dir):
    import shutil

    work = tmp_path / "work"
    shutil.copytree(tiny_gpt2_dir, work / "my-checkpoint")
    args = ["score", "./my-checkpoint", "--store", code_store.path, "--device", "cpu", "--no-progress"]
    r = _cli(args, cwd=work)
    assert r.exit_code == 0, r.output
    assert code_store.model_names() == ["my-checkpoint"]
    assert list((code_store.path / "models").iterdir()) == [code_store.path / "models" / "my-checkpoint.parquet"]
    r = _cli(args, cwd=work)
    assert r.exit_code == 0 and "already in the store" in r.output and "1 skipped" in r.output
    # two models that would get one name
    shutil.copytree(tiny_gpt2_dir, work / "other" / "my-checkpoint")
    from lmmap.scoring import score_models

    with pytest.raises(InputError, match=r"other/my-checkpoint'.*would both be stored as 'my-checkpoint'"):
        score_models(code_store, [str(work / "other" / "my-checkpoint"), str(work / "my-checkpoint")],
                     device="cpu", progress=False, replace=True)


def test_score_name_completes_a_partial_model_with_only_the_missing_texts(tmp_path, code_store, tiny_gpt2_dir):
    from lmmap.scoring import score_models

    score_models(code_store, [str(tiny_gpt2_dir)], names=["tiny"], text_pos=[0, 3, 5], device="cpu", progress=False)
    with pytest.warns(LmmapWarning, match="'tiny' \\(3 of 40"):
        with pytest.raises(LmmapError, match="no model in the store"):
            code_store.matrix()
    r = _cli(["score", "tiny", "--store", code_store.path, "--device", "cpu", "--no-progress"], cwd=tmp_path)
    assert r.exit_code == 0, r.output
    rec = code_store.record("tiny")
    assert rec["n_scored"] == 40 and rec["n_texts_scored_this_run"] == 37 and rec["n_texts_resumed"] == 3
    whole = Store.create(tmp_path / "whole", code_store.texts)
    score_models(whole, [str(tiny_gpt2_dir)], names=["tiny"], device="cpu", progress=False)
    np.testing.assert_allclose(code_store.matrix()[1], whole.matrix()[1], atol=1e-4, rtol=0)
    # an imported model cannot be completed by name: it says what to do
    code_store.write_model("imported", -np.ones(2), text_pos=[0, 1])
    with pytest.raises(InputError, match="'imported' was imported.*'imported'"):
        score_models(code_store, ["imported"], device="cpu", progress=False)


def test_same_model_race_is_reported_as_completed_by_another_process(code_store, tiny_gpt2_dir):
    from lmmap.scoring import score_models

    real = code_store.write_models

    def another_process_finishes_first(*args, **kwargs):
        real(*args, **kwargs)  # the winner stores the same vector (same settings) ...
        code_store.save_checkpoint("tiny-gpt2", "x", [0], [-1.0], [1], [False])
        return real(*args, **kwargs)  # ... and this process's write finds it there

    code_store.write_models = another_process_finishes_first
    st = score_models(code_store, [str(tiny_gpt2_dir)], device="cpu", progress=False)["tiny-gpt2"]
    assert st.ok and st.status == "skipped" and "completed by another process" in st.message
    assert code_store.model_names() == ["tiny-gpt2"] and not (code_store.path / "partial" / "tiny-gpt2").exists()


def test_a_model_directory_without_tokenizer_says_so(tmp_path, code_store, tiny_gpt2_dir):
    import shutil

    from lmmap.scoring import score_models

    d = tmp_path / "no-tok"
    shutil.copytree(tiny_gpt2_dir, d)
    for f in d.iterdir():
        if "token" in f.name or f.name in ("vocab.json", "merges.txt"):
            f.unlink()
    st = score_models(code_store, [str(d)], device="cpu", progress=False)["no-tok"]
    assert st.status == "failed" and "no tokenizer files" in st.message and "text" not in st.message.split(";")[0]


@pytest.mark.slow  # ~25 s: a real `lmmap score` process has to import torch and transformers first
def test_ctrl_c_during_score_says_what_was_kept(tmp_path, code_store, tiny_gpt2_dir):
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmmap", "score", str(tiny_gpt2_dir), "--store", str(code_store.path), "--device",
         "cpu", "--no-progress", "--checkpoint-every", "0", "--batch-tokens", "64"],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while not list((code_store.path / "partial").glob("*/*/chunk-*.parquet")):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    err = " ".join(err.decode().split())
    assert proc.returncode == 130, err
    assert "interrupted:" in err and "checkpoint chunk(s) of 'tiny-gpt2' kept; rerun" in err and "Traceback" not in err
    assert not code_store.model_names()

"""A store from elsewhere cannot touch anything outside itself; readers never see half a change; no update is lost;
a change the file system refuses leaves the store exactly as before; damage is a one-line error or a `doctor`
finding, never an internal error (issue 21 §1–3).

Each test asserts the invariant (files outside the store untouched, the models a reader sees, the texts a model
keeps), not only the message.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_main import run_main

from lmmap.data.storage import local as store_mod
from lmmap.data.store import RECORD_KEY, Store, legacy_filename, model_filename
from lmmap.data.texts import TextSet
from lmmap.exceptions import LmmapError, LmmapWarning, StoreError

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
N = 8


def lmmap(*args) -> tuple[int, str]:
    """The real entry point in this process: (exit code, stdout + stderr on one line per message)."""
    code, out, err = run_main(*map(str, args))
    assert "Traceback" not in err and "internal error" not in err, err
    return code, out + err


def vectors(k, n=N, seed=0):
    return -np.random.default_rng(seed).uniform(10, 100, size=(k, n))


@pytest.fixture
def store(tmp_path) -> Store:
    s = Store.create(tmp_path / "store", TextSet.from_texts([f"text number {i} " * 4 for i in range(N)]))
    s.write_models([{"name": n, "loglik": v} for n, v in zip(["a", "b", "c"], vectors(3))])
    return s


@pytest.fixture
def outside(tmp_path) -> dict[Path, bytes]:
    """Files outside the store that no command may touch: their bytes, to compare after."""
    d = tmp_path / "outside"
    d.mkdir()
    files = {d / "victim.txt": b"precious\n", d / "sub" / "other.parquet": b"not yours", d / "x.tmp": b"temp"}
    for p, b in files.items():
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b)
    return files


def untouched(outside: dict[Path, bytes]) -> bool:
    root = next(iter(outside)).parent
    now = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    return now == outside


def journal(store: Store, ops, name="1-2-abc", raw: bytes | None = None) -> Path:
    d = store.path / ".staging" / name
    d.mkdir(parents=True)
    (d / "COMMIT").write_bytes(raw if raw is not None else json.dumps({"txid": name, "ops": ops}).encode())
    return d


# -- 1. a hostile store touches nothing outside itself ---------------------------------------------------------


def hostile_journals(store: Store, outside) -> list:
    victim = next(iter(outside))
    rel = os.path.relpath(victim, store.path)
    return [
        [["delete", rel]],
        [["delete", str(victim)]],
        [["delete", "models/../../outside/victim.txt"]],
        [["rename", str(victim), "store.json"]],
        [["rename", rel, "models/zz.parquet"]],
        [["rename", ".staging/1-2-abc/../../../outside/victim.txt", "metadata.parquet"]],
        [["rename", ".staging/1-2-abc/f.parquet", "../outside/new.txt"]],
        [["rename", ".staging/1-2-abc/f.parquet", "texts.parquet"]],
        [["rename", ".staging/1-2-abc/f.parquet", "models/sub/x.parquet"]],
        [["delete", "texts.parquet"]],
        [["chmod", "models/a.parquet"]],
    ]


@pytest.mark.parametrize("case", range(11))
def test_a_journal_naming_paths_outside_the_store_is_never_carried_out(store, outside, case):
    before = {p.name: p.read_bytes() for p in (store.path / "models").iterdir()}
    ops = hostile_journals(store, outside)[case]
    d = journal(store, ops)
    (d / "f.parquet").write_bytes(b"staged")
    with pytest.warns(LmmapWarning, match="not carried out|nothing in it was done"):
        s = Store(store.path)  # merely opening a store once carried it out
    assert s.model_names() == ["a", "b", "c"]
    code, out = lmmap("models", "--store", store.path)
    assert code == 0 and "nothing in it was done" in out
    assert untouched(outside)
    assert {p.name: p.read_bytes() for p in (store.path / "models").iterdir()} == before
    code, out = lmmap("doctor", "--store", store.path)
    assert code == 1 and "journal that lmmap did not write" in out
    code, out = lmmap("doctor", "--repair", "--store", store.path)
    assert code == 0, out
    assert not (store.path / ".staging" / d.name).exists() and (store.path / "damaged" / d.name / "COMMIT").exists()
    assert lmmap("doctor", "--store", store.path)[0] == 0
    assert untouched(outside) and Store(store.path).model_names() == ["a", "b", "c"]


@pytest.mark.parametrize("raw", [b'{"txid": 1, "ops": 5}', b"[1, 2]", b'{"ops": [["delete"]]}', b'{"ops": [[1, 2]]}',
                                 b"not json", b"[" * 100_000, b'{"ops": [["rename", "a"]]}', b'"x"'])
def test_malformed_journals_are_damage_reported_and_moved_aside(store, raw):
    d = journal(store, None, raw=raw)
    with pytest.warns(LmmapWarning, match="not a journal lmmap wrote"):
        assert Store(store.path).model_names() == ["a", "b", "c"]
    code, out = lmmap("doctor", "--store", store.path)
    assert code == 1 and "journal that lmmap did not write" in out and d.name in out
    assert lmmap("doctor", "--repair", "--store", store.path)[0] == 0
    assert not d.exists() and lmmap("doctor", "--store", store.path)[0] == 0


def test_a_journal_that_is_a_folder_or_a_link_is_damage(store, outside):
    d = store.path / ".staging" / "1-2-x"
    (d / "COMMIT").mkdir(parents=True)
    e = store.path / ".staging" / "1-2-y"
    e.mkdir()
    (e / "COMMIT").symlink_to(next(iter(outside)))
    with pytest.warns(LmmapWarning):
        assert Store(store.path).model_names() == ["a", "b", "c"]
    code, out = lmmap("doctor", "--repair", "--store", store.path)
    assert code == 0 and untouched(outside) and not d.exists() and not e.exists()


def test_symbolic_links_in_models_are_never_read_and_moved_aside_as_links(store, outside, tmp_path):
    target = next(iter(outside))
    (store.path / "models" / "evil.parquet").symlink_to(target)
    # a link to a real model file elsewhere: still not followed (it could change under the store)
    elsewhere = tmp_path / "elsewhere.parquet"
    shutil.copy(store.path / "models" / "a.parquet", elsewhere)
    os.unlink(store.path / "models" / "a.parquet")
    (store.path / "models" / "a.parquet").symlink_to(elsewhere)
    with pytest.warns(LmmapWarning, match="symbolic link"):
        assert Store(store.path).model_names() == ["b", "c"]
    code, out = lmmap("map", "--store", store.path, "-o", tmp_path / "m")
    assert "unreadable file(s)" in out  # `map` names what it leaves out, like `models`
    code, out = lmmap("doctor", "--store", store.path)
    assert code == 1 and "evil.parquet (a symbolic link, never followed)" in out
    assert lmmap("doctor", "--repair", "--store", store.path)[0] == 0
    assert (store.path / "damaged" / "evil.parquet").is_symlink()  # the link moved, not its target
    assert untouched(outside) and elsewhere.exists()


@pytest.mark.parametrize("folder", [".staging", "partial", "models"])
def test_store_folders_that_link_out_of_the_store_are_never_followed(store, outside, folder):
    out_dir = next(iter(outside)).parent
    # what would be carried out or cleaned if the link were followed: a journal deleting a file, stray temporaries
    j = out_dir / "1-2-abc"
    j.mkdir()
    (j / "COMMIT").write_text(json.dumps({"ops": [["delete", "models/a.parquet"]]}))
    (j / "chunk.tmp").write_text("x")
    outside = {**outside, j / "COMMIT": (j / "COMMIT").read_bytes(), j / "chunk.tmp": b"x"}
    real = store.path / folder
    if real.exists():
        shutil.rmtree(real)
    real.symlink_to(out_dir)
    code, out = lmmap("models", "--store", store.path)
    assert code == 1 and "symbolic link" in out and "doctor --repair" in out
    code, out = lmmap("doctor", "--repair", "--store", store.path)
    assert code == 0, out
    assert not real.is_symlink() and untouched(outside)
    assert lmmap("models", "--store", store.path)[0] == 0


def test_lock_files_that_are_links_are_refused_and_never_created_outside(store, tmp_path):
    target = tmp_path / "outside-lock"
    os.unlink(store.path / ".lock")
    (store.path / ".lock").symlink_to(target)
    code, out = lmmap("rm", "a", "--store", store.path)
    assert code == 1 and ".lock is a symbolic link" in out
    assert not target.exists()


@pytest.mark.parametrize("obstacle", [".staging", "models", "damaged"])
def test_a_file_where_a_folder_belongs_is_moved_aside_by_repair(store, obstacle, tmp_path):
    (store.path / "models" / "junk.parquet").write_bytes(b"junk")  # something for repair to move into damaged/
    p = store.path / obstacle
    if p.is_dir():
        shutil.rmtree(p)
    p.write_text("in the way")
    code, out = lmmap("models", "--store", store.path)
    assert code == 1 and "not a folder" in out and "doctor --repair" in out
    code, out = lmmap("doctor", "--repair", "--store", store.path)
    assert code == 0 and "not a folder of the store" in out, out
    assert (p.is_dir() or obstacle == ".staging") and not p.is_file()  # .staging is made when a change needs it
    assert (store.path / f"{obstacle}.moved-aside").exists() or list(store.path.glob(f"{obstacle}.moved-aside-*"))
    code, out = lmmap("models", "--store", store.path)
    assert code == 0
    want = [] if obstacle == "models" else ["a", "b", "c"]
    assert Store(store.path).model_names() == want


# -- 2. readers see a change whole; no update is lost; a refused change changes nothing ----------------------


_KILL_AT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from lmmap.data.storage import local as store_mod
    from lmmap.data.store import Store
    real, at = store_mod._apply, int(sys.argv[2])

    def killed(root, ops, txdir):
        real(root, ops[:at], txdir)
        os.kill(os.getpid(), signal.SIGKILL)

    store_mod._apply = killed
    s = Store(sys.argv[1])
    names = [f"m{i}" for i in range(5)] + ["a"]
    s.write_models([{"name": n, "loglik": -np.full(8, 7.0 + i)} for i, n in enumerate(names)], replace=True)
""")


@pytest.mark.parametrize("at", [0, 1, 3, 5])
def test_a_reader_that_opened_the_store_before_a_writer_was_killed_mid_apply_sees_it_whole(store, at):
    """A real process killed by SIGKILL after `at` of its 6 renames; a reader opened before reads after."""
    readers = [Store(store.path) for _ in range(3)]
    p = subprocess.run([sys.executable, "-c", _KILL_AT, str(store.path), str(at)], env=ENV, capture_output=True)
    assert p.returncode == -9, p.stderr.decode()
    assert list((store.path / ".staging").glob("*/COMMIT"))  # the half-applied state is on disk
    new = ["a", "b", "c", "m0", "m1", "m2", "m3", "m4"]
    names, L = readers[0].matrix()  # the roll-forward happens after the reader takes the lock
    assert sorted(names) == new and len(L) == 8
    np.testing.assert_array_equal(L[names.index("a")], -np.full(8, 12.0))
    assert sorted(readers[1].model_names()) == new
    assert sorted(readers[2].records()) == new
    assert not list((store.path / ".staging").glob("*/COMMIT"))


def test_a_read_only_store_with_a_half_applied_change_refuses_to_be_read(store, monkeypatch):
    journal(store, [["delete", "models/a.parquet"]])
    reader = Store(store.path, recover=False)
    monkeypatch.setattr(store_mod, "_open_lock", lambda path: (_ for _ in ()).throw(PermissionError(13, "denied")))
    with pytest.raises(StoreError, match="interrupted midway.*read-only"):
        reader.matrix()


def test_two_processes_extending_one_model_with_different_texts_keep_both(tmp_path):
    """The lost update: B extends the partial model while A scores; A's commit merges B's texts in."""
    from lmmap.scoring import score_models

    texts = TextSet.from_texts([f"some text {i} " * (1 + i % 5) for i in range(40)])
    a = Store.create(tmp_path / "s", texts)
    score_models(a, ["m"], text_pos=range(10), backend="fake", progress=False)
    b = Store(a.path)
    real = a.write_models
    calls = []

    def b_extends_first(vectors, **kw):
        if not calls:
            calls.append(1)
            st = score_models(b, ["m"], text_pos=range(20, 30), backend="fake", progress=False)["m"]
            assert st.status == "scored" and st.n_scored == 10
        return real(vectors, **kw)

    a.write_models = b_extends_first
    st = score_models(a, ["m"], text_pos=range(10, 20), backend="fake", progress=False)["m"]
    assert st.status == "scored"
    got = Store(a.path).vectors("m")
    assert got["text_pos"].tolist() == list(range(30))
    assert Store(a.path).record("m")["n_scored"] == 30
    # the merged vector equals scoring the same 30 texts in one go
    ref = Store.create(tmp_path / "ref", texts)
    score_models(ref, ["m"], text_pos=range(30), backend="fake", progress=False)
    np.testing.assert_allclose(got["loglik"], ref.vectors("m")["loglik"], rtol=1e-12)


def test_an_extension_racing_a_rescore_under_other_settings_is_refused_not_merged(tmp_path):
    from lmmap.scoring import score_models

    texts = TextSet.from_texts([f"some text {i} " * (1 + i % 5) for i in range(20)])
    a = Store.create(tmp_path / "s", texts)
    score_models(a, ["m"], text_pos=range(5), backend="fake", progress=False)
    b = Store(a.path)
    real = a.write_models

    def b_rescores_first(vectors, **kw):
        a.write_models = real
        score_models(b, ["m"], convention="full", replace=True, backend="fake", progress=False)
        return real(vectors, **kw)

    a.write_models = b_rescores_first
    st = score_models(a, ["m"], text_pos=range(5, 10), backend="fake", progress=False)["m"]
    assert st.status == "failed" and "other settings" in st.message
    rec = Store(a.path).record("m")
    assert rec["convention"] == "full" and rec["n_scored"] == 20  # B's whole vector, untouched


def _refuse(monkeypatch, fn: str, part: str):
    """Make ``os.<fn>`` fail with a permission error for paths containing ``part`` (root ignores chmod)."""
    real = getattr(os, fn)

    def fake(*args, **kw):
        if any(part in str(a) for a in args[:2]):
            raise PermissionError(13, "Permission denied", str(args[0]))
        return real(*args, **kw)

    monkeypatch.setattr(store_mod.os, fn, fake)


def snapshot(store: Store) -> dict:
    return {str(p.relative_to(store.path)): p.read_bytes() for p in store.path.rglob("*")
            if p.is_file() and not p.name.startswith(".lock")}


@pytest.mark.parametrize("fn,part", [("replace", "models/b"), ("replace", "metadata"), ("replace", "undo-000001")])
def test_rm_refused_by_the_file_system_leaves_the_store_exactly_as_before(store, monkeypatch, fn, part):
    store.set_metadata(pd.DataFrame({"model": ["a", "b"], "family": ["x", "y"]}))
    before = snapshot(store)
    _refuse(monkeypatch, fn, part)
    code, out = lmmap("rm", "a", "b", "--store", store.path)
    assert code == 1 and "nothing was changed" in out and "permission denied" in out, out
    monkeypatch.undo()
    assert snapshot(store) == before
    s = Store(store.path)  # and nothing is rolled forward later
    assert s.model_names() == ["a", "b", "c"] and list(s.metadata().index) == ["a", "b"]
    assert snapshot(store) == before


def test_an_import_refused_by_the_file_system_never_appears_later(store, monkeypatch, tmp_path):
    npz = tmp_path / "v.npz"
    np.savez(npz, L=vectors(3, seed=9), models=np.array(["x", "y", "a"]))
    before = snapshot(store)
    _refuse(monkeypatch, "replace", "models/y")
    code, out = lmmap("import", "--vectors", npz, "--store", store.path, "--replace")
    assert code == 1 and "nothing was changed" in out, out
    monkeypatch.undo()
    assert Store(store.path).model_names() == ["a", "b", "c"] and snapshot(store) == before
    np.testing.assert_array_equal(Store(store.path).matrix()[1], vectors(3))


def test_repair_after_a_kill_during_replace_of_an_old_style_named_model(tmp_path):
    s = Store.create(tmp_path / "s", TextSet.from_texts([f"t{i}" for i in range(N)]))
    s.write_model("Org/Model", vectors(1)[0])
    # as lmmap 0.1.0 named it
    os.replace(s.path / "models" / model_filename("Org/Model"), s.path / "models" / legacy_filename("Org/Model"))
    real = store_mod._apply

    def killed(root, ops, txdir):
        real(root, ops[:1], txdir)  # the new file in place, the old-style one not yet deleted
        raise SystemExit("killed")

    store_mod._apply = killed
    try:
        with pytest.raises(SystemExit):
            s.write_model("Org/Model", vectors(1, seed=3)[0], replace=True)
    finally:
        store_mod._apply = real
    code, out = lmmap("doctor", "--repair", "--store", s.path)
    assert code == 0, out
    s = Store(s.path)
    assert s.model_names() == ["Org/Model"]
    np.testing.assert_array_equal(s.matrix()[1][0], vectors(1, seed=3)[0])
    assert [p.name for p in (s.path / "models").iterdir()] == [model_filename("Org/Model")]


# -- 3. damage is a one-line error or a doctor finding ---------------------------------------------------------


def _set_info(store, **change):
    info = json.loads((store.path / "store.json").read_text())
    for k, v in change.items():
        if v is None:
            info.pop(k, None)
        elif k == "n_texts":
            info["text_set"]["n_texts"] = v
        else:
            info[k] = v
    (store.path / "store.json").write_text(json.dumps(info))


@pytest.mark.parametrize("change", [{"n_texts": "many"}, {"text_set": None}, {"n_texts": -3}, {"version": "1"},
                                    {"text_set": [1]}])
def test_a_damaged_store_json_is_named_in_one_line(store, change):
    _set_info(store, **change)
    for cmd in (["models"], ["doctor"], ["map", "-o", str(store.path.parent / "m")]):
        code, out = lmmap(*cmd, "--store", store.path)
        assert code == 1 and "store.json: damaged" in out, (cmd, out)


def _record_file(store, name, rec_change=None, rows=None):
    p = store.path / "models" / model_filename(name)
    t = pq.read_table(p)
    rec = json.loads(t.schema.metadata[RECORD_KEY])
    if rec_change is not None:
        rec = rec_change(rec)
    if rows is not None:
        t = t.slice(0, rows)
    pq.write_table(t.replace_schema_metadata({RECORD_KEY: json.dumps(rec).encode()}), p)


@pytest.mark.parametrize("damage", [
    lambda s: _record_file(s, "b", lambda r: {**r, "model": 5}),
    lambda s: _record_file(s, "b", lambda r: {**r, "added_ns": "yesterday"}),
    lambda s: _record_file(s, "b", lambda r: {**r, "n_scored": "all"}),
    lambda s: _record_file(s, "b", lambda r: [r]),
    lambda s: _record_file(s, "b", rows=5),
    lambda s: (s.path / "models" / "b.parquet").write_bytes((s.path / "models" / "b.parquet").read_bytes()[:-30]),
])
def test_a_damaged_model_file_is_left_out_with_a_note_and_reported_by_doctor(store, damage, tmp_path):
    damage(store)
    for cmd in (["models"], ["map", "-o", str(tmp_path / "m")], ["export", "-o", str(tmp_path / "e.npz")],
                ["neighbors", "a"]):
        code, out = lmmap(*cmd, "--store", store.path)
        assert "unreadable file(s)" in out and "b.parquet" in out, (cmd, out)
    code, out = lmmap("doctor", "--store", store.path)
    assert code == 1 and "unreadable model file: models/b.parquet (" in out
    assert lmmap("doctor", "--repair", "--store", store.path)[0] == 0
    assert Store(store.path).model_names() == ["a", "c"]


@pytest.mark.parametrize("damage", ["truncated", "no model column", "link"])
def test_damaged_metadata_is_named_and_moved_aside(store, damage, tmp_path):
    store.set_metadata(pd.DataFrame({"model": ["a"], "family": ["x"]}))
    p = store.path / "metadata.parquet"
    if damage == "truncated":
        p.write_bytes(p.read_bytes()[:40])
    elif damage == "no model column":
        pq.write_table(pa.table({"name": ["a"]}), p)
    else:
        p.unlink()
        p.symlink_to(tmp_path / "elsewhere.parquet")
    code, out = lmmap("map", "--store", store.path, "-o", tmp_path / "m")
    assert code == 1 and "metadata.parquet" in out and "doctor --repair" in out
    code, out = lmmap("doctor", "--store", store.path)
    assert code == 1 and "damaged store file: metadata.parquet" in out
    assert lmmap("doctor", "--repair", "--store", store.path)[0] == 0
    assert lmmap("map", "--store", store.path, "-o", tmp_path / "m")[0] == 0


def test_a_truncated_text_set_is_named(store, tmp_path):
    p = store.path / "texts.parquet"
    p.write_bytes(p.read_bytes()[:50])
    code, out = lmmap("score", "x", "--backend", "fake", "--store", store.path)
    assert code == 1 and "texts.parquet" in out and "restore it" in out
    code, out = lmmap("doctor", "--store", store.path)
    assert code == 1 and "damaged store file: texts.parquet" in out


def test_a_model_written_is_readable_by_the_checks_of_a_store(store):
    """The record checks accept everything lmmap writes (no false damage)."""
    store.write_model("p", -np.ones(3), text_pos=[1, 4, 6], record={"convention": "full"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", LmmapWarning)
        assert set(store.records()) == {"a", "b", "c", "p"}
    assert store.check().ok


# -- 5. names that could never be named again are refused at the door ------------------------------------------


@pytest.mark.parametrize("bad", ["\ud800x", "a\rb", "a\x00b", " ", "\t\n", "a\u2028b", "line\nbreak", "\x85"])
def test_names_that_cannot_be_used_afterwards_are_refused_and_nothing_is_stored(store, tmp_path, bad):
    npz = tmp_path / "v.npz"
    np.savez(npz, L=vectors(2, seed=4), models=np.array(["fine", bad]))
    code, out = lmmap("import", "--vectors", npz, "--store", store.path)
    assert code == 1 and "model name" in out and out.count("\n") == 1, out
    assert Store(store.path).model_names() == ["a", "b", "c"]
    with pytest.raises(LmmapError):
        store.write_model(bad, vectors(1)[0])


def test_score_name_of_only_white_space_is_refused(store):
    code, out = lmmap("score", "m", "--backend", "fake", "--name", " ", "--store", store.path)
    assert code == 1 and "white space" in out
    assert Store(store.path).model_names() == ["a", "b", "c"]


def test_a_checkpoint_folder_that_links_out_of_the_store_is_never_written_or_cleared(store, outside):
    out_dir = next(iter(outside)).parent
    (store.path / "partial").mkdir(exist_ok=True)
    (store.path / "partial" / "m").symlink_to(out_dir)
    code, out = lmmap("score", "m", "--backend", "fake", "--store", store.path)
    assert code == 1 and "symbolic link" in out, out
    assert untouched(outside) and not Store(store.path).has_model("m")
    code, out = lmmap("rm", "a", "--store", store.path)
    assert code == 0 and untouched(outside)
    code, out = lmmap("doctor", "--store", store.path)
    assert code == 1 and "partial/m (a symbolic link)" in out
    assert lmmap("doctor", "--repair", "--store", store.path)[0] == 0 and untouched(outside)
    assert (store.path / "damaged" / "m").is_symlink() and lmmap("doctor", "--store", store.path)[0] == 0


# -- state files of analyses live in the store's transactions (issue 22 §3) -------------------------------------


def test_state_files_are_changes_of_the_store_removed_with_their_model_and_known_to_doctor(store):
    store.save_state("adaptive", "a", {"source": "dir/a", "round_size": 32})
    assert store.load_state("adaptive", "a") == {"source": "dir/a", "round_size": 32, "model": "a"}
    assert (store.path / "adaptive" / "a.json").exists() and not list((store.path / ".staging").iterdir())
    assert lmmap("doctor", "--store", store.path)[0] == 0
    code, out = lmmap("rm", "a", "--store", store.path)
    assert code == 0 and not (store.path / "adaptive" / "a.json").exists()
    # the state of a model never stored (a run killed before its first round was stored) is a doctor finding
    store.save_state("adaptive", "ghost", {"source": "x"})
    code, out = lmmap("doctor", "--store", store.path)
    assert code == 1 and "state of a model not in the store" in out and "adaptive/ghost.json" in out
    assert lmmap("doctor", "--repair", "--store", store.path)[0] == 0
    assert store.load_state("adaptive", "ghost") is None and lmmap("doctor", "--store", store.path)[0] == 0


def test_state_files_are_never_written_through_a_link(store, outside):
    out_dir = next(iter(outside)).parent
    (store.path / "adaptive").symlink_to(out_dir)
    with pytest.raises(StoreError, match="symbolic link"):
        store.save_state("adaptive", "a", {"x": 1})
    assert untouched(outside)


# -- re-sweep: attacks on the rewritten store (issue 21, second sweep) ------------------------------------------


def lmmap_process(*args, timeout=60) -> tuple[int | str, str]:
    """``lmmap ARGS`` in a real process, so that a command blocked on a FIFO is seen as 'hang', not as a stuck test."""
    try:
        p = subprocess.run([sys.executable, "-m", "lmmap", *map(str, args)], env=ENV, capture_output=True, text=True,
                           timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return "hang", ""
    out = p.stdout + p.stderr
    assert "Traceback" not in out and "internal error" not in out, out
    return p.returncode, out


def _fifo(p: Path) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(p):
        p.unlink()
    os.mkfifo(p)


def _committed_fifo(store):
    d = journal(store, [["rename", ".staging/1-2-abc/000001.parquet", "metadata.parquet"]])
    _fifo(d / "000001.parquet")


@pytest.mark.parametrize("where", ["metadata.parquet", ".staging/1-2-abc/COMMIT", "staged", "models/z.parquet",
                                   "texts.parquet", "adaptive/a.json", "partial/a/k/chunk-1-1.parquet"])
def test_a_fifo_where_a_file_belongs_never_blocks_a_command(store, where):
    """Opening a FIFO blocks until someone writes to it: every command once hung on one in four places."""
    if where == "staged":
        _committed_fifo(store)
    else:
        _fifo(store.path / where)
    for cmd in (["models"], ["doctor"], ["doctor", "--repair"]):
        code, out = lmmap_process(*cmd, "--store", store.path)
        assert code != "hang", cmd
    if where != "texts.parquet":  # a text set cannot be repaired, only restored
        assert lmmap_process("doctor", "--store", store.path)[0] == 0
        assert Store(store.path).model_names() == ["a", "b", "c"]


def test_a_model_file_that_is_a_fifo_or_a_folder_is_never_opened_and_moved_aside(store):
    _fifo(store.path / "models" / "a.parquet")
    (store.path / "models" / "b.parquet").unlink()
    (store.path / "models" / "b.parquet").mkdir()
    assert not store.has_model("a") and not store.has_model("b")  # once opened: `score a` hung
    code, out = lmmap_process("doctor", "--store", store.path)
    assert code == 1 and "models/a.parquet (a FIFO" in out and "models/b.parquet (a folder" in out
    assert lmmap_process("doctor", "--repair", "--store", store.path)[0] == 0
    assert {p.name for p in (store.path / "damaged").iterdir()} == {"a.parquet", "b.parquet"}
    store.write_models([{"name": n, "loglik": v} for n, v in zip("ab", vectors(2, seed=5))])
    assert Store(store.path).model_names() == ["c", "a", "b"]


def test_a_store_json_that_is_a_link_is_never_read(store, tmp_path):
    elsewhere = tmp_path / "info.json"
    shutil.copy(store.path / "store.json", elsewhere)
    (store.path / "store.json").unlink()
    (store.path / "store.json").symlink_to(elsewhere)
    code, out = lmmap("models", "--store", store.path)
    assert code == 1 and "store.json is a symbolic link" in out and out.count("\n") == 1
    linked = tmp_path / "linked-store"  # the store folder itself may be a link: that is the user's choice
    linked.symlink_to(store.path)
    (store.path / "store.json").unlink()
    shutil.copy(elsewhere, store.path / "store.json")
    assert Store(linked).model_names() == ["a", "b", "c"]


def test_state_and_checkpoint_entries_that_are_links_are_reported_and_moved_aside(store, outside):
    """A link as adaptive/a.json made `rm a` fail forever, its message promising a repair that doctor never did."""
    victim = next(iter(outside))
    (store.path / "adaptive").mkdir()
    (store.path / "adaptive" / "a.json").symlink_to(victim)
    key = store.path / "partial" / "b" / "k"
    key.mkdir(parents=True)
    (key / "chunk-1-1.parquet").symlink_to(victim)
    (store.path / "partial" / "b" / "j").symlink_to(victim.parent)
    with pytest.raises(StoreError, match="symbolic link"):
        store.load_state("adaptive", "a")
    assert len(store.load_checkpoint("b", "k")) == 0  # the linked chunk is never read
    code, out = lmmap("rm", "a", "--store", store.path)
    assert code == 1 and "doctor --repair" in out
    code, out = lmmap("doctor", "--store", store.path)
    assert code == 1 and all(p in out for p in ("adaptive/a.json", "partial/b/k/chunk-1-1.parquet", "partial/b/j"))
    assert lmmap("doctor", "--repair", "--store", store.path)[0] == 0
    assert lmmap("rm", "a", "--store", store.path)[0] == 0
    assert Store(store.path).model_names() == ["b", "c"] and untouched(outside)
    assert all(p.is_symlink() for p in (store.path / "damaged").iterdir())  # the links moved, never their targets


def test_a_file_holding_another_model_is_not_that_name_and_is_never_overwritten(store, tmp_path):
    """models/a.parquet holding model 'zzz': `score a` said 'already in the store' and an import of 'a' replaced it,
    so that 'zzz' vanished."""
    _record_file(store, "a", lambda r: {**r, "model": "zzz"})
    zzz = store.matrix(["zzz"])[1]
    assert not store.has_model("a") and sorted(store.model_names()) == ["b", "c", "zzz"]
    with pytest.raises(StoreError):
        store.vectors("a")
    npz = tmp_path / "v.npz"
    np.savez(npz, L=vectors(1, seed=7), models=np.array(["a"]))
    for extra in ([], ["--replace"]):
        code, out = lmmap("import", "--vectors", npz, "--store", store.path, *extra)
        assert code == 1 and "holds model 'zzz'" in out and "doctor --repair" in out
        np.testing.assert_array_equal(Store(store.path).matrix(["zzz"])[1], zzz)
    assert lmmap("doctor", "--repair", "--store", store.path)[0] == 0
    assert lmmap("import", "--vectors", npz, "--store", store.path)[0] == 0
    s = Store(store.path)
    assert sorted(s.model_names()) == ["a", "b", "c", "zzz"]
    np.testing.assert_array_equal(s.matrix(["zzz"])[1], zzz)
    np.testing.assert_array_equal(s.matrix(["a"])[1], vectors(1, seed=7))


@pytest.mark.parametrize("n", [10**12, 2**31])
def test_a_store_json_claiming_more_texts_than_its_text_set_is_named(store, tmp_path, n):
    """store.json claiming 10¹² texts: map, neighbors and score allocated 7 TiB (internal error)."""
    _set_info(store, n_texts=n)
    for cmd in (["map", "-o", tmp_path / "m"], ["neighbors", "a"], ["score", "x", "--backend", "fake"]):
        code, out = lmmap(*cmd, "--store", store.path)
        assert code == 1 and "store.json: damaged" in out, (cmd, out)


def test_a_journal_that_can_never_be_completed_is_not_a_dead_end(store):
    """A journal renaming onto a folder, or to a name too long for any file system, blocked every command,
    `doctor --repair` included."""
    d = journal(store, [["rename", ".staging/1-2-abc/000001.parquet", "models/q.parquet"]])
    t = pq.read_table(store.path / "models" / "a.parquet")
    rec = {**json.loads(t.schema.metadata[RECORD_KEY]), "model": "q"}
    pq.write_table(t.replace_schema_metadata({RECORD_KEY: json.dumps(rec).encode()}), d / "000001.parquet")
    (store.path / "models" / "q.parquet").mkdir()
    (store.path / "models" / "q.parquet" / "inside").write_text("kept")
    code, out = lmmap("models", "--store", store.path)
    assert code == 1 and "cannot be completed" in out and "doctor --repair" in out
    code, out = lmmap("doctor", "--store", store.path)  # looks without rolling forward
    assert code == 1 and "models/q.parquet (a folder" in out
    assert lmmap("doctor", "--repair", "--store", store.path)[0] == 0
    assert (store.path / "damaged" / "q.parquet" / "inside").read_text() == "kept"
    assert not d.exists() and sorted(Store(store.path).model_names()) == ["a", "b", "c", "q"]  # the change was completed
    long = journal(store, [["rename", ".staging/1-2-long/f", "models/" + "x" * 300 + ".parquet"]], name="1-2-long")
    (long / "f").write_bytes(b"x")
    with pytest.warns(LmmapWarning, match="not a journal lmmap wrote"):
        assert sorted(Store(store.path).model_names()) == ["a", "b", "c", "q"]
    assert lmmap("doctor", "--repair", "--store", store.path)[0] == 0
    assert (store.path / "damaged" / "1-2-long").is_dir() and lmmap("doctor", "--store", store.path)[0] == 0


def test_a_write_through_a_store_opened_without_recovery_never_follows_a_staging_link(store, tmp_path):
    """doctor opens a store with recover=False: its repairs staged a change through a .staging link."""
    out_dir = tmp_path / "elsewhere"
    out_dir.mkdir()
    s = Store(store.path, recover=False)
    shutil.rmtree(store.path / ".staging", ignore_errors=True)
    (store.path / ".staging").symlink_to(out_dir)
    with pytest.raises(StoreError, match="symbolic link"):
        s.write_model("x", vectors(1)[0])
    assert not list(out_dir.iterdir())


def test_hard_links_to_files_outside_are_unlinked_never_written(store, tmp_path):
    """rm and --replace rename over or move a model's name: a hard link's other name keeps its bytes."""
    for name in ("a", "b"):
        other = tmp_path / f"{name}-elsewhere.parquet"
        os.link(store.path / "models" / f"{name}.parquet", other)
    before = {p: p.read_bytes() for p in tmp_path.glob("*-elsewhere.parquet")}
    store.write_model("a", vectors(1, seed=8)[0], replace=True)
    store.remove_models(["b"])
    assert {p: p.read_bytes() for p in before} == before
    assert store.model_names() == ["c", "a"]


def test_a_huge_journal_is_refused_without_being_read(store):
    d = store.path / ".staging" / "1-2-abc"
    d.mkdir(parents=True)
    with open(d / "COMMIT", "wb") as f:
        f.truncate(store_mod._MAX_JOURNAL + 1)  # sparse: nothing to read but zeros
    with pytest.warns(LmmapWarning, match="far larger than any journal"):
        assert Store(store.path).model_names() == ["a", "b", "c"]
    assert lmmap("doctor", "--repair", "--store", store.path)[0] == 0 and not d.exists()

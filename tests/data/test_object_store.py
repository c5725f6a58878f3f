"""A store in object storage (issue 23 §3): the same operations as a folder, through a real S3 API server.

moto's server runs on 127.0.0.1 (a free port) in this process; writers and readers that must be separate
processes (killed with SIGKILL, racing each other) are real subprocesses talking to it over HTTP, configured
the usual fsspec way (``FSSPEC_S3_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``). Each test asserts what a reader sees
(models, vectors, metadata), not only messages.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

s3fs = pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

from lmmap.data.store import ModelExistsError, Store  # noqa: E402
from lmmap.data.texts import TextSet  # noqa: E402
from lmmap.exceptions import StoreError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
N = 16
KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def endpoint():
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def opts(endpoint, monkeypatch):
    for k, v in KEYS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    return {"endpoint_url": endpoint, "key": KEYS["AWS_ACCESS_KEY_ID"], "secret": KEYS["AWS_SECRET_ACCESS_KEY"]}


@pytest.fixture
def url(opts):
    """A fresh bucket (and prefix) for one test."""
    bucket = f"b{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(skip_instance_cache=True, **opts).mkdir(bucket)
    return f"s3://{bucket}/stores/one"


@pytest.fixture
def env(endpoint):
    """The environment of a subprocess: fsspec's and botocore's usual configuration, no storage options."""
    return {**os.environ, **KEYS, "FSSPEC_S3_ENDPOINT_URL": endpoint, "NO_PROXY": "127.0.0.1",
            "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


TEXTS = TextSet.from_texts([f"text number {i} " * 3 for i in range(N)])


def vectors(k, seed=0):
    return -np.random.default_rng(seed).uniform(10, 100, size=(k, N))


def both(tmp_path, url, opts):
    return Store.create(tmp_path / "local", TEXTS), Store.create(url, TEXTS, storage_options=opts)


def test_the_same_operations_give_the_same_answers_as_a_folder(tmp_path, url, opts):
    local, remote = both(tmp_path, url, opts)
    assert remote.path == url and remote.n_texts == N and remote.text_set_id == local.text_set_id
    for s in (local, remote):
        s.write_models([{"name": n, "loglik": v} for n, v in zip(["a", "Org/B", "c"], vectors(3))])
        s.write_model("part", vectors(1, seed=1)[0][:5], text_pos=np.arange(5), record={"settings_key": "k"})
        s.set_metadata(pd.DataFrame({"model": ["a", "c"], "family": ["x", "y"]}))
        s.save_state("adaptive", "a", {"step": 3})
        s.remove_models(["c"])
    reopened = Store(url, storage_options=opts)
    with pytest.warns(Warning, match="left out 1 partial"):
        ln, lL = local.matrix()
    with pytest.warns(Warning, match="left out 1 partial"):
        rn, rL = reopened.matrix()
    assert rn == ln == ["a", "Org/B"]
    np.testing.assert_array_equal(rL, lL)
    np.testing.assert_array_equal(reopened.matrix(["part"], text_pos=[1, 3])[1], local.matrix(["part"], text_pos=[1, 3])[1])
    strip = lambda recs: {n: {k: v for k, v in r.items() if not k.startswith("added")} for n, r in recs.items()}  # noqa: E731
    assert strip(reopened.records()) == strip(local.records())
    pd.testing.assert_frame_equal(reopened.metadata(), local.metadata())
    pd.testing.assert_frame_equal(reopened.vectors("part"), local.vectors("part"))
    assert reopened.load_state("adaptive", "a") == local.load_state("adaptive", "a") == {"step": 3, "model": "a"}
    assert reopened.load_state("adaptive", "c") is None
    assert reopened.texts.identity == TEXTS.identity
    assert reopened.check().ok and local.check().ok
    with pytest.raises(ModelExistsError):
        reopened.write_model("a", vectors(1)[0])
    with pytest.raises(StoreError, match="not in the store"):
        reopened.remove_models(["nope"])


def test_an_extension_merges_with_a_version_stored_meanwhile(url, opts):
    s = Store.create(url, TEXTS, storage_options=opts)
    full = vectors(1, seed=4)[0]
    s.write_model("m", full[:8], text_pos=np.arange(8), record={"settings_key": "k"})
    seen = s.vectors("m").attrs["added_ns"]
    other = Store(url, storage_options=opts)  # another writer extends it first
    other.write_models([{"name": "m", "loglik": full[8:12], "text_pos": np.arange(8, 12), "record": {"settings_key": "k"},
                         "extends": seen}])
    s.write_models([{"name": "m", "loglik": full[12:], "text_pos": np.arange(12, N), "record": {"settings_key": "k"},
                     "extends": seen}])
    v = Store(url, storage_options=opts).vectors("m")
    np.testing.assert_array_equal(v["text_pos"], np.arange(8, N))  # its own 8..15, and 8..11 from the other
    np.testing.assert_array_equal(v["loglik"], full[8:])


def test_checkpoints_are_kept_listed_and_cleared(url, opts):
    s = Store.create(url, TEXTS, storage_options=opts)
    s.save_checkpoint("m", "k1", [0, 1], [-1.0, -2.0], [3, 3], [False, False])
    s.save_checkpoint("m", "k1", [2], [-3.0], [3], [True])
    s.save_checkpoint("m", "k2", [5], [-5.0], [3], [False])
    assert s.checkpoint_keys("m") == ["k1", "k2"] and s.checkpoint_chunks("m") == 3
    df = s.load_checkpoint("m", "k1")  # drops k2's chunks: stale settings
    assert df["text_pos"].tolist() == [0, 1, 2] and df["loglik"].tolist() == [-1.0, -2.0, -3.0]
    assert s.checkpoint_keys("m") == ["k1"]
    s.write_model("m", vectors(1)[0], record={"settings_key": "k1"})
    s.clear_redundant_checkpoints("m")
    assert s.checkpoint_keys("m") == [] and len(s.load_checkpoint("m", "k1")) == 0


def test_a_url_store_is_opened_from_a_plain_string_and_errors_are_one_line(url, opts, endpoint):
    with pytest.raises(StoreError, match="is not an lmmap store"):
        Store(url, storage_options=opts)
    Store.create(url, TEXTS, storage_options=opts)
    with pytest.raises(FileExistsError):
        Store.create(url, TEXTS, storage_options=opts)
    with pytest.raises(StoreError, match="cannot keep a store at a ftp:// location"):
        Store("ftp://host/x")
    closed = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(StoreError) as err:
        Store(url, storage_options={**opts, "endpoint_url": closed, "retries": 0,
                                    "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2}})
    assert "\n" not in str(err.value) and "testing" not in str(err.value)


# -- processes: a killed writer, racing writers, a reader during commits ---------------------------------

_WRITER = textwrap.dedent("""
    import json, os, signal, sys
    import numpy as np
    from lmmap.data.storage import objects
    from lmmap.data.store import ModelExistsError, Store
    url, spec = sys.argv[1], json.loads(sys.argv[2])
    if spec.get("kill") == "before-manifest":
        def killed(self, obj, data):
            os.kill(os.getpid(), signal.SIGKILL)
        objects.ObjectStorage._put_if_absent = killed
    elif spec.get("kill") == "mid-upload":
        real, n = objects.ObjectStorage._put, [0]
        def killed(self, obj, data):
            real(self, obj, data)
            n[0] += 1
            if n[0] == 2:  # two of its three objects uploaded
                os.kill(os.getpid(), signal.SIGKILL)
        objects.ObjectStorage._put = killed
    s = Store(url)
    go = spec.get("go")
    while go and not os.path.exists(go):
        pass
    try:
        for batch in spec["batches"]:
            s.write_models([{"name": n, "loglik": np.full(len(batch.get("pos", range(16))), v),
                             "record": {"settings_key": "k"},
                             **({"text_pos": np.asarray(batch["pos"])} if "pos" in batch else {}),
                             **({"extends": None} if batch.get("extends") else {})}
                            for n, v in zip(batch["names"], batch["values"])], replace=batch.get("replace", False))
    except ModelExistsError as exc:
        print("clash:", exc)
        sys.exit(3)
""")


def write(url, env, batches, **spec):
    return subprocess.Popen([sys.executable, "-c", _WRITER, url, json.dumps({"batches": batches, **spec})], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def objects_under(url, opts) -> list[str]:
    fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False, **opts)
    return fs.find(url.removeprefix("s3://") + "/objects")


@pytest.mark.slow
@pytest.mark.parametrize("kill", ["before-manifest", "mid-upload"])
def test_a_writer_killed_mid_commit_leaves_the_old_state_whole_and_doctor_collects_its_objects(url, opts, env, kill):
    s = Store.create(url, TEXTS, storage_options=opts)
    s.write_models([{"name": n, "loglik": v} for n, v in zip("ab", vectors(2))])
    reader = Store(url, storage_options=opts)  # opened before the writer dies
    before = len(objects_under(url, opts))
    p = write(url, env, [{"names": ["a", "b", "c"], "values": [-1.0, -2.0, -3.0], "replace": True}], kill=kill)
    assert p.wait(120) == -signal.SIGKILL, p.stderr.read()
    assert len(objects_under(url, opts)) > before  # it had uploaded objects
    names, L = reader.matrix()
    assert names == ["a", "b"]
    np.testing.assert_array_equal(L, vectors(2))  # the old state, entirely
    rep = Store(url, storage_options=opts).check()
    assert rep.ok  # inside the grace period a change may still be uploading: not reported
    store = Store(url, storage_options=opts)
    store.storage.grace_s = 0.0
    rep = store.check()
    assert not rep.ok and rep.staging and "never committed" in rep.problems()[0]
    store.write_model("c", vectors(1, seed=2)[0])  # the next writer succeeds
    store.check(repair=True)
    named = {f"{url.removeprefix('s3://')}/{o}" for o in store.storage._latest().files.values()}
    assert set(objects_under(url, opts)) == named and len(named) == 5  # store.json, texts, a, b, c: nothing else
    assert store.check().ok
    assert Store(url, storage_options=opts).model_names() == ["a", "b", "c"]


@pytest.mark.slow
def test_two_writers_of_different_models_both_land(tmp_path, url, opts, env):
    Store.create(url, TEXTS, storage_options=opts)
    go = tmp_path / "go"
    procs = [write(url, env, [{"names": [f"{w}{i}"], "values": [-(10.0 * (w == "p") + i)]} for i in range(6)],
                   go=str(go)) for w in "pq"]
    time.sleep(1.0)
    go.touch()
    for p in procs:
        assert p.wait(240) == 0, p.stderr.read()
    s = Store(url, storage_options=opts)
    assert sorted(s.model_names()) == sorted(f"{w}{i}" for w in "pq" for i in range(6))
    names, L = s.matrix()
    for n, row in zip(names, L):
        np.testing.assert_array_equal(row, np.full(N, -(10.0 * (n[0] == "p") + int(n[1:]))))
    assert len(s.storage.generations()) == 1 + 12  # one generation per commit: none lost, none twice


@pytest.mark.slow
def test_two_writers_of_the_same_model_one_wins_the_other_gets_a_clean_refusal(tmp_path, url, opts, env):
    Store.create(url, TEXTS, storage_options=opts)
    go = tmp_path / "go"
    procs = [write(url, env, [{"names": ["m"], "values": [v]}], go=str(go)) for v in (-1.0, -2.0)]
    time.sleep(1.0)
    go.touch()
    codes = sorted(p.wait(240) for p in procs)
    outs = [p.stdout.read() + p.stderr.read() for p in procs]
    assert codes == [0, 3], outs
    assert any("already in the store" in o for o in outs) and not any("Traceback" in o for o in outs)
    row = Store(url, storage_options=opts).vectors("m")["loglik"].to_numpy()
    assert len(set(row)) == 1 and row[0] in (-1.0, -2.0)  # one writer's vector, whole


@pytest.mark.slow
def test_two_writers_extending_one_model_keep_both_sets_of_texts(tmp_path, url, opts, env):
    Store.create(url, TEXTS, storage_options=opts)
    go = tmp_path / "go"
    procs = [write(url, env, [{"names": ["m"], "values": [v], "pos": list(pos), "extends": True}], go=str(go))
             for v, pos in ((-1.0, range(0, 8)), (-2.0, range(8, 16)))]
    time.sleep(1.0)
    go.touch()
    assert [p.wait(240) for p in procs] == [0, 0], [p.stderr.read() for p in procs]
    v = Store(url, storage_options=opts).vectors("m")
    np.testing.assert_array_equal(v["text_pos"], np.arange(N))
    np.testing.assert_array_equal(v["loglik"], np.r_[np.full(8, -1.0), np.full(8, -2.0)])


@pytest.mark.slow
def test_a_reader_during_commits_never_sees_half_of_one(tmp_path, url, opts, env):
    s = Store.create(url, TEXTS, storage_options=opts)
    s.write_models([{"name": n, "loglik": np.full(N, -1.0)} for n in ("a", "b")])
    p = write(url, env, [{"names": ["a", "b"], "values": [-float(i), -float(i)], "replace": True}
                         for i in range(2, 14)])
    seen = set()
    reader = Store(url, storage_options=opts)
    while p.poll() is None:
        names, L = reader.matrix()
        assert names == ["a", "b"] and len(set(L.ravel())) == 1, L  # both models from the same commit
        seen.add(L[0, 0])
    assert p.returncode == 0, p.stderr.read()
    assert len(seen) >= 2  # the reader really read while commits landed
    assert reader.matrix()[1][0, 0] == -13.0


@pytest.mark.slow
def test_writes_and_time_per_commit_against_a_folder(tmp_path, url, opts, capsys):
    """Figures for the issue's closing note: requests and seconds per commit of one model, object vs folder."""
    local, remote = both(tmp_path, url, opts)
    k = 10
    seconds, http = {}, collections.Counter()

    class Requests(logging.Handler):  # what the server received: the HTTP method of each request
        def emit(self, record):
            m = re.search(r'"(GET|PUT|POST|HEAD|DELETE) (\S+)', record.getMessage())
            if m:
                http["LIST" if "list-type=" in m.group(2) else m.group(1)] += 1

    log = logging.getLogger("werkzeug")
    handler, level = Requests(), log.level
    for label, s in (("local", local), ("s3", remote)):
        s.write_model("warm", vectors(1)[0])
        if label == "s3":
            log.addHandler(handler)
            log.setLevel(logging.INFO)
        before = collections.Counter(s.storage.requests)
        t = time.perf_counter()
        try:
            for i in range(k):
                s.write_model(f"m{i}", vectors(1, seed=i)[0])
        finally:
            log.removeHandler(handler)
            log.setLevel(level)
        seconds[label] = (time.perf_counter() - t) / k
        counted = collections.Counter(s.storage.requests) - before
    per = {op: n / k for op, n in sorted(http.items())}
    assert per["PUT"] == 2 and counted["PUT"] == 2 * k  # the model's object and the next manifest, nothing else
    assert "DELETE" not in per and "POST" not in per
    with capsys.disabled():
        print(f"\nper commit of one model (N = {N}): folder {seconds['local'] * 1e3:.1f} ms; s3 (moto on 127.0.0.1) "
              f"{seconds['s3'] * 1e3:.1f} ms with {sum(per.values()):g} requests {per}")


@pytest.mark.parametrize("same", [False, True])
def test_a_commit_that_loses_the_race_is_checked_again_on_the_winners_state(url, opts, same):
    """Deterministic: B commits between A's checks and A's conditional put of the next manifest."""
    a = Store.create(url, TEXTS, storage_options=opts)
    b = Store(url, storage_options=opts)
    real, raced = a.storage._commit, []

    def b_first(tx):
        if not raced:
            raced.append(True)
            b.write_model("m", vectors(1, seed=1)[0])
        return real(tx)

    a.storage._commit = b_first
    if same:
        with pytest.raises(ModelExistsError, match="already in the store"):
            a.write_model("m", vectors(1, seed=2)[0])
        np.testing.assert_array_equal(Store(url, storage_options=opts).vectors("m")["loglik"], vectors(1, seed=1)[0])
    else:
        a.write_model("n", vectors(1, seed=2)[0])
        assert sorted(Store(url, storage_options=opts).model_names()) == ["m", "n"]
    assert raced and len(a.storage.generations()) == (2 if same else 3)  # created, B, and A on top of B


def test_doctor_moves_a_damaged_model_aside_and_a_damaged_manifest_is_one_line(url, opts):
    s = Store.create(url, TEXTS, storage_options=opts)
    s.write_models([{"name": n, "loglik": v} for n, v in zip("ab", vectors(2))])
    with s._transaction() as tx:  # a file that is no Parquet, published where a model belongs
        tx.stage_bytes(b"not parquet", "models/x.parquet")
    with pytest.warns(Warning, match="1 unreadable file"):
        assert s.model_names() == ["a", "b"]
    rep = s.check()
    assert rep.unreadable == ["models/x.parquet (not a readable Parquet file (ArrowInvalid))"]
    s.check(repair=True)
    assert s.check().ok and s.storage.list("damaged") and s.model_names() == ["a", "b"]
    np.testing.assert_array_equal(s.matrix()[1], vectors(2))
    fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False, **opts)
    newest = max(fs.ls(url.removeprefix("s3://") + "/manifests"))
    fs.pipe_file(newest, b'{"generation": 0, "files": {"models/a.parquet": "../../elsewhere"}}')
    with pytest.raises(StoreError, match="not a manifest lmmap wrote") as err:
        Store(url, storage_options=opts)
    assert "\n" not in str(err.value)

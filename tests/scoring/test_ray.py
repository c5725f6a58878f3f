"""The Ray executor on a real local Ray cluster, bound to loopback (issue 12 §3).

One cluster (2 CPUs, no dashboard) is started for the module. Every result
is compared with the local executor's run of the same models: the vectors
must be exactly equal (same code, same batches) and the records equal but for
timings and the ``executor``/``shards`` fields. Workers load models through
the backend objects below, which this module's tasks import like any
package; they write their process ids to files so that tests can count the
shards computed and kill a worker mid-task.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from cli_main import run_main

from lmmap.data.store import Interrupted, Store
from lmmap.data.texts import TextSet
from lmmap.exceptions import InputError
from lmmap.progress import Step
from lmmap.scoring import BigramModel, FakeBackend, score_models
from lmmap.scoring.executor import TIMING_FIELDS

# Ray reads this as it is imported: its single-machine mode, every socket on 127.0.0.1 (never another address).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private test cluster on loopback: no token

if os.environ.get("CI") == "true":
    import ray  # noqa: F401  (in CI these tests must run, never skip)
else:
    ray = pytest.importorskip("ray")

# One cluster for the module: under pytest-xdist all its tests go to one worker (make test: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("ray")

RAY_ONLY = {"executor", "shards"}
WHEN = {"added_at", "added_ns"}  # when the store took the vector


class LoggingBackend(FakeBackend):
    """A fake backend whose every load (one per Ray task) appends ``pid shard-size`` to ``log``."""

    def __init__(self, log: str, **kw):
        super().__init__(**kw)
        self.log = log

    def load(self, source, **kw):
        scorer = super().load(source, **kw)
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()} {source}\n")
        return scorer


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster for the module: 2 CPUs, no dashboard, every socket on 127.0.0.1, no token."""
    # the tasks get this module's backends by value: the workers cannot import a test module
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def texts(stdlib_texts) -> list[str]:
    out = []
    for k, doc in enumerate(stdlib_texts[:30]):
        for start, size in ((0, 15 + 5 * k), (500, 60 + 9 * k)):
            out.append(doc[start:start + size])
    return out  # 60 texts, some longer than the 64-byte context


@pytest.fixture
def store_pair(tmp_path, texts):
    """Two stores on the same texts: one for the local run, one for Ray's."""
    ts = TextSet.from_texts(texts)
    return Store.create(tmp_path / "local", ts), Store.create(tmp_path / "ray", ts)


def assert_same(local: Store, other: Store, names, resumed: bool = False, also=()):
    for n in names:
        a, b = local.vectors(n), other.vectors(n)
        assert np.array_equal(a["text_pos"].to_numpy(), b["text_pos"].to_numpy())
        assert np.array_equal(a["loglik"].to_numpy(), b["loglik"].to_numpy())  # exact, not close
        assert np.array_equal(a["n_tokens"].to_numpy(), b["n_tokens"].to_numpy())
        assert np.array_equal(a["truncated"].to_numpy(), b["truncated"].to_numpy())
        ra, rb = local.record(n), other.record(n)
        assert rb["executor"] == "ray"
        drop = set(TIMING_FIELDS) | RAY_ONLY | WHEN
        if resumed:  # a resumed run says how many texts it took from the checkpoint
            drop |= {"n_texts_scored_this_run", "n_texts_resumed"}
        drop |= set(also)
        assert {k: v for k, v in ra.items() if k not in drop} == {k: v for k, v in rb.items() if k not in drop}


def stored_once(store: Store, names):
    """Each model has one vector file and one record, and no text twice."""
    recs = store.records()
    assert sorted(recs) == sorted(names)
    for n in names:
        pos = store.vectors(n)["text_pos"].to_numpy()
        assert len(pos) == len(np.unique(pos)) == store.n_texts
    assert not list((store.path / "partial").glob("*/*/chunk-*.parquet"))


def loads(log: Path) -> list[tuple[int, str]]:
    if not log.exists():
        return []
    return [(int(p), s) for p, s in (line.split(" ", 1) for line in log.read_text().splitlines())]


NAMES = ["alpha", "beta", "gamma"]


def test_ray_equals_local_and_sharding_changes_nothing(cluster, store_pair, tmp_path):
    local, other = store_pair
    st = score_models(local, NAMES, backend="fake")
    assert all(s.status == "scored" for s in st.values())
    log = tmp_path / "loads.log"
    steps = []
    st = score_models(other, NAMES, backend=LoggingBackend(str(log)), executor="ray", shard_texts=7,
                      progress=steps.append)
    assert [s.status for s in st.values()] == ["scored"] * 3, st
    assert_same(local, other, NAMES)
    stored_once(other, NAMES)
    n = other.n_texts
    assert len(loads(log)) == 3 * -(-n // 7)  # one task (one load) per shard
    assert all(other.record(m)["shards"] == -(-n // 7) for m in NAMES)
    # one bar over all tokens with model and text counters, reaching every model and text
    bar = [s for s in steps if s.task is not None]
    assert len({s.task for s in bar}) == 1 and bar[-1].finished
    last = [s for s in bar if s.info][-1].info
    # texts count (model, text) pairs
    assert (last["models"], last["models_total"], last["texts"], last["texts_total"]) == (3, 3, 3 * n, 3 * n)
    assert bar[-1].done == sum(int(other.vectors(m)["n_tokens"].sum()) for m in NAMES)
    assert [s.message.split()[0] for s in steps if s.task is None] == ["scored"] * 3


def test_ray_one_shard_per_model_by_default_and_skips_stored(cluster, store_pair, tmp_path):
    local, other = store_pair
    score_models(local, NAMES[:2], backend="fake", convention="full", max_length=40, stride=13)
    log = tmp_path / "loads.log"
    st = score_models(other, NAMES[:2], backend=LoggingBackend(str(log)), executor="ray", convention="full",
                      max_length=40, stride=13)
    assert all(s.status == "scored" for s in st.values())
    assert_same(local, other, NAMES[:2])
    assert len(loads(log)) == 2
    again = score_models(other, NAMES[:2], backend=LoggingBackend(str(log)), executor="ray")
    assert [s.status for s in again.values()] == ["skipped"] * 2 and len(loads(log)) == 2


def test_ray_resume_scores_only_missing_shards(cluster, store_pair, tmp_path):
    local, other = store_pair
    score_models(local, NAMES[:2], backend="fake")
    log = tmp_path / "loads.log"
    seen = []

    def stop_after_three_shards(step: Step):  # Ctrl-C once 30 texts are done
        if not seen and step.task is not None and step.info.get("texts", 0) >= 30:
            seen.append(step.info["texts"])
            raise KeyboardInterrupt

    with pytest.raises(Interrupted, match="rerun the same command to resume"):
        score_models(other, NAMES[:2], backend=LoggingBackend(str(log)), executor="ray", shard_texts=10,
                     progress=stop_after_three_shards)
    assert not other.records() and seen == [30]
    kept = other.load_checkpoint("alpha", next((other.path / "partial" / "alpha").iterdir()).name)
    n_kept = len(kept)
    assert n_kept == 30  # the three shards done, checkpointed by the driver
    # a log of its own: a task of the first run cancelled as it started may still write to the first
    log2 = tmp_path / "loads2.log"
    st = score_models(other, NAMES[:2], backend=LoggingBackend(str(log2)), executor="ray", shard_texts=10)
    assert st["alpha"].n_resumed == n_kept and st["alpha"].n_scored == other.n_texts - n_kept
    computed = loads(log2)
    alpha_shards = sum(s == "alpha" for _, s in computed)
    assert alpha_shards == -(-(other.n_texts - n_kept) // 10)  # only the missing shards
    assert_same(local, other, NAMES[:2], resumed=True)
    stored_once(other, NAMES[:2])
    assert other.record("alpha")["n_texts_resumed"] == n_kept


def interrupt_at(texts: int):
    """A progress callback that presses Ctrl-C once ``texts`` (model, text) pairs are done."""
    seen = []

    def progress(step: Step):
        if not seen and step.task is not None and step.info.get("texts", 0) >= texts:
            seen.append(step.info["texts"])
            raise KeyboardInterrupt

    return progress


def test_ray_model_wholly_checkpointed_is_stored_from_its_checkpoint(cluster, store_pair, tmp_path):
    """Interrupted after the last shard was checkpointed, before the vector was written: one empty task."""
    local, other = store_pair
    score_models(local, ["alpha"], backend="fake")
    log = tmp_path / "loads.log"
    with pytest.raises(Interrupted):
        score_models(other, ["alpha"], backend=LoggingBackend(str(log)), executor="ray", shard_texts=30,
                     progress=interrupt_at(other.n_texts))
    assert not other.records() and len(loads(log)) == 2
    st = score_models(other, ["alpha"], backend=LoggingBackend(str(log)), executor="ray", shard_texts=30)
    assert st["alpha"].n_resumed == other.n_texts and st["alpha"].n_scored == 0
    assert len(loads(log)) == 3  # one task, scoring nothing: the model's settings key and record
    # no batch was run in this run: no log-prob path to record (as when the local executor resumes so)
    assert other.record("alpha")["logprob_path"] is None
    assert_same(local, other, ["alpha"], resumed=True, also=["logprob_path"])
    stored_once(other, ["alpha"])


def test_ray_checkpoint_of_other_settings_is_not_reused(cluster, store_pair, tmp_path):
    """The driver guesses the checkpoint's key; a task shows it wrong: the skipped texts are scored after all."""
    local, other = store_pair
    score_models(local, ["alpha"], backend="fake")
    with pytest.raises(Interrupted):  # 30 texts checkpointed under max_length=40
        score_models(other, ["alpha"], backend="fake", executor="ray", shard_texts=30, max_length=40,
                     progress=interrupt_at(30))
    assert other.checkpoint_chunks("alpha") == 1
    log = tmp_path / "loads.log"
    st = score_models(other, ["alpha"], backend=LoggingBackend(str(log)), executor="ray", shard_texts=30)
    assert st["alpha"].n_scored == other.n_texts and st["alpha"].n_resumed == 0
    assert len(loads(log)) == 2  # the 30 texts not checkpointed; then the 30 first skipped, in a shard of their own
    assert_same(local, other, ["alpha"], resumed=True)
    stored_once(other, ["alpha"])


def test_ray_failing_model_is_reported_and_others_stored(cluster, store_pair):
    local, other = store_pair
    models = {"good": BigramModel.from_name("good"), "nan": BigramModel(np.full((258, 258), np.nan))}
    score_models(local, ["good"], backend=FakeBackend(models))
    steps = []
    st = score_models(other, ["good", "nan", "missing"], backend=FakeBackend(models), executor="ray",
                      shard_texts=25, progress=steps.append)
    assert st["good"].status == "scored"
    assert st["nan"].status == "failed" and "non-finite" in st["nan"].message and "\n" not in st["nan"].message
    assert st["missing"].status == "failed" and "no such fake model" in st["missing"].message
    assert sorted(other.records()) == ["good"]
    assert_same(local, other, ["good"])
    msgs = [s.message for s in steps if s.task is None]
    assert any(m.startswith("failed nan: model 'nan'") for m in msgs)
    assert [s for s in steps if s.task][-1].info["failed"] == 2.0


@pytest.mark.slow
def test_ray_worker_killed_mid_task_is_retried(cluster, store_pair, tmp_path):
    local, other = store_pair
    score_models(local, NAMES, backend="fake", batch_tokens=128)
    log = tmp_path / "loads.log"
    killed = []

    def killer():
        deadline = time.time() + 60
        while time.time() < deadline and not killed:
            for pid, source in loads(log):
                if source == "beta":
                    time.sleep(0.3)  # mid-task: the shard sleeps 0.2 s per batch, > 5 batches
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            time.sleep(0.05)

    t = threading.Thread(target=killer)
    t.start()
    st = score_models(other, NAMES, backend=LoggingBackend(str(log), delay=0.2), executor="ray",
                      shard_texts=20, batch_tokens=128)
    t.join()
    assert killed, "no worker was killed"
    assert [s.status for s in st.values()] == ["scored"] * 3, st
    assert_same(local, other, NAMES)
    stored_once(other, NAMES)
    beta = [pid for pid, s in loads(log) if s == "beta"]
    assert len(beta) > -(-other.n_texts // 20)  # the killed shard was computed again, on another worker
    assert killed[0] in beta


def test_ray_bad_options_are_one_line_errors(cluster, store_pair):
    _, other = store_pair
    cases = [
        (dict(executor="ray", shard_texts=0), "shard_texts must be"),
        (dict(executor="ray", gpus_per_model=1), "gpus_per_model=1, but the Ray cluster .* has no GPUs"),
        (dict(executor="dask"), "executor must be one of local, ray"),
        (dict(shard_texts=5), r"shard_texts=5 needs executor='ray'"),
    ]
    for kw, msg in cases:
        with pytest.raises(InputError, match=msg) as e:
            score_models(other, ["alpha"], backend="fake", **kw)
        assert "\n" not in str(e.value)
    assert not other.records()


def test_ray_address_that_does_not_answer(store_pair, monkeypatch):
    _, other = store_pair
    import ray as _ray

    monkeypatch.setattr(_ray, "is_initialized", lambda: False)
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=r"no Ray cluster answers at ray_address='127.0.0.1:9'") as e:
        score_models(other, ["alpha"], backend="fake", executor="ray", ray_address="127.0.0.1:9")
    assert time.perf_counter() - t0 < 10 and e.value.params == ("ray_address",)


def test_ray_not_installed_says_how(store_pair, monkeypatch):
    import builtins

    _, other = store_pair
    real = builtins.__import__

    def no_ray(name, *a, **kw):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(InputError, match=r"pip install 'lmmap\[ray\]'"):
        score_models(other, ["alpha"], backend="fake", executor="ray")


def test_ray_cli_bad_options_name_the_flags(cluster, store_pair, monkeypatch):
    _, other = store_pair
    base = ("score", "some-model", "--store", other.path, "--device", "cpu")
    cases = [
        (("--executor", "ray", "--shard-texts", "0"), "error: --shard-texts must be a positive integer, got 0"),
        (("--executor", "ray", "--gpus-per-model", "1"), "error: --gpus-per-model 1, but the Ray cluster"),
        (("--shard-texts", "5"), "error: --shard-texts 5 needs --executor ray"),
        (("--executor", "spark"), "error: --executor must be one of local, ray"),
    ]
    for extra, msg in cases:
        code, out, err = run_main(*base, *extra)
        assert code != 0 and msg in err, (extra, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    code, out, err = run_main(*base, "--executor", "ray", "--ray-address", "127.0.0.1:9")
    assert code != 0 and "error: no Ray cluster answers at --ray-address 127.0.0.1:9" in err, err


@pytest.mark.slow
def test_ray_real_gpt2_equals_local(cluster, tiny_gpt2_dir, tmp_path, texts):
    """A real transformers model, the Ray side run by the command line: the vector and record of the local run."""
    from lmmap.parallel import set_threads

    ts = TextSet.from_texts(texts)
    local, other = Store.create(tmp_path / "local", ts), Store.create(tmp_path / "ray", ts)
    previous = set_threads(1)  # the Ray worker runs one thread (num_cpus=1): the same sums in the same order
    try:
        a = score_models(local, [str(tiny_gpt2_dir)], device="cpu")
    finally:
        set_threads(previous)
    # the model directory travels to the task by path (same machine); the worker loads it
    code, out, err = run_main("score", tiny_gpt2_dir, "--store", other.path, "--device", "cpu", "--executor", "ray",
                              "--no-progress")
    assert code == 0, err
    assert "1 scored, 0 skipped, 0 failed" in out
    name = next(iter(a))
    assert a[name].status == "scored" and sorted(other.records()) == [name]
    assert_same(local, other, [name])


def test_ray_chat_template_and_trajectory_equal_local(cluster, chat_gpt2_dir, tmp_path):
    """Prompt→response texts under a chat template, two checkpoints of one run: Ray stores what the local run does
    (the template's identity in the settings and record, the trajectory's metadata with the vectors)."""
    import shutil

    from lmmap.parallel import set_threads

    run = tmp_path / "run"
    for step in (1, 2):
        shutil.copytree(chat_gpt2_dir, run / f"step{step}")
    pairs = [("Say hello.", "Hello there."), ("Add 2 and 3.", "5"), ("Name a colour.", "Blue, or maybe green.")]
    ts = TextSet.from_texts([t for _, t in pairs], prompts=[p for p, _ in pairs])
    local, other = Store.create(tmp_path / "local", ts), Store.create(tmp_path / "ray", ts)
    dirs = [run / "step1", run / "step2"]
    previous = set_threads(1)
    try:
        score_models(local, dirs, device="cpu", chat_template=True, trajectory="run")
    finally:
        set_threads(previous)
    code, out, err = run_main("score", *dirs, "--store", other.path, "--device", "cpu", "--executor", "ray",
                              "--chat-template", "--trajectory", "run", "--no-progress")
    assert code == 0, err
    names = ["run@step1", "run@step2"]
    assert_same(local, other, names)
    assert other.record("run@step1")["chat_template"].startswith("sha256:")
    meta = other.metadata()
    assert meta.loc[names, "trajectory"].tolist() == ["run", "run"] and meta.loc[names, "step"].tolist() == [1, 2]


@pytest.fixture(scope="module")
def gpt2_3(tmp_path_factory, tiny_tokenizer, make_tiny_gpt2):
    """A real tiny GPT-2 of 3 blocks: 4 hidden states, so 4 lensed layers."""
    return make_tiny_gpt2(tmp_path_factory.mktemp("lens") / "gpt2-3", tiny_tokenizer, seed=3, n_layer=3)


LAYERS = [f"gpt2-3@layer{k}" for k in range(4)]


def lens_local(tmp_path, ts, model, layers="all") -> Store:
    """The local executor's logit lens of ``model``, one thread (as a Ray worker runs): the reference."""
    from lmmap.parallel import set_threads

    local = Store.create(tmp_path / "local", ts)
    previous = set_threads(1)
    try:
        st = score_models(local, [str(model)], layers=layers, device="cpu")
    finally:
        set_threads(previous)
    assert st["gpt2-3"].status == "scored"
    return local


@pytest.mark.slow
def test_ray_logit_lens_equals_local_every_layer_in_one_change(cluster, gpt2_3, tmp_path, texts):
    """`score --layers all --executor ray`: every layer stored, as the local run stores it (vectors, records,
    metadata), from one task per shard; a second run skips them all."""
    ts = TextSet.from_texts(texts)
    local = lens_local(tmp_path, ts, gpt2_3)
    other = Store.create(tmp_path / "ray", ts)
    code, out, err = run_main("score", gpt2_3, "--layers", "all", "--store", other.path, "--device", "cpu",
                              "--executor", "ray", "--no-progress")
    assert code == 0, err
    assert "1 scored, 0 skipped, 0 failed" in out
    assert_same(local, other, LAYERS)
    stored_once(other, LAYERS)
    meta = other.metadata()
    assert meta.loc[LAYERS, "layers_of"].tolist() == ["gpt2-3"] * 4
    assert meta.loc[LAYERS, "layer"].tolist() == [0, 1, 2, 3]
    # as locally, a model whose every layer is stored is skipped whatever the settings asked (a task learns its layers)
    again = score_models(other, [str(gpt2_3)], layers="all", device="cpu", executor="ray", max_length=32)["gpt2-3"]
    assert again.status == "skipped" and "4 layers are already in the store" in again.message
    assert_same(local, other, LAYERS)


@pytest.mark.slow
def test_ray_logit_lens_resumes_only_missing_shards(cluster, gpt2_3, tmp_path, texts):
    """Interrupted after two shards: every layer's checkpoint holds them; the rerun (layers="all", which the driver
    learns from the store) scores only the other shards, and the layers equal the local run's."""
    ts = TextSet.from_texts(texts)
    local = lens_local(tmp_path, ts, gpt2_3)
    other = Store.create(tmp_path / "ray", ts)
    with pytest.raises(Interrupted, match="rerun the same command to resume"):
        score_models(other, [str(gpt2_3)], layers="all", device="cpu", executor="ray", shard_texts=20,
                     progress=interrupt_at(40))
    assert not other.records()
    assert all(other.checkpoint_chunks(n) >= 2 for n in LAYERS)
    st = score_models(other, [str(gpt2_3)], layers="all", device="cpu", executor="ray", shard_texts=20)["gpt2-3"]
    assert st.status == "scored" and st.n_resumed >= 40 and st.n_resumed % 20 == 0
    assert st.n_scored == other.n_texts - st.n_resumed
    stored_once(other, LAYERS)
    for n in LAYERS:  # shards of 20 texts batch differently from one shard: equal to float32 rounding
        a, b = local.vectors(n), other.vectors(n)
        assert np.array_equal(a["text_pos"].to_numpy(), b["text_pos"].to_numpy())
        np.testing.assert_allclose(b["loglik"].to_numpy(), a["loglik"].to_numpy(), rtol=1e-5, atol=1e-4)
        assert other.record(n)["n_texts_resumed"] == st.n_resumed and other.record(n)["shards"] > 0


@pytest.mark.slow
def test_ray_all_layers_after_some_scores_every_text_again(cluster, gpt2_3, tmp_path, texts):
    """Layers 0,1 stored, then layers="all": the driver's guess (the stored layers) skips every text, the first
    task shows the model has four; the skipped texts are scored after all, and all four layers stored."""
    ts = TextSet.from_texts(texts)
    local = lens_local(tmp_path, ts, gpt2_3)
    other = Store.create(tmp_path / "ray", ts)
    score_models(other, [str(gpt2_3)], layers="0,1", device="cpu", executor="ray")
    assert sorted(other.records()) == LAYERS[:2]
    st = score_models(other, [str(gpt2_3)], layers="all", device="cpu", executor="ray")["gpt2-3"]
    assert st.status == "scored" and st.n_scored == other.n_texts and st.n_resumed == 0
    assert_same(local, other, LAYERS, resumed=True)
    stored_once(other, LAYERS)


@pytest.mark.slow
def test_ray_lensed_layers_on_some_texts_are_extended(cluster, gpt2_3, tmp_path, texts):
    """Layers 1,3 stored on the even texts; asked on all: only the odd texts are scored, each layer keeps its rows."""
    ts = TextSet.from_texts(texts)
    local = lens_local(tmp_path, ts, gpt2_3, layers="1,3")
    other = Store.create(tmp_path / "ray", ts)
    names = [LAYERS[1], LAYERS[3]]
    score_models(other, [str(gpt2_3)], layers="1,3", device="cpu", executor="ray", text_pos=range(0, len(texts), 2))
    assert all(len(other.vectors(n)) == len(texts[::2]) for n in names)
    st = score_models(other, [str(gpt2_3)], layers="1,3", device="cpu", executor="ray")["gpt2-3"]
    assert st.status == "scored" and st.n_scored == len(texts[1::2])
    stored_once(other, names)
    for n in names:  # the two runs batch other texts together than the local one: equal to float32 rounding
        a, b = local.vectors(n), other.vectors(n)
        assert np.array_equal(a["text_pos"].to_numpy(), b["text_pos"].to_numpy())
        np.testing.assert_allclose(b["loglik"].to_numpy(), a["loglik"].to_numpy(), rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_the_small_demo_scores_its_models_and_layers_on_ray(cluster, tmp_path):
    """`lmmap demo --executor ray`: every model and every layer of the lens is scored by Ray tasks and stored."""
    from lmmap.demo import LENS_MODEL, run_demo

    result = run_demo(tmp_path / "demo", size="small", executor="ray", progress=None)
    store, lens = Store(result["store"]), Store(result["lens"]["store"])
    assert result["n_models"] == len(store.model_names()) > 0
    assert all(store.record(n)["executor"] == "ray" for n in store.model_names())
    layers = [n for n in lens.model_names() if lens.record(n).get("layers_of") == LENS_MODEL]
    assert len(layers) >= 3 and all(lens.record(n)["executor"] == "ray" for n in layers)
    assert not list((store.path / "partial").glob("*/*/chunk-*.parquet"))

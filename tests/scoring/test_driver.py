"""The scoring driver with the fake backend (exact bigram models over bytes): no torch needed.

Resumption, checkpoints, skip/replace, names and failures go through the
same driver code as the transformers backend (tests/scoring/test_hf.py).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import lmmap.scoring
from lmmap.data.store import Interrupted, Store
from lmmap.data.texts import TextSet
from lmmap.exceptions import InputError
from lmmap.progress import Step
from lmmap.scoring import BigramModel, ByteTokenizer, FakeBackend, FakeScorer, score_models, score_texts
from lmmap.scoring.fake import BOS, VOCAB_SIZE

CONTEXT = 64


@pytest.fixture(scope="module")
def texts(stdlib_texts) -> list[str]:
    """Real texts of many lengths: some fit the 64-byte context, most are truncated."""
    out = []
    for k, doc in enumerate(stdlib_texts[20:32]):
        for start, size in ((0, 20 + 3 * k), (300, 70 + 11 * k), (1000, 400)):
            piece = doc[start : start + size]
            if len(piece.encode()) >= 2:
                out.append(piece)
    return out


@pytest.fixture
def store(tmp_path, texts) -> Store:
    return Store.create(tmp_path / "store", TextSet.from_texts(texts))


def bigram_loglik(counts: np.ndarray, ids: list[int]) -> float:
    """log p(ids[1:] | ids[:-1]) of an add-one bigram model, one token at a time (independent of lmmap)."""
    total = 0.0
    for a, b in zip(ids[:-1], ids[1:]):
        total += math.log((counts[a][b] + 1) / (sum(counts[a]) + VOCAB_SIZE))
    return total


def reference(counts, text: str, convention: str, max_length: int = CONTEXT) -> tuple[float, int, bool]:
    ids = list(text.encode("utf-8"))
    if convention == "full":
        ids = [BOS] + ids
    truncated = len(ids) > max_length
    ids = ids[:max_length]
    return bigram_loglik(counts, ids), len(ids), truncated


# -- the fake model's numbers ----------------------------------------------------------------------


@pytest.mark.parametrize("convention", ["reference", "full"])
def test_fake_log_probabilities_equal_the_bigram_model(texts, convention):
    model = BigramModel.from_name("bigram-a")
    counts = model.counts.astype(int).tolist()
    ll, n_tokens, truncated = score_texts(FakeScorer(model), texts, convention=convention, batch_tokens=300)
    ref = [reference(counts, t, convention) for t in texts]
    np.testing.assert_allclose(ll, [r[0] for r in ref], rtol=1e-12, atol=1e-9)
    assert n_tokens.tolist() == [r[1] for r in ref]
    assert truncated.tolist() == [r[2] for r in ref]
    assert 0 < truncated.sum() < len(texts)


def test_a_model_trained_on_text_prefers_that_text(texts):
    model = BigramModel.from_texts(texts[:10])
    other = BigramModel.from_name("other")
    mine, _, _ = score_texts(FakeScorer(model), texts[:10])
    theirs, _, _ = score_texts(FakeScorer(other), texts[:10])
    assert (mine > theirs).all()
    counts = model.counts.astype(int).tolist()
    np.testing.assert_allclose(mine, [reference(counts, t, "reference")[0] for t in texts[:10]], rtol=1e-12)


def test_strided_bigram_scores_equal_the_whole_text(texts):
    # A bigram needs one token of context, which every window has: windows change nothing.
    model = BigramModel.from_name("b")
    counts = model.counts.astype(int).tolist()
    ll, n_tokens, truncated = score_texts(FakeScorer(model), texts, max_length=16, stride=5, batch_tokens=100)
    want = [bigram_loglik(counts, list(t.encode())) for t in texts]
    np.testing.assert_allclose(ll, want, rtol=1e-12, atol=1e-9)
    assert not truncated.any() and n_tokens.tolist() == [len(t.encode()) for t in texts]


def test_progress_reports_tokens_and_texts(texts):
    steps: list[Step] = []
    score_texts(FakeScorer(BigramModel.from_name("a")), texts, batch_tokens=256, progress=steps.append,
                description="fake")
    assert steps[0].task == "fake" and steps[0].done == 0 and steps[-1].finished
    assert all(s.unit == "tokens" for s in steps)
    assert steps[-1].done == steps[-1].total  # the total is what the batches process
    assert steps[-1].info == {"texts": len(texts), "texts_total": len(texts)}


# -- the driver ---------------------------------------------------------------------------------


def test_score_models_stores_exact_vectors_and_records(store, texts):
    out = score_models(store, ["a", "b"], backend="fake", batch_tokens=200)
    assert [st.status for st in out.values()] == ["scored", "scored"] and out["a"].n_scored == len(texts)
    for name in ("a", "b"):
        counts = BigramModel.from_name(name).counts.astype(int).tolist()
        v = store.vectors(name)
        np.testing.assert_allclose(v["loglik"], [reference(counts, t, "reference")[0] for t in texts], rtol=1e-12)
        rec = store.record(name)
        assert rec["scorer"] == "lmmap" and rec["backend"] == "fake" and rec["convention"] == "reference"
        assert rec["max_length"] == CONTEXT and rec["n_truncated"] == int(v["truncated"].sum()) > 0
        assert rec["logprob_path"] == "bigram" and rec["batch_tokens"] == 200
        assert rec["revision"].startswith("fake bigram")
    again = score_models(store, ["a"], backend="fake")
    assert again["a"].status == "skipped" and "already in the store" in again["a"].message
    assert again["a"].params == ("replace",)
    assert not (store.path / "partial").exists() or not any((store.path / "partial").iterdir())


def test_replace_rescores_and_names_store_under_another_name(store, texts):
    score_models(store, ["a"], backend="fake")
    st = score_models(store, ["a"], backend="fake", replace=True)["a"]
    assert st.status == "scored" and st.n_scored == len(texts)
    named = score_models(store, ["a"], names=["copy-of-a"], backend="fake")
    assert named["copy-of-a"].status == "scored"
    np.testing.assert_array_equal(store.vectors("copy-of-a")["loglik"], store.vectors("a")["loglik"])
    with pytest.raises(InputError, match="listed twice"):
        score_models(store, ["a", "a"], backend="fake")
    with pytest.raises(InputError, match="would both be stored as"):
        score_models(store, ["a", "b"], names=["x", "x"], backend="fake")
    with pytest.raises(InputError, match="2 names for 1 models"):
        score_models(store, ["a"], names=["x", "y"], backend="fake")


def test_a_subset_first_then_the_rest_then_completing_by_name(store, texts):
    first = score_models(store, ["m"], text_pos=[0, 3, 5], backend="fake")
    assert first["m"].n_scored == 3 and store.vectors("m")["text_pos"].tolist() == [0, 3, 5]
    rest = score_models(store, ["m"], backend="fake")  # the stored name: completed from its record
    assert rest["m"].status == "scored" and rest["m"].n_scored == len(texts) - 3 and rest["m"].n_resumed == 3
    assert store.vectors("m")["text_pos"].tolist() == list(range(len(texts)))
    # Other settings never extend a vector silently.
    other = score_models(store, ["m"], names=["m"], convention="full", backend="fake")
    assert other["m"].status == "skipped"
    score_models(store, ["n"], text_pos=[1], backend="fake")
    st = score_models(store, ["n"], names=["n"], convention="full", backend="fake", text_pos=[2])["n"]
    assert st.status == "failed" and "other settings" in st.message and st.params == ("replace",)


def test_failing_and_non_finite_models_are_reported_and_the_others_stored(store):
    nan = BigramModel.from_name("nan").counts.copy()
    nan[ord("e"), :] = np.nan  # every text with an "e" followed by anything
    backend = FakeBackend({"good": BigramModel.from_name("good"), "nan-model": BigramModel(nan)})
    out = score_models(store, ["missing", "nan-model", "good"], backend=backend)
    assert out["missing"].status == "failed" and "no such fake model" in out["missing"].message
    assert out["nan-model"].status == "failed" and "non-finite" in out["nan-model"].message
    assert "position" in out["nan-model"].message and "'nan-model'" in out["nan-model"].message
    assert out["good"].status == "scored"
    assert store.has_model("good") and not store.has_model("nan-model") and not store.has_model("missing")


def test_bad_options_are_refused_before_loading_anything(store):
    for kwargs, param in (
        (dict(convention="half"), "convention"),
        (dict(dtype="int8"), "dtype"),
        (dict(device="tpu"), "device"),
        (dict(batch_tokens=0), "batch_tokens"),
        (dict(max_length=1), "max_length"),
        (dict(stride=0), "stride"),
        (dict(checkpoint_every=-1), "checkpoint_every"),
        (dict(text_pos=[10**6]), "text_pos"),
        (dict(backend="nope"), "backend"),
        (dict(progress=True), "progress"),
    ):
        with pytest.raises(InputError, match=param) as err:
            score_models(store, ["a"], **{"backend": "fake", **kwargs})
        assert param in err.value.params, kwargs
        assert "--" not in str(err.value)  # the library names parameters; the CLI names flags
    with pytest.raises(InputError, match="at least one model"):
        score_models(store, [], backend="fake")


def test_progress_events_one_task_per_model_and_one_line_each(store, texts):
    steps: list[Step] = []
    score_models(store, ["a", "b"], backend="fake", progress=steps.append)
    tasks = [s.task for s in steps if s.task is not None]
    assert set(tasks) == {"a", "b"}
    assert all(s.unit == "tokens" for s in steps if s.task)
    finished = [s for s in steps if s.finished]
    assert [s.info["texts"] for s in finished] == [len(texts)] * 2
    messages = [s.message for s in steps if s.task is None]
    assert len(messages) == 2 and messages[0].startswith("scored a: ")


def test_checkpoints_then_resume_after_an_interrupted_run(tmp_path, texts, monkeypatch):
    ts = TextSet.from_texts(texts)
    clean = Store.create(tmp_path / "clean", ts)
    score_models(clean, ["a"], backend="fake")
    store = Store.create(tmp_path / "s", ts)
    save, calls = Store.save_checkpoint, []

    def save_then_interrupt(self, *args, **kwargs):
        save(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Store, "save_checkpoint", save_then_interrupt)
    with pytest.raises(Interrupted, match="checkpoint chunk"):
        score_models(store, ["a"], backend="fake", batch_tokens=128, checkpoint_every=0)
    monkeypatch.setattr(Store, "save_checkpoint", save)
    assert not store.has_model("a") and store.checkpoint_chunks("a") >= 2
    steps: list[Step] = []
    st = score_models(store, ["a"], backend="fake", batch_tokens=128, progress=steps.append)["a"]
    assert any("resuming from a checkpoint" in (s.message or "") for s in steps)
    assert 0 < st.n_resumed < len(texts) and st.n_resumed + st.n_scored == len(texts)
    rec = store.record("a")
    assert rec["n_texts_resumed"] == st.n_resumed and rec["n_texts_scored_this_run"] == st.n_scored
    got, want = store.vectors("a"), clean.vectors("a")
    np.testing.assert_array_equal(got["loglik"], want["loglik"])
    assert got["n_tokens"].tolist() == want["n_tokens"].tolist()
    assert store.checkpoint_chunks("a") == 0


def test_checkpoints_of_other_settings_are_not_reused(tmp_path, texts, monkeypatch):
    store = Store.create(tmp_path / "s", TextSet.from_texts(texts))
    save = Store.save_checkpoint

    def save_then_interrupt(self, *args, **kwargs):
        save(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(Store, "save_checkpoint", save_then_interrupt)
    with pytest.raises(Interrupted):
        score_models(store, ["a"], backend="fake", batch_tokens=128, checkpoint_every=0)
    monkeypatch.setattr(Store, "save_checkpoint", save)
    st = score_models(store, ["a"], backend="fake", convention="full")["a"]
    assert st.n_resumed == 0 and st.n_scored == len(texts)


KILLED_RUN = textwrap.dedent(
    """
    import sys, time
    from lmmap.data.store import Store
    from lmmap import scoring

    save = Store.save_checkpoint

    def save_then_pause(self, *args, **kwargs):
        save(self, *args, **kwargs)
        time.sleep(0.4)  # room for the test to kill the run between checkpoints

    Store.save_checkpoint = save_then_pause
    scoring.score_models(sys.argv[1], ["a"], backend="fake", batch_tokens=128, checkpoint_every=0)
    """
)


def test_resume_after_sigkill_scores_only_the_missing_texts(tmp_path, texts):
    ts = TextSet.from_texts(texts)
    clean = Store.create(tmp_path / "clean", ts)
    score_models(clean, ["a"], backend="fake", batch_tokens=128)
    killed = Store.create(tmp_path / "killed", ts)
    script = tmp_path / "run.py"
    script.write_text(KILLED_RUN)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, str(script), str(killed.path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    try:
        while not list((killed.path / "partial").glob("*/*/chunk-*.parquet")):
            if proc.poll() is not None:
                pytest.fail(f"the run ended before its first checkpoint: {proc.stdout.read().decode()[-2000:]}")
            if time.time() > deadline:
                pytest.fail("no checkpoint appeared within 60 s")
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not killed.has_model("a")
    st = score_models(killed, ["a"], backend="fake", batch_tokens=128)["a"]
    assert 0 < st.n_resumed < len(texts) and st.n_resumed + st.n_scored == len(texts)
    got, want = killed.vectors("a"), clean.vectors("a")
    assert got["text_pos"].tolist() == list(range(len(texts)))
    np.testing.assert_array_equal(got["loglik"], want["loglik"])
    assert not list((killed.path / "partial").glob("*/*/chunk-*.parquet"))


def test_the_driver_is_reached_through_the_package_attribute(store, monkeypatch):
    calls = []
    monkeypatch.setattr(lmmap.scoring, "score_models", lambda *a, **k: calls.append(k) or {})
    from lmmap import scoring

    scoring.score_models(store, ["a"], backend="fake")
    assert calls == [{"backend": "fake"}]


def test_byte_tokenizer_is_hugging_face_shaped():
    tok = ByteTokenizer(adds_bos=True)
    assert tok("ab")["input_ids"].tolist() == [BOS, 97, 98]
    assert tok("ab", add_special_tokens=False)["input_ids"].tolist() == [97, 98]
    assert [x.tolist() for x in tok(["a", "é"])["input_ids"]] == [[BOS, 97], [BOS, 0xC3, 0xA9]]

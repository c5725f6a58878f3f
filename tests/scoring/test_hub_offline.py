"""A hub name that cannot be had fails in a second, not after a minute of retries (issue 22 §5).

The hub is made unreachable by pointing huggingface_hub's endpoint at a closed port on 127.0.0.1, with
offline mode off (as on a machine whose network is down); every non-loopback connection or look-up is
refused and recorded by the NetworkGuard, and the tests assert none was attempted.
"""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from cli_main import run_main  # noqa: E402
from hub_cache import NetworkGuard, use_hub_cache  # noqa: E402

from lmmap.exceptions import ScoringError  # noqa: E402
from lmmap.scoring.hf import load_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def hub_down(monkeypatch, tmp_path):
    """Offline mode off, the hub's endpoint a closed loopback port; returns the network guard."""
    from huggingface_hub import constants

    def down(cache):
        use_hub_cache(monkeypatch, cache, cache.parent)
        endpoint = f"http://127.0.0.1:{closed_port()}"
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            monkeypatch.setenv(var, "0")
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        return NetworkGuard().install(monkeypatch)

    return down


def test_a_mistyped_hub_name_fails_at_once_when_the_hub_cannot_be_reached(hub_down, tmp_path):
    guard = hub_down(tmp_path / "hf" / "hub")
    t0 = time.perf_counter()
    with pytest.raises(ScoringError) as err:
        load_model("lmmap-test/no-such-model", device="cpu")
    seconds = time.perf_counter() - t0
    msg = str(err.value)
    assert seconds < 5, seconds
    assert "\n" not in msg and "'lmmap-test/no-such-model'" in msg
    assert "neither a directory nor in the local Hugging Face cache" in msg and "could not be reached" in msg
    assert guard.attempts == []


def test_the_cli_says_so_in_one_line(hub_down, tmp_path):
    from lmmap.data.store import Store
    from lmmap.data.texts import TextSet

    guard = hub_down(tmp_path / "hf" / "hub")
    store = Store.create(tmp_path / "store", TextSet.from_texts(["a text", "another text"]))
    t0 = time.perf_counter()
    code, out, err = run_main("score", "lmmap-test/typo", "--store", str(store.path))
    assert time.perf_counter() - t0 < 10
    assert code == 1 and err.count("could not be reached") == 1 and "Traceback" not in err, err
    assert guard.attempts == []


def test_a_cached_model_loads_from_the_cache_when_the_hub_is_down(hub_down, tiny_run_cache, tiny_run_checkpoints):
    guard = hub_down(tiny_run_cache / "hub")
    t0 = time.perf_counter()
    model, _tok = load_model("lmmap-test/tiny-run", revision="step10", device="cpu")
    assert time.perf_counter() - t0 < 20
    from transformers import AutoModelForCausalLM

    want = AutoModelForCausalLM.from_pretrained(dict(tiny_run_checkpoints)["step10"])
    name = "transformer.h.1.mlp.c_fc.weight"
    np.testing.assert_array_equal(model.state_dict()[name].numpy(), want.state_dict()[name].numpy())
    assert guard.attempts == []

"""The restricted unpickler: plain data and numpy arrays load; anything that could run code is refused."""

import base64
import collections
import datetime
import os
import pickle

import numpy as np
import pandas as pd
import pytest

from lmmap.exceptions import LmmapError
from lmmap.data.safe_pickle import load_pickle, restricted_loads

PROTOCOLS = [0, 1, 2, 3, 4, 5]

# {"org/a": float64 [-1.5, -2.25, -3.0], "org/b": float32 [-4.0, -5.5, -6.125], "n": np.int64(7)}
# pickled by numpy 1.26.4 (which names numpy.core.*, as the authors' 2024 files do), protocols 2..5.
NUMPY1_PICKLES = {
    2: "gAJ9cQAoWAUAAABvcmcvYXEBY251bXB5LmNvcmUubXVsdGlhcnJheQpfcmVjb25zdHJ1Y3QKcQJjbnVtcHkKbmRhcnJheQpxA0sAhXEEY19jb2RlY3MKZW5jb2RlCnEFWAEAAABicQZYBgAAAGxhdGluMXEHhnEIUnEJh3EKUnELKEsBSwOFcQxjbnVtcHkKZHR5cGUKcQ1YAgAAAGY4cQ6JiIdxD1JxEChLA1gBAAAAPHERTk5OSv////9K/////0sAdHESYoloBVgcAAAAAAAAAAAAw7jCvwAAAAAAAALDgAAAAAAAAAjDgHETaAeGcRRScRV0cRZiWAUAAABvcmcvYnEXaAJoA0sAhXEYaAmHcRlScRooSwFLA4VxG2gNWAIAAABmNHEciYiHcR1ScR4oSwNoEU5OTkr/////Sv////9LAHRxH2KJaAVYEgAAAAAAwoDDgAAAwrDDgAAAw4TDgHEgaAeGcSFScSJ0cSNiWAEAAABucSRjbnVtcHkuY29yZS5tdWx0aWFycmF5CnNjYWxhcgpxJWgNWAIAAABpOHEmiYiHcSdScSgoSwNoEU5OTkr/////Sv////9LAHRxKWJoBVgIAAAABwAAAAAAAABxKmgHhnErUnEshnEtUnEudS4=",
    3: "gAN9cQAoWAUAAABvcmcvYXEBY251bXB5LmNvcmUubXVsdGlhcnJheQpfcmVjb25zdHJ1Y3QKcQJjbnVtcHkKbmRhcnJheQpxA0sAhXEEQwFicQWHcQZScQcoSwFLA4VxCGNudW1weQpkdHlwZQpxCVgCAAAAZjhxComIh3ELUnEMKEsDWAEAAAA8cQ1OTk5K/////0r/////SwB0cQ5iiUMYAAAAAAAA+L8AAAAAAAACwAAAAAAAAAjAcQ90cRBiWAUAAABvcmcvYnERaAJoA0sAhXESaAWHcRNScRQoSwFLA4VxFWgJWAIAAABmNHEWiYiHcRdScRgoSwNoDU5OTkr/////Sv////9LAHRxGWKJQwwAAIDAAACwwAAAxMBxGnRxG2JYAQAAAG5xHGNudW1weS5jb3JlLm11bHRpYXJyYXkKc2NhbGFyCnEdaAlYAgAAAGk4cR6JiIdxH1JxIChLA2gNTk5OSv////9K/////0sAdHEhYkMIBwAAAAAAAABxIoZxI1JxJHUu",
    4: "gASVRAEAAAAAAAB9lCiMBW9yZy9hlIwVbnVtcHkuY29yZS5tdWx0aWFycmF5lIwMX3JlY29uc3RydWN0lJOUjAVudW1weZSMB25kYXJyYXmUk5RLAIWUQwFilIeUUpQoSwFLA4WUaAWMBWR0eXBllJOUjAJmOJSJiIeUUpQoSwOMATyUTk5OSv////9K/////0sAdJRiiUMYAAAAAAAA+L8AAAAAAAACwAAAAAAAAAjAlHSUYowFb3JnL2KUaARoB0sAhZRoCYeUUpQoSwFLA4WUaA6MAmY0lImIh5RSlChLA2gSTk5OSv////9K/////0sAdJRiiUMMAACAwAAAsMAAAMTAlHSUYowBbpRoAowGc2NhbGFylJOUaA6MAmk4lImIh5RSlChLA2gSTk5OSv////9K/////0sAdJRiQwgHAAAAAAAAAJSGlFKUdS4=",
    5: "gAWVQAEAAAAAAAB9lCiMBW9yZy9hlIwSbnVtcHkuY29yZS5udW1lcmljlIwLX2Zyb21idWZmZXKUk5QolhgAAAAAAAAAAAAAAAAA+L8AAAAAAAACwAAAAAAAAAjAlIwFbnVtcHmUjAVkdHlwZZSTlIwCZjiUiYiHlFKUKEsDjAE8lE5OTkr/////Sv////9LAHSUYksDhZSMAUOUdJRSlIwFb3JnL2KUaAQolgwAAAAAAAAAAACAwAAAsMAAAMTAlGgIjAJmNJSJiIeUUpQoSwNoDE5OTkr/////Sv////9LAHSUYksDhZRoD3SUUpSMAW6UjBVudW1weS5jb3JlLm11bHRpYXJyYXmUjAZzY2FsYXKUk5RoCIwCaTiUiYiHlFKUKEsDaAxOTk5K/////0r/////SwB0lGJDCAcAAAAAAAAAlIaUUpR1Lg==",
}


class _RunsShell:
    """What an attacker would pickle: unpickling calls os.system(command)."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _CallsEval:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return (eval, (self.code,))


def _write(tmp_path, obj, protocol=4, name="data.pkl"):
    path = tmp_path / name
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_os_system_payload_is_refused_and_never_runs(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = _write(tmp_path, {"model": _RunsShell(f"touch {marker}")}, protocol)
    with pytest.raises(LmmapError) as err:
        load_pickle(path, allow_pickle=True)
    assert not marker.exists()
    msg = str(err.value)
    assert str(path) in msg and "system" in msg and "refusing" in msg


def test_the_payload_is_real(tmp_path):
    # Guards the test above: the same bytes DO run the command under plain pickle.loads.
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_RunsShell(f"touch {marker}")))
    assert marker.exists()


def test_eval_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = _write(tmp_path, [_CallsEval(f"open({str(marker)!r}, 'w')")])
    with pytest.raises(LmmapError, match=r"builtins\.eval"):
        load_pickle(path, allow_pickle=True)
    assert not marker.exists()


def test_numpy_functions_outside_the_allow_list_are_refused(tmp_path):
    # np.load itself can unpickle; only the reconstruction helpers are admitted from numpy.
    class CallsNpLoad:
        def __reduce__(self):
            return (np.load, ("x.npy",))

    with pytest.raises(LmmapError, match=r"numpy.*load"):
        load_pickle(_write(tmp_path, CallsNpLoad()), allow_pickle=True)


def test_other_codecs_through_codecs_encode_are_refused():
    # Protocol 2 spells bytes as _codecs.encode(str, "latin1"); no other codec may be reached that way.
    data = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R."
    with pytest.raises(LmmapError, match="_codecs"):
        restricted_loads(data, "crafted.pkl")


def test_pickle_refused_without_allow_pickle(tmp_path):
    path = _write(tmp_path, {"a": np.zeros(3)})
    with pytest.raises(LmmapError) as err:
        load_pickle(path, allow_pickle=False)
    msg = str(err.value)
    assert str(path) in msg and "allow_pickle=True" in msg and "run code" in msg
    from lmmap.params import for_cli

    assert "pass --allow-pickle if you trust it" in for_cli(err.value)  # what the CLI prints


def test_pandas_objects_are_refused_with_a_conversion_hint(tmp_path):
    path = _write(tmp_path, {"created_at": pd.Timestamp("2024-04-20T00:53:57+00:00")})
    with pytest.raises(LmmapError, match="pandas") as err:
        load_pickle(path, allow_pickle=True)
    assert "isoformat" in str(err.value)


def test_truncated_pickle_is_an_lmmap_error(tmp_path):
    data = pickle.dumps({"a": np.arange(100.0)}, protocol=4)
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LmmapError, match="not a readable pickle"):
        load_pickle(path, allow_pickle=True)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, np.int64, np.int32, np.uint8, np.bool_])
def test_numpy_arrays_round_trip(tmp_path, protocol, dtype):
    arr = (np.arange(12) - 6).astype(dtype).reshape(3, 4)
    out = load_pickle(_write(tmp_path, {"x": arr, "t": arr.T, "s": arr[0, 1]}, protocol), allow_pickle=True)
    for key, want in (("x", arr), ("t", arr.T)):
        assert out[key].dtype == want.dtype and out[key].shape == want.shape
        np.testing.assert_array_equal(out[key], want)
    assert type(out["s"]) is type(arr[0, 1]) and out["s"] == arr[0, 1]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_string_and_object_arrays_round_trip(tmp_path, protocol):
    words = np.array(["gpt2", "org/llama-3"])
    mixed = np.array(["a", 1.5, None], dtype=object)
    out = load_pickle(_write(tmp_path, [words, mixed], protocol), allow_pickle=True)
    np.testing.assert_array_equal(out[0], words)
    assert out[1].dtype == object and out[1].tolist() == ["a", 1.5, None]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_dict_of_arrays_round_trips_in_order(tmp_path, protocol):
    rng = np.random.default_rng(0)
    obj = {f"org/m{i}": -rng.random(20) * 100 for i in (3, 1, 2)}
    out = load_pickle(_write(tmp_path, obj, protocol), allow_pickle=True)
    assert list(out) == ["org/m3", "org/m1", "org/m2"]
    for k in obj:
        np.testing.assert_array_equal(out[k], obj[k])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_list_of_model_records_round_trips(tmp_path, protocol):
    records = [
        {
            "model_name": "aaditya/Llama3-OpenBioLLM-8B",
            "model_type": "llama-3",
            "model_size": 8,
            "created_at": "2024-04-20T00:53:57+00:00",
            "downloads": 9308,
            "tags": ["transformers", "pytorch", "llama"],
            "log-likelihood-10k": np.array([-684.6, -491.3]),
            "mean_logp": np.float64(-590.1),
            "score_v1_ARC": 58.6,
            "flag": None,
            "ok": True,
        }
    ]
    out = load_pickle(_write(tmp_path, records, protocol), allow_pickle=True)
    assert out[0]["tags"] == ["transformers", "pytorch", "llama"]
    assert out[0]["model_size"] == 8 and out[0]["flag"] is None and out[0]["ok"] is True
    np.testing.assert_array_equal(out[0]["log-likelihood-10k"], records[0]["log-likelihood-10k"])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_plain_values_round_trip(tmp_path, protocol):
    obj = {
        "od": collections.OrderedDict([("b", 1), ("a", 2)]),
        "when": datetime.datetime(2024, 4, 20, 0, 53, 57, tzinfo=datetime.timezone.utc),
        "day": datetime.date(2025, 1, 2),
        "set": {1, 2},
        "frozen": frozenset({"x"}),
        "bytes": b"\x00\xffab",
        "empty_bytes": b"",
        "complex": 1 + 2j,
        "tuple": (1, "two", 3.0),
    }
    out = load_pickle(_write(tmp_path, obj, protocol), allow_pickle=True)
    assert out == obj
    assert type(out["od"]) is collections.OrderedDict and list(out["od"]) == ["b", "a"]


@pytest.mark.parametrize("protocol", sorted(NUMPY1_PICKLES))
def test_pickles_written_by_numpy_1_load(protocol):
    out = restricted_loads(base64.b64decode(NUMPY1_PICKLES[protocol]), "numpy1.pkl")
    assert list(out) == ["org/a", "org/b", "n"]
    assert out["org/a"].dtype == np.float64 and out["org/a"].tolist() == [-1.5, -2.25, -3.0]
    assert out["org/b"].dtype == np.float32 and out["org/b"].tolist() == [-4.0, -5.5, -6.125]
    assert out["n"] == 7 and isinstance(out["n"], np.int64)


def test_allocations_are_bounded_by_the_size_of_the_data():
    from lmmap.exceptions import FormatError

    class Call:
        def __init__(self, func, *args):
            self.func, self.args = func, args

        def __reduce__(self):
            return self.func, self.args

    for obj in (Call(bytes, 10**11), Call(bytearray, 10**11), Call(np.ndarray, (10**6, 10**6), np.dtype("f8"))):
        with pytest.raises(FormatError, match="far more than the"):
            restricted_loads(pickle.dumps(obj, protocol=4), "crafted.pkl")
    # Within the bound, the same globals still build what a pickle asks for.
    assert restricted_loads(pickle.dumps(Call(bytes, 3)), "ok.pkl") == b"\x00\x00\x00"
    with pytest.raises(FormatError, match="limit 2 bytes"):
        restricted_loads(pickle.dumps(Call(bytes, 3)), "small.pkl", max_bytes=2)
    with pytest.raises(FormatError, match="memo index"):
        restricted_loads(b"\x80\x02N" + b"r" + (2**31).to_bytes(4, "little") + b".", "memo.pkl")

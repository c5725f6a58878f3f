"""Bad input as an attacker would write it: every case is a one-line LmmapError naming the file, never a bare
Python exception, a traceback or a memory blow-up (issue 10, §4–6).

Each category is a named list of cases, so the count of attacks per category is the length of a list; the
hypothesis sweeps at the end add generated cases on top.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmmap.exceptions import FormatError, InputError, LmmapError
from lmmap.data.formats import read_vectors, write_vectors
from lmmap.data.texts import TextSet, build_text_set


def assert_one_line(exc: BaseException, *fragments: str) -> None:
    msg = str(exc)
    assert isinstance(exc, LmmapError), f"{type(exc).__name__}: {msg}"
    assert "\n" not in msg, msg
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"


# -- text sets (§5) --------------------------------------------------------------------------------------------

# Lone surrogates survive json.loads (as str) and blow up later when encoded as UTF-8. Spellings × places.
SURROGATES = [
    r"\ud800", r"\udfff", r"\uDBFF", r"\udc00", r"\uD800", r"\ude00\ud83d", r"\ud800\ud800", r"\ud83dx", r"x\udc80y",
]
SURROGATE_PLACES = {
    "text": lambda s: '{"index": 1, "text": "ok %s"}' % s,
    "source": lambda s: '{"index": 1, "text": "ok", "source": "%s"}' % s,
    "extra": lambda s: '{"index": 1, "text": "ok", "pile_set_name": "%s"}' % s,
}
SURROGATE_CASES = [
    pytest.param(place(s), id=f"surrogate-{name}-{s}") for name, place in SURROGATE_PLACES.items() for s in SURROGATES
]
# In a key, and nested inside an extra value.
SURROGATE_CASES += [
    pytest.param('{"index": 1, "text": "ok", "k\\ud800": 1}', id="surrogate-key"),
    pytest.param('{"index": 1, "text": "ok", "meta": {"a": ["\\udfff"]}}', id="surrogate-nested"),
]


@pytest.mark.parametrize("line", SURROGATE_CASES)
def test_lone_surrogate_names_file_and_line(tmp_path, line):
    p = tmp_path / "texts.jsonl"
    p.write_text('{"index": 0, "text": "first"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(FormatError) as exc:
        TextSet.load(p)
    assert_one_line(exc.value, "texts.jsonl:2", "surrogate")
    with pytest.raises(FormatError):  # building a text set from the same file is refused the same way
        build_text_set([p], chunk_bytes=64, min_bytes=1)


TEXT_SET_CASES = [
    # (id, file content, fragment of the message besides the file name)
    ("index-1e23-int", '{"index": 100000000000000000000000, "text": "a"}', ":1: 'index'"),
    ("index-minus-1e23", '{"index": -100000000000000000000000, "text": "a"}', ":1: 'index'"),
    ("index-2^63", '{"index": 9223372036854775808, "text": "a"}', ":1: 'index'"),
    ("index-float-1e23", '{"index": 1e23, "text": "a"}', ":1: 'index'"),
    ("index-1.5", '{"index": 1.5, "text": "a"}', ":1: 'index'"),
    ("index-string", '{"index": "5", "text": "a"}', ":1: 'index'"),
    ("index-true", '{"index": true, "text": "a"}', ":1: 'index'"),
    ("index-NaN", '{"index": NaN, "text": "a"}', ":1: 'index'"),
    ("index-Infinity", '{"index": Infinity, "text": "a"}', ":1: 'index'"),
    ("index-null", '{"index": null, "text": "a"}', ":1: 'index'"),
    ("duplicate-index", '{"index": 3, "text": "a"}\n{"index": 3, "text": "b"}', "duplicate text index 3"),
    ("line-array", '[1, 2]', ":1: expected a JSON object"),
    ("line-string", '"text"', ":1: expected a JSON object"),
    ("line-number", '5', ":1: expected a JSON object"),
    ("line-null", 'null', ":1: expected a JSON object"),
    ("missing-text", '{"index": 0, "txt": "a"}', ":1: 'text'"),
    ("text-null", '{"index": 0, "text": null}', ":1: 'text'"),
    ("text-number", '{"index": 0, "text": 5}', ":1: 'text'"),
    ("text-list", '{"index": 0, "text": ["a"]}', ":1: 'text'"),
    ("text-object", '{"index": 0, "text": {"a": 1}}', ":1: 'text'"),
    ("text-empty", '{"index": 0, "text": ""}', ":1: empty text"),
    ("text-blank", '{"index": 0, "text": " \\n\\t "}', ":1: empty text"),
    ("malformed", '{"index": 0, "text": "a"', ":1: malformed JSON"),
    ("trailing-garbage", '{"index": 0, "text": "a"} x', ":1: malformed JSON"),
    ("deep-nesting", '{"index": 0, "text": "a", "x": ' + "[" * 100_000 + "]" * 100_000 + "}", ":1:"),
    ("only-blank-lines", "\n\n  \n", "empty"),
]


@pytest.mark.parametrize("content, fragment", [pytest.param(c, f, id=i) for i, c, f in TEXT_SET_CASES])
def test_malformed_text_set_jsonl_is_a_one_line_format_error(tmp_path, content, fragment):
    p = tmp_path / "texts.jsonl"
    p.write_text(content + "\n", encoding="utf-8")
    with pytest.raises(FormatError) as exc:
        TextSet.load(p)
    assert_one_line(exc.value, "texts.jsonl", fragment)


def test_what_real_files_hold_still_loads(tmp_path):
    # A byte-order mark, the largest int64 id, a valid surrogate pair and an escaped backslash before "ud800".
    p = tmp_path / "texts.jsonl"
    p.write_bytes(
        b'\xef\xbb\xbf{"index": 9223372036854775807, "text": "a"}\n{"index": -5, "text": "b"}\n'
        b'{"index": 0, "text": "smile \\ud83d\\ude00"}\n{"index": 1, "text": "not an escape: \\\\ud800"}\n'
    )
    ts = TextSet.load(p)
    assert list(ts.index) == [2**63 - 1, -5, 0, 1]
    assert ts.texts[2:] == ["smile 😀", "not an escape: \\ud800"]
    assert ts.identity == TextSet.load(ts.save(tmp_path / "again.jsonl")).identity


def test_text_set_given_a_directory_or_a_non_text_file(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("hello")
    with pytest.raises(FormatError) as exc:
        TextSet.load(tmp_path / "docs")
    assert_one_line(exc.value, "docs", "is a directory", "lmmap texts build")
    bad = tmp_path / "texts.parquet"
    bad.write_text('{"index": 0, "text": "a"}\n')  # JSONL under a Parquet name
    with pytest.raises(FormatError) as exc:
        TextSet.load(bad)
    assert_one_line(exc.value, "texts.parquet", "Parquet")
    binary = tmp_path / "texts.jsonl"
    binary.write_bytes(b"PAR1" + bytes(range(256)) * 4)
    with pytest.raises(FormatError) as exc:
        TextSet.load(binary)
    assert_one_line(exc.value, "texts.jsonl:1")


@pytest.mark.parametrize(
    "table, fragment",
    [
        pytest.param(pa.table({"index": [0, 1], "txt": ["a", "b"]}), "no 'text' column", id="no-text-column"),
        pytest.param(pa.table({"index": [0, 1], "text": [1, 2]}), "row 0: 'text'", id="text-int"),
        pytest.param(pa.table({"index": [0, 1], "text": ["a", None]}), "row 1: 'text'", id="text-null"),
        pytest.param(pa.table({"index": ["0", "1"], "text": ["a", "b"]}), "row 0: 'index'", id="index-string"),
        pytest.param(
            pa.table({"index": pa.array([2**64 - 1, 0], pa.uint64()), "text": ["a", "b"]}), "row 0: 'index'",
            id="index-uint64-max",
        ),
        pytest.param(pa.table({"index": [0.5, 1.0], "text": ["a", "b"]}), "row 0: 'index'", id="index-float"),
    ],
)
def test_malformed_text_set_parquet(tmp_path, table, fragment):
    p = tmp_path / "texts.parquet"
    pq.write_table(table, p)
    with pytest.raises(FormatError) as exc:
        TextSet.load(p)
    assert_one_line(exc.value, "texts.parquet", fragment)


# -- NPZ vector files (§4–6) ---------------------------------------------------------------------------------------

NAMES = ["m0", "m1", "m2"]


def _L(K=3, N=8):
    return -np.arange(1, K * N + 1, dtype=np.float64).reshape(K, N)


def _npy(array=None, header=None, body=b"") -> bytes:
    """A .npy member: a real array, or a bare header (as a forger writes it) followed by ``body``."""
    buf = io.BytesIO()
    if header is None:
        np.save(buf, array, allow_pickle=False)
    else:
        np.lib.format.write_array_header_1_0(buf, header)
        buf.write(body)
    return buf.getvalue()


def _zip(path, members: dict, compression=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _npz(path, **arrays) -> Path:
    arrays.setdefault("L", _L())
    arrays.setdefault("models", np.array(NAMES))
    return _zip(path, {f"{k}.npy": _npy(v) for k, v in arrays.items()})


def _zip_bomb(path) -> Path:
    # 64 MiB of zeros deflate to ~64 KiB: a float matrix of 800 models x 10,000 texts that would load "fine".
    K, N = 800, 10_000
    body = _npy(header={"descr": "<f8", "fortran_order": False, "shape": (K, N)}, body=bytes(K * N * 8))
    models = _npy(np.array([f"m{i}" for i in range(K)]))
    return _zip(path, {"L.npy": body, "models.npy": models}, compression=zipfile.ZIP_DEFLATED)


NPZ_CASES = [
    # (id, builder(path), fragment)
    ("text_pos-half-steps", lambda p: _npz(p, text_pos=np.arange(8) * 0.5), "'text_pos' holds 0.5"),
    ("text_pos-nan", lambda p: _npz(p, text_pos=np.array([0, 1, 2, 3, 4, 5, 6, np.nan])), "'text_pos' holds nan"),
    ("text_pos-negative", lambda p: _npz(p, text_pos=np.arange(8) - 1), "'text_pos' holds -1"),
    ("text_pos-duplicate", lambda p: _npz(p, text_pos=np.array([0, 1, 2, 3, 4, 5, 6, 6])), "position 6 twice"),
    ("text_pos-2^40", lambda p: _npz(p, text_pos=np.arange(8) + 2**40), "'text_pos' holds 1099511627776"),
    ("text_pos-strings", lambda p: _npz(p, text_pos=np.array(list("abcdefgh"))), "'text_pos' must hold integers"),
    ("n_tokens-2^40", lambda p: _npz(p, n_tokens=np.full((3, 8), 2**40)), "n_tokens 1099511627776"),
    ("n_tokens-nan", lambda p: _npz(p, n_tokens=np.full((3, 8), np.nan)), "'n_tokens' holds nan"),
    ("n_tokens-negative", lambda p: _npz(p, n_tokens=np.full((3, 8), -3)), "n_tokens -3"),
    ("n_tokens-fraction", lambda p: _npz(p, n_tokens=np.full((3, 8), 2.5)), "'n_tokens' holds 2.5"),
    ("n_tokens-shape", lambda p: _npz(p, n_tokens=np.ones((3, 7), int)), "'n_tokens' has shape"),
    ("convention-bogus", lambda p: _npz(p, convention=np.array("bogus")), "convention 'bogus'"),
    ("member-not-npy", lambda p: _zip(p, {"L.npy": _npy(_L()), "models.npy": _npy(np.array(NAMES)), "run.sh": b"rm -rf /"}),
     "member 'run.sh' is not a .npy array"),
    ("member-pickle", lambda p: _zip(p, {"L.npy": _npy(_L()), "models.npy": _npy(np.array(NAMES)),
                                          "evil.pkl": pickle.dumps(1)}), "member 'evil.pkl'"),
    ("member-directory", lambda p: _zip(p, {"L.npy": _npy(_L()), "models.npy": _npy(np.array(NAMES)), "sub/": b""}),
     "member 'sub/'"),
    ("member-twice", lambda p: _zip(p, {"L.npy": _npy(_L()), "models.npy": _npy(np.array(NAMES)),
                                         "L": _npy(_L())}), "member 'L'"),
    ("header-1e12-elements", lambda p: _zip(p, {
        "L.npy": _npy(header={"descr": "<f8", "fortran_order": False, "shape": (1000, 10**9)}, body=bytes(64)),
        "models.npy": _npy(np.array([f"m{i}" for i in range(1000)]))}), "declares an array of shape (1000, 1000000000)"),
    ("header-more-data-than-declared", lambda p: _zip(p, {
        "L.npy": _npy(header={"descr": "<f8", "fortran_order": False, "shape": (3, 2)}, body=bytes(8 * 6 + 100)),
        "models.npy": _npy(np.array(NAMES))}), "declares an array of shape (3, 2)"),
    ("header-negative-dim", lambda p: _zip(p, {
        "L.npy": _npy(header={"descr": "<f8", "fortran_order": False, "shape": (3, -2)}, body=b""),
        "models.npy": _npy(np.array(NAMES))}), "L.npy"),
    ("header-garbage", lambda p: _zip(p, {"L.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': 1, ]]]   \n",
                                           "models.npy": _npy(np.array(NAMES))}), "not a readable .npy array"),
    ("not-npy-magic", lambda p: _zip(p, {"L.npy": b"hello world, not numpy", "models.npy": _npy(np.array(NAMES))}),
     "not a readable .npy array"),
    ("object-models", lambda p: _zip(p, {"L.npy": _npy(_L()), "models.npy": _npy(
        header={"descr": "|O", "fortran_order": False, "shape": (3,)}, body=pickle.dumps(NAMES))}), "Python objects"),
    ("complex-L", lambda p: _npz(p, L=_L().astype(complex)), "'L' must be a 2-D numeric array"),
    ("zip-bomb-64MiB", _zip_bomb, "zip bomb"),
    ("truncated-zip", lambda p: p.write_bytes(_npz(p).read_bytes()[:300]) and p, "not a readable NPZ"),
    ("zip-signature-only", lambda p: p.write_bytes(b"PK\x03\x04" + bytes(200)) and p, "not a readable NPZ"),
    ("missing-models", lambda p: _zip(p, {"L.npy": _npy(_L())}), "missing 'models'"),
    ("text_set_id-number", lambda p: _npz(p, text_set_id=np.array(5)), "'text_set_id' must be a single string"),
]


def _flip_crc(p: Path) -> Path:
    data = bytearray(_npz(p).read_bytes())
    at = data.index(b"\x93NUMPY") + 200  # inside L's data
    data[at] ^= 0xFF
    p.write_bytes(bytes(data))
    return p


NPZ_CASES.append(("bad-crc", _flip_crc, "CRC"))


@pytest.mark.parametrize("build, fragment", [pytest.param(b, f, id=i) for i, b, f in NPZ_CASES])
def test_malformed_npz_is_refused_before_allocating(tmp_path, build, fragment):
    p = build(tmp_path / "vectors.npz")
    with pytest.raises(FormatError) as exc:
        read_vectors(p)
    assert_one_line(exc.value, "vectors.npz", fragment)


def test_npz_whole_float_positions_and_counts_load_as_integers(tmp_path):
    p = _npz(tmp_path / "v.npz", text_pos=np.arange(8) * 2.0, n_tokens=np.full((3, 8), 7.0))
    v = read_vectors(p)
    assert v.extra["text_pos"].dtype == np.int64 and list(v.extra["text_pos"]) == list(range(0, 16, 2))
    assert v.extra["n_tokens"].dtype == np.int64 and (v.extra["n_tokens"] == 7).all()
    # A deflated file of real log-likelihoods (np.savez_compressed) is no bomb.
    np.savez_compressed(tmp_path / "c.npz", L=np.random.default_rng(0).normal(-300, 30, (50, 20_000)),
                        models=np.array([f"m{i}" for i in range(50)]))
    assert read_vectors(tmp_path / "c.npz").L.shape == (50, 20_000)


# -- pickles (§6): small files that ask for huge memory ------------------------------------------------------------


class _Call:
    """Pickles as ``func(*args)``, as a crafted file would."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _reconstruct():
    from numpy._core.multiarray import _reconstruct as r

    return r


def _object_array(*items) -> np.ndarray:
    a = np.empty(len(items), dtype=object)
    for i, x in enumerate(items):
        a[i] = x
    return a


def _pickle_cases() -> dict[str, tuple[bytes, str]]:
    l0 = [0.0] * 1000
    shared = np.zeros(100_000)
    return {
        "bytes-1e11": (pickle.dumps({"m": _Call(bytes, 10**11)}, protocol=4), "bytes(100000000000)"),
        "bytearray-1e11": (pickle.dumps({"m": _Call(bytearray, 10**11)}, protocol=2), "bytearray(100000000000)"),
        "ndarray-1e12": (pickle.dumps({"m": _Call(np.ndarray, (10**12,), np.dtype("f8"))}, protocol=4), "numpy array"),
        "reconstruct-1e12": (pickle.dumps({"m": _Call(_reconstruct(), np.ndarray, (10**12,), b"b")}, protocol=3),
                             "numpy array"),
        "memo-index-2^32": (b"\x80\x04N" + b"r" + struct.pack("<I", 0xFFFFFFF0) + b".", "memo index 4294967280"),
        "binbytes8-1e11": (b"\x80\x04\x8e" + struct.pack("<Q", 10**11) + b"xx.", "not a readable pickle"),
        "binunicode8-1e11": (b"\x80\x04\x8d" + struct.pack("<Q", 10**11) + b"xx.", "not a readable pickle"),
        "frame-1e11": (b"\x80\x04\x95" + struct.pack("<Q", 10**11) + b"N.", "not a readable pickle"),
        "nested-lists-1e9": (pickle.dumps({"m": [[l0] * 1000] * 1000}, protocol=4), "nested sequence"),
        "shared-array-20000-models": (pickle.dumps({f"m{i}": shared for i in range(20_000)}, protocol=4),
                                      "20000 models × 100000 texts"),
        "metadata-join-1e10": (pickle.dumps([{"model_name": "a", "log-likelihood-10k": [-1.0, -2.0],
                                              "tags": ["x" * 100_000] * 100_000}], protocol=4), "metadata 'tags'"),
        "dtype-subarray-huge": (pickle.dumps({"m": _Call(np.dtype, ("f8", (10**6, 10**6)))}, protocol=4),
                                "not a readable pickle"),
        "huge-int-value": (pickle.dumps({"m": [-(10**100_000)]}, protocol=4), "too large for a float"),
        "2d-array": (pickle.dumps({"m": np.zeros((3, 3))}, protocol=4), "expected one vector"),
        "object-array-nested": (pickle.dumps({"m": _object_array([1.0], [2.0])}, protocol=4), "not of numbers"),
        "string-vector": (pickle.dumps({"m": "abc"}, protocol=4), "not a vector of numbers"),
    }


_PICKLE_CHILD = textwrap.dedent(
    """
    import json, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # old code must fail fast, not swap the machine
    from lmmap.data.formats import read_vectors
    out = {}
    for path in sys.argv[1:]:
        try:
            read_vectors(path, allow_pickle=True)
            out[path] = ["loaded", ""]
        except BaseException as exc:
            out[path] = [type(exc).__name__, str(exc)]
    print(json.dumps(out))
    """
)


def test_pickles_asking_for_huge_memory_are_refused(tmp_path):
    cases = _pickle_cases()
    paths = {}
    for name, (data, _) in cases.items():
        paths[name] = tmp_path / f"{name}.pkl"
        paths[name].write_bytes(data)
        assert len(data) < 2 << 20  # every attack is a small file
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _PICKLE_CHILD, *map(str, paths.values())], capture_output=True, text=True,
        timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout)
    failures = []
    for name, (_, fragment) in cases.items():
        kind, msg = results[str(paths[name])]
        if kind != "FormatError" or "\n" in msg or fragment not in msg or f"{name}.pkl" not in msg:
            failures.append(f"{name}: {kind}: {msg[:200]}")
    assert not failures, "\n".join(failures)
    # The checks admit real pickles of every protocol (arrays and plain lists of floats).
    L = np.random.default_rng(1).normal(-300, 20, (40, 500))
    for protocol in range(6):
        data = {f"org/m{i}": L[i] if i % 2 else L[i].tolist() for i in range(40)}
        p = tmp_path / f"p{protocol}.pkl"
        p.write_bytes(pickle.dumps(data, protocol=protocol))
        np.testing.assert_array_equal(read_vectors(p, allow_pickle=True).L, L)


# -- file names from user strings (§4) ---------------------------------------------------------------------------

FILENAME_ATTACKS = [
    "x y", "x_y", "x_y_1", "X_Y", "x/y", "x\\y", "../../etc/passwd", ".hidden", "..", ".", "", " ", "-rf",
    "a" * 300, "é" * 100, "é" * 101, "日本語", "CON", "nul.txt", "con", "x.", "x:y", "x*y?", "x\x00y", "x\ny",
    "\x1b[31mred", "[bold]x", "[/bold]", "\ud800", "e\u0301", "é",
]


def test_safe_filename_is_unique_bounded_and_safe():
    from lmmap.data.filenames import safe_filename

    taken: set[str] = set()
    stems = [safe_filename(s, taken) for s in FILENAME_ATTACKS]
    assert len({t.lower() for t in stems}) == len(FILENAME_ATTACKS)  # distinct, even ignoring case
    for s, t in zip(FILENAME_ATTACKS, stems):
        assert 1 <= len(t) <= 80, (s, t)
        assert t.isascii() and all(c.isalnum() or c in "._-" for c in t), (s, t)
        assert not t.startswith((".", "-")) and t.lower().split(".")[0] not in {"con", "nul"}, (s, t)
    # The case: three targets, three files; plain names stay as they are.
    three = [safe_filename(s, set()) for s in ("x y", "x_y", "x_y_1")]
    assert three[1:] == ["x_y", "x_y_1"] and three[0].startswith("x_y-") and len(set(three)) == 3
    # Independent of order, except for the rare counter.
    assert safe_filename("x y", set()) == three[0]
    assert safe_filename("x_y", {"x_y"}) == "x_y-2"
    assert len(safe_filename("a" * 300, set(), max_len=40)) == 40


def test_safe_filename_files_really_coexist(tmp_path):
    from lmmap.data.filenames import safe_filename

    taken: set[str] = set()
    for s in FILENAME_ATTACKS:
        (tmp_path / (safe_filename(s, taken) + ".png")).write_bytes(b"x")
    assert len(list(tmp_path.iterdir())) == len(FILENAME_ATTACKS)
    with pytest.raises(InputError):
        safe_filename(5, set())


# -- hypothesis sweeps: generated malformed files, "an LmmapError or a correct load" -----------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SWEEP = settings(
    max_examples=200, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _loads_correctly_or_refuses(read, path):
    try:
        v = read(path)
    except LmmapError as exc:
        assert "\n" not in str(exc), str(exc)
        return None
    return v


def _check_vectors(v):
    assert v.L.dtype == np.float64 and v.L.ndim == 2 and np.isfinite(v.L).all()
    assert len(v.names) == v.L.shape[0] == len(set(v.names))
    for key in ("n_tokens", "text_pos"):
        if key in v.extra:
            assert v.extra[key].dtype.kind in "iu" and (v.extra[key] >= 0).all()


_CELLS = st.sampled_from([
    "-1.5", "-2", "0", "nan", "NaN", "", "inf", "-inf", "-1e309", "1e308", "abc", '"-3"', '"a,b"', "é", "\ud800",
    "-1e-400", "0x10", "1_000", " -4 ", "null", "N/A", "-", "--1", "1e", "\x00", '"', "TRUE",
])
_HEADERS = st.sampled_from(["model", "0", "1", "2", "model", "", "é", "-1", "1.5", '"x"', "a,b", "\ufeffmodel"])


@SWEEP
@given(
    header=st.lists(_HEADERS, min_size=1, max_size=5),
    rows=st.lists(st.lists(_CELLS, min_size=0, max_size=6), min_size=0, max_size=5),
    names=st.lists(st.sampled_from(["m", "m", "x y", "", "é", "\ud800", "1", '"q"']), min_size=5, max_size=5),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    raw_tail=st.sampled_from([b"", b"\xff\xfe", b"\n\n", b"m,\xc3"]),
)
def test_sweep_csv_vectors(tmp_path, header, rows, names, newline, raw_tail):
    lines = [",".join(header)] + [",".join([n] + r) for n, r in zip(names, rows)]
    p = tmp_path / "v.csv"
    p.write_bytes(newline.join(lines).encode("utf-8", "surrogatepass") + raw_tail)
    v = _loads_correctly_or_refuses(read_vectors, p)
    if v is not None:
        _check_vectors(v)


_JSON_VALUES = st.sampled_from([
    "0", "1", "-1", "7", "100000000000000000000000", "-100000000000000000000000", "9223372036854775808", "1e23", "1.5",
    "-12.5", "-1e400", "1e400", "NaN", "Infinity", '"5"', "null", "true", "[]", "{}", '"\\ud800"', "-0.0",
    "1099511627776",
])


@SWEEP
@given(
    lines=st.lists(
        st.one_of(
            st.tuples(_JSON_VALUES, _JSON_VALUES, _JSON_VALUES).map(
                lambda t: '{"index": %s, "log-likelihood": %s, "num-tokens": %s}' % t
            ),
            st.tuples(_JSON_VALUES, _JSON_VALUES).map(lambda t: '{"index": %s, "log-likelihood": %s}' % t),
            st.sampled_from(["", "[1]", "garbage", '{"index": 0}', '{"text": "a"}', "{", '"\\ud800"', "null",
                             '{"index": 0, "log-likelihood": -1, "token-log-probs": ["\\ud800"]}']),
        ),
        min_size=0, max_size=6,
    ),
    second_file=st.booleans(),
)
def test_sweep_scorer_jsonl(tmp_path, lines, second_file):
    d = tmp_path / "scorer"
    d.mkdir(exist_ok=True)
    for f in d.iterdir():
        f.unlink()
    (d / "org--a_float16.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if second_file:
        (d / "org--b_float16.jsonl").write_text("\n".join(reversed(lines)) + "\n", encoding="utf-8")
    v = _loads_correctly_or_refuses(read_vectors, d)
    if v is not None:
        _check_vectors(v)
    _loads_correctly_or_refuses(read_vectors, d / "org--a_float16.jsonl")


_PQ_COLUMNS = {
    "model": st.sampled_from([
        pa.array(["a", "b", "a", "b"]), pa.array(["a", None, "a", "b"]), pa.array([1, 2, 1, 2]),
        pa.array(["a", "a", "a", "a"]), pa.array(["\x00", "b", "\x00", "b"]),
    ]),
    "text_pos": st.sampled_from([
        pa.array([0, 0, 1, 1]), pa.array([0, 0, 1, 1], pa.int8()), pa.array([0.5, 0.5, 1.5, 1.5]),
        pa.array([-1, -1, 0, 0]), pa.array([2**40, 2**40, 0, 0]), pa.array([0, None, 1, 1]),
        pa.array(["0", "0", "1", "1"]), pa.array([2**64 - 1, 2**64 - 1, 0, 0], pa.uint64()), pa.array([0, 1, 0, 1]),
    ]),
    "loglik": st.sampled_from([
        pa.array([-1.0, -2.0, -3.0, -4.0]), pa.array([-1, -2, -3, -4]), pa.array([-1.0, None, -3.0, -4.0]),
        pa.array([-1.0, float("nan"), -3.0, -4.0]), pa.array(["x", "y", "z", "w"]), pa.array([True, False, True, True]),
        pa.array([-1e308, -1e308, -3.0, float("-inf")]),
    ]),
    "n_tokens": st.sampled_from([
        None, pa.array([3, 4, 5, 6]), pa.array([-3, 4, 5, 6]), pa.array([2**40, 4, 5, 6]), pa.array([3.5, 4, 5, 6]),
        pa.array([None, 4, 5, 6], pa.int64()), pa.array(["3", "4", "5", "6"]),
    ]),
}


@SWEEP
@given(
    cols=st.fixed_dictionaries(_PQ_COLUMNS),
    drop=st.sampled_from([None, "model", "text_pos", "loglik"]),
    wide=st.booleans(),
    meta=st.sampled_from([None, b"{", b'{"text_set_id": 5}', b'{"convention": "bogus"}', b'{"metadata": [1]}', b"[]"]),
)
def test_sweep_parquet_vectors(tmp_path, cols, drop, wide, meta):
    if wide:
        table = pa.table({"model": cols["model"], "0": cols["loglik"], "1": cols["text_pos"]})
    else:
        table = pa.table({k: v for k, v in cols.items() if v is not None and k != drop})
    if meta is not None:
        table = table.replace_schema_metadata({b"lmmap_vectors": meta})
    p = tmp_path / "v.parquet"
    pq.write_table(table, p)
    v = _loads_correctly_or_refuses(read_vectors, p)
    if v is not None:
        _check_vectors(v)


_JSONL_PIECES = st.sampled_from([
    '{"index": 0, "text": "a"}', '{"index": 1, "text": "b"}', '{"text": "no index"}', '{"index": 1e23, "text": "x"}',
    '{"index": 100000000000000000000000, "text": "x"}', '{"index": -1, "text": "\\ud800"}', '{"text": "\\udfff\\ud800"}',
    '{"index": 2, "text": "\\ud83d\\ude00"}', '{"index": 3, "text": ""}', '{"index": 4, "text": null}', "null", "[]",
    '"text"', "{", "", "   ", '{"index": 5, "text": "t", "x": [1, {"y": "\\ud800"}]}', '{"index": 6, "text": "t", "x": 1}',
    '{"index": 7, "text": "t", "x": "s"}', '{"index": 8, "text": "t", "source": 5}', '{"index": true, "text": "t"}',
    '{"index": 9, "text": "t", "\\ud800": 1}', '{"index": 10, "text": "t"} {"index": 11}', "\ufeff{}", "\x00",
    '{"index": 12, "text": "' + "[" * 50 + '"}', "[" * 5000,
])


@SWEEP
@given(lines=st.lists(_JSONL_PIECES, min_size=0, max_size=8), raw=st.sampled_from([b"", b"\xff", b"\xc3", b"\r\n"]))
def test_sweep_text_set_jsonl(tmp_path, lines, raw):
    p = tmp_path / "texts.jsonl"
    p.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass") + raw)
    try:
        ts = TextSet.load(p)
    except LmmapError as exc:
        assert "\n" not in str(exc) and "texts.jsonl" in str(exc), str(exc)
        return
    # Loaded: the text set must be usable everywhere (identity, saving, subsetting).
    assert len(ts) >= 1 and len(set(ts.index.tolist())) == len(ts)
    ts.identity
    ts.save(tmp_path / "again.jsonl")
    assert TextSet.load(tmp_path / "again.jsonl").identity == ts.identity


class _MemoryGuard:
    """Cap this process's address space for a block, so a case that slips past the checks fails fast."""

    def __init__(self, extra_bytes=4 << 30):
        self.extra = extra_bytes

    def __enter__(self):
        import resource

        self.old = resource.getrlimit(resource.RLIMIT_AS)
        with open("/proc/self/statm") as f:
            vm = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = vm + self.extra
        if self.old[1] != resource.RLIM_INFINITY:
            limit = min(limit, self.old[1])
        resource.setrlimit(resource.RLIMIT_AS, (limit, self.old[1]))

    def __exit__(self, *exc):
        import resource

        resource.setrlimit(resource.RLIMIT_AS, self.old)


def _valid_pickle_and_npz(tmp_path):
    L = np.random.default_rng(3).normal(-300, 20, (3, 16))
    records = [{"model_name": f"org/m{i}", "log-likelihood-10k": L[i], "size": i, "tags": ["a", "b"]} for i in range(3)]
    npz = write_vectors(tmp_path / "seed.npz", NAMES, L, text_set_id="sha256:x", n_tokens=np.ones((3, 16), int),
                        text_pos=np.arange(16), convention="reference").read_bytes()
    others = {}
    for suffix in (".parquet", ".csv"):
        others[suffix] = write_vectors(tmp_path / f"seed{suffix}", NAMES, L, text_set_id="sha256:x",
                                       n_tokens=np.ones((3, 16), int), convention="reference").read_bytes()
    return [pickle.dumps(records, protocol=p) for p in (2, 4, 5)], npz, others


@SWEEP
@given(data=st.data())
def test_sweep_mutated_vector_files(tmp_path, data):
    pickles, npz, others = _valid_pickle_and_npz(tmp_path)
    blobs = [(data.draw(st.sampled_from(pickles)), "m.pkl"), (npz, "m.npz"), (others[".parquet"], "m.parquet"),
             (others[".csv"], "m.csv")]
    for blob, name in blobs:
        b = bytearray(blob)
        for _ in range(data.draw(st.integers(1, 4))):
            kind = data.draw(st.sampled_from(["flip", "set", "cut", "dup"]))
            at = data.draw(st.integers(0, len(b) - 1))
            if kind == "flip":
                b[at] ^= 1 << data.draw(st.integers(0, 7))
            elif kind == "set":
                b[at] = data.draw(st.sampled_from([0, 0xFF, 0x7F, 0x80, ord("r"), ord("B"), 0x8E]))
            elif kind == "cut":
                del b[at:]
                if not b:
                    b = bytearray(b"\x80")
            else:
                b[at:at] = b[at: at + 8]
        p = tmp_path / name
        p.write_bytes(bytes(b))
        with _MemoryGuard():
            v = _loads_correctly_or_refuses(lambda q: read_vectors(q, allow_pickle=True), p)
        if v is not None:
            _check_vectors(v)


def test_npz_of_another_width_is_refused_from_its_header_when_n_is_known(tmp_path):
    p = _npz(tmp_path / "v.npz")
    assert read_vectors(p, expect_texts=8).n_texts == 8
    with pytest.raises(FormatError, match="'L' has 8 columns .* text set has 10"):
        read_vectors(p, expect_texts=10)
    q = _npz(tmp_path / "w.npz", text_pos=np.arange(8) + 2)
    assert read_vectors(q, expect_texts=10).n_texts == 8  # a subset of the texts, by position
    with pytest.raises(FormatError, match="text set has 5"):
        read_vectors(q, expect_texts=5)


def test_build_refuses_a_parquet_source_whose_text_is_not_a_string(tmp_path):
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "docs.parquet")
    with pytest.raises(FormatError, match="docs.parquet: row 0: 'text' is int"):
        build_text_set([tmp_path / "docs.parquet"], chunk_bytes=64, min_bytes=1)
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(FormatError, match="not a readable Parquet file"):
        build_text_set([tmp_path / "bad.parquet"], chunk_bytes=64, min_bytes=1)

"""Files from elsewhere (issue 21 §4): a hostile or malformed vector file is refused in one line naming the
file (and line or model) — exit code 1 from ``lmmap import`` — never an internal error, and never after
inflating what a small file declares.

The memory cases run in a child process whose address space is capped, so that a regression fails fast
(MemoryError, exit code 2) instead of swapping the machine, and whose peak resident memory is measured
around the refusal.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmmap.data.formats import read_vectors
from lmmap.data.store import Store
from lmmap.data.texts import TextSet
from lmmap.exceptions import FormatError, LmmapError
from tests.cli_main import run_main

ROOT = Path(__file__).resolve().parents[2]
N_TEXTS = 300


def _make_store(path: Path) -> Path:
    texts = path.parent / f"{path.name}-texts.jsonl"
    texts.write_text("".join(json.dumps({"index": i, "text": f"text number {i}"}) + "\n" for i in range(N_TEXTS)))
    Store.create(path, TextSet.load(texts))
    return path


@pytest.fixture
def store(tmp_path) -> Path:
    return _make_store(tmp_path / "store")


def refused(store: Path, vectors: Path, *extra, fragments=()) -> str:
    """``lmmap import`` of ``vectors``: exit code 1, one ``error:`` line naming the file; the store unchanged."""
    code, out, err = run_main("import", "--vectors", vectors, "--store", store, *extra)
    assert code == 1, (code, out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert vectors.name in err, err
    for f in fragments:
        assert f in err, f"{f!r} not in {err!r}"
    assert Store(store).model_names() == []
    return err


def one_line(exc: BaseException, path: Path, *fragments: str) -> None:
    msg = str(exc)
    assert isinstance(exc, FormatError), f"{type(exc).__name__}: {msg}"
    assert "\n" not in msg and path.name in msg, msg
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"


# -- the same matrix in every format --------------------------------------------------------------------------

NAMES = ["org/a", "org/b"]


def _vectors(width: int) -> np.ndarray:
    return -np.random.default_rng(width).uniform(1, 900, (len(NAMES), width))


def _write(fmt: str, d: Path, L: np.ndarray) -> Path:
    width = L.shape[1]
    if fmt == "npz":
        p = d / "v.npz"
        np.savez(p, L=L, models=np.array(NAMES))
    elif fmt == "csv":
        # Integer headers, as pandas writes a bare matrix: not a statement of which texts the columns are.
        p = d / "v.csv"
        rows = [",".join(["model", *map(str, range(width))])]
        rows += [",".join([n, *map(repr, row.tolist())]) for n, row in zip(NAMES, L)]
        p.write_text("\n".join(rows) + "\n")
    elif fmt == "parquet-wide":
        p = d / "v.parquet"
        pq.write_table(pa.table({"model": NAMES, **{str(j): L[:, j] for j in range(width)}}), p)
    elif fmt == "pickle":
        p = d / "v.pkl"
        p.write_bytes(pickle.dumps({n: row for n, row in zip(NAMES, L)}))
    elif fmt == "pickle-records":
        p = d / "model-data.pkl"
        p.write_bytes(pickle.dumps([{"model_name": n, "log-likelihood-10k": row.tolist()} for n, row in zip(NAMES, L)]))
    elif fmt == "jsonl":
        p = d / "scores"
        p.mkdir()
        for n, row in zip(NAMES, L):
            lines = [json.dumps({"index": j, "log-likelihood": v, "num-tokens": 5}) for j, v in enumerate(row.tolist())]
            (p / f"{n.replace('/', '--')}_float16.jsonl").write_text("\n".join(lines) + "\n")
    else:  # pragma: no cover
        raise AssertionError(fmt)
    return p


FORMATS = ["npz", "csv", "parquet-wide", "pickle", "pickle-records", "jsonl"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_refuses_vectors_shorter_than_the_text_set_naming_file_and_model(tmp_path, store, fmt):
    # 10 values per model into a 300-text store, and nothing in the file says which 10 texts they are.
    p = _write(fmt, tmp_path, _vectors(10))
    err = refused(store, p, "--allow-pickle", fragments=("'org/a'", "300"))
    if fmt == "jsonl":
        assert "org--a_float16.jsonl" in err  # the file that is short, not only its directory
    # The same check through the Python reader, given the store's N.
    with pytest.raises(FormatError) as exc:
        read_vectors(p, allow_pickle=True, expect_texts=N_TEXTS)
    assert "'org/a'" in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_imports_vectors_on_the_whole_text_set(tmp_path, store, fmt):
    L = _vectors(N_TEXTS)
    p = _write(fmt, tmp_path, L)
    code, out, err = run_main("import", "--vectors", p, "--store", store, "--allow-pickle")
    assert code == 0, err
    names, M = Store(store).matrix()
    assert names == NAMES
    np.testing.assert_allclose(M, L, rtol=1e-6)  # the store keeps float32


def test_a_scorer_file_cut_short_is_refused_even_alone(tmp_path, store):
    # The scorer writes one line per text; 250 of 300 lines is a run that stopped, not a subset.
    p = tmp_path / "org--m_float16.jsonl"
    p.write_text("".join(json.dumps({"index": i, "log-likelihood": -1.0 - i}) + "\n" for i in range(250)))
    refused(store, p, fragments=("'org/m'", "250", "300 texts"))


def test_vectors_that_name_their_texts_may_cover_part_of_the_text_set(tmp_path, store):
    # An NPZ with text_pos and a long Parquet file say which texts they hold: a partial model is fine.
    np.savez(tmp_path / "pos.npz", L=-np.ones((1, 10)), models=np.array(["p"]), text_pos=np.arange(10) * 3)
    assert run_main("import", "--vectors", tmp_path / "pos.npz", "--store", store)[0] == 0
    K = 3  # more rows (900) than texts: the per-model row count is what is checked
    pq.write_table(pa.table({"model": np.repeat([f"l{i}" for i in range(K)], N_TEXTS),
                             "text_pos": np.tile(np.arange(N_TEXTS), K), "loglik": -np.ones(K * N_TEXTS)}),
                   tmp_path / "long.parquet")
    assert run_main("import", "--vectors", tmp_path / "long.parquet", "--store", store)[0] == 0
    assert Store(store).model_names() == ["p", "l0", "l1", "l2"]


# -- memory: refused before the inflating step (a child process, capped and measured) -----------------------------

SHARED_FLOATS = 100_000
SHARED_MODELS = 20_000


def _shared_list_pickles(d: Path) -> dict[str, Path]:
    shared = [-1.0] * SHARED_FLOATS  # pickled once; every model refers to it through the memo
    ints = -np.ones(SHARED_FLOATS, dtype=np.int32)  # not float64: converting it copies, once per model
    out = {
        "dict-shared-list": pickle.dumps({f"m{i}": shared for i in range(SHARED_MODELS)}, protocol=4),
        "records-shared-list": pickle.dumps(
            [{"model_name": f"m{i}", "log-likelihood-10k": shared, "size": i} for i in range(SHARED_MODELS)],
            protocol=4),
        "dict-shared-int32": pickle.dumps({f"m{i}": ints for i in range(SHARED_MODELS)}, protocol=4),
    }
    paths = {}
    for name, data in out.items():
        assert len(data) < 2 << 20  # a small file each
        paths[name] = d / f"{name}.pkl"
        paths[name].write_bytes(data)
    return paths


def _deflated_wide_npz(path: Path, K: int = 40, W: int = 400_000) -> Path:
    """A 128 MB matrix of 400,000 columns in a 3 MB NPZ: it deflates ~×50, under the zip-bomb line, so only
    the width in the .npy header tells it is not for a 300-text store. Written a chunk at a time."""
    chunk = np.full(1 << 20, -2.0)
    chunk[::64] = np.random.default_rng(0).normal(-300, 30, len(chunk[::64]))
    raw = chunk.tobytes()
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (K, W)})
    names = io.BytesIO()
    np.save(names, np.array([f"w{i}" for i in range(K)]))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("L.npy", "w", force_zip64=True) as f:
            f.write(header.getvalue())
            left = K * W * 8
            while left:
                f.write(raw[: min(left, len(raw))])
                left -= min(left, len(raw))
        zf.writestr("models.npy", names.getvalue())
    info = zipfile.ZipFile(path).getinfo("L.npy")
    assert 10 < info.file_size / info.compress_size < 100  # not what the zip-bomb check refuses
    return path


def _parquet_bomb(path: Path, rows: int, chunk: int = 1_000_000) -> Path:
    """``rows`` rows of one model, one text and one value: a few KB however many rows (run-length encoding)."""
    table = pa.table({
        "model": pa.DictionaryArray.from_arrays(pa.array(np.zeros(chunk, np.int32)), pa.array(["m"])),
        "text_pos": pa.array(np.zeros(chunk, np.int32)),
        "loglik": pa.array(np.full(chunk, -1.0)),
    })
    with pq.ParquetWriter(path, table.schema, max_rows_per_page=rows, data_page_size=1 << 30,
                          write_statistics=False) as w:
        for _ in range(rows // chunk):
            w.write_table(table)
    return path


_CHILD = textwrap.dedent(
    """
    import json, os, resource, sys
    sys.path.insert(0, os.getcwd())
    from tests.cli_main import run_main
    from lmmap.data.formats import read_vectors
    from lmmap.exceptions import LmmapError

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

    def reset_peak():
        # Linux resets VmHWM (peak resident memory) on "5"; without it, the peak since the start is used.
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass

    store, cases = sys.argv[1], json.loads(sys.argv[2])
    run_main("import", "--vectors", "absent.npz", "--store", store)  # imports what an import needs, before measuring
    with open("/proc/self/statm") as f:
        vm = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (vm + (2 << 30), resource.getrlimit(resource.RLIMIT_AS)[1]))
    out = {}
    for case in cases:
        reset_peak()
        base = status("VmRSS")
        if case["cli"]:
            code, _, err = run_main("import", "--vectors", case["path"], "--store", store, "--allow-pickle")
        else:
            try:
                read_vectors(case["path"], allow_pickle=True)
                code, err = 0, ""
            except LmmapError as exc:
                code, err = 1, f"{type(exc).__name__}: {exc}"
            except BaseException as exc:
                code, err = 2, f"{type(exc).__name__}: {exc}"
        out[case["id"]] = {"code": code, "err": err, "grew": status("VmHWM") - base}
    print(json.dumps(out))
    """
)

# Peak resident memory a refusal may add. Before the fixes: the pickles went past the 2 GiB cap
# (16 GB uncapped), the NPZ +200 MB, the Parquet bomb +900 MB.
GROWTH_LIMIT = 64 << 20
PARQUET_BOMB_ROWS = 10_000_000


@pytest.fixture(scope="module")
def capped_runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    store = _make_store(d / "store")
    pickles = _shared_list_pickles(d)
    cases = [
        {"id": "cli-dict-shared-list", "cli": True, "path": str(pickles["dict-shared-list"])},
        {"id": "cli-records-shared-list", "cli": True, "path": str(pickles["records-shared-list"])},
        {"id": "py-dict-shared-list", "cli": False, "path": str(pickles["dict-shared-list"])},
        {"id": "py-records-shared-list", "cli": False, "path": str(pickles["records-shared-list"])},
        {"id": "py-dict-shared-int32", "cli": False, "path": str(pickles["dict-shared-int32"])},
        {"id": "cli-wide-npz", "cli": True, "path": str(_deflated_wide_npz(d / "wide.npz"))},
        {"id": "cli-parquet-bomb", "cli": True, "path": str(_parquet_bomb(d / "bomb.parquet", PARQUET_BOMB_ROWS))},
        {"id": "py-parquet-bomb", "cli": False, "path": str(d / "bomb.parquet")},
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "LMMAP_DEBUG": ""}
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(store), json.dumps(cases)], capture_output=True,
                          text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.splitlines()[-1])
    for c in cases:
        results[c["id"]]["path"] = Path(c["path"])
    return results


def _check_capped(run: dict, *fragments: str) -> None:
    assert run["grew"] < GROWTH_LIMIT, f"peak memory grew by {run['grew'] >> 20} MiB before the refusal: {run}"
    assert run["code"] == 1, run
    assert "\n" not in run["err"].rstrip("\n") and run["path"].name in run["err"], run["err"]
    for f in fragments:
        assert f in run["err"], f"{f!r} not in {run['err']!r}"


@pytest.mark.parametrize("case", ["cli-dict-shared-list", "cli-records-shared-list"])
def test_pickled_models_sharing_one_vector_are_refused_before_copying(capped_runs, case):
    # 20,000 models x 100,000 floats through one shared list, into a 300-text store.
    _check_capped(capped_runs[case], "'m0'", "100000 log-likelihoods", "300 texts")


@pytest.mark.parametrize("case", ["py-dict-shared-list", "py-records-shared-list", "py-dict-shared-int32"])
def test_pickled_models_sharing_one_vector_are_refused_by_the_size_budget_before_copying(capped_runs, case):
    # No text set to compare with: the K x N matrix the file asks for is checked against what it holds.
    _check_capped(capped_runs[case], "FormatError", f"{SHARED_MODELS} models × {SHARED_FLOATS} texts")


def test_npz_of_another_width_is_refused_from_its_header_without_inflating(capped_runs):
    _check_capped(capped_runs["cli-wide-npz"], "'L' has 400000 columns", "text set has 300", "'w0'")


@pytest.mark.parametrize("case", ["cli-parquet-bomb", "py-parquet-bomb"])
def test_parquet_bomb_is_refused_from_its_footer(capped_runs, case):
    _check_capped(capped_runs[case], f"{PARQUET_BOMB_ROWS:,} rows", "Parquet bomb")


def test_parquet_model_with_more_rows_than_texts_is_refused_before_its_columns_are_read(tmp_path, store, monkeypatch):
    # 2 million rows of one model: under the expansion floor, so only the row count per model tells.
    p = _parquet_bomb(tmp_path / "rows.parquet", 2_000_000)
    from lmmap.data.formats import parquet

    def inflating_read(*args, **kwargs):
        raise AssertionError("the columns were read before the row counts were checked")

    monkeypatch.setattr(parquet, "_read_parquet_table", inflating_read)
    refused(store, p, fragments=("model 'm' has more than 300 rows", "2,000,000"))
    with pytest.raises(FormatError) as exc:
        read_vectors(p, expect_texts=N_TEXTS)
    one_line(exc.value, p, "more than 300 rows")


def test_pickle_on_the_text_set_whose_models_share_a_vector_is_refused_by_the_budget(tmp_path, store):
    # The width matches the store; the matrix (20,000 x 300 floats, 46 MiB) still far exceeds what the
    # 0.2 MB file holds, and is refused before one vector is converted (numpy's buffers are traced).
    shared = [-1.0] * N_TEXTS
    p = tmp_path / "shared.pkl"
    p.write_bytes(pickle.dumps({f"m{i}": shared for i in range(20_000)}, protocol=4))
    tracemalloc.start()
    try:
        refused(store, p, "--allow-pickle", fragments=("20000 models × 300 texts", "far more than the file holds"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak >> 20} MiB allocated before the refusal"


# -- integers beyond float64's exact range -----------------------------------------------------------------------

BIG = 2**62


def _int_matrix(dtype=np.int64, big=BIG) -> np.ndarray:
    L = -np.ones((2, N_TEXTS), dtype=dtype) if np.dtype(dtype).kind == "i" else np.ones((2, N_TEXTS), dtype=dtype)
    L[1, 7] = big
    return L


def _integer_file(kind: str, d: Path) -> Path:
    """Model 'b' holds an integer float64 cannot hold exactly, in the file kind ``kind``."""
    names = np.array(["a", "b"])
    if kind.startswith("npz"):
        L = {"npz-int64": _int_matrix(), "npz-uint64": _int_matrix(np.uint64, 2**63 + 5),
             "npz-int64-negative": _int_matrix(big=-(2**53) - 1)}[kind]
        np.savez(d / "v.npz", L=L, models=names)
        return d / "v.npz"
    if kind == "parquet-long":
        table = pa.table({"model": np.repeat(names, N_TEXTS), "text_pos": np.tile(np.arange(N_TEXTS), 2),
                          "loglik": _int_matrix().reshape(-1)})
    elif kind == "parquet-wide":
        table = pa.table({"model": names, **{str(j): _int_matrix()[:, j] for j in range(N_TEXTS)}})
    else:
        rows = {"pickle-int64-array": list(_int_matrix()), "pickle-python-ints": _int_matrix().tolist(),
                "pickle-object-array": list(_int_matrix().astype(object))}[kind]
        (d / "v.pkl").write_bytes(pickle.dumps(dict(zip(names.tolist(), rows))))
        return d / "v.pkl"
    pq.write_table(table, d / "v.parquet")
    return d / "v.parquet"


INTEGER_FILES = ["npz-int64", "npz-uint64", "npz-int64-negative", "parquet-long", "parquet-wide",
                 "pickle-int64-array", "pickle-python-ints", "pickle-object-array"]


@pytest.mark.parametrize("kind", INTEGER_FILES)
def test_integer_log_likelihoods_beyond_2_to_53_are_refused(tmp_path, store, kind):
    p = _integer_file(kind, tmp_path)
    refused(store, p, "--allow-pickle", fragments=("model 'b'", "2^53"))


def test_scorer_line_with_an_integer_beyond_2_to_53_names_the_line(tmp_path, store):
    d = tmp_path / "scores"
    d.mkdir()
    lines = [json.dumps({"index": i, "log-likelihood": -1.0}) for i in range(N_TEXTS)]
    lines[4] = json.dumps({"index": 4, "log-likelihood": BIG})
    (d / "org--b_float16.jsonl").write_text("\n".join(lines) + "\n")
    refused(store, d, fragments=("org--b_float16.jsonl:5:", "2^53"))


def test_integer_matrices_float64_holds_exactly_still_load(tmp_path):
    L = _int_matrix(big=-(2**53))
    np.savez(tmp_path / "v.npz", L=L, models=np.array(["a", "b"]))
    v = read_vectors(tmp_path / "v.npz")
    assert v.L.dtype == np.float64 and v.L[1, 7] == -(2.0**53)
    (tmp_path / "v.pkl").write_bytes(pickle.dumps({"a": [-3, -(2**53)]}))
    assert read_vectors(tmp_path / "v.pkl", allow_pickle=True).L.tolist() == [[-3.0, -(2.0**53)]]


# -- malformed JSON, Parquet metadata, CSV headers -------------------------------------------------------------------

DEEP = "[" * 100_000


@pytest.mark.parametrize("line", [DEEP, '{"index": 0, "log-likelihood": ' + DEEP + "]" * 100_000 + "}"],
                         ids=["bare", "in-the-value"])
def test_deeply_nested_scorer_line_names_file_and_line(tmp_path, store, line):
    p = tmp_path / "org--deep_float16.jsonl"
    p.write_text(json.dumps({"index": 0, "log-likelihood": -1.0}) + "\n" + line + "\n")
    with pytest.raises(FormatError) as exc:
        read_vectors(p)
    one_line(exc.value, p, "org--deep_float16.jsonl:2:", "nested too deeply")
    refused(store, p, fragments=(":2:",))


PARQUET_METADATA = {
    "null": (b"null", "None, not a JSON object"),
    "list": (b"[]", "[], not a JSON object"),
    "string": (b'"x"', "'x', not a JSON object"),
    "number": (b"5", "5, not a JSON object"),
    "numeric-text-set-id": (b'{"text_set_id": 5}', "'text_set_id' is 5, not a string"),
    "list-text-set-id": (b'{"text_set_id": ["sha256:x"]}', "'text_set_id'"),
    "numeric-convention": (b'{"convention": 1}', "'convention' is 1"),
    "metadata-object": (b'{"metadata": {"model": "a"}}', "'metadata'"),
    "deeply-nested": (DEEP.encode(), "damaged lmmap metadata"),
    "not-json": (b"{", "damaged lmmap metadata"),
}


@pytest.mark.parametrize("meta, fragment", list(PARQUET_METADATA.values()), ids=list(PARQUET_METADATA))
def test_parquet_export_metadata_of_the_wrong_shape_is_refused(tmp_path, store, meta, fragment):
    table = pa.table({"model": ["a"] * N_TEXTS, "text_pos": np.arange(N_TEXTS), "loglik": -np.ones(N_TEXTS)})
    p = tmp_path / "v.parquet"
    pq.write_table(table.replace_schema_metadata({b"lmmap_vectors": meta}), p)
    with pytest.raises(FormatError) as exc:
        read_vectors(p)
    one_line(exc.value, p, fragment)
    refused(store, p, fragments=(fragment,))


CSV_HEADERS = {
    "quoted-newline": 'model,"a\nb",c\nm,-1,-2\n',
    "quoted-newline-crlf": 'model,"a\r\nb",c\r\nm,-1,-2\r\n',
    "quoted-carriage-return": 'model,"a\rb",c\nm,-1,-2\n',
    "text-after-quote": 'model,"a"b,c\nm,-1,-2\n',
    "unclosed-quote": 'model,"a,c\nm,-1,-2\n',
}


@pytest.mark.parametrize("content", list(CSV_HEADERS.values()), ids=list(CSV_HEADERS))
def test_csv_header_with_a_quoted_line_break_or_stray_quote_is_refused(tmp_path, store, content):
    p = tmp_path / "v.csv"
    p.write_bytes(content.encode())
    with pytest.raises(LmmapError) as exc:
        read_vectors(p)
    one_line(exc.value, p, "v.csv:1:", "header")
    refused(store, p, fragments=("v.csv:1:",))


def test_csv_with_quoted_names_still_loads(tmp_path):
    p = tmp_path / "v.csv"
    p.write_text('"model","0","1"\n"org/a, the first",-1.5,-2\n')
    v = read_vectors(p)
    assert v.names == ["org/a, the first"] and v.L.tolist() == [[-1.5, -2.0]]

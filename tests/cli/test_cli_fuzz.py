"""CLI fuzz harness (issue 10, "How it is checked").

Generated malformed inputs — text sets, vector files (NPZ, CSV, Parquet, scorer
JSONL, pickle), metadata CSVs, subset files and command-line arguments — are fed
to the real ``lmmap`` commands (in-process through :func:`lmmap.cli.main`, plus a
few real subprocesses), and every run must hold three invariants:

1. the exit code is non-zero, or the result is correct (checked per command);
2. the output never contains ``Traceback``, ``internal error``, or a raw
   terminal control character (ESC, BEL, CSI, a bidi override);
3. the store afterwards lists exactly what was committed: a failed command
   leaves ``Store.model_names()`` (and the metadata) as they were, a successful
   import adds each imported name exactly once.

After the generated cases come the repros of issue 10 §4/§5/§7 as named
examples. The whole module stays near a minute on one core (20 texts, PCA maps,
few examples per category; ``LMMAP_FUZZ_EXAMPLES`` raises the count).

Survey mode (``LMMAP_FUZZ_SURVEY=1``) records invariant violations instead of
failing at the first one, and prints the number of attacks and how many held
per category at the end of the module.
"""

from __future__ import annotations

import collections
import io
import json
import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
import zipfile
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lmmap.cli import main
from lmmap.data.store import Store

N = 20
EXAMPLES = int(os.environ.get("LMMAP_FUZZ_EXAMPLES", "0") or 0)
SURVEY = os.environ.get("LMMAP_FUZZ_SURVEY", "") not in ("", "0")
FUZZ = settings(
    max_examples=EXAMPLES or 20,
    deadline=None,
    derandomize=not EXAMPLES,  # reproducible in CI; random when asked for more examples
    database=None,
    suppress_health_check=list(HealthCheck),
)
RAW_CONTROLS = ("\x1b", "\x07", "\x9b", "\x9d", "\u202e", "\u2066", "\r")

# -- running commands and checking the invariants ------------------------------------------------------------------

TALLY: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])  # category -> [attacks, held, exit 0]
FAILURES: list[str] = []


@dataclass
class Run:
    args: list[str]
    code: int
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.code == 0

    def __str__(self) -> str:
        return f"lmmap {' '.join(map(repr, self.args))} -> {self.code}\nstdout: {self.out[-2000:]}\nstderr: {self.err[-2000:]}"


COMMAND_SECONDS = 30  # no command on 20 texts may take longer: a hang on a small input is a failure too


class Hung(BaseException):
    """Raised by the alarm in a command that ran past COMMAND_SECONDS (a BaseException: main() must not catch it)."""


def _alarm(signum, frame):
    raise Hung()


def lmmap(*args) -> Run:
    """Run ``lmmap ARGS`` in this process, the way the entry point does; stdout/stderr captured."""
    args = [os.fspath(a) if isinstance(a, Path) else str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(COMMAND_SECONDS)
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except Hung:
            code = -1
            print(f"Traceback: hung: still running after {COMMAND_SECONDS} s", file=err)
        except BaseException as exc:  # escaped main(): a crash, whatever the exception
            code = -1
            print(f"Traceback: {type(exc).__name__} escaped main(): {exc!r}", file=err)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
    return Run(args, code, out.getvalue(), err.getvalue())


def problems_in(run: Run) -> list[str]:
    """What is wrong with how a run reported itself (whatever it was asked)."""
    bad = []
    text = run.out + run.err
    if "Traceback" in text:
        bad.append("a traceback")
    if "internal error" in text:
        bad.append("an internal error")
    for ch in RAW_CONTROLS:
        if ch in text:
            bad.append(f"a raw {ch!r} in the output")
    if run.code not in (0, 1, 2, 130):
        bad.append(f"exit code {run.code}")
    if run.code == 1 and not any(line.startswith("error: ") for line in run.err.splitlines()):
        bad.append("exit 1 without an `error:` line")
    if run.code == 1:
        errors = [line for line in run.err.splitlines() if line.startswith("error: ")]
        if len(errors) != 1:
            bad.append(f"{len(errors)} `error:` lines")
    return bad


def held(category: str, run: Run, *extra_problems: str) -> None:
    """Count one attack of ``category``; fail (or, in survey mode, record) if an invariant broke."""
    bad = problems_in(run) + [p for p in extra_problems if p]
    TALLY[category][0] += 1
    TALLY[category][2] += run.ok
    if not bad:
        TALLY[category][1] += 1
        return
    message = f"[{category}] {'; '.join(bad)}\n{run}"
    if SURVEY:
        FAILURES.append(message)
    else:
        raise AssertionError(message)


@pytest.fixture(scope="module", autouse=True)
def _survey_report():
    yield
    if TALLY:
        lines = [f"  {cat:14s} {held_}/{n} held ({ok} succeeded, {n - ok} refused)"
                 for cat, (n, held_, ok) in sorted(TALLY.items())]
        print("\nCLI fuzz: attacks per category\n" + "\n".join(lines), file=sys.__stderr__)
    if SURVEY and FAILURES:
        print("\n\n".join(FAILURES[:40]), file=sys.__stderr__)


def unchanged(store: Path, names_before: list[str], meta_before: pd.DataFrame | None = None) -> str:
    """'' if the store still lists exactly ``names_before`` (and the metadata), else what changed."""
    after = Store(store).model_names()
    if after != names_before:
        return f"a failed command changed the store: {names_before} -> {after}"
    if meta_before is not None:
        meta = Store(store).metadata()
        if not meta.equals(meta_before):
            return "a failed command changed the metadata"
    return ""


def committed(store: Path, names_before: list[str], new: list[str]) -> str:
    """'' if the store lists the old models and each new one exactly once, with finite vectors."""
    s = Store(store)
    after = s.model_names()
    counts = collections.Counter(after)
    if any(c > 1 for c in counts.values()):
        return f"a model listed twice: {[n for n, c in counts.items() if c > 1]}"
    if set(after) != set(names_before) | set(new):
        return f"store lists {sorted(set(after) ^ (set(names_before) | set(new)))!r} wrongly"
    for name in new:
        ll = s.vectors(name)["loglik"].to_numpy()
        if not np.all(np.isfinite(ll)) or not np.all(np.isfinite(ll.astype(np.float64) ** 2)):
            return f"model {name!r} stored with non-finite values"
    listed = lmmap("models", "--store", store, "--format", "json")
    if listed.ok:
        shown = collections.Counter(r["model"] for r in json.loads(listed.out))
        if shown != collections.Counter(after):
            return f"`lmmap models` lists {dict(shown)} but the store holds {after}"
    else:
        return f"`lmmap models` failed after a successful import: {listed.err}"
    return ""


# -- shared inputs ------------------------------------------------------------------------------------------------

TEXTS = [f"Text {i}: " + " ".join(f"word{(i * 7 + j) % 31}" for j in range(40)) for i in range(N)]
GOOD_NAMES = [f"fam{f}/m{m}" for f in range(3) for m in range(3)]


def good_matrix(K: int, seed: int = 0, n: int = N) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = -rng.gamma(3.0, 100.0, size=n)
    return np.stack([np.minimum(base + rng.normal(0, 30, size=n), -0.01) for _ in range(K)])


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def texts_file(root):
    path = root / "texts.jsonl"
    path.write_text("".join(json.dumps({"index": i, "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    return path


@pytest.fixture(scope="module")
def base_store(root, texts_file):
    """A store of 9 models in 3 families with model_type/family metadata, and a uniform subset of it."""
    store = root / "base-store"
    assert lmmap("init", "--texts", texts_file, "--store", store).ok
    np.savez(root / "base.npz", L=good_matrix(9), models=np.array(GOOD_NAMES))
    meta = root / "base-meta.csv"
    pd.DataFrame({"model": GOOD_NAMES, "model_type": [n.split("/")[0] for n in GOOD_NAMES],
                  "family": [n[:4] for n in GOOD_NAMES]}).to_csv(meta, index=False)
    r = lmmap("import", "--vectors", root / "base.npz", "--metadata", meta, "--store", store)
    assert r.ok, r
    r = lmmap("select", "--method", "uniform", "--n", "12", "-o", root / "subset.json", "--store", store)
    assert r.ok, r
    return store


_COUNTER = iter(range(10**9))


def fresh(root: Path, base_store: Path) -> Path:
    """A private copy of the base store (and a directory for the example's files)."""
    d = root / f"ex{next(_COUNTER)}"
    d.mkdir()
    shutil.copytree(base_store, d / "store")
    return d


# -- strategies ---------------------------------------------------------------------------------------------------

MARKUP = ["[bold red]x", "[/bold]", "[/]", "[link=http://e.vil]y[/link]", "[on red]z", "\\[x]", "x\\", ":smile:"]
CONTROL = ["a\x1b[31mb", "\x1b]8;;http://x\x07y\x1b]8;;\x07", "rtl\u202eabc", "bell\x07", "cr\rover", "tab\tname",
           "new\nline", "nul\x00x", "c1\x9bx", "bidi\u2066x\u2069", "zw\u200bx"]
PATHY = [".hidden", "..", ".", "../../x", "a/b", "/abs", "a\\b", "con", "x" * 300, "é" * 100, " lead", "trail ",
         "CaseName", "casename"]
NASTY = MARKUP + CONTROL + PATHY + ["", "\ud800", "\udfff x"]
names_st = st.one_of(st.sampled_from(NASTY), st.sampled_from(GOOD_NAMES), st.text(max_size=10))
SPECIAL_VALUES = [0.0, 5.0, 1e-320, -1e-320, math.nan, math.inf, -math.inf, 1e150, -1e150, -1e300, -1e308]


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


# Lines of a text-set JSONL file: mostly valid, then every kind of wrong.
text_line_st = st.one_of(
    st.builds(lambda i, t: json.dumps({"index": i, "text": t}), st.integers(0, 10**6), st.text(min_size=1, max_size=40)),
    st.builds(lambda i, t: json.dumps({"index": i, "text": t}),
              st.sampled_from([10**23, 2**63, 2**64, -1, 0.5, 1e23, "3", True, None, [1]]), st.just("fine text")),
    st.builds(lambda t: json.dumps({"index": 1, "text": t}), st.sampled_from([3, None, ["a"], {"a": 1}, True, 1.5])),
    st.builds(lambda s: '{"index": 2, "text": "x%sy"}' % s,
              st.sampled_from([r"\ud800", r"\udfff", r"\ud83dx", r"\u0000", r"\u001b[2J", r"\u202e"])),
    st.builds(lambda s: json.dumps({"index": 3, "text": s}), st.sampled_from(CONTROL + MARKUP)),
    st.sampled_from(["", "{", "[1, 2]", "null", '{"index": NaN, "text": "x"}', '{"text": "no index"}',
                     '{"index": 1}', "\ufeff" + json.dumps({"index": 0, "text": "bom"}), "not json at all"]),
    st.text(max_size=30),
)


# -- generated attacks --------------------------------------------------------------------------------------------

def _plain_line(line: str) -> bool:
    """A line a text set must accept: an object with a small non-negative int index and a non-empty text."""
    try:
        obj = json.loads(line)
    except ValueError:
        return False
    ok = isinstance(obj, dict) and type(obj.get("index")) is int and 0 <= obj["index"] < 2**31
    return ok and isinstance(obj.get("text"), str) and obj["text"].strip() != "" and "\\ud" not in line.lower()


@FUZZ
@given(lines=st.lists(text_line_st, min_size=0, max_size=8), dup=st.booleans(), clean=st.booleans())
def test_fuzz_text_sets(root, lines, dup, clean):
    """`texts info` and `init` on malformed JSONL text sets: a refusal, or a store on exactly the file's texts.

    ``clean``: keep only well-formed lines (their texts may still hold markup and control characters), so
    that the success path is exercised as often as the refusals.
    """
    d = root / f"ts{next(_COUNTER)}"
    d.mkdir()
    f = d / "texts.jsonl"
    if clean:
        lines = [line for line in lines if _plain_line(line)]
        seen = set()
        lines = [line for line in lines if not (json.loads(line)["index"] in seen or seen.add(json.loads(line)["index"]))]
    if dup and lines and not clean:
        lines = lines + lines[:1]
    f.write_bytes(_encode("\n".join(lines) + "\n"))
    info = lmmap("texts", "info", f)
    held("text set", info)
    store = d / "store"
    r = lmmap("init", "--texts", f, "--store", store)
    problem = ""
    if r.ok:
        from lmmap.data.texts import TextSet

        n = len(TextSet.load(f))
        if Store(store).n_texts != n:
            problem = f"store on {Store(store).n_texts} texts, file has {n}"
    elif (store / "store.json").exists():
        problem = "a failed init left a store behind"
    held("text set", r, problem)


@FUZZ
@given(
    files=st.lists(st.binary(max_size=600), min_size=1, max_size=3),
    chunk=st.sampled_from(["-1", "0", "1", "64", "512", str(2**40), "abc"]),
    min_bytes=st.sampled_from(["-5", "0", "10", "100000"]),
    n=st.sampled_from([None, "-1", "0", "1", "3", str(10**12)]),
    bad_utf8=st.sampled_from(["error", "skip", "replace", "bogus", "[bold]x"]),
)
def test_fuzz_texts_build(root, files, chunk, min_bytes, n, bad_utf8):
    """`texts build` on random bytes and bad numbers: a refusal, or a loadable text set of at most n texts."""
    d = root / f"tb{next(_COUNTER)}"
    (d / "src").mkdir(parents=True)
    for i, b in enumerate(files):
        (d / "src" / f"doc{i}.txt").write_bytes(b)
    out = d / "out.jsonl"
    args = ["texts", "build", d / "src", "-o", out, "--chunk-bytes", chunk, "--min-bytes", min_bytes,
            "--on-bad-utf8", bad_utf8]
    if n is not None:
        args += ["--n", n]
    r = lmmap(*args)
    problem = ""
    if r.ok:
        from lmmap.data.texts import TextSet

        ts = TextSet.load(out)
        if n is not None and int(n) > 0 and len(ts) > int(n):
            problem = f"--n {n} but {len(ts)} texts"
    elif out.exists():
        problem = "a failed build left its output behind"
    held("text set", r, problem)


def _write_vectors(d: Path, fmt: str, names: list[str], L: np.ndarray, npz_extra: dict) -> tuple[Path, list[str]]:
    """Write ``names``/``L`` as ``fmt``; returns the path and extra CLI arguments."""
    if fmt == "npz":
        path = d / "v.npz"
        arrays = {"L": L, "models": np.array(names, dtype=str)}
        arrays.update(npz_extra)
        np.savez(path, **arrays)
        return path, []
    if fmt == "pickle":
        path = d / "v.pkl"
        path.write_bytes(pickle.dumps(dict(zip(names, L))))
        return path, ["--allow-pickle"]
    if fmt == "csv":
        import csv

        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["model", *[f"t{j}" for j in range(L.shape[1])]])
        for name, row in zip(names, L):
            w.writerow([name, *[repr(float(v)) for v in row]])
        path = d / "v.csv"
        path.write_bytes(_encode(buf.getvalue()))
        return path, []
    if fmt == "parquet":
        path = d / "v.parquet"
        K, n = L.shape
        try:
            table = pa.table({"model": np.repeat(np.array(names, dtype=object), n).tolist(),
                              "text_pos": np.tile(np.arange(n, dtype=np.int64), K), "loglik": L.ravel()})
        except (pa.ArrowException, UnicodeError):
            assume(False)
        pq.write_table(table, path)
        return path, []
    if fmt == "jsonl":
        path = d / "scorer"
        path.mkdir()
        for name, row in zip(names, L):
            safe = "".join(c if c.isalnum() else "_" for c in name)[:40] or "m"
            lines = [json.dumps({"index": i, "log-likelihood": float(v), "num-tokens": 30}) for i, v in enumerate(row)]
            (path / f"org--{safe}_float32.jsonl").write_text("\n".join(lines) + "\n")
        return path, []
    raise AssertionError(fmt)


def _scorer_names(names):
    return ["org/" + ("".join(c if c.isalnum() else "_" for c in n)[:40] or "m") for n in names]


@FUZZ
@given(
    fmt=st.sampled_from(["npz", "csv", "parquet", "jsonl", "pickle"]),
    names=st.lists(names_st, min_size=1, max_size=4),
    n_cols=st.sampled_from([N, N, N, N - 1, N + 1, 0]),
    specials=st.lists(st.tuples(st.integers(0, 3), st.integers(0, N), st.sampled_from(SPECIAL_VALUES)), max_size=3),
    npz_extra=st.fixed_dictionaries({}, optional={
        "n_tokens": st.sampled_from([np.full((4, N), 2**40), np.full((4, N), np.nan), np.full((4, N), -1), np.full((4, N), 30)]),
        "text_pos": st.sampled_from([np.arange(N) * 0.5, np.arange(N) + N, np.zeros(N, dtype=int), np.arange(N)]),
        "convention": st.sampled_from(["bogus", "full", "[bold]x"]),
    }),
    convention=st.sampled_from([None, "reference", "bogus", "[/bold]"]),
)
def test_fuzz_vector_files(root, base_store, fmt, names, n_cols, specials, npz_extra, convention):
    """`import` of malformed vector files: a refusal that changes nothing, or each model stored once, finite."""
    d = fresh(root, base_store)
    store = d / "store"
    before = Store(store).model_names()
    L = good_matrix(len(names), seed=len(names), n=n_cols) if n_cols else np.zeros((len(names), 0))
    for k, j, v in specials:
        if k < L.shape[0] and j < L.shape[1]:
            L[k, j] = v
    if "n_tokens" in npz_extra:
        npz_extra = {**npz_extra, "n_tokens": npz_extra["n_tokens"][: len(names)]}
    path, extra = _write_vectors(d, fmt, names, L, npz_extra)
    args = ["import", "--vectors", path, "--store", store, *extra]
    if convention is not None:
        args += ["--convention", convention]
    r = lmmap(*args)
    expected = _scorer_names(names) if fmt == "jsonl" else names
    held("vectors", r, committed(store, before, expected) if r.ok else unchanged(store, before))


metadata_value_st = st.one_of(
    st.integers(-10, 10), st.sampled_from(["7", "7B", "", "nan", "1e400", "true"] + MARKUP + CONTROL),
    st.floats(allow_nan=True), st.text(max_size=8),
)


@FUZZ
@given(
    rows=st.lists(st.tuples(st.one_of(st.sampled_from(GOOD_NAMES + ["new/a", "new/b", "absent"]), names_st),
                            metadata_value_st, metadata_value_st), min_size=0, max_size=6),
    header=st.sampled_from([["model", "size", "model_type"], ["model", "size", "size"], ["name", "size", "x"],
                            ["model", "[bold]c", "\x1b[2J"], ["model", "", "family"]]),
)
def test_fuzz_metadata(root, base_store, rows, header):
    """`import --metadata` with malformed MODELS.csv: all or nothing (models and metadata), then `models` lists it."""
    import csv

    d = fresh(root, base_store)
    store = d / "store"
    before, meta_before = Store(store).model_names(), Store(store).metadata()
    np.savez(d / "new.npz", L=good_matrix(2, seed=5), models=np.array(["new/a", "new/b"]))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    for row in rows:
        w.writerow([str(v) for v in row])
    (d / "meta.csv").write_bytes(_encode(buf.getvalue()))
    r = lmmap("import", "--vectors", d / "new.npz", "--metadata", d / "meta.csv", "--store", store)
    if r.ok:
        problem = committed(store, before, ["new/a", "new/b"])
        listing = lmmap("models", "--store", store, "--columns", "all")
        held("metadata", listing, "" if listing.ok else "`models --columns all` failed after an import")
    else:
        problem = unchanged(store, before, meta_before)
    held("metadata", r, problem)


def _junk():
    return st.sampled_from(["abc", -1, 0, 0.5, 1e308, -1e308, None, [], {}, "NaN", 10**30, True, "[/bold]"])


@FUZZ
@given(
    field=st.sampled_from(["pi", "count", "pos", "index", "w", "text_set_id", "n_texts", "format", "version", "texts",
                           "method", "n", "d", "models", "threshold"]),
    where=st.sampled_from(["first", "all", "top"]),
    value=_junk(),
    drop=st.booleans(),
)
def test_fuzz_subsets(root, base_store, field, where, value, drop):
    """`neighbors --subset` on damaged subset files: a refusal (the store untouched) or a correct table."""
    d = fresh(root, base_store)
    store = d / "store"
    before = Store(store).model_names()
    info = json.loads((root / "subset.json").read_text())
    rows = info["texts"]
    if field in rows[0] and where != "top":
        for row in rows if where == "all" else rows[:1]:
            if drop:
                row.pop(field, None)
            else:
                row[field] = value
    elif drop:
        info.pop(field, None)
    else:
        info[field] = value
    f = d / "subset.json"
    f.write_text(json.dumps(info))
    r = lmmap("neighbors", "fam0/m0", "--subset", f, "-k", "2", "--store", store)
    problem = unchanged(store, before)
    if r.ok and "fam0/m" not in r.out:
        problem = "neighbors printed no neighbour"
    held("subset", r, problem)


int_arg_st = st.one_of(st.integers(-3, 12), st.sampled_from([2**31, 2**63, 10**30, -(2**63)]).map(str),
                       st.sampled_from(["1.5", "abc", "", "1e3", "[bold]2"]))


@FUZZ
@given(
    command=st.sampled_from(["neighbors", "map", "select", "models", "export", "rm", "doctor"]),
    name=names_st,
    k=int_arg_st,
    R=int_arg_st,
    se=st.booleans(),
    word=st.one_of(st.sampled_from(["tsne", "pca", "model_type", "family", "modeltype", "csv", "json"]), names_st),
)
def test_fuzz_arguments(root, base_store, command, name, k, R, se, word):
    """Numbers, names and words as arguments: a refusal that changes nothing, or the command's correct result."""
    d = fresh(root, base_store)
    store = d / "store"
    before = Store(store).model_names()
    out = d / "out"
    problem = ""
    if command == "neighbors":
        args = ["neighbors", name, "-k", k, "--store", store] + (["--se", "--R", R] if se else [])
    elif command == "map":
        args = ["map", "-o", out, "--embedding", "pca", "--color-by", word, "-k", k, "--store", store]
    elif command == "select":
        args = ["select", "--method", word if se else "uniform", "--n", k, "-o", out / "s.json", "--store", store]
    elif command == "models":
        args = ["models", "--store", store, "--columns" if se else "--format", word]
    elif command == "export":
        args = ["export", "-o", out / (name + ".npz") if se else out / "x.npz", "--store", store]
    elif command == "rm":
        args = ["rm", name, "--store", store]
    else:
        args = ["doctor", "--store", store]
    r = lmmap(*args)
    if command == "rm" and r.ok:
        problem = "" if Store(store).model_names() == [n for n in before if n != name] else "rm removed the wrong models"
    elif command != "rm" or not r.ok:
        problem = unchanged(store, before)
    if not r.ok and command == "map" and out.exists():
        problem = "a failed map left its output directory behind"
    if r.ok and command == "neighbors":
        rows = [line for line in r.out.splitlines() if "fam" in line and "nearest" not in line]
        if len(rows) != min(int(k), len(before) - 1):
            problem = f"neighbors -k {k} printed {len(rows)} rows"
    held("arguments", r, problem)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/lmmap-fuzz-pwned",))


PICKLE_PAYLOADS = {
    "int keys": lambda: {1: good_matrix(1)[0], 2: good_matrix(1, 1)[0]},
    "list values": lambda: {"a": list(good_matrix(1)[0]), "b": ["x"] * N},
    "valid dict": lambda: {"p/a": good_matrix(1)[0], "[bold]p/b\x1b": good_matrix(1, 2)[0]},
    "records": lambda: [{"model_name": "rec/a", "raw_log-likelihood-10k": good_matrix(1)[0], "model_type": "[bold]t"},
                        {"model_name": "rec/b", "raw_log-likelihood-10k": good_matrix(1, 2)[0], "size": "7B"}],
    "records, wrong key": lambda: [{"model_name": "rec/a", "loglik": good_matrix(1)[0]}],
    "records missing name": lambda: [{"loglik": good_matrix(1)[0]}],
    "none": lambda: None,
    "bytes": lambda: b"\x00" * 1000,
    "nested": lambda: {"a": {"b": good_matrix(1)[0]}},
    "object array": lambda: {"a": np.array([object()] * N, dtype=object)},
    "2-d value": lambda: {"a": good_matrix(2)},
    "string matrix": lambda: {"a": np.array(["-1.0"] * N)},
    "code execution": lambda: {"a": _Evil()},
    "empty": lambda: {},
}


@FUZZ
@given(payload=st.sampled_from(sorted(PICKLE_PAYLOADS)), allow=st.booleans(), suffix=st.sampled_from([".pkl", ".npz", ".csv"]))
def test_fuzz_pickles(root, base_store, payload, allow, suffix):
    """Pickles of every shape (and one that would run code): refused without --allow-pickle, never executed."""
    d = fresh(root, base_store)
    store = d / "store"
    before = Store(store).model_names()
    obj = PICKLE_PAYLOADS[payload]()
    path = d / f"v{suffix}"
    path.write_bytes(pickle.dumps(obj, protocol=4))
    r = lmmap("import", "--vectors", path, "--store", store, *(["--allow-pickle"] if allow else []))
    problem = ""
    if os.path.exists("/tmp/lmmap-fuzz-pwned"):
        os.unlink("/tmp/lmmap-fuzz-pwned")
        problem = "a pickle ran code"
    elif r.ok and not allow:
        problem = "a pickle was read without --allow-pickle"
    elif r.ok:
        new = [n for n in Store(store).model_names() if n not in before]
        problem = committed(store, before, new) if new else "import reported success but stored nothing"
    else:
        problem = unchanged(store, before)
    held("pickle", r, problem)


@settings(FUZZ, max_examples=EXAMPLES or 8)
@given(
    color_by=st.one_of(st.sampled_from(["model_type", "family", "famliy", "size", "model", ""]), names_st),
    meta_rows=st.lists(st.tuples(st.sampled_from(GOOD_NAMES + ["ghost"]), metadata_value_st), max_size=5),
    with_meta=st.booleans(),
    k=st.sampled_from(["1", "3", "8", "50", "0", "-2"]),
    out_kind=st.sampled_from(["new", "nested", "existing", "file"]),
)
def test_fuzz_map_inputs(root, base_store, color_by, meta_rows, with_meta, k, out_kind):
    """`map` with odd metadata, --color-by and outputs: a complete map, or a refusal that leaves no new directory."""
    d = fresh(root, base_store)
    store = d / "store"
    before = Store(store).model_names()
    out = {"new": d / "map", "nested": d / "a" / "b" / "map", "existing": d, "file": d / "f.txt"}[out_kind]
    if out_kind == "file":
        out.write_text("mine")
    args = ["map", "-o", out, "--embedding", "pca", "--color-by", color_by, "-k", k, "--store", store]
    if with_meta:
        pd.DataFrame(meta_rows or [("fam0/m0", "x")], columns=["model", "size"]).to_csv(d / "m.csv", index=False)
        args += ["--metadata", d / "m.csv"]
    r = lmmap(*args)
    problem = unchanged(store, before)
    if r.ok:
        missing = [f for f in ("kl.csv", "coords.csv", "neighbors.csv", "map.png", "map.html", "map.json")
                   if not (out / f).exists()]
        if missing:
            problem = f"map reported success without {missing}"
        elif len(pd.read_csv(out / "coords.csv")) != len(before):
            problem = "the map does not show every model"
    elif out_kind in ("new", "nested") and (d / "map").exists() | (d / "a").exists():
        problem = "a failed map left its output directory behind"
    elif out_kind == "file" and out.read_text() != "mine":
        problem = "a failed map overwrote a file"
    held("map", r, problem)


@FUZZ
@given(
    names=st.lists(st.one_of(st.sampled_from(GOOD_NAMES), names_st), min_size=1, max_size=3),
    store_kind=st.sampled_from(["store", "missing", "file", "empty dir", "texts file"]),
    command=st.sampled_from(["rm", "init", "models", "export", "doctor"]),
)
def test_fuzz_store_paths(root, base_store, texts_file, names, store_kind, command):
    """Commands pointed at stores that are missing, files or empty; `rm` of names some of which are absent."""
    d = fresh(root, base_store)
    store = {"store": d / "store", "missing": d / "nowhere", "file": d / "f", "empty dir": d / "empty",
             "texts file": texts_file}[store_kind]
    if store_kind == "file":
        store.write_text("{}")
    if store_kind == "empty dir":
        store.mkdir()
    is_store = store_kind == "store"
    before = Store(store).model_names() if is_store else None
    if command == "rm":
        r = lmmap("rm", *names, "--store", store)
    elif command == "init":
        r = lmmap("init", "--texts", texts_file, "--store", store)
    elif command == "export":
        r = lmmap("export", "-o", d / "x.parquet", "--store", store)
    else:
        r = lmmap(command, "--store", store)
    problem = ""
    if is_store and command == "rm" and r.ok:
        expected = [n for n in before if n not in set(names)]
        problem = "" if Store(store).model_names() == expected else "rm removed the wrong models"
        if any(n not in before for n in names):
            problem = "rm of an absent model succeeded"
    elif is_store and command != "init":
        problem = unchanged(store, before) if not r.ok else ""
    elif is_store and command == "init" and r.ok and Store(store).model_names() != before:
        problem = "init on an existing store changed its models"
    if not is_store and command != "init" and r.ok and command != "doctor":
        problem = f"{command} succeeded on a {store_kind}"
    if store_kind == "texts file" and Path(texts_file).read_text().count("\n") != N:
        problem = "a command damaged a file given as --store"
    held("store paths", r, problem)


# -- named repros of issue 10 ---------------------------------------------------------------------------------------

def _npz_with(d: Path, **arrays) -> Path:
    base = {"L": good_matrix(2, seed=9), "models": np.array(["new/a", "new/b"])}
    base.update(arrays)
    np.savez(d / "x.npz", **base)
    return d / "x.npz"


def _texts_with(d: Path, line: str) -> Path:
    f = d / "t.jsonl"
    f.write_bytes(_encode(json.dumps({"index": 0, "text": "fine"}) + "\n" + line + "\n"))
    return f


def repro_errors_on_small_store(d, store):
    """§5: `lmmap errors` on a store with fewer texts than the default Table 1 targets."""
    r = lmmap("errors", "-o", d / "err", "--R", "5", "--store", store)
    return r, "" if r.ok else "errors refused a small store instead of skipping unreachable targets"


def repro_jsonl_index_1e23(d, store):
    """§5: a text-set JSONL `index` of 1e23 (OverflowError)."""
    r = lmmap("init", "--texts", _texts_with(d, '{"index": 1e23, "text": "x"}'), "--store", d / "s")
    return r, "" if not r.ok else ""


def repro_lone_surrogate(d, store):
    """§5: a lone surrogate in a text (UnicodeEncodeError)."""
    r = lmmap("init", "--texts", _texts_with(d, '{"index": 1, "text": "bad \\ud800 text"}'), "--store", d / "s")
    return r, ""


def repro_texts_is_directory(d, store):
    """§5: `--texts` given a directory."""
    return lmmap("init", "--texts", d, "--store", d / "s"), ""


def repro_npz_n_tokens_2_40(d, store):
    """§5: NPZ `n_tokens` of 2^40."""
    r = lmmap("import", "--vectors", _npz_with(d, n_tokens=np.full((2, N), 2**40)), "--store", store)
    return r, "" if not r.ok else "n_tokens of 2^40 was stored"


def repro_npz_n_tokens_nan(d, store):
    """§5: NPZ `n_tokens` of NaN."""
    r = lmmap("import", "--vectors", _npz_with(d, n_tokens=np.full((2, N), np.nan)), "--store", store)
    return r, "" if not r.ok else "n_tokens of NaN was stored"


def repro_name_too_long(d, store):
    """§5/§1: a model name too long for a file name is stored (hash suffix) and listed once."""
    names = ["x" * 300, "é" * 100]
    np.savez(d / "long.npz", L=good_matrix(2, seed=3), models=np.array(names))
    before = Store(store).model_names()
    r = lmmap("import", "--vectors", d / "long.npz", "--store", store)
    return r, committed(store, before, names) if r.ok else "a long model name was refused"


def repro_subset_pi_abc(d, store, subset=None):
    """§5: a subset with `"pi": "abc"`."""
    info = json.loads(subset.read_text())
    info["texts"][0]["pi"] = "abc"
    (d / "s.json").write_text(json.dumps(info))
    r = lmmap("neighbors", "fam0/m0", "--subset", d / "s.json", "--store", store)
    return r, "" if not r.ok else "a subset with pi 'abc' was used"


def repro_npz_member_not_npy(d, store):
    """§5: an NPZ member that is not .npy."""
    path = _npz_with(d)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("L.npy.txt", "hello")
        z.writestr("extra", b"\x00\x01garbage")
    bad = d / "bad.npz"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("L.npy", b"not an npy header at all")
        z.writestr("models.npy", b"\x93NUMPY garbage")
    r1 = lmmap("import", "--vectors", path, "--store", store)
    problem = "" if not r1.ok or "new/a" in Store(store).model_names() else "import said ok but stored nothing"
    held("repro", r1, problem)
    r = lmmap("import", "--vectors", bad, "--store", store)
    return r, "" if not r.ok else "an NPZ with non-.npy members was imported"


def repro_map_se_R1(d, store):
    """§5: `lmmap map --se --R 1` (bare ValueError)."""
    r = lmmap("map", "-o", d / "m", "--embedding", "pca", "--se", "--R", "1", "--store", store)
    return r, "" if r.ok or not (d / "m").exists() else "a failed map left its output directory"


def repro_neighbors_se_R1(d, store):
    """§5: `lmmap neighbors --se --R 1`."""
    return lmmap("neighbors", "fam0/m0", "--se", "--R", "1", "--store", store), ""


def repro_subset_without_identity(d, store, subset=None):
    """§4: a subset without a text-set identity maps another store's texts silently."""
    info = json.loads(subset.read_text())
    info.pop("text_set_id", None)
    (d / "s.json").write_text(json.dumps(info))
    r = lmmap("neighbors", "fam0/m0", "--subset", d / "s.json", "--store", store)
    return r, "" if not r.ok else "a subset without a text-set identity was used without an override"


def repro_huge_loglik(d, store):
    """§4: log-likelihoods of magnitude 1e150 import and then give inf KL."""
    L = good_matrix(2, seed=4)
    L[0, 3] = -1e150
    r = lmmap("import", "--vectors", _npz_with(d, L=L), "--store", store)
    return r, "" if not r.ok else "a log-likelihood of -1e150 was stored"


def repro_positive_loglik_warns(d, store):
    """§4: positive log-likelihoods are imported with a note (not refused)."""
    L = good_matrix(2, seed=4)
    L[1, 0] = 3.0
    before = Store(store).model_names()
    r = lmmap("import", "--vectors", _npz_with(d, L=L), "--store", store)
    if not r.ok:
        return r, "a positive log-likelihood was refused (should be a note)"
    return r, committed(store, before, ["new/a", "new/b"]) or ("" if "note:" in r.err else "no note for a positive log-likelihood")


def repro_convention_bogus(d, store):
    """§4: `import --convention bogus` is stored."""
    r = lmmap("import", "--vectors", _npz_with(d), "--convention", "bogus", "--store", store)
    return r, "" if not r.ok else "convention 'bogus' was stored"


def repro_npz_text_pos_half(d, store):
    """§4: NPZ `text_pos` in steps of 0.5 is truncated silently."""
    r = lmmap("import", "--vectors", _npz_with(d, text_pos=np.arange(N) * 0.5), "--store", store)
    return r, "" if not r.ok else "text_pos of 0.5 steps was accepted"


def _markup_store(d, store):
    names = ["[bold red]x", "[/bold]", "[link=http://e.vil]y[/link]", "a\x1b[31mb", "o\x1b]8;;http://x\x07y", "r\u202eq"]
    np.savez(d / "m.npz", L=good_matrix(len(names), seed=6), models=np.array(names))
    r = lmmap("import", "--vectors", d / "m.npz", "--store", store)
    assert r.ok, r
    return names


def repro_markup_names_in_models(d, store):
    """§4: markup and control characters in model names: `models` prints each literally, nothing crashes."""
    names = _markup_store(d, store)
    r = lmmap("models", "--store", store)
    missing = [n for n in names[:3] if n not in r.out]
    shown = "" if not missing else f"not printed literally: {missing}"
    if r.ok and ("a\\x1b[31mb" not in r.out or "r\\u202eq" not in r.out):
        shown = "control characters not shown visibly"
    return r, shown


def repro_markup_names_in_neighbors(d, store):
    """§4: `[/bold]` as a model name makes `neighbors` crash for the whole store."""
    _markup_store(d, store)
    r = lmmap("neighbors", "[/bold]", "-k", "14", "--store", store)
    return r, "" if r.ok and "[bold red]x" in r.out and "[link=http://e.vil]y[/link]" in r.out else "not listed literally"


def repro_markup_name_unknown(d, store):
    """§4: an unknown model name with markup is echoed literally in the error."""
    r = lmmap("neighbors", "[bold red]nope\x1b[2J", "--store", store)
    return r, "" if not r.ok and "[bold red]nope\\x1b[2J" in r.err else "unknown name not echoed literally"


def repro_hover_says_color_by(d, store):
    """§4: the map's hover label says "type:" whatever `--color-by` is."""
    r = lmmap("map", "-o", d / "m", "--embedding", "pca", "--color-by", "family", "--store", store)
    if not r.ok:
        return r, "map failed"
    html = (d / "m" / "map.html").read_text()
    return r, "" if "family:" in html or "family: " in html else "hover label does not name the --color-by column"


def repro_metadata_absent_models_note(d, store):
    """§7: metadata for absent models is one `note:` line, not a raw UserWarning with source code."""
    pd.DataFrame({"model": ["new/a", "ghost"], "model_type": ["x", "y"]}).to_csv(d / "m.csv", index=False)
    r = lmmap("import", "--vectors", _npz_with(d), "--metadata", d / "m.csv", "--store", store)
    bad = "UserWarning" in r.err or "warnings.warn" in r.err or ".py:" in r.err
    return r, "raw warning printed" if bad else ("" if "note:" in r.err or not r.ok else "no note for metadata of absent models")


def repro_missing_store(d, store):
    """Issue 13: a missing store mentions --store and LMMAP_STORE."""
    r = lmmap("models", "--store", d / "nowhere")
    return r, "" if "--store" in r.err and "LMMAP_STORE" in r.err else "missing store does not mention --store/$LMMAP_STORE"


def repro_color_by_did_you_mean(d, store):
    """Issue 13: `--color-by modeltype` suggests model_type before any computation, and leaves no directory."""
    r = lmmap("map", "-o", d / "m", "--embedding", "pca", "--color-by", "modeltype", "--store", store)
    ok = not r.ok and "model_type" in r.err and not (d / "m").exists()
    return r, "" if ok else "no suggestion, or an output directory left behind"


def repro_model_did_you_mean(d, store):
    """Issue 13: an unknown model name suggests the closest one."""
    r = lmmap("neighbors", "fam0/m9", "--store", store)
    return r, "" if not r.ok and "did you mean" in r.err and "fam0/m" in r.err else "no suggestion"


def repro_rm_model(d, store):
    """§3: `lmmap rm MODEL` removes a model (and its metadata) atomically."""
    r = lmmap("rm", "fam0/m0", "--store", store)
    after = Store(store).model_names() if (store / "store.json").exists() else []
    return r, "" if r.ok and after == [n for n in GOOD_NAMES if n != "fam0/m0"] else "rm did not remove exactly the model"


def repro_dot_names(d, store):
    """§1: names beginning with `.` are stored and listed (never hidden)."""
    names = [".hidden", "..", "../../x", "a/b", "CaseName", "casename"]
    np.savez(d / "dot.npz", L=good_matrix(len(names), seed=8), models=np.array(names))
    before = Store(store).model_names()
    r = lmmap("import", "--vectors", d / "dot.npz", "--store", store)
    return r, committed(store, before, names) if r.ok else "names beginning with '.' were refused"


def repro_select_n_huge(d, store):
    """Found by this harness: `select --n 10**30` (TypeError in the size check)."""
    r = lmmap("select", "--method", "uniform", "--n", str(10**30), "-o", d / "s.json", "--store", store)
    return r, "" if not r.ok else "10**30 draws were accepted"


def repro_select_n_2_63(d, store):
    """Found by this harness: `select --n 2**63` (OverflowError)."""
    r = lmmap("select", "--method", "uniform", "--n", str(2**63), "-o", d / "s.json", "--store", store)
    return r, "" if not r.ok else "2**63 draws were accepted"


def repro_neighbors_R_huge(d, store):
    """Found by this harness: `neighbors --se --R 2**31` ran for hours instead of refusing."""
    r = lmmap("neighbors", "fam0/m0", "--se", "--R", str(2**31), "--store", store)
    return r, "" if not r.ok else "2**31 replicates were accepted"


def repro_map_R_huge(d, store):
    """Found by this harness: `map --se --R 2**31` runs for hours instead of refusing."""
    r = lmmap("map", "-o", d / "m", "--embedding", "pca", "--se", "--R", str(2**31), "--store", store)
    return r, "" if not r.ok and not (d / "m").exists() else "2**31 replicates were accepted, or a directory left"


REPROS = {f.__name__.removeprefix("repro_"): f for f in [
    repro_errors_on_small_store, repro_jsonl_index_1e23, repro_lone_surrogate, repro_texts_is_directory,
    repro_npz_n_tokens_2_40, repro_npz_n_tokens_nan, repro_name_too_long, repro_subset_pi_abc,
    repro_npz_member_not_npy, repro_map_se_R1, repro_neighbors_se_R1, repro_subset_without_identity,
    repro_huge_loglik, repro_positive_loglik_warns, repro_convention_bogus, repro_npz_text_pos_half,
    repro_markup_names_in_models, repro_markup_names_in_neighbors, repro_markup_name_unknown,
    repro_hover_says_color_by, repro_metadata_absent_models_note, repro_missing_store,
    repro_color_by_did_you_mean, repro_model_did_you_mean, repro_rm_model, repro_dot_names, repro_select_n_huge,
    repro_select_n_2_63, repro_neighbors_R_huge, repro_map_R_huge,
]}


@pytest.mark.parametrize("name", list(REPROS))
def test_issue_repro(root, base_store, name):
    d = fresh(root, base_store)
    store = d / "store"
    fn = REPROS[name]
    kwargs = {"subset": root / "subset.json"} if "subset" in fn.__code__.co_varnames else {}
    before = Store(store).model_names()
    r, problem = fn(d, store, **kwargs)
    if not r.ok and not problem and (store / "store.json").exists():
        problem = unchanged(store, before)
    held("repro", r, problem)


# -- real processes -------------------------------------------------------------------------------------------------

def _proc(*args, env=None):
    e = {**os.environ, **(env or {})}
    e.pop("LMMAP_DEBUG", None)
    if env and "LMMAP_DEBUG" in env:
        e["LMMAP_DEBUG"] = env["LMMAP_DEBUG"]
    p = subprocess.run([sys.executable, "-m", "lmmap", *map(str, args)], capture_output=True, timeout=120, env=e)
    return Run(list(map(str, args)), p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace"))


def test_real_processes(root, base_store):
    """The installed entry point: version, a markup-named missing file, a bad option, a missing store."""
    r = _proc("--version")
    held("process", r, "" if r.ok and r.out.startswith("lmmap ") else "no version")
    r = _proc("import", "--vectors", root / "[bold]no\x1b[31mfile.npz", "--store", base_store)
    held("process", r, "" if r.code == 1 and "[bold]no\\x1b[31mfile.npz" in r.err else "missing file not named literally")
    r = _proc("map", "-o", root / "pm", "--embedding", "pca", "-k", "zero", "--store", base_store)
    held("process", r, "" if r.code == 1 and r.err.startswith("error: -k") else "usage error not reported")
    r = _proc("models", env={"LMMAP_STORE": str(root / "no-such-store")})
    held("process", r, "" if r.code == 1 and "LMMAP_STORE" in r.err else "missing store not explained")

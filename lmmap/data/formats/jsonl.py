"""The authors' scorer output: one ``<org>--<name>_<dtype>.jsonl`` per model, one JSON object per
text with ``index``, ``log-likelihood`` and ``num-tokens`` (scored under the ``reference``
convention). Read one file, several, or a directory of them.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.json as pajson

from lmmap.data.formats.common import _MAX_COUNT, _MAX_EXACT_INT, Vectors, _finish, _one_line, _short_repr
from lmmap.exceptions import FormatError

# The authors' scorer names files <org>--<name>_<torch dtype>.jsonl (str(torch.float16) -> "float16").
_DTYPE_SUFFIX = re.compile(r"_(b?float\d*|half|double|fp\d+|bf16|u?int\d+|auto)$")
SUFFIXES = (".jsonl", ".ndjson")


def scorer_model_name(path: Path) -> tuple[str, str | None]:
    """(model name, dtype) from a scorer file name ``<org>--<name>_<dtype>.jsonl``."""
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    m = _DTYPE_SUFFIX.search(stem)
    dtype = None
    if m:
        dtype, stem = m.group(1), stem[: m.start()]
    return stem.replace("--", "/", 1), dtype


def read_dir(path: Path, expect_texts: int | None = None) -> Vectors:
    """Vectors from every ``.jsonl`` file of directory ``path``, one model per file, in file-name order."""
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
    if not files:
        raise FormatError(
            f"{path} is a directory with no .jsonl files; lmmap reads a directory of the authors' "
            "scorer output, one <org>--<name>_<dtype>.jsonl per model"
        )
    return read_files(files, source=path, expect_texts=expect_texts)


def read_files(files: list[Path], source: Path, expect_texts: int | None = None) -> Vectors:
    """Vectors from scorer files (``source``: what errors name); every model must be on the same texts.

    ``expect_texts``: the text set's N. The scorer writes one line per text of the set, so a file with
    fewer lines is a run cut short (or another text set), not a subset, and is refused.
    """
    names, dtypes, index, vectors, tokens = [], {}, None, [], []
    first_file = {}
    for f in files:
        name, dtype = scorer_model_name(f)
        if name in first_file:
            raise FormatError(
                f"{source}: model {name!r} has two files, {first_file[name].name} and {f.name}; keep one"
            )
        first_file[name] = f
        idx, ll, nt = _read_scorer_file(f)
        if expect_texts is not None and len(idx) != expect_texts:
            raise FormatError(
                f"{f}: model {name!r} has {len(idx)} log-likelihoods (lines) but the text set has {expect_texts} "
                "texts, and the scorer writes one line per text: the run was cut short or scored another text "
                "set; rescore the model on the whole text set"
            )
        if index is None:
            index = idx
        elif not np.array_equal(idx, index):
            only_here = np.setdiff1d(idx, index)
            only_first = np.setdiff1d(index, idx)
            detail = (
                f"e.g. it lacks index {int(only_first[0])}" if len(only_first)
                else f"e.g. it has index {int(only_here[0])}, which {names[0]!r} lacks"
            )
            raise FormatError(
                f"{f}: model {name!r} is scored on {len(idx)} texts but {names[0]!r} on {len(index)} "
                f"({detail}); every model must be scored on the same texts"
            )
        names.append(name)
        dtypes[name] = dtype
        vectors.append(ll)
        tokens.append(nt)
    L = np.vstack(vectors)
    n_tokens = np.vstack(tokens) if all(t is not None for t in tokens) else None

    def locate(i, j):
        return f"index {int(index[j])} in {first_file[names[i]].name}"

    return _finish(
        source, names, L, locate=locate, format="scorer-jsonl", text_index=index, n_tokens=n_tokens,
        dtype=dtypes, convention="reference",
    )


# A line whose first non-blank character is not "{" (blank lines are fine).
_NOT_AN_OBJECT_LINE = re.compile(rb"(?m)^[ \t\r\f\v]*[^\s{]")
_SCORER_SCHEMA = pa.schema([("index", pa.int64()), ("num-tokens", pa.int64()), ("log-likelihood", pa.float64())])


def _read_scorer_file(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(index, log-likelihood, num-tokens or None), sorted by index."""
    if path.stat().st_size == 0:
        raise FormatError(f"{path} is empty: expected one JSON line per text")
    data = path.read_bytes()
    try:
        if _NOT_AN_OBJECT_LINE.search(data):
            # pyarrow 14-26 crashes the process (segfault) on a top-level `null` line; only lines that are
            # all objects go to Arrow, anything else to the line-by-line reader, which names the line.
            raise pa.ArrowInvalid("a line that is not a JSON object")
        # Fast path: Arrow parses only the three fields we keep, skipping token-log-probs.
        table = pajson.read_json(
            pa.BufferReader(data),
            parse_options=pajson.ParseOptions(explicit_schema=_SCORER_SCHEMA, unexpected_field_behavior="ignore"),
        )
        if table.column("index").null_count or table.column("log-likelihood").null_count:
            raise pa.ArrowInvalid("missing fields")
        idx = table.column("index").to_numpy()
        ll = table.column("log-likelihood").to_numpy()
        nt_col = table.column("num-tokens")
        nt = nt_col.to_numpy() if nt_col.null_count == 0 else None
        if len(ll) and np.abs(ll).max() > _MAX_EXACT_INT:
            raise pa.ArrowInvalid("a value beyond 2**53, perhaps an integer float64 cannot hold")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # Anything odd: the line-by-line reader names the line.
        idx, ll, nt = _read_scorer_file_slow(path)
    order = np.argsort(idx, kind="stable")
    idx, ll = idx[order], ll[order]
    nt = nt[order] if nt is not None else None
    dup = np.flatnonzero(np.diff(idx) == 0)
    if len(dup):
        raise FormatError(f"{path}: text index {int(idx[dup[0]])} appears on two lines; keep one")
    return idx, ll, nt


def _read_scorer_file_slow(path: Path):
    idx, ll, nt = [], [], []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise FormatError(f"{path}:{lineno}: malformed JSON ({_one_line(exc)}); fix or rescore this line") from None
            except RecursionError:
                raise FormatError(f"{path}:{lineno}: JSON nested too deeply to read; fix or rescore this line") from None
            if not isinstance(obj, dict):
                raise FormatError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            if "log-likelihood" not in obj:
                if "text" in obj:
                    raise FormatError(
                        f"{path}:{lineno}: no 'log-likelihood' field (this looks like a text set: give it as "
                        f"{{texts={path.name}}}, not as vectors)", params=("texts",),
                    )
                raise FormatError(f"{path}:{lineno}: no 'log-likelihood' field")
            i, v, n = obj.get("index"), obj["log-likelihood"], obj.get("num-tokens")
            if isinstance(i, bool) or not isinstance(i, int) or not -(2**63) <= i < 2**63:
                raise FormatError(f"{path}:{lineno}: 'index' must be an integer (64-bit), got {_short_repr(i)}")
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise FormatError(f"{path}:{lineno}: 'log-likelihood' must be a number, got {_short_repr(v)}")
            if isinstance(v, int) and abs(v) > _MAX_EXACT_INT:
                raise FormatError(
                    f"{path}:{lineno}: 'log-likelihood' is the integer {_short_repr(v)}, beyond ±2^53, which float64 "
                    "cannot hold exactly and no log-likelihood reaches; rescore this text"
                )
            if not math.isfinite(v):
                raise FormatError(f"{path}:{lineno}: 'log-likelihood' is {v}; rescore this text")
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= _MAX_COUNT):
                raise FormatError(
                    f"{path}:{lineno}: 'num-tokens' must be a whole number of tokens (0..{_MAX_COUNT}), got {_short_repr(n)}"
                )
            idx.append(i)
            ll.append(float(v))
            nt.append(n)
    if not idx:
        raise FormatError(f"{path} has no lines: expected one JSON line per text")
    ntoks = np.array(nt, dtype=np.int64) if all(n is not None for n in nt) else None
    return np.array(idx, dtype=np.int64), np.array(ll, dtype=np.float64), ntoks

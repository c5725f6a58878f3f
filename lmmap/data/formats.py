"""Reading and writing log-likelihood vectors in the published formats (SPEC §8).

:func:`read_vectors` turns any supported file into a :class:`Vectors` (model
names, the K×N float64 matrix ``L``, optional metadata): the authors' pickles
(``raw_log-likelihood_1018.pkl``, ``model-data-1018.pkl``), their scorer's
per-model JSONL output, and lmmap's own NPZ, Parquet and CSV exports.
:func:`write_vectors` writes NPZ, Parquet (long) or CSV (wide), atomically.

Every reader validates at the boundary: errors are :class:`FormatError`
naming the file (and line, column or model) and saying what to do.
Pickles are loaded only with ``allow_pickle=True`` and then only through
:mod:`lmmap.data.safe_pickle`.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.lib.format as npformat
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from lmmap.exceptions import FormatError, InputError
from lmmap.data.safe_pickle import is_pickle, load_pickle

__all__ = [
    "Vectors",
    "read_vectors",
    "write_vectors",
    "read_model_list",
    "read_metadata_csv",
    "VECTOR_KEYS",
]

# Keys under which the authors' model-data pickle holds each model's vector, in order of preference:
# raw values first, because lmmap clips with its own stored threshold (SPEC §3).
VECTOR_KEYS = ("raw_log-likelihood-10k", "log-likelihood-10k")
# Schema-metadata key of lmmap's Parquet export (the store's model files use b"lmmap" for records).
EXPORT_KEY = b"lmmap_vectors"
EXPORT_FORMAT = "lmmap-vectors"
# The authors' scorer names files <org>--<name>_<torch dtype>.jsonl (str(torch.float16) -> "float16").
_DTYPE_SUFFIX = re.compile(r"_(b?float\d*|half|double|fp\d+|bf16|u?int\d+|auto)$")
_CSV_BLOCK_BYTES = 64 << 20
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".pck")
_JSONL_SUFFIXES = (".jsonl", ".ndjson")
_PARQUET_SUFFIXES = (".parquet", ".pq")
# The scoring conventions (SPEC §2); equal to lmmap.scoring.hf.CONVENTIONS, not imported from there
# because that module imports torch.
KNOWN_CONVENTIONS = ("reference", "full")


@dataclass
class Vectors:
    """Log-likelihood vectors read from a file.

    ``names``: the K model names, in file order. ``L``: K×N float64,
    ``L[i, s] = log p_i(x_s)``. ``metadata``: per-model columns (model_type,
    model_size, benchmark scores, ...) indexed by model name, or None.
    ``text_set_id``: the text set's identity when the file records it.
    ``extra``: what else the file said, by key:

    - ``format``: the format read (``pickle-dict``, ``pickle-records``, ``npz``,
      ``parquet-long``, ``parquet-wide``, ``csv-wide``, ``scorer-jsonl``)
    - ``n_tokens`` (K×N int), ``truncated`` (K×N bool): per text, when given
    - ``text_pos``: positions in the text set of the N columns, when given
    - ``text_index``: the texts' ``index`` ids (the authors' numbering), when given
    - ``convention``: the scoring convention, when known (SPEC §2)
    - ``vector_key``: the model-data pickle key the vectors came from
    - ``dtype``: {model: dtype} from the scorer's file names
    """

    names: list[str]
    L: np.ndarray
    metadata: pd.DataFrame | None = None
    text_set_id: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def n_models(self) -> int:
        return len(self.names)

    @property
    def n_texts(self) -> int:
        return int(self.L.shape[1])


# -- validation shared by every reader ----------------------------------------------


def _check_names(source, names, error=FormatError) -> list[str]:
    """Names as a list of distinct, non-empty strings."""
    out = []
    seen = set()
    for i, n in enumerate(names):
        if not isinstance(n, str):
            raise error(f"{source}: model name #{i + 1} is {type(n).__name__} {n!r}, not a string")
        if not n.strip():
            raise error(f"{source}: model name #{i + 1} is empty; give every model a name")
        if n in seen:
            raise error(f"{source}: duplicate model name {n!r}; each model must appear once")
        seen.add(n)
        out.append(n)
    if not out:
        raise error(f"{source}: holds no models")
    return out


def _check_finite(source, names, L, locate=None) -> None:
    """Raise naming the first model with a NaN/inf (or missing) value, and how many it has."""
    bad = ~np.isfinite(L)
    if not bad.any():
        return
    per_model = bad.sum(axis=1)
    i = int(np.flatnonzero(per_model)[0])
    j = int(np.flatnonzero(bad[i])[0])
    where = locate(i, j) if locate else f"text column {j}"
    raise FormatError(
        f"{source}: model {names[i]!r} has {int(per_model[i])} missing or non-finite log-likelihoods (NaN/inf), "
        f"first at {where}; rescore the model or drop it from the file"
        + (f" ({int((per_model > 0).sum())} models are affected)" if (per_model > 0).sum() > 1 else "")
    )


def _finish(source, names, L, metadata=None, text_set_id=None, locate=None, **extra) -> Vectors:
    names = _check_names(source, names)
    L = np.asarray(L, dtype=np.float64)
    if L.ndim != 2 or L.shape[0] != len(names):
        raise FormatError(f"{source}: expected a matrix of {len(names)} rows (one per model), got shape {L.shape}")
    if L.shape[1] == 0:
        raise FormatError(f"{source}: the vectors are empty (0 texts)")
    _check_finite(source, names, L, locate)
    if text_set_id is not None and not isinstance(text_set_id, str):
        raise FormatError(f"{source}: text_set_id must be a string, got {type(text_set_id).__name__}")
    if extra.get("n_tokens") is not None:
        extra["n_tokens"] = _check_counts(source, "n_tokens", extra["n_tokens"], names, locate)
    if extra.get("text_pos") is not None:
        extra["text_pos"] = _check_positions(source, "text_pos", extra["text_pos"])
    if extra.get("truncated") is not None:
        t = np.asarray(extra["truncated"])
        if t.dtype.kind != "b" and not (t.dtype.kind in "iu" and np.isin(t, (0, 1)).all()):
            raise FormatError(f"{source}: 'truncated' must hold true/false (or 0/1) per text, got dtype {t.dtype}")
        extra["truncated"] = t.astype(bool)
    convention = extra.get("convention")
    if convention is not None and convention not in KNOWN_CONVENTIONS:
        raise FormatError(
            f"{source}: records scoring convention {convention!r}, which lmmap does not know "
            f"({' or '.join(KNOWN_CONVENTIONS)}); fix the file's 'convention'"
        )
    return Vectors(names, L, metadata, text_set_id, {k: v for k, v in extra.items() if v is not None})


# Token counts are stored as int32.
_MAX_COUNT = 2**31 - 1


def _whole_numbers(source, field_name, a: np.ndarray) -> np.ndarray:
    """``a`` as integers (as given, or int64 from floats like 3.0); fractions, NaN and strings are a FormatError."""
    if a.dtype.kind in "iu":
        if a.dtype.kind == "u" and a.size and a.max() > np.iinfo(np.int64).max:
            raise FormatError(f"{source}: {field_name!r} holds {int(a.max())}, beyond the 64-bit integer range")
        return a
    if a.dtype.kind == "f":
        bad = ~np.isfinite(a) | (a != np.floor(a)) | (np.abs(a) > 2.0**62)
        if bad.any():
            k = int(np.flatnonzero(bad.reshape(-1))[0])
            raise FormatError(
                f"{source}: {field_name!r} holds {float(a.reshape(-1)[k])} (entry {k}), not a whole number; "
                f"{field_name} must be integers — write them as an integer array"
            )
        return a.astype(np.int64)
    raise FormatError(f"{source}: {field_name!r} must hold integers, got dtype {a.dtype}")


def _check_counts(source, field_name, a, names, locate=None) -> np.ndarray:
    a = _whole_numbers(source, field_name, np.asarray(a))
    if a.size and (a.min() < 0 or a.max() > _MAX_COUNT):
        i, j = (int(x[0]) for x in np.nonzero((a < 0) | (a > _MAX_COUNT)))
        where = locate(i, j) if locate else f"text column {j}"
        raise FormatError(
            f"{source}: model {names[i]!r} has {field_name} {int(a[i, j])} at {where}; token counts must be "
            f"between 0 and {_MAX_COUNT} — rescore the model or drop {field_name!r} from the file"
        )
    return a


def _check_positions(source, field_name, a) -> np.ndarray:
    """Text positions: distinct whole numbers in 0..2^31-1 (the exports store them as int32)."""
    a = _whole_numbers(source, field_name, np.asarray(a))
    bad = (a < 0) | (a > _MAX_COUNT)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise FormatError(
            f"{source}: {field_name!r} holds {int(a[k])} (entry {k}); positions in the text set are 0..N-1"
        )
    if len(np.unique(a)) != len(a):
        vals, counts = np.unique(a, return_counts=True)
        raise FormatError(f"{source}: {field_name!r} lists position {int(vals[counts > 1][0])} twice; each column is one text")
    return a


def _as_vector(source, name, value) -> np.ndarray:
    """One model's vector as 1-D float64, or an error naming the model.

    Only a 1-D array or a flat list of numbers: a pickle can nest references to one list a thousand
    times over in a few kilobytes, which ``np.asarray`` would expand into gigabytes.
    """
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise FormatError(
                f"{source}: model {name!r} holds an array of shape {value.shape}; expected one vector (1-D)"
            )
        if value.dtype.kind not in "fiu":
            if value.dtype.kind != "O" or not all(_is_number(x) for x in value):
                raise FormatError(f"{source}: model {name!r} holds an array of {value.dtype}, not of numbers")
    elif isinstance(value, (list, tuple)):
        # fromiter takes one number per element and refuses a nested sequence, at C speed.
        try:
            return np.fromiter(value, dtype=np.float64, count=len(value))
        except (TypeError, ValueError, OverflowError):
            bad = next((x for x in value if not _is_number(x)), None)
            if bad is None:
                raise FormatError(
                    f"{source}: model {name!r} holds a number too large for a float"
                ) from None
            what = "a nested sequence" if isinstance(bad, (list, tuple, np.ndarray)) else type(bad).__name__
            raise FormatError(
                f"{source}: model {name!r} holds {what} among its values; expected one flat vector of numbers"
            ) from None
    else:
        raise FormatError(f"{source}: model {name!r} holds {type(value).__name__}, not a vector of numbers")
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise FormatError(f"{source}: model {name!r} holds values that are not numbers (or too large for a float)") from None


def _is_number(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def _stack(source, names, vectors, max_bytes: int | None = None) -> np.ndarray:
    """Rows stacked into K×N; all vectors must be on the same N texts.

    ``max_bytes``: refuse a matrix larger than this before allocating it (a pickle can name one array
    under many models through its memo, so K×N need not fit in the file).
    """
    n = len(vectors[0])
    for name, v in zip(names, vectors):
        if len(v) != n:
            raise FormatError(
                f"{source}: model {name!r} has {len(v)} log-likelihoods but {names[0]!r} has {n}; "
                "every model must be scored on the same texts"
            )
    nbytes = len(vectors) * n * 8
    if max_bytes is not None and nbytes > max_bytes:
        raise FormatError(
            f"{source}: {len(vectors)} models × {n} texts would take {_size(nbytes)}, far more than the file holds "
            "(its models share vectors through pickle references); the file is damaged or crafted"
        )
    L = np.empty((len(vectors), n), dtype=np.float64)
    for i, v in enumerate(vectors):
        L[i] = v
    return L


# -- dispatch -------------------------------------------------------------------------


def read_vectors(path: str | os.PathLike, allow_pickle: bool = False, *, expect_texts: int | None = None) -> Vectors:
    """Read log-likelihood vectors from ``path`` (format from content, then suffix).

    Supported: the authors' pickles (a dict {model: vector}, or a list of
    per-model dicts with metadata; only with ``allow_pickle=True``), NPZ
    (``L``, ``models``), Parquet (long: ``model``, ``text_pos``/``index``,
    ``loglik``; or wide: ``model`` + one column per text), CSV (wide), and
    the authors' scorer output (a directory of per-model JSONL files, or one).

    ``expect_texts``: the N of the text set the vectors are for (a store's), when known: an NPZ whose
    ``L`` is wider (or, without ``text_pos``, of another width) is refused from its header, before
    anything is loaded.
    """
    path = Path(path)
    if path.is_dir():
        return _read_scorer_dir(path)
    if not path.exists():
        raise FormatError(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise FormatError(f"{path} is empty: expected log-likelihood vectors")
    with open(path, "rb") as f:
        head = f.read(8)
    suffix = path.suffix.lower()
    # Content first (a pickle named .npz is still a pickle, and must be refused as one), then suffix.
    if head.startswith(b"PK\x03\x04"):
        return _read_npz(path, expect_texts)
    if head.startswith(b"PAR1"):
        return _read_parquet(path)
    if is_pickle(head) or suffix in _PICKLE_SUFFIXES:
        return _read_pickle(path, allow_pickle)
    if suffix == ".npz":
        return _read_npz(path, expect_texts)
    if suffix in _PARQUET_SUFFIXES:
        return _read_parquet(path)
    if suffix in _JSONL_SUFFIXES:
        return _read_scorer_files([path], source=path)
    if suffix == ".csv":
        return _read_csv(path)
    raise FormatError(
        f"cannot tell the format of {path}; lmmap reads .npz, .parquet, .csv, the authors' .pkl files "
        "(with --allow-pickle) and scorer output (.jsonl files or a directory of them)"
    )


# -- the authors' pickles -----------------------------------------------------------------


def _pickle_budget(path: Path) -> int:
    """The most memory a pickle's vectors and metadata may expand to: float16 data, 4x, with room to spare."""
    return 8 * path.stat().st_size + (1 << 20)


def _read_pickle(path: Path, allow_pickle: bool) -> Vectors:
    obj = load_pickle(path, allow_pickle=allow_pickle)
    if isinstance(obj, dict):
        return _from_vector_dict(path, obj)
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(r, dict) for r in obj):
        return _from_model_records(path, obj, _pickle_budget(path))
    raise FormatError(
        f"{path} holds a {type(obj).__name__}; lmmap reads a dict {{model: vector}} "
        "(raw_log-likelihood_1018.pkl) or a list of per-model dicts (model-data-1018.pkl)"
    )


def _from_vector_dict(path: Path, obj: dict) -> Vectors:
    """{model name: vector}; insertion order is the model order."""
    if not obj:
        raise FormatError(f"{path} holds an empty dict: no models")
    names = _check_names(path, list(obj))
    L = _stack(path, names, [_as_vector(path, n, obj[n]) for n in names], _pickle_budget(path))
    return _finish(path, names, L, format="pickle-dict", convention="reference")


def _metadata_value(value, budget: list[int] | None = None):
    """A metadata cell as a plain scalar (lists of strings, e.g. tags, joined with ';'), or a marker to skip it.

    ``budget``: [characters left]; joining counts against it, since a pickle can list one long string
    a million times by reference.
    """
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, bool, int, float, _dt.date, _dt.datetime)):
        return value
    if isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(x, str) for x in value):
        if budget is not None:
            budget[0] -= sum(len(x) + 1 for x in value)
            if budget[0] < 0:
                raise _TooMuchMetadata
        # Sets have no order of their own.
        return ";".join(sorted(value) if isinstance(value, (set, frozenset)) else value)
    return _SKIP


class _TooMuchMetadata(Exception):
    pass


_SKIP = object()


def _pick_vector_key(path: Path, first: dict) -> str:
    for key in VECTOR_KEYS:
        if key in first:
            return key
    raise FormatError(
        f"{path}: the first model record has no vector under {' or '.join(map(repr, VECTOR_KEYS))} "
        f"(its keys: {', '.join(map(str, first))}); is this the authors' model-data file?"
    )


def _from_model_records(path: Path, records: list, max_bytes: int | None = None) -> Vectors:
    """The authors' model-data list: one dict per model with ``model_name``, a vector and metadata."""
    key = _pick_vector_key(path, records[0])
    budget = [max_bytes] if max_bytes is not None else None
    names, vectors, rows, skipped = [], [], [], []
    for i, rec in enumerate(records):
        name = rec.get("model_name")
        if not isinstance(name, str) or not name.strip():
            raise FormatError(f"{path}: record #{i + 1} has no 'model_name' string (got {name!r})")
        if key not in rec:
            raise FormatError(f"{path}: model {name!r} (record #{i + 1}) has no {key!r} vector, unlike the first record")
        names.append(name)
        vectors.append(_as_vector(path, name, rec[key]))
        row = {}
        for k, v in rec.items():
            if k == "model_name" or k in VECTOR_KEYS:
                continue
            try:
                cell = _metadata_value(v, budget)
            except _TooMuchMetadata:
                raise FormatError(
                    f"{path}: model {name!r}: metadata {k!r} expands to more text than the file holds (its lists "
                    "repeat strings through pickle references); the file is damaged or crafted"
                ) from None
            if cell is _SKIP:
                if k not in skipped:
                    skipped.append(k)
                continue
            row[k] = cell
        rows.append(row)
    names = _check_names(path, names)
    L = _stack(path, names, vectors, max_bytes)
    # A key skipped for one model (an array, say) is dropped for all, so a column never mixes kinds.
    metadata = pd.DataFrame(rows, index=pd.Index(names, name="model")).drop(columns=skipped, errors="ignore")
    return _finish(
        path, names, L, metadata=metadata, format="pickle-records", vector_key=key,
        convention="reference", skipped_keys=skipped or None,
    )


# -- NPZ ----------------------------------------------------------------------------------


def _size(nbytes: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes} bytes"  # pragma: no cover


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


# What an NPZ array may hold: a deflated member may expand this many times (log-likelihoods barely
# compress; a run of zeros compresses 1000-fold) once it is larger than the floor.
_NPZ_MAX_EXPANSION = 100
_NPZ_EXPANSION_FLOOR = 16 << 20
_NPZ_KEYS = ("L", "models", "n_tokens", "text_pos", "text_set_id", "convention", "metadata_json")


def _npy_header(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple, np.dtype]:
    """(shape, dtype) of one .npy member, read from its header only; refuse before allocating anything.

    The header's declared size must be exactly what the zip member holds: a header that claims 10^12
    elements, or a small deflated member that expands to gigabytes, is refused here, not by a MemoryError.
    """
    name = info.filename
    if (
        info.compress_type != zipfile.ZIP_STORED
        and info.file_size > _NPZ_EXPANSION_FLOOR
        and info.file_size > _NPZ_MAX_EXPANSION * max(info.compress_size, 1)
    ):
        raise FormatError(
            f"{path}: member {name!r} would expand from {_size(info.compress_size)} to {_size(info.file_size)} "
            f"(×{info.file_size / max(info.compress_size, 1):.0f}); refusing what looks like a zip bomb — "
            "write the arrays uncompressed (np.savez) or with `lmmap export`"
        )
    try:
        with zf.open(info) as f:
            version = npformat.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = npformat.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = npformat.read_array_header_2_0(f)
            else:  # 3.0 (utf-8 field names); numpy has no public reader for it
                shape, _, dtype = npformat._read_array_header(f, version)
            offset = f.tell()
    except Exception as exc:  # a damaged member fails in zipfile, zlib or numpy's header parser
        raise FormatError(
            f"{path}: member {name!r} is not a readable .npy array ({type(exc).__name__}: {_one_line(exc)}); "
            "write the file with np.savez or `lmmap export`"
        ) from None
    if dtype.hasobject:
        raise FormatError(
            f"{path}: {name[:-4]!r} holds Python objects, which would need pickle; save names as a string "
            "array (np.array(names, dtype=str)), not objects"
        )
    nbytes = math.prod(int(d) for d in shape) * dtype.itemsize
    if offset + nbytes != info.file_size:
        raise FormatError(
            f"{path}: member {name!r} declares an array of shape {tuple(shape)} ({_size(nbytes)}) but holds "
            f"{_size(max(info.file_size - offset, 0))} of data; the file is damaged or was not written by np.savez"
        )
    return tuple(int(d) for d in shape), dtype


def _short_repr(value, limit: int = 40) -> str:
    r = repr(value)
    return r if len(r) <= limit else r[: limit - 1] + "…"


def _one_line(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _npz_headers(path: Path) -> dict[str, tuple[tuple, np.dtype]]:
    """{key: (shape, dtype)} of the arrays lmmap reads from an NPZ, checked without loading any of them."""
    try:
        zf = zipfile.ZipFile(path)
    except Exception as exc:  # BadZipFile, OSError, EOFError, ValueError ... for a damaged zip
        raise FormatError(
            f"{path} is not a readable NPZ file ({type(exc).__name__}: {_one_line(exc)}); "
            "write it with np.savez or `lmmap export`"
        ) from None
    with zf:
        members: dict[str, zipfile.ZipInfo] = {}
        for info in zf.infolist():
            name = info.filename
            if info.is_dir() or not name.endswith(".npy"):
                raise FormatError(
                    f"{path}: member {name!r} is not a .npy array; an NPZ holds only arrays saved by np.savez "
                    "(remove it, or write the file with `lmmap export`)"
                )
            if name[:-4] in members:
                raise FormatError(f"{path}: array {name[:-4]!r} appears twice in the zip; keep one")
            members[name[:-4]] = info
        missing = [k for k in ("L", "models") if k not in members]
        if missing:
            raise FormatError(
                f"{path}: NPZ needs arrays 'L' (models × texts) and 'models' (names); missing "
                f"{', '.join(map(repr, missing))} (it has {', '.join(map(repr, members)) or 'none'})"
            )
        headers = {k: _npy_header(path, zf, members[k]) for k in _NPZ_KEYS if k in members}
    total = sum(math.prod(shape) * dtype.itemsize for shape, dtype in headers.values())
    memory = _physical_memory()
    if memory and total > memory // 2:
        raise FormatError(
            f"{path}: its arrays need {_size(total)}, more than half of this machine's {_size(memory)} of memory; "
            "split the file (fewer models per file) and import the parts"
        )
    return headers


def _check_npz_shapes(path: Path, headers: dict) -> None:
    """Shapes and kinds of the arrays agree, from the headers alone (before anything is loaded)."""
    L_shape, L_dtype = headers["L"]
    m_shape, m_dtype = headers["models"]
    if m_dtype.kind not in "US" or len(m_shape) != 1:
        raise FormatError(f"{path}: 'models' must be a 1-D array of strings, got shape {m_shape} dtype {m_dtype}")
    if len(L_shape) != 2 or L_dtype.kind not in "fiu":
        raise FormatError(f"{path}: 'L' must be a 2-D numeric array (models × texts), got shape {L_shape} dtype {L_dtype}")
    if L_shape[0] != m_shape[0]:
        raise FormatError(f"{path}: 'L' has {L_shape[0]} rows but 'models' names {m_shape[0]} models")
    if "n_tokens" in headers and headers["n_tokens"][0] != L_shape:
        raise FormatError(f"{path}: 'n_tokens' has shape {headers['n_tokens'][0]} but 'L' has {L_shape}")
    if "text_pos" in headers and headers["text_pos"][0] != (L_shape[1],):
        raise FormatError(
            f"{path}: 'text_pos' has shape {headers['text_pos'][0]}; expected ({L_shape[1]},), one per column of 'L'"
        )
    for key in ("text_set_id", "convention", "metadata_json"):
        if key in headers:
            shape, dtype = headers[key]
            if shape != () or dtype.kind not in "US":
                raise FormatError(f"{path}: {key!r} must be a single string (0-d array), got shape {shape} dtype {dtype}")


def _read_npz(path: Path, expect_texts: int | None = None) -> Vectors:
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            # np.load would take any other bytes for a pickle and suggest loading it unsafely.
            raise FormatError(f"{path} is not an NPZ file (no zip signature); write it with np.savez or `lmmap export`")
    headers = _npz_headers(path)
    _check_npz_shapes(path, headers)
    if expect_texts is not None:
        width = headers["L"][0][1]
        if width > expect_texts or ("text_pos" not in headers and width != expect_texts):
            raise FormatError(
                f"{path}: 'L' has {width} columns (texts) but the text set has {expect_texts}; these vectors "
                "were computed on another text set"
            )
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in headers}
    except Exception as exc:  # the headers were fine, so this is a damaged body (bad CRC, truncated data)
        raise FormatError(
            f"{path} is not a readable NPZ file ({type(exc).__name__}: {_one_line(exc)}); "
            "write it with np.savez or `lmmap export`"
        ) from None
    scalars = {k: str(arrays[k].item()) if k in arrays else None for k in ("text_set_id", "convention", "metadata_json")}
    return _finish(
        path, arrays["models"].tolist(), arrays["L"], metadata=_metadata_from_json(path, scalars["metadata_json"]),
        text_set_id=scalars["text_set_id"], format="npz", n_tokens=arrays.get("n_tokens"),
        text_pos=arrays.get("text_pos"), convention=scalars["convention"],
    )


# -- Parquet ----------------------------------------------------------------------------


def _export_info(path, schema) -> dict:
    meta = schema.metadata or {}
    if EXPORT_KEY not in meta:
        return {}
    try:
        return json.loads(meta[EXPORT_KEY])
    except ValueError:
        raise FormatError(f"{path}: damaged lmmap metadata in the Parquet schema; re-export the file") from None


def _read_parquet_table(path: Path, **kwargs) -> pa.Table:
    try:
        return pq.read_table(path, **kwargs)
    except (pa.ArrowException, OSError) as exc:  # a damaged page or footer
        raise FormatError(
            f"{path} is not a readable Parquet file ({type(exc).__name__}: {_one_line(exc)}); re-export it"
        ) from None


def _read_parquet(path: Path) -> Vectors:
    try:
        schema = pq.read_schema(path)
    except Exception as exc:
        raise FormatError(f"{path} is not a readable Parquet file ({type(exc).__name__}: {_one_line(exc)})") from None
    cols = schema.names
    if "model" not in cols:
        hint = (
            " (this looks like one model's file from an lmmap store; import the store's models with "
            "`lmmap export` instead)" if "loglik" in cols else ""
        )
        raise FormatError(f"{path}: no 'model' column (columns: {', '.join(cols[:10])}){hint}")
    info = _export_info(path, schema)
    if "loglik" in cols:
        v = _read_parquet_long(path, cols)
    else:
        v = _read_parquet_wide(path, schema)
    v.text_set_id = info.get("text_set_id")
    if info.get("convention"):
        v.extra["convention"] = info["convention"]
    if info.get("metadata") is not None:
        v.metadata = _metadata_from_records(path, info["metadata"])
    return v


def _positions(pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique positions, column of each row) in O(rows) when positions are small integers."""
    if len(pos) and pos.min() >= 0 and pos.max() < max(4 * len(pos), 1 << 20):
        present = np.zeros(int(pos.max()) + 1, dtype=bool)
        present[pos] = True
        column_of = np.cumsum(present) - 1
        return np.flatnonzero(present), column_of[pos]
    return np.unique(pos, return_inverse=True)


def _model_codes(path, column: pa.ChunkedArray) -> tuple[list[str], np.ndarray]:
    """(model names in order of first appearance, each row's model number)."""
    if pa.types.is_dictionary(column.type):
        column = column.unify_dictionaries()  # row groups may each carry their own dictionary
    arr = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if not pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_encode()
    if arr.null_count:
        row = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
        raise FormatError(f"{path}: row {row + 1} has no model name; every row needs one")
    codes = arr.indices.to_numpy()
    dictionary = arr.dictionary.to_pylist()
    if codes.size and (int(codes.min()) < 0 or int(codes.max()) >= len(dictionary)):
        # pyarrow does not check a file's dictionary indices; a damaged file can point past the dictionary.
        raise FormatError(f"{path}: the model-name column is damaged (a name index points past its dictionary); "
                          "write the file again")
    # Order of first appearance: look only where the model changes (rows are usually grouped by model).
    starts = codes[np.r_[0, np.flatnonzero(codes[1:] != codes[:-1]) + 1]]
    order = list(dict.fromkeys(starts.tolist()))
    if order != list(range(len(dictionary))):
        renumber = np.full(len(dictionary), -1, dtype=codes.dtype)
        renumber[order] = np.arange(len(order))
        codes = renumber[codes]
    return [dictionary[c] for c in order], codes


def _grid_order(codes: np.ndarray, pos: np.ndarray, K: int) -> np.ndarray | None:
    """The text positions when rows are model-major with every model on the same increasing positions, else None.

    This is how lmmap and most writers lay out a long file; recognising it
    avoids building and scattering through a 10-million-entry index.
    """
    if len(pos) % K:
        return None
    P = len(pos) // K
    first = pos[:P]
    if P > 1 and not (first[1:] > first[:-1]).all():
        return None
    if not (codes.reshape(K, P) == np.arange(K, dtype=codes.dtype)[:, None]).all():
        return None
    if not (pos.reshape(K, P) == first[None, :]).all():
        return None
    return first.astype(np.int64)


def _read_parquet_long(path: Path, cols: list[str]) -> Vectors:
    pos_col = "text_pos" if "text_pos" in cols else "index" if "index" in cols else None
    if pos_col is None:
        raise FormatError(
            f"{path}: a long Parquet file needs a 'text_pos' (or 'index') column saying which text each row scores"
        )
    want = ["model", pos_col, "loglik"] + [c for c in ("n_tokens", "truncated") if c in cols]
    table = _read_parquet_table(path, columns=want, read_dictionary=["model"])
    if table.num_rows == 0:
        raise FormatError(f"{path}: no rows")
    names, codes = _model_codes(path, table.column("model"))
    pos_arr = table.column(pos_col)
    if pos_arr.null_count or not pa.types.is_integer(pos_arr.type):
        raise FormatError(f"{path}: column {pos_col!r} must hold integers, none missing (type {pos_arr.type})")
    pos = pos_arr.to_numpy()
    K = len(names)
    positions = _grid_order(codes, pos, K)
    if positions is not None:
        P = len(positions)

        def as_matrix(values: np.ndarray) -> np.ndarray:
            return values.reshape(K, P)

    else:
        positions, column_of = _positions(pos.astype(np.int64))
        P = len(positions)
        cell = codes.astype(np.int64) * P + column_of
        counts = np.bincount(cell, minlength=K * P).reshape(K, P)
        if (counts != 1).any():
            i = int(np.flatnonzero((counts != 1).any(axis=1))[0])
            missing, doubled = int((counts[i] == 0).sum()), int((counts[i] > 1).sum())
            what = []
            if missing:
                what.append(
                    f"lacks {missing} of the {P} texts the file covers (e.g. {pos_col} {int(positions[counts[i] == 0][0])})"
                )
            if doubled:
                what.append(f"scores {doubled} texts more than once (e.g. {pos_col} {int(positions[counts[i] > 1][0])})")
            raise FormatError(
                f"{path}: model {names[i]!r} {' and '.join(what)}; every model must be on the same set of texts"
            )

        def as_matrix(values: np.ndarray) -> np.ndarray:
            out = np.empty(K * P, dtype=values.dtype)
            out[cell] = values
            return out.reshape(K, P)

    L = as_matrix(_float_column(path, table, "loglik"))
    extra = {"text_pos" if pos_col == "text_pos" else "text_index": positions}
    for name in ("n_tokens", "truncated"):
        if name in table.column_names and table.column(name).null_count == 0:
            extra[name] = as_matrix(table.column(name).to_numpy())

    def locate(i, j):
        return f"{pos_col} {int(positions[j])}"

    return _finish(path, names, L, locate=locate, format="parquet-long", **extra)


def _float_column(path, table, name) -> np.ndarray:
    col = table.column(name)
    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
        raise FormatError(f"{path}: column {name!r} must be numeric, got {col.type}")
    return col.to_numpy().astype(np.float64, copy=False)  # nulls come back as NaN and are reported by model


def _int_headers(headers: list[str]) -> np.ndarray | None:
    """Column headers as text positions when they are all integers (lmmap's exports), else None."""
    try:
        return np.array([int(h) for h in headers], dtype=np.int64)
    except ValueError:
        return None


def _read_parquet_wide(path: Path, schema: pa.Schema) -> Vectors:
    # pandas may store its index as an extra column; it is not a text.
    text_cols = [c for c in schema.names if c != "model" and not c.startswith("__index_level_")]
    if not text_cols:
        raise FormatError(f"{path}: only a 'model' column; expected one numeric column per text")
    for c in text_cols:
        t = schema.field(c).type
        if not (pa.types.is_floating(t) or pa.types.is_integer(t)):
            raise FormatError(
                f"{path}: column {c!r} is {t}, not numeric; a wide file has a 'model' column and one "
                "numeric column of log-likelihoods per text"
            )
    table = _read_parquet_table(path, columns=["model", *text_cols])
    names_col = table.column("model")
    if not (pa.types.is_string(names_col.type) or pa.types.is_large_string(names_col.type)):
        names_col = names_col.cast(pa.string())
    names = names_col.to_pylist()
    L = np.empty((table.num_rows, len(text_cols)), dtype=np.float64)
    for j, c in enumerate(text_cols):
        L[:, j] = table.column(c).to_numpy()

    def locate(i, j):
        return f"column {text_cols[j]!r}"

    return _finish(path, names, L, locate=locate, format="parquet-wide", text_pos=_int_headers(text_cols))


# -- CSV ------------------------------------------------------------------------------


def _csv_header(path: Path) -> list[str]:
    with open(path, "rb") as f:
        first = f.readline()
    try:
        line = first.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise FormatError(f"{path}:1: not valid UTF-8; save the CSV as UTF-8") from None
    # Old Mac line ends (\r alone) leave the whole file on one binary "line".
    line = (line.splitlines() or [""])[0]
    try:
        return next(csv.reader([line]), [])
    except csv.Error as exc:
        raise FormatError(f"{path}:1: cannot read the header ({_one_line(exc)}); write one line of column names") from None


def _read_csv(path: Path) -> Vectors:
    header = [str(h) for h in _csv_header(path)]
    if not header or header[0] != "model":
        raise FormatError(
            f"{path}:1: the first column must be 'model' (got {header[0] if header else 'nothing'!r}); a wide CSV "
            "has a 'model' column, then one column of log-likelihoods per text"
        )
    if len(header) < 2:
        raise FormatError(f"{path}:1: only a 'model' column; expected one numeric column per text after it")
    text_cols = header[1:]
    if len(set(header)) != len(header):
        dup = next(h for i, h in enumerate(header) if h in header[:i])
        raise FormatError(f"{path}:1: column {dup!r} appears twice in the header")
    string_types = {c: pa.string() for c in header}
    # Arrow's default 1 MiB blocks hold only ~50 rows of a 10,000-column file, and the per-block,
    # per-column overhead then dominates (9 s instead of 1 s for 1,018 × 10,000).
    read_options = pacsv.ReadOptions(block_size=_CSV_BLOCK_BYTES)
    try:
        table = pacsv.read_csv(
            path,
            read_options=read_options,
            convert_options=pacsv.ConvertOptions(
                column_types={"model": pa.string(), **{c: pa.float64() for c in text_cols}},
                strings_can_be_null=False,
            ),
        )
    except (pa.ArrowException, OSError) as exc:
        # Slow path, only on bad input: re-read as text to name the line and column.
        try:
            raw = pacsv.read_csv(
                path, read_options=read_options, convert_options=pacsv.ConvertOptions(column_types=string_types)
            )
        except (pa.ArrowException, OSError):
            raise FormatError(f"{path}: not a well-formed CSV ({_one_line(exc)}); every row needs as many cells as the header") from None
        _raise_first_non_numeric(path, raw, text_cols)
        raise FormatError(f"{path}: cannot read as CSV ({_one_line(exc)})") from None
    names = table.column("model").to_pylist()
    L = np.empty((table.num_rows, len(text_cols)), dtype=np.float64)
    for j, c in enumerate(text_cols):
        L[:, j] = table.column(c).to_numpy()

    def locate(i, j):
        return f"line {i + 2}, column {text_cols[j]!r}"

    return _finish(path, names, L, locate=locate, format="csv-wide", text_pos=_int_headers(text_cols))


def _raise_first_non_numeric(path, raw: pa.Table, text_cols) -> None:
    models = raw.column("model").to_pylist()
    # Spellings of a missing value: read as NaN by the fast path and reported per model there.
    null_spellings = pacsv.ConvertOptions().null_values
    for c in text_cols:
        values = raw.column(c).to_pandas()
        parsed = pd.to_numeric(values, errors="coerce")
        bad = parsed.isna() & values.notna() & ~values.isin(null_spellings)
        if bad.any():
            r = int(np.flatnonzero(bad.to_numpy())[0])
            raise FormatError(
                f"{path}: line {r + 2}, column {c!r} (model {models[r]!r}): {values.iloc[r]!r} is not a number; "
                "every cell after the model column must be a log-likelihood"
            )


# -- the authors' scorer output -------------------------------------------------------------


def scorer_model_name(path: Path) -> tuple[str, str | None]:
    """(model name, dtype) from a scorer file name ``<org>--<name>_<dtype>.jsonl``."""
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    m = _DTYPE_SUFFIX.search(stem)
    dtype = None
    if m:
        dtype, stem = m.group(1), stem[: m.start()]
    return stem.replace("--", "/", 1), dtype


def _read_scorer_dir(path: Path) -> Vectors:
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in _JSONL_SUFFIXES)
    if not files:
        raise FormatError(
            f"{path} is a directory with no .jsonl files; lmmap reads a directory of the authors' "
            "scorer output, one <org>--<name>_<dtype>.jsonl per model"
        )
    return _read_scorer_files(files, source=path)


def _read_scorer_files(files: list[Path], source: Path) -> Vectors:
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
            if not isinstance(obj, dict):
                raise FormatError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            if "log-likelihood" not in obj:
                hint = " (this looks like a text set: pass it with --texts)" if "text" in obj else ""
                raise FormatError(f"{path}:{lineno}: no 'log-likelihood' field{hint}")
            i, v, n = obj.get("index"), obj["log-likelihood"], obj.get("num-tokens")
            if isinstance(i, bool) or not isinstance(i, int) or not -(2**63) <= i < 2**63:
                raise FormatError(f"{path}:{lineno}: 'index' must be an integer (64-bit), got {_short_repr(i)}")
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise FormatError(f"{path}:{lineno}: 'log-likelihood' must be a number, got {_short_repr(v)}")
            if isinstance(v, int) and abs(v) > 2**1000:
                raise FormatError(f"{path}:{lineno}: 'log-likelihood' {_short_repr(v)} is too large for a float; rescore this text")
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


# -- metadata carried inside exports ----------------------------------------------------


def _metadata_records(metadata: pd.DataFrame, names: list[str]) -> list[dict]:
    """Metadata rows of the exported models as JSON-ready dicts with a ``model`` key."""
    df = metadata.copy()
    if "model" in df.columns:
        df = df.set_index("model")
    df = df[df.index.isin(names)]
    # to_json handles numpy types, NaN -> null and dates -> ISO strings.
    return json.loads(df.rename_axis("model").reset_index().to_json(orient="records", date_format="iso"))


def _metadata_from_records(path, records) -> pd.DataFrame | None:
    if not isinstance(records, list) or not all(isinstance(r, dict) and "model" in r for r in records):
        raise FormatError(f"{path}: damaged model metadata (expected a list of rows with 'model'); re-export the file")
    if not records:
        return None
    return pd.DataFrame(records).set_index("model")


def _metadata_from_json(path, text):
    if text is None:
        return None
    try:
        records = json.loads(text)
    except ValueError:
        raise FormatError(f"{path}: damaged 'metadata_json'; re-export the file") from None
    return _metadata_from_records(path, records)


# -- writing ------------------------------------------------------------------------------


def _check_for_writing(names, L, n_tokens, text_pos):
    names = _check_names("vectors to write", list(names), InputError)
    L = np.asarray(L, dtype=np.float64)
    if L.ndim != 2 or L.shape[0] != len(names):
        raise InputError(f"L must be a matrix of {len(names)} rows (one per model), got shape {L.shape}")
    if n_tokens is not None:
        n_tokens = np.asarray(n_tokens)
        if n_tokens.shape != L.shape:
            raise InputError(f"n_tokens has shape {n_tokens.shape} but L has {L.shape}")
    if text_pos is not None:
        text_pos = np.asarray(text_pos, dtype=np.int64)
        if text_pos.shape != (L.shape[1],):
            raise InputError(f"text_pos has shape {text_pos.shape}; expected ({L.shape[1]},), one per column of L")
    return names, L, n_tokens, text_pos


def write_vectors(
    path: str | os.PathLike,
    names,
    L,
    text_set_id: str | None = None,
    n_tokens=None,
    metadata: pd.DataFrame | None = None,
    *,
    text_pos=None,
    convention: str | None = None,
) -> Path:
    """Write vectors by suffix, atomically; :func:`read_vectors` reads them back exactly.

    ``.npz``: arrays ``L``, ``models`` and, when given, ``text_set_id``,
    ``n_tokens``, ``text_pos``, ``convention``, ``metadata_json``.
    ``.parquet``: long format, one row per (model, text): ``model``,
    ``text_pos``, ``loglik`` (and ``n_tokens``); text set id, convention and
    metadata in the schema metadata. ``.csv``: wide, ``model`` then one
    column per text named by its position; CSV carries names and L only.
    """
    path = Path(path)
    names, L, n_tokens, text_pos = _check_for_writing(names, L, n_tokens, text_pos)
    suffix = path.suffix.lower()
    writers = {".npz": _write_npz, ".parquet": _write_parquet, ".pq": _write_parquet, ".csv": _write_csv}
    if suffix not in writers:
        raise InputError(f"cannot write {path}: use a .npz, .parquet or .csv file name")
    records = _metadata_records(metadata, names) if metadata is not None and len(metadata) else None
    from lmmap.data.atomic import atomic_path

    with atomic_path(path) as tmp:
        writers[suffix](tmp, names, L, text_set_id, n_tokens, text_pos, convention, records)
    return path


def _write_npz(tmp, names, L, text_set_id, n_tokens, text_pos, convention, records):
    arrays = {"L": L, "models": np.array(names, dtype=str)}
    if text_set_id is not None:
        arrays["text_set_id"] = np.array(text_set_id)
    if convention is not None:
        arrays["convention"] = np.array(convention)
    if n_tokens is not None:
        arrays["n_tokens"] = n_tokens.astype(np.int32)  # token counts fit; half the bytes of int64
    if text_pos is not None:
        arrays["text_pos"] = text_pos
    if records is not None:
        arrays["metadata_json"] = np.array(json.dumps(records))
    # Uncompressed: log-likelihoods barely compress, and this keeps loading a plain read.
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _write_parquet(tmp, names, L, text_set_id, n_tokens, text_pos, convention, records):
    K, N = L.shape
    positions = np.arange(N, dtype=np.int64) if text_pos is None else text_pos
    model = pa.DictionaryArray.from_arrays(
        pa.array(np.repeat(np.arange(K, dtype=np.int32), N)), pa.array(names, pa.string())
    )
    cols = {
        "model": model,
        "text_pos": pa.array(np.tile(positions, K).astype(np.int32)),
        "loglik": pa.array(L.reshape(-1)),
    }
    if n_tokens is not None:
        cols["n_tokens"] = pa.array(np.asarray(n_tokens).reshape(-1).astype(np.int32))
    info = {
        "format": EXPORT_FORMAT,
        "version": 1,
        "n_models": K,
        "n_texts": N,
        "text_set_id": text_set_id,
        "convention": convention,
        "metadata": records,
    }
    table = pa.table(cols).replace_schema_metadata({EXPORT_KEY: json.dumps(info).encode()})
    pq.write_table(table, tmp)


def _write_csv(tmp, names, L, text_set_id, n_tokens, text_pos, convention, records):
    positions = np.arange(L.shape[1]) if text_pos is None else text_pos
    # Build from columns (not pandas rows): Arrow writes each double in its shortest exact form.
    arrays = [pa.array(names, pa.string())] + [pa.array(L[:, j]) for j in range(L.shape[1])]
    table = pa.Table.from_arrays(arrays, names=["model"] + [str(int(p)) for p in positions])
    pacsv.write_csv(table, tmp)


# -- model lists and metadata tables ----------------------------------------------------------


def read_model_list(path: str | os.PathLike) -> list[str]:
    """The model names in a YAML list such as the authors' ``models_1018.yaml``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path} does not exist or is not a file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise FormatError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except UnicodeDecodeError:
        raise FormatError(f"{path}: not valid UTF-8; save it as UTF-8") from None
    if data is None:
        raise FormatError(f"{path} is empty: expected a YAML list of model names")
    if not isinstance(data, list):
        raise FormatError(f"{path}: expected a YAML list of model names (- org/name), got a {type(data).__name__}")
    for i, item in enumerate(data):
        if not isinstance(item, str):
            raise FormatError(f"{path}: item {i + 1} is {item!r}, not a model name; quote it if it is one")
    return _check_names(path, data)


def read_metadata_csv(path: str | os.PathLike) -> pd.DataFrame:
    """A model metadata table (``MODELS.csv``, ``SCORES.csv``): a ``model`` column and any others, indexed by model."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path} does not exist or is not a file")
    if path.stat().st_size == 0:
        raise FormatError(f"{path} is empty: expected a header with a 'model' column")
    try:
        df = pd.read_csv(path, dtype={"model": str}, keep_default_na=True)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise FormatError(f"{path}: cannot read as CSV ({_one_line(exc)})") from None
    if "model" not in df.columns:
        raise FormatError(
            f"{path}: no 'model' column (columns: {', '.join(map(str, df.columns[:10]))}); "
            "add one holding each model's name"
        )
    missing = df["model"].isna() | (df["model"].str.strip() == "")
    if missing.any():
        raise FormatError(f"{path}: line {int(np.flatnonzero(missing.to_numpy())[0]) + 2} has no model name")
    dup = df["model"][df["model"].duplicated()]
    if len(dup):
        name = dup.iloc[0]
        lines = (np.flatnonzero((df["model"] == name).to_numpy()) + 2).tolist()
        raise FormatError(f"{path}: model {name!r} has more than one row (lines {lines[0]} and {lines[1]}); keep one")
    return df.set_index("model")

"""What every reader shares: the :class:`Vectors` it returns, and the checks made at the boundary.

Each reader hands its names, matrix and extras to :func:`_finish`, which
refuses (with a :class:`FormatError` naming the file, model and place) empty,
duplicate or non-string names, a ragged or non-finite ``L``, bad token counts
or text positions, and an unknown scoring convention.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lmmap.data.conventions import CONVENTIONS
from lmmap.exceptions import FormatError


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
    L = np.asarray(L)
    if L.ndim == 2 and L.shape[0] == len(names):
        _check_exact_integers(source, L, lambda i, j: (names[i], locate(i, j) if locate else f"text column {j}"))
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
    _check_convention(source, extra.get("convention"))
    return Vectors(names, L, metadata, text_set_id, {k: v for k, v in extra.items() if v is not None})


def _check_convention(source, convention) -> None:
    """A convention recorded in a file is one lmmap knows (SPEC §2), or None."""
    if convention is not None and convention not in CONVENTIONS:
        raise FormatError(
            f"{source}: records scoring convention {convention!r}, which lmmap does not know "
            f"({' or '.join(CONVENTIONS)}); fix the file's 'convention'"
        )


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


# The largest integer up to which float64 holds every integer exactly (2**53 + 1 reads back as 2**53).
_MAX_EXACT_INT = 2**53


def _check_exact_integers(source, a: np.ndarray, where) -> None:
    """Refuse an integer array holding a value beyond ±2**53; ``where(*index)``: (model, place) of an entry.

    Converting to float64 would change such a value silently, and no log-likelihood is that large: it is
    a sentinel, a fixed-point encoding or garbage, and the file needs a look rather than a rounding.
    """
    if a.dtype.kind not in "iu" or a.dtype.itemsize < 8 or not a.size:
        return
    # max/min first: one pass each, no mask, on the usual (clean) file.
    if int(a.max()) <= _MAX_EXACT_INT and (a.dtype.kind == "u" or int(a.min()) >= -_MAX_EXACT_INT):
        return
    bad = a > _MAX_EXACT_INT
    if a.dtype.kind == "i":
        bad |= a < -_MAX_EXACT_INT
    index = tuple(int(x[0]) for x in np.nonzero(bad))
    name, place = where(*index)
    raise _inexact_integer(source, name, int(a[index]), place)


def _inexact_integer(source, name, value: int, place) -> FormatError:
    return FormatError(
        f"{source}: model {name!r} holds the integer {_short_repr(value)} at {place}, beyond ±2^53 "
        f"({_MAX_EXACT_INT}), which float64 cannot hold exactly and no log-likelihood reaches; "
        "check how the file was written (log-likelihoods are floats)"
    )


def _vector_length(source, name, value) -> int:
    """How many values one model's vector holds, without converting it (what :func:`_as_vector` takes)."""
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise FormatError(
                f"{source}: model {name!r} holds an array of shape {value.shape}; expected one vector (1-D)"
            )
        return int(value.shape[0])
    if isinstance(value, (list, tuple)):
        return len(value)
    raise FormatError(f"{source}: model {name!r} holds {type(value).__name__}, not a vector of numbers")


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
        _check_exact_integers(source, value, lambda k: (name, f"value #{k + 1}"))
        try:
            out = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            raise FormatError(
                f"{source}: model {name!r} holds values that are not numbers (or too large for a float)"
            ) from None
        if value.dtype.kind != "O":
            return out
    elif isinstance(value, (list, tuple)):
        # fromiter takes one number per element and refuses a nested sequence, at C speed.
        try:
            out = np.fromiter(value, dtype=np.float64, count=len(value))
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
    # Python numbers (a list, an object array): only the rare values beyond 2**53 are looked at one by
    # one, to tell an integer float64 has rounded from a float that was already one.
    for k in np.flatnonzero(np.abs(out) > _MAX_EXACT_INT):
        if isinstance(value[k], (int, np.integer)):
            raise _inexact_integer(source, name, int(value[k]), f"value #{int(k) + 1}")
    return out


def _is_number(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def _stack(source, names, values, max_bytes: int | None = None, expect_texts: int | None = None) -> np.ndarray:
    """Each model's vector (as found in the file) converted into one K×N float64 matrix.

    Lengths, the text set's N (``expect_texts``) and ``max_bytes`` are checked before anything is
    converted or allocated: a pickle can name one vector under 20,000 models through its memo, and
    converting each to float64 first would take K×N×8 bytes however small the file.
    """
    lengths = np.array([_vector_length(source, name, v) for name, v in zip(names, values)], dtype=np.int64)
    n = int(lengths[0])
    if expect_texts is not None:
        _check_width(source, names, lengths, expect_texts, "a pickle does not say which texts its values are for")
    if (lengths != n).any():
        i = int(np.flatnonzero(lengths != n)[0])
        raise FormatError(
            f"{source}: model {names[i]!r} has {int(lengths[i])} log-likelihoods but {names[0]!r} has {n}; "
            "every model must be scored on the same texts"
        )
    nbytes = len(values) * n * 8
    if max_bytes is not None and nbytes > max_bytes:
        raise FormatError(
            f"{source}: {len(values)} models × {n} texts would take {_size(nbytes)}, far more than the file holds "
            "(its models share vectors through pickle references); the file is damaged or crafted"
        )
    L = np.empty((len(values), n), dtype=np.float64)
    for i, (name, v) in enumerate(zip(names, values)):
        L[i] = _as_vector(source, name, v)
    return L


def _check_width(source, names, lengths, expect_texts: int, why: str) -> None:
    """Refuse models whose vectors are not one value per text of the text set (files without text positions).

    ``lengths``: per model (or one for all); ``why``: why the values cannot be placed, for the message.
    """
    lengths = np.broadcast_to(np.asarray(lengths, dtype=np.int64), (len(names),))
    off = np.flatnonzero(lengths != expect_texts)
    if not len(off):
        return
    i = int(off[0])
    others = f" (and {len(off) - 1} more models)" if len(off) > 1 else ""
    raise FormatError(
        f"{source}: model {names[i]!r}{others} has {int(lengths[i])} log-likelihoods but the text set has "
        f"{expect_texts} texts, and {why}; these vectors are incomplete or were computed on another text set"
    )


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _size(nbytes: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if nbytes < 1024 or unit == "PiB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes} bytes"  # pragma: no cover


def _short_repr(value, limit: int = 40) -> str:
    r = repr(value)
    return r if len(r) <= limit else r[: limit - 1] + "…"


def _one_line(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _int_headers(headers: list[str]) -> np.ndarray | None:
    """Column headers as text positions when they are all integers (lmmap's exports), else None."""
    try:
        return np.array([int(h) for h in headers], dtype=np.int64)
    except ValueError:
        return None


def _finish_wide(source, table, text_cols: list[str], fmt: str, locate, expect_texts: int | None = None) -> Vectors:
    """Vectors from a wide table: a ``model`` column, then one numeric column per text (Parquet or CSV).

    ``locate(i, j)``: where model ``i``'s value for text column ``j`` sits in the file, for error messages.
    ``expect_texts``: the text set's N; a wide file must then have one column per text, whatever its headers
    (integer headers such as pandas' ``0, 1, …`` are not proof of which texts the columns are).
    """
    import pyarrow as pa

    names_col = table.column("model")
    if not (pa.types.is_string(names_col.type) or pa.types.is_large_string(names_col.type)):
        names_col = names_col.cast(pa.string())
    names = _check_names(source, names_col.to_pylist())
    if expect_texts is not None:
        _check_width(source, names, len(text_cols), expect_texts, "a wide file has one column per text")
    L = np.empty((table.num_rows, len(text_cols)), dtype=np.float64)
    for j, c in enumerate(text_cols):
        values = table.column(c).to_numpy()
        _check_exact_integers(source, values, lambda i, j=j: (names[i], locate(i, j)))
        L[:, j] = values
    return _finish(source, names, L, locate=locate, format=fmt, text_pos=_int_headers(text_cols))

"""Parquet: lmmap's long export (one row per model and text: ``model``, ``text_pos``, ``loglik``,
``n_tokens``; the text set id, convention and metadata in the schema metadata under
``b"lmmap_vectors"``), other long files (``index`` for ``text_pos``), and wide files (``model`` and
one numeric column per text).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lmmap.data.formats.common import (
    Vectors, _check_convention, _finish, _finish_wide, _one_line, _physical_memory, _short_repr, _size,
)
from lmmap.data.formats.metadata import _metadata_from_records
from lmmap.exceptions import FormatError

# Schema-metadata key of lmmap's Parquet export (the store's model files use b"lmmap" for records).
EXPORT_KEY = b"lmmap_vectors"
EXPORT_FORMAT = "lmmap-vectors"
SUFFIXES = (".parquet", ".pq")


def _export_info(path, schema) -> dict:
    """lmmap's export metadata, checked for shape and types (any Parquet file can carry the key)."""
    meta = schema.metadata or {}
    if EXPORT_KEY not in meta:
        return {}
    try:
        info = json.loads(meta[EXPORT_KEY])
    except (ValueError, RecursionError):
        raise FormatError(f"{path}: damaged lmmap metadata in the Parquet schema; re-export the file") from None
    if not isinstance(info, dict):
        raise FormatError(
            f"{path}: the lmmap metadata in the Parquet schema is {_short_repr(info)}, not a JSON object; "
            "re-export the file (or drop the schema's 'lmmap_vectors' key)"
        )
    for key, kinds, what in (("text_set_id", str, "a string"), ("convention", str, "a string"),
                             ("metadata", list, "a list of rows")):
        value = info.get(key)
        if value is not None and not isinstance(value, kinds):
            raise FormatError(
                f"{path}: the lmmap metadata's {key!r} is {_short_repr(value)}, not {what}; re-export the file "
                "(or drop the schema's 'lmmap_vectors' key)"
            )
    return info


def _read_parquet_table(path: Path, **kwargs) -> pa.Table:
    try:
        return pq.read_table(path, **kwargs)
    except (pa.ArrowException, OSError) as exc:  # a damaged page or footer
        raise FormatError(
            f"{path} is not a readable Parquet file ({type(exc).__name__}: {_one_line(exc)}); re-export it"
        ) from None


# What a Parquet file may decode to: dictionary and run-length encoding store a constant column of
# 3x10^8 rows in a few kilobytes. Real log-likelihoods barely compress (a long export decodes to
# 2-3 times its size), so a file that would grow a hundredfold past the floor is refused unread.
_MAX_EXPANSION = 100
_EXPANSION_FLOOR = 64 << 20
# About what one value takes once read, per row and column (float64 log-likelihoods, int64 positions).
_DECODED_WIDTH = 8


def _check_decoded_size(path: Path, meta: pq.FileMetaData, n_columns: int) -> None:
    """Refuse from the footer a file that would decode to far more than it holds, or than memory holds."""
    decoded = meta.num_rows * n_columns * _DECODED_WIDTH
    size = path.stat().st_size
    if decoded > _EXPANSION_FLOOR and decoded > _MAX_EXPANSION * size:
        raise FormatError(
            f"{path}: its footer declares {meta.num_rows:,} rows of {n_columns} columns, {_size(decoded)} once "
            f"read from a {_size(size)} file (×{decoded / max(size, 1):.0f}); refusing what looks like a Parquet "
            "bomb (a constant column, run-length encoded) — re-export the vectors with `lmmap export`"
        )
    memory = _physical_memory()
    if memory and decoded > memory // 2:
        raise FormatError(
            f"{path}: its {meta.num_rows:,} rows of {n_columns} columns need {_size(decoded)}, more than half of "
            f"this machine's {_size(memory)} of memory; split the file (fewer models per file) and import the parts"
        )


def _check_rows_per_model(path: Path, meta: pq.FileMetaData, expect_texts: int) -> None:
    """In a long file a model has at most one row per text: refuse one with more than N rows.

    Only the model column is read, a batch at a time, before any other column: a file of 3x10^8 rows of
    one model is refused after N + 1 of them, in the memory of one batch.
    """
    if meta.num_rows <= expect_texts:
        return
    counts: dict = {}
    try:
        with pq.ParquetFile(path, read_dictionary=["model"]) as pf:
            for batch in pf.iter_batches(batch_size=1 << 16, columns=["model"]):
                col = batch.column(0)
                if not pa.types.is_dictionary(col.type):
                    col = col.dictionary_encode()
                codes = col.indices.drop_null().to_numpy()
                if not codes.size or codes.min() < 0 or codes.max() >= len(col.dictionary):
                    continue  # no names, or a damaged dictionary: the full read names the fault
                per_code = np.bincount(codes)
                present = np.flatnonzero(per_code)
                for name, n in zip(col.dictionary.take(pa.array(present)).to_pylist(), per_code[present].tolist()):
                    counts[name] = counts.get(name, 0) + n
                    if counts[name] > expect_texts:
                        raise FormatError(
                            f"{path}: model {_short_repr(name)} has more than {expect_texts} rows (at least "
                            f"{counts[name]:,} of the file's {meta.num_rows:,}) but the text set has {expect_texts} "
                            "texts and a model has one row per text; the file is damaged or crafted"
                        )
    except (pa.ArrowException, OSError) as exc:
        raise FormatError(
            f"{path} is not a readable Parquet file ({type(exc).__name__}: {_one_line(exc)}); re-export it"
        ) from None


def read(path: Path, expect_texts: int | None = None) -> Vectors:
    """Vectors from a long or wide Parquet file (the layout is told by a ``loglik`` column).

    ``expect_texts``: the text set's N; a long file may then hold at most N rows per model and a wide
    file must have N text columns. Sizes are checked from the footer before any column is read.
    """
    try:
        with pq.ParquetFile(path) as pf:  # the footer only
            meta, schema = pf.metadata, pf.schema_arrow
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
        _check_decoded_size(path, meta, len(_long_columns(path, cols)))
        if expect_texts is not None:
            _check_rows_per_model(path, meta, expect_texts)
        v = _read_parquet_long(path, cols)
    else:
        _check_decoded_size(path, meta, len(cols))
        v = _read_parquet_wide(path, schema, expect_texts)
    v.text_set_id = info.get("text_set_id")
    if info.get("convention"):
        _check_convention(path, info["convention"])
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


def _long_columns(path: Path, cols: list[str]) -> list[str]:
    """The columns read from a long file: model, position, loglik and, when present, n_tokens and truncated."""
    pos_col = "text_pos" if "text_pos" in cols else "index" if "index" in cols else None
    if pos_col is None:
        raise FormatError(
            f"{path}: a long Parquet file needs a 'text_pos' (or 'index') column saying which text each row scores"
        )
    return ["model", pos_col, "loglik"] + [c for c in ("n_tokens", "truncated") if c in cols]


def _read_parquet_long(path: Path, cols: list[str]) -> Vectors:
    want = _long_columns(path, cols)
    pos_col = want[1]
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
    # As stored: integers are checked against float64's exact range by _finish. Nulls come back as NaN
    # (an integer column with nulls as float64) and are reported by model.
    return col.to_numpy()


def _read_parquet_wide(path: Path, schema: pa.Schema, expect_texts: int | None = None) -> Vectors:
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
    return _finish_wide(path, table, text_cols, "parquet-wide", lambda i, j: f"column {text_cols[j]!r}", expect_texts)


def write(tmp, names, L, text_set_id, n_tokens, text_pos, convention, records):
    """Write the K×N matrix ``L`` to ``tmp`` in the long layout (checked by the caller)."""
    K, N = L.shape
    positions = np.arange(N, dtype=np.int64) if text_pos is None else text_pos
    write_long(
        tmp, names, np.full(K, N), np.tile(positions, K), L.reshape(-1),
        None if n_tokens is None else np.asarray(n_tokens).reshape(-1),
        n_texts=N, text_set_id=text_set_id, convention=convention, records=records,
    )


def write_long(tmp, names, rows_per_model, text_pos, loglik, n_tokens=None, *, n_texts: int,
               text_set_id=None, convention=None, records=None) -> None:
    """Write rows grouped by model to ``tmp``: model ``i`` has the next ``rows_per_model[i]`` rows.

    The one writer of the long layout: a full matrix (:func:`write`) and a
    store's rows, partial models included (``transfer.export_vectors``).
    ``n_texts``: the N of the text set the positions refer to.
    """
    codes = np.repeat(np.arange(len(names), dtype=np.int32), rows_per_model)
    cols = {
        "model": pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(list(names), pa.string())),
        "text_pos": pa.array(np.asarray(text_pos).astype(np.int32)),
        "loglik": pa.array(np.asarray(loglik, dtype=np.float64)),
    }
    if n_tokens is not None:
        cols["n_tokens"] = pa.array(np.asarray(n_tokens).astype(np.int32))
    info = {
        "format": EXPORT_FORMAT,
        "version": 1,
        "n_models": len(names),
        "n_texts": int(n_texts),
        "text_set_id": text_set_id,
        "convention": convention,
        "metadata": records,
    }
    table = pa.table(cols).replace_schema_metadata({EXPORT_KEY: json.dumps(info).encode()})
    pq.write_table(table, tmp)

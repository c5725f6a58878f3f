"""CSV, wide: a ``model`` column, then one column of log-likelihoods per text (named by its
position in lmmap's exports). CSV carries names and ``L`` only.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from lmmap.data.formats.common import Vectors, _finish_wide, _one_line, _short_repr
from lmmap.exceptions import FormatError

# Arrow's default 1 MiB blocks hold only ~50 rows of a 10,000-column file, and the per-block,
# per-column overhead then dominates (9 s instead of 1 s for 1,018 × 10,000).
_CSV_BLOCK_BYTES = 64 << 20


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
        # Strict: a quote left open (a quoted line break in a column name) or text after a closing quote
        # would be read one way here and another by Arrow, which then has columns this header lacks.
        return next(csv.reader([line], strict=True), [])
    except csv.Error as exc:
        raise FormatError(
            f"{path}:1: cannot read the header ({_one_line(exc)}); write the column names on one line, "
            "with no line break or stray quote inside a name"
        ) from None


def read(path: Path, expect_texts: int | None = None) -> Vectors:
    """Vectors from a wide CSV; a cell that is not a number is named by line and column.

    ``expect_texts``: the text set's N; the CSV must then have one column per text.
    """
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
        _check_header_agrees(path, raw, header)
        _raise_first_non_numeric(path, raw, text_cols)
        raise FormatError(f"{path}: cannot read as CSV ({_one_line(exc)})") from None
    _check_header_agrees(path, table, header)
    return _finish_wide(
        path, table, text_cols, "csv-wide", lambda i, j: f"line {i + 2}, column {text_cols[j]!r}", expect_texts
    )


def _check_header_agrees(path, table: pa.Table, header: list[str]) -> None:
    """Arrow and the csv module must read the same column names, or the columns looked up are not there."""
    if table.column_names != header:
        raise FormatError(
            f"{path}:1: the header is ambiguous (read as {_short_repr(header)} here but as "
            f"{_short_repr(table.column_names)} by the CSV parser); write the column names on one line, plainly quoted"
        )


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


def write(tmp, names, L, text_set_id, n_tokens, text_pos, convention, records):
    """Write names and ``L`` to ``tmp`` (the other arguments are not carried by CSV)."""
    positions = np.arange(L.shape[1]) if text_pos is None else text_pos
    # Build from columns (not pandas rows): Arrow writes each double in its shortest exact form.
    arrays = [pa.array(names, pa.string())] + [pa.array(L[:, j]) for j in range(L.shape[1])]
    table = pa.Table.from_arrays(arrays, names=["model"] + [str(int(p)) for p in positions])
    pacsv.write_csv(table, tmp)

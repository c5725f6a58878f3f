"""What the store's files hold: vector tables with their records, the metadata table, store.json."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lmmap.exceptions import InputError, LmmapWarning, StoreError

STORE_FORMAT = "lmmap-store"
STORE_VERSION = 1
RECORD_KEY = b"lmmap"
VECTOR_SCHEMA = pa.schema(
    [
        ("text_pos", pa.int32()),
        ("loglik", pa.float64()),
        ("n_tokens", pa.int32()),
        ("truncated", pa.bool_()),
    ]
)
# Fields of a record that must agree for vectors to share one map (SPEC §2).
CONVENTION_FIELDS = ("convention",)
# |log-likelihood| at or above this squares past float64's range (~1.8e308): distances become inf.
MAX_ABS_LOGLIK = 1e150


def _check_info(info, info_path: str, store: str) -> dict:
    """``store.json``'s contents (``info_path``, in ``store``), checked: a damaged or foreign one is refused in
    one line naming it."""
    if not isinstance(info, dict) or info.get("format") != STORE_FORMAT:
        raise StoreError(f"{info_path}: not an lmmap store file")
    version = info.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise StoreError(f"{info_path}: damaged (version {version!r} is not a whole number)")
    if version > STORE_VERSION:
        raise StoreError(f"{store} was written by a newer lmmap (store version {version}); upgrade lmmap")
    ts = info.get("text_set")
    if not isinstance(ts, dict):
        raise StoreError(f"{info_path}: damaged (no text_set); restore it from a copy of the store")
    n = ts.get("n_texts")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise StoreError(f"{info_path}: damaged (text_set.n_texts {n!r} is not a positive whole number); "
                         "restore it from a copy of the store")
    if n > np.iinfo(np.int32).max:  # text positions are int32 in every model file
        raise StoreError(f"{info_path}: damaged (text_set.n_texts {n} is more than a store can hold); "
                         "restore it from a copy of the store")
    if not isinstance(ts.get("identity"), str) or not ts["identity"]:
        raise StoreError(f"{info_path}: damaged (text_set.identity is not a string); restore it from a copy of the store")
    return info


class ModelExistsError(StoreError):
    """A model to be written without ``replace`` is already in the store (``.names``: which)."""

    def __init__(self, message: str, names, *, params=("replace",)):
        super().__init__(message, params=params)
        self.names = list(names)



def _normalise_metadata(df: pd.DataFrame) -> pd.DataFrame:
    """A copy indexed by model name (str); a name given twice is refused."""
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"metadata must be a table (DataFrame), got {type(df).__name__}", params=("df",))
    df = df.copy()
    if "model" in df.columns:
        df = df.set_index("model")
    if df.index.hasnans:
        raise InputError("metadata has a row without a model name; give every row one", params=("metadata",))
    df.index = df.index.astype(str)
    df.index.name = "model"
    dup = df.index[df.index.duplicated()]
    if len(dup):
        raise InputError(f"metadata names model {dup[0]!r} twice; give each model one row", params=("metadata",))
    df.columns = [str(c) for c in df.columns]
    return df


def _merge_metadata(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    if not len(old):
        return new
    cols = list(dict.fromkeys([*old.columns, *new.columns]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # pandas' notes on object-dtype downcasting
        merged = new.combine_first(old)
    return merged[cols]


def _metadata_table(df: pd.DataFrame) -> pa.Table:
    """``df`` (indexed by model) as a table; a column that mixes types (7 and '7B') becomes text, with a note."""
    df = df.reset_index()
    arrays, names, texted = [], [], []
    for col in df.columns:
        values = df[col]
        try:
            arr = pa.array(values, from_pandas=True)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            arr = pa.array([None if _isnull(v) else _as_text(v) for v in values], pa.string())
            texted.append(col)
        arrays.append(arr)
        names.append(str(col))
    if texted:
        warnings.warn(
            f"metadata column {texted[0]!r}{f' (and {len(texted) - 1} more)' if len(texted) > 1 else ''} mixes numbers "
            "and text (e.g. 7 and '7B'); it is stored as text",
            LmmapWarning,
            stacklevel=3,
        )
    return pa.Table.from_arrays(arrays, names=names)


def _isnull(v) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _as_text(v) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, default=str)
    return str(v)


def _read_footer(source, n_texts: int | None = None, where=None) -> tuple[dict, pq.FileMetaData]:
    """``(record, footer)`` of a model file (``source``: what pyarrow reads; ``where``: its name in messages);
    the footer can be handed to :func:`_read_columns`.

    The record is checked (types of the fields lmmap relies on) and, given
    the store's ``n_texts``, so is the file's shape: columns, and a row count
    equal to the record's ``n_scored`` within ``1..n_texts`` (read from the
    footer, so a file claiming 3×10⁸ rows is refused without reading them).
    """
    path = source if where is None else where  # what messages name: the file as the user knows it
    footer = pq.read_metadata(source)
    meta = footer.metadata or {}
    if RECORD_KEY not in meta:
        raise StoreError(f"{path}: not an lmmap vector file (no record); `lmmap doctor --repair` moves it aside")
    try:
        rec = json.loads(meta[RECORD_KEY])
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise StoreError(f"{path}: its record is not valid JSON") from None
    if not isinstance(rec, dict):
        raise StoreError(f"{path}: its record is not a JSON object")
    for key, kinds, need in (("model", str, True), ("n_scored", int, True), ("added_ns", int, False),
                             ("convention", str, False), ("settings_key", str, False)):
        v = rec.get(key)
        if v is None and not need:
            continue
        if not isinstance(v, kinds) or isinstance(v, bool) or (kinds is str and not v):
            raise StoreError(f"{path}: its record's {key!r} is {str(v)[:40]!r}, not a "
                             f"{'non-empty string' if kinds is str else 'whole number'}")
    if n_texts is not None:
        names = footer.schema.to_arrow_schema().names
        missing = [c for c in VECTOR_SCHEMA.names if c not in names]
        if missing:
            raise StoreError(f"{path}: no {missing[0]!r} column")
        if not 1 <= rec["n_scored"] <= n_texts or footer.num_rows != rec["n_scored"]:
            raise StoreError(f"{path}: its record says {rec['n_scored']} texts scored but the file has "
                             f"{footer.num_rows} rows (the store has {n_texts} texts)")
    return rec, footer


def _read_record(source, where=None) -> dict:
    return _read_footer(source, where=where)[0]


def _read_columns(path, columns: list[str], footer: pq.FileMetaData | None = None) -> pa.Table:
    """``columns`` of a model file. ``footer``: read by :meth:`Store._scan` under the same hold of the
    store's lock, so the file is unchanged; passing it saves parsing the footer again (a third of the
    time of loading a K = 1,018 matrix)."""
    with pq.ParquetFile(path, metadata=footer) as f:
        return f.read(columns=columns)


def check_same_convention(records: dict[str, dict]) -> None:
    """Raise if the models were scored under different conventions (SPEC §2: never silently mixed)."""
    groups: dict[tuple, list[str]] = {}
    for name, rec in records.items():
        key = tuple(rec.get(f) for f in CONVENTION_FIELDS)
        groups.setdefault(key, []).append(name)
    if len(groups) > 1:
        parts = "; ".join(f"{dict(zip(CONVENTION_FIELDS, k))}: {len(v)} model(s), e.g. {v[0]!r}" for k, v in groups.items())
        raise StoreError(
            f"the models were scored under different conventions ({parts}); map one convention at a time, "
            "or pass {allow_mixed=True} if you really mean to mix them",
            params=("allow_mixed",),
        )


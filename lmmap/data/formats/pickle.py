"""The authors' pickles: ``raw_log-likelihood_1018.pkl`` (a dict {model: vector}) and
``model-data-1018.pkl`` (a list of per-model dicts with a vector and metadata).

Loaded only with ``allow_pickle=True``, and then only through
:mod:`lmmap.data.safe_pickle`'s restricted unpickler. A pickle can name one
object many times through its memo, so every expansion (the K×N matrix,
joined metadata strings) is bounded by the file's size.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np
import pandas as pd

from lmmap.data.formats.common import Vectors, _check_names, _finish, _stack
from lmmap.data.safe_pickle import load_pickle
from lmmap.exceptions import FormatError

# Keys under which the authors' model-data pickle holds each model's vector, in order of preference:
# raw values first, because lmmap clips with its own stored threshold (SPEC §3).
VECTOR_KEYS = ("raw_log-likelihood-10k", "log-likelihood-10k")
SUFFIXES = (".pkl", ".pickle", ".pck")


def _pickle_budget(path: Path) -> int:
    """The most memory a pickle's vectors and metadata may expand to: float16 data, 4x, with room to spare."""
    return 8 * path.stat().st_size + (1 << 20)


def read(path: Path, allow_pickle: bool, expect_texts: int | None = None) -> Vectors:
    """Vectors (and, from the model-data list, metadata) from one of the authors' pickles.

    ``expect_texts``: the text set's N; a pickle carries no text positions, so every vector must have N values.
    """
    obj = load_pickle(path, allow_pickle=allow_pickle)
    if isinstance(obj, dict):
        return _from_vector_dict(path, obj, expect_texts)
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(r, dict) for r in obj):
        return _from_model_records(path, obj, _pickle_budget(path), expect_texts)
    raise FormatError(
        f"{path} holds a {type(obj).__name__}; lmmap reads a dict {{model: vector}} "
        "(raw_log-likelihood_1018.pkl) or a list of per-model dicts (model-data-1018.pkl)"
    )


def _from_vector_dict(path: Path, obj: dict, expect_texts: int | None = None) -> Vectors:
    """{model name: vector}; insertion order is the model order."""
    if not obj:
        raise FormatError(f"{path} holds an empty dict: no models")
    names = _check_names(path, list(obj))
    L = _stack(path, names, [obj[n] for n in names], _pickle_budget(path), expect_texts)
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


def _from_model_records(path: Path, records: list, max_bytes: int | None = None,
                        expect_texts: int | None = None) -> Vectors:
    """The authors' model-data list: one dict per model with ``model_name``, a vector and metadata."""
    key = _pick_vector_key(path, records[0])
    budget = [max_bytes] if max_bytes is not None else None
    names, vectors = [], []
    for i, rec in enumerate(records):
        name = rec.get("model_name")
        if not isinstance(name, str) or not name.strip():
            raise FormatError(f"{path}: record #{i + 1} has no 'model_name' string (got {name!r})")
        if key not in rec:
            raise FormatError(f"{path}: model {name!r} (record #{i + 1}) has no {key!r} vector, unlike the first record")
        names.append(name)
        vectors.append(rec[key])
    names = _check_names(path, names)
    # Before any vector is converted: the records may all share one vector through the pickle's memo.
    L = _stack(path, names, vectors, max_bytes, expect_texts)
    rows, skipped = [], []
    for name, rec in zip(names, records):
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
    # A key skipped for one model (an array, say) is dropped for all, so a column never mixes kinds.
    metadata = pd.DataFrame(rows, index=pd.Index(names, name="model")).drop(columns=skipped, errors="ignore")
    return _finish(
        path, names, L, metadata=metadata, format="pickle-records", vector_key=key,
        convention="reference", skipped_keys=skipped or None,
    )

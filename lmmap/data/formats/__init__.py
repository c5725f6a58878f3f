"""Reading and writing log-likelihood vectors in the published formats (SPEC §8).

:func:`read_vectors` turns any supported file into a :class:`Vectors` (model
names, the K×N float64 matrix ``L``, optional metadata): the authors' pickles
(``raw_log-likelihood_1018.pkl``, ``model-data-1018.pkl``), their scorer's
per-model JSONL output, and lmmap's own NPZ, Parquet and CSV exports.
:func:`write_vectors` writes NPZ, Parquet (long) or CSV (wide), atomically.

One module per format (:mod:`.pickle`, :mod:`.npz`, :mod:`.parquet`,
:mod:`.csv`, :mod:`.jsonl`), each with ``read`` (and ``write``); the checks
every reader shares are in :mod:`.common`, model lists and metadata tables in
:mod:`.metadata`, benchmark scores (lm-evaluation-harness, the Open LLM Leaderboard) in :mod:`.scores`,
model cards in :mod:`.cards`.

Every reader validates at the boundary: errors are :class:`FormatError`
naming the file (and line, column or model) and saying what to do.
Pickles are loaded only with ``allow_pickle=True`` and then only through
:mod:`lmmap.data.safe_pickle`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from lmmap.data.atomic import atomic_path
from lmmap.data.formats import csv, jsonl, npz, parquet, pickle
from lmmap.data.formats.common import Vectors, _check_names
from lmmap.data.formats.jsonl import scorer_model_name
from lmmap.data.formats.metadata import _metadata_records, read_metadata_csv, read_model_list
from lmmap.data.formats.cards import card_metadata, find_models, hf_cache_dir, read_cards
from lmmap.data.formats.scores import read_score_file
from lmmap.data.formats.parquet import EXPORT_FORMAT, EXPORT_KEY
from lmmap.data.formats.pickle import VECTOR_KEYS
from lmmap.data.safe_pickle import is_pickle
from lmmap.exceptions import FormatError, InputError

__all__ = [
    "Vectors",
    "read_vectors",
    "write_vectors",
    "read_model_list",
    "read_metadata_csv",
    "read_score_file",
    "card_metadata",
    "find_models",
    "hf_cache_dir",
    "read_cards",
    "scorer_model_name",
    "VECTOR_KEYS",
    "EXPORT_FORMAT",
    "EXPORT_KEY",
]


def read_vectors(path: str | os.PathLike, allow_pickle: bool = False, *, expect_texts: int | None = None) -> Vectors:
    """Read log-likelihood vectors from ``path`` (format from content, then suffix).

    Parameters
    ----------
    path : str or os.PathLike
        The authors' pickles (a dict {model: vector}, or a list of per-model
        dicts with metadata), NPZ (``L``, ``models``), Parquet (long:
        ``model``, ``text_pos``/``index``, ``loglik``; or wide: ``model`` and
        one column per text), CSV (wide), or the authors' scorer output (a
        directory of per-model JSONL files, or one).
    allow_pickle : bool
        Read a pickle (through :mod:`lmmap.data.safe_pickle`); refused otherwise.
    expect_texts : int, optional
        N of the text set the vectors are for (a store's), when known. Vectors
        that do not say which texts they are for (pickles, wide CSV/Parquet,
        NPZ without ``text_pos``) must have N values per model, scorer output
        one line per text, a long Parquet file at most N rows per model; an
        NPZ is checked from its header and a Parquet file from its footer and
        model column, before the values are loaded.

    Returns
    -------
    Vectors
        Names, the K×N matrix ``L`` (``L[i, s] = log p_i(x_s)``), metadata and extras.

    Raises
    ------
    FormatError
        Naming the file (and line, column or model) and saying what to do.
    """
    path = Path(path)
    if path.is_dir():
        return jsonl.read_dir(path, expect_texts)
    if not path.exists():
        raise FormatError(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise FormatError(f"{path} is empty: expected log-likelihood vectors")
    with open(path, "rb") as f:
        head = f.read(8)
    suffix = path.suffix.lower()
    # Content first (a pickle named .npz is still a pickle, and must be refused as one), then suffix.
    if head.startswith(b"PK\x03\x04"):
        return npz.read(path, expect_texts)
    if head.startswith(b"PAR1"):
        return parquet.read(path, expect_texts)
    if is_pickle(head) or suffix in pickle.SUFFIXES:
        return pickle.read(path, allow_pickle, expect_texts)
    if suffix == ".npz":
        return npz.read(path, expect_texts)
    if suffix in parquet.SUFFIXES:
        return parquet.read(path, expect_texts)
    if suffix in jsonl.SUFFIXES:
        return jsonl.read_files([path], source=path, expect_texts=expect_texts)
    if suffix == ".csv":
        return csv.read(path, expect_texts)
    raise FormatError(
        f"cannot tell the format of {path}; lmmap reads .npz, .parquet, .csv, the authors' .pkl files "
        "(with {allow_pickle=True}) and scorer output (.jsonl files or a directory of them)",
        params=("allow_pickle",),
    )


def _check_for_writing(names, L, n_tokens, text_pos):
    names = _check_names("vectors to write", list(names), InputError)
    L = np.asarray(L, dtype=np.float64)
    if L.ndim != 2 or L.shape[0] != len(names):
        raise InputError(f"L must be a matrix of {len(names)} rows (one per model), got shape {L.shape}", params=("names", "L"))
    if n_tokens is not None:
        n_tokens = np.asarray(n_tokens)
        if n_tokens.shape != L.shape:
            raise InputError(f"n_tokens has shape {n_tokens.shape} but L has {L.shape}", params=("L", "n_tokens"))
    if text_pos is not None:
        text_pos = np.asarray(text_pos, dtype=np.int64)
        if text_pos.shape != (L.shape[1],):
            raise InputError(f"text_pos has shape {text_pos.shape}; expected ({L.shape[1]},), one per column of L", params=("L", "text_pos"))
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

    Parameters
    ----------
    path : str or os.PathLike
        ``.npz``: arrays ``L``, ``models`` and, when given, ``text_set_id``,
        ``n_tokens``, ``text_pos``, ``convention``, ``metadata_json``.
        ``.parquet``: long, one row per (model, text): ``model``,
        ``text_pos``, ``loglik`` (and ``n_tokens``); text set id, convention
        and metadata in the schema metadata. ``.csv``: wide, ``model`` then
        one column per text named by its position; names and ``L`` only.
    names : sequence of str
        The K model names.
    L : array_like, K×N
        Log-likelihoods, ``L[i, s] = log p_i(x_s)``.
    text_set_id, n_tokens, metadata, text_pos, convention
        What the format can carry besides (see ``path``).

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    names, L, n_tokens, text_pos = _check_for_writing(names, L, n_tokens, text_pos)
    suffix = path.suffix.lower()
    writers = {".npz": npz.write, ".parquet": parquet.write, ".pq": parquet.write, ".csv": csv.write}
    if suffix not in writers:
        raise InputError(f"cannot write {path}: use a .npz, .parquet or .csv file name", params=("path",))
    records = _metadata_records(metadata, names) if metadata is not None and len(metadata) else None
    with atomic_path(path) as tmp:
        writers[suffix](tmp, names, L, text_set_id, n_tokens, text_pos, convention, records)
    return path

"""Moving vectors between files and a store: import, export, the model table.

File formats themselves are read and written by :mod:`lmmap.formats`; this
module checks that what is read belongs to the store and puts it there.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .exceptions import LmmapError
from .store import Store
from .texts import TextSet


def open_or_create_store(store_path, texts: str | os.PathLike | None) -> Store:
    """Open the store at ``store_path``; if there is none and ``texts`` is given, create it on those texts."""
    store_path = Path(store_path)
    if (store_path / "store.json").exists():
        store = Store(store_path)
        if texts is not None:
            ts = TextSet.load(texts)
            store.check_text_set(ts.identity, len(ts), what=f"text set {texts}")
        return store
    if texts is None:
        raise LmmapError(
            f"{store_path} is not an lmmap store yet; create it with `lmmap init --texts TEXTS.jsonl` "
            "or pass --texts to import"
        )
    return Store.create(store_path, TextSet.load(texts))


def import_vectors(
    store_path,
    vectors_path,
    *,
    allow_pickle: bool = False,
    texts=None,
    metadata=None,
    convention: str = "reference",
    replace: bool = False,
) -> list[str]:
    """Import every model of ``vectors_path`` into the store; all or nothing.

    Vectors must have one value per text of the store's text set (and the same
    identity when the file records one). Metadata found in the file (the
    authors' model-data pickle) and in ``metadata`` (MODELS.csv) is merged into
    the store's metadata table.
    """
    from .formats import read_metadata_csv, read_vectors

    store = open_or_create_store(store_path, texts)
    vec = read_vectors(vectors_path, allow_pickle=allow_pickle)
    extra = vec.extra or {}
    text_pos = _text_positions(store, extra, vectors_path)
    store.check_text_set(vec.text_set_id, None if text_pos is not None else vec.L.shape[1], what=f"{vectors_path}")
    meta_frames = [m for m in (vec.metadata, read_metadata_csv(metadata) if metadata else None) if m is not None and len(m)]
    n_tokens, truncated = extra.get("n_tokens"), extra.get("truncated")
    record = {"scorer": "import", "source": str(vectors_path), "convention": extra.get("convention", convention)}
    items = [
        {
            "name": name,
            "loglik": vec.L[i],
            "n_tokens": None if n_tokens is None else np.asarray(n_tokens)[i],
            "truncated": None if truncated is None else np.asarray(truncated)[i],
            "text_pos": text_pos,
            "record": record,
        }
        for i, name in enumerate(vec.names)
    ]
    store.write_models(items, replace=replace)
    for df in meta_frames:
        unknown = sorted(set(df.index) - set(store.model_names()))
        if unknown:
            import warnings

            warnings.warn(f"metadata for {len(unknown)} model(s) not in the store ignored, e.g. {unknown[0]!r}")
        store.set_metadata(df.loc[[m for m in df.index if m not in unknown]])
    return vec.names


def _text_positions(store: Store, extra: dict, source) -> np.ndarray | None:
    """Positions in the store's text set of the file's columns, when the file names its texts.

    The authors' scorer output names texts by their ``index`` id; lmmap's own
    files by position.
    """
    if extra.get("text_pos") is not None:
        return np.asarray(extra["text_pos"], dtype=np.int64)
    if extra.get("text_index") is None:
        return None
    ids = np.asarray(extra["text_index"], dtype=np.int64)
    index = store.texts.index
    order = np.argsort(index)
    at = np.searchsorted(index, ids, sorter=order)
    at = np.minimum(at, len(index) - 1)
    found = index[order[at]] == ids
    if not found.all():
        raise LmmapError(
            f"{source} scores text index {int(ids[~found][0])}, which is not in the store's text set "
            f"({int((~found).sum())} such texts): it was scored on another text set"
        )
    pos = order[at]
    return None if np.array_equal(pos, np.arange(store.n_texts)) else pos


def export_vectors(store: Store, path) -> Path:
    """Write all models' vectors to ``path`` (.parquet long, .csv wide, .npz)."""
    from .formats import write_vectors

    names, L = store.matrix(allow_mixed=True)
    n_tokens = np.stack([store.vectors(n)["n_tokens"].to_numpy() for n in names]) if names else None
    path = Path(path)
    write_vectors(path, names, L, text_set_id=store.text_set_id, n_tokens=n_tokens, metadata=store.metadata())
    return path


RECORD_COLUMNS = ["model", "convention", "scorer", "dtype", "n_scored", "n_truncated", "added_at"]


def model_table(store: Store) -> pd.DataFrame:
    """One row per model: its record's main fields and its metadata."""
    recs = store.records()
    df = pd.DataFrame([{c: r.get(c) for c in RECORD_COLUMNS} for r in recs.values()], columns=RECORD_COLUMNS)
    meta = store.metadata()
    if len(meta):
        df = df.join(meta, on="model")
    return df

"""Moving vectors between files and a store: import, export, the model table.

File formats themselves are read and written by :mod:`lmmap.data.formats`; this
module checks that what is read belongs to the store and puts it there.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from lmmap.data.atomic import atomic_path
from lmmap.data.conventions import check_convention
from lmmap.data.storage import open_storage
from lmmap.data.store import Interrupted, Store, _normalise_metadata
from lmmap.data.texts import TextSet
from lmmap.exceptions import FormatError, LmmapWarning, StoreError


def open_or_create_store(store_path, texts: str | os.PathLike | None) -> Store:
    """Open the store at ``store_path`` (a folder or a URL); if there is none and ``texts`` is given, create it
    on those texts."""
    storage = open_storage(store_path)
    store_path = storage.location
    if storage.what("store.json") != "missing":
        store = Store(storage)
        if texts is not None:
            ts = TextSet.load(texts)
            store.check_text_set(ts.identity, len(ts), what=f"text set {texts}")
        return store
    if texts is None:
        raise StoreError(
            f"{store_path} is not an lmmap store yet; create it with `lmmap init --texts TEXTS.jsonl` "
            "(Store.create), or give the vectors' text set as {texts=TEXTS.jsonl} to create it while importing",
            params=("texts",),
        )
    return Store.create(storage, TextSet.load(texts))


def import_vectors(
    store_path,
    vectors_path,
    *,
    allow_pickle: bool = False,
    texts=None,
    metadata=None,
    convention: str = "reference",
    replace: bool = False,
    progress=None,
) -> list[str]:
    """Import every model of ``vectors_path`` into the store; all or nothing.

    Vectors must have one value per text of the store's text set (and the same
    identity when the file records one). Metadata found in the file (the
    authors' model-data pickle) and in ``metadata`` (MODELS.csv) is merged into
    the store's metadata table in the same change: everything is read and
    checked first, then the models and their metadata are committed together,
    so an import killed at any moment leaves none of them (see
    :mod:`lmmap.data.store`). A metadata column whose values mix numbers and text
    is stored as text, with a note.

    Parameters
    ----------
    store_path : str or os.PathLike
        The store; created on ``texts`` when there is none yet.
    vectors_path : str or os.PathLike
        Any file :func:`lmmap.data.formats.read_vectors` reads.
    allow_pickle : bool
        Read the authors' pickles (through the restricted unpickler).
    texts : str or os.PathLike, optional
        The vectors' text set: creates the store, or is checked against it.
    metadata : str or os.PathLike, optional
        A metadata table (a ``model`` column and others), e.g. ``MODELS.csv``.
    convention : {"reference", "full"}
        The scoring convention (SPEC §2) of vectors whose file does not record one.
        Checked before anything is read, without torch.
    replace : bool
        Overwrite models already in the store (else the import is refused).
    progress : callable, optional
        Receives :class:`lmmap.progress.Step` events as models are staged (an NPZ is read and staged a
        batch of rows at a time: memory is bounded by a batch, whatever the number of models).

    Returns
    -------
    list of str
        The names imported, in file order.
    """
    try:
        return _import(store_path, vectors_path, allow_pickle, texts, metadata, convention, replace, progress)
    except Interrupted:
        raise  # after the commit: everything was imported, and the message says so
    except KeyboardInterrupt:
        raise Interrupted("nothing was imported (the store is as it was); rerun the import") from None


def _is_npz(path) -> bool:
    """Whether ``path`` is a file that :func:`lmmap.data.formats.read_vectors` reads as an NPZ (by content)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError:
        return False  # read_vectors names what is wrong


def _import(store_path, vectors_path, allow_pickle, texts, metadata, convention, replace, progress=None) -> list[str]:
    from lmmap.data.formats import npz, read_metadata_csv, read_vectors

    check_convention(convention)
    store = open_or_create_store(store_path, texts)
    # expect_texts: sizes are checked against the store's text set before the values are loaded (a small
    # hostile file can declare gigabytes); refuses a recorded convention it does not know.
    if _is_npz(vectors_path):
        # Streamed: a batch of rows at a time from the file into the store's one change, so 10⁵ models × 10⁴
        # texts need a batch of memory, not K×N float64 (8 GB) and a copy in Parquet tables.
        vec = npz.read_stream(Path(vectors_path), expect_texts=store.n_texts)
        extra = {k: v for k, v in (("text_pos", vec.text_pos), ("convention", vec.convention)) if v is not None}
        width = vec.n_texts
    else:
        vec = read_vectors(vectors_path, allow_pickle=allow_pickle, expect_texts=store.n_texts)
        extra = vec.extra or {}
        width = vec.L.shape[1]
    text_pos = _text_positions(store, extra, vectors_path)
    store.check_text_set(vec.text_set_id, None if text_pos is not None else width, what=f"{vectors_path}")
    frames = [m for m in (vec.metadata, read_metadata_csv(metadata) if metadata else None) if m is not None and len(m)]
    meta = None
    for df in frames:
        df = _normalise_metadata(df)
        meta = df if meta is None else df.combine_first(meta)  # the CSV given wins over the file's own
    if meta is not None:
        known = set(vec.names) | set(store.model_names())
        unknown = [m for m in meta.index if m not in known]
        if unknown:
            warnings.warn(
                f"metadata for {len(unknown)} model(s) neither in the store nor in {Path(vectors_path).name} ignored, "
                f"e.g. {unknown[0]!r}",
                LmmapWarning,
                stacklevel=2,
            )
            meta = meta.loc[[m for m in meta.index if m in known]]
    record = {"scorer": "import", "source": str(vectors_path), "convention": extra.get("convention", convention)}

    def items(v):
        n_tokens, truncated = v.extra.get("n_tokens"), v.extra.get("truncated")
        return [
            {
                "name": name,
                "loglik": v.L[i],
                "n_tokens": None if n_tokens is None else np.asarray(n_tokens)[i],
                "truncated": None if truncated is None else np.asarray(truncated)[i],
                "text_pos": text_pos,
                "record": record,
            }
            for i, name in enumerate(v.names)
        ]

    batches = (items(b) for b in vec.batches()) if isinstance(vec, npz.NpzStream) else [items(vec)]
    store.write_model_batches(vec.names, batches, replace=replace, metadata=meta, progress=progress)
    return vec.names


def _text_positions(store: Store, extra: dict, source) -> np.ndarray | None:
    """Positions in the store's text set of the file's columns, when the file names its texts.

    The authors' scorer output names texts by their ``index`` id; lmmap's own
    files by position.
    """
    if extra.get("text_pos") is not None:
        raw = np.asarray(extra["text_pos"])
        if raw.dtype.kind not in "iu":
            ok = raw.dtype.kind == "f" and bool(np.isfinite(raw).all()) and bool((raw == np.round(raw)).all())
            if not ok:
                raise FormatError(f"{source}: text_pos must hold whole text positions, got e.g. {raw.reshape(-1)[:3].tolist()}")
        return raw.astype(np.int64)
    if extra.get("text_index") is None:
        return None
    ids = np.asarray(extra["text_index"], dtype=np.int64)
    index = store.texts.index
    order = np.argsort(index)
    at = np.searchsorted(index, ids, sorter=order)
    at = np.minimum(at, len(index) - 1)
    found = index[order[at]] == ids
    if not found.all():
        raise StoreError(
            f"{source} scores text index {int(ids[~found][0])}, which is not in the store's text set "
            f"({int((~found).sum())} such texts): it was scored on another text set"
        )
    pos = order[at]
    return None if np.array_equal(pos, np.arange(store.n_texts)) else pos


def export_vectors(store: Store, path, include_partial: bool = False) -> Path:
    """Write the models' vectors to ``path`` (.parquet long, .csv wide, .npz); the path written.

    Parquet (long, one row per model and text with its ``text_pos``) holds
    every stored row, partial models included. The wide formats hold the
    models scored on every text; partial models are left out with a note,
    or exported with NaN for their missing texts when ``include_partial``.

    Parameters
    ----------
    store : Store
    path : str or os.PathLike
        The file to write; its suffix chooses the format.
    include_partial : bool
        Wide formats: also the models scored on only some texts (NaN elsewhere).

    Returns
    -------
    Path
    """
    from lmmap.data.formats import write_vectors

    path = Path(path)
    long = path.suffix.lower() in (".parquet", ".pq")
    with store._shared():
        recs = store.records()
        if not recs:
            raise StoreError(f"the store {store.path} holds no models yet; `lmmap import` or `lmmap score` adds some")
        complete = [n for n, r in recs.items() if int(r.get("n_scored", -1)) == store.n_texts]
        partial = [n for n in recs if n not in set(complete)]
        if long and partial:
            frames = {n: store.vectors(n) for n in recs}
            _write_long(path, frames, store)
            return path
        if partial and not include_partial:
            shown = ", ".join(f"{n!r} ({recs[n].get('n_scored')} of {store.n_texts} texts)" for n in partial[:3])
            warnings.warn(LmmapWarning(
                f"left out {len(partial)} partial model(s): {shown}{' …' if len(partial) > 3 else ''}; "
                "pass {include_partial=True} to export them with NaN for their missing texts, export to .parquet "
                "(long format) for every stored row, or `lmmap score NAME` to complete one",
                params=("include_partial",),
            ), stacklevel=2)
        names = list(recs) if include_partial else complete
        if not names:
            raise StoreError(
                f"no model in the store {store.path} has all {store.n_texts} texts; pass {{include_partial=True}}, "
                "or export to .parquet (long format)",
                params=("include_partial",),
            )
        L = np.full((len(names), store.n_texts), np.nan)
        n_tokens = np.full((len(names), store.n_texts), -1, dtype=np.int64)
        for i, n in enumerate(names):
            df = store.vectors(n)
            pos = df["text_pos"].to_numpy()
            L[i, pos] = df["loglik"].to_numpy()
            n_tokens[i, pos] = df["n_tokens"].to_numpy()
        meta = store.metadata()
    known = (n_tokens >= 0).all()  # -1: not known (imported without counts); a file has all counts or none
    write_vectors(path, names, L, text_set_id=store.text_set_id, n_tokens=n_tokens if known else None, metadata=meta)
    return path


def _write_long(path: Path, frames: dict, store: Store) -> None:
    """Every stored row of every model (``frames``: name -> rows), in the long layout of the Parquet export."""
    from lmmap.data.formats.metadata import _metadata_records
    from lmmap.data.formats.parquet import write_long

    names = list(frames)
    n_tokens = np.concatenate([frames[n]["n_tokens"].to_numpy() for n in names])
    meta = store.metadata()
    with atomic_path(path) as tmp:
        write_long(
            tmp, names, [len(frames[n]) for n in names],
            np.concatenate([frames[n]["text_pos"].to_numpy() for n in names]),
            np.concatenate([frames[n]["loglik"].to_numpy() for n in names]),
            n_tokens if (n_tokens >= 0).all() else None,  # -1: not known; a file has all counts or none
            n_texts=store.n_texts, text_set_id=store.text_set_id,
            records=_metadata_records(meta, names) if len(meta) else None,
        )


RECORD_COLUMNS = ["model", "convention", "scorer", "dtype", "n_scored", "n_truncated", "added_at"]


def model_table(store: Store) -> pd.DataFrame:
    """One row per model: its record's main fields and its metadata."""
    recs = store.records()
    df = pd.DataFrame([{c: r.get(c) for c in RECORD_COLUMNS} for r in recs.values()], columns=RECORD_COLUMNS)
    meta = store.metadata()
    if len(meta):
        df = df.join(meta, on="model")
    return df

"""The consolidated matrix: every complete model's log-likelihoods in float32 segments beside the per-model files.

A map of 100,000 models reads 100,000 model files one by one at the speed of
the file system's metadata, not of the disk (13.6 s for 10,000 files here).
So once a store's complete models hold :data:`MATRIX_MIN_ENTRIES`
log-likelihoods, the store also keeps them in one place, under ``matrix/``::

    matrix/index.parquet        one row per model file: name, key, added_ns, n_scored, convention,
                                segment and row (complete models only), row_sum (float64)
    matrix/seg-<id>.npy         float32 rows (models × N), in the index's order within each segment

The per-model files stay the source of truth (provenance, partial models,
DuckDB); the matrix is a copy kept in step with them **in the same
transaction**: every write or removal of models stages a new segment for
the complete models it writes and a new index (:meth:`Consolidated._stage_matrix`),
so a reader sees both changes or neither. Replaced and removed rows stay in
their segment until the dead rows outnumber the live ones or there are
:data:`MAX_SEGMENTS` segments; then the commit rewrites the live rows into
fresh segments.

**Fresh or not.** A reader trusts the index when it lists exactly the model
files there are (one listing of ``models/``, no footer read); otherwise it is
*stale* (files copied in or removed by hand, a store written by an older
lmmap) and the reader falls back to the model files — with a note — and
rebuilds it when it can write. ``lmmap doctor`` checks it fully: every file's
record against its index row and each row's float64 sum against the file's,
and ``--repair`` rebuilds it.

**Precision.** Rows are float32 (a relative rounding of 2⁻²⁴ ≈ 6e-8 per
log-likelihood: 2e-5 nats on a 300-nat text); what a map computes from them
is accumulated in float64 (:func:`lmmap.maths.geometry.double_center_float32`,
:mod:`lmmap.maths.knn`). The float64 sum of each row is kept in the index for
the doctor's check. Maps of fewer entries read the float64 model files.

**A hostile copy.** Segments are read with ``allow_pickle=False`` from plain
files only (a link is never followed); their shape must be what the index says,
the index's keys must be model files' keys, and a row's values are never
trusted beyond the map they feed: `doctor` compares them with the model files.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lmmap.data.store.tables import RECORD_KEY
from lmmap.exceptions import LmmapError, LmmapWarning, StoreError

MATRIX_DIR = "matrix"
INDEX_KEY = "matrix/index.parquet"
# The store keeps the matrix once its complete models hold this many log-likelihoods (1,000 models × 10,000
# texts): below it the model files are read in about a second, and a small store stays one file per model.
MATRIX_MIN_ENTRIES = 10_000_000
# A commit that would leave more segments than this, or more dead rows than live ones, rewrites the live rows.
MAX_SEGMENTS = 64
# Rows per segment written by a rebuild or a compaction (and the most a rebuild holds in memory at once).
SEGMENT_BYTES = 256 << 20
INDEX_FORMAT = 2
INDEX_SCHEMA = pa.schema([
    ("name", pa.string()),
    ("key", pa.string()),
    ("added_ns", pa.int64()),
    ("n_scored", pa.int64()),
    ("convention", pa.string()),
    ("segment", pa.string()),  # null for a partial model (not in the matrix)
    ("row", pa.int64()),
    ("row_sum", pa.float64()),
    ("record", pa.string()),  # the model file's record (JSON): a scan of a large store reads it from here
])


def _record_of(table: pa.Table) -> dict:
    return json.loads(table.schema.metadata[RECORD_KEY])


def _npy_bytes(rows: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(rows, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def _segment_key() -> str:
    return f"{MATRIX_DIR}/seg-{secrets.token_hex(8)}.npy"


def _state_of(complete: pd.DataFrame, n_texts: int, text_set_id) -> str:
    """A digest of which model versions a matrix holds, in order (names and added_ns): the key of the
    neighbour lists computed from it."""
    h = hashlib.sha256(f"{text_set_id}\t{n_texts}\n".encode())
    for name, added in zip(complete["name"], complete["added_ns"]):
        h.update(f"{name}\t{added}\n".encode())
    return h.hexdigest()[:32]


def _neighbors_key(state: str) -> str:
    return f"{MATRIX_DIR}/neighbors-{state}.parquet"


class _Changed(Exception):
    """The store changed between a map's reading and the saving of its neighbour lists (never reaches a user)."""


class Consolidated:
    """The consolidated-matrix methods of :class:`~lmmap.data.store.Store` (it provides ``storage``,
    ``n_texts``, ``_scan``, ``_columns``)."""

    #: the state of the store whose whole matrix the last :meth:`consolidated` read (None: not a whole map)
    matrix_state: str | None = None

    # -- reading --------------------------------------------------------------------------------------------------
    def _matrix_index(self, records: bool = False) -> pd.DataFrame | None:
        """The index (a DataFrame; with the records' JSON if ``records``), or None when there is none or it
        cannot be read (then it is stale)."""
        if self.storage.what(INDEX_KEY) is not None:
            return None
        names = INDEX_SCHEMA.names if records else [n for n in INDEX_SCHEMA.names if n != "record"]
        try:
            with self.storage.open(INDEX_KEY) as src:
                f = pq.ParquetFile(src)
                meta = json.loads((f.schema_arrow.metadata or {}).get(b"lmmap_matrix", b"{}"))
                if meta.get("format") != INDEX_FORMAT or meta.get("n_texts") != self.n_texts:
                    return None
                index = f.read(columns=names).to_pandas()
        except (OSError, LmmapError, pa.ArrowException, ValueError, KeyError):
            return None
        if index["key"].duplicated().any() or index["name"].duplicated().any():
            return None
        return index

    def _index_lists_files(self, index: pd.DataFrame) -> bool:
        """Whether ``index`` names exactly the model files there are (one listing, no footer read)."""
        return set(index["key"]) == set(self._model_files())

    def _scan_from_index(self) -> dict | None:
        """``{name: (key, record)}`` from a fresh index, as :meth:`_scan` would read it from every file's
        footer (the index holds each file's record, written in the same transaction): one read instead of K.
        None when the index is missing, stale or damaged."""
        index = self._matrix_index(records=True)
        if index is None or not self._index_lists_files(index):
            return None
        found = {}
        try:
            for name, key, rec in zip(index["name"], index["key"], index["record"]):
                rec = json.loads(rec)
                if not isinstance(rec, dict) or rec.get("model") != name or not isinstance(rec.get("n_scored"), int):
                    return None
                found[name] = (key, rec)
        except (TypeError, ValueError, RecursionError):
            return None
        return found

    def _records_match(self, found: dict) -> bool:
        """Whether the index holds the records ``found`` in the model files (``doctor``)."""
        index = self._matrix_index(records=True)
        try:
            return index is not None and all(json.loads(r) == found[n][1] for n, r in zip(index["name"], index["record"]))
        except (KeyError, TypeError, ValueError, RecursionError):
            return False

    def _index_matches(self, index: pd.DataFrame | None, found: dict) -> bool:
        """Whether ``index`` holds exactly the models ``found`` by a scan, each at its key and version."""
        if index is None or len(index) != len(found):
            return False
        want = {name: (key, rec.get("added_ns"), int(rec["n_scored"])) for name, (key, rec) in found.items()}
        have = {n: (k, a, s) for n, k, a, s in zip(index["name"], index["key"], index["added_ns"], index["n_scored"])}
        return want == have

    def _segment(self, key: str, rows: int, mmap: bool = True) -> np.ndarray:
        """Segment ``key`` as a float32 array: memory-mapped (read-only) where the storage is a folder and
        ``mmap``, else read. A map reads its segments (``mmap=False``): the pages of a mapped file count in
        the process's memory once touched, which for a whole map would add the matrix a second time."""
        what = self.storage.what(key)
        if what is not None:
            raise StoreError(f"{self.storage.where(key)}: {what}, not a plain file; `lmmap doctor --repair` rebuilds "
                             "the matrix")
        with self.storage.open(key) as src:
            if isinstance(src, (str, bytes)) or hasattr(src, "__fspath__"):
                arr = np.load(src, mmap_mode="r" if mmap else None, allow_pickle=False)
            else:
                arr = np.load(io.BytesIO(src.read()), allow_pickle=False)
        if arr.dtype != np.float32 or arr.ndim != 2 or arr.shape[1] != self.n_texts or arr.shape[0] < rows:
            raise StoreError(f"{self.storage.where(key)}: holds {arr.dtype} {arr.shape}, not the float32 rows × "
                             f"{self.n_texts} its index says; `lmmap doctor --repair` rebuilds the matrix")
        return arr

    def consolidated(self, models=None, text_pos=None, allow_mixed: bool = False):
        """``(names, L)`` with ``L`` float32 from the consolidated matrix, or None when it cannot answer.

        None: no fresh matrix, or a named model that is not complete (the model files answer those).
        ``models=None``: every complete model, in the order they were added (as :meth:`matrix`).
        """
        from lmmap.data.store.tables import check_same_convention

        self.matrix_state = None
        with self._shared():
            index = self._matrix_index()
            if index is None or not self._index_lists_files(index):
                return None
            complete = index[index["segment"].notna()]
            if models is None:
                complete = complete.sort_values(["added_ns", "name"], kind="stable")
                if text_pos is not None:
                    return None  # partial models may cover these texts: the model files say
                if len(complete) < len(index):
                    left = index[index["segment"].isna()].sort_values(["added_ns", "name"], kind="stable")
                    shown = ", ".join(f"{n!r} ({s} of {self.n_texts} texts)"
                                      for n, s in zip(left["name"][:3], left["n_scored"][:3]))
                    warnings.warn(f"left out {len(left)} partial model(s) that lack some of the texts: {shown}"
                                  f"{' …' if len(left) > 3 else ''}; `lmmap score NAME` scores only the missing texts",
                                  LmmapWarning, stacklevel=4)
            else:
                by_name = complete.set_index("name")
                names = [str(m) for m in models]
                if not set(names) <= set(by_name.index):
                    return None
                complete = by_name.loc[names].reset_index()
            if not len(complete):
                return None
            if not allow_mixed:
                check_same_convention({n: {"convention": c} for n, c in zip(complete["name"], complete["convention"])})
            # which state of the store this matrix is: neighbour lists computed from it are stored under it
            self.matrix_state = _state_of(complete, self.n_texts, self.text_set_id) if models is None else None
            want = None if text_pos is None else np.asarray(text_pos, dtype=np.int64)
            width = self.n_texts if want is None else len(want)
            L = np.empty((len(complete), width), dtype=np.float32)
            rows = complete["row"].to_numpy()
            out_at = np.arange(len(complete))
            try:
                for seg, where in complete.groupby("segment", sort=False).indices.items():
                    arr = self._segment(seg, int(rows[where].max()) + 1, mmap=False)
                    order = np.argsort(rows[where], kind="stable")  # read a segment front to back
                    src_rows, dst = rows[where][order], out_at[where][order]
                    L[dst] = arr[src_rows] if want is None else arr[src_rows][:, want]
            except (OSError, ValueError) as exc:
                warnings.warn(f"the consolidated matrix of {self.path} cannot be read ({type(exc).__name__}); read "
                              "the model files instead — `lmmap doctor --repair` rebuilds it", LmmapWarning, stacklevel=3)
                return None
            return complete["name"].tolist(), L

    # -- stored neighbour lists -------------------------------------------------------------------------------
    def _current_state(self) -> str | None:
        """The state (:func:`_state_of`) of the whole map of this store now, if its matrix is fresh and complete."""
        index = self._matrix_index()
        if index is None or not self._index_lists_files(index):
            return None
        return self._state_of_index(index)

    def _state_of_index(self, index: pd.DataFrame) -> str:
        """The state of the map of every complete model of ``index`` (partial models are not in it)."""
        complete = index[index["segment"].notna()].sort_values(["added_ns", "name"], kind="stable")
        return _state_of(complete, self.n_texts, self.text_set_id)

    def save_neighbors(self, state: str, table: pd.DataFrame, threshold) -> bool:
        """Keep ``table`` (model, rank, neighbor, kl in nats per text: ``neighbors.csv`` of the map of every
        complete model, clipped as by default) under ``state`` — the ``matrix_state`` of the matrix the map
        was built from — so that `lmmap neighbors MODEL` answers from it in a large store (until a change of
        its complete models). Returns False (and keeps nothing) when the store has changed since: the lists
        would not be those of its map."""
        cols = ["model", "rank", "neighbor", "kl"]
        t = pa.Table.from_pandas(table[cols].sort_values(["model", "rank"], kind="stable"), preserve_index=False)
        meta = {"state": state, "k": int(table["rank"].max()), "threshold": threshold}
        t = t.replace_schema_metadata({b"lmmap_neighbors": json.dumps(meta).encode()})

        def body(tx):
            if self._current_state() != state:
                raise _Changed
            for key in self._matrix_files():
                if key.startswith(f"{MATRIX_DIR}/neighbors-"):
                    tx.delete(key)
            tx.stage_table(t, _neighbors_key(state))

        tx = self.storage.begin()
        try:
            self._committed(tx, body)
            return True
        except _Changed:
            return False
        finally:
            if not tx.committed:
                tx.close()

    def stored_neighbors(self, model: str, k: int) -> pd.DataFrame | None:
        """``model``'s ``k`` nearest (model, rank, neighbor, kl in nats per text) from the lists kept by
        :meth:`save_neighbors`, or None when there are none for the store as it is now, or too few."""
        with self._shared():
            state = self._current_state()
            key = None if state is None else _neighbors_key(state)
            if key is None or self.storage.what(key) is not None:
                return None
            try:
                with self.storage.open(key) as src:
                    f = pq.ParquetFile(src)
                    meta = json.loads((f.schema_arrow.metadata or {}).get(b"lmmap_neighbors", b"{}"))
                    if meta.get("state") != state or int(meta.get("k", 0)) < k:
                        return None
                    t = pq.read_table(src, filters=[("model", "=", model), ("rank", "<=", int(k))])
            except (OSError, pa.ArrowException, ValueError, TypeError):
                return None
        df = t.to_pandas().sort_values("rank", kind="stable").reset_index(drop=True)
        return df if len(df) else None

    # -- writing --------------------------------------------------------------------------------------------------
    def _index_table(self, index: pd.DataFrame) -> pa.Table:
        table = pa.Table.from_pandas(index[INDEX_SCHEMA.names], schema=INDEX_SCHEMA, preserve_index=False)
        meta = {"format": INDEX_FORMAT, "n_texts": self.n_texts, "text_set_id": self.text_set_id}
        return table.replace_schema_metadata({b"lmmap_matrix": json.dumps(meta).encode()})

    def _wanted(self, n_complete: int) -> bool:
        from lmmap.data.store import matrix as settings  # read at call time: tests lower the threshold

        return n_complete * self.n_texts >= settings.MATRIX_MIN_ENTRIES

    def _matrix_kept(self, found: dict, n_new: int) -> bool:
        """Whether a change writing ``n_new`` models into the store ``found`` keeps the matrix in step (and so
        stages a segment for each batch of complete models it writes): the matrix is there and in step, or the
        store will be large enough to want one."""
        index = self._matrix_index()
        if index is not None and self._index_matches(index, found):
            return True
        n = sum(int(r["n_scored"]) == self.n_texts for _, r in found.values())
        return self._wanted(n + n_new)

    def _stage_rows(self, tx, tables: dict[str, tuple[str, pa.Table]], keep: bool) -> dict[str, dict]:
        """The index rows of models written as ``{name: (key, table)}``; with ``keep``, their complete rows
        staged as one new segment (float32) with the float64 sums from the tables."""
        rows, block = {}, []
        seg = _segment_key()
        for name, (key, table) in tables.items():
            rec = _record_of(table)
            complete = keep and table.num_rows == self.n_texts
            row = {"name": name, "key": key, "added_ns": rec.get("added_ns"), "n_scored": table.num_rows,
                   "convention": rec.get("convention"), "segment": None, "row": -1, "row_sum": np.nan,
                   "record": json.dumps(rec)}
            if complete:
                ll = table.column("loglik").to_numpy()
                row.update(segment=seg, row=len(block), row_sum=float(ll.sum()))
                block.append(ll)
            rows[name] = row
        if block:
            tx.stage_bytes(_npy_bytes(np.vstack(block)), seg)
        return rows

    def _stage_matrix(self, tx, found: dict, written: dict[str, dict] | None = None, removed=(),
                      kept: bool = True) -> None:
        """Stage the matrix of the state after this change (from inside the store's ``check_and_stage``).

        ``found``: the scan before the change; ``written``: the index rows of the models it writes
        (:meth:`_stage_rows`, their segments already staged when ``kept``); ``removed``: names it deletes.
        An index in step with ``found`` gets the new rows; a stale or missing one is rebuilt from the model
        files (the written rows stay in their new segments) when the store is large enough; otherwise, or
        when the change did not keep the matrix (``kept=False``), there is none after it.
        """
        written = written or {}
        index = self._matrix_index(records=True)
        after = {n: v for n, v in found.items() if n not in removed and n not in written}
        n_complete = sum(int(r["n_scored"]) == self.n_texts for _, r in after.values()) + sum(
            r["n_scored"] == self.n_texts for r in written.values())
        in_step = index is not None and self._index_matches(index, found)
        if not kept or not (in_step or self._wanted(n_complete)):
            if self.storage.what(INDEX_KEY) != "missing" or self._matrix_files():
                self._stage_drop(tx)
            return
        new = pd.DataFrame(list(written.values()), columns=INDEX_SCHEMA.names)
        if in_step:
            old = index[~index["name"].isin(set(removed) | set(written))]
            stored = self._segment_rows(old)
            live = int(old["segment"].notna().sum())
            if old["segment"].nunique() <= MAX_SEGMENTS and stored <= 2 * live:
                self._stage_index(tx, pd.concat([old, new], ignore_index=True) if len(new) else old)
                return
            old = self._rewrite(tx, old, lambda seg, rows: self._segment(seg, int(rows.max()) + 1)[rows])
        else:
            old = self._rewrite(tx, self._rows_of_files(after), self._file_rows(after))
        self._stage_index(tx, pd.concat([old, new], ignore_index=True) if len(new) else old)

    def _stage_index(self, tx, index: pd.DataFrame) -> None:
        """Stage ``index`` and the removal of every matrix file it does not name (dead segments), and of
        neighbour lists of another state (a change that adds only partial models keeps the map's lists)."""
        referenced = set(index["segment"].dropna()) | {_neighbors_key(self._state_of_index(index))}
        for key in self._matrix_files():
            if key != INDEX_KEY and key not in referenced:
                tx.delete(key)
        tx.stage_table(self._index_table(index), INDEX_KEY)

    def _segment_rows(self, index: pd.DataFrame) -> int:
        """Rows held by the segments ``index`` refers to (live and dead), from the segments' headers."""
        total = 0
        for seg in index["segment"].dropna().unique():
            try:
                total += self._segment(seg, 0).shape[0]
            except (OSError, ValueError, LmmapError):
                return 1 << 62  # unreadable: rewritten
        return total

    def _matrix_files(self) -> list[str]:
        return [f"{MATRIX_DIR}/{n}" for n in self.storage.list(MATRIX_DIR)]

    def _stage_drop(self, tx) -> None:
        for key in self._matrix_files():
            tx.delete(key)

    def _rows_of_files(self, models: dict) -> pd.DataFrame:
        """Index rows (no segment yet) of the stored models ``{name: (key, record)}``, in the order added."""
        rows = [{"name": n, "key": k, "added_ns": r.get("added_ns"), "n_scored": int(r["n_scored"]),
                 "convention": r.get("convention"), "segment": "files" if int(r["n_scored"]) == self.n_texts else None,
                 "row": -1, "row_sum": np.nan, "record": json.dumps(r)} for n, (k, r) in models.items()]
        index = pd.DataFrame(rows, columns=INDEX_SCHEMA.names)
        return index.sort_values(["added_ns", "name"], kind="stable", na_position="first").reset_index(drop=True)

    def _file_rows(self, models: dict):
        def read(_, names):  # float64 from the model files: the index keeps their float64 sums
            out = np.empty((len(names), self.n_texts))
            for j, n in enumerate(names):
                out[j] = self._columns(models[n][0], ["loglik"]).column("loglik").to_numpy()
            return out
        return read

    def _rewrite(self, tx, index: pd.DataFrame, rows_of) -> pd.DataFrame:
        """Stage the complete rows of ``index`` as fresh segments of at most :data:`SEGMENT_BYTES` each and
        return ``index`` pointing at them. ``rows_of(segment, rows)`` reads rows where they are now (``rows``:
        row numbers, or names for rows still in the model files, ``segment == "files"``); a block at a time,
        so a rebuild of 10⁵ models holds one segment in memory."""
        index = index.reset_index(drop=True).copy()
        live = np.flatnonzero(index["segment"].notna().to_numpy())
        per = max(1, SEGMENT_BYTES // (4 * self.n_texts))
        for s in range(0, len(live), per):
            part = live[s:s + per]
            segs, rws = index["segment"].to_numpy()[part], index["row"].to_numpy()[part]
            block = None
            for seg in dict.fromkeys(segs):
                at = np.flatnonzero(segs == seg)
                got = rows_of(seg, index["name"].to_numpy()[part][at].tolist() if seg == "files" else rws[at])
                if block is None:
                    block = np.empty((len(part), self.n_texts), dtype=got.dtype)
                block[at] = got
            have = index["row_sum"].to_numpy()[part]
            missing = ~np.isfinite(have)
            if missing.any():  # rows from the model files: their float64 sums, before rounding
                have = np.where(missing, block.sum(axis=1, dtype=np.float64), have)
            key = _segment_key()
            tx.stage_bytes(_npy_bytes(block), key)
            index.loc[part, "row_sum"] = have
            index.loc[part, "segment"] = key
            index.loc[part, "row"] = np.arange(len(part))
        return index

    def rebuild_matrix(self) -> int:
        """Build the consolidated matrix from the model files now (one transaction); returns its rows."""
        def body(tx):
            found, _, _ = self._scan(use_index=False)
            self._stage_index(tx, self._rewrite(tx, self._rows_of_files(found), self._file_rows(found)))

        tx = self.storage.begin()
        try:
            self._committed(tx, body)
        finally:
            if not tx.committed:
                tx.close()
        index = self._matrix_index()
        return 0 if index is None else int(index["segment"].notna().sum())

    # -- checking ---------------------------------------------------------------------------------------------------
    def _matrix_problems(self, found: dict) -> list[str]:
        """What is wrong with the consolidated matrix given the models ``found`` by a scan (for ``doctor``):
        missing where the store is large enough to need one, unreadable, out of step with the model files,
        or holding values that are not the files' (each row's sums against the file's, within float32 rounding)."""
        n_complete = sum(int(r["n_scored"]) == self.n_texts for _, r in found.values())
        what = self.storage.what(INDEX_KEY)
        if what == "missing":
            if self._wanted(n_complete) and n_complete:
                return [f"{INDEX_KEY}: missing ({n_complete:,} complete models × {self.n_texts:,} texts are read "
                        "file by file for a map)"]
            return [f"{key}: a matrix file without an index" for key in self._matrix_files()]
        index = self._matrix_index()
        if index is None:
            return [f"{INDEX_KEY}: {what or 'unreadable, or for another text set'}"]
        if not self._index_matches(index, found) or not self._records_match(found):
            listed = set(index["name"])
            extra = sorted(listed - set(found))
            lacking = sorted(set(found) - listed)
            changed = sorted(n for n in listed & set(found) if
                             (index.loc[index["name"] == n, "added_ns"].iloc[0], ) != (found[n][1].get("added_ns"),))
            parts = [f"{len(x)} {label}, e.g. {x[0]!r}" for x, label in
                     ((extra, "listed but not stored"), (lacking, "stored but not listed"), (changed, "changed since"))
                     if x]
            return [f"{INDEX_KEY}: out of step with the model files ({'; '.join(parts) or 'records differ'})"]
        problems = []
        live = index[index["segment"].notna()]
        for seg, at in live.groupby("segment", sort=False).indices.items():
            try:
                arr = self._segment(seg, int(live["row"].to_numpy()[at].max()) + 1)
            except (OSError, ValueError, LmmapError) as exc:
                problems.append(f"{seg}: {str(exc).removeprefix(self.storage.where(seg) + ': ')}")
                continue
            for name, key, row, row_sum in live.iloc[at][["name", "key", "row", "row_sum"]].itertuples(index=False):
                ll = self._columns(key, ["loglik"]).column("loglik").to_numpy()
                bound = 2.0 ** -23 * float(np.abs(ll).sum()) + 1e-9
                if abs(float(ll.sum()) - row_sum) > 1e-9 * (1 + abs(row_sum)) or \
                        abs(float(arr[row].sum(dtype=np.float64)) - float(ll.sum())) > bound:
                    problems.append(f"{seg}: the row of model {name!r} is not its file's values")
                    break
        referenced = set(live["segment"]) | {INDEX_KEY}
        state = self._current_state()
        if state is not None:
            referenced.add(_neighbors_key(state))
        problems += [f"{key}: not in the index" for key in self._matrix_files() if key not in referenced]
        return problems

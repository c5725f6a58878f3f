"""The store's logic: names, records, vectors, metadata, per-model state, checkpoints, the matrix.

Everything here reaches the store's bytes through a backend
(:class:`lmmap.data.storage.base.Storage`), by keys such as
``models/<file>.parquet``; what a transaction, a lock or a recovery is, is
the backend's (:mod:`lmmap.data.storage.local`, :mod:`lmmap.data.storage.objects`).
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lmmap._version import __version__
from lmmap.data.conventions import CONVENTIONS
from lmmap.data.storage import open_storage
from lmmap.data.storage.base import STATE_KINDS, CommitConflict, Unreachable, os_reason
from lmmap.data.store.checkpoints import Checkpoints
from lmmap.data.store.matrix import Consolidated
from lmmap.data.store.naming import check_model_name, legacy_filename, model_filename, model_stem, now_iso, _name_type
from lmmap.data.store.tables import (
    MAX_ABS_LOGLIK,
    RECORD_KEY,
    STORE_FORMAT,
    STORE_VERSION,
    VECTOR_SCHEMA,
    ModelExistsError,
    _check_info,
    _merge_metadata,
    _metadata_table,
    _normalise_metadata,
    _read_columns,
    _read_footer,
    check_same_convention,
)
from lmmap.data.texts import TextSet
from lmmap.exceptions import InputError, LmmapError, LmmapWarning, StoreError, StoreExistsError
from lmmap.parallel import parallel_map

# Threads reading model files: they wait on the disk (or the network), not the CPU, so more than the cores.
_IO_WORKERS = 8
# Largest store.json or state file read: far above what lmmap writes.
_MAX_INFO = 1 << 20
# Times an optimistic commit (object storage) is tried again after another writer committed first.
_COMMIT_TRIES = 20


class Store(Checkpoints, Consolidated):
    """Log-likelihood vectors on one text set (see :mod:`lmmap.data.store`).

    ``path``: a folder, or a URL such as ``s3://bucket/prefix`` for object
    storage (:mod:`lmmap.data.storage.objects`; ``storage_options`` go to
    fsspec, which otherwise takes credentials and endpoints from its usual
    configuration).
    """

    def __init__(self, path, recover: bool = True, *, storage_options: dict | None = None):
        self.storage = open_storage(path, storage_options)
        self.path = self.storage.location
        where = self.storage.where("store.json")
        what = self.storage.what("store.json")
        if what == "missing":
            raise StoreError(
                f"{self.path} is not an lmmap store (no store.json); create one with "
                "`lmmap init --texts TEXTS.jsonl` or Store.create()"
            )
        if what is not None:
            raise StoreError(f"{where} is {what}, not a plain file; lmmap never reads through one "
                             "(replace it with the store's own store.json)")
        try:
            info = json.loads(self.storage.read("store.json", _MAX_INFO))
        except OSError as exc:
            raise StoreError(f"{where}: cannot be read ({os_reason(exc)}); is this an lmmap store?") from None
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise StoreError(f"{where}: not valid JSON; is this an lmmap store?") from None
        self.info = _check_info(info, where, str(self.path))
        self._texts: TextSet | None = None
        self._why: dict[str, str] = {}  # why each unreadable model file is so (filled by _scan)
        self._size_checked = False  # whether n_texts agrees with the text set (else checked before arrays of N)
        if recover:
            self.storage.check_layout()
            self._check_size()
            self.storage.recover_if_needed()

    # -- creation -------------------------------------------------------------
    @classmethod
    def create(cls, path, texts: TextSet, exist_ok: bool = False, *, storage_options: dict | None = None) -> "Store":
        """A new store on ``texts``. ``exist_ok``: reopen an existing store on the same text set."""
        storage = open_storage(path, storage_options)
        if storage.what("store.json") != "missing":
            store = cls(path, storage_options=storage_options)
            if not exist_ok:
                raise StoreExistsError(f"{storage.location} is already an lmmap store; open it instead")
            store.check_text_set(texts.identity, len(texts), what=f"the text set given for {storage.location}")
            return store
        sink = pa.BufferOutputStream()
        pq.write_table(texts.table, sink)
        info = {
            "format": STORE_FORMAT,
            "version": STORE_VERSION,
            "text_set": {"identity": texts.identity, "n_texts": len(texts)},
            "created_at": now_iso(),
            "lmmap_version": __version__,
        }
        storage.create({"texts.parquet": sink.getvalue().to_pybytes(),
                        "store.json": json.dumps(info, indent=2).encode()})
        return cls(path, storage_options=storage_options)

    @classmethod
    def open(cls, path, **kw) -> "Store":
        return cls(path, **kw)

    # -- the text set ---------------------------------------------------------
    @property
    def text_set_id(self) -> str:
        return self.info["text_set"]["identity"]

    @property
    def n_texts(self) -> int:
        """N, the size of the store's text set ``D_N``."""
        return int(self.info["text_set"]["n_texts"])

    @property
    def texts(self) -> TextSet:
        if self._texts is None:
            where = self.storage.where("texts.parquet")
            try:
                what = self.storage.what("texts.parquet")
                if what not in (None, "missing"):
                    raise StoreError(f"{what}, never read")
                with self.storage.open("texts.parquet") as src:
                    ts = TextSet(pq.read_table(src))
            except (OSError, pa.ArrowException, LmmapError) as exc:
                why = str(exc) if isinstance(exc, LmmapError) else f"not a readable Parquet file ({type(exc).__name__})"
                raise StoreError(f"{where}: {why}; restore it from a copy of the store") from None
            if len(ts) != self.n_texts:
                raise StoreError(f"{where}: {len(ts)} texts, but store.json says {self.n_texts}; "
                                 "restore it from a copy of the store")
            self._texts = ts
            self._size_checked = True
        return self._texts

    def check_text_set(self, identity: str | None, n_texts: int | None, what: str) -> None:
        """Raise unless ``what`` belongs to this store's text set (same size; same identity when known)."""
        if n_texts is not None and int(n_texts) != self.n_texts:
            raise StoreError(
                f"{what} has {n_texts} texts but the store's text set has {self.n_texts}: "
                "it was computed on another text set"
            )
        if identity is not None and identity != self.text_set_id:
            raise StoreError(
                f"{what} belongs to text set {identity[:19]}…, not the store's {self.text_set_id[:19]}…: "
                "it was computed on another text set"
            )

    # -- locking --------------------------------------------------------------
    def _exclusive(self):
        return self.storage.lock(shared=False)

    def _shared(self):
        return self.storage.lock(shared=True)

    @contextlib.contextmanager
    def lock(self):
        """The store held for a change: an exclusive inter-process lock on a folder (changes made under it are
        not seen half-done); on object storage, a pinned state that commits check against (not a lock)."""
        with self._exclusive():
            yield

    def _check_size(self) -> None:
        """Refuse a store.json whose text count disagrees with texts.parquet's (read from its footer only).

        Arrays of N entries are made before any text is read (a matrix, a
        lookup of positions): a store.json claiming 10¹² texts would end in a
        memory error. A text set that cannot be read at all is left to
        :attr:`texts` (and `doctor`) to name.
        """
        if self.storage.what("texts.parquet") is not None:
            return
        try:
            with self.storage.open("texts.parquet") as src:
                rows = pq.read_metadata(src).num_rows
        except (OSError, pa.ArrowException, ValueError):
            return
        self._size_checked = rows == self.n_texts
        if rows != self.n_texts:
            raise StoreError(f"{self.storage.where('store.json')}: damaged (text_set.n_texts is {self.n_texts} but "
                             f"texts.parquet holds {rows} texts); restore it from a copy of the store")

    def _committed(self, tx, body) -> None:
        """Run ``body(tx)`` (checks on the current state, then staging) and commit ``tx``, under the lock.

        A backend with optimistic commits raises :class:`CommitConflict` when
        another writer committed first: what the body staged is dropped and it
        runs again on the new state, so clashes and merges are decided on what
        is really there.
        """
        for attempt in range(_COMMIT_TRIES):
            mark = tx.mark()
            with self._exclusive():
                self.storage.recover()
                body(tx)
                try:
                    tx.commit()
                    return
                except CommitConflict:
                    tx.reset(mark)
            time.sleep(min(0.01 * 2 ** attempt, 1.0) * (0.5 + np.random.random()))
        raise StoreError(f"the store {self.path} was changed by other writers {_COMMIT_TRIES} times while this "
                         "change was being committed; nothing was changed: run the command again")

    @contextlib.contextmanager
    def _transaction(self):
        """A change: stage it in the body (``tx.stage_*``, ``tx.delete``); committed under the exclusive lock at
        the end, or dropped if the body raises."""
        tx = self.storage.begin()
        try:
            yield tx
            self._committed(tx, lambda tx: None)
        finally:
            if not tx.committed:
                tx.close()

    # -- models ---------------------------------------------------------------
    def _model_key(self, name: str) -> str:
        return f"models/{model_filename(name)}"

    def _footer(self, key: str, n_texts: int | None = None):
        with self.storage.open(key) as src:
            return _read_footer(src, n_texts, self.storage.where(key))

    def _columns(self, key: str, columns: list[str], footer=None) -> pa.Table:
        with self.storage.open(key) as src:
            return _read_columns(src, columns, footer)

    def _existing_key(self, name: str) -> str | None:
        """The key of the file holding model ``name``: its own, or the one lmmap 0.1.0 named."""
        key = self._model_key(name)
        what = self.storage.what(key)
        if what != "missing":
            # a link, folder or FIFO is never opened (`doctor` reports it)
            if what is not None:
                return None
            try:
                # a file may hold another model (copied in, or a hostile store): it is that model's, not this
                # one's, as `records` says; a damaged record is left to the reader to report
                if self._footer(key)[0].get("model") == name:
                    return key
            except (OSError, LmmapError, pa.ArrowException, ValueError, RecursionError):
                return key
        old = legacy_filename(name)
        if old is not None and old != model_filename(name):
            try:
                legacy = f"models/{old}"
                if self.storage.what(legacy) is None and self._footer(legacy)[0].get("model") == name:
                    return legacy
            except (OSError, LmmapError):
                return None
        return None

    def has_model(self, name: str) -> bool:
        return self._existing_key(name) is not None

    def _model_files(self) -> list[str]:
        """Every ``*.parquet`` entry of ``models/``, links, folders and FIFOs included (`_scan` never opens them)."""
        return [f"models/{n}" for n in self.storage.list("models") if n.endswith(".parquet")]

    def _scan(self, footers: dict | None = None, use_index: bool = True) -> tuple[dict[str, tuple[str, dict]], list[str], list[str]]:
        """``({name: (key, record)}, unreadable files, second files of a name)`` (keys such as ``models/x.parquet``).

        ``footers``: a dict to fill with ``{key: Parquet footer}``, for a caller that reads the files'
        columns under the same hold of the lock (the footer is then read once, not twice).
        Why each unreadable file is so is kept in ``self._why`` (for ``doctor`` and the notes).
        ``use_index``: where the consolidated matrix's index is fresh (it lists exactly the model files),
        the records come from it in one read instead of K footers (``doctor`` reads the files themselves).
        """
        if use_index:
            fast = self._scan_from_index()
            if fast is not None:
                self._why = {}
                return fast, [], []
        files = self._model_files()

        def read(k):
            what = self.storage.what(k)
            if what is not None:  # a link is never followed; a folder, FIFO or device never opened (a FIFO blocks)
                if what == "missing":
                    return k, None  # removed since the listing
                return k, f"{what}, never followed" if what == "a symbolic link" else f"{what}, not a plain file"
            try:
                rec, footer = self._footer(k, self.n_texts)
            except FileNotFoundError:
                return k, None  # removed since the listing (rm, doctor): not a model any more
            except Unreachable:
                raise  # the storage failed, not this file: never called damaged (nor moved aside)
            except LmmapError as exc:
                return k, str(exc).removeprefix(f"{self.storage.where(k)}: ")
            except (OSError, pa.ArrowException, ValueError, RecursionError) as exc:
                return k, f"not a readable Parquet file ({type(exc).__name__})"
            if footers is not None:
                footers[k] = footer
            return k, rec

        results = parallel_map(read, files, workers=_IO_WORKERS)
        found: dict[str, tuple[str, dict]] = {}
        unreadable, dups = [], []
        self._why = {}
        for k, rec in results:
            if rec is None:
                continue
            if isinstance(rec, str):
                unreadable.append(k)
                self._why[k] = rec
                continue
            name = rec["model"]
            if name in found:
                # the file with the current name wins; the other is a leftover
                if k == self._model_key(name):
                    dups.append(found[name][0])
                    found[name] = (k, rec)
                else:
                    dups.append(k)
                continue
            found[name] = (k, rec)
        return found, unreadable, dups

    def _note_unreadable(self, unreadable: list[str], stacklevel: int) -> None:
        if unreadable:
            k = unreadable[0]
            warnings.warn(
                f"{len(unreadable)} unreadable file(s) in {self.storage.where('models')} left out, e.g. "
                f"{k.rpartition('/')[2]} ({self._why.get(k, 'unreadable')}); `lmmap doctor` reports them and "
                "`lmmap doctor --repair` moves them aside",
                LmmapWarning,
                stacklevel=stacklevel + 1,
            )

    def records(self) -> dict[str, dict]:
        """Every model's record, in the order the models were added."""
        with self._shared():
            found, unreadable, _ = self._scan()
        self._note_unreadable(unreadable, 2)
        recs = [rec for _, rec in found.values()]
        recs.sort(key=lambda r: (r.get("added_ns", 0), r["model"]))
        return {r["model"]: r for r in recs}

    def model_names(self) -> list[str]:
        return list(self.records())

    def complete_models(self) -> list[str]:
        """The models scored on every text of the store's text set, in the order they were added."""
        return [n for n, r in self.records().items() if int(r.get("n_scored", -1)) == self.n_texts]

    def partial_models(self) -> list[str]:
        """The models scored on only some of the texts."""
        return [n for n, r in self.records().items() if int(r.get("n_scored", -1)) != self.n_texts]

    def _not_in_store(self, name: str) -> StoreError:
        return StoreError(f"model {name!r} is not in the store {self.path}; `lmmap models` lists what is")

    def record(self, name: str) -> dict:
        with self._shared():
            key = self._existing_key(name)
            if key is None:
                raise self._not_in_store(name)
            return self._footer(key, self.n_texts)[0]

    def _vector_table(self, name, loglik, n_tokens, truncated, text_pos, record, positive: list) -> pa.Table:
        check_model_name(name)
        try:
            loglik = np.asarray(loglik, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"model {name!r}: the log-likelihoods are not numbers", params=("name",)) from None
        if loglik.ndim != 1:
            raise InputError(f"model {name!r}: the log-likelihood vector must be 1-D, got shape {loglik.shape}", params=("name", "loglik"))
        m = loglik.shape[0]
        if text_pos is None:
            if m != self.n_texts:
                raise StoreError(
                    f"model {name!r} has {m} log-likelihoods but the store's text set has {self.n_texts} texts: "
                    "it was scored on another text set"
                )
            text_pos = np.arange(m)
        else:
            raw = np.asarray(text_pos)
            if raw.dtype.kind == "f" and (~np.isfinite(raw) | (raw != np.round(raw))).any():
                raise InputError(f"model {name!r}: text positions must be whole numbers", params=("name",))
            try:
                text_pos = raw.astype(np.int64)
            except (TypeError, ValueError):
                raise InputError(f"model {name!r}: text positions must be whole numbers", params=("name",)) from None
            if text_pos.shape != (m,):
                raise InputError(f"model {name!r}: text positions and log-likelihoods differ in length", params=("name",))
            if m and (text_pos.min() < 0 or text_pos.max() >= self.n_texts):
                raise InputError(f"model {name!r}: text positions outside 0..{self.n_texts - 1}", params=("name",))
            if len(np.unique(text_pos)) != m:
                raise InputError(f"model {name!r}: a text is scored twice", params=("name",))
        if m == 0:
            raise InputError(f"model {name!r}: no log-likelihoods to store", params=("name",))
        bad = ~np.isfinite(loglik)
        if bad.any():
            raise InputError(
                f"model {name!r} has {int(bad.sum())} non-finite log-likelihoods (NaN/inf), "
                f"first at text position {int(text_pos[bad][0])}; nothing was stored for it", params=("name", "text_pos")
            )
        huge = np.abs(loglik) >= MAX_ABS_LOGLIK
        if huge.any():
            i = int(np.flatnonzero(huge)[0])
            raise InputError(
                f"model {name!r} has a log-likelihood of {loglik[i]:.3g} at text position {int(text_pos[i])}: "
                f"magnitudes of {MAX_ABS_LOGLIK:.0e} or more overflow when squared; these are not log-likelihoods "
                "(check the file's units and columns)", params=("name", "loglik", "text_pos")
            )
        pos = loglik > 0
        if pos.any():
            i = int(np.flatnonzero(pos)[0])
            positive.append((name, int(pos.sum()), int(text_pos[i]), float(loglik[i])))
        if n_tokens is None:
            n_tokens = np.full(m, -1)
        else:
            n_tokens = np.asarray(n_tokens)
            if n_tokens.shape != (m,):
                raise InputError(f"model {name!r}: {n_tokens.shape} token counts for {m} log-likelihoods", params=("name", "n_tokens"))
            if n_tokens.dtype.kind == "f" and not np.isfinite(n_tokens).all():
                raise InputError(f"model {name!r}: token counts must be whole numbers (found NaN/inf)", params=("name",))
            if len(n_tokens) and (n_tokens.min() < -1 or n_tokens.max() > np.iinfo(np.int32).max):
                raise InputError(f"model {name!r}: token counts must lie in 0..{np.iinfo(np.int32).max}", params=("name",))
        truncated = np.zeros(m, bool) if truncated is None else np.asarray(truncated, bool)
        if truncated.shape != (m,):
            raise InputError(f"model {name!r}: {truncated.shape} truncation flags for {m} log-likelihoods", params=("name", "truncated"))
        rec = {
            "convention": "reference",
            "scorer": "import",
            **(record or {}),
            "model": name,
            "text_set_id": self.text_set_id,
            "n_texts": self.n_texts,
            "n_scored": int(m),
            "n_truncated": int(truncated.sum()),
            "added_at": now_iso(),
            "added_ns": time.time_ns(),
            "lmmap_version": __version__,
        }
        if rec.get("convention") not in CONVENTIONS:
            raise InputError(
                f"model {name!r}: convention {rec.get('convention')!r} is not one of {', '.join(CONVENTIONS)}", params=("name",)
            )
        order = np.argsort(text_pos, kind="stable")
        table = pa.table(
            {
                "text_pos": pa.array(text_pos[order], pa.int32()),
                "loglik": pa.array(loglik[order], pa.float64()),
                "n_tokens": pa.array(n_tokens[order].astype(np.int64), pa.int32()),
                "truncated": pa.array(truncated[order], pa.bool_()),
            },
            schema=VECTOR_SCHEMA,
        )
        return table.replace_schema_metadata({RECORD_KEY: json.dumps(rec).encode()})


    def write_models(self, vectors: list[dict], replace: bool = False, metadata: pd.DataFrame | None = None) -> list[str]:
        """Store several models at once (and ``metadata`` rows for them); all or nothing.

        Each item has ``name`` and ``loglik`` and optionally ``n_tokens``,
        ``truncated``, ``text_pos`` (positions in the text set when only some
        texts were scored), ``record`` (SPEC §2 fields) and ``extends``. An
        item with ``extends`` (the ``added_ns`` of the stored version whose
        rows it already holds, as ``vectors(name).attrs["added_ns"]`` gives,
        or None for a model not stored when it was scored) adds texts to a
        model: if another process stored a version of it meanwhile, the rows
        of that version the item lacks are merged in under the commit's lock
        (so two processes extending one model never lose each other's
        texts), provided it was scored under the same ``settings_key``;
        otherwise :class:`ModelExistsError` is raised. Everything is
        validated first; the files are staged and published in one journalled
        commit (the backend's), so after a crash the store holds all of
        them or none. Positive log-likelihoods are stored with an
        :class:`LmmapWarning` (real texts have log-likelihoods ≤ 0).
        """
        names = [check_model_name(v.get("name")) for v in vectors]
        merging = {v["name"]: v["extends"] for v in vectors if "extends" in v}
        return self.write_model_batches(names, [vectors], replace=replace, metadata=metadata, _merging=merging)

    def write_model_batches(self, names, batches, replace: bool = False, metadata: pd.DataFrame | None = None,
                            progress=None, *, _merging: dict | None = None) -> list[str]:
        """Store models that come batch by batch, all in one change: what :meth:`write_models` does, with
        memory bounded by a batch (``lmmap import`` streams a large NPZ this way).

        ``names``: every model the batches hold, in their order (checked against the store before any
        batch is read); ``batches``: an iterable of lists of items as :meth:`write_models` takes. Each batch
        is validated and staged as it comes (with its rows of the consolidated matrix); nothing is published
        until the last one is, so an error or a kill in any batch leaves the store as it was.
        ``progress``: ``callable(Step)``, told of each model staged.
        """
        from lmmap.progress import Tracker

        merging = _merging or {}
        names = [check_model_name(n) for n in names]
        if not names:
            raise InputError("no models to store", params=("vectors",))
        seen = set()
        for n in names:
            if n in seen:
                raise InputError(f"duplicate model name {n!r}: each model must appear once", params=("vectors",))
            seen.add(n)
        meta = None
        if metadata is not None and len(metadata):
            meta = _normalise_metadata(metadata)
            _metadata_table(_merge_metadata(self.metadata(), meta))  # a clash is found before anything is written
        plain = [n for n in names if n not in merging]
        with self._shared():
            early = self._scan()[0]  # refused early, before the slow writing; again at commit
        if not replace:
            self._refuse_clash(plain, early)
        self._refuse_overwrite(names, early)
        kept = self._matrix_kept(early, len(names))
        keys = {n: self._model_key(n) for n in names}
        positive: list = []
        rows: dict[str, dict] = {}
        extending: dict[str, pa.Table] = {}  # tables of models that extend a stored one: merged again at commit
        tx = self.storage.begin()
        try:
            with Tracker(progress, "staging models", total=len(names), unit="models") as tracker:
                for batch in batches:
                    batch = list(batch)
                    tables = {check_model_name(v.get("name")): self._vector_table(
                        v["name"], v["loglik"], v.get("n_tokens"), v.get("truncated"), v.get("text_pos"),
                        v.get("record"), positive) for v in batch}
                    for n, t in tables.items():
                        if n not in seen or n in rows or len(tables) < len(batch):
                            raise InputError(f"model {n!r} is not one of the names given, or comes twice",
                                             params=("batches",))
                        if n in merging:
                            extending[n] = t
                    # Parquet encoding releases the GIL (and an object store's uploads wait on the network).
                    parallel_map(lambda n: tx.stage_table(tables[n], keys[n]), list(tables), workers=4)
                    rows.update(self._stage_rows(tx, {n: (keys[n], t) for n, t in tables.items() if n not in merging},
                                                 kept))
                    tracker.advance(len(tables))
            if len(rows) + len(extending) != len(names):
                lacking = [n for n in names if n not in rows and n not in extending]
                raise InputError(f"the batches lack {len(lacking)} of the models named, e.g. {lacking[0]!r}",
                                 params=("batches",))
            if positive:
                name, count, pos, value = positive[0]
                more = f" (and {len(positive) - 1} other model(s))" if len(positive) > 1 else ""
                warnings.warn(
                    f"model {name!r} has {count} positive log-likelihood(s), e.g. {value:.4g} at text position {pos}"
                    f"{more}; log-likelihoods of real texts are ≤ 0 — stored anyway, check the file's sign",
                    LmmapWarning,
                    stacklevel=3,
                )

            def check_and_stage(tx) -> None:
                found, _, _ = self._scan()
                if not replace:
                    self._refuse_clash(plain, found)
                final = {}
                for n, table in extending.items():
                    if n in found and found[n][1].get("added_ns") != merging[n]:
                        # stored by another process since this one read it: keep that version's other texts
                        table = self._merged(table, *found[n])
                    tx.stage_table(table, keys[n])  # as given again after a try that lost the commit
                    final[n] = (keys[n], table)
                self._refuse_overwrite(names, found)
                for n in names:
                    if n in found and found[n][0] != self._model_key(n):
                        tx.delete(found[n][0])  # a 0.1.0-named file of the model being replaced
                if meta is not None:
                    self._stage_metadata(tx, meta)
                self._stage_matrix(tx, found, {**rows, **self._stage_rows(tx, final, kept)}, kept=kept)

            self._committed(tx, check_and_stage)
        finally:
            if not tx.committed:
                tx.close()
        return names

    def _merged(self, table: pa.Table, key: str, stored: dict) -> pa.Table:
        """``table`` (a model's new vector) with the rows of its stored version at ``key`` it lacks."""
        rec = json.loads(table.schema.metadata[RECORD_KEY])
        name = rec["model"]
        if stored.get("settings_key") != rec.get("settings_key"):
            raise ModelExistsError(
                f"model {name!r} was stored by another process meanwhile under other settings; nothing was stored "
                "(pass {replace=True} to overwrite it)", [name])
        old = self._columns(key, VECTOR_SCHEMA.names)
        keep = old.filter(pa.array(~np.isin(old.column("text_pos").to_numpy(), table.column("text_pos").to_numpy())))
        merged = pa.concat_tables([table.replace_schema_metadata(None), keep]).sort_by("text_pos")
        rec["n_scored"] = merged.num_rows
        rec["n_truncated"] = int(np.count_nonzero(merged.column("truncated").to_numpy(zero_copy_only=False)))
        return merged.replace_schema_metadata({RECORD_KEY: json.dumps(rec).encode()})

    def _refuse_overwrite(self, names, found) -> None:
        """Refuse to publish a model onto a file that holds another model (which would vanish unnoticed)."""
        held = {k: m for m, (k, _) in found.items() if m not in names}
        for n in names:
            other = held.get(self._model_key(n))
            if other is not None:
                raise StoreError(f"{self.storage.where(self._model_key(n))} holds model {other!r}, not {n!r}; nothing "
                                 "was stored: `lmmap doctor --repair` gives that file its model's name, then run this "
                                 "again")

    def _refuse_clash(self, names, found) -> None:
        clash = [n for n in names if n in found]
        if clash:
            raise ModelExistsError(
                f"{len(clash)} model(s) already in the store, e.g. {clash[0]!r}; "
                "pass {replace=True} to overwrite them; nothing was stored",
                clash,
            )

    def write_model(self, name: str, loglik, *, n_tokens=None, truncated=None, text_pos=None, record=None, replace=False) -> str:
        """Store one model's vector atomically (see ``write_models``)."""
        vec = dict(name=name, loglik=loglik, n_tokens=n_tokens, truncated=truncated, text_pos=text_pos, record=record)
        return self.write_models([vec], replace=replace)[0]

    def remove_models(self, names) -> list[str]:
        """Remove models and their metadata rows in one all-or-nothing change; raise naming any not in the store."""
        names = list(dict.fromkeys(_name_type(n) for n in names))  # a stored name may predate today's rules
        if not names:
            raise InputError("name at least one model to remove", params=("names",))

        def check_and_stage(tx) -> None:
            found, _, dups = self._scan()
            missing = [n for n in names if n not in found]
            if missing:
                raise StoreError(
                    f"not in the store: {', '.join(map(repr, missing[:5]))}"
                    f"{' …' if len(missing) > 5 else ''}; nothing was removed (`lmmap models` lists what is)"
                )
            for n in names:
                tx.delete(found[n][0])
            for k in dups:
                try:
                    if self._footer(k)[0].get("model") in names:
                        tx.delete(k)
                except (LmmapError, OSError, pa.ArrowException):
                    pass
            for n in names:
                for kind in STATE_KINDS:
                    state = self._state_key(kind, n)
                    if self.storage.what(state) != "missing":
                        tx.delete(state)
            md = self.metadata()
            if len(md) and md.index.isin(names).any():
                tx.stage_table(_metadata_table(md[~md.index.isin(names)]), "metadata.parquet")
            self._stage_matrix(tx, found, removed=set(names))

        tx = self.storage.begin()
        try:
            self._committed(tx, check_and_stage)
        finally:
            if not tx.committed:
                tx.close()
        for n in names:
            self.clear_checkpoint(n)
        return names

    def remove_model(self, name: str) -> None:
        self.remove_models([name])

    def vectors(self, name: str) -> pd.DataFrame:
        """One model's stored rows: text_pos, loglik, n_tokens, truncated."""
        with self._shared():
            key = self._existing_key(name)
            if key is None:
                raise self._not_in_store(name)
            rec, footer = self._footer(key, self.n_texts)
            df = self._columns(key, VECTOR_SCHEMA.names, footer).to_pandas()
        # which stored version these rows are: a writer extending them merges with a newer one (write_models)
        df.attrs["added_ns"] = rec.get("added_ns")
        return df

    def models_with_texts(self, text_pos) -> list[str]:
        """The models scored on every text at ``text_pos`` (all complete models, and partial ones that cover them)."""
        need = np.unique(np.asarray(text_pos, dtype=np.int64))
        out = []
        for name, rec in self.records().items():
            if rec["n_scored"] == self.n_texts:
                out.append(name)
            elif np.isin(need, self.vectors(name)["text_pos"].to_numpy()).all():
                out.append(name)
        return out

    def matrix(self, models=None, text_pos=None, allow_mixed: bool = False,
               dtype="float64") -> tuple[list[str], np.ndarray]:
        """``(names, L)``: the K×n log-likelihood matrix of ``models`` on ``text_pos`` (default: all N).

        Each model file's footer is read once, under one hold of the store's
        read lock, so the matrix is one consistent state of the store.

        Parameters
        ----------
        models : list of str, optional
            ``None`` takes every model that has all the texts asked for, in the
            order they were added; models scored on only some of them are left
            out with one :class:`LmmapWarning` naming them (``lmmap score NAME``
            completes one). Named models must have all the texts.
        text_pos : array_like of int, optional
            Positions in the text set (0..N-1); default all N.
        allow_mixed : bool
            Allow models scored under different conventions (SPEC §2).
        dtype : ``"float64"`` (default: the model files' values), ``"float32"`` (from the consolidated matrix,
            :mod:`lmmap.data.store.matrix`, when it can answer) or ``"auto"``: float32 from the consolidated
            matrix for a matrix of :data:`~lmmap.data.store.matrix.MATRIX_MIN_ENTRIES` or more, float64 below.
            A missing or stale consolidated matrix is rebuilt when a large matrix is read.

        Returns
        -------
        names : list of str
        L : ndarray, K×n float64 (or float32, see ``dtype``)
            ``L[i, s] = log p_i(x_s)``.

        Raises
        ------
        StoreError
            A model is missing or lacks texts; conventions differ (unless ``allow_mixed``).
        """
        if dtype not in ("float64", "float32", "auto"):
            raise InputError(f"dtype must be 'float64', 'float32' or 'auto', got {dtype!r}", params=("dtype",))
        if dtype != "float64":
            got = self.consolidated(models, text_pos, allow_mixed)
            if got is not None and (dtype == "float32" or got[1].size >= self._min_entries()):
                return got
        with self._shared():
            names, L = self._matrix(models, text_pos, allow_mixed)
        if dtype == "float64" or (dtype == "auto" and L.size < self._min_entries()):
            return names, L
        if models is None and text_pos is None and L.size >= self._min_entries():
            self._rebuild_quietly()
        return names, L.astype(np.float32)

    def _min_entries(self) -> int:
        from lmmap.data.store import matrix as settings  # read at call time: tests lower the threshold

        return settings.MATRIX_MIN_ENTRIES

    def _rebuild_quietly(self) -> None:
        """Rebuild a missing or stale consolidated matrix after a slow read, if the store can be written."""
        index = self._matrix_index()
        if index is not None and self._index_lists_files(index):
            return
        try:
            self.rebuild_matrix()
        except (OSError, StoreError) as exc:
            warnings.warn(f"the consolidated matrix of {self.path} is missing or out of date and could not be "
                          f"rebuilt ({exc}); large maps read every model file until `lmmap doctor --repair` "
                          "rebuilds it", LmmapWarning, stacklevel=3)


    def _matrix(self, models, text_pos, allow_mixed):
        if not self._size_checked:
            self.texts  # a damaged text set is named here, before arrays of store.json's N are made
        footers: dict = {}
        found, unreadable, _ = self._scan(footers)
        self._note_unreadable(unreadable, 3)
        recs = {n: rec for n, (_, rec) in found.items()}
        want = np.arange(self.n_texts) if text_pos is None else np.asarray(text_pos, dtype=np.int64)
        if len(want) and (want.min() < 0 or want.max() >= self.n_texts):
            raise InputError(f"text positions must lie in 0..{self.n_texts - 1}", params=("text_pos",))
        positions: dict[str, np.ndarray] = {}

        def covers(n) -> bool:
            if int(recs[n].get("n_scored", -1)) == self.n_texts:
                return True
            if n not in positions:
                key = found[n][0]
                positions[n] = self._columns(key, ["text_pos"], footers.get(key)).column("text_pos").to_numpy()
            return bool(np.isin(want, positions[n]).all())

        if models is None:
            ordered = sorted(recs, key=lambda n: (recs[n].get("added_ns", 0), n))
            names = [n for n in ordered if covers(n)]
            left = [n for n in ordered if n not in set(names)]
            if left:
                shown = ", ".join(f"{n!r} ({recs[n].get('n_scored')} of {self.n_texts} texts)" for n in left[:3])
                warnings.warn(
                    f"left out {len(left)} partial model(s) that lack some of the texts: {shown}"
                    f"{' …' if len(left) > 3 else ''}; `lmmap score NAME` scores only the missing texts",
                    LmmapWarning,
                    stacklevel=3,
                )
            if not names and left:
                raise StoreError(
                    f"no model in the store {self.path} has all {len(want)} texts asked for; "
                    "complete one with `lmmap score NAME`"
                )
        else:
            names = list(models)
            missing = [m for m in names if m not in recs]
            if missing:
                raise StoreError(f"not in the store: {', '.join(map(repr, missing[:5]))}; `lmmap models` lists what is")
        if not names:
            raise StoreError(f"the store {self.path} holds no models yet; `lmmap import` or `lmmap score` adds some")
        if not allow_mixed:
            check_same_convention({n: recs[n] for n in names})
        L = np.empty((len(names), len(want)), dtype=np.float64)

        def _load(i):
            rec = recs[names[i]]
            key = found[names[i]][0]
            if rec["n_scored"] == self.n_texts and text_pos is None:
                # files are sorted by text_pos and complete: the positions are 0..N-1
                L[i] = self._columns(key, ["loglik"], footers.get(key)).column("loglik").to_numpy()
                return
            t = self._columns(key, ["text_pos", "loglik"], footers.get(key))
            pos = t.column("text_pos").to_numpy()
            ll = t.column("loglik").to_numpy()
            lookup = np.full(self.n_texts, -1, dtype=np.int64)
            lookup[pos] = np.arange(len(pos))
            at = lookup[want]
            if (at < 0).any():
                raise StoreError(
                    f"model {names[i]!r} was scored on {len(pos)} of the {self.n_texts} texts and lacks "
                    f"{int((at < 0).sum())} that this operation needs; `lmmap score {names[i]}` scores only the "
                    "missing texts"
                )
            L[i] = ll[at]

        parallel_map(_load, range(len(names)), workers=_IO_WORKERS)
        return names, L

    # -- metadata ---------------------------------------------------------------


    # -- metadata ---------------------------------------------------------------
    def metadata(self) -> pd.DataFrame:
        """User metadata (model_type, family, ...) indexed by model name; empty if none was given."""
        with self._shared():
            if self.storage.what("metadata.parquet") == "missing":
                return pd.DataFrame(index=pd.Index([], name="model"))
            problem = self._metadata_problem()
            if problem:
                raise StoreError(f"{self.storage.where('metadata.parquet')}: {problem}; `lmmap doctor --repair` moves "
                                 "it aside (then give the metadata again with `lmmap metadata`)")
            with self.storage.open("metadata.parquet") as src:
                return pq.read_table(src).to_pandas().set_index("model")

    def _metadata_problem(self) -> str | None:
        """Why ``metadata.parquet`` cannot be used (None when it can)."""
        what = self.storage.what("metadata.parquet")
        if what == "a symbolic link":
            return "a symbolic link, never followed"
        if what is not None:
            return f"{what}, not a plain file, never opened"
        try:
            with self.storage.open("metadata.parquet") as src:
                schema = pq.read_schema(src)
        except (OSError, pa.ArrowException, ValueError) as exc:
            return f"not a readable Parquet file ({type(exc).__name__})"
        if "model" not in schema.names:
            return "no 'model' column"
        return None

    def set_metadata(self, df: pd.DataFrame) -> None:
        """Merge ``df`` (a ``model`` column or index, any other columns) into the stored metadata.

        A column whose values mix numbers and text (``size`` 7 in the store,
        ``7B`` given) is stored as text, with an :class:`LmmapWarning`.
        """
        new = _normalise_metadata(df)
        tx = self.storage.begin()
        try:
            self._committed(tx, lambda tx: self._stage_metadata(tx, new))
        finally:
            if not tx.committed:
                tx.close()

    def _stage_metadata(self, tx, new: pd.DataFrame) -> None:
        """Stage the stored metadata merged with ``new`` in ``tx`` (call under the exclusive lock)."""
        tx.stage_table(_metadata_table(_merge_metadata(self.metadata(), new)), "metadata.parquet")

    def merge_metadata(self, df: pd.DataFrame, *, replace: bool = False, allow_unknown: bool = False,
                       dry_run: bool = False, source: str = "metadata") -> dict:
        """Merge ``df`` (a ``model`` column or index, any other columns) into the stored metadata in one change.

        Each row is matched to the stored row of its model: its values win, its empty cells keep what is
        stored, new columns are added and models and columns it does not name are kept. ``replace``: ``df``
        becomes the whole metadata table instead. A model that is not in the store is refused (naming the
        closest stored names) unless ``allow_unknown``; then its row is kept. ``dry_run``: check and count,
        change nothing. ``source`` names ``df`` in messages (its file).

        Returns what changed: ``models`` (rows given), ``new_rows`` (models without metadata before),
        ``new_columns``, ``changed`` (stored values that now differ, empty ones included), ``dropped_columns``
        and ``dropped_rows`` (``replace`` only), ``unknown`` (models not in the store), ``columns``.
        """
        new = _normalise_metadata(df)
        summary: dict = {}

        def plan() -> pd.DataFrame:
            found, _, _ = self._scan()
            unknown = [m for m in new.index if m not in found]
            if unknown and not allow_unknown:
                import difflib

                stored = list(found)
                shown = []
                for m in unknown[:5]:
                    close = difflib.get_close_matches(m, stored, n=1, cutoff=0.6)
                    if not close:
                        tail = m.rsplit("/", 1)[-1].lower()
                        close = [s for s in stored if s.rsplit("/", 1)[-1].lower() == tail][:1]
                    shown.append(f"{m!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
                more = f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else ""
                raise InputError(
                    f"{source}: {len(unknown)} model(s) not in the store {self.path}: {', '.join(shown)}{more}; "
                    "nothing was changed — fix the names (`lmmap models` lists the store's), or keep their rows "
                    "anyway with {allow_unknown=True}", params=("allow_unknown",))
            old = self.metadata()
            merged = new if replace else _merge_metadata(old, new)
            shared = [c for c in merged.columns if c in old.columns]
            kept = [m for m in merged.index if m in old.index]
            before, after = old.loc[kept, shared].astype(object), merged.loc[kept, shared].astype(object)
            differs = (before.isna() != after.isna()) | (before.notna() & after.notna() & (before != after))
            summary.update(
                models=len(new), unknown=unknown, columns=[str(c) for c in new.columns],
                new_rows=[m for m in new.index if m not in old.index],
                new_columns=[c for c in merged.columns if c not in old.columns],
                changed=int(differs.to_numpy().sum()),
                dropped_columns=[c for c in old.columns if c not in merged.columns],
                dropped_rows=[m for m in old.index if m not in merged.index],
            )
            return merged

        if dry_run:
            with self._shared():
                _metadata_table(plan())  # a column that would be stored as text says so now
            return summary
        tx = self.storage.begin()
        try:
            self._committed(tx, lambda tx: tx.stage_table(_metadata_table(plan()), "metadata.parquet"))
        finally:
            if not tx.committed:
                tx.close()
        return summary

    # -- per-model state of analyses ------------------------------------------------
    def _state_key(self, kind: str, name: str) -> str:
        if kind not in STATE_KINDS:
            raise InputError(f"state kind must be one of {', '.join(STATE_KINDS)}, got {kind!r}", params=("kind",))
        return self.storage.guard(f"{kind}/{model_stem(name)}.json")

    def save_state(self, kind: str, name: str, state: dict) -> None:
        """Keep ``state`` (JSON) for model ``name`` in ``STORE/<kind>/``, as one change of the store.

        ``lmmap rm`` removes it with the model; ``lmmap doctor`` reports the
        state of a model that is not in the store.
        """
        data = json.dumps({**state, "model": name}, indent=2).encode()
        with self._transaction() as tx:
            tx.stage_bytes(data, self._state_key(kind, name))

    def load_state(self, kind: str, name: str) -> dict | None:
        """The state kept for ``name`` (None when there is none, or it is not a JSON object)."""
        key = self._state_key(kind, name)
        try:
            if self.storage.what(key) is not None:
                return None  # missing, or a link, FIFO or folder: never opened (`doctor` reports it)
            state = json.loads(self.storage.read(key, _MAX_INFO))
        except (OSError, ValueError, RecursionError):
            return None
        return state if isinstance(state, dict) else None

    def _orphan_states(self, found) -> list[str]:
        """State files whose model is not in the store (a run killed before its first store, or an old rm)."""
        stems = {model_stem(n) for n in found}
        out = []
        for kind in STATE_KINDS:
            out += [f"{kind}/{n}" for n in self.storage.list(kind)
                    if n.endswith(".json") and n[: -len(".json")] not in stems and self.storage.what(f"{kind}/{n}") is None]
        return out

    # -- checks -----------------------------------------------------------------
    def check(self, repair: bool = False):
        """Look for leftovers of killed processes and other damage; ``repair=True`` fixes what it finds.

        What is looked for and how it is fixed depends on where the store
        lives: :func:`lmmap.data.store.doctor.check_local` for a folder,
        :meth:`lmmap.data.storage.objects.ObjectStorage.doctor` for object storage.
        """
        from lmmap.data.store.doctor import StoreReport

        return self.storage.doctor(self, StoreReport(self.path), repair)

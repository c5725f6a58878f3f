"""``lmmap doctor``: what killed processes and damage left in a store, and the repair.

:class:`StoreReport` is what every backend fills; :func:`check_local` looks at
a folder (:mod:`lmmap.data.storage.local`), and object storage has its own
(:meth:`lmmap.data.storage.objects.ObjectStorage.doctor`). What both share —
model files that cannot be read or are a second file of a model, old-style
names, orphan checkpoints and state, a damaged text set or metadata — is found
by :func:`common_findings`.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from lmmap.data.storage.local import _is_plain, _listdir, _what
from lmmap.exceptions import LmmapWarning, StoreError


@dataclass
class StoreReport:
    """What :meth:`Store.check` found (and, with ``repair=True``, fixed)."""

    store: Path | str
    stray_files: list[str] = field(default_factory=list)
    staging: list[str] = field(default_factory=list)
    orphan_checkpoints: list[str] = field(default_factory=list)
    old_names: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    foreign_journals: list[str] = field(default_factory=list)
    obstacles: list[str] = field(default_factory=list)
    damaged_files: list[str] = field(default_factory=list)
    orphan_states: list[str] = field(default_factory=list)
    not_plain: list[str] = field(default_factory=list)
    matrix: list[str] = field(default_factory=list)
    repaired: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems()

    def problems(self) -> list[str]:
        out = []
        for label, items in (
            ("leftover temporary file", self.stray_files),
            ("unfinished change in .staging", self.staging),
            ("orphan checkpoint directory (its texts are stored)", self.orphan_checkpoints),
            ("model file with a 0.1.0-style name", self.old_names),
            ("unreadable model file", self.unreadable),
            ("second file for a model", self.duplicates),
            ("journal that lmmap did not write, not carried out", self.foreign_journals),
            ("not a folder of the store, never followed", self.obstacles),
            ("damaged store file", self.damaged_files),
            ("state of a model not in the store (a run killed before it stored anything)", self.orphan_states),
            ("not a plain file where lmmap keeps one, never opened", self.not_plain),
            ("consolidated matrix to rebuild", self.matrix),
        ):
            out.extend(f"{label}: {item}" for item in items)
        return out



def common_findings(store, rep: StoreReport):
    """Fill the findings every backend shares; returns ``(found, unreadable, dups, old, meta_problem)``."""
    found, unreadable, dups = store._scan(use_index=False)
    rep.unreadable = [f"{k} ({store._why.get(k, 'unreadable')})" for k in unreadable]
    rep.duplicates = list(dups)
    old = [(n, k) for n, (k, _) in found.items() if k != store._model_key(n)]
    rep.old_names = [f"{k} (model {n!r})" for n, k in old]
    rep.orphan_checkpoints = list(store._orphan_checkpoints(found))
    rep.orphan_states = list(store._orphan_states(found))
    meta_problem = store._metadata_problem() if store.storage.what("metadata.parquet") != "missing" else None
    try:
        store._texts = None
        store.texts
    except StoreError as exc:
        rep.damaged_files.append(str(exc).replace(f"{store.path}/", ""))
    if meta_problem:
        rep.damaged_files.append(f"metadata.parquet: {meta_problem}")
    if not unreadable and not dups:  # otherwise the repair moves files first, and the matrix follows
        rep.matrix = store._matrix_problems(found)
    return found, unreadable, dups, old, meta_problem


def repair_matrix(store, rep: StoreReport) -> None:
    """Rebuild the consolidated matrix when the store needs one and it was missing, stale or wrong (after the
    other repairs, which may have moved or renamed model files)."""
    found, unreadable, dups = store._scan(use_index=False)
    if rep.matrix or (rep.unreadable or rep.duplicates or rep.old_names) and store._matrix_problems(found):
        n_complete = sum(int(r["n_scored"]) == store.n_texts for _, r in found.values())
        if store._wanted(n_complete):
            store.rebuild_matrix()
        elif store._matrix_files():
            with store._transaction() as tx:
                store._stage_drop(tx)


def check_local(store, rep: StoreReport, repair: bool) -> StoreReport:
    """Look for leftovers of killed processes and other damage in a store folder; ``repair=True`` fixes them.

    Reports: stray temporary files, unfinished changes in ``.staging``
    (a journalled one is rolled forward, others removed), journals lmmap
    did not write (never carried out; moved to ``STORE/damaged/``), store
    folders that are files or symbolic links (moved aside), orphan
    checkpoint chunks (their texts are stored under the same settings),
    model files with 0.1.0-style names (renamed), unreadable model files
    and symbolic links in ``models/`` (moved to ``damaged/``), second files
    for one model (the older is moved to ``damaged/``), a damaged
    ``metadata.parquet`` (moved to ``damaged/``), and links, FIFOs or
    folders where lmmap keeps a plain file (state files, checkpoint chunks,
    model files: moved to ``damaged/``, those in the way of a journal
    before it is rolled forward). It looks before it rolls anything
    forward (the caller turns the roll-forward off). Every move stays inside
    the store and never follows a symbolic link.
    """
    storage = store.storage
    root = store.path
    with store._exclusive() if repair else store._shared():
        obstacles = storage.obstacles()
        partial = root / "partial"
        links = [] if partial in obstacles else [q for q in _listdir(partial) if q.is_symlink()]
        rep.obstacles = [f"{p.relative_to(root)} ({'a symbolic link' if p.is_symlink() else 'a file'})"
                         for p in [*obstacles, *links]]
        # links, FIFOs and folders where lmmap keeps plain files (state files, checkpoint chunks) and links where
        # it keeps checkpoint folders: never opened, so that a command neither follows nor blocks on one;
        # moved aside by repair (the messages that refuse them say so)
        odd = []
        for d in [] if partial in obstacles else _listdir(partial):
            if d.is_symlink() or not d.is_dir():
                continue
            for key in _listdir(d):
                if key.is_symlink():
                    odd.append(key)
                elif key.is_dir():
                    odd += [c for c in _listdir(key) if c.name.startswith("chunk-") and not _is_plain(c)]
        from lmmap.data.storage.base import STATE_KINDS

        for kind in STATE_KINDS:
            if root / kind not in obstacles:
                odd += [q for q in _listdir(root / kind) if not _is_plain(q)]
        rep.not_plain = [f"{p.relative_to(root)} ({_what(p)})" for p in odd]
        rep.stray_files = [str(p.relative_to(root)) for p in storage.stray_tmp_files()]
        states = storage.staging_state()
        foreign = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LmmapWarning)  # reported here instead
            for p, state in states:
                if state == "committed" and storage.journal(p) is None:
                    foreign.append(p)
        rep.foreign_journals = [str(p.relative_to(root)) for p in foreign]
        rep.staging = [f"{p.relative_to(root)} ({state})" for p, state in states
                       if state != "live" and p not in foreign]
        found, unreadable, dups, old, meta_problem = common_findings(store, rep)
        if not repair:
            return rep
        meta = root / "metadata.parquet"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for p in obstacles:  # a file or link where a folder belongs: moved aside, never followed
            os.replace(p, p.with_name(f"{p.name}.moved-aside-{stamp}-{uuid.uuid4().hex[:6]}"))
        (root / "models").mkdir(exist_ok=True)
        damaged = root / "damaged"

        def aside(p: Path) -> None:
            damaged.mkdir(exist_ok=True)
            dest = damaged / p.name
            if os.path.lexists(dest):
                dest = damaged / f"{p.name}.{stamp}-{uuid.uuid4().hex[:6]}"
            os.replace(p, dest)

        # A folder, link or FIFO where a model file or metadata.parquet belongs is never lmmap's: moved
        # aside before the roll-forward, which could not rename a file over a folder and would fail forever.
        in_the_way = [p for p in [*(root / k for k in unreadable), meta] if os.path.lexists(p) and not _is_plain(p)]
        for p in [*foreign, *links, *odd, *in_the_way]:
            aside(p)
        storage.rejected.clear()
        storage.recover()
        # scanned again: rolling a change forward may have removed or renamed what was found above
        found, unreadable, dups = store._scan(use_index=False)
        for k in [*unreadable, *dups]:
            aside(root / k)
        if meta_problem and os.path.lexists(meta):
            aside(meta)
        old = [(n, k) for n, (k, _) in found.items() if k != store._model_key(n)]
        if old:
            with store._transaction() as tx:
                for n, k in old:
                    tx.rename(k, store._model_key(n))
        stale = store._orphan_states(found)
        if stale:
            with store._transaction() as tx:
                for k in stale:
                    tx.delete(k)
        for k in store._orphan_checkpoints(found):
            p = root / k
            shutil.rmtree(p, ignore_errors=True)
            if p.parent.name != "partial" and p.parent.exists() and not any(p.parent.iterdir()):
                p.parent.rmdir()
        repair_matrix(store, rep)
        rep.repaired = True
    return rep

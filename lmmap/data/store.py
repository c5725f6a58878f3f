"""The log-likelihood store: a directory anyone can read with pyarrow, DuckDB or pandas.

Layout::

    STORE/
      store.json                  format version and the text set's identity
      texts.parquet               the text set (index, text, source, ...)
      models/<file>.parquet       one file per model: text_pos (0..N-1), loglik,
                                  n_tokens, truncated; the model's record (SPEC §2)
                                  as JSON in the schema metadata under b"lmmap"
      metadata.parquet            user metadata: a `model` column and any others
      partial/<file>/<key>/       scoring checkpoints (resumable scoring)
      .staging/<txid>/            a change being written (see "Transactions")

**File names.** A model's name is in its record; the file name is derived from
it by :func:`model_filename` and is only a place to keep it: lower-case ASCII
letters, digits, ``-``, ``_`` and ``.`` stay, every other character is
percent-encoded (UTF-8), a leading ``.`` is encoded too (no hidden files). A
name with an upper-case letter, or one whose encoding would exceed 200 bytes,
gets a readable (possibly shortened) encoding followed by ``~`` and 16 hex
digits of the name's SHA-256 — so names that differ only by case never share
a file even on a case-insensitive file system, and every file name stays far
under the 255-byte limit. Listing reads names from the records, never from
file names, and lists every ``*.parquet`` file in ``models/`` (dot-files
included: stores written by lmmap 0.1.0 percent-encoded names without these
rules, e.g. ``.%2Fmy-checkpoint.parquet``; they are read as they are, and
``lmmap doctor --repair`` renames them).

**Transactions.** Every change (import, score, ``--replace``, ``rm``,
metadata) is all or nothing, even if the process is killed at any moment. Its
files are written into ``.staging/<txid>/`` (the owning process holds an
``flock`` on ``.staging/<txid>/.lock`` while it lives); then, under the
store's exclusive lock on ``STORE/.lock``, a journal ``COMMIT`` listing the
renames and deletions is written and fsynced, the renames are done, and the
staging directory is removed. The next writer, or any ``Store(...)`` that
finds one, rolls a journalled transaction forward and removes staging
directories whose owner died before its journal was written (and stray
temporary files). Readers take the lock shared while they list and read, so
they see a change entirely or not at all. DuckDB reads all vectors at once:
``SELECT * FROM 'STORE/models/*.parquet'``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import hashlib
import json
import os
import shutil
import signal
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lmmap._version import __version__
from lmmap.exceptions import InputError, LmmapError, LmmapWarning, StoreError
from lmmap.data.atomic import atomic_path, atomic_write, fsync_dir, fsync_file
from lmmap.data.conventions import CONVENTIONS
from lmmap.data.texts import TextSet
from lmmap.parallel import parallel_map

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

_SAFE = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")
_MAX_STEM = 200  # bytes of an unshortened encoding; with ".parquet" well under 255
_PREFIX = 120  # bytes of readable prefix kept when a name is shortened
_HASH_HEX = 16
STAGING = ".staging"
COMMIT = "COMMIT"
# Threads reading model files: they wait on the disk, not the CPU, so more than the cores.
_IO_WORKERS = 8


def _name_bytes(name: str) -> bytes:
    # surrogatepass: a lone surrogate is a legal Python str and must still get a file.
    return name.encode("utf-8", "surrogatepass")


def check_model_name(name) -> str:
    """``name`` if it can name a model (any non-empty string); an InputError otherwise."""
    if not isinstance(name, str):
        raise InputError(f"a model name must be a string, got {type(name).__name__} {name!r}")
    if not name:
        raise InputError("a model name cannot be empty; give the model a name")
    return name


def model_stem(name: str) -> str:
    """The file-name stem of model ``name`` (see the module docstring): never hidden, bounded, collision-free."""
    check_model_name(name)
    parts = []
    for ch in name:
        if ch in _SAFE:
            parts.append(ch)
        else:
            parts.append("".join(f"%{b:02X}" for b in _name_bytes(ch)))
    if parts[0] == ".":
        parts[0] = "%2E"
    stem = "".join(parts)
    has_upper = any("A" <= ch <= "Z" for ch in name)
    if not has_upper and len(stem) <= _MAX_STEM:
        return stem
    digest = hashlib.sha256(_name_bytes(name)).hexdigest()[:_HASH_HEX]
    if len(stem) > _PREFIX:
        cut = _PREFIX
        # never cut inside a %XX escape
        while "%" in stem[max(cut - 2, 0):cut]:
            cut -= 1
        stem = stem[:cut]
    return f"{stem}~{digest}"


def model_filename(name: str) -> str:
    """The file name of model ``name`` in ``models/`` (see :func:`model_stem`)."""
    return model_stem(name) + ".parquet"


def legacy_filename(name: str) -> str | None:
    """The file name lmmap 0.1.0 gave model ``name`` (None where it could not store it)."""
    if not name or name in (".", ".."):
        return None
    try:
        return quote(name, safe="-_.") + ".parquet"
    except UnicodeEncodeError:
        return None


def name_from_stem(stem: str) -> str | None:
    """The name a stem encodes, when it is not shortened (else None: read the record)."""
    if "~" in stem and len(stem.rsplit("~", 1)[1]) == _HASH_HEX:
        head = stem.rsplit("~", 1)[0]
        if len(head) >= _PREFIX - 2:
            return None
        stem = head
    return unquote(stem, errors="surrogatepass")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _write_durably(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path)
    fsync_file(path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stray_tmp(path: Path, any_age: bool) -> bool:
    """Whether a ``*.tmp`` file was left by a dead writer (``any_age``: no live writer puts one here)."""
    if any_age:
        return True
    parts = path.name.split(".")
    # .<name>.<pid>.<hex>.tmp (this version) — the writer is dead when its pid is
    if len(parts) >= 4 and parts[-3].isdigit():
        return not _pid_alive(int(parts[-3]))
    try:  # 0.1.0 names carry no pid: stale after an hour
        return time.time() - path.stat().st_mtime > 3600
    except FileNotFoundError:
        return False


class ModelExistsError(StoreError):
    """A model to be written without ``replace`` is already in the store (``.names``: which)."""

    def __init__(self, message: str, names, *, params=("replace",)):
        super().__init__(message, params=params)
        self.names = list(names)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with a sentence saying what was kept (``str(exc)``); the CLI prints it and exits 130."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@contextlib.contextmanager
def _signals_deferred():
    """Hold back Ctrl-C (and SIGTERM) while a journalled commit is applied; deliver it afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield []
        return
    pending: list[int] = []
    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            old[sig] = signal.signal(sig, lambda s, f: pending.append(s))
        except (ValueError, OSError):
            pass
    try:
        yield pending
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


class _Tx:
    """One change: files staged in ``.staging/<txid>/``, then published by a journalled commit."""

    def __init__(self, store: "Store"):
        self.store = store
        self.id = f"{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.dir = store.path / STAGING / self.id
        self.ops: list[list[str]] = []
        self._n = 0
        self.committed = False
        # Created under the store lock, so that a recovering process sees the directory and its
        # held lock together, never a directory whose lock is not taken yet.
        with store._exclusive():
            self.dir.mkdir(parents=True)
            self._lockf = open(self.dir / ".lock", "a+")
            fcntl.flock(self._lockf.fileno(), fcntl.LOCK_EX)

    def stage_path(self, dest: Path) -> Path:
        """A staging file that the commit renames to ``dest`` (the caller writes and fsyncs it)."""
        self._n += 1
        staged = self.dir / f"{self._n:06d}.parquet"
        self.ops.append(["rename", str(staged.relative_to(self.store.path)), str(dest.relative_to(self.store.path))])
        return staged

    def stage_table(self, table: pa.Table, dest: Path) -> None:
        """Write ``table`` to a staging file that the commit renames to ``dest``."""
        _write_durably(table, self.stage_path(dest))

    def delete(self, path: Path) -> None:
        self.ops.append(["delete", str(path.relative_to(self.store.path))])

    def commit(self) -> None:
        """Publish the staged files; the caller holds the store's exclusive lock."""
        journal = json.dumps({"txid": self.id, "ops": self.ops}).encode()
        with _signals_deferred() as pending:
            atomic_write(self.dir / COMMIT, journal)
            fsync_dir(self.dir)
            self.committed = True
            _apply(self.store.path, self.ops)
            self.close()
        if pending:
            raise Interrupted("the change was committed before the interruption took effect: it is complete in the store")

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        if not self._lockf.closed:
            self._lockf.close()


def _apply(root: Path, ops: list[list[str]]) -> None:
    """Carry out a journal; idempotent, so a killed commit can be applied again."""
    dirs = set()
    for op in ops:
        if op[0] == "rename":
            src, dst = root / op[1], root / op[2]
            if src.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
                dirs.add(dst.parent)
    for op in ops:
        if op[0] == "delete":
            (root / op[1]).unlink(missing_ok=True)
            dirs.add((root / op[1]).parent)
    for d in dirs:
        fsync_dir(d)


@dataclass
class StoreReport:
    """What :meth:`Store.check` found (and, with ``repair=True``, fixed)."""

    store: Path
    stray_files: list[str] = field(default_factory=list)
    staging: list[str] = field(default_factory=list)
    orphan_checkpoints: list[str] = field(default_factory=list)
    old_names: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
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
        ):
            out.extend(f"{label}: {item}" for item in items)
        return out


class Store:
    """A directory of log-likelihood vectors on one text set (see module docstring)."""

    def __init__(self, path: str | os.PathLike, recover: bool = True):
        self.path = Path(path)
        info_path = self.path / "store.json"
        if not info_path.is_file():
            raise StoreError(
                f"{self.path} is not an lmmap store (no store.json); create one with "
                "`lmmap init --texts TEXTS.jsonl` or Store.create()"
            )
        try:
            info = json.loads(info_path.read_text())
        except (ValueError, UnicodeDecodeError):
            raise StoreError(f"{info_path}: not valid JSON; is this an lmmap store?") from None
        if not isinstance(info, dict) or info.get("format") != STORE_FORMAT:
            raise StoreError(f"{info_path}: not an lmmap store file")
        if info.get("version", 0) > STORE_VERSION:
            raise StoreError(f"{self.path} was written by a newer lmmap (store version {info['version']}); upgrade lmmap")
        self.info = info
        self._texts: TextSet | None = None
        self._held = 0  # depth of this object's hold on the store lock (shared or exclusive)
        self._held_lock = threading.RLock()
        if recover:
            self._recover_if_needed()

    # -- creation -------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, texts: TextSet, exist_ok: bool = False) -> "Store":
        """A new store on ``texts``. ``exist_ok``: reopen an existing store on the same text set."""
        path = Path(path)
        if (path / "store.json").exists():
            store = cls(path)
            if not exist_ok:
                raise FileExistsError(f"{path} is already an lmmap store; open it instead")
            store.check_text_set(texts.identity, len(texts), what=f"the text set given for {path}")
            return store
        path.mkdir(parents=True, exist_ok=True)
        (path / "models").mkdir(exist_ok=True)
        with atomic_path(path / "texts.parquet", mkdir=False) as tmp:
            pq.write_table(texts.table, tmp)
        info = {
            "format": STORE_FORMAT,
            "version": STORE_VERSION,
            "text_set": {"identity": texts.identity, "n_texts": len(texts)},
            "created_at": now_iso(),
            "lmmap_version": __version__,
        }
        atomic_write(path / "store.json", json.dumps(info, indent=2).encode())
        return cls(path)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Store":
        return cls(path)

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
            self._texts = TextSet(pq.read_table(self.path / "texts.parquet"))
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
    @contextlib.contextmanager
    def _locked(self, mode: int, required: bool):
        # Re-entrant per Store object: flock on a second descriptor of the same file would deadlock.
        with self._held_lock:
            nested = self._held > 0
            self._held += 1
        try:
            if nested:
                yield
                return
            try:
                f = open(self.path / ".lock", "a+")
                gate = open(self.path / ".lock-gate", "a+")
            except OSError:
                if required:
                    raise StoreError(f"cannot write to the store {self.path}: no permission to create {self.path / '.lock'}") from None
                yield  # a read-only store: nobody can be changing it through lmmap
                return
            with f, gate:
                # Everyone passes the gate to take the lock: a writer waiting for readers to finish
                # holds the gate, so that a stream of readers can never starve it (flock is not fair).
                fcntl.flock(gate.fileno(), fcntl.LOCK_EX)
                try:
                    fcntl.flock(f.fileno(), mode)
                finally:
                    fcntl.flock(gate.fileno(), fcntl.LOCK_UN)
                try:
                    yield
                finally:
                    fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        finally:
            with self._held_lock:
                self._held -= 1

    def _exclusive(self):
        return self._locked(fcntl.LOCK_EX, True)

    def _shared(self):
        return self._locked(fcntl.LOCK_SH, False)

    @contextlib.contextmanager
    def lock(self):
        """An exclusive inter-process lock on the store (changes made under it are not seen half-done)."""
        with self._exclusive():
            yield

    # -- recovery ---------------------------------------------------------------
    def _staging_state(self) -> list[tuple[Path, str]]:
        """Each staging directory with its state: ``committed``, ``dead`` or ``live``."""
        root = self.path / STAGING
        try:
            entries = list(os.scandir(root))
        except FileNotFoundError:
            return []
        out = []
        for e in entries:
            p = Path(e.path)
            if not e.is_dir():
                out.append((p, "dead"))
            elif (p / COMMIT).exists():
                out.append((p, "committed"))
            else:
                out.append((p, "live" if _tx_alive(p) else "dead"))
        return out

    def _stray_tmp_files(self) -> list[Path]:
        out = []
        # lmmap writes no temporary file into models/ any more (changes are staged), so any there is
        # a leftover; in the store's root another process may be writing one right now.
        for d, any_age in ((self.path, False), (self.path / "models", True)):
            try:
                out.extend(Path(e.path) for e in os.scandir(d)
                           if e.name.endswith(".tmp") and e.is_file() and _stray_tmp(Path(e.path), any_age))
            except FileNotFoundError:
                pass
        # os.walk, not rglob: a scorer may remove a checkpoint directory while it is being walked
        for d, _, files in os.walk(self.path / "partial"):
            out.extend(Path(d) / f for f in files if f.endswith(".tmp") and _stray_tmp(Path(d) / f, False))
        return out

    def _recover_if_needed(self) -> None:
        if any(state != "live" for _, state in self._staging_state()) or self._stray_tmp_files():
            try:
                with self._exclusive():
                    self._recover()
            except (StoreError, OSError):
                pass  # a read-only store: readers ignore staging and temporary files

    def _recover(self) -> None:
        """Roll journalled changes forward, drop dead ones and stray temporary files (under the exclusive lock)."""
        for path, state in self._staging_state():
            if state == "committed":
                try:
                    ops = json.loads((path / COMMIT).read_bytes())["ops"]
                except (ValueError, KeyError, OSError):
                    ops = None  # a journal cut short was never committed: its rename came last
                if ops is not None:
                    _apply(self.path, ops)
                shutil.rmtree(path, ignore_errors=True)
            elif state == "dead":
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        for p in self._stray_tmp_files():
            p.unlink(missing_ok=True)

    # -- models ---------------------------------------------------------------
    def _model_path(self, name: str) -> Path:
        return self.path / "models" / model_filename(name)

    def _existing_path(self, name: str) -> Path | None:
        """The file holding model ``name``: its own, or the one lmmap 0.1.0 named."""
        path = self._model_path(name)
        if path.exists():
            return path
        old = legacy_filename(name)
        if old is not None and old != path.name:
            try:
                legacy = self.path / "models" / old
                if legacy.exists() and _read_record(legacy).get("model") == name:
                    return legacy
            except (OSError, LmmapError):
                return None
        return None

    def has_model(self, name: str) -> bool:
        return self._existing_path(name) is not None

    def _model_files(self) -> list[Path]:
        try:
            return [Path(e.path) for e in os.scandir(self.path / "models") if e.name.endswith(".parquet") and e.is_file()]
        except FileNotFoundError:
            return []

    def _scan(self, footers: dict | None = None) -> tuple[dict[str, tuple[Path, dict]], list[Path], list[Path]]:
        """``({name: (file, record)}, unreadable files, second files of a name)``.

        ``footers``: a dict to fill with ``{file: Parquet footer}``, for a caller that reads the files'
        columns under the same hold of the lock (the footer is then read once, not twice).
        """
        files = self._model_files()

        def read(p):
            try:
                rec, footer = _read_footer(p)
            except FileNotFoundError:
                return p, None  # removed since the listing (rm, doctor): not a model any more
            except (LmmapError, OSError, pa.ArrowException, ValueError):
                return p, False
            if footers is not None:
                footers[p] = footer
            return p, rec

        results = parallel_map(read, files, workers=_IO_WORKERS)
        found: dict[str, tuple[Path, dict]] = {}
        unreadable, dups = [], []
        for p, rec in results:
            if rec is None:
                continue
            if rec is False or not isinstance(rec.get("model"), str):
                unreadable.append(p)
                continue
            name = rec["model"]
            if name in found:
                # the file with the current name wins; the other is a leftover
                if p.name == model_filename(name):
                    dups.append(found[name][0])
                    found[name] = (p, rec)
                else:
                    dups.append(p)
                continue
            found[name] = (p, rec)
        return found, unreadable, dups

    def records(self) -> dict[str, dict]:
        """Every model's record, in the order the models were added."""
        with self._shared():
            found, unreadable, _ = self._scan()
        if unreadable:
            warnings.warn(
                f"{len(unreadable)} unreadable file(s) in {self.path / 'models'} left out, e.g. {unreadable[0].name}; "
                "`lmmap doctor` reports them and `lmmap doctor --repair` moves them aside",
                LmmapWarning,
                stacklevel=2,
            )
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
        path = self._existing_path(name)
        if path is None:
            raise self._not_in_store(name)
        return _read_record(path)

    def _vector_table(self, name, loglik, n_tokens, truncated, text_pos, record, positive: list) -> pa.Table:
        check_model_name(name)
        try:
            loglik = np.asarray(loglik, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"model {name!r}: the log-likelihoods are not numbers") from None
        if loglik.ndim != 1:
            raise InputError(f"model {name!r}: the log-likelihood vector must be 1-D, got shape {loglik.shape}")
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
                raise InputError(f"model {name!r}: text positions must be whole numbers")
            try:
                text_pos = raw.astype(np.int64)
            except (TypeError, ValueError):
                raise InputError(f"model {name!r}: text positions must be whole numbers") from None
            if text_pos.shape != (m,):
                raise InputError(f"model {name!r}: text positions and log-likelihoods differ in length")
            if m and (text_pos.min() < 0 or text_pos.max() >= self.n_texts):
                raise InputError(f"model {name!r}: text positions outside 0..{self.n_texts - 1}")
            if len(np.unique(text_pos)) != m:
                raise InputError(f"model {name!r}: a text is scored twice")
        if m == 0:
            raise InputError(f"model {name!r}: no log-likelihoods to store")
        bad = ~np.isfinite(loglik)
        if bad.any():
            raise InputError(
                f"model {name!r} has {int(bad.sum())} non-finite log-likelihoods (NaN/inf), "
                f"first at text position {int(text_pos[bad][0])}; nothing was stored for it"
            )
        huge = np.abs(loglik) >= MAX_ABS_LOGLIK
        if huge.any():
            i = int(np.flatnonzero(huge)[0])
            raise InputError(
                f"model {name!r} has a log-likelihood of {loglik[i]:.3g} at text position {int(text_pos[i])}: "
                f"magnitudes of {MAX_ABS_LOGLIK:.0e} or more overflow when squared; these are not log-likelihoods "
                "(check the file's units and columns)"
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
                raise InputError(f"model {name!r}: {n_tokens.shape} token counts for {m} log-likelihoods")
            if n_tokens.dtype.kind == "f" and not np.isfinite(n_tokens).all():
                raise InputError(f"model {name!r}: token counts must be whole numbers (found NaN/inf)")
            if len(n_tokens) and (n_tokens.min() < -1 or n_tokens.max() > np.iinfo(np.int32).max):
                raise InputError(f"model {name!r}: token counts must lie in 0..{np.iinfo(np.int32).max}")
        truncated = np.zeros(m, bool) if truncated is None else np.asarray(truncated, bool)
        if truncated.shape != (m,):
            raise InputError(f"model {name!r}: {truncated.shape} truncation flags for {m} log-likelihoods")
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
                f"model {name!r}: convention {rec.get('convention')!r} is not one of {', '.join(CONVENTIONS)}"
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
        texts were scored) and ``record`` (SPEC §2 fields). Everything is
        validated first; the files are staged and published in one journalled
        commit (module docstring), so after a crash the store holds all of
        them or none. Positive log-likelihoods are stored with an
        :class:`LmmapWarning` (real texts have log-likelihoods ≤ 0).
        """
        names = [check_model_name(v.get("name")) for v in vectors]
        if not names:
            raise InputError("no models to store")
        seen = set()
        for n in names:
            if n in seen:
                raise InputError(f"duplicate model name {n!r}: each model must appear once")
            seen.add(n)
        positive: list = []
        tables = [
            self._vector_table(v["name"], v["loglik"], v.get("n_tokens"), v.get("truncated"), v.get("text_pos"),
                               v.get("record"), positive)
            for v in vectors
        ]
        meta = None
        if metadata is not None and len(metadata):
            meta = _normalise_metadata(metadata)
            _metadata_table(_merge_metadata(self.metadata(), meta))  # a clash is found before anything is written
        if positive:
            name, count, pos, value = positive[0]
            more = f" (and {len(positive) - 1} other model(s))" if len(positive) > 1 else ""
            warnings.warn(
                f"model {name!r} has {count} positive log-likelihood(s), e.g. {value:.4g} at text position {pos}{more}; "
                "log-likelihoods of real texts are ≤ 0 — stored anyway, check the file's sign",
                LmmapWarning,
                stacklevel=2,
            )
        if not replace:
            self._refuse_clash(names, self._scan()[0])  # early, before the slow writing; again at commit
        tx = _Tx(self)
        try:
            staged = [tx.stage_path(self._model_path(n)) for n in names]
            # Parquet encoding releases the GIL.
            parallel_map(lambda pair: _write_durably(*pair), list(zip(tables, staged)), workers=4)
            fsync_dir(tx.dir)
            with self._exclusive():
                self._recover()
                found, _, _ = self._scan()
                if not replace:
                    self._refuse_clash(names, found)
                for n in names:
                    if n in found and found[n][0] != self._model_path(n):
                        tx.delete(found[n][0])  # a 0.1.0-named file of the model being replaced
                if meta is not None:
                    self._stage_metadata(tx, meta)
                tx.commit()
        finally:
            if not tx.committed:
                tx.close()
        return names

    def _refuse_clash(self, names, found) -> None:
        clash = [n for n in names if n in found]
        if clash:
            raise ModelExistsError(
                f"{len(clash)} model(s) already in the store, e.g. {clash[0]!r}; "
                "pass replace=True to overwrite them; nothing was stored",
                clash,
            )

    def write_model(self, name: str, loglik, *, n_tokens=None, truncated=None, text_pos=None, record=None, replace=False) -> str:
        """Store one model's vector atomically (see ``write_models``)."""
        vec = dict(name=name, loglik=loglik, n_tokens=n_tokens, truncated=truncated, text_pos=text_pos, record=record)
        return self.write_models([vec], replace=replace)[0]

    def remove_models(self, names) -> list[str]:
        """Remove models and their metadata rows in one all-or-nothing change; raise naming any not in the store."""
        names = list(dict.fromkeys(check_model_name(n) for n in names))
        if not names:
            raise InputError("name at least one model to remove")
        tx = _Tx(self)
        try:
            with self._exclusive():
                self._recover()
                found, _, dups = self._scan()
                missing = [n for n in names if n not in found]
                if missing:
                    raise StoreError(
                        f"not in the store: {', '.join(map(repr, missing[:5]))}"
                        f"{' …' if len(missing) > 5 else ''}; nothing was removed (`lmmap models` lists what is)"
                    )
                for n in names:
                    tx.delete(found[n][0])
                for p in dups:
                    try:
                        if _read_record(p).get("model") in names:
                            tx.delete(p)
                    except (LmmapError, OSError, pa.ArrowException):
                        pass
                md = self.metadata()
                if len(md) and md.index.isin(names).any():
                    tx.stage_table(_metadata_table(md[~md.index.isin(names)]), self.path / "metadata.parquet")
                tx.commit()
                for n in names:
                    self.clear_checkpoint(n)
        finally:
            if not tx.committed:
                tx.close()
        return names

    def remove_model(self, name: str) -> None:
        self.remove_models([name])

    def vectors(self, name: str) -> pd.DataFrame:
        """One model's stored rows: text_pos, loglik, n_tokens, truncated."""
        path = self._existing_path(name)
        if path is None:
            raise self._not_in_store(name)
        return pq.read_table(path).to_pandas()

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

    def matrix(self, models=None, text_pos=None, allow_mixed: bool = False) -> tuple[list[str], np.ndarray]:
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

        Returns
        -------
        names : list of str
        L : ndarray, K×n float64
            ``L[i, s] = log p_i(x_s)``.

        Raises
        ------
        StoreError
            A model is missing or lacks texts; conventions differ (unless ``allow_mixed``).
        """
        with self._shared():
            return self._matrix(models, text_pos, allow_mixed)

    def _matrix(self, models, text_pos, allow_mixed):
        footers: dict = {}
        found, _, _ = self._scan(footers)
        recs = {n: rec for n, (_, rec) in found.items()}
        want = np.arange(self.n_texts) if text_pos is None else np.asarray(text_pos, dtype=np.int64)
        if len(want) and (want.min() < 0 or want.max() >= self.n_texts):
            raise InputError(f"text positions must lie in 0..{self.n_texts - 1}")
        positions: dict[str, np.ndarray] = {}

        def covers(n) -> bool:
            if int(recs[n].get("n_scored", -1)) == self.n_texts:
                return True
            if n not in positions:
                path = found[n][0]
                positions[n] = _read_columns(path, ["text_pos"], footers.get(path)).column("text_pos").to_numpy()
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
            path = found[names[i]][0]
            if rec["n_scored"] == self.n_texts and text_pos is None:
                # files are sorted by text_pos and complete: the positions are 0..N-1
                L[i] = _read_columns(path, ["loglik"], footers.get(path)).column("loglik").to_numpy()
                return
            t = _read_columns(path, ["text_pos", "loglik"], footers.get(path))
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
    def metadata(self) -> pd.DataFrame:
        """User metadata (model_type, family, ...) indexed by model name; empty if none was given."""
        path = self.path / "metadata.parquet"
        if not path.exists():
            return pd.DataFrame(index=pd.Index([], name="model"))
        return pq.read_table(path).to_pandas().set_index("model")

    def set_metadata(self, df: pd.DataFrame) -> None:
        """Merge ``df`` (a ``model`` column or index, any other columns) into the stored metadata.

        A column whose values mix numbers and text (``size`` 7 in the store,
        ``7B`` given) is stored as text, with an :class:`LmmapWarning`.
        """
        new = _normalise_metadata(df)
        tx = _Tx(self)
        try:
            with self._exclusive():
                self._recover()
                self._stage_metadata(tx, new)
                tx.commit()
        finally:
            if not tx.committed:
                tx.close()

    def _stage_metadata(self, tx: "_Tx", new: pd.DataFrame) -> None:
        """Stage the stored metadata merged with ``new`` in ``tx`` (call under the exclusive lock)."""
        tx.stage_table(_metadata_table(_merge_metadata(self.metadata(), new)), self.path / "metadata.parquet")

    # -- scoring checkpoints ----------------------------------------------------
    def _partial_root(self, name: str) -> Path:
        return self.path / "partial" / model_stem(name)

    def _partial_dir(self, name: str, key: str) -> Path:
        return self._partial_root(name) / key

    def save_checkpoint(self, name: str, key: str, text_pos, loglik, n_tokens, truncated) -> None:
        """Atomically add a chunk of scored texts for ``name`` under settings ``key``."""
        d = self._partial_dir(name, key)
        table = pa.table(
            {
                "text_pos": pa.array(np.asarray(text_pos), pa.int32()),
                "loglik": pa.array(np.asarray(loglik, dtype=np.float64), pa.float64()),
                "n_tokens": pa.array(np.asarray(n_tokens), pa.int32()),
                "truncated": pa.array(np.asarray(truncated, bool), pa.bool_()),
            },
            schema=VECTOR_SCHEMA,
        )
        for attempt in range(5):
            try:
                d.mkdir(parents=True, exist_ok=True)
                with atomic_path(d / f"chunk-{time.time_ns()}-{os.getpid()}.parquet", mkdir=False) as tmp:
                    pq.write_table(table, tmp)
                return
            except FileNotFoundError:
                # Another process stored the model and cleared its checkpoints while this chunk was being
                # written (the folder, or our temporary file in it, vanished; another scorer may already
                # have made the folder again): write the chunk again. A chunk left for a stored model is
                # an orphan that the next run or `lmmap doctor --repair` removes.
                if attempt == 4:
                    raise

    def clear_redundant_checkpoints(self, name: str) -> None:
        """Remove ``name``'s checkpoint chunks whose texts are all stored under the same settings."""
        found, _, _ = self._scan()
        if name in found:
            root = self._partial_root(name)
            for p in self._orphan_checkpoints({name: found[name]}):
                if root in (p, p.parent):
                    shutil.rmtree(p, ignore_errors=True)

    def checkpoint_chunks(self, name: str) -> int:
        """How many checkpoint chunks are kept for ``name`` (any settings)."""
        root = self._partial_root(name)
        return len(_glob(root, "*/chunk-*.parquet"))

    def load_checkpoint(self, name: str, key: str) -> pd.DataFrame:
        """The texts already scored for ``name`` under ``key`` (other keys' chunks are stale and removed)."""
        root = self._partial_root(name)
        for other in _listdir(root):
            if other.name != key and other.is_dir():
                shutil.rmtree(other, ignore_errors=True)
        d = self._partial_dir(name, key)
        files = sorted(_glob(d, "chunk-*.parquet"))
        tables = []
        for p in files:
            try:
                tables.append(pq.read_table(p))
            except FileNotFoundError:
                continue  # cleared by a process that just stored the model
        if not tables:
            return pd.DataFrame({c: pd.Series(dtype=t.to_pandas_dtype()) for c, t in zip(VECTOR_SCHEMA.names, VECTOR_SCHEMA.types)})
        df = pa.concat_tables(tables).to_pandas()
        return df.drop_duplicates("text_pos", keep="last").sort_values("text_pos").reset_index(drop=True)

    def clear_checkpoint(self, name: str) -> None:
        root = self._partial_root(name)
        if root.exists():
            shutil.rmtree(root, ignore_errors=True)
        old = legacy_filename(name)
        if old is not None:
            legacy = self.path / "partial" / old[: -len(".parquet")]
            if legacy != root and legacy.exists():
                shutil.rmtree(legacy, ignore_errors=True)

    def _orphan_checkpoints(self, found: dict[str, tuple[Path, dict]]) -> list[Path]:
        """Checkpoint directories whose every text is already stored under the same settings (a lost race)."""
        partial = self.path / "partial"
        if not partial.exists():
            return []
        by_stem = {}
        for n, (_, rec) in found.items():
            by_stem[model_stem(n)] = (n, rec)
            old = legacy_filename(n)
            if old is not None:
                by_stem.setdefault(old[: -len(".parquet")], (n, rec))
        out = []
        for model_dir in _listdir(partial):
            if not model_dir.is_dir():
                continue
            keys = [k for k in _listdir(model_dir) if k.is_dir()]
            if not keys:
                out.append(model_dir)
                continue
            if model_dir.name not in by_stem:
                continue
            n, rec = by_stem[model_dir.name]
            stored = None
            for k in keys:
                if k.name != rec.get("settings_key"):
                    continue
                chunks = _glob(k, "chunk-*.parquet")
                if stored is None:
                    stored = self.vectors(n)["text_pos"].to_numpy()
                try:
                    pos = np.concatenate([pq.read_table(c, columns=["text_pos"]).column("text_pos").to_numpy() for c in chunks]) if chunks else np.array([], int)
                except (OSError, pa.ArrowException):
                    continue
                if np.isin(pos, stored).all():
                    out.append(k)
        return out

    # -- checks -----------------------------------------------------------------
    def check(self, repair: bool = False) -> StoreReport:
        """Look for leftovers of killed processes and other damage; ``repair=True`` fixes what it finds.

        Reports: stray temporary files, unfinished changes in ``.staging``
        (a journalled one is rolled forward, others removed), orphan
        checkpoint chunks (their texts are stored under the same settings),
        model files with 0.1.0-style names (renamed), unreadable model files
        (moved to ``STORE/damaged/``) and second files for one model (the
        older is moved to ``damaged/``).
        """
        rep = StoreReport(self.path)
        with self._exclusive() if repair else self._shared():
            rep.stray_files = [str(p.relative_to(self.path)) for p in self._stray_tmp_files()]
            rep.staging = [f"{p.relative_to(self.path)} ({state})" for p, state in self._staging_state() if state != "live"]
            found, unreadable, dups = self._scan()
            rep.unreadable = [str(p.relative_to(self.path)) for p in unreadable]
            rep.duplicates = [str(p.relative_to(self.path)) for p in dups]
            old = [(n, p) for n, (p, _) in found.items() if p.name != model_filename(n)]
            rep.old_names = [f"{p.relative_to(self.path)} (model {n!r})" for n, p in old]
            orphans = self._orphan_checkpoints(found)
            rep.orphan_checkpoints = [str(p.relative_to(self.path)) for p in orphans]
            if not repair:
                return rep
            self._recover()
            damaged = self.path / "damaged"
            for p in [*unreadable, *dups]:
                damaged.mkdir(exist_ok=True)
                os.replace(p, damaged / p.name)
            if old:
                tx = _Tx(self)
                try:
                    for n, p in old:
                        tx.ops.append(["rename", str(p.relative_to(self.path)), str(self._model_path(n).relative_to(self.path))])
                    tx.commit()
                finally:
                    if not tx.committed:
                        tx.close()
            for p in orphans:
                shutil.rmtree(p, ignore_errors=True)
                if p.parent.name != "partial" and p.parent.exists() and not any(p.parent.iterdir()):
                    p.parent.rmdir()
            rep.repaired = True
        return rep


def _glob(path: Path, pattern: str) -> list[Path]:
    """``path.glob(pattern)``; none if another process removes the directory meanwhile."""
    try:
        return list(path.glob(pattern)) if path.exists() else []
    except (FileNotFoundError, NotADirectoryError):
        return []


def _listdir(path: Path) -> list[Path]:
    """The entries of ``path``; none if another process has just removed it."""
    try:
        return list(path.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _tx_alive(path: Path) -> bool:
    """Whether the process that owns staging directory ``path`` still runs (it holds the flock)."""
    try:
        f = open(path / ".lock", "r")
    except OSError:
        return False
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return True
            raise
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return False


def _normalise_metadata(df: pd.DataFrame) -> pd.DataFrame:
    """A copy indexed by model name (str); a name given twice is refused."""
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"metadata must be a table (DataFrame), got {type(df).__name__}")
    df = df.copy()
    if "model" in df.columns:
        df = df.set_index("model")
    if df.index.hasnans:
        raise InputError("metadata has a row without a model name; give every row one")
    df.index = df.index.astype(str)
    df.index.name = "model"
    dup = df.index[df.index.duplicated()]
    if len(dup):
        raise InputError(f"metadata names model {dup[0]!r} twice; give each model one row")
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


def _read_footer(path: Path) -> tuple[dict, pq.FileMetaData]:
    """``(record, footer)`` of a model file; the footer can be handed to :func:`_read_columns`."""
    footer = pq.read_metadata(path)
    meta = footer.metadata or {}
    if RECORD_KEY not in meta:
        raise StoreError(f"{path}: not an lmmap vector file (no record); `lmmap doctor --repair` moves it aside")
    rec = json.loads(meta[RECORD_KEY])
    if not isinstance(rec, dict):
        raise StoreError(f"{path}: its record is not a JSON object")
    return rec, footer


def _read_record(path: Path) -> dict:
    return _read_footer(path)[0]


def _read_columns(path: Path, columns: list[str], footer: pq.FileMetaData | None = None) -> pa.Table:
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
            "or pass allow_mixed=True if you really mean to mix them",
            params=("allow_mixed",),
        )

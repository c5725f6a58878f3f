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
      adaptive/<file>.json        an adaptive placement's marker and settings (removed with the model)
      damaged/                    files moved aside by ``doctor --repair``
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
import stat
import threading
import time
import unicodedata
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
# Folders of per-model state that analyses keep in the store (adaptive placement's marker and settings).
STATE_KINDS = ("adaptive",)
COMMIT = "COMMIT"
# Threads reading model files: they wait on the disk, not the CPU, so more than the cores.
_IO_WORKERS = 8


def _name_bytes(name: str) -> bytes:
    # surrogatepass: a lone surrogate is a legal Python str and must still get a file.
    return name.encode("utf-8", "surrogatepass")


def _name_type(name) -> str:
    if not isinstance(name, str):
        raise InputError(f"a model name must be a string, got {type(name).__name__} {name!r}")
    if not name:
        raise InputError("a model name cannot be empty; give the model a name")
    return name


def check_model_name(name) -> str:
    """``name`` if it can name a new model; an InputError otherwise.

    Any non-empty string that can be typed again and written to every output:
    not only white space, no NUL (no command line can hold it), no line break
    of any kind (``\\r``, ``\\n``, NEL, U+2028 …: CSV files and one-line
    messages alter them) and no lone surrogate (not encodable as UTF-8, so not
    in Parquet or HTML). Refused at the door, since a model stored under such
    a name could never be named again. Other control characters are kept and
    shown escaped wherever a name is printed.
    """
    _name_type(name)
    if not name.strip():
        raise InputError(f"a model name cannot be only white space ({name!r}); give the model a name")
    bad = next((ch for ch in name if ch == "\0" or unicodedata.category(ch) == "Cs" or len(f"a{ch}b".splitlines()) > 1),
               None)
    if bad is not None:
        what = ("a lone surrogate" if unicodedata.category(bad) == "Cs" else "a NUL character" if bad == "\0"
                else "a line break")
        raise InputError(f"model name {name!r} holds {what} ({bad!r}), which no file or command line keeps intact; "
                         "give the model another name")
    return name


def model_stem(name: str) -> str:
    """The file-name stem of model ``name`` (see the module docstring): never hidden, bounded, collision-free."""
    _name_type(name)
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


# Largest journal or store.json read: far above what lmmap writes (about 150 bytes per model changed), so a
# hostile file cannot make a store's opening read gigabytes.
_MAX_JOURNAL = 256 << 20
_MAX_INFO = 1 << 20


def _is_plain(path) -> bool:
    """Whether ``path`` itself is a regular file: not a link, folder, FIFO, socket or device.

    Checked before anything in a store is opened: opening a FIFO blocks until
    someone writes to it (a command would hang), and a link may point anywhere.
    """
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except (OSError, ValueError):
        return False


def _what(path) -> str:
    """What ``path`` is, when it is not a plain file (for one-line messages)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return "missing"
    for test, what in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")):
        if test(mode):
            return what
    return "not a plain file"


def _read_plain(path: Path, limit: int) -> bytes:
    """The bytes of the plain file ``path``, never through a link nor from a FIFO; OSError otherwise.

    Opened with O_NOFOLLOW | O_NONBLOCK and checked on the open descriptor, so
    the file cannot be swapped for a link or a FIFO between a check and the read.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a plain file", str(path))
        if st.st_size > limit:
            raise OSError(errno.EFBIG, f"{st.st_size} bytes, far more than lmmap writes", str(path))
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(limit + 1)
    finally:
        os.close(fd)


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


def _open_lock(path: Path):
    """A store's lock file opened for flock; never through a symbolic link (it could point anywhere)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StoreError(f"{path} is a symbolic link; a store's lock file must be a plain file: remove it") from None
        raise
    return os.fdopen(fd, "r+")


def _flock(f, gate, mode: int) -> None:
    # Everyone passes the gate to take the lock: a writer waiting for readers to finish
    # holds the gate, so that a stream of readers can never starve it (flock is not fair).
    fcntl.flock(gate.fileno(), fcntl.LOCK_EX)
    try:
        fcntl.flock(f.fileno(), mode)
    finally:
        fcntl.flock(gate.fileno(), fcntl.LOCK_UN)


def _os_reason(exc: OSError) -> str:
    what = (exc.strerror or type(exc).__name__).lower()
    if exc.filename and exc.filename2:  # a rename: which side is the problem is not said, so name both
        return f"{what} ({exc.filename} -> {exc.filename2})"
    return f"{what} ({exc.filename})" if exc.filename else what


def _check_info(info, info_path: Path) -> dict:
    """``store.json``'s contents, checked: a damaged or foreign one is refused in one line naming it."""
    if not isinstance(info, dict) or info.get("format") != STORE_FORMAT:
        raise StoreError(f"{info_path}: not an lmmap store file")
    version = info.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise StoreError(f"{info_path}: damaged (version {version!r} is not a whole number)")
    if version > STORE_VERSION:
        raise StoreError(f"{info_path.parent} was written by a newer lmmap (store version {version}); upgrade lmmap")
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
            # again under the lock: a store opened with recover=False (doctor) or long ago has not been checked,
            # and mkdir(parents=True) would follow a .staging that is a link out of the store
            store._check_layout()
            try:
                self.dir.mkdir(parents=True)
                self._lockf = _open_lock(self.dir / ".lock")
            except OSError as exc:
                raise StoreError(f"cannot write to the store {store.path}: {_os_reason(exc)}; nothing was changed") from None
            fcntl.flock(self._lockf.fileno(), fcntl.LOCK_EX)

    def stage_path(self, dest: Path) -> Path:
        """A staging file that the commit renames to ``dest`` (the caller writes and fsyncs it)."""
        self._n += 1
        staged = self.dir / f"{self._n:06d}.parquet"
        self.ops.append(["rename", str(staged.relative_to(self.store.path)), str(dest.relative_to(self.store.path))])
        return staged

    def stage_bytes(self, data: bytes, dest: Path) -> None:
        """Write ``data`` to a staging file that the commit renames to ``dest``."""
        staged = self.stage_path(dest)
        staged.write_bytes(data)
        fsync_file(staged)

    def stage_table(self, table: pa.Table, dest: Path) -> None:
        """Write ``table`` to a staging file that the commit renames to ``dest``."""
        _write_durably(table, self.stage_path(dest))

    def delete(self, path: Path) -> None:
        self.ops.append(["delete", str(path.relative_to(self.store.path))])

    def commit(self) -> None:
        """Publish the staged files; the caller holds the store's exclusive lock.

        All or nothing: once the journal is written the change is complete
        even if the process is killed (the next opener rolls it forward); if
        the file system refuses an operation (a permission, a full disk) what
        was done is undone, the journal withdrawn and a :class:`StoreError`
        raised, so the store is exactly as before.
        """
        root = self.store.path
        ops = _journal_ops(root, self.dir, {"ops": self.ops})  # never write through a link out of the store
        journal = json.dumps({"txid": self.id, "ops": ops}).encode()
        with _signals_deferred() as pending:
            atomic_write(self.dir / COMMIT, journal)
            fsync_dir(self.dir)
            self.committed = True
            try:
                _apply(root, ops, self.dir)
            except OSError as exc:
                (self.dir / COMMIT).unlink()
                fsync_dir(self.dir)
                self.committed = False
                raise StoreError(f"could not change the store {root}: {_os_reason(exc)}; nothing was changed") from None
            self.close()
        if pending:
            raise Interrupted("the change was committed before the interruption took effect: it is complete in the store")

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        if not self._lockf.closed:
            self._lockf.close()


def _journal_ops(root: Path, txdir: Path, raw) -> list[list[str]]:
    """The operations of the journal ``raw`` (parsed ``COMMIT``), each checked to stay inside the store.

    A store may come from anyone (copied between machines, downloaded with
    results), so a journal is data, not a program: only the operations lmmap
    writes are carried out — a rename from this change's own staging folder
    (or, for ``doctor --repair``'s renames, from ``models/``) to
    ``models/<file>.parquet``, ``metadata.parquet`` or a state file
    ``<kind>/<file>.json`` (:data:`STATE_KINDS`), and a deletion of a model
    or state file — of plain files only, never through a symbolic link. Anything else raises
    :class:`StoreError` naming the journal and the first bad operation.
    """
    where = f"{txdir / COMMIT}"
    if not isinstance(raw, dict) or not isinstance(raw.get("ops"), list):
        raise StoreError(f"{where}: not a journal lmmap wrote (no list of operations)")
    staged = f"{STAGING}/{txdir.name}"

    def in_models(rel: str) -> bool:
        head, _, leaf = rel.partition("/")
        return (head == "models" and _plain_leaf(leaf)) or (head in STATE_KINDS and leaf.endswith(".json")
                                                             and _plain_leaf(leaf))

    def from_ok(rel: str) -> bool:
        head, _, leaf = rel.rpartition("/")
        return (head == staged and _plain_leaf(leaf)) or in_models(rel)

    def to_ok(rel: str) -> bool:
        return rel == "metadata.parquet" or (in_models(rel) and rel.endswith((".parquet", ".json")))

    out = []
    for op in raw["ops"]:
        if not (isinstance(op, list) and op and all(isinstance(x, str) for x in op)):
            raise StoreError(f"{where}: not a journal lmmap wrote (operation {str(op)[:80]!r})")
        ok = (op[0] == "rename" and len(op) == 3 and from_ok(op[1]) and to_ok(op[2])) or (
            op[0] == "delete" and len(op) == 2 and in_models(op[1]))
        if not ok:
            raise StoreError(f"{where}: not a journal lmmap wrote (operation {str(op)[:120]!r} is not one of "
                             "lmmap's, or names a path outside the store's own files)")
        out.append(op)
    for op in out:
        # lmmap stages only plain files; a link, FIFO or folder moved into models/ would be followed, block or
        # hide a model (a source already gone was moved before a kill)
        if op[0] == "rename" and os.path.lexists(root / op[1]) and not _is_plain(root / op[1]):
            raise StoreError(f"{where}: not a journal lmmap wrote (it would move {op[1]}, {_what(root / op[1])}, "
                             "into the store)")
    for d in (root / "models", txdir, *(root / k for k in STATE_KINDS)):
        if d.is_symlink():
            raise StoreError(f"{d} is a symbolic link; lmmap never follows one out of a store "
                             "(`lmmap doctor --repair` moves it aside)")
    return out


def _plain_leaf(leaf: str) -> bool:
    # lmmap's file names stay far under 255 bytes (model_stem): a longer one could never be renamed into
    # place, and a journal naming one would block every command of the store
    return (bool(leaf) and leaf not in (".", "..") and "/" not in leaf and "\\" not in leaf and "\0" not in leaf
            and len(leaf.encode("utf-8", "surrogatepass")) <= 255)


def _apply(root: Path, ops: list[list[str]], txdir: Path) -> None:
    """Carry out a checked journal (:func:`_journal_ops`); idempotent, so a killed commit can be applied again.

    Each file a rename replaces is first hard-linked into ``txdir`` and each
    deleted file is moved there, so that an operation refused midway (a
    permission, a full disk) can be undone: on ``OSError`` what was done is
    reversed and the error raised. The caller removes ``txdir`` afterwards.
    """
    dirs: set[Path] = set()
    done: list[tuple[Path, Path, Path | None]] = []  # (moved from, moved to, backup of what `to` held)
    try:
        for i, op in enumerate(ops):
            if op[0] != "rename":
                continue
            src, dst = root / op[1], root / op[2]
            if not os.path.lexists(src):
                continue  # applied before a kill (a source that is not a plain file is refused by _journal_ops)
            backup = txdir / f"undo-{i:06d}"
            if os.path.lexists(dst) and not os.path.lexists(backup):
                try:
                    os.link(dst, backup, follow_symlinks=False)
                except OSError:
                    backup = None  # a file system without hard links: this one rename cannot be undone
            elif not os.path.lexists(dst):
                backup = None
            dst.parent.mkdir(exist_ok=True)
            os.replace(src, dst)
            done.append((src, dst, backup))
            dirs.add(dst.parent)
        for i, op in enumerate(ops):
            if op[0] != "delete":
                continue
            path = root / op[1]
            if os.path.lexists(path):
                os.replace(path, txdir / f"undo-{i:06d}")  # gone with txdir
                done.append((path, txdir / f"undo-{i:06d}", None))
                dirs.add(path.parent)
    except OSError:
        for src, dst, backup in reversed(done):
            with contextlib.suppress(OSError):
                os.replace(dst, src)
                if backup is not None:
                    os.replace(backup, dst)
        raise
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
    foreign_journals: list[str] = field(default_factory=list)
    obstacles: list[str] = field(default_factory=list)
    damaged_files: list[str] = field(default_factory=list)
    orphan_states: list[str] = field(default_factory=list)
    not_plain: list[str] = field(default_factory=list)
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
        ):
            out.extend(f"{label}: {item}" for item in items)
        return out


class Store:
    """A directory of log-likelihood vectors on one text set (see module docstring)."""

    def __init__(self, path: str | os.PathLike, recover: bool = True):
        self.path = Path(path)
        info_path = self.path / "store.json"
        if not os.path.lexists(info_path):
            raise StoreError(
                f"{self.path} is not an lmmap store (no store.json); create one with "
                "`lmmap init --texts TEXTS.jsonl` or Store.create()"
            )
        if not _is_plain(info_path):
            raise StoreError(f"{info_path} is {_what(info_path)}, not a plain file; lmmap never reads through one "
                             "(replace it with the store's own store.json)")
        try:
            info = json.loads(_read_plain(info_path, _MAX_INFO))
        except OSError as exc:
            raise StoreError(f"{info_path}: cannot be read ({_os_reason(exc)}); is this an lmmap store?") from None
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise StoreError(f"{info_path}: not valid JSON; is this an lmmap store?") from None
        self.info = _check_info(info, info_path)
        self._texts: TextSet | None = None
        self._held = 0  # depth of this object's hold on the store lock (shared or exclusive)
        self._held_lock = threading.RLock()
        self._rejected: set[str] = set()  # journals refused as not lmmap's (warned about once)
        self._why: dict[Path, str] = {}  # why each unreadable model file is so (filled by _scan)
        # Taking the lock rolls a leftover journal forward; `check` turns that off to look first (and, repairing,
        # to move aside what would make the roll-forward fail forever)
        self._roll_forward = True
        self._size_checked = False  # whether n_texts agrees with the text set (else checked before arrays of N)
        if recover:
            self._check_layout()
            self._check_size()
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
            path = self.path / "texts.parquet"
            try:
                if os.path.lexists(path) and not _is_plain(path):
                    raise StoreError(f"{_what(path)}, never read")
                ts = TextSet(pq.read_table(path))
            except (OSError, pa.ArrowException, LmmapError) as exc:
                why = str(exc) if isinstance(exc, LmmapError) else f"not a readable Parquet file ({type(exc).__name__})"
                raise StoreError(f"{path}: {why}; restore it from a copy of the store") from None
            if len(ts) != self.n_texts:
                raise StoreError(f"{path}: {len(ts)} texts, but store.json says {self.n_texts}; "
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
                f = _open_lock(self.path / ".lock")
                try:
                    gate = _open_lock(self.path / ".lock-gate")
                except BaseException:
                    f.close()
                    raise
            except OSError:
                if required:
                    raise StoreError(f"cannot write to the store {self.path}: no permission to create {self.path / '.lock'}") from None
                if self._pending_journals():
                    raise StoreError(
                        f"the store {self.path} holds a change that was interrupted midway ({STAGING}/…/{COMMIT}) "
                        "and is read-only here, so it cannot be completed; run any lmmap command where the store "
                        "is writable first"
                    ) from None
                yield  # a read-only store: nobody can be changing it through lmmap
                return
            with f, gate:
                _flock(f, gate, mode)
                try:
                    # A writer killed midway leaves its journal; a reader that waited on the lock meanwhile
                    # must not read the half-applied state: roll it forward first (under the exclusive lock).
                    while self._roll_forward and self._pending_journals():
                        if mode == fcntl.LOCK_SH:
                            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
                            _flock(f, gate, fcntl.LOCK_EX)
                        self._recover()
                        if mode == fcntl.LOCK_SH:
                            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
                            _flock(f, gate, fcntl.LOCK_SH)  # and look again: another writer may have died meanwhile
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

    # -- layout -------------------------------------------------------------------
    def _obstacles(self) -> list[Path]:
        """The store's own folders that are something else (a file, a symbolic link): lmmap never follows them."""
        out = []
        for name in ("models", STAGING, "partial", "damaged", "adaptive"):
            d = self.path / name
            if d.is_symlink() or (os.path.lexists(d) and not d.is_dir()):
                out.append(d)
        return out

    def _check_layout(self) -> None:
        bad = self._obstacles()
        if bad:
            what = "a symbolic link" if bad[0].is_symlink() else "not a folder"
            raise StoreError(
                f"{bad[0]} is {what}; lmmap never writes or reads through it: `lmmap doctor --repair` moves it aside"
            )

    def _check_size(self) -> None:
        """Refuse a store.json whose text count disagrees with texts.parquet's (read from its footer only).

        Arrays of N entries are made before any text is read (a matrix, a
        lookup of positions): a store.json claiming 10¹² texts would end in a
        memory error. A text set that cannot be read at all is left to
        :attr:`texts` (and `doctor`) to name.
        """
        path = self.path / "texts.parquet"
        if not _is_plain(path):
            return
        try:
            rows = pq.read_metadata(path).num_rows
        except (OSError, pa.ArrowException, ValueError):
            return
        self._size_checked = rows == self.n_texts
        if rows != self.n_texts:
            raise StoreError(f"{self.path / 'store.json'}: damaged (text_set.n_texts is {self.n_texts} but "
                             f"texts.parquet holds {rows} texts); restore it from a copy of the store")

    # -- recovery ---------------------------------------------------------------
    def _staging_state(self) -> list[tuple[Path, str]]:
        """Each staging entry with its state: ``committed``, ``dead`` or ``live``."""
        root = self.path / STAGING
        if root.is_symlink():
            return []  # an obstacle (`_check_layout`), never followed
        try:
            entries = list(os.scandir(root))
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = []
        for e in entries:
            p = Path(e.path)
            if not e.is_dir(follow_symlinks=False):
                out.append((p, "dead"))
            elif os.path.lexists(p / COMMIT):
                out.append((p, "committed"))
            else:
                out.append((p, "live" if _tx_alive(p) else "dead"))
        return out

    def _pending_journals(self) -> list[Path]:
        """Staging folders holding a journal not yet carried out (those refused as hostile left out)."""
        root = self.path / STAGING
        if root.is_symlink():
            return []
        try:
            return [Path(e.path) for e in os.scandir(root)
                    if e.is_dir(follow_symlinks=False) and os.path.lexists(os.path.join(e.path, COMMIT))
                    and e.path not in self._rejected]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def _stray_tmp_files(self) -> list[Path]:
        out = []
        # lmmap writes no temporary file into models/ any more (changes are staged), so any there is
        # a leftover; in the store's root another process may be writing one right now.
        for d, any_age in ((self.path, False), (self.path / "models", True)):
            if d.is_symlink():
                continue
            try:
                out.extend(Path(e.path) for e in os.scandir(d)
                           if e.name.endswith(".tmp") and e.is_file(follow_symlinks=False)
                           and _stray_tmp(Path(e.path), any_age))
            except (FileNotFoundError, NotADirectoryError):
                pass
        partial = self.path / "partial"
        if not partial.is_symlink():
            # os.walk, not rglob: a scorer may remove a checkpoint directory while it is being walked
            # (os.walk does not descend into symbolic links)
            for d, _, files in os.walk(partial):
                out.extend(Path(d) / f for f in files if f.endswith(".tmp") and _stray_tmp(Path(d) / f, False))
        return out

    def _recover_if_needed(self) -> None:
        if any(state != "live" for p, state in self._staging_state() if str(p) not in self._rejected) \
                or self._stray_tmp_files():
            try:
                with self._exclusive():
                    self._recover()
            except StoreError:
                if self._pending_journals():
                    raise
            except OSError as exc:
                if self._pending_journals():
                    raise StoreError(f"cannot complete an interrupted change in {self.path}: {_os_reason(exc)}") from None
                # a read-only store: readers ignore dead staging folders and temporary files

    def _journal(self, path: Path) -> list[list[str]] | None:
        """The checked operations of the journal in ``path``; None (and one warning) when it is not lmmap's."""
        try:
            raw = json.loads(_read_plain(path / COMMIT, _MAX_JOURNAL))
        except (ValueError, UnicodeDecodeError, RecursionError):
            raw = None
        except OSError as exc:  # a folder, a link, a FIFO (reading one would block), a huge file
            raw = exc
        try:
            if isinstance(raw, OSError):
                why = ("far larger than any journal lmmap writes" if raw.errno == errno.EFBIG
                       else f"{_what(path / COMMIT)}, not a plain file")
                raise StoreError(f"{path / COMMIT}: not a journal lmmap wrote ({why})")
            if raw is None:
                raise StoreError(f"{path / COMMIT}: not a journal lmmap wrote (not JSON)")
            return _journal_ops(self.path, path, raw)
        except StoreError as exc:
            if str(path) not in self._rejected:
                self._rejected.add(str(path))
                warnings.warn(LmmapWarning(f"{exc}; nothing in it was done (`lmmap doctor --repair` moves it aside)"),
                              stacklevel=4)
            return None

    def _recover(self) -> None:
        """Roll journalled changes forward, drop dead ones and stray temporary files (under the exclusive lock)."""
        for path, state in self._staging_state():
            if str(path) in self._rejected:
                continue
            if state == "committed":
                ops = self._journal(path)
                if ops is None:
                    continue  # damage: reported by `doctor`, moved aside by `doctor --repair`
                try:
                    _apply(self.path, ops, path)
                except OSError as exc:
                    raise StoreError(
                        f"the store {self.path} holds an interrupted change ({path.relative_to(self.path)}) that "
                        f"cannot be completed: {_os_reason(exc)}; fix that and run the command again (`lmmap doctor "
                        "--repair` moves a folder or link in the way aside)"
                    ) from None
                shutil.rmtree(path, ignore_errors=True)
            elif state == "dead":
                if path.is_dir() and not path.is_symlink():
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
        if os.path.lexists(path):
            # a link, folder or FIFO is never opened (`doctor` reports it)
            if not _is_plain(path):
                return None
            try:
                # a file may hold another model (copied in, or a hostile store): it is that model's, not this
                # one's, as `records` says; a damaged record is left to the reader to report
                if _read_record(path).get("model") == name:
                    return path
            except (OSError, LmmapError, pa.ArrowException, ValueError, RecursionError):
                return path
        old = legacy_filename(name)
        if old is not None and old != path.name:
            try:
                legacy = self.path / "models" / old
                if _is_plain(legacy) and _read_record(legacy).get("model") == name:
                    return legacy
            except (OSError, LmmapError):
                return None
        return None

    def has_model(self, name: str) -> bool:
        return self._existing_path(name) is not None

    def _model_files(self) -> list[Path]:
        """Every ``*.parquet`` entry of ``models/``, links, folders and FIFOs included (`_scan` never opens them)."""
        d = self.path / "models"
        if d.is_symlink():
            return []
        try:
            return [Path(e.path) for e in os.scandir(d) if e.name.endswith(".parquet")]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def _scan(self, footers: dict | None = None) -> tuple[dict[str, tuple[Path, dict]], list[Path], list[Path]]:
        """``({name: (file, record)}, unreadable files, second files of a name)``.

        ``footers``: a dict to fill with ``{file: Parquet footer}``, for a caller that reads the files'
        columns under the same hold of the lock (the footer is then read once, not twice).
        Why each unreadable file is so is kept in ``self._why`` (for ``doctor`` and the notes).
        """
        files = self._model_files()

        def read(p):
            if not _is_plain(p):  # a link is never followed; a folder, FIFO or device never opened (a FIFO blocks)
                what = _what(p)
                if what == "missing":
                    return p, None  # removed since the listing
                return p, f"{what}, never followed" if what == "a symbolic link" else f"{what}, not a plain file"
            try:
                rec, footer = _read_footer(p, self.n_texts)
            except FileNotFoundError:
                return p, None  # removed since the listing (rm, doctor): not a model any more
            except LmmapError as exc:
                return p, str(exc).removeprefix(f"{p}: ")
            except (OSError, pa.ArrowException, ValueError, RecursionError) as exc:
                return p, f"not a readable Parquet file ({type(exc).__name__})"
            if footers is not None:
                footers[p] = footer
            return p, rec

        results = parallel_map(read, files, workers=_IO_WORKERS)
        found: dict[str, tuple[Path, dict]] = {}
        unreadable, dups = [], []
        self._why = {}
        for p, rec in results:
            if rec is None:
                continue
            if isinstance(rec, str):
                unreadable.append(p)
                self._why[p] = rec
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

    def _note_unreadable(self, unreadable: list[Path], stacklevel: int) -> None:
        if unreadable:
            p = unreadable[0]
            warnings.warn(
                f"{len(unreadable)} unreadable file(s) in {self.path / 'models'} left out, e.g. {p.name} "
                f"({self._why.get(p, 'unreadable')}); `lmmap doctor` reports them and `lmmap doctor --repair` "
                "moves them aside",
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
        path = self._existing_path(name)
        if path is None:
            raise self._not_in_store(name)
        return _read_footer(path, self.n_texts)[0]

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
        merging = {v["name"]: v["extends"] for v in vectors if "extends" in v}
        plain = [n for n in names if n not in merging]
        early = self._scan()[0]  # refused early, before the slow writing; again at commit
        if not replace:
            self._refuse_clash(plain, early)
        self._refuse_overwrite(names, early)
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
                    self._refuse_clash(plain, found)
                for i, n in enumerate(names):
                    if n in merging and n in found and found[n][1].get("added_ns") != merging[n]:
                        # stored by another process since this one read it: keep that version's other texts
                        _write_durably(self._merged(tables[i], *found[n]), staged[i])
                self._refuse_overwrite(names, found)
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

    def _merged(self, table: pa.Table, path: Path, stored: dict) -> pa.Table:
        """``table`` (a model's new vector) with the rows of its stored version at ``path`` it lacks."""
        rec = json.loads(table.schema.metadata[RECORD_KEY])
        name = rec["model"]
        if stored.get("settings_key") != rec.get("settings_key"):
            raise ModelExistsError(
                f"model {name!r} was stored by another process meanwhile under other settings; nothing was stored "
                "(pass replace=True to overwrite it)", [name])
        old = _read_columns(path, VECTOR_SCHEMA.names)
        keep = old.filter(pa.array(~np.isin(old.column("text_pos").to_numpy(), table.column("text_pos").to_numpy())))
        merged = pa.concat_tables([table.replace_schema_metadata(None), keep]).sort_by("text_pos")
        rec["n_scored"] = merged.num_rows
        rec["n_truncated"] = int(np.count_nonzero(merged.column("truncated").to_numpy(zero_copy_only=False)))
        return merged.replace_schema_metadata({RECORD_KEY: json.dumps(rec).encode()})

    def _refuse_overwrite(self, names, found) -> None:
        """Refuse to publish a model onto a file that holds another model (which would vanish unnoticed)."""
        held = {p: m for m, (p, _) in found.items() if m not in names}
        for n in names:
            other = held.get(self._model_path(n))
            if other is not None:
                raise StoreError(f"{self._model_path(n)} holds model {other!r}, not {n!r}; nothing was stored: "
                                 "`lmmap doctor --repair` gives that file its model's name, then run this again")

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
        names = list(dict.fromkeys(_name_type(n) for n in names))  # a stored name may predate today's rules
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
                for n in names:
                    for kind in STATE_KINDS:
                        state = self._state_path(kind, n)
                        if os.path.lexists(state):
                            tx.delete(state)
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
        rec, footer = _read_footer(path, self.n_texts)
        df = _read_columns(path, VECTOR_SCHEMA.names, footer).to_pandas()
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
        if not self._size_checked:
            self.texts  # a damaged text set is named here, before arrays of store.json's N are made
        footers: dict = {}
        found, unreadable, _ = self._scan(footers)
        self._note_unreadable(unreadable, 3)
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
        if not os.path.lexists(path):
            return pd.DataFrame(index=pd.Index([], name="model"))
        problem = _metadata_problem(path)
        if problem:
            raise StoreError(f"{path}: {problem}; `lmmap doctor --repair` moves it aside (then give the metadata "
                             "again with `lmmap metadata`)")
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

    @contextlib.contextmanager
    def _transaction(self):
        """A change: stage it in the body (``tx.stage_*``, ``tx.delete``); committed under the exclusive lock at
        the end, or dropped if the body raises."""
        tx = _Tx(self)
        try:
            yield tx
            with self._exclusive():
                tx.commit()
        finally:
            if not tx.committed:
                tx.close()

    # -- per-model state of analyses ------------------------------------------------
    def _state_path(self, kind: str, name: str) -> Path:
        if kind not in STATE_KINDS:
            raise InputError(f"state kind must be one of {', '.join(STATE_KINDS)}, got {kind!r}")
        return self._no_link(self.path / kind / f"{model_stem(name)}.json")

    def save_state(self, kind: str, name: str, state: dict) -> None:
        """Keep ``state`` (JSON) for model ``name`` in ``STORE/<kind>/``, as one change of the store.

        ``lmmap rm`` removes it with the model; ``lmmap doctor`` reports the
        state of a model that is not in the store.
        """
        data = json.dumps({**state, "model": name}, indent=2).encode()
        with self._transaction() as tx:
            tx.stage_bytes(data, self._state_path(kind, name))

    def load_state(self, kind: str, name: str) -> dict | None:
        """The state kept for ``name`` (None when there is none, or it is not a JSON object)."""
        path = self._state_path(kind, name)
        try:
            if not _is_plain(path):
                return None  # a link, FIFO or folder: never opened (`doctor` reports it)
            state = json.loads(_read_plain(path, _MAX_INFO))
        except (OSError, ValueError, RecursionError):
            return None
        return state if isinstance(state, dict) else None

    def _orphan_states(self, found) -> list[Path]:
        """State files whose model is not in the store (a run killed before its first store, or an old rm)."""
        stems = {model_stem(n) for n in found}
        out = []
        for kind in STATE_KINDS:
            d = self.path / kind
            if d.is_symlink():
                continue
            out += [p for p in _listdir(d) if p.suffix == ".json" and p.stem not in stems and _is_plain(p)]
        return out

    # -- scoring checkpoints ----------------------------------------------------
    def _no_link(self, path: Path) -> Path:
        """``path`` (inside the store) if no folder on the way to it from the store is a symbolic link."""
        for q in [path, *path.parents]:
            if q == self.path:
                return path
            if q.is_symlink():
                raise StoreError(f"{q} is a symbolic link; lmmap never writes or reads through one in a store "
                                 "(`lmmap doctor --repair` moves it aside)")
        raise StoreError(f"{path} is not inside the store {self.path}")

    def _partial_root(self, name: str) -> Path:
        return self._no_link(self.path / "partial" / model_stem(name))

    def _partial_dir(self, name: str, key: str) -> Path:
        if not _plain_leaf(key):
            raise InputError(f"a checkpoint key must be a plain folder name, got {key!r}")
        return self._no_link(self._partial_root(name) / key)

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
            if other.name != key and other.is_dir() and not other.is_symlink():
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
        partial = self.path / "partial"
        if partial.is_symlink():
            return
        old = legacy_filename(name)
        for d in {partial / model_stem(name), *([] if old is None else [partial / old[: -len(".parquet")]])}:
            if d.exists() and not d.is_symlink():  # a link is not lmmap's: never followed, never removed
                shutil.rmtree(d, ignore_errors=True)

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
            if model_dir.is_symlink() or not model_dir.is_dir():
                continue  # a link is never followed (nor removed: it is not lmmap's)
            keys = [k for k in _listdir(model_dir) if k.is_dir() and not k.is_symlink()]
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
        forward. Every move stays inside the store and never follows a
        symbolic link.
        """
        rep = StoreReport(self.path)
        self._roll_forward = False
        try:
            return self._check(rep, repair)
        finally:
            self._roll_forward = True

    def _check(self, rep: StoreReport, repair: bool) -> StoreReport:
        with self._exclusive() if repair else self._shared():
            obstacles = self._obstacles()
            partial = self.path / "partial"
            links = [] if partial in obstacles else [q for q in _listdir(partial) if q.is_symlink()]
            rep.obstacles = [f"{p.relative_to(self.path)} ({'a symbolic link' if p.is_symlink() else 'a file'})"
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
            for kind in STATE_KINDS:
                if self.path / kind not in obstacles:
                    odd += [q for q in _listdir(self.path / kind) if not _is_plain(q)]
            rep.not_plain = [f"{p.relative_to(self.path)} ({_what(p)})" for p in odd]
            rep.stray_files = [str(p.relative_to(self.path)) for p in self._stray_tmp_files()]
            states = self._staging_state()
            foreign = []
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", LmmapWarning)  # reported here instead
                for p, state in states:
                    if state == "committed" and self._journal(p) is None:
                        foreign.append(p)
            rep.foreign_journals = [str(p.relative_to(self.path)) for p in foreign]
            rep.staging = [f"{p.relative_to(self.path)} ({state})" for p, state in states
                           if state != "live" and p not in foreign]
            found, unreadable, dups = self._scan()
            rep.unreadable = [f"{p.relative_to(self.path)} ({self._why.get(p, 'unreadable')})" for p in unreadable]
            rep.duplicates = [str(p.relative_to(self.path)) for p in dups]
            old = [(n, p) for n, (p, _) in found.items() if p.name != model_filename(n)]
            rep.old_names = [f"{p.relative_to(self.path)} (model {n!r})" for n, p in old]
            orphans = self._orphan_checkpoints(found)
            rep.orphan_checkpoints = [str(p.relative_to(self.path)) for p in orphans]
            rep.orphan_states = [str(p.relative_to(self.path)) for p in self._orphan_states(found)]
            meta = self.path / "metadata.parquet"
            meta_problem = _metadata_problem(meta) if os.path.lexists(meta) else None
            try:
                self._texts = None
                self.texts
            except StoreError as exc:
                rep.damaged_files.append(str(exc).replace(f"{self.path}/", ""))
            if meta_problem:
                rep.damaged_files.append(f"metadata.parquet: {meta_problem}")
            if not repair:
                return rep
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for p in obstacles:  # a file or link where a folder belongs: moved aside, never followed
                os.replace(p, p.with_name(f"{p.name}.moved-aside-{stamp}-{uuid.uuid4().hex[:6]}"))
            (self.path / "models").mkdir(exist_ok=True)
            damaged = self.path / "damaged"

            def aside(p: Path) -> None:
                damaged.mkdir(exist_ok=True)
                dest = damaged / p.name
                if os.path.lexists(dest):
                    dest = damaged / f"{p.name}.{stamp}-{uuid.uuid4().hex[:6]}"
                os.replace(p, dest)

            # A folder, link or FIFO where a model file or metadata.parquet belongs is never lmmap's: moved
            # aside before the roll-forward, which could not rename a file over a folder and would fail forever.
            in_the_way = [p for p in [*unreadable, meta] if os.path.lexists(p) and not _is_plain(p)]
            for p in [*foreign, *links, *odd, *in_the_way]:
                aside(p)
            self._rejected.clear()
            self._recover()
            # scanned again: rolling a change forward may have removed or renamed what was found above
            found, unreadable, dups = self._scan()
            for p in [*unreadable, *dups]:
                aside(p)
            if meta_problem and os.path.lexists(meta):
                aside(meta)
            old = [(n, p) for n, (p, _) in found.items() if p.name != model_filename(n)]
            if old:
                with self._transaction() as tx:
                    for n, p in old:
                        tx.ops.append(["rename", str(p.relative_to(self.path)), str(self._model_path(n).relative_to(self.path))])
            stale = self._orphan_states(found)
            if stale:
                with self._transaction() as tx:
                    for p in stale:
                        tx.delete(p)
            for p in self._orphan_checkpoints(found):
                shutil.rmtree(p, ignore_errors=True)
                if p.parent.name != "partial" and p.parent.exists() and not any(p.parent.iterdir()):
                    p.parent.rmdir()
            rep.repaired = True
        return rep


def _metadata_problem(path: Path) -> str | None:
    """Why ``metadata.parquet`` cannot be used (None when it can)."""
    if path.is_symlink():
        return "a symbolic link, never followed"
    if not _is_plain(path):
        return f"{_what(path)}, not a plain file, never opened"
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException, ValueError) as exc:
        return f"not a readable Parquet file ({type(exc).__name__})"
    if "model" not in schema.names:
        return "no 'model' column"
    return None


def _glob(path: Path, pattern: str) -> list[Path]:
    """The plain files ``path.glob(pattern)`` finds; none if another process removes the directory meanwhile.

    Links and FIFOs are left out: a checkpoint chunk is never read through a link or from a FIFO (which blocks).
    """
    try:
        return [p for p in path.glob(pattern) if _is_plain(p)] if path.exists() else []
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
        f = _open_lock(path / ".lock")
    except (OSError, StoreError):
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


def _read_footer(path: Path, n_texts: int | None = None) -> tuple[dict, pq.FileMetaData]:
    """``(record, footer)`` of a model file; the footer can be handed to :func:`_read_columns`.

    The record is checked (types of the fields lmmap relies on) and, given
    the store's ``n_texts``, so is the file's shape: columns, and a row count
    equal to the record's ``n_scored`` within ``1..n_texts`` (read from the
    footer, so a file claiming 3×10⁸ rows is refused without reading them).
    """
    footer = pq.read_metadata(path)
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

"""The local file system backend: today's mechanics of a store folder (see :mod:`lmmap.data.store`).

**Transactions.** A change's files are written into ``.staging/<txid>/`` (the
owning process holds an ``flock`` on ``.staging/<txid>/.lock`` while it
lives); then, under the store's exclusive lock on ``STORE/.lock``, a journal
``COMMIT`` listing the renames and deletions is written and fsynced, the
renames are done, and the staging directory is removed. The next writer, or
any ``Store(...)`` that finds one, rolls a journalled transaction forward and
removes staging directories whose owner died before its journal was written
(and stray temporary files). Readers take the lock shared while they list and
read, so they see a change entirely or not at all; a reader that finds a dead
writer's journal after taking it rolls it forward first.

**What it promises.** Durability is fsync's (files, journal and folders);
a refused rename (a permission, a full disk) is undone from hard links, so
the store is exactly as before; readers are serialised against commits by
``flock`` (fair to writers through a gate lock). A journal is data, not a
program: :func:`_journal_ops` carries out only lmmap's own operations inside
the store, and nothing is opened through a symbolic link or from a FIFO
(:func:`_is_plain`, :func:`_read_plain`, :func:`_open_lock`). It needs a file
system with POSIX renames and working ``flock`` (not every network file system
has one).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import signal
import stat
import threading
import time
import uuid
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lmmap.data.atomic import atomic_path, atomic_write, fsync_dir, fsync_file
from lmmap.data.storage.base import COMMIT, MATRIX_FOLDER, STAGING, STATE_KINDS, Interrupted, OpsLog, is_matrix_key
from lmmap.data.storage.base import os_reason as _os_reason
from lmmap.data.storage.base import plain_leaf as _plain_leaf
from lmmap.exceptions import LmmapWarning, StoreError

# Largest journal read: far above what lmmap writes (about 150 bytes per model changed), so a
# hostile file cannot make a store's opening read gigabytes.
_MAX_JOURNAL = 256 << 20


def _write_durably(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path)
    fsync_file(path)


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
                                                             and _plain_leaf(leaf)) or is_matrix_key(rel)

    def from_ok(rel: str) -> bool:
        head, _, leaf = rel.rpartition("/")
        return (head == staged and _plain_leaf(leaf)) or in_models(rel)

    def to_ok(rel: str) -> bool:
        return rel == "metadata.parquet" or (in_models(rel) and rel.endswith((".parquet", ".json"))) or is_matrix_key(rel)

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
    for d in (root / "models", txdir, root / MATRIX_FOLDER, *(root / k for k in STATE_KINDS)):
        if d.is_symlink():
            raise StoreError(f"{d} is a symbolic link; lmmap never follows one out of a store "
                             "(`lmmap doctor --repair` moves it aside)")
    return out


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



class _Tx(OpsLog):
    """One change: files staged in ``.staging/<txid>/``, then published by a journalled commit."""

    def __init__(self, storage: "LocalStorage"):
        self.storage = storage
        root = storage.location
        self.id = f"{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.dir = root / STAGING / self.id
        super().__init__()
        self._n = 0
        self._mutex = threading.Lock()  # tables are staged from several threads
        self.committed = False
        # Created under the store lock, so that a recovering process sees the directory and its
        # held lock together, never a directory whose lock is not taken yet.
        with storage.lock(shared=False):
            # again under the lock: a store opened with recover=False (doctor) or long ago has not been checked,
            # and mkdir(parents=True) would follow a .staging that is a link out of the store
            storage.check_layout()
            try:
                self.dir.mkdir(parents=True)
                self._lockf = _open_lock(self.dir / ".lock")
            except OSError as exc:
                raise StoreError(f"cannot write to the store {root}: {_os_reason(exc)}; nothing was changed") from None
            fcntl.flock(self._lockf.fileno(), fcntl.LOCK_EX)

    def _stage_path(self, dest: str) -> Path:
        with self._mutex:
            if dest in self._slots:
                return self.storage.location / self.ops[self._slots[dest]][1]
            self._n += 1
            staged = self.dir / f"{self._n:06d}.parquet"
            self._slots[dest] = len(self.ops)
            self.ops.append(["rename", f"{STAGING}/{self.id}/{staged.name}", dest])
            return staged

    def stage_bytes(self, data: bytes, dest: str) -> None:
        staged = self._stage_path(dest)
        staged.write_bytes(data)
        fsync_file(staged)

    def stage_table(self, table: pa.Table, dest: str) -> None:
        _write_durably(table, self._stage_path(dest))

    def commit(self) -> None:
        """Publish the staged files; the caller holds the store's exclusive lock.

        All or nothing: once the journal is written the change is complete
        even if the process is killed (the next opener rolls it forward); if
        the file system refuses an operation (a permission, a full disk) what
        was done is undone, the journal withdrawn and a :class:`StoreError`
        raised, so the store is exactly as before.
        """
        root = self.storage.location
        ops = _journal_ops(root, self.dir, {"ops": self.ops})  # never write through a link out of the store
        journal = json.dumps({"txid": self.id, "ops": ops}).encode()
        fsync_dir(self.dir)  # the staged files' names are durable before the journal that renames them
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


class LocalStorage:
    """A store in a folder of the local file system (see the module docstring)."""

    #: folders of the store that must be folders (a file or link there is an obstacle, never followed)
    FOLDERS = ("models", STAGING, "partial", "damaged", *STATE_KINDS)

    def __init__(self, path):
        self.location = Path(path)
        self.requests: dict = {}
        self._held = 0  # depth of this object's hold on the store lock (shared or exclusive)
        self._held_lock = threading.RLock()
        self.rejected: set[str] = set()  # journals refused as not lmmap's (warned about once)
        # Taking the lock rolls a leftover journal forward; `doctor` turns that off to look first (and, repairing,
        # to move aside what would make the roll-forward fail forever)
        self.roll_forward = True

    # -- files ------------------------------------------------------------------------
    def where(self, key: str) -> str:
        return str(self.location / key) if key else str(self.location)

    def path(self, key: str) -> Path:
        return self.location / key

    def what(self, key: str) -> str | None:
        p = self.location / key
        return None if _is_plain(p) else _what(p)

    def list(self, prefix: str) -> list[str]:
        d = self.location / prefix
        if d.is_symlink():
            return []  # an obstacle (`check_layout`), never followed
        try:
            return [e.name for e in os.scandir(d)]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def read(self, key: str, limit: int) -> bytes:
        return _read_plain(self.location / key, limit)

    @contextlib.contextmanager
    def open(self, key: str):
        yield self.location / key

    def put(self, key: str, data: bytes) -> None:
        path = self.location / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, mkdir=False) as tmp:
            tmp.write_bytes(data)

    def remove(self, prefix: str) -> None:
        d = self.location / prefix
        if d.exists() and not d.is_symlink():  # a link is not lmmap's: never followed, never removed
            shutil.rmtree(d, ignore_errors=True)

    def guard(self, key: str) -> str:
        """``key`` if no folder on the way to it from the store is a symbolic link."""
        path = self.location / key
        for q in [path, *path.parents]:
            if q == self.location:
                return key
            if q.is_symlink():
                raise StoreError(f"{q} is a symbolic link; lmmap never writes or reads through one in a store "
                                 "(`lmmap doctor --repair` moves it aside)")
        raise StoreError(f"{path} is not inside the store {self.location}")

    def create(self, files: dict[str, bytes]) -> None:
        """Write a new store's files (``store.json`` last: a folder without it is no store yet)."""
        self.location.mkdir(parents=True, exist_ok=True)
        (self.location / "models").mkdir(exist_ok=True)
        for key, data in sorted(files.items(), key=lambda kv: kv[0] == "store.json"):
            atomic_write(self.location / key, data)

    def begin(self) -> _Tx:
        return _Tx(self)

    def doctor(self, store, report, repair: bool):
        from lmmap.data.store.doctor import check_local

        self.roll_forward = False  # look before rolling anything forward
        try:
            return check_local(store, report, repair)
        finally:
            self.roll_forward = True

    # -- locking ----------------------------------------------------------------------
    def lock(self, shared: bool):
        return self._locked(fcntl.LOCK_SH if shared else fcntl.LOCK_EX, not shared)

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
                f = _open_lock(self.location / ".lock")
                try:
                    gate = _open_lock(self.location / ".lock-gate")
                except BaseException:
                    f.close()
                    raise
            except OSError:
                if required:
                    raise StoreError(f"cannot write to the store {self.location}: no permission to create "
                                     f"{self.location / '.lock'}") from None
                if self.pending_journals():
                    raise StoreError(
                        f"the store {self.location} holds a change that was interrupted midway ({STAGING}/…/{COMMIT}) "
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
                    while self.roll_forward and self.pending_journals():
                        if mode == fcntl.LOCK_SH:
                            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
                            _flock(f, gate, fcntl.LOCK_EX)
                        self.recover()
                        if mode == fcntl.LOCK_SH:
                            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
                            _flock(f, gate, fcntl.LOCK_SH)  # and look again: another writer may have died meanwhile
                    yield
                finally:
                    fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        finally:
            with self._held_lock:
                self._held -= 1

    # -- layout -----------------------------------------------------------------------
    def obstacles(self) -> list[Path]:
        """The store's own folders that are something else (a file, a symbolic link): lmmap never follows them."""
        out = []
        for name in self.FOLDERS:
            d = self.location / name
            if d.is_symlink() or (os.path.lexists(d) and not d.is_dir()):
                out.append(d)
        return out

    def check_layout(self) -> None:
        bad = self.obstacles()
        if bad:
            what = "a symbolic link" if bad[0].is_symlink() else "not a folder"
            raise StoreError(
                f"{bad[0]} is {what}; lmmap never writes or reads through it: `lmmap doctor --repair` moves it aside"
            )

    # -- recovery -----------------------------------------------------------------------
    def staging_state(self) -> list[tuple[Path, str]]:
        """Each staging entry with its state: ``committed``, ``dead`` or ``live``."""
        root = self.location / STAGING
        if root.is_symlink():
            return []  # an obstacle (`check_layout`), never followed
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

    def pending_journals(self) -> list[Path]:
        """Staging folders holding a journal not yet carried out (those refused as hostile left out)."""
        root = self.location / STAGING
        if root.is_symlink():
            return []
        try:
            return [Path(e.path) for e in os.scandir(root)
                    if e.is_dir(follow_symlinks=False) and os.path.lexists(os.path.join(e.path, COMMIT))
                    and e.path not in self.rejected]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def stray_tmp_files(self) -> list[Path]:
        out = []
        # lmmap writes no temporary file into models/ any more (changes are staged), so any there is
        # a leftover; in the store's root another process may be writing one right now.
        for d, any_age in ((self.location, False), (self.location / "models", True)):
            if d.is_symlink():
                continue
            try:
                out.extend(Path(e.path) for e in os.scandir(d)
                           if e.name.endswith(".tmp") and e.is_file(follow_symlinks=False)
                           and _stray_tmp(Path(e.path), any_age))
            except (FileNotFoundError, NotADirectoryError):
                pass
        partial = self.location / "partial"
        if not partial.is_symlink():
            # os.walk, not rglob: a scorer may remove a checkpoint directory while it is being walked
            # (os.walk does not descend into symbolic links)
            for d, _, files in os.walk(partial):
                out.extend(Path(d) / f for f in files if f.endswith(".tmp") and _stray_tmp(Path(d) / f, False))
        return out

    def recover_if_needed(self) -> None:
        if any(state != "live" for p, state in self.staging_state() if str(p) not in self.rejected) \
                or self.stray_tmp_files():
            try:
                with self.lock(shared=False):
                    self.recover()
            except StoreError:
                if self.pending_journals():
                    raise
            except OSError as exc:
                if self.pending_journals():
                    raise StoreError(f"cannot complete an interrupted change in {self.location}: "
                                     f"{_os_reason(exc)}") from None
                # a read-only store: readers ignore dead staging folders and temporary files

    def journal(self, path: Path) -> list[list[str]] | None:
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
            return _journal_ops(self.location, path, raw)
        except StoreError as exc:
            if str(path) not in self.rejected:
                self.rejected.add(str(path))
                warnings.warn(LmmapWarning(f"{exc}; nothing in it was done (`lmmap doctor --repair` moves it aside)"),
                              stacklevel=5)
            return None

    def recover(self) -> None:
        """Roll journalled changes forward, drop dead ones and stray temporary files (under the exclusive lock)."""
        for path, state in self.staging_state():
            if str(path) in self.rejected:
                continue
            if state == "committed":
                ops = self.journal(path)
                if ops is None:
                    continue  # damage: reported by `doctor`, moved aside by `doctor --repair`
                try:
                    _apply(self.location, ops, path)
                except OSError as exc:
                    raise StoreError(
                        f"the store {self.location} holds an interrupted change ({path.relative_to(self.location)}) "
                        f"that cannot be completed: {_os_reason(exc)}; fix that and run the command again (`lmmap "
                        "doctor --repair` moves a folder or link in the way aside)"
                    ) from None
                shutil.rmtree(path, ignore_errors=True)
            elif state == "dead":
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        for p in self.stray_tmp_files():
            p.unlink(missing_ok=True)


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


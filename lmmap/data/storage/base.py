"""The seam between the store's logic and where its bytes live: :class:`Storage` and :class:`Transaction`.

The store (:mod:`lmmap.data.store`) names every file by a *key*, a relative
POSIX path such as ``models/<file>.parquet``, ``metadata.parquet``,
``adaptive/<file>.json`` or ``partial/<file>/<settings>/chunk-….parquet``, and
reaches its bytes only through a backend. A backend provides:

- ``list(prefix)``: the names directly under a folder key; ``what(key)``: None
  for a plain file, ``"missing"``, or what else is there (for messages);
- ``read(key, limit)``: the bytes of a small file (size-capped);
  ``open(key)``: something pyarrow reads (a path or a file object);
- ``put(key, data)``: an atomic write outside any transaction (scoring
  checkpoints, a new store's first files); ``remove(prefix)``: drop a folder
  of such files;
- ``begin()``: a :class:`Transaction` — staged puts, renames and deletions
  published by ``commit()`` so that a reader sees all of them or none;
- ``lock(shared)``: what a reader (``shared=True``) or a committer holds
  while it reads or commits; ``recover()``: finish or drop what a killed
  writer left.

A backend whose commit is optimistic (:mod:`lmmap.data.storage.objects`)
raises :class:`CommitConflict` from ``commit()`` when another writer committed
first; the store then runs its checks again on the new state and retries.
"""

from __future__ import annotations

import contextlib
from typing import Any, ContextManager, Protocol, runtime_checkable

from lmmap.exceptions import Interrupted, StoreError  # noqa: F401  (Interrupted: the one class, importable from here)

STAGING = ".staging"
COMMIT = "COMMIT"
# Folders of per-model state that analyses keep in the store (adaptive placement's marker and settings).
STATE_KINDS = ("adaptive",)
# The consolidated matrix's folder (lmmap.data.store.matrix): its index and float32 segments.
MATRIX_FOLDER = "matrix"


def is_matrix_key(key: str) -> bool:
    """Whether ``key`` is a file of the consolidated matrix: ``matrix/index.parquet``, ``matrix/seg-<hex>.npy``
    or a stored neighbour index ``matrix/neighbors-<hex>.parquet``."""
    head, _, leaf = key.partition("/")
    return head == MATRIX_FOLDER and plain_leaf(leaf) and (
        leaf == "index.parquet" or (leaf.startswith("seg-") and leaf.endswith(".npy"))
        or (leaf.startswith("neighbors-") and leaf.endswith(".parquet")))


class OpsLog:
    """The operations a transaction will publish, in order (``["rename"|"put", source, key]``, ``["delete", key]``),
    shared by every backend's transaction: staging a key again rewrites its operation, and ``mark``/``reset``
    drop what was staged after a point (the store retries a refused step without starting over)."""

    def __init__(self):
        self.ops: list[list[str]] = []
        self._slots: dict[str, int] = {}  # destination -> index of its operation in ops

    def rename(self, src: str, dest: str) -> None:
        self.ops.append(["rename", src, dest])

    def delete(self, key: str) -> None:
        self.ops.append(["delete", key])

    def mark(self):
        return len(self.ops)

    def reset(self, mark) -> None:
        del self.ops[mark:]
        self._slots = {d: i for d, i in self._slots.items() if i < mark}


class CommitConflict(StoreError):
    """Another writer committed first (optimistic backends only): check again on the new state and retry."""


class Unreachable(StoreError):
    """The storage itself failed (a network, a permission, a missing bucket): never a property of one file, so
    never reported as a damaged file (nor moved aside by ``doctor --repair``)."""


def os_reason(exc: OSError) -> str:
    """What went wrong in ``exc``, in a few words naming the file(s)."""
    what = (exc.strerror or str(exc) or type(exc).__name__).lower()
    if getattr(exc, "filename", None) and getattr(exc, "filename2", None):
        # a rename: which side is the problem is not said, so name both
        return f"{what} ({exc.filename} -> {exc.filename2})"
    return f"{what} ({exc.filename})" if getattr(exc, "filename", None) else what


def plain_leaf(leaf: str) -> bool:
    """Whether ``leaf`` is a file name lmmap could have written (one component, at most 255 bytes)."""
    # lmmap's file names stay far under 255 bytes (model_stem): a longer one could never be renamed into
    # place, and a journal naming one would block every command of the store
    return (bool(leaf) and leaf not in (".", "..") and "/" not in leaf and "\\" not in leaf and "\0" not in leaf
            and len(leaf.encode("utf-8", "surrogatepass")) <= 255)


@runtime_checkable
class Transaction(Protocol):
    committed: bool

    def stage_table(self, table, dest: str) -> None:
        """Write a pyarrow table that the commit publishes as ``dest`` (staging ``dest`` again replaces it)."""

    def stage_bytes(self, data: bytes, dest: str) -> None:
        """Write ``data`` that the commit publishes as ``dest``."""

    def rename(self, src: str, dest: str) -> None:
        """Publish the stored file ``src`` as ``dest`` (``doctor --repair`` renaming an old-style file)."""

    def delete(self, key: str) -> None:
        """Remove ``key`` at commit."""

    def mark(self) -> Any:
        """A point to go back to with :meth:`reset` (the operations added since are dropped)."""

    def reset(self, mark: Any) -> None: ...

    def commit(self) -> None:
        """Publish everything at once (the caller holds ``lock(shared=False)``)."""

    def close(self) -> None:
        """Drop what was staged, unless committed."""


@runtime_checkable
class Storage(Protocol):
    #: what ``Store.path`` is: a :class:`pathlib.Path` for a folder, the URL for object storage
    location: Any
    #: ``(operation, requests)`` counts where the backend keeps them (object storage), for measurements
    requests: dict

    def where(self, key: str) -> str:
        """``key`` as the user would name it in a message."""

    def what(self, key: str) -> str | None: ...

    def list(self, prefix: str) -> list[str]: ...

    def read(self, key: str, limit: int) -> bytes: ...

    def open(self, key: str) -> ContextManager: ...

    def put(self, key: str, data: bytes) -> None: ...

    def remove(self, prefix: str) -> None: ...

    def begin(self) -> Transaction: ...

    def lock(self, shared: bool) -> ContextManager: ...

    def recover(self) -> None: ...

    def recover_if_needed(self) -> None: ...

    def check_layout(self) -> None: ...

    def guard(self, key: str) -> str:
        """``key`` if it can be read and written without leaving the store; a StoreError otherwise."""

    def doctor(self, store, report, repair: bool):
        """Fill ``report`` (a :class:`lmmap.data.store.doctor.StoreReport`) for ``store``; fix what it found."""


@contextlib.contextmanager
def nothing():
    yield

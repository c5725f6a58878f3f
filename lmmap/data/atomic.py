"""The one way lmmap writes a file: under a temporary name in the same folder, fsynced, then renamed.

A reader (or a process killed mid-write) sees the old file or the new one,
never half of one. Temporary files are named ``.<name>.<pid>.<hex>.tmp`` so
that a later command (``lmmap doctor``, or the store on opening) can tell a
dead writer's leftovers from a live writer's file.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path


def temp_path(path: str | os.PathLike) -> Path:
    """A fresh temporary name beside ``path`` (hidden, carries this process's pid)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")


def fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename in ``path`` durable (best effort: some file systems cannot fsync a folder)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, mkdir: bool = True):
    """Yield a temporary path to write ``path`` through; on success it is fsynced and renamed into place.

    On an exception (or Ctrl-C) the temporary file is removed and ``path`` is
    left as it was.
    """
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (text is UTF-8) to ``path`` atomically; returns ``path``."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path) as tmp:
        tmp.write_bytes(raw)
    return Path(path)

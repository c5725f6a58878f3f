"""Loading pickles without letting them run code (SPEC §8).

A pickle is a program: ``pickle.load`` calls whatever importable function the
file names, so a crafted file can run ``os.system``. The authors' published
data are pickles, so lmmap reads them, but only on explicit request
(``--allow-pickle``) and only through :class:`RestrictedUnpickler`, which
resolves a short allow-list of globals: plain containers, strings, bytes,
numbers, datetimes, and numpy arrays/scalars with the few helpers numpy
itself pickles them with. Any other global is refused before it is imported,
and the refusal names it.

The numpy helpers live in ``numpy.core`` in numpy 1.x and in ``numpy._core``
in numpy 2.x; files written by either are accepted, and both names are
resolved to the installed numpy's objects (never by importing the
deprecated ``numpy.core`` shim).
"""

from __future__ import annotations

import _compat_pickle
import collections
import datetime
import importlib
import io
import os
import pickle
from functools import lru_cache
from pathlib import Path

from .exceptions import LmmapError

__all__ = ["RestrictedUnpickler", "RefusedGlobal", "restricted_loads", "load_pickle", "is_pickle"]


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a global outside the allow-list (carries ``module`` and ``name``)."""

    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.module = module
        self.name = name


def _latin1_encode(obj, encoding="utf-8", errors="strict"):
    """Stand-in for ``_codecs.encode``, which protocol-2 pickles use to spell ``bytes``.

    Only the latin-1 round trip that pickle itself emits is allowed, so a file
    cannot use this entry to reach other codecs.
    """
    if not isinstance(obj, str) or encoding.lower().replace("_", "-") not in ("latin1", "latin-1"):
        raise RefusedGlobal("_codecs", f"encode(..., {encoding!r})")
    return obj.encode("latin-1", errors)


def _numpy_core(submodule: str):
    """``numpy._core.<submodule>`` (numpy 2.x), else ``numpy.core.<submodule>`` (numpy 1.x)."""
    try:
        return importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:
        return importlib.import_module(f"numpy.core.{submodule}")


@lru_cache(maxsize=1)
def _allowed_globals() -> dict[tuple[str, str], object]:
    """The only globals a pickle may reference, keyed by (module, name) as written in the file."""
    import numpy as np

    multiarray = _numpy_core("multiarray")
    numeric = _numpy_core("numeric")
    allowed: dict[tuple[str, str], object] = {
        # Containers and values that pickle spells with a global (protocols 0-3 for
        # sets; bytes/bytearray/complex always or in old protocols).
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "bytes"): bytes,
        ("builtins", "bytearray"): bytearray,
        ("builtins", "complex"): complex,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("datetime", "datetime"): datetime.datetime,
        ("datetime", "date"): datetime.date,
        ("datetime", "time"): datetime.time,
        ("datetime", "timedelta"): datetime.timedelta,
        ("datetime", "timezone"): datetime.timezone,
        ("_codecs", "encode"): _latin1_encode,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the allow-listed globals and raises :class:`RefusedGlobal` for any other."""

    def find_class(self, module: str, name: str):
        # The C unpickler hands over the names exactly as written; protocols 0-2
        # write Python 2 names (``__builtin__.set``), mapped here as pickle's own
        # find_class would. The mapping only renames, so applying it to every
        # protocol admits nothing new.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        try:
            return _allowed_globals()[(module, name)]
        except KeyError:
            raise RefusedGlobal(module, name) from None

    def persistent_load(self, pid):
        raise RefusedGlobal("<persistent id>", repr(pid))


def _refusal_message(source: str, module: str, name: str) -> str:
    what = f"{module}.{name}"
    if module.split(".")[0] == "pandas":
        hint = (
            "lmmap admits no pandas objects from a pickle; convert them to plain values first "
            "(e.g. Timestamp.isoformat(), DataFrame.to_dict(), Series.to_numpy()) and re-pickle, "
            "or export the data to Parquet/CSV"
        )
    else:
        hint = (
            "lmmap loads only plain containers, strings, numbers, datetimes and numpy arrays from a pickle; "
            "if you trust the file, load it yourself and save the vectors as NPZ "
            "(np.savez(path, L=matrix, models=names)), then import that"
        )
    return f"refusing to unpickle {source}: it references {what}, which is not a plain container/number/array; {hint}"


def restricted_loads(data: bytes, source: str = "<bytes>"):
    """Unpickle ``data`` with :class:`RestrictedUnpickler`; errors are :class:`LmmapError` naming ``source``."""
    try:
        return RestrictedUnpickler(io.BytesIO(data)).load()
    except RefusedGlobal as exc:
        raise LmmapError(_refusal_message(source, exc.module, exc.name)) from None
    except LmmapError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, OverflowError) as exc:
        raise LmmapError(
            f"{source} is not a readable pickle ({type(exc).__name__}: {exc}); check that the file is complete"
        ) from None


def is_pickle(head: bytes) -> bool:
    """Whether a file's first bytes look like a pickle of protocol 2 or later (PROTO opcode)."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= pickle.HIGHEST_PROTOCOL


def load_pickle(path: str | os.PathLike, allow_pickle: bool = False):
    """The object pickled in ``path``, loaded with the restricted unpickler, only if ``allow_pickle``."""
    path = Path(path)
    if not allow_pickle:
        raise LmmapError(
            f"{path} is a pickle, which can run code when loaded; pass --allow-pickle (allow_pickle=True) "
            "if you trust it; lmmap then loads it with a restricted unpickler"
        )
    if not path.is_file():
        raise LmmapError(f"{path} does not exist or is not a file")
    data = path.read_bytes()
    if not data:
        raise LmmapError(f"{path} is empty: expected a pickle")
    return restricted_loads(data, str(path))

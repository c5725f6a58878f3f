"""Loading pickles without letting them run code (SPEC §8).

A pickle is a program: ``pickle.load`` calls whatever importable function the
file names, so a crafted file can run ``os.system``. The authors' published
data are pickles, so lmmap reads them, but only on explicit request
(``allow_pickle=True``; ``--allow-pickle`` on the command line) and only
through :class:`RestrictedUnpickler`, which resolves a short allow-list of
globals: plain containers, strings, bytes, numbers, datetimes, and numpy
arrays/scalars with the few helpers numpy itself pickles them with. Any
other global is refused before it is imported, and the refusal names it.

The numpy helpers live in ``numpy.core`` in numpy 1.x and in ``numpy._core``
in numpy 2.x; files written by either are accepted, and both names are
resolved to the installed numpy's objects (never by importing the
deprecated ``numpy.core`` shim).

A small file must not exhaust memory either: the allowed constructors that
allocate from a number (``bytes(n)``, ``bytearray(n)``, ``ndarray(shape)``,
numpy's ``_reconstruct``) are bounded by the size of the file, and a memo
index (which the C unpickler turns into an array of that length) must be one
the file could have produced. Both are refused with a one-line error.
"""

from __future__ import annotations

import _compat_pickle
import collections
import datetime
import importlib
import io
import math
import os
import pickle
import pickletools
import warnings
from functools import lru_cache
from pathlib import Path

from lmmap.exceptions import FormatError, InputError, LmmapError

__all__ = ["RestrictedUnpickler", "RefusedGlobal", "TooLarge", "restricted_loads", "load_pickle", "is_pickle"]


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a global outside the allow-list (carries ``module`` and ``name``)."""

    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.module = module
        self.name = name


class TooLarge(pickle.UnpicklingError):
    """A pickle asked for an object far larger than the file could hold (carries ``what`` and ``nbytes``)."""

    def __init__(self, what: str, nbytes: int, limit: int):
        super().__init__(f"{what} of {nbytes} bytes (limit {limit})")
        self.what, self.nbytes, self.limit = what, nbytes, limit


# Without a file size to go by (restricted_loads on bytes of unknown origin, a stream), one object may ask
# for at most this much memory.
DEFAULT_MAX_BYTES = 1 << 30


def _nbytes(shape, dtype) -> int:
    """Bytes an array of ``shape`` and ``dtype`` would take (exact Python ints: no overflow)."""
    import numpy as np

    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    if not all(isinstance(d, int) for d in dims):
        raise FormatError(f"array shape must be integers, got {shape!r}")
    return math.prod(max(d, 0) for d in dims) * np.dtype(dtype).itemsize


class _NdarrayGlobal:
    """What ``numpy.ndarray`` resolves to: callable with a size bound, and swapped back by ``_reconstruct``.

    Pickles name ``numpy.ndarray`` only as the subtype argument of ``_reconstruct``; calling it
    directly (``ndarray((10**12,), 'f8')``) would allocate whatever the file asks for.
    """

    def __init__(self, limit: int):
        self.limit = limit

    def __call__(self, shape, dtype=float, buffer=None, *args, **kwargs):
        import numpy as np

        if buffer is None:
            n = _nbytes(shape, dtype)
            if n > self.limit:
                raise TooLarge(f"numpy array of shape {shape!r}", n, self.limit)
        return np.ndarray(shape, dtype, buffer, *args, **kwargs)


def _bounded_globals(limit: int) -> dict[tuple[str, str], object]:
    """The allocating globals, each refusing sizes beyond ``limit`` bytes before allocating."""
    import numpy as np

    multiarray = _numpy_core("multiarray")
    ndarray_global = _NdarrayGlobal(limit)

    def sized(cls):
        def make(*args):
            if args and isinstance(args[0], int) and args[0] > limit:
                raise TooLarge(f"{cls.__name__}({args[0]})", args[0], limit)
            return cls(*args)

        return make

    def reconstruct(subtype, shape, dtype):
        if subtype is ndarray_global:
            subtype = np.ndarray
        n = _nbytes(shape, dtype)
        if n > limit:
            raise TooLarge(f"numpy array of shape {shape!r}", n, limit)
        return multiarray._reconstruct(subtype, shape, dtype)

    out = {
        ("builtins", "bytes"): sized(bytes),
        ("builtins", "bytearray"): sized(bytearray),
        ("numpy", "ndarray"): ndarray_global,
    }
    for core in ("numpy.core", "numpy._core"):
        out[(f"{core}.multiarray", "_reconstruct")] = reconstruct
    return out


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
    """An unpickler that resolves only the allow-listed globals and raises :class:`RefusedGlobal` for any other.

    ``max_bytes`` bounds what one allocating global (``bytes(n)``, an array's shape) may ask for; it raises
    :class:`TooLarge` beyond it.
    """

    def __init__(self, file, *, max_bytes: int = DEFAULT_MAX_BYTES, **kwargs):
        super().__init__(file, **kwargs)
        self._bounded = _bounded_globals(max_bytes)

    def find_class(self, module: str, name: str):
        # The C unpickler hands over the names exactly as written; protocols 0-2
        # write Python 2 names (``__builtin__.set``), mapped here as pickle's own
        # find_class would. The mapping only renames, so applying it to every
        # protocol admits nothing new.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        if (module, name) in self._bounded:
            return self._bounded[(module, name)]
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


def _check_memo(data: bytes, source: str) -> None:
    """Refuse memo indices no pickler would write, before the C unpickler sizes its memo by them.

    ``LONG_BINPUT 4294967280`` makes the C unpickler allocate a 32 GiB memo table; a pickler numbers its
    memo entries 0, 1, 2 ..., one per earlier opcode at most. The walk also refuses opcodes whose
    declared argument length runs past the end of the data, before anything is allocated for them.
    """
    n_ops = 0
    try:
        with warnings.catch_warnings():
            # genops decodes protocol-0 string escapes and warns about odd ones; the unpickler judges them.
            warnings.simplefilter("ignore", DeprecationWarning)
            for op, arg in _ops(data):
                n_ops += 1
                if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and not (isinstance(arg, int) and 0 <= arg < n_ops):
                    raise FormatError(
                        f"{source} is not a pickle lmmap can read safely: memo index {arg} at opcode {n_ops} is not "
                        "one a pickler writes (it would make the unpickler allocate a table that large); the file "
                        "is damaged or crafted"
                    )
    except LmmapError:
        raise
    except Exception as exc:  # genops raises ValueError for truncated or unknown opcodes
        raise FormatError(
            f"{source} is not a readable pickle ({type(exc).__name__}: {_one_line(exc)}); check that the file is complete"
        ) from None


def _ops(data: bytes):
    for op, arg, _ in pickletools.genops(data):
        yield op, arg
        if op.name == "STOP":
            return


def _one_line(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def restricted_loads(data: bytes, source: str = "<bytes>", max_bytes: int | None = None):
    """Unpickle ``data`` with :class:`RestrictedUnpickler`; errors are :class:`LmmapError` naming ``source``.

    ``max_bytes``: the most one allocating global may ask for (default: the size of ``data``, at least
    1 MiB; a real pickle holds the bytes of its arrays and strings).
    """
    if max_bytes is None:
        max_bytes = max(len(data), 1 << 20)
    _check_memo(data, source)
    try:
        return RestrictedUnpickler(io.BytesIO(data), max_bytes=max_bytes).load()
    except RefusedGlobal as exc:
        raise FormatError(_refusal_message(source, exc.module, exc.name)) from None
    except TooLarge as exc:
        raise FormatError(
            f"refusing to unpickle {source}: it asks for a {exc.what} ({exc.nbytes:,} bytes), far more than the "
            f"{len(data):,}-byte file could hold (limit {exc.limit:,} bytes); the file is damaged or crafted"
        ) from None
    except LmmapError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OverflowError, RecursionError, MemoryError) as exc:
        raise FormatError(
            f"{source} is not a readable pickle ({type(exc).__name__}: {_one_line(exc)}); check that the file is complete"
        ) from None


def is_pickle(head: bytes) -> bool:
    """Whether a file's first bytes look like a pickle of protocol 2 or later (PROTO opcode)."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= pickle.HIGHEST_PROTOCOL


def load_pickle(path: str | os.PathLike, allow_pickle: bool = False):
    """The object pickled in ``path``, loaded with the restricted unpickler, only if ``allow_pickle``."""
    path = Path(path)
    if not allow_pickle:
        raise InputError(
            f"{path} is a pickle, which can run code when loaded; pass {{allow_pickle=True}} "
            "if you trust it; lmmap then loads it with a restricted unpickler",
            params=("allow_pickle",),
        )
    if not path.is_file():
        raise FormatError(f"{path} does not exist or is not a file")
    data = path.read_bytes()
    if not data:
        raise FormatError(f"{path} is empty: expected a pickle")
    return restricted_loads(data, str(path))

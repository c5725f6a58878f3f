"""File names made from user strings (model names, benchmark targets): safe, bounded and unique in a run.

``safe_filename("x y", taken)`` gives a stem every file system accepts: ASCII letters, digits, ``-``,
``_`` and ``.``, never starting with ``.`` or ``-``, at most ``max_len`` characters. A string that is
not already such a stem gets a short hash of the original string appended, so ``x y``, ``x_y`` and
``x_y_1`` give three different files, and the name of each does not depend on which came first.
Names are compared case-insensitively (``A`` and ``a`` are the same file on macOS and Windows).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from lmmap.exceptions import InputError

__all__ = ["safe_filename"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Names Windows reserves whatever the extension.
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
_HASH_CHARS = 8


def _digest(s: str, n: int = _HASH_CHARS) -> str:
    return hashlib.sha256(s.encode("utf-8", "surrogatepass")).hexdigest()[:n]


def safe_filename(s: str, taken: set[str], max_len: int = 80) -> str:
    """A file-name stem (no extension) for ``s``, unique among ``taken``; it is added to ``taken``.

    ``taken``: the stems already used by this run's outputs, the same set for every call (compared
    without case; the answer is added as returned). ``max_len``: the longest stem returned (at least 16), leaving room for an extension
    well under the 255-byte limit of file names.

    A string that is already a safe stem is used as is (``x_y`` -> ``x_y``); any other is slugged
    and gets ``-`` and 8 hex digits of its SHA-256 (``x y`` -> ``x_y-<hash>``), as does a stem
    longer than ``max_len`` (cut to fit). Should two strings still meet (same string twice, or a
    hash collision), ``-2``, ``-3`` ... is appended.
    """
    if not isinstance(s, str):
        raise InputError(f"a file name must come from a string, got {type(s).__name__} {s!r}", params=("s",))
    if not isinstance(max_len, int) or max_len < 16:
        raise InputError(f"max_len must be an integer of at least 16, got {max_len!r}", params=("max_len",))
    ascii_form = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode("ascii")
    slug = _UNSAFE.sub("_", ascii_form).strip("_")
    slug = slug.lstrip(".-") or "_"
    exact = (
        slug == s
        and len(slug) <= max_len
        and slug.lower().split(".")[0] not in _RESERVED
        and not slug.endswith(".")  # Windows drops a trailing dot
    )
    if exact:
        stem = slug
    else:
        if slug.lower().split(".")[0] in _RESERVED:
            slug = "_" + slug
        room = max_len - _HASH_CHARS - 1
        stem = f"{slug[:room].rstrip('._-') or '_'}-{_digest(s)}"
    used = {t.lower() for t in taken}
    candidate, k = stem, 1
    while candidate.lower() in used:
        k += 1
        suffix = f"-{k}"
        candidate = stem[: max_len - len(suffix)] + suffix
    taken.add(candidate)
    return candidate

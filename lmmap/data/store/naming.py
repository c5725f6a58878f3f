"""Model names and the file names they get (see :mod:`lmmap.data.store`, "File names")."""

from __future__ import annotations

import datetime as _dt
import hashlib
import unicodedata
from urllib.parse import quote, unquote

from lmmap.exceptions import InputError

_SAFE = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")
_MAX_STEM = 200  # bytes of an unshortened encoding; with ".parquet" well under 255
_PREFIX = 120  # bytes of readable prefix kept when a name is shortened
_HASH_HEX = 16


def _name_bytes(name: str) -> bytes:
    # surrogatepass: a lone surrogate is a legal Python str and must still get a file.
    return name.encode("utf-8", "surrogatepass")


def _name_type(name) -> str:
    if not isinstance(name, str):
        raise InputError(f"a model name must be a string, got {type(name).__name__} {name!r}", params=("name",))
    if not name:
        raise InputError("a model name cannot be empty; give the model a name", params=("name",))
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
        raise InputError(f"a model name cannot be only white space ({name!r}); give the model a name", params=("name",))
    bad = next((ch for ch in name if ch == "\0" or unicodedata.category(ch) == "Cs" or len(f"a{ch}b".splitlines()) > 1),
               None)
    if bad is not None:
        what = ("a lone surrogate" if unicodedata.category(bad) == "Cs" else "a NUL character" if bad == "\0"
                else "a line break")
        raise InputError(f"model name {name!r} holds {what} ({bad!r}), which no file or command line keeps intact; "
                         "give the model another name", params=("name",))
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


"""NPZ, lmmap's own array format: ``L`` (models × texts), ``models`` (names) and, optionally,
``n_tokens``, ``text_pos``, ``text_set_id``, ``convention``, ``metadata_json``.

Read without pickle, and checked from the members' headers before anything is
loaded: a header that claims more than its member holds, a deflated member
that would expand a hundredfold (a zip bomb), arrays wider than the store's
text set or larger than half the machine's memory are refused first.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np
import numpy.lib.format as npformat

from dataclasses import dataclass

from lmmap.data.formats.common import (Vectors, _check_convention, _check_names, _check_positions, _finish, _one_line,
                                        _physical_memory, _size)
from lmmap.data.formats.metadata import _metadata_from_json
from lmmap.exceptions import FormatError, LmmapError


# What an NPZ array may hold: a deflated member may expand this many times (log-likelihoods barely
# compress; a run of zeros compresses 1000-fold) once it is larger than the floor.
_NPZ_MAX_EXPANSION = 100
_NPZ_EXPANSION_FLOOR = 16 << 20
_NPZ_KEYS = ("L", "models", "n_tokens", "text_pos", "text_set_id", "convention", "metadata_json")


def _read_header(f, version) -> tuple:
    """``(shape, fortran_order, dtype)`` of the .npy header at ``f`` after its magic string."""
    if version == (1, 0):
        return npformat.read_array_header_1_0(f)
    if version == (2, 0):
        return npformat.read_array_header_2_0(f)
    # 3.0 (utf-8 field names): numpy has no public reader for it; 2.x keeps its private one here
    impl = getattr(np.lib, "_format_impl", npformat)
    return impl._read_array_header(f, version)


def _npy_header(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple, np.dtype]:
    """(shape, dtype) of one .npy member, read from its header only; refuse before allocating anything.

    The header's declared size must be exactly what the zip member holds: a header that claims 10^12
    elements, or a small deflated member that expands to gigabytes, is refused here, not by a MemoryError.
    """
    name = info.filename
    if (
        info.compress_type != zipfile.ZIP_STORED
        and info.file_size > _NPZ_EXPANSION_FLOOR
        and info.file_size > _NPZ_MAX_EXPANSION * max(info.compress_size, 1)
    ):
        raise FormatError(
            f"{path}: member {name!r} would expand from {_size(info.compress_size)} to {_size(info.file_size)} "
            f"(×{info.file_size / max(info.compress_size, 1):.0f}); refusing what looks like a zip bomb — "
            "write the arrays uncompressed (np.savez) or with `lmmap export`"
        )
    try:
        with zf.open(info) as f:
            version = npformat.read_magic(f)
            shape, _, dtype = _read_header(f, version)
            offset = f.tell()
    except Exception as exc:  # a damaged member fails in zipfile, zlib or numpy's header parser
        raise FormatError(
            f"{path}: member {name!r} is not a readable .npy array ({type(exc).__name__}: {_one_line(exc)}); "
            "write the file with np.savez or `lmmap export`"
        ) from None
    if dtype.hasobject:
        raise FormatError(
            f"{path}: {name[:-4]!r} holds Python objects, which would need pickle; save names as a string "
            "array (np.array(names, dtype=str)), not objects"
        )
    nbytes = math.prod(int(d) for d in shape) * dtype.itemsize
    if offset + nbytes != info.file_size:
        raise FormatError(
            f"{path}: member {name!r} declares an array of shape {tuple(shape)} ({_size(nbytes)}) but holds "
            f"{_size(max(info.file_size - offset, 0))} of data; the file is damaged or was not written by np.savez"
        )
    return tuple(int(d) for d in shape), dtype


def _npz_headers(path: Path, streamed: tuple[str, ...] = ()) -> dict[str, tuple[tuple, np.dtype]]:
    """{key: (shape, dtype)} of the arrays lmmap reads from an NPZ, checked without loading any of them."""
    try:
        zf = zipfile.ZipFile(path)
    except Exception as exc:  # BadZipFile, OSError, EOFError, ValueError ... for a damaged zip
        raise FormatError(
            f"{path} is not a readable NPZ file ({type(exc).__name__}: {_one_line(exc)}); "
            "write it with np.savez or `lmmap export`"
        ) from None
    with zf:
        members: dict[str, zipfile.ZipInfo] = {}
        for info in zf.infolist():
            name = info.filename
            if info.is_dir() or not name.endswith(".npy"):
                raise FormatError(
                    f"{path}: member {name!r} is not a .npy array; an NPZ holds only arrays saved by np.savez "
                    "(remove it, or write the file with `lmmap export`)"
                )
            if name[:-4] in members:
                raise FormatError(f"{path}: array {name[:-4]!r} appears twice in the zip; keep one")
            members[name[:-4]] = info
        missing = [k for k in ("L", "models") if k not in members]
        if missing:
            raise FormatError(
                f"{path}: NPZ needs arrays 'L' (models × texts) and 'models' (names); missing "
                f"{', '.join(map(repr, missing))} (it has {', '.join(map(repr, members)) or 'none'})"
            )
        headers = {k: _npy_header(path, zf, members[k]) for k in _NPZ_KEYS if k in members}
    # arrays read a batch of rows at a time (read_stream) do not count: only one batch is in memory
    total = sum(math.prod(shape) * dtype.itemsize for k, (shape, dtype) in headers.items() if k not in streamed)
    memory = _physical_memory()
    if memory and total > memory // 2:
        raise FormatError(
            f"{path}: its arrays need {_size(total)}, more than half of this machine's {_size(memory)} of memory; "
            "split the file (fewer models per file) and import the parts"
        )
    return headers


def _check_npz_shapes(path: Path, headers: dict) -> None:
    """Shapes and kinds of the arrays agree, from the headers alone (before anything is loaded)."""
    L_shape, L_dtype = headers["L"]
    m_shape, m_dtype = headers["models"]
    if m_dtype.kind not in "US" or len(m_shape) != 1:
        raise FormatError(f"{path}: 'models' must be a 1-D array of strings, got shape {m_shape} dtype {m_dtype}")
    if len(L_shape) != 2 or L_dtype.kind not in "fiu":
        raise FormatError(f"{path}: 'L' must be a 2-D numeric array (models × texts), got shape {L_shape} dtype {L_dtype}")
    if L_shape[0] != m_shape[0]:
        raise FormatError(f"{path}: 'L' has {L_shape[0]} rows but 'models' names {m_shape[0]} models")
    if "n_tokens" in headers and headers["n_tokens"][0] != L_shape:
        raise FormatError(f"{path}: 'n_tokens' has shape {headers['n_tokens'][0]} but 'L' has {L_shape}")
    if "text_pos" in headers and headers["text_pos"][0] != (L_shape[1],):
        raise FormatError(
            f"{path}: 'text_pos' has shape {headers['text_pos'][0]}; expected ({L_shape[1]},), one per column of 'L'"
        )
    for key in ("text_set_id", "convention", "metadata_json"):
        if key in headers:
            shape, dtype = headers[key]
            if shape != () or dtype.kind not in "US":
                raise FormatError(f"{path}: {key!r} must be a single string (0-d array), got shape {shape} dtype {dtype}")


def read(path: Path, expect_texts: int | None = None) -> Vectors:
    """Vectors from an NPZ; ``expect_texts``: the text set's N, to refuse a wider ``L`` from its header."""
    headers = _checked_headers(path, expect_texts)
    arrays = _load(path, list(headers))
    scalars = {k: str(arrays[k].item()) if k in arrays else None for k in ("text_set_id", "convention", "metadata_json")}
    return _finish(
        path, arrays["models"].tolist(), arrays["L"], metadata=_metadata_from_json(path, scalars["metadata_json"]),
        text_set_id=scalars["text_set_id"], format="npz", n_tokens=arrays.get("n_tokens"),
        text_pos=arrays.get("text_pos"), convention=scalars["convention"],
    )


# Rows of L read (and stored) at a time by read_stream: 256 MB of float64 at N = 10,000.
STREAM_BYTES = 256 << 20


@dataclass
class NpzStream:
    """An NPZ whose small arrays are read and checked, and whose rows of ``L`` (and ``n_tokens``) come a batch
    at a time (:meth:`batches`): the names, the text set's identity, ``text_pos``, convention, metadata."""

    path: Path
    names: list[str]
    n_texts: int
    text_set_id: str | None
    convention: str | None
    metadata: object
    text_pos: np.ndarray | None
    _headers: dict

    def _fortran(self, members) -> bool:
        try:
            return any(_fortran_order(self.path, k) for k in members)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise FormatError(f"{self.path} is not a readable NPZ file ({type(exc).__name__}: {_one_line(exc)}); "
                              "write it with np.savez or `lmmap export`") from None

    def batches(self, rows: int | None = None):
        """:class:`Vectors` of consecutive rows, each checked as :func:`read` checks the whole file."""
        rows = rows or max(1, STREAM_BYTES // (8 * max(self.n_texts, 1)))
        members = ["L"] + (["n_tokens"] if "n_tokens" in self._headers else [])
        if self._fortran(members):
            # column-major rows cannot be read one after another: loaded whole, as read() does (numpy saves a
            # slice such as L[:, cols] this way)
            arrays = _load(self.path, members)
            for s in range(0, len(self.names), rows):
                yield _finish(self.path, self.names[s:s + rows], arrays["L"][s:s + rows], text_set_id=self.text_set_id,
                              format="npz", n_tokens=None if "n_tokens" not in arrays else arrays["n_tokens"][s:s + rows],
                              text_pos=self.text_pos, convention=self.convention)
            return
        try:
            with zipfile.ZipFile(self.path) as zf:
                files = {k: zf.open(f"{k}.npy") for k in members}
                try:
                    for f in files.values():
                        _read_header(f, npformat.read_magic(f))
                    for s in range(0, len(self.names), rows):
                        part = self.names[s:s + rows]
                        got = {}
                        for k, f in files.items():
                            dtype = self._headers[k][1]
                            want = len(part) * self.n_texts * dtype.itemsize
                            data = f.read(want)
                            if len(data) != want:
                                raise FormatError(f"{self.path}: {k!r} ends before its last row; the file is damaged")
                            got[k] = np.frombuffer(data, dtype=dtype).reshape(len(part), self.n_texts)
                        yield _finish(self.path, part, got["L"], text_set_id=self.text_set_id, format="npz",
                                      n_tokens=got.get("n_tokens"), text_pos=self.text_pos, convention=self.convention)
                finally:
                    for f in files.values():
                        f.close()
        except LmmapError:
            raise
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:  # a damaged body (bad CRC, truncated)
            raise FormatError(f"{self.path} is not a readable NPZ file ({type(exc).__name__}: {_one_line(exc)}); "
                              "write it with np.savez or `lmmap export`") from None


def _fortran_order(path: Path, key: str) -> bool:
    with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as f:
        return bool(_read_header(f, npformat.read_magic(f))[1])


def read_stream(path: Path, expect_texts: int | None = None) -> NpzStream:
    """An NPZ to read a batch of rows at a time (``lmmap import`` of 10⁵ models): everything but ``L`` and
    ``n_tokens`` is read and checked now, as by :func:`read`; memory is bounded by a batch, not by K×N."""
    headers = _checked_headers(path, expect_texts, streamed=("L", "n_tokens"))
    small = [k for k in headers if k not in ("L", "n_tokens")]
    arrays = _load(path, small)
    scalars = {k: str(arrays[k].item()) if k in arrays else None for k in ("text_set_id", "convention", "metadata_json")}
    names = _check_names(path, arrays["models"].tolist())
    text_pos = arrays.get("text_pos")
    if text_pos is not None:
        text_pos = _check_positions(path, "text_pos", text_pos)
    _check_convention(path, scalars["convention"])
    return NpzStream(path, names, int(headers["L"][0][1]), scalars["text_set_id"], scalars["convention"],
                     _metadata_from_json(path, scalars["metadata_json"]), text_pos, headers)


def _checked_headers(path: Path, expect_texts: int | None, streamed: tuple[str, ...] = ()) -> dict:
    """The NPZ's array headers, checked (signature, shapes, width against ``expect_texts``) before any value
    is loaded."""
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            # np.load would take any other bytes for a pickle and suggest loading it unsafely.
            raise FormatError(f"{path} is not an NPZ file (no zip signature); write it with np.savez or `lmmap export`")
    headers = _npz_headers(path, streamed)
    _check_npz_shapes(path, headers)
    if expect_texts is not None:
        width = headers["L"][0][1]
        if width > expect_texts or ("text_pos" not in headers and width != expect_texts):
            # Only the (small) names are loaded, to say which models; 'L' stays in the file.
            names = _load(path, ["models"])["models"]
            which = f"model {str(names[0])!r}" if len(names) else "no model"
            if len(names) > 1:
                which += f" (and {len(names) - 1} more)"
            why = "" if "text_pos" in headers else ", and no 'text_pos' says which texts its columns are"
            raise FormatError(
                f"{path}: 'L' has {width} columns (texts) but the text set has {expect_texts}{why}: {which} "
                "was computed on another text set, or is incomplete"
            )
    return headers


def _load(path: Path, keys: list[str]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of an NPZ whose headers were checked."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in keys}
    except Exception as exc:  # the headers were fine, so this is a damaged body (bad CRC, truncated data)
        raise FormatError(
            f"{path} is not a readable NPZ file ({type(exc).__name__}: {_one_line(exc)}); "
            "write it with np.savez or `lmmap export`"
        ) from None


def write(tmp, names, L, text_set_id, n_tokens, text_pos, convention, records):
    """Write the arrays to ``tmp`` (checked by the caller; ``records``: metadata rows, or None)."""
    arrays = {"L": L, "models": np.array(names, dtype=str)}
    if text_set_id is not None:
        arrays["text_set_id"] = np.array(text_set_id)
    if convention is not None:
        arrays["convention"] = np.array(convention)
    if n_tokens is not None:
        arrays["n_tokens"] = n_tokens.astype(np.int32)  # token counts fit; half the bytes of int64
    if text_pos is not None:
        arrays["text_pos"] = text_pos
    if records is not None:
        arrays["metadata_json"] = np.array(json.dumps(records))
    # Uncompressed: log-likelihoods barely compress, and this keeps loading a plain read.
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)

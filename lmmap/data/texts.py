"""Text sets: the fixed texts ``D_N = {x_1..x_N}`` every model is scored on.

A text set is an ordered table (``index``, ``text``, ``source``, and any
extra columns such as the authors' ``pile_set_name``) with a content-hash
identity: two text sets with the same texts in the same order have the same
``identity``, whatever their file format. Vectors in a store are tied to it.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lmmap.exceptions import FormatError, InputError, MissingFileError

TEXT_SUFFIXES_JSONL = (".jsonl", ".ndjson")
TEXT_SUFFIXES_PARQUET = (".parquet", ".pq")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# A JSON escape of a UTF-16 surrogate (\ud800-\udfff); only lines holding one need the full check.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def text_set_identity(texts: Iterable[str], prompts: Iterable[str] | None = None) -> str:
    """``sha256:<hex>`` over the texts in order (each length-prefixed, so boundaries count).

    With ``prompts`` (a prompt→response text set) each prompt is hashed before
    its text, under a distinct leading tag: the same responses to other
    prompts are another text set.
    """
    h = hashlib.sha256()
    count = 0
    if prompts is not None:
        h.update(b"lmmap prompt+text\x00")
        pairs = zip(prompts, texts, strict=True)
    else:
        pairs = ((None, t) for t in texts)
    for p, t in pairs:
        for part in ((t,) if p is None else (p, t)):
            b = part.encode("utf-8")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
        count += 1
    h.update(count.to_bytes(8, "little"))
    return "sha256:" + h.hexdigest()


PROMPT_COLUMN = "prompt"


class PromptedText(str):
    """A response text carrying its ``prompt``: scoring computes ``log p(text | prompt)``.

    :attr:`TextSet.texts` gives these for a prompt→response text set, so the
    prompt travels with the text to the encoder
    (:func:`lmmap.scoring.encoding.encode_texts`) whoever passes it on.
    """

    def __new__(cls, text: str, prompt: str):
        obj = super().__new__(cls, text)
        obj.prompt = prompt
        return obj

    def __reduce__(self):
        return (PromptedText, (str(self), self.prompt))


@dataclass(frozen=True)
class TextSet:
    """An ordered set of texts with their provenance.

    ``table`` has at least the columns ``index`` (int64, the text's id, as in
    the authors' ``texts-10k-pile.jsonl``), ``text`` and ``source``.
    """

    table: pa.Table

    def __post_init__(self):
        for col in ("index", "text", "source"):
            if col not in self.table.column_names:
                raise InputError(f"a text set needs an {col!r} column; it has {self.table.column_names}")
        if self.table.num_rows == 0:
            raise InputError("the text set is empty: it needs at least one text")
        if PROMPT_COLUMN in self.table.column_names:
            col = self.table.column(PROMPT_COLUMN)
            if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
                raise InputError(f"the text set's {PROMPT_COLUMN!r} column must hold strings, not {col.type}")
            if col.null_count:
                row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
                raise InputError(f"text set row {row} has no prompt while others have one: every text of a "
                                 "prompt→response text set needs a prompt")

    # -- construction -----------------------------------------------------
    @classmethod
    def from_texts(cls, texts: list[str], sources: list[str] | None = None, index=None, prompts=None,
                   **extra) -> "TextSet":
        """A text set from a list of strings (ids 0..N-1 unless ``index`` is given).

        ``prompts``: one prompt per text, for a prompt→response text set
        (scored as ``log p(text | prompt)``).
        """
        texts = list(texts)
        if prompts is not None:
            prompts = list(prompts)
            if len(prompts) != len(texts):
                raise InputError(f"prompts has {len(prompts)} entries for {len(texts)} texts", params=("prompts",))
            for i, p in enumerate(prompts):
                if not isinstance(p, str):
                    raise InputError(f"text {i} has no prompt (got {_short(p)}); every text needs one",
                                     params=("prompts",))
                _check_encodable(p, f"prompt {i}", InputError)
            extra = {PROMPT_COLUMN: pa.array(prompts, pa.string()), **extra}
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise InputError(f"text {i} is {type(t).__name__}, not a string", params=("texts",))
            if not t.strip():
                raise InputError(f"text {i} is empty; drop it before building the text set", params=("texts",))
            _check_encodable(t, f"text {i}", InputError)
        n = len(texts)
        try:
            cols = {
                "index": pa.array(np.arange(n) if index is None else index, pa.int64()),
                "text": pa.array(texts, pa.string()),
                "source": pa.array(sources if sources is not None else [""] * n, pa.string()),
            }
            cols.update({k: pa.array(v) for k, v in extra.items()})
            ts = cls(pa.table(cols))
        except (pa.ArrowException, OverflowError, TypeError, UnicodeEncodeError) as exc:
            raise InputError(
                f"cannot build a text set from these values ({type(exc).__name__}: {_short(str(exc), 120)}); "
                "index must be 64-bit integers, sources strings, and every column as long as the texts", params=("texts", "sources")
            ) from None
        ts._check_unique_index()
        return ts

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TextSet":
        """Load a text set from JSONL (one object per line with a ``text`` field) or Parquet."""
        path = Path(path)
        if not path.exists():
            raise MissingFileError(f"text set {path} does not exist", params=("path",))
        if path.is_dir():
            raise FormatError(
                f"{path} is a directory; a text set is one .jsonl or .parquet file (to make one from a "
                "directory of documents, run `lmmap texts build DIR -o TEXTS.jsonl`)"
            )
        if path.suffix.lower() in TEXT_SUFFIXES_PARQUET:
            table = _read_parquet_table(path)
            if "text" not in table.column_names:
                raise FormatError(f"{path}: no 'text' column (columns: {table.column_names})")
            records = table.to_pylist()
            where = lambda i: f"{path}: row {i}"  # noqa: E731
        else:
            numbered = list(_read_jsonl(path))
            lines = [lineno for lineno, _ in numbered]
            records = [r for _, r in numbered]
            where = lambda i: f"{path}:{lines[i]}"  # noqa: E731
        return cls._from_records(records, where, path)

    @classmethod
    def _from_records(cls, records: list[dict], where, path) -> "TextSet":
        if not records:
            raise FormatError(f"{path}: the text set is empty (no records); it needs at least one text")
        texts, index, sources = [], [], []
        has_prompt = [isinstance(r.get(PROMPT_COLUMN), str) for r in records]
        if any(has_prompt) and not all(has_prompt):
            i = has_prompt.index(False)
            raise FormatError(f"{where(i)}: no {PROMPT_COLUMN!r} (a string) while other rows have one; every row of a "
                              "prompt→response text set needs a prompt")
        extra_keys = [k for k in records[0] if k not in ("text", "index", "source")]
        if any(has_prompt) and PROMPT_COLUMN not in extra_keys:
            extra_keys.insert(0, PROMPT_COLUMN)
        extra = {k: [] for k in extra_keys}
        first_at: dict[int, int] = {}
        for i, rec in enumerate(records):
            t = rec.get("text")
            if not isinstance(t, str):
                raise FormatError(f"{where(i)}: 'text' is missing or not a string (got {_short(t)})")
            if not t.strip():
                raise FormatError(f"{where(i)}: empty text; remove it (or rebuild with `lmmap texts build`)")
            texts.append(t)
            idx = rec.get("index", i)
            if isinstance(idx, bool) or not isinstance(idx, (int, np.integer)):
                raise FormatError(f"{where(i)}: 'index' must be an integer, got {_short(idx)}")
            idx = int(idx)
            if not _INT64_MIN <= idx <= _INT64_MAX:
                raise FormatError(
                    f"{where(i)}: 'index' {_short(idx)} is outside the 64-bit integer range; number the texts "
                    "with smaller ids (e.g. 0..N-1)"
                )
            if idx in first_at:
                raise FormatError(
                    f"{where(i)}: duplicate text index {idx} (first used by {where(first_at[idx])}); "
                    "every text needs its own index"
                )
            first_at[idx] = i
            index.append(idx)
            src = rec.get("source", rec.get("pile_set_name", ""))
            sources.append("" if src is None else str(src))
            for k in extra_keys:
                extra[k].append(rec.get(k))
        cols = {
            "index": pa.array(index, pa.int64()),
            "text": pa.array(texts, pa.string()),
            "source": pa.array(sources, pa.string()),
        }
        for k, v in extra.items():
            try:
                cols[k] = pa.array(v)
            except (pa.ArrowException, OverflowError):
                # Mixed kinds or out-of-range numbers: keep the column, as JSON text.
                cols[k] = pa.array([None if x is None else json.dumps(x) for x in v], pa.string())
        ts = cls(pa.table(cols))
        ts._check_unique_index(path)
        return ts

    def _check_unique_index(self, path=None):
        idx = self.index
        if len(np.unique(idx)) != len(idx):
            vals, counts = np.unique(idx, return_counts=True)
            raise InputError(
                f"{path or 'text set'}: duplicate text index {int(vals[counts > 1][0])}; every text needs its own index", params=("path",)
            )

    # -- accessors ------------------------------------------------------------
    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def texts(self) -> list[str]:
        """The texts; for a prompt→response text set, :class:`PromptedText` s carrying their prompts."""
        texts = self.table.column("text").to_pylist()
        prompts = self.prompts
        if prompts is None:
            return texts
        return [PromptedText(t, p) for t, p in zip(texts, prompts)]

    @property
    def prompts(self) -> list[str] | None:
        """The prompts of a prompt→response text set (column ``prompt``), else None."""
        if PROMPT_COLUMN not in self.table.column_names:
            return None
        return self.table.column(PROMPT_COLUMN).to_pylist()

    @property
    def text_bytes(self) -> np.ndarray:
        """UTF-8 length of each text in bytes (the response only, for prompt→response texts)."""
        import pyarrow.compute as pc

        return pc.binary_length(self.table.column("text")).to_numpy(zero_copy_only=False).astype(np.int64)

    @property
    def index(self) -> np.ndarray:
        return self.table.column("index").to_numpy()

    @property
    def sources(self) -> list[str]:
        return self.table.column("source").to_pylist()

    @property
    def identity(self) -> str:
        return text_set_identity(self.table.column("text").to_pylist(), self.prompts)

    def subset(self, positions) -> "TextSet":
        """The texts at the given positions (0..N-1), in that order."""
        return TextSet(self.table.take(pa.array(np.asarray(positions, dtype=np.int64))))

    # -- output -------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write as JSONL or Parquet (by suffix), atomically."""
        from lmmap.data.atomic import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            if path.suffix.lower() in TEXT_SUFFIXES_PARQUET:
                pq.write_table(self.table, tmp)
            else:
                with open(tmp, "w", encoding="utf-8") as f:
                    for rec in self.table.to_pylist():
                        f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        return path


# -- reading sources ------------------------------------------------------------


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line number, object)``; errors name the file and line."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a byte-order mark, as some editors write
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise FormatError(
                    f"{path}:{lineno}: not valid UTF-8 (byte {exc.start}); re-encode the file as UTF-8"
                ) from None
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise FormatError(f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
            except RecursionError:
                raise FormatError(f"{path}:{lineno}: JSON nested too deeply to read; flatten this line") from None
            if not isinstance(obj, dict):
                raise FormatError(f"{path}:{lineno}: expected a JSON object with a 'text' field, got {type(obj).__name__}")
            if _SURROGATE_ESCAPE.search(raw):
                _check_encodable(obj, f"{path}:{lineno}", FormatError)
            yield lineno, obj


def _short(value, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages that must stay on one line."""
    r = repr(value)
    return r if len(r) <= limit else r[: limit - 1] + "…"


def _check_encodable(obj, where: str, error) -> None:
    """Raise ``error`` naming ``where`` when a string in ``obj`` (keys included) holds a lone UTF-16 surrogate.

    ``json.loads`` accepts ``"\\ud800"`` and returns a str that cannot be written as UTF-8; it would fail
    much later (hashing the text set, writing the store) with a UnicodeEncodeError.
    """
    try:
        (obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)).encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start]
        raise error(
            f"{where}: a lone UTF-16 surrogate (\\u{ord(bad):04x}) in a string, which is not valid Unicode; "
            "surrogate escapes must come in high-low pairs (\\ud83d\\ude00) — fix or drop this text"
        ) from None
    except RecursionError:
        raise error(f"{where}: nested too deeply to read; flatten it") from None


def _read_parquet_table(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise FormatError(
            f"{path} is not a readable Parquet file ({type(exc).__name__}: {_short(str(exc), 120)}); "
            "give a .parquet file, or a .jsonl text set"
        ) from None


def _decode(data: bytes, where: str, errors: str) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if errors == "skip":
            return None
        if errors == "replace":
            return data.decode("utf-8", errors="replace")
        raise FormatError(
            f"{where}: not valid UTF-8 at byte {exc.start}; convert it, or pass "
            "{on_bad_utf8='skip'} (drop such files) or {on_bad_utf8='replace'}", params=("on_bad_utf8",),
        ) from None


def iter_documents(sources: Iterable[str | os.PathLike], on_bad_utf8: str = "error") -> Iterator[tuple[str, str]]:
    """Yield ``(source label, document text)`` from plain-text, JSONL and Parquet files or directories.

    Directories are walked in sorted order (skipping hidden entries and
    ``__pycache__``); a JSONL/Parquet record is one
    document (its ``text`` field), a plain-text file is one document.
    """
    if on_bad_utf8 not in ("error", "skip", "replace"):
        raise InputError(f"on_bad_utf8 must be error, skip or replace, got {on_bad_utf8!r}", params=("on_bad_utf8",))
    for src in sources:
        src = Path(src)
        if src.is_dir():
            # Hidden files and bytecode caches are never text someone meant to include.
            files = sorted(
                p for p in src.rglob("*")
                if p.is_file() and not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(src).parts)
            )
        elif src.exists():
            files = [src]
        else:
            raise MissingFileError(f"text source {src} does not exist", params=("sources",))
        for path in files:
            suffix = path.suffix.lower()
            if suffix in TEXT_SUFFIXES_JSONL:
                for lineno, obj in _read_jsonl(path):
                    t = obj.get("text")
                    if not isinstance(t, str):
                        raise FormatError(f"{path}:{lineno}: 'text' is missing or not a string")
                    yield f"{path}:{lineno}", t
            elif suffix in TEXT_SUFFIXES_PARQUET:
                table = _read_parquet_table(path)
                if "text" not in table.column_names:
                    raise FormatError(f"{path}: no 'text' column (columns: {table.column_names})")
                for row, t in enumerate(table.column("text").to_pylist()):
                    if t is None:
                        continue
                    if not isinstance(t, str):
                        raise FormatError(f"{path}: row {row}: 'text' is {type(t).__name__}, not a string")
                    yield f"{path}#{row}", t
            else:
                t = _decode(path.read_bytes(), str(path), on_bad_utf8)
                if t is not None:
                    yield str(path), t


def utf8_chunks(data: bytes, chunk_bytes: int) -> list[bytes]:
    """Cut ``data`` into pieces of at most ``chunk_bytes`` bytes, never inside a UTF-8 character."""
    out, start, n = [], 0, len(data)
    while start < n:
        end = min(start + chunk_bytes, n)
        # Step back over continuation bytes (0b10xxxxxx) so the cut lands on a character start.
        while end < n and end > start and (data[end] & 0xC0) == 0x80:
            end -= 1
        if end == start:  # a single character longer than chunk_bytes (cannot happen for >= 4)
            end = min(start + chunk_bytes, n)
        out.append(data[start:end])
        start = end
    return out


def build_text_set(
    sources: Iterable[str | os.PathLike],
    chunk_bytes: int = 1024,
    min_bytes: int = 256,
    n: int | None = None,
    random_state: int | np.random.Generator | None = 0,
    on_bad_utf8: str = "error",
) -> TextSet:
    """Chunk documents into texts of ``chunk_bytes`` bytes (SPEC §8), drop short/blank ones, de-duplicate, sample n.

    Each text keeps its ``source`` (file, and line or row) and ``chunk_idx``.

    Parameters
    ----------
    sources : iterable of path
        Plain-text, JSONL (a ``text`` field) or Parquet files, or directories of them.
    chunk_bytes : int
        Size of a text in bytes (a UTF-8 character is never split).
    min_bytes : int
        Chunks shorter than this are dropped.
    n : int, optional
        Sample this many texts (default: keep all); the sample keeps source order.
    random_state : int, numpy.random.Generator or None
        Draws the sample. An int draws as ``random.Random(random_state)`` does,
        the same texts as the former ``seed``; None draws afresh.
    on_bad_utf8 : {"error", "skip", "replace"}
        What to do with a file that is not UTF-8.

    Returns
    -------
    TextSet
    """
    _check_sampling(n, random_state)
    if chunk_bytes < 4:
        raise InputError(f"chunk_bytes must be at least 4 (one UTF-8 character), got {chunk_bytes}",
                         params=("chunk_bytes",))
    if min_bytes < 0 or min_bytes > chunk_bytes:
        raise InputError(f"min_bytes must be between 0 and chunk_bytes ({chunk_bytes}), got {min_bytes}",
                         params=("min_bytes", "chunk_bytes"))
    texts, srcs, chunk_idx, seen = [], [], [], set()
    for label, doc in iter_documents(sources, on_bad_utf8=on_bad_utf8):
        for ci, piece in enumerate(utf8_chunks(doc.encode("utf-8"), chunk_bytes)):
            if len(piece) < max(min_bytes, 1):
                continue
            text = piece.decode("utf-8")
            if not text.strip() or text in seen:
                continue
            seen.add(text)
            texts.append(text)
            srcs.append(label)
            chunk_idx.append(ci)
    if not texts:
        raise InputError(
            f"no chunks of at least {min_bytes} bytes were found in the sources; "
            f"give more text or lower the minimum ({{min_bytes}} is {min_bytes})", params=("min_bytes",),
        )
    keep = list(range(len(texts)))
    if n is not None:
        if n <= 0:
            raise InputError(f"n must be positive, got {n}", params=("n",))
        if n > len(texts):
            raise InputError(f"asked for {n} texts but the sources give only {len(texts)} distinct chunks", params=("sources", "n"))
        keep = sorted(_sample(keep, n, random_state))
    return TextSet.from_texts(
        [texts[i] for i in keep],
        sources=[srcs[i] for i in keep],
        chunk_idx=np.asarray([chunk_idx[i] for i in keep], dtype=np.int64),
    )


def _check_sampling(n, random_state) -> None:
    """``n`` and ``random_state`` refused before the sources are read (reading them may take long)."""
    from lmmap.maths.randomness import check_random_state

    if n is not None and n <= 0:
        raise InputError(f"n must be positive, got {n}", params=("n",))
    check_random_state(random_state)


def _sample(items: list, n: int, random_state) -> list:
    """``n`` of ``items`` drawn without replacement (see :func:`build_text_set` for ``random_state``)."""
    if isinstance(random_state, np.random.Generator):
        return [items[i] for i in random_state.choice(len(items), size=n, replace=False)]
    if random_state is not None and (isinstance(random_state, bool) or not isinstance(random_state, numbers.Integral)):
        raise InputError(f"random_state must be an int, a numpy Generator or None, got {random_state!r}",
                         params=("random_state",))
    # random.Random, not numpy: an int draws the same sample as the former ``seed`` did.
    return random.Random(None if random_state is None else int(random_state)).sample(items, n)


def build_prompt_text_set(
    sources: Iterable[str | os.PathLike],
    prompt_field: str = "prompt",
    text_field: str = "text",
    n: int | None = None,
    random_state: int | np.random.Generator | None = 0,
) -> TextSet:
    """A prompt→response text set: one text per JSONL/Parquet record, ``text_field`` as the text, ``prompt_field`` its prompt.

    Records are not chunked (a response is scored whole, given its prompt).
    A record without a string prompt or a non-empty text is an error naming
    its file and line (or row). ``n``: sample this many records (source
    order kept); ``random_state`` as in :func:`build_text_set`.
    """
    _check_sampling(n, random_state)
    if not prompt_field or not text_field or prompt_field == text_field:
        raise InputError(f"prompt_field and {{text_field}} must be two different field names, got {prompt_field!r} and "
                         f"{text_field!r}", params=("prompt_field", "text_field"))
    texts, prompts, srcs = [], [], []
    for src in sources:
        src = Path(src)
        if src.is_dir():
            files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in
                           TEXT_SUFFIXES_JSONL + TEXT_SUFFIXES_PARQUET and not any(
                               part.startswith(".") for part in p.relative_to(src).parts))
        elif src.exists():
            files = [src]
        else:
            raise MissingFileError(f"text source {src} does not exist", params=("sources",))
        for path in files:
            if path.suffix.lower() in TEXT_SUFFIXES_PARQUET:
                table = _read_parquet_table(path)
                rows = ((f"{path}: row {i}", f"{path}#{i}", r) for i, r in enumerate(table.to_pylist()))
            elif path.suffix.lower() in TEXT_SUFFIXES_JSONL:
                rows = ((f"{path}:{ln}", f"{path}:{ln}", r) for ln, r in _read_jsonl(path))
            else:
                raise FormatError(f"{path}: a prompt→response text set is read from JSONL or Parquet records, "
                                  "not plain text", params=("sources",))
            for where, label, rec in rows:
                p, t = rec.get(prompt_field), rec.get(text_field)
                if not isinstance(p, str):
                    raise FormatError(f"{where}: no prompt field {prompt_field!r} (a string; got {_short(p)})",
                                      params=("prompt_field",))
                if not isinstance(t, str) or not t.strip():
                    raise FormatError(f"{where}: the text field {text_field!r} is missing, not a string or empty "
                                      f"(got {_short(t)})", params=("text_field",))
                prompts.append(p)
                texts.append(t)
                srcs.append(label)
    if not texts:
        raise InputError("no records were found in the sources", params=("sources",))
    keep = list(range(len(texts)))
    if n is not None:
        if n <= 0:
            raise InputError(f"n must be positive, got {n}", params=("n",))
        if n > len(texts):
            raise InputError(f"asked for {n} texts but the sources hold only {len(texts)} records", params=("n",))
        keep = sorted(_sample(keep, n, random_state))
    return TextSet.from_texts([texts[i] for i in keep], sources=[srcs[i] for i in keep],
                              prompts=[prompts[i] for i in keep])

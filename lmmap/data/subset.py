"""A resampled subset of texts and its file, ``SUBSET.json`` (SPEC §4): data, no analysis.

A :class:`Subset` is d texts drawn from the N texts of a text set: their
positions, how often each was drawn (``c``), the probability ``π`` of drawing
each and the weights ``w = c/(nπ)``, with the models ``π`` came from and the
clipping threshold of their full map. It is everything needed to build a map
from those d texts alone (``ModelMap.from_store(store, subset=...)``) or to
place new models scored on them (:mod:`lmmap.analyses.place`).
:func:`lmmap.analyses.select.select` makes one.

A subset is saved as JSON (``SUBSET.json``; ``seed`` is the ``random_state`` of the draws)::

    {"format": "lmmap-subset", "version": 1, "method": "ls", "n": 2900, "seed": 0,
     "d": 2192, "text_set_id": "sha256:…", "n_texts": 10000, "threshold": -1412.34,
     "models": [...], "n_excluded": 0, "texts": [{"pos": 3, "index": 3, "count": 2,
     "pi": 0.00012, "w": 0.83}, ...]}

Every field is checked on load; a damaged or edited file is a one-line
:class:`~lmmap.exceptions.FormatError` naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmmap._version import __version__
from lmmap.data.atomic import atomic_write
from lmmap.exceptions import FormatError, InputError, LmmapError, LmmapWarning, MissingFileError
from lmmap.maths import resampling

SUBSET_FORMAT = "lmmap-subset"
SUBSET_VERSION = 1
# w is recomputed from (c, n, π) on load; a stored w further than this from it
# means the file was edited by hand or corrupted.
_W_RTOL = 1e-9


@dataclass(eq=False)
class Subset:
    """d texts resampled from the N texts of a store's text set, with counts ``c``, ``π`` and weights ``w``.

    Attributes
    ----------
    text_pos : (d,) int, sorted positions 0..N-1 of the texts in the text set.
    text_index : (d,) int, the texts' ids (``TextSet.index``).
    counts : (d,) int, ``c(u_t)``, times each text was drawn; ``Σc = n``.
    pi : (d,) float, ``π_{u_t}``, the probability of drawing each text.
    weights : (d,) float, ``w_t = c(u_t) / (n π_{u_t})``.
    method, n, random_state : how the texts were drawn (``random_state``: the seed of the draws, ``seed`` in the file).
    text_set_id, n_texts : the identity and size N of the text set the positions index. A subset always
        records them; ``text_set_id`` is None only for a subset marked ``unbound`` (selected from a bare
        ``ModelMap(names, L)`` with ``unbound=True``), which a store accepts only when told to
        (``allow_other_texts=True``).
    models : names of the models whose map gave ``π``.
    threshold : the clipping threshold of those models' full map (None: no clipping).
    n_excluded : texts with ``π = 0`` (every model scores them alike), never drawn.
    unbound : True when the subset does not know its text set (see ``text_set_id``).
    """

    text_pos: np.ndarray
    text_index: np.ndarray
    counts: np.ndarray
    pi: np.ndarray
    weights: np.ndarray
    method: str
    n: int
    random_state: int | None
    text_set_id: str | None
    n_texts: int
    models: list[str]
    threshold: float | None
    n_excluded: int = 0
    created_at: str | None = None
    texts: list[str] | None = field(default=None, repr=False)
    unbound: bool = False

    def __post_init__(self):
        self.text_pos = _int_array("text_pos", self.text_pos)
        self.text_index = _int_array("text_index", self.text_index)
        self.counts = _int_array("counts", self.counts)
        self.pi = _float_array("pi", self.pi)
        self.weights = _float_array("weights", self.weights)
        if isinstance(self.models, str) or not all(isinstance(m, str) for m in self.models):
            raise InputError(f"models must be a list of model names (strings), got {_short(self.models)}")
        self.models = list(self.models)
        try:
            self.n = resampling.check_sample_size(self.n)
            self.method = resampling.check_method(self.method)
        except LmmapError as exc:
            raise InputError(str(exc)) from None
        self.n_texts = _int_scalar("n_texts", self.n_texts, minimum=1)
        self.n_excluded = _int_scalar("n_excluded", self.n_excluded, minimum=0)
        if self.random_state is not None:
            self.random_state = _int_scalar("random_state", self.random_state)
        if self.threshold is not None:
            if not _is_number(self.threshold) or not math.isfinite(self.threshold):
                raise InputError(f"threshold must be a finite number or None, got {_short(self.threshold)}")
            self.threshold = float(self.threshold)
        if not isinstance(self.unbound, bool):
            raise InputError(f"unbound must be true or false, got {_short(self.unbound)}")
        if self.text_set_id is None and not self.unbound:
            raise InputError(
                "a subset must record the identity of the text set it indexes (text_set_id): select it from a "
                "store, or from a ModelMap with texts=TextSet (or a map built by ModelMap.from_store); pass "
                "unbound=True only to mark on purpose a subset that will be used by position alone"
            )
        if self.text_set_id is not None:
            if self.unbound:
                raise InputError("a subset with a text_set_id is bound to that text set; do not also mark it unbound")
            if not isinstance(self.text_set_id, str) or not self.text_set_id:
                raise InputError(f"text_set_id must be a non-empty string, got {_short(self.text_set_id)}")
        self._validate()

    def _validate(self) -> None:
        d = self.text_pos.shape[0]
        if d == 0:
            raise InputError("it holds no texts")
        for name in ("text_index", "counts", "pi", "weights"):
            if getattr(self, name).shape != (d,):
                raise InputError(f"{name} has {getattr(self, name).shape[0]} entries for {d} texts (text_pos has {d})")
        out = (self.text_pos < 0) | (self.text_pos >= self.n_texts)
        if out.any():
            k = int(np.flatnonzero(out)[0])
            raise InputError(
                f"text position {int(self.text_pos[k])} (text {k}) is outside 0..{self.n_texts - 1}, "
                f"the N = {self.n_texts} texts of the text set"
            )
        if np.any(np.diff(self.text_pos) <= 0):
            k = int(np.flatnonzero(np.diff(self.text_pos) <= 0)[0])
            raise InputError(
                f"text positions must be unique and sorted; position {int(self.text_pos[k + 1])} (text {k + 1}) "
                f"follows {int(self.text_pos[k])}"
            )
        if np.any(self.counts <= 0):
            k = int(np.flatnonzero(self.counts <= 0)[0])
            raise InputError(
                f"the count of the text at position {int(self.text_pos[k])} is {int(self.counts[k])}; a count is "
                "how often the text was drawn, at least 1"
            )
        if int(self.counts.sum()) != self.n:
            raise InputError(f"the counts sum to {int(self.counts.sum())} but n = {self.n} texts were drawn")
        bad = ~np.isfinite(self.pi) | (self.pi <= 0) | (self.pi > 1)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"the text at position {int(self.text_pos[k])} has π = {float(self.pi[k])}; every drawn text needs "
                "a probability π in (0, 1]"
            )
        expected = self.counts / (self.n * self.pi)
        if not np.allclose(self.weights, expected, rtol=_W_RTOL, atol=0):
            raise InputError("the weights are not c/(nπ); the file was edited or corrupted — select again")
        if not 0 <= self.n_excluded < self.n_texts:
            raise InputError(f"n_excluded is {self.n_excluded}; it must be in 0..N-1 (N = {self.n_texts})")

    # -- basic quantities ---------------------------------------------------------
    @property
    def d(self) -> int:
        """The number of unique texts."""
        return int(self.text_pos.shape[0])

    def __len__(self) -> int:
        return self.d

    def summary(self) -> str:
        thr = "not clipped" if self.threshold is None else f"clipped at {self.threshold:.2f} nats"
        # E[Σw] is the number of texts that can be drawn (π > 0): saying so makes the sum a check, not a symbol.
        return (
            f"{self.method} subset: n = {self.n} draws, d = {self.d} unique texts of N = {self.n_texts} "
            f"({100 * self.d / self.n_texts:.1f}%), weights summing to {self.weights.sum():.1f} (expected "
            f"{self.n_texts - self.n_excluded}, the texts they stand for), from {len(self.models)} models, "
            f"log-likelihoods {thr}"
            + (", unbound (no text-set identity)" if self.unbound else "")
        )

    # -- checks against a store -----------------------------------------------------
    def check_store(self, store, allow_other_texts: bool = False) -> None:
        """Raise :class:`InputError` unless this subset was selected on ``store``'s text set.

        Same size N always; same identity, and the same text ids at the subset's positions, unless
        ``allow_other_texts``: then a subset without an identity (unbound) or
        with another text set's identity is used by position on the store's texts, with a note.
        """
        what = f"the subset ({self.method}, d = {self.d})"
        if self.n_texts != store.n_texts:
            raise InputError(
                f"{what} has {self.n_texts} texts but the store's text set has {store.n_texts}: it was computed "
                "on another text set; select again on this store", params=("store",)
            )
        if self.text_set_id != store.text_set_id:
            if self.text_set_id is None:
                problem = (
                    f"{what} does not record which text set it indexes (it was made from a bare map of "
                    "vectors), so its positions may point at other texts than the store's"
                )
            else:
                problem = (
                    f"{what} belongs to another text set ({self.text_set_id[:19]}…, not the store's "
                    f"{store.text_set_id[:19]}…)"
                )
            if not allow_other_texts:
                raise InputError(
                    f"{problem}; select again on this store, or pass {{allow_other_texts}} to use its positions on "
                    "this store's texts anyway",
                    params=("allow_other_texts",),
                )
            warnings.warn(LmmapWarning(
                f"{problem}; using its {self.d} positions on the store's texts as asked ({{allow_other_texts}})",
                params=("allow_other_texts",),
            ), stacklevel=2)
            return
        ids = np.asarray(store.texts.index)[self.text_pos]
        if not np.array_equal(ids, self.text_index):
            bad = int(np.flatnonzero(ids != self.text_index)[0])
            raise InputError(
                f"the subset's text {int(self.text_index[bad])} is not in the store at position "
                f"{int(self.text_pos[bad])} (found text {int(ids[bad])}): the subset was edited or "
                "made for another text set; select again on this store", params=("store",)
            )

    def bind(self, store, allow_other_texts: bool = False) -> "Subset":
        """This subset, checked against ``store`` (:meth:`check_store`) and bound to its text set.

        With ``allow_other_texts``, an unbound subset or one of another text set comes back with the
        store's identity and text ids at its positions, so later checks (``ModelMap.from_store``,
        placement) accept it without being told again.
        """
        self.check_store(store, allow_other_texts=allow_other_texts)
        if self.text_set_id == store.text_set_id:
            return self
        return dataclasses.replace(
            self,
            text_set_id=store.text_set_id,
            text_index=np.asarray(store.texts.index)[self.text_pos],
            texts=None,
            unbound=False,
        )

    def check_models(self, store) -> None:
        """Raise unless every model that defined the subset's map is in ``store``."""
        have = set(store.model_names())  # one scan (from the consolidated index in a large store), not K lookups
        missing = [m for m in self.models if m not in have]
        if missing:
            raise InputError(
                f"the subset was selected from a map of {len(self.models)} models, {len(missing)} of which are not "
                f"in the store {store.path} (e.g. {missing[0]!r}): it belongs to another map; "
                "select again on this store", params=("store",)
            )

    # -- files --------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": SUBSET_FORMAT,
            "version": SUBSET_VERSION,
            "method": self.method,
            "n": self.n,
            "seed": self.random_state,
            "d": self.d,
            "text_set_id": self.text_set_id,
            "unbound": self.unbound,
            "n_texts": int(self.n_texts),
            "threshold": self.threshold,
            "n_excluded": int(self.n_excluded),
            "created_at": self.created_at,
            "lmmap_version": __version__,
            "models": list(self.models),
            "texts": [
                {"pos": int(p), "index": int(i), "count": int(c), "pi": float(q), "w": float(w)}
                for p, i, c, q, w in zip(self.text_pos, self.text_index, self.counts, self.pi, self.weights)
            ],
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``SUBSET.json`` atomically (floats round-trip exactly)."""
        return atomic_write(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def from_dict(cls, info: dict, where: str = "subset") -> "Subset":
        """A subset from the dict of a ``SUBSET.json``; every field is checked, errors name ``where`` and the field.

        A file without a ``text_set_id`` (written by lmmap 0.1 from a bare map) loads as unbound.
        """
        if not isinstance(info, dict) or info.get("format") != SUBSET_FORMAT:
            raise FormatError(f"{where} is not an lmmap subset file (make one with `lmmap select`)")
        f = _Fields(info, where)
        version = f.integer("version", minimum=0, default=0)
        if version > SUBSET_VERSION:
            raise FormatError(f"{where} was written by a newer lmmap (subset version {version}); upgrade lmmap")
        rows = f.get("texts", list)
        cols = {k: [] for k in ("pos", "index", "count", "pi", "w")}
        for t, row in enumerate(rows):
            if not isinstance(row, dict):
                raise FormatError(f"{where}: texts[{t}] is {_short(row)}, not an object with pos, index, count, pi, w")
            for k in ("pos", "index", "count"):
                cols[k].append(f.integer(k, row=row, t=t))
            for k in ("pi", "w"):
                cols[k].append(f.number(k, row=row, t=t))
        text_set_id = f.get("text_set_id", str, required=False)
        unbound = f.get("unbound", bool, required=False)
        if text_set_id is None:
            unbound = True  # it cannot say which texts it indexes; a store accepts it only when told to
        elif unbound:
            raise FormatError(f"{where}: says both text_set_id {text_set_id[:19]}… and unbound; the file is damaged")
        threshold = f.number("threshold", required=False)
        models = f.get("models", list, required=False, default=[])
        try:
            sub = cls(
                text_pos=cols["pos"],
                text_index=cols["index"],
                counts=cols["count"],
                pi=cols["pi"],
                weights=cols["w"],
                method=f.get("method", str),
                n=f.integer("n"),
                random_state=f.integer("seed", required=False),
                text_set_id=text_set_id,
                n_texts=f.integer("n_texts", minimum=1),
                models=models,
                threshold=threshold,
                n_excluded=f.integer("n_excluded", minimum=0, default=0),
                created_at=f.get("created_at", str, required=False),
                unbound=bool(unbound),
            )
        except LmmapError as exc:
            raise FormatError(f"{where}: {exc}; fix the file or select again") from None
        if "d" in info and f.integer("d") != sub.d:
            raise FormatError(f"{where}: says d = {info['d']} but lists {sub.d} texts; the file is damaged")
        return sub

    @classmethod
    def load(cls, path: str | os.PathLike, store=None, allow_other_texts: bool = False) -> "Subset":
        """Read ``SUBSET.json`` (as written by :meth:`save` / ``lmmap select``).

        With ``store``: checked against it and bound to its text set (:meth:`bind`; ``allow_other_texts``
        as there).
        """
        path = Path(path)
        if not path.exists():
            raise MissingFileError(f"subset file {path} does not exist (make one with `lmmap select`)", params=("path",))
        if path.is_dir():
            raise FormatError(f"{path} is a directory; give the SUBSET.json file that `lmmap select` wrote")
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise FormatError(f"{path} is not valid JSON ({_short(str(exc), 120)}); make a subset with `lmmap select`") from None
        sub = cls.from_dict(info, where=str(path))
        if store is not None:
            try:
                sub = sub.bind(store, allow_other_texts=allow_other_texts)
            except InputError as exc:
                raise InputError(f"{path}: {exc}", params=exc.params) from None
        return sub

    def text_set(self, store=None):
        """The d texts as a :class:`lmmap.TextSet` (from ``store``, checked, or those kept by :func:`select`)."""
        if store is not None:
            self.check_store(store)
            return store.texts.subset(self.text_pos)
        if self.texts is None:
            raise InputError("this subset does not carry its texts: give the store they come from", params=("store",))
        from lmmap.data.texts import TextSet

        return TextSet.from_texts(self.texts, index=self.text_index)

    def save_texts(self, path: str | os.PathLike, store=None) -> Path:
        """Write the d texts as plain JSONL (one ``{"index", "text", ...}`` per line), to score them elsewhere."""
        path = Path(path)
        if path.suffix.lower() not in (".jsonl", ".ndjson"):
            raise InputError(f"{path}: the texts are written as JSONL; give a .jsonl path", params=("path",))
        return self.text_set(store).save(path)


# -- checking values ------------------------------------------------------------------------

_INT64 = (-(2**63), 2**63 - 1)


def _short(value, limit: int = 40) -> str:
    r = repr(value)
    return r if len(r) <= limit else r[: limit - 1] + "…"


def _is_number(x) -> bool:
    return isinstance(x, (numbers.Real, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _int_scalar(name: str, value, minimum: int | None = None) -> int:
    if not _is_int(value):
        raise InputError(f"{name} must be an integer, got {_short(value)}")
    if minimum is not None and value < minimum:
        raise InputError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _int_array(name: str, values) -> np.ndarray:
    """Integers as int64; fractions, NaN, strings and numbers beyond int64 are refused (never truncated)."""
    a = values if isinstance(values, np.ndarray) else np.asarray(values, dtype=object)
    if a.dtype.kind == "u" and a.size and a.max() > _INT64[1]:
        raise InputError(f"{name} holds {int(a.max())}, beyond the 64-bit integer range")
    if a.dtype.kind not in "iu":
        for k, x in enumerate(a.reshape(-1)):
            if not _is_int(x) or not _INT64[0] <= x <= _INT64[1]:
                raise InputError(f"{name}[{k}] is {_short(x)}; it must be an integer")
    return _one_dim(name, np.asarray(a.tolist() if a.dtype.kind == "O" else a, dtype=np.int64))


def _float_array(name: str, values) -> np.ndarray:
    a = values if isinstance(values, np.ndarray) else np.asarray(values, dtype=object)
    if a.dtype.kind not in "fiu":
        bad = [(k, x) for k, x in enumerate(a.reshape(-1)) if not _is_number(x)]
        if bad:
            k, x = bad[0]
            raise InputError(f"{name}[{k}] is {_short(x)}; it must be a number")
    try:
        return _one_dim(name, np.asarray(values, dtype=np.float64))
    except OverflowError:
        raise InputError(f"{name} holds a number too large for a float") from None


def _one_dim(name: str, a: np.ndarray) -> np.ndarray:
    if a.ndim != 1:
        raise InputError(f"{name} must be a list of values (1-D), got shape {a.shape}")
    return a


class _Fields:
    """Typed access to a subset file's fields; errors are one-line FormatErrors naming the file and field."""

    def __init__(self, info: dict, where: str):
        self.info, self.where = info, where

    def _name(self, key, t):
        return key if t is None else f"texts[{t}].{key}"

    def get(self, key, kind, required=True, default=None, row=None, t=None):
        src = self.info if row is None else row
        if key not in src or src[key] is None:
            if required and default is None:
                raise FormatError(f"{self.where}: field {self._name(key, t)!r} is missing; the file is damaged — select again")
            return default
        v = src[key]
        if not isinstance(v, kind) or (kind is not bool and isinstance(v, bool)):
            raise FormatError(
                f"{self.where}: field {self._name(key, t)!r} is {_short(v)}, not {_KIND_NAMES[kind]}; "
                "the file is damaged — select again"
            )
        return v

    def integer(self, key, required=True, minimum=None, default=None, row=None, t=None):
        v = self.get(key, (int, float), required, default, row, t)
        if v is None:
            return None
        if not _is_int(v) or not _INT64[0] <= v <= _INT64[1]:
            raise FormatError(f"{self.where}: field {self._name(key, t)!r} is {_short(v)}, not an integer; the file is damaged — select again")
        if minimum is not None and v < minimum:
            raise FormatError(f"{self.where}: field {self._name(key, t)!r} is {v}; it must be at least {minimum}")
        return v

    def number(self, key, required=True, row=None, t=None):
        v = self.get(key, (int, float), required, None, row, t)
        if v is not None and not math.isfinite(v):
            raise FormatError(f"{self.where}: field {self._name(key, t)!r} is {v}, not a finite number; the file is damaged — select again")
        return v


_KIND_NAMES = {str: "a string", list: "a list", bool: "true or false", (int, float): "a number"}

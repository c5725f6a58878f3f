"""A resampled subset of texts: which texts, drawn how often, with which weights (SPEC §4).

``select`` computes the importance ``π`` of every text from the map of some
models, draws n texts with replacement and keeps the d unique ones with their
counts ``c`` and weights ``w = c/(nπ)``. The resulting :class:`Subset` is
everything needed to build a map from those d texts alone
(``ModelMap.from_store(store, subset=...)``) or to place new models scored on
them (:mod:`lmmap.placement`): the text positions, the weights, the models
``π`` came from and the clipping threshold of their full map.

A subset is saved as JSON (``SUBSET.json``)::

    {"format": "lmmap-subset", "version": 1, "method": "ls", "n": 2900, "seed": 0,
     "d": 2192, "text_set_id": "sha256:…", "n_texts": 10000, "threshold": -1412.34,
     "models": [...], "n_excluded": 0, "texts": [{"pos": 3, "index": 3, "count": 2,
     "pi": 0.00012, "w": 0.83}, ...]}
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from . import importance as imp
from .exceptions import LmmapError

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
    method, n, seed : how the texts were drawn.
    text_set_id, n_texts : the identity and size N of the text set.
    models : names of the models whose map gave ``π``.
    threshold : the clipping threshold of those models' full map (None: no clipping).
    n_excluded : texts with ``π = 0`` (every model scores them alike), never drawn.
    """

    text_pos: np.ndarray
    text_index: np.ndarray
    counts: np.ndarray
    pi: np.ndarray
    weights: np.ndarray
    method: str
    n: int
    seed: int | None
    text_set_id: str | None
    n_texts: int
    models: list[str]
    threshold: float | None
    n_excluded: int = 0
    created_at: str | None = None
    texts: list[str] | None = field(default=None, repr=False)

    def __post_init__(self):
        self.text_pos = np.asarray(self.text_pos, dtype=np.int64)
        self.text_index = np.asarray(self.text_index, dtype=np.int64)
        self.counts = np.asarray(self.counts, dtype=np.int64)
        self.pi = np.asarray(self.pi, dtype=np.float64)
        self.weights = np.asarray(self.weights, dtype=np.float64)
        self.models = [str(m) for m in self.models]
        self.n = imp.check_sample_size(self.n)
        self.method = imp.check_method(self.method)
        self.threshold = None if self.threshold is None else float(self.threshold)
        self._validate()

    def _validate(self, where: str = "subset") -> None:
        d = self.text_pos.shape[0]
        if d == 0:
            raise LmmapError(f"{where}: it holds no texts")
        for name in ("text_index", "counts", "pi", "weights"):
            if getattr(self, name).shape != (d,):
                raise LmmapError(f"{where}: {name} has {getattr(self, name).shape[0]} entries for {d} texts")
        if self.text_pos.min() < 0 or self.text_pos.max() >= self.n_texts:
            raise LmmapError(f"{where}: text positions outside 0..{self.n_texts - 1}")
        if np.any(np.diff(self.text_pos) <= 0):
            raise LmmapError(f"{where}: text positions must be unique and sorted")
        if np.any(self.counts <= 0) or int(self.counts.sum()) != self.n:
            raise LmmapError(f"{where}: the counts must be positive and sum to n = {self.n}, they sum to {int(self.counts.sum())}")
        if not np.all(np.isfinite(self.pi)) or np.any(self.pi <= 0) or np.any(self.pi > 1):
            raise LmmapError(f"{where}: every drawn text needs a probability π in (0, 1]")
        expected = self.counts / (self.n * self.pi)
        if not np.allclose(self.weights, expected, rtol=_W_RTOL, atol=0):
            raise LmmapError(f"{where}: the weights are not c/(nπ); the file was edited or corrupted — select again")
        if not 0 <= self.n_excluded < self.n_texts:
            raise LmmapError(f"{where}: n_excluded must be in 0..N-1")

    # -- basic quantities ---------------------------------------------------------
    @property
    def d(self) -> int:
        """The number of unique texts."""
        return int(self.text_pos.shape[0])

    def __len__(self) -> int:
        return self.d

    def summary(self) -> str:
        thr = "off" if self.threshold is None else f"{self.threshold:.2f}"
        return (
            f"{self.method} subset: n = {self.n} draws, d = {self.d} unique texts of N = {self.n_texts} "
            f"({100 * self.d / self.n_texts:.1f}%), Σw = {self.weights.sum():.1f}, "
            f"from {len(self.models)} models, clip threshold {thr}"
        )

    # -- checks against a store -----------------------------------------------------
    def check_store(self, store) -> None:
        """Raise :class:`LmmapError` unless this subset was selected on ``store``'s text set.

        Same identity and size N, and the same text ids at the subset's positions.
        """
        store.check_text_set(self.text_set_id, self.n_texts, what=f"the subset ({self.method}, d = {self.d})")
        ids = np.asarray(store.texts.index)[self.text_pos]
        if not np.array_equal(ids, self.text_index):
            bad = int(np.flatnonzero(ids != self.text_index)[0])
            raise LmmapError(
                f"the subset's text {int(self.text_index[bad])} is not in the store at position "
                f"{int(self.text_pos[bad])} (found text {int(ids[bad])}): the subset was edited or "
                "made for another text set; select again on this store"
            )

    def check_models(self, store) -> None:
        """Raise unless every model that defined the subset's map is in ``store``."""
        missing = [m for m in self.models if not store.has_model(m)]
        if missing:
            raise LmmapError(
                f"the subset was selected from a map of {len(self.models)} models, {len(missing)} of which are not "
                f"in the store {store.path} (e.g. {missing[0]!r}): it belongs to another map; "
                "select again on this store"
            )

    # -- files --------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": SUBSET_FORMAT,
            "version": SUBSET_VERSION,
            "method": self.method,
            "n": self.n,
            "seed": self.seed,
            "d": self.d,
            "text_set_id": self.text_set_id,
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
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def from_dict(cls, info: dict, where: str = "subset") -> "Subset":
        if not isinstance(info, dict) or info.get("format") != SUBSET_FORMAT:
            raise LmmapError(f"{where} is not an lmmap subset file (make one with `lmmap select`)")
        if info.get("version", 0) > SUBSET_VERSION:
            raise LmmapError(f"{where} was written by a newer lmmap (subset version {info['version']}); upgrade lmmap")
        try:
            rows = info["texts"]
            cols = {k: [r[k] for r in rows] for k in ("pos", "index", "count", "pi", "w")}
            sub = cls(
                text_pos=cols["pos"],
                text_index=cols["index"],
                counts=cols["count"],
                pi=cols["pi"],
                weights=cols["w"],
                method=info["method"],
                n=info["n"],
                seed=info.get("seed"),
                text_set_id=info.get("text_set_id"),
                n_texts=int(info["n_texts"]),
                models=info.get("models", []),
                threshold=info.get("threshold"),
                n_excluded=int(info.get("n_excluded", 0)),
                created_at=info.get("created_at"),
            )
        except (KeyError, TypeError) as exc:
            raise LmmapError(f"{where}: missing or malformed field {exc}; the file is damaged — select again") from None
        except LmmapError as exc:
            raise LmmapError(f"{where}: {exc}") from None
        if "d" in info and int(info["d"]) != sub.d:
            raise LmmapError(f"{where}: says d = {info['d']} but lists {sub.d} texts; the file is damaged")
        return sub

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Subset":
        """Read ``SUBSET.json`` (as written by :meth:`save` / ``lmmap select``)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"subset file {path} does not exist (make one with `lmmap select`)")
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LmmapError(f"{path} is not valid JSON ({exc}); make a subset with `lmmap select`") from None
        return cls.from_dict(info, where=str(path))

    def text_set(self, store=None):
        """The d texts as a :class:`lmmap.TextSet` (from ``store``, checked, or those kept by :func:`select`)."""
        if store is not None:
            self.check_store(store)
            return store.texts.subset(self.text_pos)
        if self.texts is None:
            raise LmmapError("this subset does not carry its texts: give the store they come from")
        from .texts import TextSet

        return TextSet.from_texts(self.texts, index=self.text_index)

    def save_texts(self, path: str | os.PathLike, store=None) -> Path:
        """Write the d texts as plain JSONL (one ``{"index", "text", ...}`` per line), to score them elsewhere."""
        path = Path(path)
        if path.suffix.lower() not in (".jsonl", ".ndjson"):
            raise LmmapError(f"{path}: the texts are written as JSONL; give a .jsonl path")
        return self.text_set(store).save(path)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# -- selection --------------------------------------------------------------------------


def draw_subset(Q, method: str, n: int, seed=None) -> dict:
    """The numeric part of :func:`select`: ``π`` from ``Q``, n draws, the unique texts.

    Returns a dict with ``text_pos`` (u), ``counts`` (c), ``pi`` (``π_u``),
    ``weights`` (w) and ``n_excluded`` (texts with ``π = 0``).
    """
    n = imp.check_sample_size(n)
    pi = imp.importance(Q, method)
    u, c, w = imp.resample(pi, n, np.random.default_rng(seed))
    return {"text_pos": u, "counts": c, "pi": pi[u], "weights": w, "n_excluded": imp.n_zero_importance(pi)}


def complete_models(store) -> list[str]:
    """The models of ``store`` scored on every text (the ones that can define a full map)."""
    return [name for name, rec in store.records().items() if int(rec.get("n_scored", -1)) == store.n_texts]


def select(source, method: str, n: int, seed: int | None = 0, models=None, *, clip: bool = True, texts=None) -> Subset:
    """Resample n texts by importance ``method`` (uniform | ls | kl) from the map of ``models``.

    Parameters
    ----------
    source : a :class:`lmmap.Store` or a full-text-set :class:`lmmap.ModelMap`.
        From a store, the full map of ``models`` (default: every model scored
        on all N texts) is built with clipping (unless ``clip=False``) to give
        ``Q`` and the threshold.
    method : "uniform", "ls" (``π ∝ ‖Q^(s)‖²``) or "kl" (``π ∝ sqrt(Σ_ij (q_i − q_j)⁴)``).
    n : number of draws with replacement (a positive integer).
    seed : random seed of the draws.
    models : names of the models that define the map (a store only).
    texts : the map's :class:`lmmap.TextSet` when ``source`` is a ModelMap
        (default: text ids are the positions 0..N-1).
    """
    from .modelmap import ModelMap

    method = imp.check_method(method)
    n = imp.check_sample_size(n)
    if isinstance(source, ModelMap):
        if models is not None:
            raise LmmapError("models= applies to a store; a ModelMap already fixes its models")
        mm = source
        if mm.w is not None or mm.L.shape[1] != mm.n_texts:
            raise LmmapError(
                f"select needs the map on the full text set (N = {mm.n_texts}); this one is built on "
                f"{mm.L.shape[1]} resampled texts"
            )
    else:
        store = source
        if models is None:
            models = complete_models(store)
            if not models:
                raise LmmapError(
                    f"no model in the store {store.path} is scored on all {store.n_texts} texts; "
                    "importance needs the full map of at least 3 models"
                )
        mm = ModelMap.from_store(store, models=list(models), clip=clip)
        texts = store.texts
    drawn = draw_subset(mm.Q, method, n, seed)
    pos = drawn["text_pos"]
    if texts is not None:
        if len(texts) != mm.n_texts:
            raise LmmapError(f"texts has {len(texts)} texts but the map has N = {mm.n_texts}")
        index = np.asarray(texts.index)[pos]
        kept = texts.subset(pos).texts
    else:
        index, kept = pos, None
    return Subset(
        text_pos=pos,
        text_index=index,
        counts=drawn["counts"],
        pi=drawn["pi"],
        weights=drawn["weights"],
        method=method,
        n=n,
        seed=seed,
        text_set_id=mm.text_set_id if mm.text_set_id is not None else (texts.identity if texts is not None else None),
        n_texts=int(mm.n_texts),
        models=list(mm.names),
        threshold=mm.threshold,
        n_excluded=drawn["n_excluded"],
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        texts=kept,
    )

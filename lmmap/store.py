"""The log-likelihood store: a directory anyone can read with pyarrow, DuckDB or pandas.

Layout::

    STORE/
      store.json                  format version and the text set's identity
      texts.parquet               the text set (index, text, source, ...)
      models/<model>.parquet      one file per model: text_pos (0..N-1), loglik,
                                  n_tokens, truncated; the model's record (SPEC §2)
                                  as JSON in the schema metadata under b"lmmap"
      metadata.parquet            user metadata: a `model` column and any others
      partial/<model>/<key>/      scoring checkpoints (resumable scoring)

Every file is written to a temporary name and renamed into place, so a reader
never sees half a file. Shared files (metadata, the check that a model name is
new) are changed under an exclusive ``flock`` on ``STORE/.lock``, so processes
writing different models at once never lose or corrupt anything. DuckDB reads
all vectors at once: ``SELECT * FROM 'STORE/models/*.parquet'``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import __version__
from .exceptions import LmmapError
from .texts import TextSet

STORE_FORMAT = "lmmap-store"
STORE_VERSION = 1
RECORD_KEY = b"lmmap"
VECTOR_SCHEMA = pa.schema(
    [
        ("text_pos", pa.int32()),
        ("loglik", pa.float64()),
        ("n_tokens", pa.int32()),
        ("truncated", pa.bool_()),
    ]
)
# Fields of a record that must agree for vectors to share one map (SPEC §2).
CONVENTION_FIELDS = ("convention",)


def model_filename(name: str) -> str:
    """A file name for a model: percent-encoded, so distinct names never collide."""
    if not name or name in (".", ".."):
        raise LmmapError(f"invalid model name {name!r}")
    return quote(name, safe="-_.") + ".parquet"


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_write_table(path: Path, table: pa.Table) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


class Store:
    """A directory of log-likelihood vectors on one text set (see module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        info_path = self.path / "store.json"
        if not info_path.exists():
            raise LmmapError(
                f"{self.path} is not an lmmap store (no store.json); create one with "
                "`lmmap init --texts TEXTS.jsonl` or Store.create()"
            )
        info = json.loads(info_path.read_text())
        if info.get("format") != STORE_FORMAT:
            raise LmmapError(f"{info_path}: not an lmmap store file")
        if info.get("version", 0) > STORE_VERSION:
            raise LmmapError(f"{self.path} was written by a newer lmmap (store version {info['version']}); upgrade lmmap")
        self.info = info
        self._texts: TextSet | None = None

    # -- creation -------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, texts: TextSet, exist_ok: bool = False) -> "Store":
        """A new store on ``texts``. ``exist_ok``: reopen an existing store on the same text set."""
        path = Path(path)
        if (path / "store.json").exists():
            store = cls(path)
            if not exist_ok:
                raise FileExistsError(f"{path} is already an lmmap store; open it instead")
            store.check_text_set(texts.identity, len(texts), what=f"the text set given for {path}")
            return store
        path.mkdir(parents=True, exist_ok=True)
        (path / "models").mkdir(exist_ok=True)
        _atomic_write_table(path / "texts.parquet", texts.table)
        info = {
            "format": STORE_FORMAT,
            "version": STORE_VERSION,
            "text_set": {"identity": texts.identity, "n_texts": len(texts)},
            "created_at": now_iso(),
            "lmmap_version": __version__,
        }
        _atomic_write_bytes(path / "store.json", json.dumps(info, indent=2).encode())
        return cls(path)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Store":
        return cls(path)

    # -- the text set ---------------------------------------------------------
    @property
    def text_set_id(self) -> str:
        return self.info["text_set"]["identity"]

    @property
    def n_texts(self) -> int:
        """N, the size of the store's text set ``D_N``."""
        return int(self.info["text_set"]["n_texts"])

    @property
    def texts(self) -> TextSet:
        if self._texts is None:
            self._texts = TextSet(pq.read_table(self.path / "texts.parquet"))
        return self._texts

    def check_text_set(self, identity: str | None, n_texts: int | None, what: str) -> None:
        """Raise unless ``what`` belongs to this store's text set (same size; same identity when known)."""
        if n_texts is not None and int(n_texts) != self.n_texts:
            raise LmmapError(
                f"{what} has {n_texts} texts but the store's text set has {self.n_texts}: "
                "it was computed on another text set"
            )
        if identity is not None and identity != self.text_set_id:
            raise LmmapError(
                f"{what} belongs to text set {identity[:19]}…, not the store's {self.text_set_id[:19]}…: "
                "it was computed on another text set"
            )

    # -- locking --------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self):
        """An exclusive inter-process lock on the store's shared files."""
        with open(self.path / ".lock", "a+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    # -- models ---------------------------------------------------------------
    def _model_path(self, name: str) -> Path:
        return self.path / "models" / model_filename(name)

    def has_model(self, name: str) -> bool:
        return self._model_path(name).exists()

    def _model_files(self) -> list[Path]:
        return [p for p in (self.path / "models").glob("*.parquet") if not p.name.startswith(".")]

    def records(self) -> dict[str, dict]:
        """Every model's record, in the order the models were added."""
        files = self._model_files()
        with ThreadPoolExecutor(max_workers=8) as ex:
            recs = list(ex.map(_read_record, files))
        recs.sort(key=lambda r: (r.get("added_ns", 0), r["model"]))
        return {r["model"]: r for r in recs}

    def model_names(self) -> list[str]:
        return list(self.records())

    def record(self, name: str) -> dict:
        path = self._model_path(name)
        if not path.exists():
            raise LmmapError(f"model {name!r} is not in the store {self.path}; `lmmap models` lists what is")
        return _read_record(path)

    def _vector_table(self, name, loglik, n_tokens, truncated, text_pos, record) -> pa.Table:
        loglik = np.asarray(loglik, dtype=np.float64)
        if loglik.ndim != 1:
            raise LmmapError(f"model {name!r}: the log-likelihood vector must be 1-D, got shape {loglik.shape}")
        m = loglik.shape[0]
        if text_pos is None:
            if m != self.n_texts:
                raise LmmapError(
                    f"model {name!r} has {m} log-likelihoods but the store's text set has {self.n_texts} texts: "
                    "it was scored on another text set"
                )
            text_pos = np.arange(m)
        else:
            text_pos = np.asarray(text_pos, dtype=np.int64)
            if text_pos.shape != (m,):
                raise LmmapError(f"model {name!r}: text positions and log-likelihoods differ in length")
            if m and (text_pos.min() < 0 or text_pos.max() >= self.n_texts):
                raise LmmapError(f"model {name!r}: text positions outside 0..{self.n_texts - 1}")
            if len(np.unique(text_pos)) != m:
                raise LmmapError(f"model {name!r}: a text is scored twice")
        bad = ~np.isfinite(loglik)
        if bad.any():
            raise LmmapError(
                f"model {name!r} has {int(bad.sum())} non-finite log-likelihoods (NaN/inf), "
                f"first at text position {int(text_pos[bad][0])}; nothing was stored for it"
            )
        if np.any(loglik > 1e-6):
            raise LmmapError(f"model {name!r} has positive log-likelihoods: these are not log-probabilities")
        n_tokens = np.full(m, -1) if n_tokens is None else np.asarray(n_tokens)
        truncated = np.zeros(m, bool) if truncated is None else np.asarray(truncated, bool)
        rec = {
            "convention": "reference",
            "scorer": "import",
            **(record or {}),
            "model": name,
            "text_set_id": self.text_set_id,
            "n_texts": self.n_texts,
            "n_scored": int(m),
            "n_truncated": int(truncated.sum()),
            "added_at": now_iso(),
            "added_ns": time.time_ns(),
            "lmmap_version": __version__,
        }
        order = np.argsort(text_pos, kind="stable")
        table = pa.table(
            {
                "text_pos": pa.array(text_pos[order], pa.int32()),
                "loglik": pa.array(loglik[order], pa.float64()),
                "n_tokens": pa.array(n_tokens[order], pa.int32()),
                "truncated": pa.array(truncated[order], pa.bool_()),
            },
            schema=VECTOR_SCHEMA,
        )
        return table.replace_schema_metadata({RECORD_KEY: json.dumps(rec).encode()})

    def write_models(self, vectors: list[dict], replace: bool = False) -> list[str]:
        """Store several models at once; all or nothing.

        Each item has ``name`` and ``loglik`` and optionally ``n_tokens``,
        ``truncated``, ``text_pos`` (positions in the text set when only some
        texts were scored) and ``record`` (SPEC §2 fields). Every vector is
        validated and written to a temporary file first; then, under the
        store lock, names are checked and all files renamed into place.
        """
        names = [v["name"] for v in vectors]
        seen = set()
        for n in names:
            if n in seen:
                raise LmmapError(f"duplicate model name {n!r}: each model must appear once")
            seen.add(n)
        tables = [
            self._vector_table(v["name"], v["loglik"], v.get("n_tokens"), v.get("truncated"), v.get("text_pos"), v.get("record"))
            for v in vectors
        ]
        models_dir = self.path / "models"
        tmps = [models_dir / f".{uuid.uuid4().hex}.tmp" for _ in tables]

        def _write(args):
            pq.write_table(*args)

        try:
            with ThreadPoolExecutor(max_workers=4) as ex:
                list(ex.map(_write, zip(tables, tmps)))
            with self.lock():
                if not replace:
                    clash = [n for n in names if self.has_model(n)]
                    if clash:
                        raise LmmapError(
                            f"{len(clash)} model(s) already in the store, e.g. {clash[0]!r}; "
                            "pass --replace (replace=True) to overwrite them"
                        )
                for tmp, n in zip(tmps, names):
                    os.replace(tmp, self._model_path(n))
        finally:
            for tmp in tmps:
                tmp.unlink(missing_ok=True)
        return names

    def write_model(self, name: str, loglik, *, n_tokens=None, truncated=None, text_pos=None, record=None, replace=False) -> str:
        """Store one model's vector atomically (see ``write_models``)."""
        vec = dict(name=name, loglik=loglik, n_tokens=n_tokens, truncated=truncated, text_pos=text_pos, record=record)
        return self.write_models([vec], replace=replace)[0]

    def remove_model(self, name: str) -> None:
        with self.lock():
            path = self._model_path(name)
            if not path.exists():
                raise LmmapError(f"model {name!r} is not in the store")
            path.unlink()

    def vectors(self, name: str) -> pd.DataFrame:
        """One model's stored rows: text_pos, loglik, n_tokens, truncated."""
        path = self._model_path(name)
        if not path.exists():
            raise LmmapError(f"model {name!r} is not in the store {self.path}; `lmmap models` lists what is")
        return pq.read_table(path).to_pandas()

    def models_with_texts(self, text_pos) -> list[str]:
        """The models scored on every text at ``text_pos`` (all complete models, and partial ones that cover them)."""
        need = np.unique(np.asarray(text_pos, dtype=np.int64))
        out = []
        for name, rec in self.records().items():
            if rec["n_scored"] == self.n_texts:
                out.append(name)
            elif np.isin(need, self.vectors(name)["text_pos"].to_numpy()).all():
                out.append(name)
        return out

    def matrix(self, models=None, text_pos=None, allow_mixed: bool = False) -> tuple[list[str], np.ndarray]:
        """``(names, L)``: the K×n log-likelihood matrix of ``models`` (default: all) on ``text_pos`` (default: all N).

        Raises if a model lacks one of the texts, or if the models were scored
        under different conventions (unless ``allow_mixed``).
        """
        recs = self.records()
        if models is None:
            names = list(recs)
        else:
            names = list(models)
            missing = [m for m in names if m not in recs]
            if missing:
                raise LmmapError(f"not in the store: {', '.join(map(repr, missing[:5]))}; `lmmap models` lists what is")
        if not names:
            raise LmmapError(f"the store {self.path} holds no models yet; `lmmap import` or `lmmap score` adds some")
        if not allow_mixed:
            check_same_convention({n: recs[n] for n in names})
        want = np.arange(self.n_texts) if text_pos is None else np.asarray(text_pos, dtype=np.int64)
        L = np.empty((len(names), len(want)), dtype=np.float64)

        def _load(i):
            rec = recs[names[i]]
            t = pq.read_table(self._model_path(names[i]), columns=["text_pos", "loglik"])
            pos = t.column("text_pos").to_numpy()
            ll = t.column("loglik").to_numpy()
            if rec["n_scored"] == self.n_texts and text_pos is None:
                L[i] = ll  # files are sorted by text_pos and complete
                return
            lookup = np.full(self.n_texts, -1, dtype=np.int64)
            lookup[pos] = np.arange(len(pos))
            at = lookup[want]
            if (at < 0).any():
                raise LmmapError(
                    f"model {names[i]!r} was scored on {len(pos)} of the {self.n_texts} texts and lacks "
                    f"{int((at < 0).sum())} that this operation needs; score it on them (lmmap score) first"
                )
            L[i] = ll[at]

        with ThreadPoolExecutor(max_workers=8) as ex:
            list(ex.map(_load, range(len(names))))
        return names, L

    # -- metadata ---------------------------------------------------------------
    def metadata(self) -> pd.DataFrame:
        """User metadata (model_type, family, ...) indexed by model name; empty if none was given."""
        path = self.path / "metadata.parquet"
        if not path.exists():
            return pd.DataFrame(index=pd.Index([], name="model"))
        return pq.read_table(path).to_pandas().set_index("model")

    def set_metadata(self, df: pd.DataFrame) -> None:
        """Merge ``df`` (a ``model`` column or index, any other columns) into the stored metadata."""
        df = df.copy()
        if "model" in df.columns:
            df = df.set_index("model")
        df.index = df.index.astype(str)
        df.index.name = "model"
        dup = df.index[df.index.duplicated()]
        if len(dup):
            raise LmmapError(f"metadata names model {dup[0]!r} twice; give each model one row")
        with self.lock():
            old = self.metadata()
            merged = df.combine_first(old) if len(old) else df
            cols = list(dict.fromkeys([*old.columns, *df.columns]))
            merged = merged[cols].reset_index()
            _atomic_write_table(self.path / "metadata.parquet", pa.Table.from_pandas(merged, preserve_index=False))

    # -- scoring checkpoints ----------------------------------------------------
    def _partial_dir(self, name: str, key: str) -> Path:
        return self.path / "partial" / model_filename(name)[: -len(".parquet")] / key

    def save_checkpoint(self, name: str, key: str, text_pos, loglik, n_tokens, truncated) -> None:
        """Atomically add a chunk of scored texts for ``name`` under settings ``key``."""
        d = self._partial_dir(name, key)
        d.mkdir(parents=True, exist_ok=True)
        table = pa.table(
            {
                "text_pos": pa.array(np.asarray(text_pos), pa.int32()),
                "loglik": pa.array(np.asarray(loglik, dtype=np.float64), pa.float64()),
                "n_tokens": pa.array(np.asarray(n_tokens), pa.int32()),
                "truncated": pa.array(np.asarray(truncated, bool), pa.bool_()),
            },
            schema=VECTOR_SCHEMA,
        )
        _atomic_write_table(d / f"chunk-{time.time_ns()}-{os.getpid()}.parquet", table)

    def load_checkpoint(self, name: str, key: str) -> pd.DataFrame:
        """The texts already scored for ``name`` under ``key`` (other keys' chunks are stale and removed)."""
        root = self.path / "partial" / model_filename(name)[: -len(".parquet")]
        if root.exists():
            for other in root.iterdir():
                if other.name != key and other.is_dir():
                    _rmtree(other)
        d = self._partial_dir(name, key)
        files = sorted(p for p in d.glob("chunk-*.parquet")) if d.exists() else []
        if not files:
            return pd.DataFrame({c: pd.Series(dtype=t.to_pandas_dtype()) for c, t in zip(VECTOR_SCHEMA.names, VECTOR_SCHEMA.types)})
        df = pa.concat_tables([pq.read_table(p) for p in files]).to_pandas()
        return df.drop_duplicates("text_pos", keep="last").sort_values("text_pos").reset_index(drop=True)

    def clear_checkpoint(self, name: str) -> None:
        root = self.path / "partial" / model_filename(name)[: -len(".parquet")]
        if root.exists():
            _rmtree(root)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _read_record(path: Path) -> dict:
    meta = pq.read_schema(path).metadata or {}
    if RECORD_KEY not in meta:
        raise LmmapError(f"{path}: not an lmmap vector file (no record); remove it from the store")
    return json.loads(meta[RECORD_KEY])


def check_same_convention(records: dict[str, dict]) -> None:
    """Raise if the models were scored under different conventions (SPEC §2: never silently mixed)."""
    groups: dict[tuple, list[str]] = {}
    for name, rec in records.items():
        key = tuple(rec.get(f) for f in CONVENTION_FIELDS)
        groups.setdefault(key, []).append(name)
    if len(groups) > 1:
        parts = "; ".join(f"{dict(zip(CONVENTION_FIELDS, k))}: {len(v)} model(s), e.g. {v[0]!r}" for k, v in groups.items())
        raise LmmapError(
            f"the models were scored under different conventions ({parts}); map one convention at a time, "
            "or pass --allow-mixed if you really mean to mix them"
        )

"""Scoring checkpoints: chunks of scored texts kept under ``partial/<file>/<settings key>/`` until the model is
stored, so that an interrupted scoring run resumes where it stopped.

Chunks are written with the backend's atomic ``put`` outside any transaction
(a chunk is whole or absent); :class:`Checkpoints` is mixed into
:class:`lmmap.data.store.Store`, whose ``storage``, ``_scan``, ``vectors`` and
``_columns`` it uses.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lmmap.data.storage.base import plain_leaf
from lmmap.data.store.naming import legacy_filename, model_stem
from lmmap.data.store.tables import VECTOR_SCHEMA
from lmmap.exceptions import InputError


class Checkpoints:
    """The checkpoint methods of :class:`~lmmap.data.store.Store`."""

    def _partial_root(self, name: str) -> str:
        return self.storage.guard(f"partial/{model_stem(name)}")

    def _partial_dir(self, name: str, key: str) -> str:
        if not plain_leaf(key):
            raise InputError(f"a checkpoint key must be a plain folder name, got {key!r}", params=("name", "key"))
        return self.storage.guard(f"{self._partial_root(name)}/{key}")

    def _folders(self, prefix: str) -> list[str]:
        """The names of the real folders in ``prefix`` (never a link to one)."""
        return [n for n in self.storage.list(prefix) if self.storage.what(f"{prefix}/{n}") == "a folder"]

    def _chunks(self, prefix: str) -> list[str]:
        """The checkpoint chunks in ``prefix``: plain files only (never read through a link or from a FIFO)."""
        return sorted(f"{prefix}/{n}" for n in self.storage.list(prefix)
                      if n.startswith("chunk-") and n.endswith(".parquet") and self.storage.what(f"{prefix}/{n}") is None)

    def checkpoint_keys(self, name: str) -> list[str]:
        """The settings keys under which checkpoint chunks of ``name`` are kept (sorted)."""
        return sorted(self._folders(self._partial_root(name)))

    def save_checkpoint(self, name: str, key: str, text_pos, loglik, n_tokens, truncated) -> None:
        """Atomically add a chunk of scored texts for ``name`` under settings ``key``."""
        d = self._partial_dir(name, key)
        table = pa.table(
            {
                "text_pos": pa.array(np.asarray(text_pos), pa.int32()),
                "loglik": pa.array(np.asarray(loglik, dtype=np.float64), pa.float64()),
                "n_tokens": pa.array(np.asarray(n_tokens), pa.int32()),
                "truncated": pa.array(np.asarray(truncated, bool), pa.bool_()),
            },
            schema=VECTOR_SCHEMA,
        )
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        data = sink.getvalue().to_pybytes()
        for attempt in range(5):
            try:
                self.storage.put(f"{d}/chunk-{time.time_ns()}-{os.getpid()}.parquet", data)
                return
            except FileNotFoundError:
                # Another process stored the model and cleared its checkpoints while this chunk was being
                # written (the folder, or our temporary file in it, vanished; another scorer may already
                # have made the folder again): write the chunk again. A chunk left for a stored model is
                # an orphan that the next run or `lmmap doctor --repair` removes.
                if attempt == 4:
                    raise

    def clear_redundant_checkpoints(self, name: str) -> None:
        """Remove ``name``'s checkpoint chunks whose texts are all stored under the same settings."""
        with self._shared():
            found, _, _ = self._scan()
        if name in found:
            root = self._partial_root(name)
            for k in self._orphan_checkpoints({name: found[name]}):
                if root in (k, k.rpartition("/")[0]):
                    self.storage.remove(k)

    def checkpoint_chunks(self, name: str) -> int:
        """How many checkpoint chunks are kept for ``name`` (any settings)."""
        root = self._partial_root(name)
        return sum(len(self._chunks(f"{root}/{k}")) for k in self._folders(root))

    def load_checkpoint(self, name: str, key: str) -> pd.DataFrame:
        """The texts already scored for ``name`` under ``key`` (other keys' chunks are stale and removed)."""
        root = self._partial_root(name)
        for other in self._folders(root):
            if other != key:
                self.storage.remove(f"{root}/{other}")
        tables = []
        for k in self._chunks(self._partial_dir(name, key)):
            try:
                with self.storage.open(k) as src:
                    tables.append(pq.read_table(src))
            except FileNotFoundError:
                continue  # cleared by a process that just stored the model
        if not tables:
            return pd.DataFrame({c: pd.Series(dtype=t.to_pandas_dtype()) for c, t in zip(VECTOR_SCHEMA.names, VECTOR_SCHEMA.types)})
        df = pa.concat_tables(tables).to_pandas()
        return df.drop_duplicates("text_pos", keep="last").sort_values("text_pos").reset_index(drop=True)

    def clear_checkpoint(self, name: str) -> None:
        if self.storage.what("partial") == "a symbolic link":
            return  # not lmmap's: never followed
        old = legacy_filename(name)
        for d in {f"partial/{model_stem(name)}", *([] if old is None else [f"partial/{old[: -len('.parquet')]}"])}:
            self.storage.remove(d)

    def _orphan_checkpoints(self, found: dict[str, tuple[str, dict]]) -> list[str]:
        """Checkpoint folders whose every text is already stored under the same settings (a lost race)."""
        by_stem = {}
        for n, (_, rec) in found.items():
            by_stem[model_stem(n)] = (n, rec)
            old = legacy_filename(n)
            if old is not None:
                by_stem.setdefault(old[: -len(".parquet")], (n, rec))
        out = []
        for stem in self._folders("partial"):
            model_dir = f"partial/{stem}"
            keys = self._folders(model_dir)
            if not keys:
                out.append(model_dir)
                continue
            if stem not in by_stem:
                continue
            n, rec = by_stem[stem]
            stored = None
            for k in keys:
                if k != rec.get("settings_key"):
                    continue
                chunks = self._chunks(f"{model_dir}/{k}")
                if stored is None:
                    stored = self.vectors(n)["text_pos"].to_numpy()
                try:
                    pos = np.concatenate([self._columns(c, ["text_pos"]).column("text_pos").to_numpy()
                                          for c in chunks]) if chunks else np.array([], int)
                except (OSError, pa.ArrowException):
                    continue
                if np.isin(pos, stored).all():
                    out.append(f"{model_dir}/{k}")
        return out

"""The log-likelihood store: a directory anyone can read with pyarrow, DuckDB or pandas — or the same files
in object storage.

Layout (keys; in a folder, the files' paths)::

    STORE/
      store.json                  format version and the text set's identity
      texts.parquet               the text set (index, text, source, ...)
      models/<file>.parquet       one file per model: text_pos (0..N-1), loglik,
                                  n_tokens, truncated; the model's record (SPEC §2)
                                  as JSON in the schema metadata under b"lmmap"
      metadata.parquet            user metadata: a `model` column and any others
      matrix/                     a large store's consolidated float32 matrix and its index, kept in the same
                                  transactions as models/ (:mod:`.matrix`), and a large map's neighbour lists
      partial/<file>/<key>/       scoring checkpoints (resumable scoring)
      adaptive/<file>.json        an adaptive placement's marker and settings (removed with the model)
      damaged/                    files moved aside by ``doctor --repair``
      .staging/<txid>/            a change being written (a folder; see "Transactions")

**File names.** A model's name is in its record; the file name is derived from
it by :func:`model_filename` and is only a place to keep it: lower-case ASCII
letters, digits, ``-``, ``_`` and ``.`` stay, every other character is
percent-encoded (UTF-8), a leading ``.`` is encoded too (no hidden files). A
name with an upper-case letter, or one whose encoding would exceed 200 bytes,
gets a readable (possibly shortened) encoding followed by ``~`` and 16 hex
digits of the name's SHA-256 — so names that differ only by case never share
a file even on a case-insensitive file system, and every file name stays far
under the 255-byte limit. Listing reads names from the records, never from
file names, and lists every ``*.parquet`` file in ``models/`` (dot-files
included: stores written by lmmap 0.1.0 percent-encoded names without these
rules, e.g. ``.%2Fmy-checkpoint.parquet``; they are read as they are, and
``lmmap doctor --repair`` renames them).

**Where it lives.** ``Store(path)`` keeps the store in a folder
(:mod:`lmmap.data.storage.local`); ``Store("s3://bucket/prefix")`` in object
storage through fsspec (:mod:`lmmap.data.storage.objects`, where the same
logical files are immutable objects named by a manifest). The store's logic
(:mod:`.core`) reaches its bytes only through the backend interface
(:mod:`lmmap.data.storage.base`).

**Transactions.** Every change (import, score, ``--replace``, ``rm``,
metadata, per-model state) is all or nothing, even if the process is killed
at any moment, and readers see a change entirely or not at all. In a folder:
files staged in ``.staging/<txid>/``, an fsynced journal, renames under the
store's ``flock`` (:mod:`lmmap.data.storage.local` says more). In object
storage: a new manifest generation written with a conditional put
(:mod:`lmmap.data.storage.objects`). DuckDB reads all vectors of a store
folder at once: ``SELECT * FROM 'STORE/models/*.parquet'``.

Modules: :mod:`.naming` (model names and file names), :mod:`.tables` (what the
files hold: vector tables, records, metadata, store.json), :mod:`.core`
(:class:`Store`: models, metadata, per-model state, the matrix), :mod:`.matrix` (the consolidated matrix),
:mod:`.checkpoints` (scoring checkpoints), :mod:`.doctor` (``lmmap doctor``);
transactions, locks and recovery are the backends' (:mod:`lmmap.data.storage`).
"""

from lmmap.data.conventions import CONVENTIONS
from lmmap.data.storage.base import COMMIT, STAGING, STATE_KINDS, CommitConflict, Interrupted
from lmmap.data.store.core import Store
from lmmap.data.store.doctor import StoreReport
from lmmap.data.store.naming import (
    _HASH_HEX,
    _MAX_STEM,
    _PREFIX,
    _SAFE,
    check_model_name,
    legacy_filename,
    model_filename,
    model_stem,
    name_from_stem,
    now_iso,
)
from lmmap.data.store.tables import (
    CONVENTION_FIELDS,
    MAX_ABS_LOGLIK,
    RECORD_KEY,
    STORE_FORMAT,
    STORE_VERSION,
    VECTOR_SCHEMA,
    ModelExistsError,
    _merge_metadata,
    _metadata_table,
    _normalise_metadata,
    check_same_convention,
)

__all__ = [
    "CONVENTIONS", "COMMIT", "STAGING", "STATE_KINDS", "CommitConflict", "Interrupted", "Store", "StoreReport",
    "check_model_name", "legacy_filename", "model_filename", "model_stem", "name_from_stem", "now_iso",
    "CONVENTION_FIELDS", "MAX_ABS_LOGLIK", "RECORD_KEY", "STORE_FORMAT", "STORE_VERSION", "VECTOR_SCHEMA",
    "ModelExistsError", "check_same_convention",
]

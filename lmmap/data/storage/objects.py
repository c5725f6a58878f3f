"""Object storage through fsspec (``s3://bucket/prefix``; ``memory://`` for tests): a store without a file system.

Layout under the prefix::

    manifests/<generation:012d>.json   which object holds each of the store's files, one per commit
    objects/<txid>/<n>.<ext>           the files themselves, immutable, written once by change <txid>
    partial/<file>/<key>/chunk-*.parquet  scoring checkpoints: plain objects, outside the manifests

**Commits.** A change uploads its files as new objects under
``objects/<txid>/``, then writes manifest ``g+1`` — the manifest ``g`` it read
with the change's puts, renames and deletions applied — with a conditional put
(``If-None-Match: *``): the put succeeds for exactly one writer. A reader
lists ``manifests/``, reads the newest and reads only the objects it names, so
it sees a commit entirely or not at all. The writer that loses the race for
``g+1`` gets :class:`~lmmap.data.storage.base.CommitConflict`; the store runs
its checks again on the new state (a model added meanwhile is a clash; a
vector extending one is merged, as in a folder) and tries again. A writer
killed at any moment leaves at most objects that no manifest names, invisible
to readers; ``lmmap doctor`` reports them and ``doctor --repair`` deletes
them. No lease and no lock file: nothing waits for a dead writer.

Credentials and endpoints come from fsspec's usual configuration
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``FSSPEC_S3_ENDPOINT_URL``,
``~/.config/fsspec/``) or ``Store(url, storage_options={...})``; none is ever
written into the store or a message.

**What it cannot promise that a folder can** (:mod:`lmmap.data.storage.local`):

- *No reader lock.* ``lock(shared=True)`` pins one manifest instead; a reader
  never waits and never blocks a writer, but a reader that holds a pinned
  state for longer than ``doctor --repair``'s grace period (:attr:`ObjectStorage.grace_s`)
  may find an object it names collected.
- *No mutual exclusion.* ``lock(shared=False)`` does not keep other writers
  out: a commit is checked against the manifest it started from and retried
  when another writer got there first (up to 20 times, then one clear
  StoreError). Many writers committing at once mostly retry.
- *Durability is the service's*: there is no fsync; a commit is durable when
  the service acknowledged the manifest's put.
- *Conditional writes are required*: the service must honour
  ``If-None-Match: *`` on PutObject (AWS S3 since 2024, MinIO, moto). One that
  ignores it lets two writers both "win" generation ``g+1``: the later put
  replaces the earlier and that change is lost.
- *Listing must be strongly consistent* (AWS S3 is, since 2020): a reader that
  lists ``manifests/`` must see every acknowledged generation.
- *No undo from hard links*: a commit is one put, so there is nothing to undo;
  but a change refused midway (a permission) leaves its uploaded objects until
  ``doctor --repair``.
- *Orphans until doctor*: objects of killed or losing writers stay (and are
  billed) until ``doctor --repair`` deletes those older than the grace period.
- *Every commit rewrites the whole manifest* (about 120 bytes per file): at
  100,000 models a commit writes about 12 MB.
- *Checkpoints are plain objects*: a chunk is whole or absent (a PUT is
  atomic), but clearing a model's checkpoints is a listing and deletions, not
  one step; a chunk written while they are cleared can survive as an orphan
  (``doctor --repair`` removes it, as in a folder).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import threading
import time
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

from lmmap.data.storage.base import STATE_KINDS, CommitConflict, OpsLog, Unreachable, plain_leaf
from lmmap.exceptions import StoreError

MANIFESTS = "manifests"
OBJECTS = "objects"
PARTIAL = "partial"
_MANIFEST = re.compile(r"^(\d{12})\.json$")
_MAX_MANIFEST = 256 << 20
# The store's own files that a manifest may name (anything else in a manifest is refused as not lmmap's).
_TOP = ("store.json", "texts.parquet", "metadata.parquet")
_FOLDERS = ("models", "damaged", "matrix", *STATE_KINDS)
# Immutable objects already read, kept to save a second GET (a footer, then columns): keyed by object name, so
# never stale.
_CACHE_BYTES = 256 << 20


def _logical_ok(key) -> bool:
    if not isinstance(key, str):
        return False
    if key in _TOP:
        return True
    head, _, leaf = key.partition("/")
    return head in _FOLDERS and plain_leaf(leaf)


class _State:
    """One manifest: its generation and ``{key: object}`` (both immutable once read)."""

    __slots__ = ("generation", "files", "txid")

    def __init__(self, generation: int, files: dict[str, str], txid: str | None = None):
        self.generation = generation
        self.files = files
        self.txid = txid


_EMPTY = _State(-1, {})


class _ObjectTx(OpsLog):
    """One change: objects uploaded under ``objects/<txid>/``, published by writing the next manifest."""

    def __init__(self, storage: "ObjectStorage"):
        self.storage = storage
        self.id = f"{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        super().__init__()
        self._uploaded: list[str] = []
        self._n = 0
        self._mutex = threading.Lock()
        self.committed = False

    def _stage(self, data: bytes, dest: str) -> None:
        if not _logical_ok(dest):
            raise StoreError(f"{self.storage.where(dest)}: not a file lmmap keeps in a store")
        with self._mutex:
            self._n += 1
            ext = dest.rpartition(".")[2]
            obj = f"{OBJECTS}/{self.id}/{self._n:06d}.{ext}"
            self._uploaded.append(obj)
        self.storage._put(obj, data)
        with self._mutex:
            if dest in self._slots:
                self.ops[self._slots[dest]] = ["put", obj, dest]
            else:
                self._slots[dest] = len(self.ops)
                self.ops.append(["put", obj, dest])

    def stage_table(self, table: pa.Table, dest: str) -> None:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        self._stage(sink.getvalue().to_pybytes(), dest)

    def stage_bytes(self, data: bytes, dest: str) -> None:
        self._stage(bytes(data), dest)

    def commit(self) -> None:
        self.storage._commit(self)
        self.committed = True
        # objects staged and then replaced (a merge redone after a lost race) are named by no manifest
        used = {op[1] for op in self.ops if op[0] == "put"}
        self.storage._delete_quietly([o for o in self._uploaded if o not in used])

    def close(self) -> None:
        if not self.committed:
            self.storage._delete_quietly(self._uploaded)
            self._uploaded = []


class ObjectStorage:
    """A store in object storage through fsspec (see the module docstring)."""

    #: ``doctor --repair`` deletes unreferenced objects and superseded manifests only when older than this: a
    #: writer still uploading, or a reader still reading an older manifest, keeps what it uses
    grace_s = 6 * 3600.0
    #: superseded manifests kept by ``doctor --repair`` whatever their age
    keep_manifests = 8

    def __init__(self, url: str, storage_options: dict | None = None):
        import fsspec

        protocol = url.split("://", 1)[0].lower()
        self.location = url.rstrip("/")
        opts = dict(storage_options or {})
        if protocol == "s3":
            # every listing must be fresh (commits by other processes), and each store its own client
            opts.setdefault("use_listings_cache", False)
            opts.setdefault("skip_instance_cache", True)
        try:
            self.fs = fsspec.filesystem(protocol, **opts)
        except (ImportError, ValueError) as exc:
            raise StoreError(f"{self.location}: cannot open {protocol}:// storage ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); for s3:// install s3fs "
                             "(`pip install s3fs`)") from None
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self._s3 = "s3" in protocols
        self.root = self.fs._strip_protocol(url).rstrip("/")
        if not self.root.strip("/"):
            raise StoreError(f"{url}: name a bucket (and a prefix) for the store, e.g. s3://bucket/lmmap-store")
        self.requests: collections.Counter = collections.Counter()
        self._counter_lock = threading.Lock()
        self._pinned: _State | None = None
        self._depth = 0
        self._pin_lock = threading.RLock()
        self._manifests: dict[int, _State] = {}  # immutable once written: cached by generation
        self._cache: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._cache_size = 0
        self._cache_lock = threading.Lock()

    # -- requests -----------------------------------------------------------------------
    def _path(self, obj: str) -> str:
        return f"{self.root}/{obj}" if obj else self.root

    def _count(self, op: str, n: int = 1) -> None:
        with self._counter_lock:
            self.requests[op] += n

    def _call(self, op: str, fn, *args, passthrough=(FileNotFoundError,), **kw):
        """``fn(*args, **kw)`` counted as one ``op`` request.

        Exceptions in ``passthrough`` are the caller's; any other failure is
        the service's or the network's and becomes one :class:`Unreachable` line.
        """
        self._count(op)
        try:
            return fn(*args, **kw)
        except passthrough:
            raise
        except Exception as exc:  # botocore's connection and credential errors are not OSErrors
            first = (str(exc).splitlines() or [""])[0][:200]
            what = ("refused the request" if isinstance(exc, PermissionError)
                    else "could not be reached" if not isinstance(exc, OSError) else "failed")
            raise Unreachable(f"{self.location}: the object store {what} ({type(exc).__name__}: {first}); check "
                              "the bucket, the endpoint and the credentials (fsspec's configuration, e.g. "
                              "FSSPEC_S3_ENDPOINT_URL and AWS_ACCESS_KEY_ID)") from None

    def _put(self, obj: str, data: bytes) -> None:
        self._call("PUT", self.fs.pipe_file, self._path(obj), data, passthrough=())

    def _put_if_absent(self, obj: str, data: bytes) -> bool:
        """Write ``obj`` unless it exists, in one conditional request; False when it exists."""
        path = self._path(obj)
        try:
            if self._s3:
                bucket, key, _ = self.fs.split_path(path)
                self._call("PUT", self.fs.call_s3, "put_object", Bucket=bucket, Key=key, Body=data, IfNoneMatch="*",
                           passthrough=(OSError,))
            else:
                with self._call("PUT", self.fs.open, path, "xb", passthrough=(OSError,)) as f:
                    f.write(data)
        except FileExistsError:
            return False
        except OSError as exc:
            code = getattr(getattr(exc, "__cause__", None), "response", {}).get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise Unreachable(f"{self.location}: the object store refused the commit ({type(exc).__name__}: "
                              f"{(str(exc).splitlines() or [''])[0][:200]}); nothing was changed") from None
        return True

    def _get(self, obj: str, limit: int | None = None) -> bytes:
        with self._cache_lock:
            data = self._cache.get(obj)
            if data is not None:
                self._cache.move_to_end(obj)
                return data
        # one request: s3fs would first ask for the size (HEAD) to split a large object into parallel reads
        data = self._call("GET", self.fs.cat_file, self._path(obj), **({"max_concurrency": 1} if self._s3 else {}))
        if limit is not None and len(data) > limit:
            raise OSError(27, f"{len(data)} bytes, far more than lmmap writes", self.where(obj))
        if obj.startswith(f"{OBJECTS}/") and len(data) < _CACHE_BYTES // 8:
            with self._cache_lock:
                self._cache[obj] = data
                self._cache_size += len(data)
                while self._cache_size > _CACHE_BYTES:
                    _, old = self._cache.popitem(last=False)
                    self._cache_size -= len(old)
        return data

    def _ls(self, prefix: str, detail: bool = False):
        try:
            return self._call("LIST", self.fs.ls, self._path(prefix), detail=detail, refresh=True)
        except FileNotFoundError:
            return []

    def _delete_quietly(self, objs: list[str]) -> None:
        if objs:
            with contextlib.suppress(OSError, StoreError):
                self._call("DELETE", self.fs.rm, [self._path(o) for o in objs])

    def _leaf(self, path: str) -> str:
        return path.rstrip("/").rpartition("/")[2]

    # -- manifests ------------------------------------------------------------------------
    def generations(self) -> list[int]:
        out = []
        for p in self._ls(MANIFESTS):
            m = _MANIFEST.match(self._leaf(p))
            if m:
                out.append(int(m.group(1)))
        return sorted(out)

    def _manifest(self, g: int) -> _State:
        if g in self._manifests:
            return self._manifests[g]
        where = self.where(f"{MANIFESTS}/{g:012d}.json")
        try:
            raw = json.loads(self._get(f"{MANIFESTS}/{g:012d}.json", _MAX_MANIFEST))
        except FileNotFoundError:
            raise  # removed since the listing (doctor --repair pruned it): look again
        except OSError as exc:
            raise StoreError(f"{where}: cannot be read ({exc}); check the credentials' permissions") from None
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise StoreError(f"{where}: not a manifest lmmap wrote (not JSON); `lmmap doctor` names the store's "
                             "damage") from None
        files = raw.get("files") if isinstance(raw, dict) else None
        if not isinstance(files, dict) or raw.get("generation") != g or not all(
                _logical_ok(k) and isinstance(v, str) and v.startswith(f"{OBJECTS}/") and ".." not in v.split("/")
                for k, v in files.items()):
            raise StoreError(f"{where}: not a manifest lmmap wrote; restore the store's objects from a copy")
        state = _State(g, files, raw.get("txid"))
        self._manifests[g] = state
        return state

    def _latest(self) -> _State:
        for _ in range(5):
            gens = self.generations()
            if not gens:
                return _EMPTY
            try:
                return self._manifest(gens[-1])
            except FileNotFoundError:
                continue
        raise StoreError(f"{self.location}: its newest manifest vanished while it was read, five times; "
                         "run the command again")

    def _state(self) -> _State:
        pinned = self._pinned
        return pinned if pinned is not None else self._latest()

    def _commit(self, tx: _ObjectTx) -> None:
        base = self._state()
        files = dict(base.files)
        for op in tx.ops:
            if op[0] == "put":
                files[op[2]] = op[1]
            elif op[0] == "rename":
                if op[1] in files:
                    files[op[2]] = files.pop(op[1])
            elif op[0] == "delete":
                files.pop(op[1], None)
        g = base.generation + 1
        body = {"format": "lmmap-manifest", "generation": g, "parent": base.generation, "txid": tx.id,
                "committed_ns": time.time_ns(), "files": dict(sorted(files.items()))}
        if not self._put_if_absent(f"{MANIFESTS}/{g:012d}.json", json.dumps(body).encode()):
            # the put may have landed with its answer lost (and been retried): then it is ours
            with contextlib.suppress(OSError, StoreError):
                self._manifests.pop(g, None)
                if self._manifest(g).txid == tx.id:
                    self._advance(g, files, tx.id)
                    return
            raise CommitConflict(f"the store {self.location} was changed by another writer meanwhile "
                                 f"(generation {g}); nothing of this change was published")
        self._advance(g, files, tx.id)

    def _advance(self, g: int, files: dict, txid: str) -> None:
        state = _State(g, files, txid)
        self._manifests[g] = state
        with self._pin_lock:
            if self._pinned is not None:
                self._pinned = state  # the rest of the held lock sees its own change

    # -- the Storage interface ---------------------------------------------------------------
    def where(self, key: str) -> str:
        return f"{self.location}/{key}" if key else self.location

    def _is_partial(self, key: str) -> bool:
        return key == PARTIAL or key.startswith(f"{PARTIAL}/")

    def what(self, key: str) -> str | None:
        if self._is_partial(key):
            try:
                info = self._call("HEAD", self.fs.info, self._path(key))
            except FileNotFoundError:
                return "missing"
            return "a folder" if info.get("type") == "directory" else None
        files = self._state().files
        if key in files:
            return None
        if any(k.startswith(f"{key}/") for k in files):
            return "a folder"
        return "missing"

    def list(self, prefix: str) -> list[str]:
        if self._is_partial(prefix):
            return sorted({self._leaf(p) for p in self._ls(prefix)})
        head = f"{prefix}/" if prefix else ""
        return sorted({k[len(head):].partition("/")[0] for k in self._state().files if k.startswith(head)})

    def read(self, key: str, limit: int) -> bytes:
        if self._is_partial(key):
            return self._get(key, limit)
        obj = self._state().files.get(key)
        if obj is None:
            raise FileNotFoundError(2, "no such file in the store", self.where(key))
        return self._get(obj, limit)

    @contextlib.contextmanager
    def open(self, key: str):
        yield pa.BufferReader(self.read(key, 1 << 40))

    def put(self, key: str, data: bytes) -> None:
        if not self._is_partial(key):
            raise StoreError(f"{self.where(key)}: only checkpoints are written outside a change")
        self._put(key, data)

    def remove(self, prefix: str) -> None:
        if not self._is_partial(prefix):
            return
        objs = [p for p in self._call("LIST", self._find, prefix)]
        if objs:
            with contextlib.suppress(FileNotFoundError):
                self._call("DELETE", self.fs.rm, objs)

    def _find(self, prefix: str) -> list[str]:
        try:
            return list(self.fs.find(self._path(prefix)))
        except FileNotFoundError:
            return []

    def guard(self, key: str) -> str:
        return key  # object names are not paths: nothing on the way can lead out of the store

    def create(self, files: dict[str, bytes]) -> None:
        tx = _ObjectTx(self)
        try:
            for key, data in files.items():
                tx.stage_bytes(data, key)
            with self.lock(shared=False):
                if self._state().generation >= 0:
                    raise StoreError(f"{self.location} is already an lmmap store; open it instead")
                tx.commit()
        except CommitConflict:
            raise StoreError(f"{self.location} was made a store by another process meanwhile; open it "
                             "instead") from None
        finally:
            tx.close()

    def begin(self) -> _ObjectTx:
        return _ObjectTx(self)

    @contextlib.contextmanager
    def lock(self, shared: bool):
        # Not a lock: one manifest pinned for the holder's reads, and the base its commit is checked against.
        with self._pin_lock:
            if self._depth == 0:
                self._pinned = self._latest()
            self._depth += 1
        try:
            yield
        finally:
            with self._pin_lock:
                self._depth -= 1
                if self._depth == 0:
                    self._pinned = None

    def recover(self) -> None:
        """Nothing to finish: a commit is one put. Leftovers of killed writers are ``doctor --repair``'s."""

    def recover_if_needed(self) -> None:
        """As :meth:`recover`."""

    def check_layout(self) -> None:
        """Nothing to check: object names cannot be links or FIFOs."""

    # -- doctor -------------------------------------------------------------------------------
    def _unreferenced(self, gens: list[int]) -> tuple[dict[str, list[str]], list[int]]:
        """``({txid: objects no kept manifest names}, superseded generations to drop)``, both past the grace."""
        now = time.time_ns()
        grace = int(self.grace_s * 1e9)
        keep = set(gens[-(self.keep_manifests + 1):])
        drop = []
        for g in gens:
            if g in keep:
                continue
            succ = self._manifest(g + 1) if g + 1 in gens else None
            born = self._committed_ns(succ) if succ is not None else None
            if born is not None and now - born > grace:
                drop.append(g)
            else:
                keep.add(g)
        used = set()
        for g in keep:
            used.update(self._manifest(g).files.values())
        out: dict[str, list[str]] = {}
        for p in self._call("LIST", self._find, OBJECTS):
            obj = p[len(self.root) + 1:]
            if obj in used:
                continue
            txid = obj.split("/")[1] if obj.count("/") >= 2 else ""
            stamp = txid.split("-")[0]
            if stamp.isdigit() and now - int(stamp) <= grace:
                continue  # maybe a writer still uploading its change
            out.setdefault(txid, []).append(obj)
        return out, drop

    def _committed_ns(self, state: _State) -> int | None:
        try:
            raw = json.loads(self._get(f"{MANIFESTS}/{state.generation:012d}.json", _MAX_MANIFEST))
        except (OSError, ValueError):
            return None
        v = raw.get("committed_ns")
        return v if isinstance(v, int) else None

    def doctor(self, store, rep, repair: bool):
        """Report (and with ``repair``, fix) a store in object storage.

        Reports what a folder's doctor does for the store's files (unreadable
        or second model files, old-style names, orphan checkpoints and state,
        a damaged text set or metadata), and as unfinished changes the objects
        of writers that were killed or lost a race (named by no manifest,
        older than :attr:`grace_s`). Repair moves damaged files to
        ``damaged/`` in a new manifest, deletes orphan objects, orphan
        checkpoints and superseded manifests past the grace period.
        """
        from lmmap.data.store.doctor import common_findings, repair_matrix

        with store._shared():
            found, unreadable, dups, old, meta_problem = common_findings(store, rep)
            gens = self.generations()
            orphans, drop = self._unreferenced(gens)
        rep.staging = [f"{OBJECTS}/{txid}/ ({len(objs)} object(s) of a change never committed)"
                       for txid, objs in sorted(orphans.items())]
        if not repair:
            return rep
        stamp = time.strftime("%Y%m%d-%H%M%S")
        ops = [["rename", k, f"damaged/{k.rpartition('/')[2]}.{stamp}"]
               for k in [*unreadable, *dups, *(["metadata.parquet"] if meta_problem else [])]]
        ops += [["rename", k, store._model_key(n)] for n, k in old]
        ops += [["delete", k] for k in store._orphan_states(found)]
        if ops:
            with store._transaction() as tx:
                for op in ops:
                    tx.rename(*op[1:]) if op[0] == "rename" else tx.delete(op[1])
        for k in store._orphan_checkpoints(found):
            self.remove(k)
        repair_matrix(store, rep)
        self._delete_quietly([o for objs in orphans.values() for o in objs])
        self._delete_quietly([f"{MANIFESTS}/{g:012d}.json" for g in drop])
        rep.repaired = True
        return rep

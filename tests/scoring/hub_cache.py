"""A genuine, offline Hugging Face hub cache with revisions, for testing hub names and ``revision=``.

The hubs cannot be reached from the tests, but transformers resolves
``from_pretrained("org/name", revision="step30")`` from the local cache alone
when offline. :func:`make_hub_cache` lays out exactly what
``huggingface_hub`` writes when it downloads a repository::

    <cache>/models--org--name/
        refs/<revision>                 the commit hash (40 hex digits, no newline)
        snapshots/<commit>/<file>       relative symlinks into ../../blobs/
        blobs/<etag>                    git-sha1 for small files, sha256 for LFS ones (weights)

so ``huggingface_hub.scan_cache_dir`` reads it without warnings and files
that several revisions share (here the tokenizer) are stored once, as on a
real cache. Pythia-style training runs keep each checkpoint on such a branch
(``step1000``, ...) with ``main`` at the final one, which is what ``main``
points to here by default.

What the installed huggingface_hub (2.4) and transformers (5.x) accept, read from their code and checked by
tests/scoring/test_hub_revisions.py:

- ``refs/<name>`` is read verbatim (``f.read()``, no strip): a trailing newline would make the commit not
  match its snapshot folder, so none is written.
- a snapshot file may be a symlink into ``blobs/`` or a plain file (``os.path.isfile`` either way;
  ``symlinks=False`` writes plain copies, as the hub client does on filesystems without symlinks).
- a revision with no ref and no snapshot folder is "not cached": offline, transformers raises an
  ``OSError`` ("We couldn't connect to ... and couldn't find them in the cached files").

Pointing the libraries at a temporary cache within one process (:func:`use_hub_cache`): lmmap's API has no
``cache_dir``, so it must go through the environment and the libraries' constants. Both
``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` are read from the environment ONCE, when
``huggingface_hub.constants`` is imported (transformers imports it too), so setting the environment
variables alone is too late once anything imported transformers (e.g. another test in the same session).
What works: set the environment variables (for subprocesses and for a first import) AND patch
``huggingface_hub.constants.HF_HOME / HF_HUB_CACHE / HF_HUB_OFFLINE``: ``hf_hub_download``,
``try_to_load_from_cache``, ``snapshot_download`` and transformers' ``cached_file`` all read
``constants.HF_HUB_CACHE`` at call time when ``cache_dir`` is None, and ``constants.is_offline_mode()``
(which transformers imports by name) returns the module global ``constants.HF_HUB_OFFLINE`` at call
time, so patching the module attribute reaches every caller. One module copies the cache path by
name at import (``huggingface_hub.utils._cache_manager.HF_HUB_CACHE``, the default of
``scan_cache_dir``): it is patched too. The offline flag also makes huggingface_hub's HTTP client refuse
every request (``OfflineModeIsEnabled``) before a connection is attempted.

Measured (transformers imported first, as in a test session; ``lmmap.scoring.hf.load_model`` of step30 with
the :class:`NetworkGuard` recording): environment variables only -> not loaded ("We couldn't connect ...")
after 19 refused ``getaddrinfo('huggingface.co')``; ``constants.HF_HUB_CACHE`` patched but not
``HF_HUB_OFFLINE`` -> loaded, after 43 refused look-ups that transformers caught and fell back from
(so without the guard a test would silently depend on the network being down); both patched (this
module) -> loaded, no attempt.

The fixtures :func:`tiny_run_checkpoints`, :func:`tiny_run_cache` and :func:`tiny_run_hub` are
registered for tests/scoring through tests/scoring/conftest.py.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

import pytest

TINY_RUN_REPO = "lmmap-test/tiny-run"
TINY_RUN_STEPS = {"step10": 10, "step30": 30, "step60": 60}
# Files the hub stores through git-LFS (their blob is named by sha256); everything else is a plain git
# object (named by git's blob sha1). The hub's rule is by size and .gitattributes; weights are always LFS.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".model")


def repo_folder(repo_id: str) -> str:
    """``models--org--name``: the cache folder of a model repository (huggingface_hub's ``repo_folder_name``)."""
    return "--".join(["models", *repo_id.split("/")])


def blob_etag(path: Path) -> str:
    """The name the hub gives a file's blob: sha256 of the content for LFS files, git's blob sha1 otherwise."""
    data = path.read_bytes()
    if path.name.endswith(LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def commit_hash(repo_id: str, revision: str, etags: dict[str, str]) -> str:
    """A 40-hex commit id, distinct per revision and per content (like a git commit over a tree)."""
    tree = "\n".join(f"{name} {etag}" for name, etag in sorted(etags.items()))
    return hashlib.sha1(f"{repo_id}\n{revision}\n{tree}".encode()).hexdigest()


def make_hub_cache(root: Path, repo_id: str, checkpoints: dict[str, Path], *, main: str | None = None,
                   symlinks: bool = True) -> Path:
    """Lay out a hub cache under ``root`` holding ``repo_id`` at each revision of ``checkpoints``.

    Parameters
    ----------
    root : the cache directory (what ``HF_HUB_CACHE`` names; ``$HF_HOME/hub`` by default).
    repo_id : ``org/name``.
    checkpoints : revision name (a branch such as ``step30``) -> a ``save_pretrained()`` directory
        (model and tokenizer). Each revision gets its own commit and ``refs/<name>``.
    main : the revision ``refs/main`` points to; by default the last one (Pythia's ``main`` is its
        final checkpoint). ``main`` may also be a key of ``checkpoints`` itself.
    symlinks : snapshot files as relative symlinks into ``blobs/`` (what the hub client writes), or
        plain copies (what it writes where symlinks are unavailable).

    Returns
    -------
    The repository's folder, ``root / "models--org--name"``.
    """
    if not checkpoints:
        raise ValueError("checkpoints is empty: give at least one revision")
    root = Path(root)
    repo = root / repo_folder(repo_id)
    blobs, refs, snapshots = repo / "blobs", repo / "refs", repo / "snapshots"
    for d in (blobs, refs, snapshots):
        d.mkdir(parents=True, exist_ok=True)
    commits: dict[str, str] = {}
    for revision, src in checkpoints.items():
        files = sorted(p for p in Path(src).rglob("*") if p.is_file())
        if not any(p.name == "config.json" for p in files):
            raise ValueError(f"{src}: not a save_pretrained() directory (no config.json)")
        etags = {p.relative_to(src).as_posix(): blob_etag(p) for p in files}
        commit = commit_hash(repo_id, revision, etags)
        snap = snapshots / commit
        for p in files:
            rel = p.relative_to(src)
            blob = blobs / etags[rel.as_posix()]
            if not blob.exists():
                shutil.copyfile(p, blob)
            dst = snap / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.exists() or dst.is_symlink():
                dst.unlink()
            if symlinks:
                dst.symlink_to(os.path.relpath(blob, dst.parent))
            else:
                shutil.copyfile(blob, dst)
        # No trailing newline: huggingface_hub reads the ref verbatim and looks for snapshots/<contents>.
        (refs / revision).write_text(commit)
        commits[revision] = commit
    main_rev = main or list(checkpoints)[-1]
    if main_rev not in commits:
        raise ValueError(f"main={main_rev!r} is not one of the revisions {list(commits)}")
    (refs / "main").write_text(commits[main_rev])
    return repo


def read_refs(repo: Path) -> dict[str, str]:
    """``revision -> commit`` from a cached repository's ``refs/`` (an independent reading of the layout)."""
    return {p.name: p.read_text() for p in sorted((Path(repo) / "refs").iterdir()) if p.is_file()}


# -- pointing huggingface_hub and transformers at a cache, offline ------------------------------------


def use_hub_cache(monkeypatch: pytest.MonkeyPatch, cache: Path, hf_home: Path | None = None) -> None:
    """Make huggingface_hub and transformers resolve hub names from ``cache``, offline, in this process.

    Environment variables (for subprocesses and any later first import) and the libraries' constants
    (read at import time, so already set in this process): see the module docstring.
    """
    cache = Path(cache)
    hf_home = Path(hf_home) if hf_home is not None else cache.parent
    for var, value in {"HF_HOME": hf_home, "HF_HUB_CACHE": cache, "HF_HUB_OFFLINE": "1",
                       "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                       "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1"}.items():
        monkeypatch.setenv(var, str(value))
    monkeypatch.delenv("TRANSFORMERS_CACHE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    from huggingface_hub import constants
    from huggingface_hub.utils import _cache_manager

    monkeypatch.setattr(constants, "HF_HOME", str(hf_home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(_cache_manager, "HF_HUB_CACHE", str(cache))


_LOOPBACK_HOSTS = {"localhost", "ip6-localhost", "ip6-loopback"}


def _is_loopback(host) -> bool:
    import ipaddress

    if host is None:
        return True
    host = host.decode() if isinstance(host, bytes) else str(host)
    if host in _LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@dataclass
class NetworkGuard:
    """Non-loopback connections and name look-ups refused during a test, and recorded.

    Libraries catch connection errors and fall back to the cache, so a refusal alone would go
    unnoticed: tests assert ``attempts == []`` at the end.
    """

    attempts: list[str] = field(default_factory=list)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> "NetworkGuard":
        real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
        real_getaddrinfo = socket.getaddrinfo
        guard = self

        def refuse(what: str):
            guard.attempts.append(what)
            return OSError(f"network access refused in this test: {what}")

        def connect(sock, address):
            if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
                raise refuse(f"connect {address!r}")
            return real_connect(sock, address)

        def connect_ex(sock, address):
            if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
                raise refuse(f"connect_ex {address!r}")
            return real_connect_ex(sock, address)

        def getaddrinfo(host, *args, **kwargs):
            if not _is_loopback(host):  # a DNS query is traffic too
                raise refuse(f"getaddrinfo {host!r}")
            return real_getaddrinfo(host, *args, **kwargs)

        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        return self


# -- fixtures: lmmap-test/tiny-run at step10, step30, step60 -------------------------------------------


@dataclass
class HubRepo:
    """A repository in an offline hub cache that the test process now resolves by name.

    ``repo_id``: ``lmmap-test/tiny-run``; ``cache``: the hub cache (``HF_HUB_CACHE``); ``folder``: the
    repository's folder in it; ``commits``: revision -> commit hash (``main`` included);
    ``checkpoints``: revision -> the ``save_pretrained()`` directory its files came from; ``steps``:
    revision -> training step; ``network``: the guard whose ``attempts`` must stay empty.
    """

    repo_id: str
    cache: Path
    folder: Path
    commits: dict[str, str]
    checkpoints: dict[str, Path]
    steps: dict[str, int]
    network: NetworkGuard

    @property
    def revisions(self) -> list[str]:
        """The checkpoint revisions in step order (``main`` excluded)."""
        return sorted(self.steps, key=self.steps.get)


@pytest.fixture(scope="session")
def tiny_run_checkpoints(tmp_path_factory, tiny_tokenizer, make_tiny_gpt2) -> dict[str, Path]:
    """``step10``, ``step30``, ``step60``: three tiny GPT-2s with different weights (seeds 10, 30, 60)
    and the same tokenizer, each a ``save_pretrained()`` directory."""
    root = tmp_path_factory.mktemp("tiny-run-checkpoints")
    return {rev: make_tiny_gpt2(root / rev, tiny_tokenizer, seed=step) for rev, step in TINY_RUN_STEPS.items()}


@pytest.fixture(scope="session")
def tiny_run_cache(tmp_path_factory, tiny_run_checkpoints) -> Path:
    """An ``HF_HOME`` whose ``hub/`` cache holds ``lmmap-test/tiny-run`` (``main`` = ``step60``). Nothing is
    pointed at it: use :func:`tiny_run_hub` for that."""
    home = tmp_path_factory.mktemp("hf-home")
    make_hub_cache(home / "hub", TINY_RUN_REPO, tiny_run_checkpoints)
    return home


@pytest.fixture
def tiny_run_hub(monkeypatch, tiny_run_cache, tiny_run_checkpoints) -> HubRepo:
    """``lmmap-test/tiny-run`` resolvable by name at ``step10``/``step30``/``step60``/``main``, offline.

    For the test's duration huggingface_hub and transformers read the temporary cache (environment and
    constants patched, ``HF_HUB_OFFLINE=1``), and non-loopback connections and DNS look-ups are refused
    and recorded in ``hub.network.attempts``, which is checked to be empty when the test ends.
    """
    cache = tiny_run_cache / "hub"
    use_hub_cache(monkeypatch, cache, tiny_run_cache)
    folder = cache / repo_folder(TINY_RUN_REPO)
    guard = NetworkGuard().install(monkeypatch)
    yield HubRepo(TINY_RUN_REPO, cache, folder, read_refs(folder), dict(tiny_run_checkpoints), dict(TINY_RUN_STEPS),
                  guard)
    assert guard.attempts == [], f"the test tried the network: {guard.attempts}"

"""Where a store's bytes live: a backend per kind of location (see :mod:`lmmap.data.storage.base`).

``Store(location)`` picks the backend from the location: a path is a folder
of the local file system (:mod:`~lmmap.data.storage.local`); a URL's scheme
is looked up in :data:`BACKENDS`. A new kind of location is one module with a
class implementing :class:`~lmmap.data.storage.base.Storage` and one line here.
"""

from __future__ import annotations

import importlib
import os
import re

from lmmap.exceptions import StoreError

# scheme -> "module:class"; the class is given the URL and fsspec's storage options
BACKENDS = {
    "s3": "lmmap.data.storage.objects:ObjectStorage",
    "memory": "lmmap.data.storage.objects:ObjectStorage",
}

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")


def scheme_of(location) -> str | None:
    """The URL scheme of ``location`` (None for a path; ``file://`` counts as a path)."""
    if not isinstance(location, str):
        return None
    m = _URL.match(location)
    if m is None or m.group(1).lower() == "file":
        return None
    return m.group(1).lower()


def open_storage(location, storage_options: dict | None = None):
    """The backend for ``location`` (a path, or a URL whose scheme is in :data:`BACKENDS`)."""
    if hasattr(location, "requests") and hasattr(location, "begin"):
        return location  # already a backend
    scheme = scheme_of(location)
    if scheme is None:
        from lmmap.data.storage.local import LocalStorage

        if isinstance(location, str) and location.lower().startswith("file://"):
            location = location[len("file://"):]
        return LocalStorage(os.fspath(location))
    if scheme not in BACKENDS:
        raise StoreError(f"{location}: lmmap cannot keep a store at a {scheme}:// location; give a folder or one of "
                         f"{', '.join(f'{s}://' for s in BACKENDS)}")
    module, _, cls = BACKENDS[scheme].partition(":")
    return getattr(importlib.import_module(module), cls)(location, storage_options)

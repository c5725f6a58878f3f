"""Which scoring backends exist: a name → factory table the driver looks up, and entry points for third parties.

A backend is registered under a name with a *factory*: a callable that takes
no arguments and returns a :class:`~lmmap.scoring.protocol.Backend`, or the
string ``"module:attribute"`` of one, imported on first use. The built-in
backends register themselves below by such strings, so that ``import
lmmap.scoring`` imports none of them (nor torch, transformers or vLLM).

Another package adds a backend without touching lmmap by declaring an entry
point in the group ``lmmap.backends``::

    [project.entry-points."lmmap.backends"]
    mybackend = "mypackage.scoring:MyBackend"

and ``score_models(..., backend="mybackend")`` (``lmmap score --backend
mybackend``) then finds it. Entry points are read once, on the first lookup
that needs them; a name registered here wins over an entry point of the same
name. Adding a backend to lmmap itself is one module and one
``register_backend`` line at the end of this file.
"""

from __future__ import annotations

import difflib
import importlib
import re
from typing import Callable, Union

from lmmap.exceptions import InputError, ScoringError
from lmmap.scoring.protocol import Backend

ENTRY_POINT_GROUP = "lmmap.backends"
# What get_backend checks a backend object has (the Backend protocol's members).
BACKEND_MEMBERS = ("name", "check", "load", "revision", "failure_hint")
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")

Factory = Union[Callable[[], Backend], str]
_factories: dict[str, Factory] = {}
_entry_points: dict[str, object] | None = None  # name -> importlib.metadata.EntryPoint, read once


def register_backend(name: str, factory: Factory, *, replace: bool = False) -> None:
    """Make ``backend=name`` load backends from ``factory`` (a no-argument callable, or ``"module:attribute"``).

    A name already registered is refused unless ``replace`` (a plug-in
    that meant to shadow a built-in says so).
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InputError(f"name must be a lowercase backend name such as 'hf' (letters, digits, _ . -), got {name!r}",
                         params=("name",))
    if not (callable(factory) or (isinstance(factory, str) and _is_reference(factory))):
        raise InputError(f"factory must be a callable returning a Backend or a 'module:attribute' string, got "
                         f"{factory!r}", params=("factory",))
    if name in _factories and not replace and _factories[name] != factory:
        raise InputError(f"backend {name!r} is already registered; pass {{replace=True}} to replace it",
                         params=("replace",))
    _factories[name] = factory


def unregister_backend(name: str) -> None:
    """Forget the backend registered as ``name`` (an entry point of that name is found again)."""
    _factories.pop(name, None)


def backend_names() -> tuple[str, ...]:
    """The names ``backend`` may take: the registered ones (built-ins first), then entry points'."""
    return tuple(_factories) + tuple(n for n in _discover() if n not in _factories)


def get_backend(backend: "str | Backend") -> Backend:
    """The backend named ``backend`` (a new object from its factory), or ``backend`` itself if it is a backend object.

    An unknown name is refused in one line listing the known ones, with the
    closest as a suggestion.
    """
    if isinstance(backend, str):
        factory = _factories.get(backend)
        if factory is None:
            ep = _discover().get(backend)
            if ep is None:
                raise InputError(unknown_backend_message(backend), params=("backend",))
            factory = _load_entry_point(backend, ep)
        elif isinstance(factory, str):
            factory = _import(factory)
        made = factory()
        if not is_backend(made):
            raise ScoringError(f"backend {backend!r}: its factory returned {made!r}, which lacks "
                               f"{', '.join(m for m in BACKEND_MEMBERS if not hasattr(made, m))} (see "
                               "lmmap.scoring.protocol.Backend)", params=("backend",))
        return made
    if not is_backend(backend):
        raise InputError(unknown_backend_message(backend), params=("backend",))
    return backend


def is_backend(obj) -> bool:
    """Whether ``obj`` has what the driver calls on a backend (duck-typed, as the Protocol)."""
    return not isinstance(obj, str) and all(hasattr(obj, m) for m in BACKEND_MEMBERS)


def unknown_backend_message(backend) -> str:
    """``backend must be one of …, got …`` with a did-you-mean for a misspelt name."""
    names = backend_names()
    msg = f"backend must be one of {', '.join(names)} or a Backend object, got {backend!r}"
    if isinstance(backend, str):
        close = difflib.get_close_matches(backend.lower(), names, n=1, cutoff=0.6)
        if close:
            msg += f"; did you mean {close[0]!r}?"
    return msg


def backend_class(name: str):
    """The factory registered as ``name``, imported (for its class attributes, e.g. ``load_options``); None if it fails.

    Only messages use it: a plug-in that cannot be imported is left out of them.
    """
    factory = _factories.get(name)
    try:
        if factory is None:
            ep = _discover().get(name)
            return None if ep is None else ep.load()
        return _import(factory) if isinstance(factory, str) else factory
    except Exception:  # a broken plug-in must not turn a message about another option into its traceback
        return None


def _is_reference(text: str) -> bool:
    module, _, attr = text.partition(":")
    return bool(module) and bool(attr) and all(p.isidentifier() for p in module.split(".") + attr.split("."))


def _import(reference: str):
    module, _, attr = reference.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _discover() -> dict:
    """The entry points of group ``lmmap.backends`` (read once per process: scanning installed packages costs ms)."""
    global _entry_points
    if _entry_points is None:
        from importlib.metadata import entry_points

        _entry_points = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return _entry_points


def refresh_entry_points() -> None:
    """Read the ``lmmap.backends`` entry points again on the next lookup (after installing a plug-in at run time)."""
    global _entry_points
    _entry_points = None


def _load_entry_point(name: str, ep):
    try:
        return ep.load()
    except Exception as exc:
        text = str(exc).strip().splitlines()
        raise ScoringError(f"backend {name!r} (entry point {ep.value} in group {ENTRY_POINT_GROUP}) could not be "
                           f"imported: {type(exc).__name__}: {text[0] if text else '(no message)'}",
                           params=("backend",)) from exc


# The built-in backends: one line each, imported only when asked for.
register_backend("hf", "lmmap.scoring.hf:HFBackend")
register_backend("vllm", "lmmap.scoring.vllm:VLLMBackend")
register_backend("fake", "lmmap.scoring.fake:FakeBackend")
register_backend("openai", "lmmap.scoring.openai:OpenAIBackend")

"""Typer options built from the parameter spec (:mod:`lmmap.params`): each option is declared there once.

A command names its options by their spec entry::

    @app.command("map")
    def map_(output: option("output"), R: option("R"), tsne_seed: option("embedding_random_state"), ...):

:func:`option` gives the ``Annotated`` type (flag, aliases, help, metavar, and :func:`lmmap.params.check` as
the callback of an option with a range or choices); :func:`with_spec_defaults`, which ``app.command()``
applies to every command (``cli/_app.py``), writes each option's default from the spec into the command's
signature, where typer reads it. So a command's signature holds names only, and ``tests/test_params.py``
holds every option of every command to its spec entry.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Annotated, Optional

import typer

from lmmap.params import PARAMS, REQUIRED, check

def _annotation(p):
    base = p.type
    if p.multiple:
        return Optional[list[base]]
    return base


def _checker(name: str):
    def callback(value):
        # Checked while the command line is read: a bad value is refused before the store is opened, in the
        # spec's words (the library checks it again, with the same message, for Python callers).
        if value is None:
            return value
        check(name, value)
        return value

    return callback


def _factory(p):
    if isinstance(p.default_factory, str):
        module, attr = p.default_factory.split(":")
        return getattr(importlib.import_module(module), attr)
    return p.default_factory


def option(name: str, **overrides):
    """The ``Annotated[type, typer.Option(...)]`` of spec entry ``name`` for a command's signature.

    ``overrides``: extra ``typer.Option`` arguments (none of flag, help or default: those are the spec's).
    """
    p = PARAMS[name]
    kwargs = dict(help=p.help)
    if p.metavar is not None:
        kwargs["metavar"] = p.metavar
    if p.ranged and not p.multiple:
        kwargs["callback"] = _checker(name)
    if p.default_factory is not None:
        kwargs["default_factory"] = _factory(p)
    if not p.show_default or p.default_factory is not None:
        kwargs["show_default"] = False
    kwargs.update(overrides)
    info = typer.Option(*p.flags, **kwargs)
    info.lmmap_param = name  # read back by with_spec_defaults (typer copies the OptionInfo, attributes too)
    return Annotated[_annotation(p), info]


def spec_name(info) -> str | None:
    """The spec entry an OptionInfo was built from (None: not built by :func:`option`)."""
    return getattr(info, "lmmap_param", None)


def with_spec_defaults(fn):
    """``fn`` with the spec's default written into its signature for every option built by :func:`option`.

    Typer takes a default from the signature only (``Annotated`` options may not carry one); writing it
    here keeps the spec the one place it is declared. Every parameter becomes keyword-only, so that a
    required option may follow one with a default.
    """
    sig = inspect.signature(fn, eval_str=True)  # the modules use `from __future__ import annotations`
    params = []
    for prm in sig.parameters.values():
        default = prm.default
        ann = prm.annotation
        for meta in getattr(ann, "__metadata__", ()):
            name = spec_name(meta)
            if name is not None:
                p = PARAMS[name]
                if p.default is not REQUIRED and p.default_factory is None:
                    default = p.default
        params.append(prm.replace(kind=inspect.Parameter.KEYWORD_ONLY, default=default))
    fn.__signature__ = sig.replace(parameters=params)
    return fn


__all__ = ["option", "spec_name", "with_spec_defaults"]

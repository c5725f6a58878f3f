"""The scoring conventions (SPEC §2), in a module that imports nothing heavy.

``reference``: the first token of each text is context and is not scored
(the authors' scorer); ``full``: BOS (or EOS) is prepended so every token is
scored. Vectors of different conventions are never mixed in one map without
``allow_mixed``. The store, the readers of vector files and the scorers all
check a convention here, without loading torch, pandas or pyarrow.
"""

from __future__ import annotations

from lmmap.exceptions import InputError

CONVENTIONS = ("reference", "full")


def check_convention(convention) -> str:
    """``convention`` if it is one lmmap knows; an :class:`InputError` naming the parameter otherwise."""
    if convention not in CONVENTIONS:
        raise InputError(f"convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}",
                         params=("convention",))
    return convention


__all__ = ["CONVENTIONS", "check_convention"]

"""``random_state``: lmmap's one name for randomness, as in scikit-learn (an int, a numpy Generator or None).

Every function that draws takes ``random_state``. An int gives the same
draws on every run; ``None`` (fresh entropy) and a
:class:`numpy.random.Generator` are turned into an int first, so that a result
can record the int it used and be reproduced from it.
"""

from __future__ import annotations

import numbers

import numpy as np

from lmmap.exceptions import InputError

# Drawn seeds stay below 2³¹: every consumer (numpy's legacy RandomState in fold shuffles, openTSNE) accepts them.
_SEED_BOUND = 2**31 - 1


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def seed_of(random_state, name: str = "random_state"):
    """``random_state`` as an int seed (or a :class:`numpy.random.SeedSequence`, passed through).

    An int ≥ 0 is kept; ``None`` draws one from fresh entropy and a Generator
    draws one from its stream.
    """
    if isinstance(random_state, np.random.SeedSequence):
        return random_state
    if random_state is None or isinstance(random_state, np.random.Generator):
        return int(np.random.default_rng(random_state).integers(_SEED_BOUND))
    if _is_int(random_state) and random_state >= 0:
        return int(random_state)
    raise InputError(f"{name} must be a non-negative int, a numpy Generator or None, got {random_state!r}",
                     params=(name,))


def seed_sequence(random_state) -> np.random.SeedSequence:
    """A :class:`numpy.random.SeedSequence` from ``random_state``; trial r uses its child r, so results do
    not depend on how the trials are split between workers."""
    seed = seed_of(random_state)
    return seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)


def seeds_of(random_state, name: str = "random_state") -> list[int]:
    """The seeds of repetitions: one from an int, a Generator or None (:func:`seed_of`), or one per entry of a
    non-empty sequence of ints."""
    if random_state is None or _is_int(random_state) or isinstance(random_state, np.random.Generator):
        return [seed_of(random_state, name)]
    try:
        seeds = list(random_state)
    except TypeError:
        raise InputError(f"{name} must be an int, a sequence of ints, a numpy Generator or None, got {random_state!r}",
                         params=(name,)) from None
    if not seeds:
        raise InputError(f"{name} must be an int or a non-empty sequence of ints, got {random_state!r}", params=(name,))
    return [seed_of(s, name) for s in seeds]


__all__ = ["seed_of", "seed_sequence", "seeds_of"]

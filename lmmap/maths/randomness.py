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
from lmmap.params import MAX_SEED, PARAMS, check

# Drawn seeds stay below 2³¹: every consumer (numpy's legacy RandomState in fold shuffles, openTSNE) accepts them.
_SEED_BOUND = 2**31 - 1
# MAX_SEED (lmmap.params): numpy's legacy RandomState (scikit-learn's folds and PCA, openTSNE) refuses seeds
# outside 0..2³²−1 deep inside the work; refusing them at the start names the parameter before anything runs.


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def check_seed(seed, name: str = "random_state", span: int = 1) -> int:
    """``seed`` as an int in ``0..MAX_SEED``; with ``span``, the seeds ``seed..seed+span−1`` must all be.

    ``name`` is the parameter named in the error (the CLI shows its flag); the range and the message are the
    spec's (:mod:`lmmap.params`: ``random_state``, or ``embedding_random_state`` for the 2-D embedding).
    """
    spec = name if name in PARAMS and PARAMS[name].interval == PARAMS["random_state"].interval else "random_state"
    if int(span) > 1:
        note = f"the {int(span):,} seeds from it must all be at most {MAX_SEED:,}"
        return check(spec, seed, what=name, interval=(0, MAX_SEED - (int(span) - 1)), note=note)
    return check(spec, seed, what=name)


def _not_a_seed(name: str, value, also: str) -> InputError:
    return InputError(f"{name} must be {PARAMS['random_state'].allowed()}, {also}, got {value!r}", params=(name,))


def seed_of(random_state, name: str = "random_state"):
    """``random_state`` as an int seed (or a :class:`numpy.random.SeedSequence`, passed through).

    An int in ``0..MAX_SEED`` is kept; ``None`` draws one from fresh entropy and a Generator
    draws one from its stream.
    """
    if isinstance(random_state, np.random.SeedSequence):
        return random_state
    if random_state is None or isinstance(random_state, np.random.Generator):
        return int(np.random.default_rng(random_state).integers(_SEED_BOUND))
    if _is_int(random_state):
        return check_seed(random_state, name)
    raise _not_a_seed(name, random_state, "a numpy Generator or None")


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
        raise _not_a_seed(name, random_state, "a sequence of such ints, a numpy Generator or None") from None
    if not seeds:
        raise _not_a_seed(name, random_state, "or a non-empty sequence of such ints")
    return [seed_of(s, name) for s in seeds]


def check_random_state(random_state, name: str = "random_state"):
    """Refuse a bad ``random_state`` before any work; ``random_state`` itself is returned unchanged.

    For callers that hand ``random_state`` to numpy as it is (``None`` stays fresh entropy, a Generator its
    own stream): an int must lie in ``0..MAX_SEED``, as everywhere else.
    """
    if random_state is None or isinstance(random_state, (np.random.Generator, np.random.SeedSequence)):
        return random_state
    check_seed(random_state, name)
    return random_state


__all__ = ["MAX_SEED", "check_random_state", "check_seed", "seed_of", "seed_sequence", "seeds_of"]

"""random_state: one name, one conversion (lmmap.maths.randomness)."""

import numpy as np
import pytest

from lmmap.exceptions import InputError
from lmmap.maths.randomness import seed_of, seed_sequence, seeds_of


def test_random_state_forms_and_bad_values():
    assert seeds_of(3) == [3]
    assert seeds_of([0, 3]) == [0, 3]
    assert seeds_of(range(2)) == [0, 1]
    a = seeds_of(np.random.default_rng(5))
    assert a == seeds_of(np.random.default_rng(5)) and len(a) == 1
    for bad in ([], "x", [1.5], True):
        with pytest.raises(InputError) as info:
            seeds_of(bad)
        assert info.value.params == ("random_state",)


def test_an_int_is_kept_and_a_generator_gives_a_reproducible_int():
    assert seed_of(7) == 7
    g1, g2 = np.random.default_rng(11), np.random.default_rng(11)
    s = seed_of(g1)
    assert s == seed_of(g2) and 0 <= s < 2**31
    assert isinstance(seed_of(None), int)
    ss = np.random.SeedSequence(3)
    assert seed_of(ss) is ss
    # the same int gives the same children, so trials do not depend on how they are split
    a = [np.random.default_rng(c).random() for c in seed_sequence(5).spawn(3)]
    b = [np.random.default_rng(c).random() for c in seed_sequence(5).spawn(3)]
    assert a == b
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(InputError, match="random_state must be"):
            seed_of(bad)

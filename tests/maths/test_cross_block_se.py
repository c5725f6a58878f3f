"""maths.bootstrap.cross_sq_distance_se (place's cross-block SE, issue 23 §4) against an independent bootstrap."""

import numpy as np
import pytest

from lmmap.exceptions import InputError
from lmmap.maths.bootstrap import bootstrap_sq_distance_se, cross_sq_distance_se


def independent(X_rows, X_cols, counts, R, seed):
    """R redraws of the n draws behind ``counts``, each distance summed text by text from the differences."""
    rng = np.random.default_rng(seed)
    n = int(counts.sum())
    reps = []
    for _ in range(R):
        scale = rng.multinomial(n, counts / n) / counts
        diff = X_rows[:, None, :] - X_cols[None, :, :]
        reps.append((diff ** 2 * scale).sum(axis=-1))
    return np.std(np.array(reps), axis=0, ddof=1)


@pytest.mark.parametrize("counts", [None, "drawn"])
def test_cross_block_se_equals_an_independent_bootstrap(counts):
    rng = np.random.default_rng(2)
    d = 40
    X_rows, X_cols = rng.normal(size=(3, d)), rng.normal(size=(7, d))
    c = np.ones(d, dtype=np.int64) if counts is None else rng.integers(1, 5, size=d)
    got = cross_sq_distance_se(X_rows, X_cols, None if counts is None else c, R=50, random_state=11)
    assert got.shape == (3, 7) and np.all(got > 0)
    np.testing.assert_allclose(got, independent(X_rows, X_cols, c, 50, 11), rtol=1e-9)


def test_cross_block_is_the_block_of_the_full_bootstrap_matrix():
    """The same draws as bootstrap_sq_distance_se: the m×K block of its (m + K)² matrix, for O(m·K·d)."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(9, 30))
    c = rng.integers(1, 4, size=30)
    full = bootstrap_sq_distance_se(X, counts=c, R=30, random_state=3)
    np.testing.assert_allclose(cross_sq_distance_se(X[6:], X[:6], c, R=30, random_state=3), full[6:, :6], rtol=1e-8)


def test_cross_block_se_refuses_other_texts_and_is_importable_from_place():
    from lmmap.analyses import place

    with pytest.raises(InputError, match="must share the map's texts"):
        cross_sq_distance_se(np.zeros((2, 5)), np.zeros((3, 6)))
    assert place.cross_sq_distance_se is cross_sq_distance_se

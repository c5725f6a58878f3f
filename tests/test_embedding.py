import warnings

import numpy as np
import pytest
from sklearn.decomposition import PCA

from lmmap.embedding import Embedding, effective_perplexity, embed, fit_embedding
from lmmap.exceptions import LmmapError


def two_clusters(n_per=20, d=30, gap=10.0, seed=0):
    """Two Gaussian blobs whose centres are ``gap`` apart in every coordinate."""
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(0.0, 1.0, (n_per, d)), rng.normal(gap, 1.0, (n_per, d))])
    labels = np.repeat([0, 1], n_per)
    return X, labels


def nearest_other(points, query):
    """Index of the row of ``points`` nearest to ``query``."""
    return int(np.argmin(np.linalg.norm(points - query, axis=1)))


def test_tsne_is_deterministic_for_a_fixed_random_state():
    X, _ = two_clusters()
    a = embed(X, perplexity=5)
    b = embed(X, perplexity=5)
    c = embed(X, perplexity=5, random_state=7)
    assert a.shape == (40, 2)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_tsne_keeps_separated_clusters_apart():
    X, labels = two_clusters()
    Y = embed(X, perplexity=5)
    D = np.linalg.norm(Y[:, None] - Y[None], axis=-1)
    np.fill_diagonal(D, np.inf)
    assert np.array_equal(labels[D.argmin(axis=1)], labels)
    # Whole clusters apart, not just nearest neighbours.
    same = labels[:, None] == labels[None]
    assert D[~same].min() > 0.5 * D[same & np.isfinite(D)].max()


def test_embed_returns_fit_embedding_coords():
    X, _ = two_clusters()
    np.testing.assert_array_equal(embed(X, perplexity=5), fit_embedding(X, perplexity=5).coords)


def test_pca_equals_sklearn_pca():
    X, _ = two_clusters(d=12)
    e = fit_embedding(X, method="pca")
    expected = PCA(n_components=2, random_state=42).fit_transform(X)
    np.testing.assert_allclose(e.coords, expected)
    # The first axis separates the blobs: the direction of largest variance.
    first = np.sign(e.coords[:, 0])
    assert len(set(first[:20])) == 1 and len(set(first[20:])) == 1 and first[0] != first[-1]


def test_pca_transform_of_an_existing_row_is_its_position():
    X, _ = two_clusters(d=12)
    e = fit_embedding(X, method="pca")
    np.testing.assert_allclose(e.transform(X[[4, 33]]), e.coords[[4, 33]])


def test_tsne_transform_places_a_duplicate_next_to_its_row():
    X, labels = two_clusters()
    e = fit_embedding(X, perplexity=5)
    before = e.coords.copy()
    new = e.transform(X[[3, 25]])
    spread = np.ptp(e.coords, axis=0).max()
    for row, position in zip([3, 25], new):
        assert np.linalg.norm(position - e.coords[row]) < 0.05 * spread
        assert labels[nearest_other(e.coords, position)] == labels[row]
    np.testing.assert_array_equal(e.coords, before)  # the existing map never moves


def test_from_coords_places_new_points_against_given_coordinates():
    X, labels = two_clusters()
    reference = embed(X, perplexity=5)
    e = Embedding.from_coords(X, reference, perplexity=5)
    np.testing.assert_array_equal(e.coords, reference)
    new = e.transform(X[[7]])[0]
    assert np.linalg.norm(new - reference[7]) < 0.05 * np.ptp(reference, axis=0).max()


def test_transform_rejects_features_of_another_width():
    X, _ = two_clusters()
    e = fit_embedding(X, method="pca")
    with pytest.raises(LmmapError, match="same texts"):
        e.transform(X[:2, :-1])


def test_perplexity_is_lowered_for_few_models_with_a_warning():
    X, _ = two_clusters(n_per=5)  # K = 10
    with pytest.warns(UserWarning, match="perplexity 30 is too large for 10 models"):
        e = fit_embedding(X)
    assert e.perplexity == pytest.approx(3.0)
    assert e.coords.shape == (10, 2) and np.all(np.isfinite(e.coords))


def test_no_warning_when_perplexity_fits():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert effective_perplexity(5.0, 40) == 5.0


def test_three_models_are_enough_and_two_are_not():
    X = np.random.default_rng(0).normal(size=(3, 4))
    with pytest.warns(UserWarning):
        assert embed(X).shape == (3, 2)
    with pytest.raises(LmmapError, match="at least 3 models"):
        embed(X[:2])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(method="mds"), "unknown embedding method 'mds'"),
        (dict(perplexity=0), "perplexity must be a positive number"),
        (dict(random_state=1.5), "random_state must be an integer"),
    ],
)
def test_bad_parameters_are_refused(kwargs, message):
    X, _ = two_clusters()
    with pytest.raises(LmmapError, match=message):
        embed(X, **kwargs)


def test_non_finite_features_are_refused_naming_the_row():
    X, _ = two_clusters()
    X[6, 2] = np.nan
    with pytest.raises(LmmapError, match="row 6"):
        embed(X, method="pca")


def test_umap_without_the_package_says_how_to_install_it():
    try:
        import umap  # noqa: F401
    except ImportError:
        X, _ = two_clusters()
        with pytest.raises(LmmapError, match="pip install umap-learn"):
            embed(X, method="umap")
    else:
        pytest.skip("umap-learn is installed")

"""maths.ridge.ridge_loo (the adaptive estimator's ridge, issue 23 §4) against a brute-force leave-one-out fit."""

import numpy as np
import pytest

from lmmap.maths.ridge import LOO_RELATIVE_ALPHAS, ridge_loo


def ridge_fit(Phi, y, alpha):
    """Ridge with an unpenalised intercept, solved directly: (θ, intercept)."""
    mu, ybar = Phi.mean(axis=0), y.mean()
    Pc, yc = Phi - mu, y - ybar
    theta = np.linalg.solve(Pc.T @ Pc + alpha * np.eye(Phi.shape[1]), Pc.T @ yc)
    return theta, ybar - mu @ theta


def brute_force(Phi, y, relative_alphas=LOO_RELATIVE_ALPHAS):
    """n refits per α, each on the other n − 1 rows; the α of least squared error, refitted on all rows."""
    D1 = np.linalg.svd(Phi - Phi.mean(axis=0), compute_uv=False)[0]
    alphas = np.asarray(relative_alphas) * D1 ** 2
    errors = []
    for alpha in alphas:
        e = 0.0
        for i in range(len(y)):
            keep = np.arange(len(y)) != i
            theta, b = ridge_fit(Phi[keep], y[keep], alpha)
            e += (y[i] - b - Phi[i] @ theta) ** 2
        errors.append(e)
    best = int(np.argmin(errors))
    return ridge_fit(Phi, y, alphas[best])[0], best, np.array(errors)


@pytest.mark.parametrize("n, d, noise", [(30, 4, 0.1), (25, 12, 1.0), (12, 20, 0.5), (40, 3, 5.0)])
def test_ridge_loo_equals_the_brute_force_leave_one_out_choice(n, d, noise):
    rng = np.random.default_rng(n * d)
    Phi = rng.normal(size=(n, d)) * rng.uniform(0.1, 3.0, size=d) + 2.0
    y = Phi @ rng.normal(size=d) + 1.5 + noise * rng.normal(size=n)
    want, best, errors = brute_force(Phi, y)
    # The closed form picks the same α (its LOO errors are exact, not an approximation) ...
    assert np.sort(errors)[1] > errors[best] * (1 + 1e-9)  # a clear winner, so the comparison is meaningful
    np.testing.assert_allclose(ridge_loo(Phi, y), want, rtol=1e-7, atol=1e-10)


def test_each_alpha_of_the_grid_is_what_a_direct_ridge_gives():
    rng = np.random.default_rng(5)
    Phi, y = rng.normal(size=(20, 6)), rng.normal(size=20)
    D1 = np.linalg.svd(Phi - Phi.mean(axis=0), compute_uv=False)[0]
    for rel in LOO_RELATIVE_ALPHAS:
        np.testing.assert_allclose(ridge_loo(Phi, y, relative_alphas=[rel]), ridge_fit(Phi, y, rel * D1 ** 2)[0],
                                   rtol=1e-8, atol=1e-12)


def test_a_design_without_spread_gives_zero_coefficients():
    Phi = np.ones((8, 3))
    assert np.array_equal(ridge_loo(Phi, np.arange(8.0)), np.zeros(3))


def test_the_adaptive_estimator_uses_it():
    from lmmap.analyses import adaptive

    assert adaptive.ridge_loo is ridge_loo and not hasattr(adaptive, "_ridge_loo")

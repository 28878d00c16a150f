"""Monte-Carlo checks: the Theorem-2 test channel and the §8 variance estimator."""

import numpy as np
import pytest

from flrd import theory


def test_test_channel_is_unbiased_with_distortion_D():
    rng = np.random.default_rng(0)
    n, sx2, s2_k, D = 400_000, 2.0, np.array([0.5, 1.0, 2.0, 4.0]), 0.5
    r_k = theory.waterfill(D, s2_k)
    u_k = theory.noise_weights(r_k, s2_k)
    active = u_k > 0
    sv2 = 1.0 / u_k[active] - s2_k[active]
    X = rng.normal(0, np.sqrt(sx2), n)
    U = X + rng.normal(0, np.sqrt(s2_k[active] + sv2)[:, None], (active.sum(), n))
    w = u_k[active] / u_k[active].sum()
    Xh = w @ U
    slope = np.dot(Xh, X) / np.dot(X, X)
    mse = np.mean((Xh - X) ** 2)
    assert slope == pytest.approx(1.0, abs=4 * np.sqrt(D / (n * sx2)))
    assert mse == pytest.approx(D, rel=4 * np.sqrt(2 / n))


def test_variance_estimates_recover_truth():
    rng = np.random.default_rng(1)
    K, n_l = 20, np.array([20_000, 5_000])
    sx2, s2, sq2 = np.array([3.0, 0.2]), np.array([1.0, 0.5]), np.array([0.4, 0.1])
    m2 = np.empty((K, 2))
    sqnorm = np.empty(2)
    for layer in range(2):
        x = rng.normal(0, np.sqrt(sx2[layer]), n_l[layer])
        g = x + rng.normal(0, np.sqrt(s2[layer]), (K, n_l[layer]))
        m2[:, layer] = np.mean(g**2, axis=1)
        decoded = g + rng.normal(0, np.sqrt(sq2[layer]), g.shape)
        sqnorm[layer] = np.sum(decoded.mean(axis=0) ** 2)
    est = theory.estimate_variances(m2, sqnorm, n_l, sq2)
    assert np.allclose(est.sx2, sx2, rtol=0.05)
    assert np.allclose(est.s2, s2, rtol=0.05)
    weighted = theory.estimate_variances(m2, sqnorm, n_l, sq2, weights=np.ones(K))
    assert np.allclose(weighted.s2, est.s2, rtol=1e-12)

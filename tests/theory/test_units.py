"""THEORY.md §11: local-step gains against a Monte-Carlo of SGD with momentum, and the T identity."""

import numpy as np
import pytest

from flrd import theory


@pytest.mark.parametrize(("lr", "steps", "momentum"), [(0.01, 20, 0.5), (0.1, 5, 0.9), (0.05, 7, 0.0)])
def test_gains_match_the_momentum_recursion(lr, steps, momentum):
    rng = np.random.default_rng(0)
    n, G = 200_000, 1.5
    v, delta = np.zeros(n), np.zeros(n)
    noise_only, v_noise = np.zeros(n), np.zeros(n)
    for _ in range(steps):  # PyTorch's SGD: v <- mu v + g, x <- x - lr v
        xi = rng.normal(0, 1.0, n)
        v = momentum * v + (G + xi)
        delta -= lr * v
        v_noise = momentum * v_noise + xi
        noise_only -= lr * v_noise
    gains = theory.local_step_gains(lr, steps, momentum)
    assert np.mean(delta - noise_only) == pytest.approx(-gains.step * G, rel=1e-9)  # coherent part
    assert np.var(noise_only) == pytest.approx(gains.noise, rel=0.02)
    assert gains.coherent == pytest.approx(gains.step**2, rel=1e-12)


def test_signal_to_noise_grows_about_e_fold():
    gains = theory.local_step_gains(0.01, 20, 0.5)
    assert 19 < gains.coherent / gains.noise < 20


def test_rounds_in_delta_units_equal_rounds_in_gradient_units_with_scaled_constants():
    h = theory.local_step_gains(0.01, 20, 0.5).step
    D_delta = np.array([1e-4, 3e-3, 0.2])
    grad = theory.rounds_needed(D_delta / h**2, R0=1.0, beta=2.0, eps=0.03, integer=False)
    delta = theory.rounds_needed(D_delta, R0=1.0, beta=2.0 * h, eps=0.03 * h, integer=False)
    assert np.allclose(grad, delta, rtol=1e-12)


def test_invalid_gains_arguments_name_the_bound():
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\)"):
        theory.local_step_gains(0.01, 20, 1.0)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        theory.local_step_gains(0.01, 0)

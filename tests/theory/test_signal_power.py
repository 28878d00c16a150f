"""``signal_power``: sx2 from cross products, blind to each client's own noise level."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flrd import theory


def _round(rng, K=10, n=50_000, sx2=0.01, s2=0.1, noise_scale=None):
    x = rng.normal(0.0, np.sqrt(sx2), n)
    scale = np.ones(K) if noise_scale is None else np.asarray(noise_scale, dtype=np.float64)
    return x, x + rng.normal(0.0, 1.0, (K, n)) * np.sqrt(s2) * scale[:, None]


@pytest.mark.parametrize("robust_fraction", [0.0, 0.3])
def test_unbiased_whatever_each_clients_noise_level(robust_fraction):
    """Clients with 1x..30x the noise power: the estimate stays at sx2 (the method of
    moments with one declared noise level would be off by their excess / K)."""
    rng = np.random.default_rng(0)
    estimates = []
    for _ in range(20):
        x, updates = _round(rng, noise_scale=np.sqrt(np.linspace(1.0, 30.0, 10)))
        estimates.append(theory.signal_power(updates, robust_fraction) / np.mean(x**2))
    assert abs(np.mean(estimates) - 1.0) < 0.05, np.mean(estimates)


def test_two_hostile_updates_of_ten_move_it_by_less_than_2x_and_the_plain_mean_by_more():
    rng = np.random.default_rng(1)
    x, updates = _round(rng)
    honest = theory.signal_power(updates[2:], 0.3)
    updates[:2] = 30.0 * x + rng.normal(0.0, 1.0, (2, x.size))  # aligned with the signal
    robust, plain = theory.signal_power(updates, 0.3), theory.signal_power(updates)
    assert max(robust / honest, honest / robust) < 2.0
    assert plain / honest > 10.0


@settings(max_examples=50, deadline=None)
@given(K=st.integers(2, 12), n=st.integers(1, 40), seed=st.integers(0, 2**32 - 1),
       robust_fraction=st.sampled_from([0.0, 0.2, 0.3, 0.49]))
def test_identity_and_bounds(K, n, seed, robust_fraction):
    """Plain mean over pairs = the §8 identity ``(K a - mean m2) / (K - 1)``; any
    estimate lies within the pairs' range."""
    updates = np.random.default_rng(seed).normal(size=(K, n))
    value = theory.signal_power(updates, robust_fraction)
    gram = updates @ updates.T / n
    pairs = gram[~np.eye(K, dtype=bool)]
    assert pairs.min() - 1e-12 <= value <= pairs.max() + 1e-12
    if robust_fraction == 0:
        a = np.sum(updates.mean(axis=0) ** 2) / n
        assert value == pytest.approx((K * a - np.mean(np.diag(gram))) / (K - 1), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("bad", [np.zeros((1, 5)), np.array(5.0), np.array([[1.0, np.inf], [0.0, 1.0]])])
def test_refuses_one_client_or_non_finite_updates(bad):
    with pytest.raises(ValueError):
        theory.signal_power(bad)


def test_estimate_variances_takes_a_measured_sx2_and_keeps_mbar():
    est = theory.estimate_variances([3.0, 3.2, 2.8], gbar_sqnorm=0.0, n=100, sx2=2.5)
    assert (float(est.sx2), float(est.s2)) == pytest.approx((2.5, 0.5))
    clipped = theory.estimate_variances([3.0, 3.2, 2.8], gbar_sqnorm=0.0, n=100, sx2=-1.0)
    assert (float(clipped.sx2), float(clipped.s2)) == pytest.approx((0.0, 3.0))


def test_without_a_measured_sx2_the_aggregate_norm_is_required():
    with pytest.raises(ValueError, match="gbar_sqnorm"):
        theory.estimate_variances([3.0, 3.2, 2.8], gbar_sqnorm=None, n=100)
    from flrd.policy import RatePolicy

    policy = RatePolicy([100, 10])
    with pytest.raises(ValueError, match="aggregate_sqnorm"):
        policy.observe(m2_k=np.ones((4, 2)))
    with pytest.raises(ValueError, match="signal_power"):
        policy.observe(m2_k=np.ones((4, 2)), signal_power=[0.5])
    policy.observe(m2_k=np.ones((4, 2)), signal_power=[0.5, 0.25])
    assert policy.sx2 is not None and policy.s2 is not None and policy.rounds_observed == 1

"""Variance profiles: the rank-1 fit, its floor, and the running blend with a prior."""

import numpy as np
import pytest

from flrd.sideinfo.profile import FLOOR, RankOneProfile, RunningProfile, estimate_profile

SHAPE = (40, 300)


def _replies(rng, scale, count, keep=1.0, noise=0.0):
    out = []
    for _ in range(count):
        v = scale.ravel() * rng.standard_normal(scale.size) + np.sqrt(noise) * rng.standard_normal(scale.size)
        out.append(np.where(rng.random(scale.size) < keep, v, np.nan))
    return out


def test_rank_one_profile_is_recovered_from_noisy_sparse_replies():
    rng = np.random.default_rng(0)
    rows, cols = rng.uniform(0.2, 3.0, SHAPE[0]), rng.uniform(0.1, 2.0, SHAPE[1])
    truth = np.outer(rows, cols)
    truth /= truth.mean()
    coded = _replies(rng, np.sqrt(truth), 10, keep=0.3, noise=0.5)
    got = estimate_profile(coded, [0.5] * 10, SHAPE).expand()
    assert abs(got.mean() - 1) < 1e-12 and got.min() >= FLOOR * 0.99
    error = np.std(np.log(got / np.maximum(truth.ravel(), FLOOR)))
    assert error < 0.4 * np.std(np.log(np.maximum(truth, FLOOR)))  # most of the spread explained
    unsubtracted = estimate_profile(coded, [0.0] * 10, SHAPE).expand()
    assert error < np.std(np.log(unsubtracted / np.maximum(truth.ravel(), FLOOR)))  # noise power removed


def test_running_profile_moves_from_the_prior_to_the_data():
    rng = np.random.default_rng(1)
    truth = np.outer(np.linspace(0.1, 2, SHAPE[0]), np.ones(SHAPE[1]))
    truth /= truth.mean()
    running = RunningProfile(SHAPE, prior=np.ones(truth.size))
    assert np.array_equal(running.current(), np.ones(truth.size))
    errors = []
    for values in _replies(rng, np.sqrt(truth), 8):
        running.add(values, 0.0)
        errors.append(np.mean(np.abs(running.current() - truth.ravel())))
    assert errors[-1] < errors[0] < np.mean(np.abs(1 - truth))


def test_flat_layers_and_invalid_input():
    assert np.array_equal(RunningProfile((50,)).current(), np.ones(50))
    assert np.array_equal(estimate_profile([np.ones(50)], [0.0], (50,)).expand(), np.ones(50))
    with pytest.raises(ValueError, match="finite values >= 0"):
        RankOneProfile(np.array([1.0, -1.0]), np.ones(3))
    with pytest.raises(ValueError, match="positive"):
        RankOneProfile(np.zeros(2), np.ones(3))
    with pytest.raises(ValueError, match="prior"):
        RunningProfile(SHAPE, prior=np.zeros(SHAPE[0] * SHAPE[1]))
    with pytest.raises(ValueError, match="noise variances"):
        estimate_profile([np.ones(4)], [], (2, 2))

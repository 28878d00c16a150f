"""The rate-aware distortion rule (flrd.policy)."""

import numpy as np
import pytest

from flrd.policy import FixedLambdaPolicy, RatePolicy
from flrd import theory


def reports(rng, K, n_l, sx2, s2):
    m2 = np.empty((K, len(n_l)))
    sqnorm = np.empty(len(n_l))
    for i, n in enumerate(n_l):
        g = rng.normal(0, np.sqrt(sx2[i]), n) + rng.normal(0, np.sqrt(s2[i]), (K, n))
        m2[:, i] = np.mean(g**2, axis=1)
        sqnorm[i] = np.sum(g.mean(axis=0) ** 2)
    return m2, sqnorm


def test_plan_meets_corollary_3_and_noise_targets_reach_the_distortion():
    rng = np.random.default_rng(0)
    n_l, sx2, s2, K = [4000, 400], [2.0, 0.5], [1.0, 0.2], 10
    policy = RatePolicy(n_l, lambda_cap=8.0, smoothing=1.0)
    assert policy.plan(K).warmup
    m2, sqnorm = reports(rng, K, n_l, sx2, s2)
    policy.observe(m2, sqnorm, np.zeros((K, 2)))
    plan = policy.plan(K)
    assert not plan.warmup and 0 < plan.lambda_ <= 8.0
    # Each client adds sq2_l; the mean's distortion is (s2_l + sq2_l) / K = D_l.
    assert np.allclose((policy.s2 + plan.noise_var_per_layer) / K, plan.distortion_per_layer, rtol=1e-9)
    assert np.dot(n_l, plan.distortion_per_layer) == pytest.approx(plan.distortion_total, rel=1e-9)
    assert plan.predicted["r_sum_bits"] < plan.predicted["r_ind_bits"] < plan.predicted["signsgd_bits"] * 1.5


def test_backoff_on_stalled_loss_and_state_round_trip():
    rng = np.random.default_rng(1)
    policy = RatePolicy([1000], lambda_cap=4.0, patience=2, backoff=0.5, smoothing=1.0)
    for loss in [1.0, 0.5, 0.5, 0.5]:
        m2, sqnorm = reports(rng, 8, [1000], [1.0], [1.0])
        policy.observe(m2, sqnorm, np.zeros((8, 1)), loss=loss)
    assert policy.effective_lambda_cap == pytest.approx(2.0)
    clone = RatePolicy([1000], lambda_cap=4.0, patience=2, backoff=0.5, smoothing=1.0)
    clone.load_state_dict(policy.state_dict())
    a, b = policy.plan(8), clone.plan(8)
    assert a.lambda_ == b.lambda_ and np.array_equal(a.noise_var_per_layer, b.noise_var_per_layer)
    assert a.lambda_ <= 2.0


def test_backoff_has_a_floor_and_recovers_when_the_loss_improves_again():
    rng = np.random.default_rng(3)
    policy = RatePolicy([500], lambda_cap=4.0, patience=1, backoff=0.5, smoothing=1.0, min_lambda_cap=0.3)
    m2, sqnorm = reports(rng, 6, [500], [1.0], [1.0])
    policy.observe(m2, sqnorm, np.zeros((6, 1)), loss=1.0)
    for _ in range(40):  # a long plateau must not drive lambda to the error-free floor
        policy.observe(m2, sqnorm, np.zeros((6, 1)), loss=1.0)
    assert policy.effective_lambda_cap == pytest.approx(0.3)
    assert policy.plan(6).lambda_ <= 0.3 + 1e-12
    for loss in [0.9, 0.8, 0.7]:
        policy.observe(m2, sqnorm, np.zeros((6, 1)), loss=loss)
    assert policy.effective_lambda_cap == pytest.approx(2.4)  # one back-off undone per improving round


def test_frozen_layers_get_no_distortion_and_a_negligible_target():
    policy = RatePolicy([100, 50], smoothing=1.0)
    rng = np.random.default_rng(4)
    m2, sqnorm = reports(rng, 5, [100], [1.0], [1.0])
    policy.observe(np.column_stack([m2[:, 0], np.zeros(5)]), np.array([sqnorm[0], 0.0]), np.zeros((5, 2)))
    plan = policy.plan(5)
    assert plan.distortion_per_layer[1] == 0.0 and 0 < plan.noise_var_per_layer[1] < 1e-20
    assert np.isfinite(plan.predicted["r_sum_bits"])


def test_fixed_lambda_policy_uses_its_lambda():
    rng = np.random.default_rng(2)
    policy = FixedLambdaPolicy([500, 50], fixed_lambda=3.0)
    m2, sqnorm = reports(rng, 6, [500, 50], [1.0, 1.0], [1.0, 1.0])
    policy.observe(m2, sqnorm, np.zeros((6, 2)))
    plan = policy.plan(6)
    floor = theory.error_free_distortion([500, 50], policy.s2, 6)
    assert plan.lambda_ == 3.0 and plan.distortion_total == pytest.approx(4 * floor)
    # The paper's knob: K D_l = s2_l (1 + lambda) on every layer, i.e. noise = lambda s2_l.
    assert np.allclose(plan.noise_var_per_layer, 3.0 * policy.s2)


def test_invalid_parameters_name_their_bound():
    with pytest.raises(ValueError, match="smoothing must be in"):
        RatePolicy([10], smoothing=0.0)
    with pytest.raises(ValueError, match="lambda_cap must be > 0"):
        RatePolicy([10], lambda_cap=-1)
    policy = RatePolicy([10])
    with pytest.raises(ValueError, match="loss must be finite"):
        policy.observe(np.ones((3, 1)), np.ones(1), np.zeros((3, 1)), loss=float("nan"))

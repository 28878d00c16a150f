"""The trust-region distortion rule (flrd.trust_region)."""

import numpy as np
import pytest
from test_policy import reports

from flrd.policy import RatePolicy
from flrd.state_file import StateError
from flrd.trust_region import TrustRegionPolicy


def observed(policy, rng, K=10, sizes=(4000, 400), s2=(0.01, 0.004)):
    m2, sqnorm = reports(rng, K, list(sizes), [0.02, 0.005], list(s2))
    policy.observe(m2, sqnorm, np.zeros((K, len(sizes))))


def test_first_round_needs_no_warmup_and_scales_to_the_model():
    policy = TrustRegionPolicy([4000, 400], noise_fraction=0.02, first_round_fraction=0.1, first_rounds=2,
                               signal_multiple=0.0, shrink_coordinates=0.0)
    assert policy.plan(10).warmup  # no model seen: nothing to scale to
    policy.observe_model([0.5, 2.0])
    plan = policy.plan(10)
    assert not plan.warmup
    np.testing.assert_allclose(plan.distortion_per_layer, [0.05, 0.2])
    # Nothing is known of s2 yet: each client adds all of K D_l.
    np.testing.assert_allclose(plan.noise_var_per_layer, [0.5, 2.0])
    observed(policy, np.random.default_rng(5))  # the second round: still a tenth
    np.testing.assert_allclose(policy.plan(10).distortion_per_layer, [0.05, 0.2])
    observed(policy, np.random.default_rng(6))
    np.testing.assert_allclose(policy.plan(10).distortion_per_layer, [0.01, 0.04])


def test_noise_targets_reach_the_distortion_once_s2_is_known():
    policy = TrustRegionPolicy([4000, 400], noise_fraction=0.02, first_rounds=1, signal_multiple=0.0,
                               shrink_coordinates=0.0, smoothing=1.0)
    policy.observe_model([0.5, 2.0])
    observed(policy, np.random.default_rng(0))
    plan = policy.plan(10)
    np.testing.assert_allclose((policy.s2 + plan.noise_var_per_layer) / 10, [0.01, 0.04], rtol=1e-12)
    assert plan.lambda_ == pytest.approx(np.dot([4000, 400], plan.noise_var_per_layer)
                                         / np.dot([4000, 400], policy.s2))
    assert plan.predicted["r_sum_bits"] <= plan.predicted["r_ind_bits"]


def test_the_reference_is_the_first_model_so_noise_cannot_inflate_itself():
    # Noise that the loss does not correct grows the weights; a rule reading the live
    # weights would then add more noise every round (measured: D doubled in 40 rounds).
    policy = TrustRegionPolicy([100], noise_fraction=0.01, first_round_fraction=0.01)
    policy.observe_model([1.0])
    first = policy.plan(5).distortion_per_layer.copy()
    policy.observe_model([9.0])
    np.testing.assert_array_equal(policy.plan(5).distortion_per_layer, first)


def test_small_layers_shrink_towards_the_model_wide_power():
    policy = TrustRegionPolicy([100_000, 10], noise_fraction=0.01, first_round_fraction=0.01,
                               shrink_coordinates=1000.0)
    policy.observe_model([1.0, 0.0])  # a zero-initialized bias still gets a share
    D = policy.plan(10).distortion_per_layer
    assert D[0] == pytest.approx(0.01, rel=1e-3) and D[1] == pytest.approx(0.01 * 1000 / 1010, rel=1e-3)


def test_never_asks_for_more_precision_than_the_smallest_lambda():
    policy = TrustRegionPolicy([1000], noise_fraction=1e-6, min_lambda_cap=0.5, smoothing=1.0)
    policy.observe_model([1.0])
    observed(policy, np.random.default_rng(1), sizes=(1000,), s2=(1.0,))
    plan = policy.plan(10)
    assert 10 * 1e-6 < policy.s2[0]  # the target lies below what sampling alone costs
    assert plan.noise_var_per_layer[0] == pytest.approx(0.5 * policy.s2[0])
    assert plan.lambda_ == pytest.approx(0.5)


def test_a_stalled_loss_backs_the_noise_off():
    policy = TrustRegionPolicy([4000, 400], noise_fraction=0.02, patience=2, backoff=0.5, smoothing=1.0)
    policy.observe_model([1.0, 1.0])
    rng = np.random.default_rng(2)
    observed(policy, rng)
    policy.observe(*reports(rng, 10, [4000, 400], [0.02, 0.005], [0.01, 0.004]), np.zeros((10, 2)), loss=1.0)
    before = policy.plan(10).distortion_total
    for loss in [1.0, 1.0]:
        m2, sqnorm = reports(rng, 10, [4000, 400], [0.02, 0.005], [0.01, 0.004])
        policy.observe(m2, sqnorm, np.zeros((10, 2)), loss=loss)
    assert policy.plan(10).distortion_total == pytest.approx(before / 2, rel=1e-9)


def test_state_round_trip_keeps_the_reference_and_names_a_bad_field():
    policy = TrustRegionPolicy([4000, 400], noise_fraction=0.02, smoothing=1.0)
    policy.observe_model([0.5, 2.0])
    observed(policy, np.random.default_rng(3))
    plan = policy.plan(10)
    restored = TrustRegionPolicy([4000, 400], noise_fraction=0.02, smoothing=1.0)
    restored.load_state_dict(policy.state_dict())
    restored.observe_model([7.0, 7.0])  # a restarted server sees a later model
    np.testing.assert_array_equal(restored.plan(10).noise_var_per_layer, plan.noise_var_per_layer)
    bad = {**policy.state_dict(), "reference_mean_square": [0.5, -1.0]}
    with pytest.raises(StateError, match="reference_mean_square"):
        TrustRegionPolicy([4000, 400]).load_state_dict(bad)
    missing = {k: v for k, v in policy.state_dict().items() if k != "reference_mean_square"}
    with pytest.raises(StateError, match="reference_mean_square"):
        TrustRegionPolicy([4000, 400]).load_state_dict(missing)


def test_a_state_saved_by_the_other_rule_is_refused_with_the_way_out():
    trust = TrustRegionPolicy([4000, 400], smoothing=1.0)
    trust.observe_model([0.5, 2.0])
    observed(trust, np.random.default_rng(4))
    corollary3 = RatePolicy([4000, 400], smoothing=1.0)
    observed(corollary3, np.random.default_rng(4))
    with pytest.raises(StateError, match="another policy, e.g. rate-aware.*new state directory"):
        TrustRegionPolicy([4000, 400]).load_state_dict(corollary3.state_dict())
    with pytest.raises(StateError, match="reference_mean_square.*another policy, e.g. trust-region"):
        RatePolicy([4000, 400]).load_state_dict(trust.state_dict())


def test_invalid_parameters_name_their_bound():
    with pytest.raises(ValueError, match=r"noise_fraction must be in \(0(\.0)?, 1(\.0)?\]"):
        TrustRegionPolicy([10], noise_fraction=0.0)
    with pytest.raises(ValueError, match=r"first_round_fraction must be in \(0(\.0)?, 1(\.0)?\]"):
        TrustRegionPolicy([10], first_round_fraction=2.0)
    with pytest.raises(ValueError, match="first_rounds must be >= 1"):
        TrustRegionPolicy([10], first_rounds=0)
    with pytest.raises(ValueError, match=r"min_backoff_scale must be in \(0(\.0)?, 1(\.0)?\]"):
        TrustRegionPolicy([10], min_backoff_scale=0.0)
    with pytest.raises(ValueError, match="weight_mean_square must hold 2 finite values"):
        TrustRegionPolicy([10, 10]).observe_model([1.0, np.nan])



def test_the_back_off_stops_at_its_floor():
    policy = TrustRegionPolicy([4000, 400], noise_fraction=0.02, patience=1, backoff=0.5, smoothing=1.0,
                               min_backoff_scale=0.25)
    policy.observe_model([1.0, 1.0])
    rng = np.random.default_rng(4)
    observed(policy, rng)
    full = policy.plan(10).distortion_total
    for _ in range(6):  # a plateau: every round stalls
        m2, sqnorm = reports(rng, 10, [4000, 400], [0.02, 0.005], [0.01, 0.004])
        policy.observe(m2, sqnorm, np.zeros((10, 2)), loss=1.0)
    assert policy.plan(10).distortion_total == pytest.approx(full / 4, rel=1e-9)


def test_frozen_layers_get_a_negligible_target_once_seen():
    policy = TrustRegionPolicy([4000, 400], noise_fraction=0.02, smoothing=1.0)
    policy.observe_model([1.0, 1.0])
    m2, sqnorm = reports(np.random.default_rng(6), 10, [4000], [0.02], [0.01])
    policy.observe(np.column_stack([m2[:, 0], np.zeros(10)]), np.array([sqnorm[0], 0.0]), np.zeros((10, 2)))
    plan = policy.plan(10)
    assert plan.noise_var_per_layer[0] > 0.01 and 0 < plan.noise_var_per_layer[1] < 1e-20


@pytest.mark.parametrize("multiple", [0.0, 0.5, 2.0, 1e4])
def test_a_strong_signal_buys_noise_up_to_the_first_rounds_fraction(multiple):
    # D tracks the signal power S (the per-round optimum of docs/THEORY.md §16 is
    # proportional to it), clipped to [noise_fraction, first_round_fraction] x the power.
    policy = TrustRegionPolicy([4000, 400], noise_fraction=0.01, first_round_fraction=0.1, first_rounds=1,
                               signal_multiple=multiple, shrink_coordinates=0.0, smoothing=1.0)
    policy.observe_model([0.5, 2.0])
    observed(policy, np.random.default_rng(7))
    power = 4000 * 0.5 + 400 * 2.0
    signal = float(np.dot([4000, 400], policy.sx2))
    expected = min(max(multiple * signal / power, 0.01), 0.1)
    assert policy.fraction() == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(policy.plan(10).distortion_per_layer, [expected * 0.5, expected * 2.0], rtol=1e-9)

"""The rate-aware distortion rule (flrd.policy)."""

import numpy as np
import pytest

from flrd import theory
from flrd.policy import FixedLambdaPolicy, RatePolicy
from flrd.state_file import StateError, load_state, save_state


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
    with pytest.raises(ValueError, match=r"lambda_cap must be in \(0.001, 1e\+12\]"):
        RatePolicy([10], lambda_cap=-1)
    policy = RatePolicy([10])
    with pytest.raises(ValueError, match="loss must be finite"):
        policy.observe(np.ones((3, 1)), np.ones(1), np.zeros((3, 1)), loss=float("nan"))


# ----------------------------------------------------------- hostile reports (issue 12)
def clean_round(seed, K=10, n_l=(4000, 400), sx2=(0.02, 0.005), s2=(0.01, 0.004)):
    return reports(np.random.default_rng(seed), K, list(n_l), list(sx2), list(s2))


@pytest.mark.parametrize("hostile", [[3], [0, 7]])
@pytest.mark.parametrize("forged", [1e6, 0.0, -1e6, np.nan, np.inf])
def test_forged_m2_moves_the_estimates_by_less_than_2x(hostile, forged):
    m2, sqnorm = clean_round(5)
    clean = RatePolicy([4000, 400], smoothing=1.0)
    clean.observe(m2, sqnorm, np.zeros((10, 2)))
    attacked = RatePolicy([4000, 400], smoothing=1.0)
    bad = m2.copy()
    bad[hostile] = forged
    attacked.observe(bad, sqnorm, np.zeros((10, 2)))
    for name in ("sx2", "s2"):
        ratio = getattr(attacked, name) / getattr(clean, name)
        assert np.all((ratio > 0.5) & (ratio < 2.0)), (name, ratio)
    a, b = clean.plan(10), attacked.plan(10)
    assert np.all(b.noise_var_per_layer < 4 * a.noise_var_per_layer)


def test_forged_quantization_noise_is_winsorized_too():
    m2, sqnorm = clean_round(6)
    sq2 = np.full((10, 2), 1e-3)
    clean, attacked = RatePolicy([4000, 400], smoothing=1.0), RatePolicy([4000, 400], smoothing=1.0)
    clean.observe(m2, sqnorm + 1e-3 * np.array([4000, 400]) / 10, sq2)
    forged = sq2.copy()
    forged[[1, 2]] = 1e6
    attacked.observe(m2, sqnorm + 1e-3 * np.array([4000, 400]) / 10, forged)
    assert np.all(np.abs(np.log(attacked.s2 / clean.s2)) < np.log(2))


def test_without_robust_aggregation_one_client_moves_s2_by_orders_of_magnitude():
    """The attack of issue 12 (m2 = 1e6 among ~0.01): what robust_fraction prevents."""
    m2, sqnorm = clean_round(5)
    plain, robust = RatePolicy([4000, 400], smoothing=1.0, robust_fraction=0.0), RatePolicy([4000, 400], smoothing=1.0)
    plain.observe(m2, sqnorm, np.zeros((10, 2)))
    before = plain.s2.copy()
    bad = m2.copy()
    bad[3] = 1e6
    plain = RatePolicy([4000, 400], smoothing=1.0, robust_fraction=0.0)
    plain.observe(bad, sqnorm, np.zeros((10, 2)))
    robust.observe(bad, sqnorm, np.zeros((10, 2)))
    assert np.all(plain.s2 > 1e6 * before) and np.all(robust.s2 < 2 * before)


def test_too_many_invalid_reports_change_nothing():
    m2, sqnorm = clean_round(7)
    policy = RatePolicy([4000, 400], smoothing=1.0)
    policy.observe(m2, sqnorm, np.zeros((10, 2)))
    state = policy.state_dict()
    bad = m2.copy()
    bad[:4] = np.nan  # 4 of 10: more than floor(0.3 * 10)
    with pytest.raises(ValueError, match="m2_k must be"):
        policy.observe(bad, sqnorm, np.zeros((10, 2)))
    assert policy.state_dict() == state


def observe_losses(policy, losses_per_round, seed=8):
    m2, sqnorm = clean_round(seed)
    for losses in losses_per_round:
        policy.observe(m2, sqnorm, np.zeros((10, 2)), loss_k=losses)


def test_one_absurd_loss_does_not_disable_the_backoff():
    policy = RatePolicy([4000, 400], lambda_cap=4.0, patience=2, backoff=0.5, smoothing=0.5)
    first = np.full(10, 1.0)
    first[4] = 1e300
    observe_losses(policy, [first] + [np.full(10, 1.0)] * 4)
    assert policy.effective_lambda_cap == pytest.approx(1.0)  # two back-offs after 4 stalled rounds
    # The scalar form is trusted as given: the same absurd value there disables the back-off.
    trusting = RatePolicy([4000, 400], lambda_cap=4.0, patience=2, backoff=0.5, smoothing=0.5)
    m2, sqnorm = clean_round(8)
    for loss in [1e300] + [1.0] * 4:
        trusting.observe(m2, sqnorm, np.zeros((10, 2)), loss=loss)
    assert trusting.effective_lambda_cap == 4.0


def test_per_client_losses_median_nan_dropped_and_divergence_counts_as_stall():
    policy = RatePolicy([4000, 400], lambda_cap=4.0, patience=1, backoff=0.5, smoothing=1.0)
    observe_losses(policy, [[np.nan] * 10])
    assert np.isnan(policy.smoothed_loss) and policy.best_loss == np.inf  # nothing to track
    observe_losses(policy, [[2.0, 1.0, 3.0, np.nan, 2.0, 2.0, 2.0, np.inf, 2.0, 2.0]])
    assert policy.smoothed_loss == 2.0
    observe_losses(policy, [[np.inf] * 6 + [1.0] * 4])  # most clients diverged
    assert policy.effective_lambda_cap == pytest.approx(2.0) and policy.smoothed_loss == 2.0
    with pytest.raises(ValueError, match="not both"):
        policy.observe(*clean_round(1), np.zeros((10, 2)), loss=1.0, loss_k=[1.0])


def test_observe_checks_shapes_against_the_layers():
    policy = RatePolicy([4000, 400])
    m2, sqnorm = clean_round(2)
    with pytest.raises(ValueError, match=r"m2_k must have shape \(K, 2\)"):
        policy.observe(m2[:, :1], sqnorm, np.zeros((10, 2)))
    with pytest.raises(ValueError, match=r"aggregate_sqnorm must have shape \(2,\)"):
        policy.observe(m2, sqnorm[:1], np.zeros((10, 2)))


# ------------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lambda_cap": 1e308}, r"lambda_cap must be in \(0.001, 1e\+12\]"),
        ({"lambda_cap": float("inf")}, "lambda_cap must be finite"),
        ({"lambda_cap": float("nan")}, "lambda_cap must be finite"),
        ({"lambda_cap": 1e-4}, "lambda_cap must be in"),
        ({"beta": -1.0}, "beta must be >= 0"),
        ({"beta": float("inf")}, "beta must be finite"),
        ({"initial_distance": 0.0}, "initial_distance must be > 0"),
        ({"target_accuracy_eps": float("nan")}, "target_accuracy_eps must be finite"),
        ({"smoothing": 1.5}, r"smoothing must be in \(0, 1\]"),
        ({"smoothing": float("nan")}, "smoothing must be finite"),
        ({"backoff": 0.0}, r"backoff must be in \(0, 1\]"),
        ({"patience": 0}, "patience must be >= 1"),
        ({"patience": 1.5}, "patience must be an integer"),
        ({"patience": True}, "patience must be an integer"),
        ({"min_improvement": 1.0}, r"min_improvement must be in \[0, 1\)"),
        ({"min_lambda_cap": -1.0}, "min_lambda_cap must be in"),
        ({"warmup_relative_noise": 0.0}, "warmup_relative_noise must be in"),
        ({"warmup_relative_noise": 1e7}, r"warmup_relative_noise must be in \(0, 1e\+06\]"),
        ({"robust_fraction": 0.5}, r"robust_fraction must be in \[0, 0.5\)"),
    ],
)
def test_every_parameter_names_its_bound(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RatePolicy([10, 5], **kwargs)


@pytest.mark.parametrize("sizes", [[], [1.5], [-1], [0], [np.nan], "abc"])
def test_layer_sizes_must_be_positive_integers(sizes):
    with pytest.raises(ValueError, match="layer_sizes must be"):
        RatePolicy(sizes)


def test_fixed_lambda_is_bounded():
    with pytest.raises(ValueError, match=r"fixed_lambda must be in \(0, 1e\+12\]"):
        FixedLambdaPolicy([10], fixed_lambda=1e13)


# -------------------------------------------------------------------------- state
def observed_policy():
    policy = RatePolicy([4000, 400], patience=2)
    observe_losses(policy, [np.full(10, 1.0), np.full(10, 0.9)])
    return policy


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cap_scale": -5.0}, "cap_scale"),
        ({"cap_scale": 0.0}, "cap_scale"),
        ({"cap_scale": 2.0}, "cap_scale"),
        ({"cap_scale": float("nan")}, "cap_scale"),
        ({"rounds_observed": -7.0}, "rounds_observed"),
        ({"rounds_observed": 2.5}, "rounds_observed"),
        ({"rounds_observed": 0}, "rounds_observed"),  # but estimates present
        ({"stalled_rounds": 2}, "stalled_rounds"),  # >= patience
        ({"stalled_rounds": "1"}, "stalled_rounds"),
        ({"sx2": [1.0]}, "sx2"),
        ({"sx2": [1.0, float("nan")]}, "sx2"),
        ({"sx2": "[1, 2]"}, "sx2"),
        ({"s2": [1.0, -1.0]}, "s2"),
        ({"s2": []}, "s2"),
        ({"best_loss": float("nan")}, "best_loss"),
        ({"smoothed_loss": float("inf")}, "smoothed_loss"),
        ({"lambda": 3.0}, "lambda"),  # unknown field
    ],
)
def test_load_state_dict_names_the_bad_field_and_changes_nothing(change, field):
    policy = observed_policy()
    before = policy.state_dict()
    with pytest.raises(StateError) as err:
        policy.load_state_dict({**before, **change})
    assert err.value.field == field and isinstance(err.value, ValueError)
    assert policy.state_dict() == before


def test_load_state_dict_rejects_missing_fields_and_non_mappings():
    policy = observed_policy()
    state = policy.state_dict()
    del state["cap_scale"]
    with pytest.raises(StateError, match="missing") as err:
        policy.load_state_dict(state)
    assert err.value.field == "cap_scale"
    with pytest.raises(StateError, match="mapping"):
        policy.load_state_dict([1, 2])  # type: ignore[arg-type]


def test_fresh_state_round_trips_and_resumes_through_a_state_file(tmp_path):
    fresh = RatePolicy([4000, 400])
    RatePolicy([4000, 400]).load_state_dict(fresh.state_dict())  # inf / nan of a fresh policy
    policy = observed_policy()
    save_state(tmp_path, {"w": np.zeros(3)}, policy.state_dict())
    _, state = load_state(tmp_path)
    clone = RatePolicy([4000, 400], patience=2)
    clone.load_state_dict(state)
    observe_losses(policy, [np.full(10, 0.95)], seed=9)
    observe_losses(clone, [np.full(10, 0.95)], seed=9)
    a, b = policy.plan(10), clone.plan(10)
    assert a.lambda_ == b.lambda_ and np.array_equal(a.noise_var_per_layer, b.noise_var_per_layer)
    assert policy.state_dict() == clone.state_dict()


def test_small_layers_split_their_second_moment_like_the_model():
    # Layer 0 (10^5 coordinates) says sx2/(sx2+s2) = 0.8; layer 1 (10 coordinates) says 0.
    policy = RatePolicy([100_000, 10], min_noise_fraction=0.0)
    sx2, s2 = policy._shrunk(np.array([0.8, 0.0]), np.array([0.2, 1.0]))
    np.testing.assert_allclose(sx2 + s2, [1.0, 1.0])  # each layer's total is kept
    assert abs(sx2[0] - 0.8) < 0.01  # a large layer keeps its own split
    assert sx2[1] > 0.7  # a tiny one follows the model-wide split (~0.8)
    off = RatePolicy([100_000, 10], min_noise_fraction=0.0, shrink_coordinates=0.0)
    np.testing.assert_allclose(off._shrunk(np.array([0.8, 0.0]), np.array([0.2, 1.0]))[0], [0.8, 0.0])

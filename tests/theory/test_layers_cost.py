"""Corollary 1 (layer split), Theorem 1 (rounds) and Corollary 3 (distortion choice)."""

import numpy as np
import pytest
from scipy import optimize

from flrd import theory


def test_split_matches_slsqp_and_equalizes_slopes():
    n_l = np.array([100.0, 10.0, 1000.0])
    sx2_l = np.array([1.0, 5.0, 0.1])
    s2_l = np.array([0.5, 2.0, 1.0])
    K, D_tot = 10, 200.0
    D_l = theory.split_distortion(D_tot, n_l, sx2_l, s2_l, K)
    assert n_l @ D_l == pytest.approx(D_tot, rel=1e-12)
    slopes = theory.sum_rate_slope(D_l, sx2_l, s2_l, K)
    assert np.allclose(slopes, slopes[0], rtol=1e-8)
    floor = s2_l / K
    res = optimize.minimize(
        lambda x: float(n_l @ theory.sum_rate(floor + np.exp(x), sx2_l, s2_l, K)),
        np.log(D_l - floor) + 0.3, method="SLSQP",
        constraints=[{"type": "eq", "fun": lambda x: (n_l @ (floor + np.exp(x))) / D_tot - 1}],
        options={"ftol": 1e-15, "maxiter": 500})
    ours = float(theory.round_cost(D_tot, n_l, sx2_l, s2_l, K))
    assert ours == pytest.approx(res.fun, rel=1e-9)
    assert ours <= res.fun * (1 + 1e-12)


def test_split_beats_uniform_lambda():
    n_l, sx2_l, s2_l, K = [500, 50], [3.0, 0.01], [0.2, 1.0], 20
    D_uniform = np.array(s2_l) * 2.0 / K
    D_tot = float(np.dot(n_l, D_uniform))
    uniform_cost = float(np.dot(n_l, theory.sum_rate(D_uniform, sx2_l, s2_l, K)))
    assert float(theory.round_cost(D_tot, n_l, sx2_l, s2_l, K)) < 0.99 * uniform_cost


def test_rounds_needed_is_the_least_t_meeting_the_bound():
    for D_tot, R0, beta, eps in [(0.3, 1.0, 1.0, 0.01), (5.0, 2.0, 0.5, 0.1), (0.0, 1.0, 1.0, 0.01)]:
        T = int(theory.rounds_needed(D_tot, R0, beta, eps))

        def bound(t, R0=R0, D_tot=D_tot, beta=beta):
            return R0 * np.sqrt(2 * D_tot / t) + beta * R0**2 / t

        assert bound(T) <= eps * (1 + 1e-12)
        assert bound(T - 1) > eps


def test_choose_distortion_matches_brute_force_and_respects_cap():
    args = dict(R0=1.0, beta=1.0, eps=0.01)
    choice = theory.choose_distortion([1], [2.0], [1.0], 10, **args)
    lam = np.geomspace(1e-3, 10.0, 200_001)
    costs = theory.total_cost(0.1 * (1 + lam), [1], [2.0], [1.0], 10, integer=False, **args)
    assert choice.lambda_ == pytest.approx(lam[np.argmin(costs)], rel=1e-3)
    assert choice.lambda_ == pytest.approx(2.0, abs=0.5)
    assert choice.total_cost_bits == pytest.approx(choice.rounds * choice.round_cost_bits)
    capped = theory.choose_distortion([1], [2.0], [1.0], 10, lambda_cap=0.5, **args)
    assert capped.lambda_ == pytest.approx(0.5, rel=1e-9)
    # When sx2 vanishes the noise part dominates: larger lambda is cheaper up to the cap.
    assert theory.choose_distortion([1], [1e-6], [1.0], 10, lambda_cap=3.0, **args).lambda_ > 2.9


def test_signsgd_model_constants():
    m = theory.signsgd_model(np.array([0.1, 1.0, 10.0]), 1.0, 8)
    const = 8 / 2 * np.log2((2 - 2 / np.pi) / (1 - 2 / np.pi))
    assert np.allclose(m.independent_rate, const, rtol=1e-12)
    assert np.all(m.sum_rate < m.independent_rate) and np.all(m.independent_rate < m.signsgd_rate)
    assert m.sum_rate[2] < m.sum_rate[0]  # the DSC gain grows with sx2 (early training)

"""Closed forms of THEORY.md §3 against water-filling, SLSQP and their limits."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize

from flrd import theory

settings.register_profile("flrd", derandomize=True, deadline=None, max_examples=200)
settings.load_profile("flrd")

variances = st.floats(1e-3, 1e3)
workers = st.integers(1, 200)
slack = st.floats(1e-3, 1e3)  # D = s2/K * (1 + slack)


def slsqp_sum_rate(D: float, sx2: float, s2_k: np.ndarray, seed: int = 0) -> float:
    """Theorem-2 sum rate by generic constrained minimization over r in F(D)."""
    rng = np.random.default_rng(seed)
    ln2 = np.log(2.0)
    start = rng.uniform(0.5, 3.0, s2_k.size)
    res = optimize.minimize(
        lambda r: r.sum(),
        start,
        jac=lambda r: np.ones_like(r),
        method="SLSQP",
        bounds=[(0.0, None)] * s2_k.size,
        constraints=[{
            "type": "eq",
            "fun": lambda r: D * np.sum(-np.expm1(-2 * ln2 * r) / s2_k) - 1.0,
            "jac": lambda r: D * 2 * ln2 * np.exp(-2 * ln2 * r) / s2_k,
        }],
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    # SLSQP may stop on "positive directional derivative" at machine precision; what
    # matters is that it ends feasible.
    assert res.status in (0, 8), res.message
    u = -np.expm1(-2 * ln2 * res.x) / s2_k
    assert abs(D * u.sum() - 1.0) < 1e-12
    return float(res.fun + 0.5 * np.log2(1.0 + sx2 / D))


def test_issue_example_k10_closed_form_waterfill_slsqp():
    sx2, s2, K = 2.0, 1.0, 10
    for D in [0.11, 0.2, 0.3, 1.0, 5.0]:
        closed = float(theory.sum_rate(D, sx2, s2, K))
        by_hand = K / 2 * np.log2(K * D / (K * D - s2)) + 0.5 * np.log2(1 + sx2 / D)
        water = theory.heterogeneous_sum_rate(D, sx2, np.full(K, s2))
        generic = slsqp_sum_rate(D, sx2, np.full(K, s2))
        assert closed == pytest.approx(by_hand, rel=1e-12)
        assert water == pytest.approx(closed, rel=1e-9)
        assert generic == pytest.approx(closed, rel=1e-9)
        ind = float(theory.independent_rate(D, sx2, s2, K))
        assert ind == pytest.approx(K / 2 * np.log2((K * D + sx2) / (K * D - s2)), rel=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_heterogeneous_waterfill_matches_slsqp(seed):
    rng = np.random.default_rng(seed)
    s2_k = rng.lognormal(0.0, 1.0, size=7)
    D = float(theory.min_distortion(s2_k)) * rng.uniform(1.05, 4.0)
    assert theory.heterogeneous_sum_rate(D, 1.5, s2_k) == pytest.approx(slsqp_sum_rate(D, 1.5, s2_k, seed), rel=1e-8)


def test_waterfill_silences_noisy_workers_and_respects_costs():
    s2_k = np.array([0.5, 1.0, 2.0, 4.0, 100.0])
    r = theory.waterfill(0.3, s2_k)
    assert r[-1] == 0.0 and np.all(r[:-1] > 0)
    u = theory.noise_weights(r, s2_k)
    assert u.sum() == pytest.approx(1 / 0.3, rel=1e-12)
    cheap_last = theory.waterfill(0.3, s2_k[:4], costs=[1, 1, 1, 0.1])
    plain = theory.waterfill(0.3, s2_k[:4])
    assert cheap_last[3] > plain[3]  # the cheap link carries more


@given(sx2=variances, s2=variances, K=workers, a=slack, b=slack)
def test_monotone_decreasing_in_distortion(sx2, s2, K, a, b):
    lo, hi = sorted([a, b])
    D_lo, D_hi = s2 / K * (1 + lo), s2 / K * (1 + hi)
    assert theory.sum_rate(D_lo, sx2, s2, K) >= theory.sum_rate(D_hi, sx2, s2, K) * (1 - 1e-12)
    assert theory.independent_rate(D_lo, sx2, s2, K) >= theory.independent_rate(D_hi, sx2, s2, K) * (1 - 1e-12)


@given(sx2=variances, s2=variances, K=st.integers(1, 100), D_scale=st.floats(1.01, 100.0))
def test_more_workers_never_cost_more_at_fixed_distortion(sx2, s2, K, D_scale):
    D = s2 / K * D_scale  # feasible for K, hence for K + 1
    assert theory.sum_rate(D, sx2, s2, K + 1) <= theory.sum_rate(D, sx2, s2, K) * (1 + 1e-12)


def test_independent_rate_is_not_monotone_in_workers_and_has_its_limit():
    """Without DSC each extra worker re-sends the common part sx2: R_ind can grow with K."""
    assert theory.independent_rate(3.0, 2.0, 1.0, 2) > theory.independent_rate(3.0, 2.0, 1.0, 1)
    assert theory.independent_rate(0.5, 0.1, 1.0, 4) < theory.independent_rate(0.5, 0.1, 1.0, 3)
    limit = (2.0 + 1.0) / (2 * 0.3 * np.log(2))  # K -> inf: (sx2 + s2) / (2 D ln 2)
    assert float(theory.independent_rate(0.3, 2.0, 1.0, 1e7)) == pytest.approx(limit, rel=1e-5)


@given(sx2=variances, s2=variances, K=workers, a=slack, b=slack)
def test_sum_rate_convex_in_distortion(sx2, s2, K, a, b):
    D1, D2 = s2 / K * (1 + a), s2 / K * (1 + b)
    mid = float(theory.sum_rate(0.5 * (D1 + D2), sx2, s2, K))
    chord = 0.5 * float(theory.sum_rate(D1, sx2, s2, K) + theory.sum_rate(D2, sx2, s2, K))
    assert mid <= chord * (1 + 1e-9) + 1e-12


@given(sx2=variances, s2=variances, K=workers, a=slack)
def test_independent_at_least_sum_rate_and_gap_formula(sx2, s2, K, a):
    D = s2 / K * (1 + a)
    r_sum = float(theory.sum_rate(D, sx2, s2, K))
    r_ind = float(theory.independent_rate(D, sx2, s2, K))
    assert r_ind >= r_sum * (1 - 1e-12)
    gap = K / 2 * np.log2(1 + sx2 / (K * D)) - 0.5 * np.log2(1 + sx2 / D)
    assert r_ind - r_sum == pytest.approx(gap, rel=1e-6, abs=1e-9)


def test_equality_at_one_worker_and_blow_up_at_the_floor():
    D = np.array([0.5, 1.0, 3.0])
    assert np.allclose(theory.sum_rate(D, 2.0, 0.4, 1), theory.independent_rate(D, 2.0, 0.4, 1), rtol=1e-12)
    near_floor = 0.1 * (1 + np.array([1e-2, 1e-4, 1e-8]))
    assert np.all(np.diff(theory.sum_rate(near_floor, 2.0, 1.0, 10)) > 0)
    assert theory.sum_rate(near_floor[-1], 2.0, 1.0, 10) > 100
    assert theory.independent_rate(near_floor[-1], 2.0, 1.0, 10) > 100


def test_limits_unbiased_positive_classic_ceo_zero():
    D = np.array([10.0, 1e3, 1e6])
    r = theory.sum_rate(D, 2.0, 1.0, 10)
    assert np.all(r > 0) and np.all(np.diff(r) < 0) and r[-1] < 1e-5
    assert np.all(theory.ceo_sum_rate(np.array([2.0, 3.0, 100.0]), 2.0, 1.0, 10) == 0.0)
    assert theory.ceo_sum_rate(1.0, 2.0, 1.0, 10) > 0
    assert np.all(theory.ceo_sum_rate(D[:1] / 20, 2.0, 1.0, 10) < theory.sum_rate(D[:1] / 20, 2.0, 1.0, 10))


def test_gaussian_rate_distortion_reference():
    """K=1 with a noiseless worker: the classic CEO rate is Shannon's D(R) = s^2 2^(-2R)."""
    R = np.array([0.5, 1.0, 2.0, 4.0])
    D = 3.0 * 2.0 ** (-2 * R)
    assert np.allclose(theory.ceo_sum_rate(D, 3.0, 0.0, 1), R, rtol=1e-12)
    # Unbiasedness costs exactly the rescaling of the MMSE estimate: D_mmse = D sx2/(sx2+D).
    assert np.allclose(theory.sum_rate(D, 3.0, 0.0, 1), theory.ceo_sum_rate(D * 3 / (3 + D), 3.0, 0.0, 1), rtol=1e-12)


def test_heterogeneous_independent_rate_is_the_minimum():
    # sx2 <= s2: every term is convex, the symmetric closed form is optimal.
    assert theory.heterogeneous_independent_rate(0.2, 0.5, [1.0] * 10) == pytest.approx(
        float(theory.independent_rate(0.2, 0.5, 1.0, 10)), rel=1e-9)
    # sx2 >> s2: silencing workers beats the symmetric scheme (THEORY.md's homogeneous R_ind).
    assert theory.heterogeneous_independent_rate(0.2, 100.0, [1.0] * 10) < 0.85 * float(
        theory.independent_rate(0.2, 100.0, 1.0, 10))
    # Below every worker's concave region one worker alone is optimal (a KKT-only search finds nothing).
    alone = 0.5 * np.log2((1 + 100.0 / 5.0) / (1 - 1.0 / 5.0))
    assert theory.heterogeneous_independent_rate(5.0, 100.0, [1.0] * 10) == pytest.approx(alone, rel=1e-9)
    rng = np.random.default_rng(3)
    for _ in range(12):
        s2_k = rng.lognormal(0, 0.7, size=3)
        sx2 = float(rng.lognormal(0, 1.5))
        D = float(theory.min_distortion(s2_k)) * rng.uniform(1.1, 6.0)
        ours = theory.heterogeneous_independent_rate(D, sx2, s2_k)
        best = min((0.5 * np.log2((1 + sx2 / D) / (1 - s / D)) for s in s2_k if s < D), default=np.inf)
        for start_seed in range(30):  # multi-start: the problem is not convex
            w0 = np.random.default_rng(start_seed).dirichlet(np.ones(3)) / D
            w0 = np.minimum(w0, 0.999 / s2_k)
            res = optimize.minimize(
                lambda w, sx2=sx2, s2_k=s2_k: np.sum(0.5 * np.log2((1 + sx2 * w)
                                                                    / np.clip(1 - s2_k * w, 1e-300, None))),
                w0, method="SLSQP", bounds=[(0, (1 - 1e-9) / s) for s in s2_k],
                constraints=[{"type": "eq", "fun": lambda w, D=D: w.sum() * D - 1}], options={"ftol": 1e-14})
            if res.success and abs(res.x.sum() * D - 1) < 1e-8:
                best = min(best, res.fun)
        assert np.isfinite(ours) and ours <= best * (1 + 1e-6)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: theory.sum_rate(0.1, 2.0, 1.0, 10), "s2/K"),
        (lambda: theory.sum_rate(0.05, 2.0, 1.0, 10), "s2/K"),
        (lambda: theory.sum_rate(0.2, -2.0, 1.0, 10), "sx2 must be >= 0"),
        (lambda: theory.independent_rate(0.2, 2.0, np.nan, 10), "s2 must be finite"),
        (lambda: theory.sum_rate(0.2, 2.0, 1.0, 0), "K must be >= 1"),
        (lambda: theory.waterfill(0.1, [0.5, 0.5]), "1/sum"),
        (lambda: theory.waterfill(0.5, [0.5, -1.0]), "s2_k must be > 0"),
        (lambda: theory.min_distortion([np.inf]), "finite"),
        (lambda: theory.estimate_variances([1.0], 1.0, 1), "K >= 2"),
    ],
)
def test_invalid_input_names_the_bound(call, message):
    with pytest.raises(ValueError, match=message.replace("/", "/").replace("(", r"\(")):
        call()

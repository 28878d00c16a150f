"""Theorem 2's region and the weighted-sum boundary of Lemma 1 / Problem 20."""

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flrd import theory


def random_point_of_F(rng, D, s2_k):
    """Random r in F(D): split the precision 1/D over workers within their caps."""
    while True:
        u = rng.dirichlet(np.ones(s2_k.size)) / D
        if np.all(u < 1.0 / s2_k):
            return -0.5 * np.log2(1.0 - s2_k * u)


@given(seed=st.integers(0, 10_000))
def test_every_vertex_sums_to_the_full_set_bound(seed):
    rng = np.random.default_rng(seed)
    K = int(rng.integers(2, 6))
    s2_k = rng.uniform(0.5, 2.0, K)
    sx2 = float(rng.uniform(0.1, 5.0))
    D = float(theory.min_distortion(s2_k)) * 3.0
    r = random_point_of_F(rng, D, s2_k)
    R = theory.region_vertex(r, sx2, s2_k, rng.permutation(K))
    assert R.sum() == pytest.approx(r.sum() + 0.5 * np.log2(1 + sx2 / D), rel=1e-10)
    assert theory.in_rate_region(R, r, D, sx2, s2_k)
    shaved = R.copy()
    k = int(rng.integers(K))
    shaved[k] -= min(1e-3, R[k] / 2)  # any decrease leaves the region
    assert not theory.in_rate_region(shaved, r, D, sx2, s2_k)


def test_vertex_for_the_weight_order_beats_every_other_vertex():
    rng = np.random.default_rng(7)
    s2_k = np.array([0.6, 1.0, 1.7, 0.9])
    D, sx2 = 0.6, 2.0
    r = random_point_of_F(rng, D, s2_k)
    weights = np.array([0.5, 3.0, 1.0, 2.0])
    best = weights @ theory.region_vertex(r, sx2, s2_k, np.argsort(-weights))
    for order in itertools.permutations(range(4)):
        assert best <= weights @ theory.region_vertex(r, sx2, s2_k, order) + 1e-12


def test_weighted_allocation_equal_weights_is_the_sum_rate_and_beats_vertices():
    s2_k = np.array([1.0, 1.0, 1.0])
    alloc = theory.weighted_sum_allocation(np.ones(3), 0.5, 2.0, s2_k)
    assert alloc.weighted_sum == pytest.approx(float(theory.sum_rate(0.5, 2.0, 1.0, 3)), rel=1e-7)
    weights = np.array([4.0, 1.0, 2.0])
    alloc = theory.weighted_sum_allocation(weights, 0.5, 2.0, s2_k)
    assert theory.in_rate_region(alloc.rates, alloc.noise_rates, 0.5, 2.0, s2_k, rtol=1e-7)
    rng = np.random.default_rng(1)
    for _ in range(50):
        r = random_point_of_F(rng, 0.5, s2_k)
        assert alloc.weighted_sum <= weights @ theory.region_vertex(r, 2.0, s2_k, np.argsort(-weights)) + 1e-7
    assert alloc.rates[0] < alloc.rates[2] < alloc.rates[1]  # expensive links send less


def test_region_rejects_r_outside_F():
    with pytest.raises(ValueError, match="F\\(D\\)"):
        theory.in_rate_region([5.0, 5.0], [0.1, 0.1], 0.6, 1.0, [1.0, 1.0])


def test_weighted_allocation_beats_random_points_of_F_on_random_instances():
    rng = np.random.default_rng(0)
    for _ in range(10):
        s2_k = rng.lognormal(0, 1, 3)
        D = float(theory.min_distortion(s2_k)) * rng.uniform(1.05, 3.0)
        weights, sx2 = rng.uniform(0.1, 3.0, 3), float(rng.lognormal(0, 1))
        alloc = theory.weighted_sum_allocation(weights, D, sx2, s2_k)
        order = np.argsort(-weights)
        sampled = min(weights @ theory.region_vertex(random_point_of_F(rng, D, s2_k), sx2, s2_k, order)
                      for _ in range(300))
        assert alloc.weighted_sum <= sampled * (1 + 1e-7)

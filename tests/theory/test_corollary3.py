"""THEORY.md §12: Corollary 3 has an interior optimum exactly when the criterion holds."""

import numpy as np
import pytest

from flrd import theory

HUGE_CAP = 1e8


def random_instances(seed, count):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        L, K = int(rng.integers(1, 4)), int(rng.integers(2, 50))
        n = rng.integers(1, 5000, L).astype(float)
        sx2, s2 = rng.lognormal(-6, 2, L), rng.lognormal(-6, 1.5, L)
        eps = float(10 ** rng.uniform(-4, 0))
        margin = theory.interior_optimum_margin(n, sx2, s2, K, beta=1.0, eps=eps)
        if abs(margin) > 0.2 * 2 * eps:  # leave out instances at the threshold
            out.append((n, sx2, s2, K, eps, margin))
    return out


@pytest.mark.parametrize("instance", random_instances(0, 8))
def test_interior_lambda_exactly_when_the_criterion_holds(instance):
    n, sx2, s2, K, eps, margin = instance
    choice = theory.choose_distortion(n, sx2, s2, K, R0=1.0, beta=1.0, eps=eps, lambda_cap=HUGE_CAP)
    assert (choice.lambda_ < HUGE_CAP / 10) == (margin > 0)


def test_issue_example_and_the_sqrt_k_threshold_for_a_large_layer():
    assert theory.interior_optimum_margin([1], [2.0], [1.0], 10, beta=1.0, eps=0.01) > 0
    n, K = 1e5, 10
    s2 = 1e-6
    for ratio, interior in [(0.9, False), (1.1, True)]:  # sx2 = ratio * s2 / sqrt(K)
        sx2 = ratio * s2 / np.sqrt(K)
        margin = theory.interior_optimum_margin([n], [sx2], [s2], K, beta=1.0, eps=1e-9)
        assert (margin > 0) == interior
        lam = theory.choose_distortion([n], [sx2], [s2], K, R0=1.0, beta=1.0, eps=1e-9, lambda_cap=HUGE_CAP).lambda_
        assert (lam < HUGE_CAP / 10) == interior


def test_cost_approaches_its_limit_from_below_iff_interior():
    """The expansion C = P + P (beta eps + S)/D_tot: compare a large D_tot with a larger one."""
    for sx2, interior in [(2.0, True), (0.2, False)]:
        D = np.array([1e3, 1e4])
        cost = theory.total_cost(D, [1], [sx2], [1.0], 10, R0=1.0, beta=1.0, eps=0.01, integer=False)
        assert (cost[0] < cost[1]) == interior

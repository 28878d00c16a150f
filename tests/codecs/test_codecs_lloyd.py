"""Lloyd–Max design: classical Gaussian tables, M-weighting, laws and caching."""

import numpy as np
import pytest
from scipy import integrate, stats

from flrd.codecs import design

SQRT2 = np.sqrt(2.0)  # gennorm(beta=2) with unit scale is N(0, 1/2)

# Max (1960) / Jayant & Noll: positive levels and MSE for a unit-variance Gaussian.
# Max's 4-bit MSE 0.009497 is slightly low; an independent plain-Lloyd run gives
# 0.0095010, hence the 1e-3 relative tolerance on MSE.
TABLE = {
    1: ([0.7979], 0.3634),
    2: ([0.4528, 1.510], 0.1175),
    3: ([0.2451, 0.7560, 1.344, 2.152], 0.03454),
    4: (None, 0.009497),
}


@pytest.mark.parametrize("bits", sorted(TABLE))
def test_m0_gaussian_reproduces_lloyd_max_table(bits):
    levels, mse = TABLE[bits]
    d = design("gennorm", 2.0, bits, 0.0)
    positive = d.levels[2 ** (bits - 1) :] * SQRT2
    if levels is not None:
        np.testing.assert_allclose(positive, levels, atol=6e-4)
    assert d.mse * 2 == pytest.approx(mse, rel=1e-3)
    assert d.weighted_distortion == pytest.approx(d.mse, rel=1e-12)


def test_levels_satisfy_lloyd_conditions_by_quadrature():
    """Independent check: centroids by numerical integration equal the levels."""
    m, d = 1.5, design("dweibull", 0.8, 3, 1.5)
    law = stats.dweibull(0.8)
    edges = np.concatenate([[-np.inf], d.boundaries, [np.inf]])
    for level, a, b in zip(d.levels, edges[:-1], edges[1:]):
        num = integrate.quad(lambda x: abs(x) ** m * x * law.pdf(x), a, b)[0]
        den = integrate.quad(lambda x: abs(x) ** m * law.pdf(x), a, b)[0]
        assert num / den == pytest.approx(level, rel=1e-6)
    np.testing.assert_allclose(d.boundaries, 0.5 * (d.levels[1:] + d.levels[:-1]), rtol=1e-10)


@pytest.mark.parametrize("family,shape", [("gennorm", 2.0), ("gennorm", 0.7), ("dweibull", 1.3)])
@pytest.mark.parametrize("bits", [1, 3, 5])
def test_positive_m_moves_levels_outward(family, shape, bits):
    previous = design(family, shape, bits, 0.0).levels
    for m in (1.0, 2.0, 4.0):
        levels = design(family, shape, bits, m).levels
        half = 2 ** (bits - 1)
        assert np.all(levels[half:] > previous[half:])
        previous = levels


def test_weighted_design_beats_m0_design_on_weighted_distortion():
    m = 2.0
    weighted = design("gennorm", 1.0, 3, m)
    law = stats.gennorm(1.0)

    def weighted_distortion(d):
        edges = np.concatenate([[-np.inf], d.boundaries, [np.inf]])
        return sum(
            integrate.quad(lambda x, y=y: abs(x) ** m * (x - y) ** 2 * law.pdf(x), a, b)[0]
            for y, a, b in zip(d.levels, edges[:-1], edges[1:])
        )

    assert weighted_distortion(weighted) == pytest.approx(weighted.weighted_distortion, rel=1e-6)
    assert weighted_distortion(weighted) < weighted_distortion(design("gennorm", 1.0, 3, 0.0))


def test_laplace_is_both_gennorm1_and_dweibull1():
    a, b = design("gennorm", 1.0, 4, 1.0), design("dweibull", 1.0, 4, 1.0)
    np.testing.assert_allclose(a.levels, b.levels, rtol=1e-9)


@pytest.mark.parametrize("bits", range(1, 9))
def test_design_is_symmetric_normalized_and_cached(bits):
    d = design("gennorm", 1.3, bits, 0.5)
    assert d.levels.size == 2**bits and d.boundaries.size == 2**bits - 1
    np.testing.assert_allclose(d.levels, -d.levels[::-1])
    assert np.all(np.diff(d.levels) > 0) and np.all(np.diff(d.boundaries) > 0)
    assert d.probs.sum() == pytest.approx(1.0, abs=1e-12)
    assert design("gennorm", 1.3, bits, 0.5) is d
    assert not d.levels.flags.writeable


def test_mse_falls_about_6db_per_bit_at_high_rate():
    mses = [design("gennorm", 2.0, b).mse for b in (6, 7, 8)]
    assert mses[0] / mses[1] == pytest.approx(4.0, rel=0.05)
    assert mses[1] / mses[2] == pytest.approx(4.0, rel=0.05)


@pytest.mark.parametrize("kwargs,message", [
    (dict(family="gennorm", shape=2.0, bits=9), "bits must be in 1..8, got 9"),
    (dict(family="gennorm", shape=2.0, bits=0), "bits must be in 1..8, got 0"),
    (dict(family="cauchy", shape=2.0, bits=2), "family must be one of"),
    (dict(family="gennorm", shape=-1.0, bits=2), "shape must be > 0"),
])
def test_design_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        design(**kwargs)


@pytest.mark.parametrize("bits", [1, 2, 3])
@pytest.mark.parametrize("floor", [0.5, 1.5])
def test_truncated_design_meets_lloyd_conditions_on_the_tail_by_quadrature(bits, floor):
    """With a floor the law is conditioned on |x| >= floor: probabilities sum to 1,
    levels are the conditional centroids of their cells and sit above the floor."""
    d = design("gennorm", 1.3, bits, floor=floor)
    law = stats.gennorm(1.3)
    tail = 2 * law.sf(floor)
    assert d.probs.sum() == pytest.approx(1.0) and np.all(d.levels[d.levels > 0] > floor)
    edges = np.concatenate([[floor], d.boundaries[d.boundaries > 0], [np.inf]])
    for level, (a, b) in zip(d.levels[d.levels > 0], zip(edges[:-1], edges[1:])):
        mass = integrate.quad(law.pdf, a, b)[0]
        assert level == pytest.approx(integrate.quad(lambda x: x * law.pdf(x), a, b)[0] / mass, rel=1e-6)
    mse = sum(integrate.quad(lambda x, y=y: (x - y) ** 2 * law.pdf(x), a, b)[0]
              for y, (a, b) in zip(d.levels[d.levels > 0], zip(edges[:-1], edges[1:])))
    assert d.mse == pytest.approx(2 * mse / tail, rel=1e-6)


@pytest.mark.parametrize("source, bits, bound", [("gauss", 1, 1.05), ("gauss", 2, 1.05), ("gauss", 3, 1.05),
                                                 ("t5", 1, 1.1), ("t5", 2, 1.3)])
@pytest.mark.parametrize("keep", [0.05, 0.2])
def test_m22_top_k_survivors_are_quantized_near_an_empirical_lloyd_max(source, bits, bound, keep):
    """M22 with a top-k cut fits its law to the whole layer and designs for the tail:
    its MSE on the survivors is within ``bound`` of a Lloyd-Max quantizer fitted to the
    survivors themselves (a law fitted to the survivors put levels into the hole
    around zero: 1.1-5.2x)."""
    from flrd.codecs import decode, get

    rng = np.random.default_rng(0)
    x = rng.standard_normal(100_000) if source == "gauss" else 0.01 * rng.standard_t(5, 100_000)
    kept = np.argsort(-np.abs(x))[: int(np.ceil(keep * x.size))]
    xh = decode(get("m22", bits=bits, keep_fraction=keep).encode(x))
    magnitude = np.abs(x[kept])
    levels = np.quantile(magnitude, (np.arange(2 ** (bits - 1)) + 0.5) / 2 ** (bits - 1))
    for _ in range(200):  # empirical Lloyd-Max on the survivors' magnitudes (symmetric)
        cell = np.searchsorted((levels[:-1] + levels[1:]) / 2, magnitude)
        levels = np.array([magnitude[cell == i].mean() for i in range(levels.size)])
    empirical = np.mean((magnitude - levels[np.searchsorted((levels[:-1] + levels[1:]) / 2, magnitude)]) ** 2)
    assert np.mean((xh[kept] - x[kept]) ** 2) <= bound * empirical

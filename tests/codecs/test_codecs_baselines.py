"""Codec-specific properties of M22, SignSGD, QSGD, TernGrad, Top-k, Rand-k and
natural compression."""

import math

import numpy as np
import pytest

from flrd.codecs import M22Codec, decode, design, get, majority_vote
from flrd.codecs.header import parse_payload
from flrd.codecs.indices import elias_fano_decode, elias_fano_encode, elias_fano_size, random_subset

RNG = np.random.default_rng(5)
G = RNG.standard_normal(1 << 15)


@pytest.mark.parametrize("bits,mse", [(1, 0.3634), (2, 0.1175), (3, 0.03454), (4, 0.0095)])
def test_m22_on_gaussian_matches_lloyd_max(bits, mse):
    codec = M22Codec(bits=bits, entropy_coded=False)
    payload = codec.encode(G)
    header, _ = parse_payload(payload, G.size)
    assert header.params[3] == pytest.approx(2.0, abs=0.05)  # fitted gennorm shape
    assert np.mean((decode(payload) - G) ** 2) == pytest.approx(mse, rel=0.04)
    assert 8 * len(payload) / G.size == pytest.approx(bits, abs=0.05)


def test_m22_entropy_coding_saves_bits_at_the_fitted_cell_probabilities():
    packed = M22Codec(bits=4, entropy_coded=False).encode(G)
    coded = M22Codec(bits=4).encode(G)
    probs = design("gennorm", 2.0, 4).probs
    entropy = -np.sum(probs * np.log2(probs))
    assert np.array_equal(decode(packed), decode(coded))
    assert 8 * len(coded) / G.size == pytest.approx(entropy, abs=0.05)
    assert len(coded) < 0.97 * len(packed)


def test_m22_weighting_and_dweibull_and_sparsification():
    heavy = RNG.standard_t(3, 1 << 14)
    plain, weighted = M22Codec(bits=2), M22Codec(bits=2, m=2.0)
    top = np.abs(heavy) > np.quantile(np.abs(heavy), 0.9)
    err = lambda c: (decode(c.encode(heavy)) - heavy) ** 2  # noqa: E731
    # M > 0 spends accuracy on large entries: their error drops, the plain MSE rises.
    assert err(weighted)[top].mean() < err(plain)[top].mean()
    assert err(weighted).mean() > err(plain).mean()
    assert np.mean(err(M22Codec(bits=3, family="dweibull"))) < np.mean(err(M22Codec(bits=1, family="dweibull")))
    sparse = M22Codec(bits=2, keep_fraction=0.05)
    xh = decode(sparse.encode(heavy))
    kept = np.flatnonzero(xh)
    assert kept.size <= math.ceil(0.05 * heavy.size)
    assert np.min(np.abs(heavy[kept])) >= np.quantile(np.abs(heavy), 0.95) - 1e-12


def test_m22_for_bits_below_one_sparsifies():
    codec = M22Codec.for_bits(0.3, G)
    assert codec.bits == 1 and codec.keep_fraction < 0.3
    assert 8 * len(codec.encode(G)) / G.size <= 0.3


@pytest.mark.parametrize("scale,expected", [("mean_abs", lambda x: np.mean(np.abs(x))),
                                            ("gaussian", lambda x: math.sqrt(2 / math.pi) * np.sqrt(np.mean(x**2)))])
def test_sign_scales_and_one_bit_per_entry(scale, expected):
    payload = get("sign", scale=scale).encode(G)
    xh = decode(payload)
    assert np.allclose(np.abs(xh), expected(G))
    assert np.array_equal(np.sign(xh), np.where(G >= 0, 1, -1))
    assert len(payload) - (G.size + 7) // 8 < 80


def test_majority_vote():
    votes = [np.array([1.0, -1.0, 1.0, 0.5]), np.array([1.0, 1.0, -1.0, -0.5]), np.array([-3.0, -2.0, 1.0, 0.0])]
    assert majority_vote(votes).tolist() == [1.0, -1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="at least one"):
        majority_vote([])
    with pytest.raises(ValueError, match="shape"):
        majority_vote([np.zeros(2), np.zeros(3)])


def test_qsgd_levels_are_multiples_of_norm_over_s():
    s = 5
    whole = decode(get("qsgd", levels=s, bucket_size=0).encode(G, seed=1))
    units = whole / (np.linalg.norm(G) / s)
    assert np.allclose(units, np.round(units), atol=1e-5) and np.max(np.abs(units)) <= s + 1e-5
    assert np.all(np.sign(whole[whole != 0]) == np.sign(G[whole != 0]))


@pytest.mark.parametrize("bucket", [7, 512, 2**14, 2**20])
def test_qsgd_buckets_use_their_own_norm_and_stay_unbiased_with_predicted_noise(bucket):
    """Each bucket of 512 is quantized against its own norm (Alistarh et al.), so a
    heavy-tailed layer is quantized far more finely than against the layer's norm."""
    x = np.random.default_rng(3).standard_t(3, 5000) * 0.01
    codec = get("qsgd", levels=4, bucket_size=bucket)
    xh = decode(codec.encode(x, seed=1))
    for start in range(0, x.size, bucket):
        part = slice(start, start + bucket)
        units = xh[part] / (np.linalg.norm(x[part]) / 4)
        assert np.allclose(units, np.round(units), atol=1e-4) and np.max(np.abs(units)) <= 4 + 1e-4
    runs = np.stack([decode(codec.encode(x, seed=s)) for s in range(300)])
    assert np.mean((runs - x) ** 2) == pytest.approx(codec.expected_noise_var(x), rel=0.05)
    assert abs(np.mean(runs - x)) < 4 * np.std(runs - x) / np.sqrt(runs.size)
    if bucket == 512:
        assert codec.expected_noise_var(x) < get("qsgd", levels=4, bucket_size=0).expected_noise_var(x) / 3


@pytest.mark.parametrize("bad", [-1, 2**31 + 1, 1.5])
def test_qsgd_bucket_size_names_its_bound(bad):
    with pytest.raises(ValueError, match="bucket_size"):
        get("qsgd", bucket_size=bad)


def test_terngrad_values_are_ternary_times_max():
    xh = decode(get("terngrad", clip_sigmas=0.0).encode(G, seed=2))
    assert set(np.unique(xh / np.max(np.abs(G)))) <= {-1.0, 0.0, 1.0}
    assert 8 * len(get("terngrad").encode(G, seed=2)) / G.size < 1.4  # entropy-coded ternary


def test_terngrad_clipping_scales_by_c_rms_and_cuts_the_variance():
    """Wen et al.'s clipping at 2.5 sigma: the scale is 2.5 RMS on heavy-tailed data and
    the measured MSE is several times lower than without clipping (and as predicted)."""
    x = np.random.default_rng(5).standard_t(3, 20_000)
    clipped, plain = get("terngrad"), get("terngrad", clip_sigmas=0.0)
    xh = decode(clipped.encode(x, seed=1))
    scale = 2.5 * np.sqrt(np.mean(x**2))
    assert set(np.unique(np.round(xh / scale, 12))) <= {-1.0, 0.0, 1.0}
    mse = {name: np.mean([np.mean((decode(c.encode(x, seed=s)) - x) ** 2) for s in range(5)])
           for name, c in (("clipped", clipped), ("plain", plain))}
    assert mse["plain"] > 3 * mse["clipped"]
    assert mse["clipped"] == pytest.approx(clipped.expected_noise_var(x), rel=0.03)


@pytest.mark.parametrize("bad", [-1.0, 0.5, float("nan"), float("inf")])
def test_terngrad_clip_names_its_bound(bad):
    with pytest.raises(ValueError, match="clip_sigmas"):
        get("terngrad", clip_sigmas=bad)


def test_topk_keeps_the_largest_exactly_with_cheap_indices():
    x = G.astype(np.float32)
    k = 300
    payload = get("topk", k=k).encode(x)
    xh = decode(payload)
    kept = np.flatnonzero(xh)
    assert set(kept) == set(np.argsort(-np.abs(x))[:k])
    assert np.array_equal(xh[kept], x[kept])
    index_bits = 8 * (len(payload) - 4 * k - 80) / k
    assert index_bits < 2 + math.log2(x.size / k) + 0.5


def test_randk_regenerates_its_index_set_and_scales_by_d_over_k():
    x = G[:1000]
    payload = get("randk", k=10).encode(x, seed=3)
    xh = decode(payload)
    kept = np.flatnonzero(xh)
    assert kept.size == 10 and np.allclose(xh[kept], x[kept] * 100, rtol=1e-6)
    assert len(payload) < 80 + 4 * 10  # only values travel
    other = np.flatnonzero(decode(get("randk", k=10).encode(x, seed=4)))
    assert not np.array_equal(kept, other)


def test_random_subset_is_uniform():
    counts = np.zeros(40)
    rng = np.random.default_rng(0)
    for _ in range(3000):
        idx = random_subset(40, 7, rng)
        assert idx.size == 7 and np.all(np.diff(idx) > 0)
        counts[idx] += 1
    expected = 3000 * 7 / 40
    assert np.max(np.abs(counts - expected)) < 5 * math.sqrt(expected)


@pytest.mark.parametrize("n,k", [(1, 1), (10, 10), (1000, 3), (1 << 17, 5000), (100, 0)])
def test_elias_fano_round_trip(n, k):
    idx = np.sort(np.random.default_rng(n).choice(n, k, replace=False))
    data = b"".join(elias_fano_encode(idx, n))
    assert len(data) == elias_fano_size(n, k)
    assert np.array_equal(elias_fano_decode(data, n, k), idx)


def test_natural_outputs_signed_powers_of_two():
    xh = decode(get("natural").encode(G, seed=1))
    mant, _ = np.frexp(np.abs(xh[xh != 0]))
    assert np.all(mant == 0.5) and np.all(np.sign(xh[xh != 0]) == np.sign(G[xh != 0]))
    ratio = np.abs(xh[xh != 0]) / np.abs(G[xh != 0])
    assert np.all((ratio > 0.5) & (ratio < 2))
    assert 8 * len(get("natural").encode(G)) / G.size < 5  # sign + coded exponent
    raw = get("natural", entropy_coded=False).encode(G)
    assert len(raw) > G.size * 9 / 8


def test_natural_handles_a_float64_dynamic_range_beyond_255_octaves():
    """Exponents span 255 octaves below the largest; smaller entries round
    unbiasedly to 0 or the smallest representable power."""
    x = np.array([2.0**200, 2.0**-100, -3.0, 0.0])
    runs = np.stack([decode(get("natural").encode(x, seed=s)) for s in range(400)])
    assert np.all(runs[:, 0] == 2.0**200) and np.all(runs[:, 3] == 0)
    assert np.all(np.isin(runs[:, 2], [-2.0, -4.0])) and runs[:, 2].mean() == pytest.approx(-3.0, abs=0.15)
    assert np.all(np.isin(runs[:, 1], [0.0, 2.0 ** (201 - 255 + 1)]))

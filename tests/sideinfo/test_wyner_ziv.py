"""Wyner-Ziv codec: exactness (hence unbiasedness), overload detection, fuzzing."""

import math
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flrd.codecs import CodecError, DitheredCodec, decode
from flrd.sideinfo import wyner_ziv as wz
from flrd.sideinfo.ldpc import SyndromeCode

N = 4096
RNG = np.random.default_rng(3)
W = 4.0 * RNG.standard_normal(N)
Y = W + RNG.standard_normal(N)
STEP, COND = 2.0, 1.0
PAYLOAD, REC = wz.encode_reconstruct(Y, STEP, COND, seed=11)
FUZZ = settings(derandomize=True, deadline=None, database=None, max_examples=300,
                suppress_health_check=list(HealthCheck))


def test_decode_equals_encoder_reconstruction_and_is_dithered_test_channel():
    out = wz.decode(PAYLOAD, W, N)
    assert out.ok.all() and np.array_equal(out.values, REC)
    err = out.values - Y
    assert np.all(np.abs(err) <= STEP / 2 + 1e-12)  # uniform dither error, never an overload jump
    assert abs(err.var() / (STEP**2 / 12) - 1) < 0.06
    assert abs(err.mean()) < 4 * math.sqrt(STEP**2 / 12 / N)


def test_unbiased_over_dither_seeds():
    """E[U | y] = y: the average over seeds converges to y at rate 1/sqrt(seeds); a
    failed block (short codes fail a few % of the time) is re-sent independently."""
    y, w = Y[:512], W[:512]
    recs, failures = [], 0
    for seed in range(64):
        payload, rec = wz.encode_reconstruct(y, STEP, COND, seed=seed)
        out = wz.decode(payload, w, y.size)
        if out.ok.all():
            assert np.array_equal(out.values, rec)
            recs.append(out.values)
        else:
            failures += 1
            recs.append(decode(DitheredCodec(STEP**2 / 12).encode(y, seed=seed)))
    assert failures <= 6
    mean_err = np.mean(recs, axis=0) - y
    assert np.mean(mean_err**2) < 2 * (STEP**2 / 12) / 64
    assert abs(np.polyfit(y, np.mean(recs, axis=0), 1)[0] - 1) < 0.01


def test_rate_below_independent_dithered():
    assert 8 * len(PAYLOAD) / N < wz.dithered_rate(math.sqrt(17.0) / STEP) - 0.8


@pytest.mark.parametrize("shift", [3.0, 60.0])
def test_overload_detected_never_silent(shift):
    """Side information far from the data: every block reports failure and stays NaN."""
    out = wz.decode(PAYLOAD, W + shift * STEP, N)
    assert not out.ok.any() and np.isnan(out.values).all() and out.failed_coords == N


def test_sparse_outliers_detected():
    y = Y.copy()
    y[[5, 900]] += 40.0  # far outside the window of the planned spread
    payload, rec = wz.encode_reconstruct(y, STEP, COND, seed=2)
    out = wz.decode(payload, W, N)
    assert not out.ok.any()


def test_multi_block_failure_is_per_block():
    n = wz.BLOCK + 1000
    rng = np.random.default_rng(0)
    w = rng.standard_normal(n) * 3
    y = w + 0.3 * rng.standard_normal(n)
    payload, rec = wz.encode_reconstruct(y, 1.0, 0.3, seed=1)
    side = w.copy()
    side[wz.BLOCK :] += 25.0  # ruin only the second block's side information
    out = wz.decode(payload, side, n)
    assert out.ok.tolist() == [True, False]
    assert np.array_equal(out.values[: wz.BLOCK], rec[: wz.BLOCK]) and np.isnan(out.values[wz.BLOCK :]).all()


def test_plane_model():
    h, err = wz.plane_entropies(4.0)
    assert abs(sum(h) - math.log2(math.sqrt(2 * math.pi * math.e) * 4.0)) < 0.01  # high-resolution limit
    assert all(0 <= e <= 0.5 for e in err) and all(0 <= x <= 1 for x in h)
    assert wz.wz_rate(0.2) < wz.wz_rate(0.5) < wz.wz_rate(1.0)


def test_invalid_parameters():
    with pytest.raises(ValueError, match="positive and finite"):
        wz.encode(Y, 0.0, 1.0, seed=0)
    with pytest.raises(ValueError, match="code this layer independently"):
        wz.encode(Y, 1e-3, 1.0, seed=0)
    with pytest.raises(ValueError, match="keep_prob"):
        wz.encode(Y, STEP, COND, seed=0, keep_prob=0.0)
    with pytest.raises(ValueError, match="plane rates"):
        wz.encode(Y, STEP, COND, seed=0, rates=(1.5,))
    with pytest.raises(ValueError, match="finite"):
        wz.encode(np.array([np.nan]), 1.0, 1.0, seed=0)
    with pytest.raises(CodecError, match="expected 4095"):
        wz.decode(PAYLOAD, W[:-1], N - 1)


def test_ldpc_deterministic_and_recovers_known_bits():
    a, b = SyndromeCode.random(1000, 300, 5), SyndromeCode.random(1000, 300, 5)
    assert np.array_equal(a.check_vars, b.check_vars)
    bits = np.random.default_rng(0).random(1000) < 0.5
    out, ok = a.decode(a.syndrome(bits), np.where(bits, -20.0, 20.0))
    assert ok and np.array_equal(out, bits)


def _decode_or_codec_error(payload):
    try:
        out = wz.decode(payload, W, N)
    except CodecError:
        return None
    assert out.values.size == N and out.ok.size == 1
    if out.ok.all():
        assert np.isfinite(out.values).all()
    return out


@FUZZ
@given(st.data())
def test_fuzz_truncation_and_bit_flips(data):
    payload = bytearray(PAYLOAD)
    if data.draw(st.booleans()):
        payload = payload[: data.draw(st.integers(0, len(payload) - 1))]
    else:
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(payload) - 1))
            payload[i] ^= 1 << data.draw(st.integers(0, 7))
    _decode_or_codec_error(bytes(payload))


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(blob):
    _decode_or_codec_error(blob)


@FUZZ
@given(
    n=st.one_of(st.just(N), st.integers(0, 2**64 - 1)), step=st.floats(allow_nan=True, allow_infinity=True, width=64),
    cond=st.floats(allow_nan=True, allow_infinity=True, width=64),
    keep=st.floats(allow_nan=True, allow_infinity=True, width=64), tail_df=st.integers(0, 255),
    rates=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=0, max_size=20),
    planes=st.integers(0, 255), body=st.integers(0, 5000),
)
def test_fuzz_header_fields(n, step, cond, keep, tail_df, rates, planes, body):
    head = struct.pack("<2sBQddQdBB", b"WZ", 2, n, step, cond, 0, keep, tail_df, planes)
    _decode_or_codec_error(head + struct.pack(f"<{len(rates)}f", *rates) + bytes(body))


def test_parse_header_reads_what_encode_wrote():
    payload = wz.encode(Y, STEP, COND, seed=3, keep_prob=0.5, tail_df=6, rates=(0.7, 0.2))
    head = wz.parse_header(payload, N)
    assert (head.size, head.step, head.cond_std, head.seed, head.keep_prob, head.tail_df) == (N, STEP, COND, 3, 0.5, 6)
    assert head.rates == (float(np.float32(0.7)), float(np.float32(0.2)))
    assert 8 * len(payload) == wz.payload_bits(head.rates, wz._kept(3, N, 0.5).size)


def test_subset_estimate_is_unbiased_with_the_control_variate_noise():
    """Kept coordinates are corrected by U, the others keep w: E[estimate | y] = y and
    the noise is (1/p - 1) E(y - w)^2 + D_q / p."""
    n, p, step = 20_000, 0.3, 2.0
    rng = np.random.default_rng(1)
    w = 3.0 * rng.standard_normal(n)
    y = w + rng.standard_normal(n)
    outs = []
    for seed in range(40):
        payload, rec = wz.encode_reconstruct(y, step, 1.0, seed=seed, keep_prob=p)
        out = wz.decode(payload, w, n)
        assert out.ok.all() and np.array_equal(out.dithered, rec, equal_nan=True)
        assert abs(out.coded / n - p) < 0.02
        outs.append(out.values)
    est = np.array(outs)
    expected_noise = (1 / p - 1) * 1.0 + step**2 / 12 / p
    assert abs(np.mean((est - y) ** 2) / expected_noise - 1) < 0.03
    assert abs(np.mean(est - y)) < 5 * np.sqrt(expected_noise / (40 * n))  # unbiased within 5 standard errors
    assert abs(out.noise_var / expected_noise - 1) < 0.1  # the decoder's own estimate of it


def test_per_coordinate_side_variance_decodes_what_a_flat_model_cannot():
    """Residuals whose spread varies 30x across coordinates: the plane rates for that
    mixture decode with per-coordinate LLRs (``side_var``)."""
    from flrd.sideinfo.allocation import mixture_rates

    n = 30_000
    rng = np.random.default_rng(2)
    scale = np.where(np.arange(n) % 3 == 0, 3.0, 0.1)
    w = rng.standard_normal(n)
    y = w + scale * rng.standard_normal(n)
    step = 2.0
    rates = mixture_rates(scale / step, n)
    payload, rec = wz.encode_reconstruct(y, step, float(np.sqrt(np.mean(scale**2))), seed=4, rates=rates)
    assert wz.decode(payload, w, n, side_var=scale**2).ok.all()
    assert not wz.decode(payload, w, n).ok.all()  # the flat model's LLRs: too confident where wide


def test_student_t_model_codes_heavier_tails():
    h_gauss, e_gauss = wz.plane_entropies(0.8)
    h_t, e_t = wz.plane_entropies(0.8, tail_df=6)
    assert len(h_t) > len(h_gauss) and e_t[3] > 10 * e_gauss[3]  # more planes carry errors
    rng = np.random.default_rng(5)
    n = 30_000
    w = rng.standard_normal(n)
    y = w + 0.8 * rng.standard_t(6, n) / np.sqrt(1.5)
    for seed in range(3):
        assert wz.decode(wz.encode(y, 1.0, 0.8, seed=seed, tail_df=6), w, n).ok.all()
        assert not wz.decode(wz.encode(y, 1.0, 0.8, seed=seed), w, n).ok.any()  # the Gaussian model's rates fail
    with pytest.raises(ValueError, match="tail_df"):
        wz.encode(y, 2.0, 0.8, seed=1, tail_df=4)

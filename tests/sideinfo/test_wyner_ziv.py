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
    cond=st.floats(allow_nan=True, allow_infinity=True, width=64), planes=st.integers(0, 255),
    checks=st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=8),
)
def test_fuzz_header_fields(n, step, cond, planes, checks):
    head = struct.pack("<2sBQddQBI", b"WZ", 1, n, step, cond, 0, planes, wz.BLOCK)
    body = struct.pack(f"<{len(checks)}I", *checks)
    _decode_or_codec_error(head + body + bytes(64))

"""The default codec near the bound (issue 9's done-when), the message format, the RNG."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flrd.codecs import CodecError, decode, get
from flrd.codecs.message import decode_update, encode_update
from flrd.codecs.rate_curve import bits_per_coord, bound_bits, noise_for_bits
from flrd.codecs.rng import philox_numpy, philox_torch
from flrd.protocol import CompressionRequest

D = 2**20
X = np.random.default_rng(0).standard_normal(D).astype(np.float32)
MAX_RATIO = {0.003: 2.3, 0.01: 2.2, 0.05: 2.15, 0.1: 2.05, 0.25: 1.85, 0.5: 1.55, 1.0: 1.3}


@pytest.mark.parametrize("bits", sorted(MAX_RATIO))
def test_default_codec_meets_the_done_when_table(bits):
    target = noise_for_bits(bits)
    request = CompressionRequest(codec="dithered", noise_var=(target,), seed=11)
    sent = encode_update({"x": X}, request, node_id=2)
    got = decode_update(sent.payload, request, node_id=2, layout={"x": (D,)}).arrays["x"]
    x = X.astype(np.float64)
    measured = float(np.mean((got - x) ** 2))
    ratio = 8 * len(sent.payload) / D / float(bound_bits(1 / measured))
    slope = float(got @ x / (x @ x))
    assert ratio <= MAX_RATIO[bits]
    assert abs(slope - 1) <= max(0.02, 4 * np.sqrt(target / D))
    assert 0.85 <= measured / target <= 1.10


def test_the_rate_curve_predicts_actual_encodes():
    x = X[: 2**18]
    for snr in (0.004, 0.05, 0.3, 1.0, 3.0, 30.0):
        request = CompressionRequest(codec="dithered", noise_var=(1 / snr,), seed=1)
        body = encode_update({"x": x}, request, node_id=0).body_bytes
        assert 8 * body / x.size == pytest.approx(float(bits_per_coord(1 / snr, snr)), rel=0.05)


def test_numpy_and_torch_dithers_are_bit_identical():
    for key, n in ((0, 1), (2**64 - 1, 4099), (123456789, 70000)):
        np.testing.assert_array_equal(philox_torch(key, n).numpy().view(np.uint64), philox_numpy(key, n))
    np.testing.assert_array_equal(philox_torch(5, 8, start=4).numpy().view(np.uint64), philox_numpy(5, 12)[4:])


@pytest.mark.parametrize("noise_var", [30.0, 0.1])  # sparse and plain
def test_torch_tensors_encode_to_the_same_bytes(noise_var):
    x = torch.from_numpy(X[:100_000].copy())
    request = CompressionRequest(codec="dithered", noise_var=(noise_var,), seed=4)
    assert encode_update({"x": x}, request, node_id=1).payload == \
        encode_update({"x": X[:100_000]}, request, node_id=1).payload


SMALL = {"w1": (16, 40), "b1": (16,), "w2": (5, 16), "b2": (2,)}  # 738 parameters


def _small_update(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (0.01 * rng.standard_normal(s)).astype(np.float32) for k, s in SMALL.items()}


@pytest.mark.parametrize("snr", [0.004, 0.1, 1.0, 10.0])
def test_a_738_parameter_model_pays_at_most_16_bytes_of_framing(snr):
    update = _small_update()
    assert sum(v.size for v in update.values()) == 738
    request = CompressionRequest(codec="dithered", noise_var=tuple(1e-4 / snr for _ in SMALL), seed=9)
    sent = encode_update(update, request, node_id=3)
    got = decode_update(sent.payload, request, node_id=3, layout=SMALL)
    assert sent.framing_bytes + sent.stats_bytes <= min(16, 8 + len(SMALL))
    assert (got.framing_bytes, got.stats_bytes) == (sent.framing_bytes, sent.stats_bytes)
    assert got.framing_bytes + got.stats_bytes + got.body_bytes == len(sent.payload)


def test_decoding_against_the_wrong_request_or_node_is_refused():
    update = _small_update()
    request = CompressionRequest(codec="dithered", noise_var=(1e-4,) * 4, seed=9)
    payload = encode_update(update, request, node_id=3).payload
    with pytest.raises(CodecError, match="check"):
        decode_update(payload, request, node_id=4, layout=SMALL)
    with pytest.raises(CodecError, match="check"):
        decode_update(payload, CompressionRequest(codec="dithered", noise_var=(2e-4,) * 4, seed=9),
                      node_id=3, layout=SMALL)


def _refit_check(payload: bytes, request: CompressionRequest, node_id: int) -> bytes:
    """The payload with a valid check (so fuzzing reaches past it)."""
    from flrd.codecs import message

    context = message._context(request, node_id, list(SMALL.values()))
    return payload[:1] + message._check(context, payload[3:]) + payload[3:]


REQUESTS = [CompressionRequest(codec="dithered", noise_var=(1e-4,) * 4, seed=1),
            CompressionRequest(codec="dithered", relative_noise=0.1, seed=1),
            CompressionRequest(codec="qsgd", bits=2.0, seed=1),
            CompressionRequest(codec="dithered", noise_var=(0.0, 1e-4, 0.0, 1e-6), seed=1)]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(range(len(REQUESTS))), st.binary(max_size=400), st.integers(0, 400))
def test_fuzzed_messages_raise_only_codec_error(which, noise, cut):
    request = REQUESTS[which]
    payload = encode_update(_small_update(), request, node_id=1).payload
    for candidate in (noise, payload[:cut], payload[:3] + noise, _refit_check(payload[:3] + noise, request, 1)):
        try:
            got = decode_update(candidate, request, node_id=1, layout=SMALL)
        except CodecError:
            continue
        assert [a.shape for a in got.arrays.values()] == list(SMALL.values())


def test_a_header_declaring_an_impossible_shape_is_a_codec_error():
    payload = bytearray(get("float32").encode(np.zeros((0, 2), np.float32)))
    struct.pack_into("<Q", payload, 8 + 8, 2**63)  # second dimension
    payload[-4:] = struct.pack("<I", zlib.crc32(bytes(payload[:-4])))
    with pytest.raises(CodecError):
        decode(bytes(payload))


def test_non_finite_layers_are_named():
    update = _small_update()
    update["b1"][3] = np.nan
    with pytest.raises(ValueError, match="non-finite update in layer 'b1'"):
        encode_update(update, REQUESTS[0], node_id=1)

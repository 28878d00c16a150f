"""Malformed payloads: every decoder must raise CodecError and nothing else.

Hypothesis runs derandomized (reproducible) with a few thousand cases in total:
truncations, bit flips and random bytes (caught by framing and CRC32) and
CRC-resealed mutations of every header field and body byte (caught by the codecs'
own validation, or decoded to some valid array)."""

import math
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flrd.codecs import CODECS, CodecError, decode, get
from flrd.codecs.header import VERSION

RNG = np.random.default_rng(1)
X = RNG.standard_t(4, 96).astype(np.float32)
OUTLIER = X.copy()
OUTLIER[5] = 1e6
SAMPLES = {
    "float32": [get("float32").encode(X)],
    "dithered": [get("dithered", noise_var=0.01).encode(X, seed=3), get("dithered", noise_var=1e-6).encode(OUTLIER)],
    "m22": [get("m22", bits=3).encode(X), get("m22", bits=5, entropy_coded=False, keep_fraction=0.3).encode(X)],
    "sign": [get("sign").encode(X)],
    "qsgd": [get("qsgd", levels=6).encode(X, seed=1)],
    "terngrad": [get("terngrad").encode(X, seed=2)],
    "topk": [get("topk", k=9, value_dtype="float16").encode(X)],
    "topk-global": [get("topk-global", k=5).encode(X)],
    "randk": [get("randk", k=9).encode(X, seed=4)],
    "natural": [get("natural").encode(X, seed=5), get("natural", entropy_coded=False).encode(X, seed=5)],
}
MAX_ELEMENTS = 4096
_BASE = settings(derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def fuzz(examples: int) -> settings:
    return settings(_BASE, max_examples=examples)


def reseal(payload: bytes) -> bytes:
    """Replace the trailing CRC so the mutation reaches the codec's own checks."""
    return payload[:-4] + struct.pack("<I", zlib.crc32(payload[:-4]))


def decode_or_codec_error(payload):
    try:
        out = decode(payload, max_elements=MAX_ELEMENTS)
    except CodecError as err:
        assert not str(err).startswith("undetected"), err  # validation missed a case
        return None
    assert isinstance(out, np.ndarray) and out.size <= MAX_ELEMENTS
    return out


def pick(data, name):
    return data.draw(st.sampled_from(SAMPLES[name]))


def test_every_codec_is_fuzzed():
    assert set(SAMPLES) == set(CODECS)
    for payloads in SAMPLES.values():
        for payload in payloads:
            decode(payload)


@pytest.mark.parametrize("name", sorted(SAMPLES))
@fuzz(100)
@given(data=st.data())
def test_truncation_is_detected(name, data):
    payload = pick(data, name)
    cut = data.draw(st.integers(0, len(payload) - 1))
    with pytest.raises(CodecError):
        decode(payload[:cut])


@pytest.mark.parametrize("name", sorted(SAMPLES))
@fuzz(100)
@given(data=st.data())
def test_bit_flips_are_detected(name, data):
    payload = bytearray(pick(data, name))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(payload) - 1), st.integers(0, 7)),
                               min_size=1, max_size=4, unique=True))
    for pos, bit in flips:
        payload[pos] ^= 1 << bit
    with pytest.raises(CodecError):
        decode(bytes(payload))


@fuzz(400)
@given(blob=st.binary(max_size=400), prefix=st.booleans())
def test_random_bytes_are_rejected(blob, prefix):
    payload = (b"FLRD" + bytes([VERSION]) + blob) if prefix else blob
    with pytest.raises(CodecError):
        decode(payload)


@pytest.mark.parametrize("name", sorted(SAMPLES))
@fuzz(300)
@given(data=st.data())
def test_resealed_byte_mutations_never_escape_codec_error(name, data):
    payload = bytearray(pick(data, name)[:-4])
    action = data.draw(st.sampled_from(["set", "truncate", "extend"]))
    if action == "set":
        for _ in range(data.draw(st.integers(1, 4))):
            payload[data.draw(st.integers(0, len(payload) - 1))] = data.draw(st.integers(0, 255))
    elif action == "truncate":
        payload = payload[: data.draw(st.integers(0, len(payload)))]
    else:
        payload += data.draw(st.binary(min_size=1, max_size=16))
    decode_or_codec_error(bytes(payload) + struct.pack("<I", zlib.crc32(payload)))


def fields(payload):
    """Byte offsets of the header fields of a valid payload."""
    ndim = payload[7]
    nparams = payload[8 + 8 * ndim + 8]
    return ndim, nparams, 8 + 8 * ndim + 9


SPECIAL = [0.0, -1.0, 0.5, 1.0, 2.0, 3.0, 7.0, 8.0, 9.0, 255.0, 256.0, 1e300, -1e300, 2.0**53, 2.0**64,
           float("nan"), float("inf"), -float("inf"), 1e-300, 32767.0, 65535.0]


@pytest.mark.parametrize("name", sorted(SAMPLES))
@fuzz(300)
@given(data=st.data())
def test_resealed_header_field_mutations(name, data):
    payload = bytearray(pick(data, name))
    ndim, nparams, params_at = fields(payload)
    field = data.draw(st.sampled_from(["codec", "dtype", "ndim", "shape", "nparams", "param", "body_len", "version"]))
    if field == "codec":
        payload[5] = data.draw(st.integers(0, 255))
    elif field == "dtype":
        payload[6] = data.draw(st.integers(0, 255))
    elif field == "version":
        payload[4] = data.draw(st.integers(0, 255))
    elif field == "ndim":
        payload[7] = data.draw(st.integers(0, 255))
    elif field == "shape" and ndim:
        dim = data.draw(st.integers(0, ndim - 1))
        value = data.draw(st.one_of(st.integers(0, 5000), st.sampled_from([2**32, 2**40, 2**63, 2**64 - 1])))
        struct.pack_into("<Q", payload, 8 + 8 * dim, value)
    elif field == "nparams":
        payload[params_at - 1] = data.draw(st.integers(0, 255))
    elif field == "param" and nparams:
        which = data.draw(st.integers(0, nparams - 1))
        value = data.draw(st.one_of(st.sampled_from(SPECIAL), st.floats(allow_nan=True, allow_infinity=True)))
        struct.pack_into("<d", payload, params_at + 8 * which, value)
    elif field == "body_len":
        struct.pack_into("<Q", payload, params_at + 8 * nparams, data.draw(st.integers(0, 2**64 - 1)))
    decode_or_codec_error(reseal(bytes(payload)))


@pytest.mark.parametrize("payload,message", [
    (b"XLRD" + SAMPLES["sign"][0][4:], "wrong magic"),
    (SAMPLES["sign"][0][:4] + bytes([VERSION + 1]) + SAMPLES["sign"][0][5:],
     f"unsupported format version {VERSION + 1}"),
    (reseal(SAMPLES["sign"][0][:5] + b"\xc8" + SAMPLES["sign"][0][6:]), "unknown codec id 200"),
    (SAMPLES["sign"][0][:-1] + bytes([SAMPLES["sign"][0][-1] ^ 1]), "CRC32 mismatch"),
    (b"", "payload too short"),
    ("text", "payload must be bytes-like"),
])
def test_specific_framing_errors(payload, message):
    with pytest.raises(CodecError, match=message):
        decode(payload)


@pytest.mark.parametrize("name", sorted(n for n in SAMPLES if n not in ("dithered", "randk")))
def test_huge_declared_shape_fails_before_allocating(name):
    """Bodies bound the element count for every codec except dithered (an
    entropy-coded body can be tiny for any size) and Rand-k (only the k values
    travel); for those two, max_elements is the bound (next test)."""
    payload = bytearray(SAMPLES[name][0])
    struct.pack_into("<Q", payload, 8, 2**40)
    tracemalloc.start()
    with pytest.raises(CodecError):
        decode(reseal(bytes(payload)), max_elements=2**62)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20


@pytest.mark.parametrize("name", ["dithered", "randk"])
def test_max_elements_bounds_codecs_whose_body_does_not(name):
    payload = bytearray(SAMPLES[name][0])
    struct.pack_into("<Q", payload, 8, 2**40)
    with pytest.raises(CodecError, match="exceed max_elements"):
        decode(reseal(bytes(payload)))


def test_non_finite_parameter_is_rejected():
    payload = bytearray(SAMPLES["sign"][0])
    _, _, params_at = fields(payload)
    struct.pack_into("<d", payload, params_at + 8, math.nan)
    with pytest.raises(CodecError, match="non-finite header parameter"):
        decode(reseal(bytes(payload)))

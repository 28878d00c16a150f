"""Round trips on random and adversarial inputs, the public API and the header."""

import struct
import subprocess
import sys
import tracemalloc
import zlib

import numpy as np
import pytest

from flrd.codecs import CODECS, CodecError, codec_class, decode, get
from flrd.codecs.header import MAGIC, VERSION, parse_payload

RNG = np.random.default_rng(7)
BASE = RNG.standard_normal((3, 5, 7))
INPUTS = {
    "normal32": BASE.astype(np.float32),
    "normal16": BASE.astype(np.float16),
    "normal64": BASE,
    "zeros": np.zeros((4, 6), np.float32),
    "constant": np.full(50, -3.25, np.float64),
    "huge": BASE * 1e30,
    "tiny": (BASE * 1e-30).astype(np.float32),
    "one": np.array([0.7], np.float32),
    "empty": np.zeros((0, 4), np.float32),
    "scalar": np.array(1.5),
}


def make(name, x):
    cls = codec_class(name)
    return cls.for_bits(6.0, x) if name in ("dithered", "m22", "qsgd", "topk", "topk-global", "randk") else cls()


def nmse(x, xh):
    ref = float(np.sum(x.astype(float) ** 2))
    if not ref:
        return float(np.sum(xh.astype(float) ** 2))
    return float(np.sum((xh.astype(float) - x.astype(float)) ** 2)) / ref


@pytest.mark.parametrize("name", sorted(CODECS))
@pytest.mark.parametrize("kind", sorted(INPUTS))
def test_round_trip_keeps_dtype_shape_and_is_reproducible(name, kind):
    x = INPUTS[kind]
    codec = make(name, x)
    payload = codec.encode(x, seed=99)
    xh = decode(payload)
    assert xh.dtype == x.dtype and xh.shape == x.shape
    assert np.isfinite(xh).all()
    assert payload == codec.encode(x, seed=99)  # the seed fixes all randomness
    if kind == "zeros":
        assert np.all(np.abs(xh) <= 1e-100)


@pytest.mark.parametrize("name", sorted(CODECS))
def test_scale_invariance_from_1e_minus_30_to_1e30(name):
    """Huge and tiny layers lose no more (relative) accuracy than unit-scale ones."""
    x = BASE.reshape(-1)
    errors = []
    for scale in (1.0, 1e30, 1e-30):
        xs = x * scale
        errors.append(nmse(xs, decode(make(name, xs).encode(xs, seed=5))))
    assert errors[1] == pytest.approx(errors[0], rel=0.35, abs=1e-12)
    assert errors[2] == pytest.approx(errors[0], rel=0.35, abs=1e-12)


@pytest.mark.parametrize("name,exact", [("float32", ["normal32", "normal16", "constant", "one"]),
                                        ("sign", ["constant", "one"]),
                                        ("terngrad", ["constant", "one"]),
                                        ("natural", ["one", "scalar"])])
def test_lossless_cases(name, exact):
    for kind in exact:
        x = INPUTS[kind]
        if name == "natural":
            x = np.ldexp(np.sign(x), np.round(np.log2(np.abs(x))).astype(int)).astype(x.dtype)
        assert np.array_equal(decode(get(name).encode(x)), x), kind


def test_get_and_codec_class_and_unknown_names():
    assert isinstance(get("qsgd", levels=3), codec_class("qsgd"))
    assert set(CODECS) == {"float32", "dithered", "m22", "sign", "qsgd", "terngrad", "topk", "topk-global", "randk",
                           "natural"}
    with pytest.raises(ValueError, match="unknown codec 'zip'"):
        get("zip")


@pytest.mark.parametrize("name,params,message", [
    ("m22", {"bits": 9}, "bits must be in 1..8, got 9"),
    ("m22", {"m": -1}, r"m must be in \[0, 8.0\], got -1"),
    ("m22", {"family": "t"}, "family must be one of"),
    ("m22", {"keep_fraction": 0}, r"keep_fraction must be in \(0, 1\], got 0"),
    ("dithered", {"noise_var": 0.0}, "noise_var must be a finite number > 0, got 0.0"),
    ("dithered", {"noise_var": float("nan")}, "noise_var must be a finite number > 0"),
    ("qsgd", {"levels": 0}, "levels must be in 1..32767, got 0"),
    ("topk", {"fraction": 1.5}, r"fraction must be in \(0, 1\], got 1.5"),
    ("randk", {"k": 0}, "k must be an int >= 1, got 0"),
    ("randk", {"value_dtype": "int8"}, "value_dtype must be one of"),
    ("sign", {"scale": "max"}, "scale must be one of"),
])
def test_invalid_parameters_name_the_bound(name, params, message):
    with pytest.raises(ValueError, match=message):
        get(name, **params)


@pytest.mark.parametrize("name", sorted(CODECS))
def test_encode_rejects_bad_input(name):
    codec = make(name, BASE)
    for bad in (np.array([1.0, np.nan]), np.array([np.inf, 0.0], np.float32)):
        with pytest.raises(ValueError, match="must be finite"):
            codec.encode(bad)
    with pytest.raises(ValueError, match="dtype must be float16, float32 or float64"):
        codec.encode(np.arange(3))
    for seed in (-1, 2**64, 1.5):
        with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*64\)"):
            codec.encode(BASE, seed=seed)


def test_float32_codec_rejects_values_beyond_float32():
    with pytest.raises(ValueError, match="float32 codec: |value| must be <="):
        get("float32").encode(np.array([1e300]))


def test_header_layout():
    x = np.arange(6, dtype=np.float64).reshape(2, 3)
    payload = get("sign").encode(x, seed=77)
    magic, version, codec_id, dtype_code, ndim = struct.unpack_from("<4sBBBB", payload)
    assert (magic, version, codec_id, dtype_code, ndim) == (MAGIC, VERSION, 4, 3, 2)
    assert struct.unpack_from("<2QQB", payload, 8) == (2, 3, 77, 2)  # shape, seed, #params
    kind, scale = struct.unpack_from("<2d", payload, 33)
    assert (kind, scale) == (0.0, pytest.approx(2.5))
    (body_len,) = struct.unpack_from("<Q", payload, 49)
    assert body_len == 1 and len(payload) == 57 + body_len + 4
    assert struct.unpack("<I", payload[-4:])[0] == zlib.crc32(payload[:-4])
    header, body = parse_payload(payload, 100)
    assert header.shape == (2, 3) and header.seed == 77 and bytes(body) == bytes([0b11111100])


def test_payload_may_be_any_contiguous_byte_buffer():
    payload = get("sign").encode(np.ones(9))
    as_array = np.frombuffer(payload, dtype=np.uint8)
    assert decode(as_array).tolist() == decode(memoryview(payload)).tolist() == [1.0] * 9
    with pytest.raises(CodecError, match="bytes-like"):
        decode(as_array[::2])


def test_max_elements_is_enforced():
    payload = get("float32").encode(np.zeros(100, np.float32))
    assert decode(payload, max_elements=100).shape == (100,)
    with pytest.raises(CodecError, match="exceed max_elements=99"):
        decode(payload, max_elements=99)


@pytest.mark.parametrize("name", sorted(CODECS))
def test_memory_stays_within_twice_the_input(name):
    x = RNG.standard_normal(1 << 18).astype(np.float32)
    codec = codec_class(name).for_bits(4.0, x) if name != "sign" else get(name)
    payload = codec.encode(x, seed=1)  # warm caches (Lloyd designs, imports)
    decode(payload)
    for run in (lambda: codec.encode(x, seed=1), lambda: decode(payload)):
        tracemalloc.start()
        run()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak <= 2 * x.nbytes


def test_importing_codecs_pulls_in_neither_flower_nor_torch():
    code = "import sys, flrd.codecs; print(any(m.split('.')[0] in ('flwr', 'torch') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_torch_tensor_input_is_accepted():
    torch = pytest.importorskip("torch")
    t = torch.linspace(-1, 1, 64, requires_grad=True)
    assert decode(get("float32").encode(t)).tolist() == t.detach().numpy().tolist()

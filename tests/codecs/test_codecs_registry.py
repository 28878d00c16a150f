"""The codec catalogue: unique names and wire ids, checked at registration."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from flrd import codecs
from flrd.codecs.base import CODECS, CODECS_BY_ID, register
from flrd.codecs.raw import Float32Codec


def test_every_codec_is_registered_once_by_name_and_id():
    assert set(CODECS) == {"float32", "dithered", "m22", "sign", "qsgd", "terngrad", "topk",
                           "topk-global", "randk", "natural"}
    assert {cls.codec_id: cls for cls in CODECS.values()} == CODECS_BY_ID


@pytest.mark.parametrize(("name", "codec_id"), [("float32", 200), ("fresh", Float32Codec.codec_id)])
def test_a_taken_name_or_id_is_refused_at_import(name, codec_id):
    clash = dataclass(frozen=True)(type("Clash", (Float32Codec,), {"name": name, "codec_id": codec_id}))
    with pytest.raises(TypeError, match="already registered"):
        register(clash)
    assert CODECS["float32"] is Float32Codec


def test_decode_payload_refuses_another_codecs_payload():
    payload = codecs.get("float32").encode(np.ones(4, np.float32))
    np.testing.assert_array_equal(Float32Codec.decode_payload(payload), np.ones(4))
    with pytest.raises(codecs.CodecError, match="expected sign"):
        codecs.SignCodec.decode_payload(payload)


def test_garbage_is_a_codec_error_before_dispatch():
    with pytest.raises(codecs.CodecError, match="wrong magic"):
        codecs.decode(b"NOPE" + bytes(40))
    with pytest.raises(codecs.CodecError, match="bytes-like"):
        codecs.decode(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_torch_updates_are_accepted(dtype):
    import torch

    from flrd.codecs.message import decode_update, encode_update
    from flrd.protocol import CompressionRequest

    x = torch.randn(4096, generator=torch.Generator().manual_seed(0)).to(getattr(torch, dtype))
    payload = codecs.get("dithered", noise_var=0.01).encode(x, seed=3)
    exact = x.float().numpy().astype(np.float64)
    decoded = codecs.decode(payload)
    assert decoded.dtype == (np.float16 if dtype == "float16" else np.float32)
    assert abs(np.mean((decoded.astype(np.float64) - exact) ** 2) / 0.01 - 1) < 0.15
    request = CompressionRequest(codec="dithered", noise_var=(0.01,))
    message = encode_update({"w": x}, request, node_id=7)
    back = decode_update(message.payload, request, node_id=7, layout={"w": (4096,)})
    assert abs(np.mean((back.arrays["w"] - exact) ** 2) / 0.01 - 1) < 0.15

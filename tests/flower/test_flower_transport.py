"""Payload transport and the config/metrics protocol between mod and strategy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord
from hypothesis import given
from hypothesis import strategies as st

from flrd.clients.transport import wrap_payload, wrap_payloads
from flrd.protocol import CompressionReport, CompressionRequest
from flrd.strategies.transport import TransportError, payload_bytes, unwrap_payload, unwrap_payloads

layer_names = st.text(min_size=1, max_size=12)
payloads = st.dictionaries(layer_names, st.binary(max_size=300), min_size=1, max_size=6)


@given(payloads)
def test_count_bytes_is_payload_plus_exactly_the_layer_names(layers):
    record = wrap_payloads(layers)
    overhead = sum(len(name) for name in layers)  # Flower counts each key's len()
    assert record.count_bytes() == sum(map(len, layers.values())) + overhead
    assert payload_bytes(record) == sum(map(len, layers.values()))


@given(payloads)
def test_unwrap_inverts_wrap_in_order(layers):
    assert list(unwrap_payloads(wrap_payloads(layers)).items()) == list(layers.items())


def test_wrapped_array_has_the_contract_fields():
    array = wrap_payload(b"\x00\x01\x02")
    assert (array.dtype, array.shape, array.stype, array.data) == ("uint8", (3,), "flrd.codec",
                                                                  b"\x00\x01\x02")


@pytest.mark.parametrize("array, reason", [
    (Array(np.zeros(3, np.uint8)), "stype"),
    (Array(dtype="float32", shape=(3,), stype="flrd.codec", data=b"abc"), "dtype"),
    (Array(dtype="uint8", shape=(4,), stype="flrd.codec", data=b"abc"), "shape"),
    (Array(dtype="uint8", shape=(1, 3), stype="flrd.codec", data=b"abc"), "shape"),
])
def test_unwrap_rejects_arrays_that_are_not_payloads(array, reason):
    with pytest.raises(TransportError, match=reason):
        unwrap_payload(array)
    with pytest.raises(TransportError, match="layer 'x'"):
        unwrap_payloads(ArrayRecord({"x": array}))


def test_payload_bytes_ignores_plain_arrays():
    record = ArrayRecord({"p": wrap_payload(b"12345"), "n": Array(np.ones(4))})
    assert payload_bytes(record) == 5


requests = st.builds(
    CompressionRequest,
    codec=st.sampled_from(["dithered", "sign", "m22"]),
    noise_var=st.none() | st.lists(st.floats(0, 1e3), max_size=5).map(tuple),
    error_feedback=st.booleans(), audit=st.booleans(), seed=st.integers(0, 2**62),
)


@given(requests)
def test_request_survives_a_config_round_trip(request):
    assert CompressionRequest.from_config({"lr": 0.1, **request.to_config()}) == request


@pytest.mark.parametrize("config, match", [
    ({"flrd.codec": "dithered", "flrd.typo": 1}, "unknown"),
    ({"flrd.noise-var": [0.1]}, "flrd.codec"),
    ({"flrd.codec": "dithered", "flrd.noise-var": 0.1}, "list"),
    ({"flrd.codec": "dithered", "flrd.audit": 1}, "booleans"),
    ({"flrd.codec": "dithered", "flrd.seed": 1.5}, "integer"),
    ({"flrd.codec": "dithered", "flrd.noise-var": [-1.0]}, "noise_var"),
    ({"flrd.codec": "dithered", "flrd.noise-var": [1.0], "flrd.bits": 2.0}, "at most one"),
    ({"flrd.codec": "qsgd", "flrd.bits": math.inf}, "bits"),
])
def test_request_rejects_ill_formed_configs(config, match):
    with pytest.raises(ValueError, match=match):
        CompressionRequest.from_config(config)


def test_report_rejects_inconsistent_metrics():
    good = CompressionReport(80, (1.0, 2.0), (0.1, 0.0), 32.0).to_metrics()
    assert CompressionReport.from_metrics(good, 2).payload_bits == 80
    for key, value in [("flrd.m2", [1.0]), ("flrd.qnoise", [0.1, math.nan]),
                       ("flrd.payload-bits", -8), ("num-examples", 0.0)]:
        with pytest.raises(ValueError, match=key):
            CompressionReport.from_metrics({**good, key: value}, 2)

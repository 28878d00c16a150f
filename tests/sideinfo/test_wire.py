"""Wyner-Ziv layers on the wire: the request's config keys and the message format."""

import numpy as np
import pytest

from flrd.codecs import CodecError
from flrd.codecs.message import decode_update, encode_update
from flrd.protocol import CompressionRequest, WynerZivLayer
from flrd.sideinfo import wyner_ziv

LAYER = WynerZivLayer(step=2.0, cond_std=1.0, keep_prob=0.5, rates=wyner_ziv.model_rates(0.5, 4096))
REQUEST = CompressionRequest(codec="dithered", noise_var=(1.0, 2.0), seed=9, wyner_ziv=(None, LAYER))
UPDATE = {"b": np.random.default_rng(0).standard_normal(64).astype(np.float32),
          "w": np.random.default_rng(1).standard_normal((64, 128)).astype(np.float32)}
LAYOUT = {"b": (64,), "w": (64, 128)}


def test_request_round_trips_through_the_config():
    config = REQUEST.to_config()
    assert CompressionRequest.from_config(config) == REQUEST
    assert all(type(v) is float for v in config["flrd.wz-step"])  # Flower wants one type per list


@pytest.mark.parametrize("change, message", [
    ({"flrd.wz-planes": [0, 9]}, "declares 9"),
    ({"flrd.wz-keep": [0.0, 1.5]}, "keep_prob"),
    ({"flrd.wz-tail-df": 1.5}, "integer"),
    ({"flrd.wz-step": [0.0]}, "differ in length"),
])
def test_malformed_wyner_ziv_config_names_the_problem(change, message):
    with pytest.raises(ValueError, match=message):
        CompressionRequest.from_config({**REQUEST.to_config(), **change})
    config = REQUEST.to_config()
    del config["flrd.wz-rates"]
    with pytest.raises(ValueError, match="come together"):
        CompressionRequest.from_config(config)


def test_wyner_ziv_needs_a_noise_target_per_layer():
    with pytest.raises(ValueError, match="noise_var"):
        CompressionRequest(codec="dithered", wyner_ziv=(LAYER,))


def test_message_carries_the_payload_for_the_server_to_decode():
    sent = encode_update(UPDATE, REQUEST, node_id=4)
    got = decode_update(sent.payload, REQUEST, node_id=4, layout=LAYOUT)
    assert list(got.arrays) == ["b"] and list(got.pending) == ["w"]
    head = wyner_ziv.parse_header(got.pending["w"], 64 * 128)
    assert (head.step, head.keep_prob) == (2.0, 0.5)
    assert got.noise_var[1] == 2.0 and got.m2[1] > 0  # the target, and the transmitted statistic
    side = UPDATE["w"].astype(np.float64).ravel() + np.random.default_rng(2).standard_normal(64 * 128)
    out = wyner_ziv.decode(got.pending["w"], side, 64 * 128)
    assert out.ok.all()


def test_a_payload_other_than_the_one_asked_for_is_refused():
    other = CompressionRequest(codec="dithered", noise_var=(1.0, 2.0), seed=9,
                               wyner_ziv=(None, WynerZivLayer(2.0, 1.0, 0.5, (0.9, 0.5))))  # larger syndromes
    sent = encode_update(UPDATE, other, node_id=4)
    with pytest.raises(CodecError):  # decoded against the request really sent: check or parameters differ
        decode_update(sent.payload, REQUEST, node_id=4, layout=LAYOUT)


def test_error_feedback_has_no_wyner_ziv_reconstruction():
    with pytest.raises(ValueError, match="reconstruction"):
        encode_update(UPDATE, REQUEST, node_id=4, reconstruct=True)

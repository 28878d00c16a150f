"""compression_mod on a plain ClientApp that knows nothing of flrd."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from flower_fakes import initial_arrays, plain_client_app
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.common.constant import ErrorCode

from flrd import codecs
from flrd.clients import EF_STATE_RECORD, compression_mod
from flrd.codecs.message import decode_update
from flrd.protocol import AUDIT_RECORD, ENCODE_SECONDS, MESSAGE_ARRAY, METRICS_RECORD, CompressionRequest
from flrd.strategies.transport import unwrap_payload


def _context(partition_id: int = 1) -> Context:
    return Context(run_id=1, node_id=7, node_config={"partition-id": partition_id,
                                                      "num-partitions": 4},
                   state=RecordDict(), run_config={})


def _train_message(request: CompressionRequest | None, server_round: int = 1,
                   message_type: str = MessageType.TRAIN) -> Message:
    config = {"server-round": server_round, **(request.to_config() if request else {})}
    return Message(RecordDict({"arrays": initial_arrays(), "config": ConfigRecord(config)}),
                   dst_node_id=7, message_type=message_type)


def _run(app, msg: Message, context: Context) -> Message:
    return app(copy.deepcopy(msg), context)


def _weights(reply: Message) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in reply.content["arrays"].items()}


def test_mod_is_transparent_without_flrd_keys():
    msg = _train_message(None)
    plain = _run(plain_client_app(), msg, _context())
    modded = _run(plain_client_app([compression_mod]), msg, _context())
    assert list(modded.content.keys()) == list(plain.content.keys())
    for name, values in _weights(plain).items():
        np.testing.assert_array_equal(_weights(modded)[name], values)


def _decoded(reply: Message, request: CompressionRequest):
    record = reply.content["arrays"]
    assert list(record.keys()) == [MESSAGE_ARRAY]
    payload = unwrap_payload(record[MESSAGE_ARRAY])
    layout = {k: v.numpy().shape for k, v in initial_arrays().items()}
    return payload, decode_update(payload, request, node_id=7, layout=layout)


def test_mod_sends_the_exact_update_with_float32_and_reports_it():
    request = CompressionRequest(codec="float32", audit=True)
    msg = _train_message(request)
    trained = _weights(_run(plain_client_app(), _train_message(None), _context()))
    reply = _run(plain_client_app([compression_mod]), msg, _context())
    sent = {k: v.numpy() for k, v in msg.content["arrays"].items()}
    payload, decoded = _decoded(reply, request)
    assert list(decoded.arrays) == ["w", "b"]
    assert reply.content["metrics"]["num-examples"] == 50
    assert list(reply.content[METRICS_RECORD].keys()) == [ENCODE_SECONDS]
    for i, (name, update) in enumerate(decoded.arrays.items()):
        np.testing.assert_allclose(sent[name] + update, trained[name], rtol=0, atol=1e-6)
        exact = trained[name].astype(np.float64) - sent[name]
        # a baseline codec's m2 travels as a two-byte statistic (1/64 octave)
        assert decoded.m2[i] == pytest.approx(np.mean(exact**2), rel=0.012)
        assert decoded.noise_var[i] == 0.0
        np.testing.assert_array_equal(reply.content[AUDIT_RECORD][name].numpy(), update)


def test_mod_meets_the_noise_target_and_the_server_gets_the_expected_noise():
    targets = (1e-4, 1e-3)
    request = CompressionRequest(codec="dithered", noise_var=targets, audit=True)
    reply = _run(plain_client_app([compression_mod]), _train_message(request), _context())
    payload, decoded = _decoded(reply, request)
    assert decoded.framing_bytes == 3 and 2 <= decoded.stats_bytes <= 4  # 2 B at SNR > 2**7.75
    for i, name in enumerate(decoded.arrays):
        exact = reply.content[AUDIT_RECORD][name].numpy().astype(np.float64)
        realized = np.mean((decoded.arrays[name] - exact) ** 2)
        assert 0 < realized < 3 * targets[i]  # sampling error on 10..200 entries
        assert decoded.noise_var[i] == pytest.approx(targets[i], rel=0.07)


def test_mod_leaves_evaluate_messages_alone():
    msg = _train_message(CompressionRequest(codec="float32"), message_type=MessageType.EVALUATE)
    reply = _run(plain_client_app([compression_mod]), msg, _context())
    assert list(reply.content.keys()) == ["metrics"]


@pytest.mark.parametrize("config", [{"flrd.codec": 3}, {"flrd.codec": "dithered", "flrd.x": 1}])
def test_ill_formed_flrd_config_gives_an_error_reply(config):
    msg = _train_message(None)
    msg.content["config"] = ConfigRecord({"server-round": 1, **config})
    reply = _run(plain_client_app([compression_mod]), msg, _context())
    assert reply.has_error() and reply.error.code == ErrorCode.MOD_FAILED_PRECONDITION
    assert "ill-formed flrd config" in reply.error.reason


def test_unknown_codec_gives_an_error_reply_not_a_crash():
    reply = _run(plain_client_app([compression_mod]),
                 _train_message(CompressionRequest(codec="nope")), _context())
    assert reply.has_error() and "cannot compress" in reply.error.reason


def test_non_finite_update_gives_an_error_reply():
    app = plain_client_app([compression_mod], lr=1e30, steps=20)
    reply = _run(app, _train_message(CompressionRequest(codec="float32")), _context())
    assert reply.has_error() and "cannot compress" in reply.error.reason


def test_error_feedback_residual_persists_in_context_state():
    context = _context()
    app = plain_client_app([compression_mod])
    request = CompressionRequest(codec="topk", bits=1.0, error_feedback=True, audit=True)
    reply = _run(app, _train_message(request, 1), context)
    state = context.state[EF_STATE_RECORD]
    assert sorted(state.keys()) == ["b/residual", "w/residual"]
    _, decoded = _decoded(reply, request)
    for name, update in decoded.arrays.items():  # residual = exact update - what was sent
        exact = reply.content[AUDIT_RECORD][name].numpy()
        np.testing.assert_allclose(state[f"{name}/residual"].numpy(), exact - update, atol=1e-7)
    # The next round sends update + residual: what arrives differs from plain top-k.
    second = _run(app, _train_message(request, 2), context)
    _, again = _decoded(second, request)
    exact_w = second.content[AUDIT_RECORD]["w"].numpy().astype(np.float64)
    plain = codecs.decode(codecs.codec_class("topk").for_bits(1.0, exact_w.astype(np.float32))
                          .encode(exact_w.astype(np.float32)))
    assert not np.array_equal(again.arrays["w"], plain)


def test_warm_up_noise_is_relative_to_each_layers_own_update():
    request = CompressionRequest(codec="dithered", relative_noise=0.05, audit=True)
    reply = _run(plain_client_app([compression_mod]), _train_message(request), _context())
    _, decoded = _decoded(reply, request)
    assert decoded.stats_bytes == 4  # two-byte absolute m2 per layer in warm-up
    for i, name in enumerate(decoded.arrays):
        exact = reply.content[AUDIT_RECORD][name].numpy().astype(np.float64)
        m2 = np.mean(exact**2)
        assert decoded.m2[i] == pytest.approx(m2, rel=0.012)
        assert decoded.noise_var[i] == pytest.approx(0.05 * decoded.m2[i], rel=1e-6)
        assert 0 < np.mean((decoded.arrays[name] - exact) ** 2) < 3 * 0.05 * m2


def test_tiny_rate_requests_still_give_a_reply():
    for request in (CompressionRequest(codec="dithered", bits=1e-31), CompressionRequest(codec="qsgd", bits=1e-31)):
        reply = _run(plain_client_app([compression_mod]), _train_message(request), _context())
        assert not reply.has_error() or "cannot compress the update" in reply.error.reason


def test_any_codec_exception_gives_an_error_reply_not_a_crash(monkeypatch):
    import flrd.clients.compress as compress

    def broken(*args, **kwargs):
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(compress, "encode_update", broken)
    request = CompressionRequest(codec="dithered", noise_var=(1.0, 1.0))
    reply = _run(plain_client_app([compression_mod]), _train_message(request), _context())
    assert reply.has_error() and reply.error.code == ErrorCode.MOD_FAILED_PRECONDITION
    assert "ZeroDivisionError" in reply.error.reason


def test_non_finite_update_names_the_layer():
    app = plain_client_app([compression_mod], lr=1e30, steps=20)
    reply = _run(app, _train_message(CompressionRequest(codec="dithered", noise_var=(1.0, 1.0))), _context())
    assert reply.has_error() and "non-finite update in layer" in reply.error.reason
    assert "NaN to integer" not in reply.error.reason

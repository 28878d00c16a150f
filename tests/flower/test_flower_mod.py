"""compression_mod on a plain ClientApp that knows nothing of flrd."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from flower_fakes import initial_arrays, plain_client_app
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.common.constant import ErrorCode

from flrd.clients import EF_STATE_RECORD, compression_mod
from flrd import codecs
from flrd.protocol import AUDIT_RECORD, METRICS_RECORD, CompressionReport, CompressionRequest
from flrd.strategies.transport import unwrap_payloads


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


def test_mod_sends_the_exact_update_with_float32_and_reports_it():
    msg = _train_message(CompressionRequest(codec="float32", audit=True))
    trained = _weights(_run(plain_client_app(), _train_message(None), _context()))
    reply = _run(plain_client_app([compression_mod]), msg, _context())
    sent = {k: v.numpy() for k, v in msg.content["arrays"].items()}
    payloads = unwrap_payloads(reply.content["arrays"])
    report = CompressionReport.from_metrics(reply.content[METRICS_RECORD], num_layers=2)
    assert list(payloads) == ["w", "b"]
    assert report.payload_bits == 8 * sum(map(len, payloads.values()))
    assert report.num_examples == reply.content["metrics"]["num-examples"] == 50
    for i, name in enumerate(payloads):
        update = codecs.decode(payloads[name])
        np.testing.assert_allclose(sent[name] + update, trained[name], rtol=0, atol=1e-6)
        exact = trained[name].astype(np.float64) - sent[name]
        assert report.m2[i] == pytest.approx(np.mean(exact**2), rel=1e-5)
        assert report.qnoise[i] == 0.0
        np.testing.assert_array_equal(reply.content[AUDIT_RECORD][name].numpy(), update)


def test_mod_meets_the_noise_target_and_reports_the_realized_noise():
    targets = (1e-4, 1e-3)
    reply = _run(plain_client_app([compression_mod]),
                 _train_message(CompressionRequest(codec="dithered", noise_var=targets,
                                                   audit=True)), _context())
    report = CompressionReport.from_metrics(reply.content[METRICS_RECORD], num_layers=2)
    payloads = unwrap_payloads(reply.content["arrays"])
    for i, name in enumerate(payloads):
        exact = reply.content[AUDIT_RECORD][name].numpy().astype(np.float64)
        realized = np.mean((codecs.decode(payloads[name]) - exact) ** 2)
        assert report.qnoise[i] == pytest.approx(realized, rel=1e-9)
        assert 0 < report.qnoise[i] < 3 * targets[i]  # sampling error on 10..200 entries
    assert "flrd.noise-var" not in reply.content[METRICS_RECORD]


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
    payloads = unwrap_payloads(reply.content["arrays"])
    for name, payload in payloads.items():  # residual = exact update - what was sent
        exact = reply.content[AUDIT_RECORD][name].numpy()
        np.testing.assert_allclose(state[f"{name}/residual"].numpy(),
                                   exact - codecs.decode(payload), atol=1e-7)
    # The next round sends update + residual; its realized error is against the update.
    second = _run(app, _train_message(request, 2), context)
    report = CompressionReport.from_metrics(second.content[METRICS_RECORD], num_layers=2)
    exact_w = second.content[AUDIT_RECORD]["w"].numpy().astype(np.float64)
    sent_w = codecs.decode(unwrap_payloads(second.content["arrays"])["w"])
    assert report.qnoise[0] == pytest.approx(np.mean((sent_w - exact_w) ** 2), rel=1e-9)


def test_warm_up_noise_is_relative_to_each_layers_own_update():
    reply = _run(plain_client_app([compression_mod]),
                 _train_message(CompressionRequest(codec="dithered", relative_noise=0.05)),
                 _context())
    report = CompressionReport.from_metrics(reply.content[METRICS_RECORD], num_layers=2)
    for m2, qnoise in zip(report.m2, report.qnoise):
        assert 0 < qnoise < 3 * 0.05 * m2

"""Failing, silent and malicious clients: rounds finish, accounting stays exact."""

from __future__ import annotations

import copy
import struct
import zlib

import numpy as np
import pytest
from flower_fakes import InProcessGrid, initial_arrays, plain_client_app
from flwr.app import Array, ArrayRecord, ConfigRecord, Message

from flrd.clients import compression_mod
from flrd.clients.transport import wrap_payload
from flrd import codecs
from flrd.protocol import METRICS_RECORD, PAYLOAD_BITS
from flrd.strategies import RateAwareFedAvg
from flrd.strategies.transport import is_payload

NUM_NODES, NUM_ROUNDS = 10, 6


def _flip_byte(reply: Message) -> None:
    array = reply.content["arrays"]["w"]
    data = bytearray(array.data)
    data[len(data) // 2] ^= 0x40
    reply.content["arrays"]["w"] = wrap_payload(bytes(data))


def _truncate(reply: Message) -> None:
    reply.content["arrays"]["b"] = wrap_payload(reply.content["arrays"]["b"].data[:-9])
    _fix_bits(reply)  # so that the decoder, not the bit check, catches it


def _rename_layer(reply: Message) -> None:
    arrays = reply.content["arrays"]
    reply.content["arrays"] = ArrayRecord({"w": arrays["w"], "bias": arrays["b"]})


def _wrong_shape(reply: Message) -> None:
    payload = codecs.get("float32").encode(np.zeros(11, np.float32))
    reply.content["arrays"]["b"] = wrap_payload(payload)
    _fix_bits(reply)


def _lie_about_bits(reply: Message) -> None:
    reply.content[METRICS_RECORD][PAYLOAD_BITS] = 8


def _drop_metrics(reply: Message) -> None:
    del reply.content[METRICS_RECORD]


def _nan_update(reply: Message) -> None:
    """A well-formed payload (valid CRC) that decodes to NaN."""
    payload = bytearray(codecs.get("float32").encode(np.zeros(10, np.float32)))
    body_end = len(payload) - 4
    payload[body_end - 4:body_end] = struct.pack("<f", np.nan)
    payload[body_end:] = struct.pack("<I", zlib.crc32(bytes(payload[:body_end])))
    reply.content["arrays"]["b"] = wrap_payload(bytes(payload))
    _fix_bits(reply)


def _plain_weights(reply: Message) -> None:
    reply.content["arrays"] = ArrayRecord({k: Array(np.zeros(3)) for k in ("w", "b")})


def _fix_bits(reply: Message) -> None:
    sent = sum(len(a.data) for a in reply.content["arrays"].values())
    reply.content[METRICS_RECORD][PAYLOAD_BITS] = 8 * sent


GARBAGE = [_flip_byte, _truncate, _rename_layer, _wrong_shape, _lie_about_bits,
           _drop_metrics, _nan_update, _plain_weights]


class Chaos:
    """Each round: node 2r fails in the app, node 2r+1 sends garbage, node 2r+2 is silent."""

    def __init__(self) -> None:
        self.garbage_nodes: set[tuple[int, int]] = set()
        self.silent_nodes: set[tuple[int, int]] = set()

    def failing(self, server_round: int, pid: int) -> bool:
        return pid == (2 * server_round) % NUM_NODES

    def hook(self, server_round: int, node_id: int, reply: Message) -> Message | None:
        pid = node_id - 101
        if pid == (2 * server_round + 1) % NUM_NODES and not reply.has_error():
            GARBAGE[server_round % len(GARBAGE)](reply)
            self.garbage_nodes.add((server_round, node_id))
        if pid == (2 * server_round + 2) % NUM_NODES:
            self.silent_nodes.add((server_round, node_id))
            return None
        return reply


@pytest.mark.parametrize("offset", [0, NUM_ROUNDS])  # two runs cover all garbage kinds
def test_failures_and_garbage_are_excluded_and_accounting_is_exact(offset, caplog):
    chaos = Chaos()

    def hook(server_round, node_id, reply):
        return chaos.hook(server_round + offset, node_id, reply)

    app = plain_client_app([compression_mod],
                           fail=lambda r, pid: chaos.failing(r + offset, pid))
    grid = InProcessGrid(app, NUM_NODES, reply_hook=hook)
    strategy = RateAwareFedAvg(fraction_evaluate=0.0, audit=True)
    result = strategy.start(grid, initial_arrays(), num_rounds=NUM_ROUNDS)

    delivered = iter(grid.replies)
    for server_round in range(1, NUM_ROUNDS + 1):
        metrics = result.train_metrics_clientapp[server_round]
        replies = [next(delivered) for _ in range(NUM_NODES - 1)]  # one node is silent
        payload = sum(len(a.data) for r in replies if not r.has_error()
                      for a in r.content["arrays"].values() if is_payload(a))
        assert metrics["flrd.uplink-bits"] == 8 * payload
        assert (metrics["flrd.sent"], metrics["flrd.replies"]) == (NUM_NODES, NUM_NODES - 1)
        assert (metrics["flrd.failed"], metrics["flrd.rejected"]) == (1, 1)
        assert metrics["flrd.accepted"] == NUM_NODES - 3
        honest = [r for r in replies if not r.has_error()
                  and (server_round + offset, r.metadata.src_node_id) not in chaos.garbage_nodes]
        assert metrics["flrd.accepted-bits"] == 8 * sum(
            len(a.data) for r in honest for a in r.content["arrays"].values())
    assert "left out (payload)" in caplog.text and "failed" in caplog.text
    assert all(np.all(np.isfinite(a.numpy())) for a in result.arrays.values())


def test_the_aggregate_is_the_mean_of_the_honest_updates_only():
    chaos = Chaos()
    grid = InProcessGrid(plain_client_app([compression_mod], fail=chaos.failing), NUM_NODES,
                         reply_hook=chaos.hook)
    strategy = RateAwareFedAvg(fraction_evaluate=0.0, codec="float32")
    start = initial_arrays()
    result = strategy.start(grid, start, num_rounds=1)
    honest = [r for r in grid.replies if not r.has_error()
              and (1, r.metadata.src_node_id) not in chaos.garbage_nodes]
    examples = np.array([r.content["metrics"]["num-examples"] for r in honest], float)
    for name in ("w", "b"):
        mean = sum(w * codecs.decode(r.content["arrays"][name].data).astype(np.float64)
                   for w, r in zip(examples / examples.sum(), honest))
        expected = start[name].numpy().astype(np.float64) + mean
        np.testing.assert_allclose(result.arrays[name].numpy(), expected, rtol=1e-6, atol=1e-7)


def test_replies_from_unsampled_or_repeated_nodes_are_rejected():
    grid = InProcessGrid(plain_client_app([compression_mod]), 4)
    strategy = RateAwareFedAvg(fraction_evaluate=0.0)
    messages = strategy.configure_train(1, initial_arrays(), ConfigRecord(), grid)
    replies = grid.send_and_receive(messages)
    stranger = copy.deepcopy(replies[0])
    stranger.metadata.__dict__["_src_node_id"] = 999  # Metadata is read-only
    twin = copy.deepcopy(replies[1])
    _, metrics = strategy.aggregate_train(1, [*replies, stranger, twin])
    assert (metrics["flrd.replies"], metrics["flrd.accepted"], metrics["flrd.rejected"]) == (6, 4, 2)


def test_wrapped_fedavg_survives_a_reply_with_inconsistent_app_metrics():
    from flwr.serverapp.strategy import FedAvg

    from flrd.strategies import CompressedStrategy

    def hook(server_round, node_id, reply):
        if node_id == 102:
            del reply.content["metrics"]["num-examples"]  # FedAvg alone would raise
        return reply

    grid = InProcessGrid(plain_client_app([compression_mod]), 4, reply_hook=hook)
    strategy = CompressedStrategy(FedAvg(fraction_evaluate=0.0))
    result = strategy.start(grid, initial_arrays(), num_rounds=2)
    for metrics in result.train_metrics_clientapp.values():
        assert (metrics["flrd.accepted"], metrics["flrd.rejected"]) == (3, 1)
        assert "train_loss" in metrics

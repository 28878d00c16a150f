"""Failing, silent and malicious clients: rounds finish, accounting stays exact.

The garbage kinds are the attack suite's (``tests/attacks/hostile.py``), crafted against
the one-message-per-reply format; ``tests/attacks`` checks each one in detail.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
from flower_fakes import InProcessGrid, initial_arrays, plain_client_app
from flwr.app import ConfigRecord, Message

from flrd.clients import compression_mod
from flrd.strategies import RateAwareFedAvg
from flrd.strategies.transport import is_payload

sys.path.insert(0, str(Path(__file__).parent.parent / "attacks"))
import hostile  # noqa: E402
from rounds import context_of  # noqa: E402

NUM_NODES, NUM_ROUNDS = 10, 6
GARBAGE = [hostile.flip_byte, hostile.truncate, hostile.rename_array, hostile.extra_array,
           hostile.missing_array, hostile.replay_other_node, hostile.replay_earlier_round,
           hostile.float32_for_dithered, hostile.forged_m2, hostile.unrequested_audit,
           hostile.plain_weights, hostile.huge_audit_header]


class Chaos:
    """Each round: node 2r fails in the app, node 2r+1 sends garbage, node 2r+2 is silent."""

    def __init__(self) -> None:
        self.grid: InProcessGrid | None = None
        self.garbage_nodes: set[tuple[int, int]] = set()
        self.silent_nodes: set[tuple[int, int]] = set()

    def failing(self, server_round: int, pid: int) -> bool:
        return pid == (2 * server_round) % NUM_NODES

    def hook(self, server_round: int, node_id: int, reply: Message) -> Message | None:
        pid = node_id - 101
        if pid == (2 * server_round + 1) % NUM_NODES and not reply.has_error():
            sent = self.grid.sent[-1]  # the message this reply answers
            GARBAGE[server_round % len(GARBAGE)](reply, context_of(sent, reply))
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
    chaos.grid = grid
    strategy = RateAwareFedAvg(fraction_evaluate=0.0)
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
    chaos.grid = grid
    strategy = RateAwareFedAvg(fraction_evaluate=0.0, codec="float32")
    start = initial_arrays()
    messages = list(strategy.configure_train(1, start, ConfigRecord(), grid))
    replies = grid.send_and_receive(messages)
    twin = copy.deepcopy(strategy)
    honest = [r for r in replies if not r.has_error()
              and (1, r.metadata.src_node_id) not in chaos.garbage_nodes]
    arrays, _ = strategy.aggregate_train(1, copy.deepcopy(replies))
    expected, _ = twin.aggregate_train(1, copy.deepcopy(honest))
    assert len(honest) == NUM_NODES - 3
    for name in ("w", "b"):
        np.testing.assert_array_equal(arrays[name].numpy(), expected[name].numpy())


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


def test_min_replies_stops_the_run_and_names_the_round():
    grid = InProcessGrid(plain_client_app([compression_mod], fail=lambda r, p: r == 2 and p > 0), 4)
    strategy = RateAwareFedAvg(min_replies=2, fraction_evaluate=0.0)
    with pytest.raises(RuntimeError, match=r"round 2: 1 of 4 sampled replies kept \(3 failed.*min_replies=2"):
        strategy.start(grid, initial_arrays(), num_rounds=3)


def test_a_round_without_survivors_warns_and_keeps_the_model(caplog):
    grid = InProcessGrid(plain_client_app([compression_mod], fail=lambda r, p: True), 3)
    result = RateAwareFedAvg(fraction_evaluate=0.0).start(grid, initial_arrays(), num_rounds=1)
    assert "round 1: 0 of 3 sampled replies kept (3 failed" in caplog.text
    assert "the model did not move" in caplog.text
    assert result.train_metrics_clientapp[1]["flrd.accepted"] == 0

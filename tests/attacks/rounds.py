"""One strategy round on the in-process grid, with one node's reply made hostile."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
from flower_fakes import InProcessGrid, initial_arrays, plain_client_app
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from hostile import Context, payload_of

from flrd.clients import compression_mod
from flrd.codecs.message import decode_update
from flrd.protocol import CompressionRequest

NUM_NODES = 6
HOSTILE_NODE = 103


def context_of(sent: Message, reply: Message) -> Context:
    """What the node of ``reply`` knows: its request, layout and honest update."""
    request = CompressionRequest.from_config(sent.content["config"])
    assert request is not None
    layout = {n: tuple(a.shape) for n, a in sent.content["arrays"].items()}
    node_id = sent.metadata.dst_node_id
    update = decode_update(payload_of(reply), request, node_id=node_id, layout=layout).arrays
    return Context(request, node_id, layout, update)


class Round:
    """Rounds of ``strategy`` on a fresh in-process grid.

    ``run(r, hostile)`` rewrites the reply of ``node`` with ``hostile(reply, ctx)`` and
    aggregates it; it also aggregates the same round without that reply on a copy of
    the strategy (``honest``), so a test can compare the two.
    """

    def __init__(self, strategy, num_nodes: int = NUM_NODES) -> None:
        self.strategy = strategy
        self.grid = InProcessGrid(plain_client_app([compression_mod]), num_nodes)
        self.arrays = initial_arrays()
        self.honest: tuple[ArrayRecord | None, MetricRecord] | None = None
        self.honest_strategy = None

    def run(self, server_round: int, hostile: Callable[[Message, Context], None] | None = None,
            node: int = HOSTILE_NODE) -> tuple[ArrayRecord | None, MetricRecord]:
        messages = list(self.strategy.configure_train(server_round, self.arrays, ConfigRecord(),
                                                      self.grid))
        replies = self.grid.send_and_receive(messages)
        if hostile is not None:
            sent = {m.metadata.dst_node_id: m for m in messages}
            reply = next(r for r in replies if r.metadata.src_node_id == node)
            hostile(reply, context_of(sent[node], reply))
            self.honest_strategy = copy.deepcopy(self.strategy)
            self.honest = self.honest_strategy.aggregate_train(
                server_round, [copy.deepcopy(r) for r in replies if r.metadata.src_node_id != node])
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        if arrays is not None:
            self.arrays = arrays
        return arrays, metrics


def assert_same_arrays(a: ArrayRecord | None, b: ArrayRecord | None) -> None:
    assert a is not None and b is not None and list(a) == list(b)
    for name in a:
        np.testing.assert_array_equal(a[name].numpy(), b[name].numpy())

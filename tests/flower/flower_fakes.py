"""In-process stand-ins for Flower's runtime: a Grid that runs a ClientApp per node.

Messages are deep-copied both ways, as serialization would, so no test passes because
the server and a client share an object. Fault hooks let a test make nodes fail,
drop out or send garbage.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterable

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity


@pytest.fixture(autouse=True)
def task_identity():
    """Messages need a run/node identity, which Flower's runtime sets per process.

    An autouse fixture of every Flower-side test folder (its conftest imports it).
    """
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    random.seed(0)  # Flower samples nodes with the global `random`
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


# reply_hook(server_round, node_id, reply) -> reply to deliver, or None to drop it.
ReplyHook = Callable[[int, int, Message], Message | None]

NUM_FEATURES, NUM_OUTPUTS = 20, 10


class InProcessGrid(Grid):
    """Runs ``client_app`` in this process for every message; node ids 101, 102, ..."""

    def __init__(self, client_app: ClientApp, num_nodes: int, *,
                 run_config: dict | None = None, reply_hook: ReplyHook | None = None) -> None:
        self.client_app = client_app
        self.reply_hook = reply_hook
        self.node_ids = [101 + i for i in range(num_nodes)]
        self.contexts = {
            node_id: Context(run_id=1, node_id=node_id,
                             node_config={"partition-id": i, "num-partitions": num_nodes},
                             state=RecordDict(), run_config=dict(run_config or {}))
            for i, node_id in enumerate(self.node_ids)
        }
        self.sent: list[Message] = []  # every message the strategy sent
        self.replies: list[Message] = []  # a copy of every reply delivered to the strategy
        self._run = None

    def set_run(self, run) -> None:  # noqa: D102
        self._run = run

    @property
    def run(self):  # noqa: D102
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # noqa: D102
        return Message(content, dst_node_id, message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> list[int]:  # noqa: D102
        return list(self.node_ids)

    def push_messages(self, messages):  # noqa: D102
        raise NotImplementedError

    def pull_messages(self, message_ids):  # noqa: D102
        raise NotImplementedError

    def send_and_receive(self, messages: Iterable[Message], *, timeout=None) -> list[Message]:
        """Deliver every message and collect the replies (minus dropped ones)."""
        replies = []
        for msg in messages:
            self.sent.append(msg)
            delivered = copy.deepcopy(msg)
            node_id = msg.metadata.dst_node_id
            try:
                reply = self.client_app(delivered, self.contexts[node_id])
            except Exception as err:  # the ClientApp runtime turns exceptions into errors
                reply = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, repr(err)),
                                reply_to=delivered)
            reply = copy.deepcopy(reply)
            if self.reply_hook is not None:
                reply = self.reply_hook(_round_of(msg), node_id, reply)
            if reply is not None:
                replies.append(reply)
        self.replies.extend(copy.deepcopy(replies))  # strategies may modify theirs
        return replies


def _round_of(msg: Message) -> int:
    for config in msg.content.config_records.values():
        if "server-round" in config:
            return int(config["server-round"])
    return 0


# ------------------------------------------------------------------ a plain app
def initial_arrays(seed: int = 0) -> ArrayRecord:
    """The linear model the plain app trains: ``w`` (20, 10) and ``b`` (10,)."""
    rng = np.random.default_rng(seed)
    return ArrayRecord({
        "w": Array((0.1 * rng.standard_normal((NUM_FEATURES, NUM_OUTPUTS))).astype(np.float32)),
        "b": Array(np.zeros(NUM_OUTPUTS, np.float32)),
    })


def plain_client_app(mods: list | None = None, *, steps: int = 5, lr: float = 0.05,
                     fail: Callable[[int, int], bool] | None = None,
                     seed_by_round: bool = True) -> ClientApp:
    """A ClientApp that knows nothing of flrd: linear regression by local SGD.

    Node ``k`` holds ``40 + 10 k`` samples of ``y = x W* + noise`` (W* shared, seeded).
    Minibatches are seeded by the round, or with ``seed_by_round=False`` by the
    received weights (Flower's round number restarts when a server resumes).
    ``fail(server_round, partition_id)`` makes the train function raise.
    """
    app = ClientApp(mods=mods or [])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config["partition-id"])
        server_round = int(msg.content["config"]["server-round"])
        if fail is not None and fail(server_round, pid):
            raise RuntimeError(f"node {pid} fails in round {server_round}")
        weights = {k: v.numpy().copy() for k, v in msg.content["arrays"].items()}
        x, y = _local_data(pid)
        rng = np.random.default_rng([pid, server_round if seed_by_round else int.from_bytes(
            msg.content["arrays"]["w"].data[-8:], "little")])
        for _ in range(steps):
            idx = rng.choice(len(x), size=16, replace=False)
            err = x[idx] @ weights["w"] + weights["b"] - y[idx]
            weights["w"] -= lr * (x[idx].T @ err / len(idx)).astype(np.float32)
            weights["b"] -= lr * err.mean(axis=0).astype(np.float32)
        loss = float(np.mean((x @ weights["w"] + weights["b"] - y) ** 2))
        return Message(RecordDict({
            "arrays": ArrayRecord({k: Array(v) for k, v in weights.items()}),
            "metrics": MetricRecord({"train_loss": loss, "num-examples": len(x)}),
        }), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return Message(RecordDict({"metrics": MetricRecord({"num-examples": 1})}),
                       reply_to=msg)

    return app


def _local_data(pid: int) -> tuple[np.ndarray, np.ndarray]:
    w_star = np.random.default_rng(1234).standard_normal((NUM_FEATURES, NUM_OUTPUTS))
    rng = np.random.default_rng(pid)
    x = rng.standard_normal((40 + 10 * pid, NUM_FEATURES)).astype(np.float32)
    y = (x @ w_star + 0.5 * rng.standard_normal((len(x), NUM_OUTPUTS))).astype(np.float32)
    return x, y


def train_config() -> ConfigRecord:
    """An empty train config, as a ServerApp would pass to ``Strategy.start``."""
    return ConfigRecord()

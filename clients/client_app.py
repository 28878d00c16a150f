"""Reference ClientApp for the paper's task: MNIST 2NN, local SGD, compressed uplink.

Run config: :class:`flrd.config.RunConfig` (``model``, ``local-steps``, ``batch-size``,
``lr``, ``momentum``, ``partition``, ``dirichlet-alpha``, ``seed``; defaults there).
Node config: ``partition-id`` and ``num-partitions`` (set by the simulation engine, or
``flower-supernode --node-config "partition-id=0 num-partitions=2"``).

The app itself only trains and returns new weights; ``compression_mod`` turns them
into a compressed update when the strategy asks for one.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict, UserConfigValue
from flwr.clientapp import ClientApp

from flrd.config import RunConfig
from flrd.datasets import load_mnist, partition_indices
from flrd.models import build_model
from flrd.training import evaluate as evaluate_model
from flrd.training import train_local

from .mod import compression_mod

__all__ = ["app", "build_client_app"]


def build_client_app(overrides: Mapping[str, UserConfigValue] | None = None) -> ClientApp:
    """The reference ClientApp; ``overrides`` take precedence over the run config.

    ``flwr run`` passes settings through the run config; Python drivers that have no
    run config (``run_simulation``, the ``flrd simulate`` harness) pass them here.

    Example:
        >>> client = build_client_app({"local-steps": 20, "partition": "dirichlet"})
    """
    fixed = dict(overrides or {})
    client = ClientApp(mods=[compression_mod])

    @client.train()
    def _train_handler(msg: Message, context: Context) -> Message:
        return train(msg, context, RunConfig.from_run_config({**context.run_config, **fixed}))

    @client.evaluate()
    def _evaluate_handler(msg: Message, context: Context) -> Message:
        return evaluate(msg, context, RunConfig.from_run_config({**context.run_config, **fixed}))

    return client


def train(msg: Message, context: Context, cfg: RunConfig) -> Message:
    """Train the received model on this node's partition; reply with the new weights."""
    model = _load_model(msg, cfg)
    x, y = _partition(context, cfg)
    configs = list(msg.content.config_records.values())
    server_round = int(configs[0].get("server-round", 0)) if configs else 0  # type: ignore[arg-type]
    seed = int(np.random.SeedSequence(
        [cfg.seed, server_round, int(context.node_config["partition-id"])]).generate_state(1)[0])
    loss = train_local(model, x, y, steps=cfg.local_steps, batch_size=cfg.batch_size, lr=cfg.lr,
                       momentum=cfg.momentum, seed=seed)
    metrics = MetricRecord({"train_loss": float(loss), "num-examples": len(x)})
    return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics}),
                   reply_to=msg)


def evaluate(msg: Message, context: Context, cfg: RunConfig) -> Message:
    """Evaluate the received model on this node's share of the MNIST test set."""
    model = _load_model(msg, cfg)
    pid, parts = _partition_ids(context)
    data = load_mnist()
    x, y = data.x_test[pid::parts], data.y_test[pid::parts]
    loss, accuracy = evaluate_model(model, x, y)
    metrics = MetricRecord({"eval_loss": loss, "eval_acc": accuracy, "num-examples": len(x)})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


def _load_model(msg: Message, cfg: RunConfig) -> torch.nn.Module:
    torch.set_num_threads(1)  # simulations run one client per core
    model = build_model(cfg.model)
    arrays = next(iter(msg.content.array_records.values()))
    model.load_state_dict(arrays.to_torch_state_dict())
    return model


def _partition_ids(context: Context) -> tuple[int, int]:
    return int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])


def _partition(context: Context, cfg: RunConfig) -> tuple[np.ndarray, np.ndarray]:
    pid, parts = _partition_ids(context)
    indices = _partitions(parts, cfg.partition, cfg.dirichlet_alpha, cfg.seed)[pid]
    data = load_mnist()
    return data.x_train[indices], data.y_train[indices]


@functools.cache
def _partitions(parts: int, scheme: str, alpha: float, seed: int) -> list[np.ndarray]:
    return partition_indices(load_mnist().y_train, parts, scheme, alpha=alpha, seed=seed)  # type: ignore[arg-type]


app = build_client_app()

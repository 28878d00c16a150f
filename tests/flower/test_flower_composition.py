"""``class X(RateControl, S)`` and ``CompressedStrategy(S())`` for Flower's strategies.

Each composed strategy runs three rounds on the in-process Grid; the test checks that
every train message carried a compression request, every reply came back as codec
payloads, the uplink was counted (and far below float32), and the model moved and
stayed finite.
"""

from __future__ import annotations

import numpy as np
import pytest
from flower_fakes import InProcessGrid, initial_arrays, plain_client_app
from flwr.serverapp.strategy import (
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
)

from flrd.clients import compression_mod
from flrd.protocol import PAYLOAD_STYPE, CompressionRequest
from flrd.strategies import CompressedStrategy, RateControl

NODES = 5
PARAMS = 210  # the plain app's linear model
STRATEGIES = {
    FedAvg: {}, FedProx: {"proximal_mu": 0.1}, FedAdam: {"eta": 0.05}, FedYogi: {"eta": 0.05},
    FedAdagrad: {"eta": 0.05}, FedMedian: {}, FedTrimmedAvg: {"beta": 0.2},
    Krum: {"num_malicious_nodes": 1},
}
NO_EVAL = {"fraction_evaluate": 0.0}


def _run(strategy) -> tuple[InProcessGrid, object]:
    grid = InProcessGrid(plain_client_app([compression_mod]), NODES)
    return grid, strategy.start(grid, initial_arrays(), num_rounds=3)


def _check(grid: InProcessGrid, result) -> None:
    train = [m for m in grid.sent if m.metadata.message_type == "train"]
    assert len(train) == 3 * NODES
    for msg in train:
        assert CompressionRequest.from_config(msg.content["config"]).codec == "dithered"
    for reply in grid.replies:
        payloads = next(iter(reply.content.array_records.values()))
        assert all(array.stype == PAYLOAD_STYPE for array in payloads.values())
    for server_round in (1, 2, 3):
        metrics = result.train_metrics_clientapp[server_round]
        assert metrics["flrd.accepted"] == NODES
        assert 0 < metrics["flrd.uplink-bits"] < NODES * 32 * PARAMS
    start = initial_arrays()
    moved = {name: array.numpy() for name, array in result.arrays.items()}
    assert all(np.all(np.isfinite(v)) for v in moved.values())
    assert not np.allclose(moved["w"], start["w"].numpy())


@pytest.mark.parametrize("base", list(STRATEGIES), ids=lambda c: c.__name__)
def test_rate_control_mixin_compresses_and_counts(base):
    composed = type(f"Compressed{base.__name__}", (RateControl, base), {})
    strategy = composed(**STRATEGIES[base], **NO_EVAL)
    _check(*_run(strategy))
    linear = base in (FedAvg, FedProx, FedAdam, FedYogi, FedAdagrad)
    assert strategy.mean_aggregator() == linear


@pytest.mark.parametrize("base", [FedAdam, FedMedian], ids=lambda c: c.__name__)
def test_compressed_strategy_wraps_an_instance(base):
    strategy = CompressedStrategy(base(**STRATEGIES[base], **NO_EVAL))
    _check(*_run(strategy))


def test_the_base_configuration_reaches_the_clients():
    composed = type("CompressedFedProx", (RateControl, FedProx), {})
    grid, _ = _run(composed(proximal_mu=0.25, **NO_EVAL))
    assert all(m.content["config"]["proximal-mu"] == 0.25 for m in grid.sent)

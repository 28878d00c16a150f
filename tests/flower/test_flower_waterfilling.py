"""WaterfillingFedAvg: per-client noise targets from water-filling (THEORY.md §3)."""

from __future__ import annotations

import numpy as np
import pytest
from flower_fakes import InProcessGrid, initial_arrays, plain_client_app

from flrd import theory
from flrd.clients import compression_mod
from flrd.policy import RatePolicy
from flrd.protocol import CompressionRequest
from flrd.strategies import WaterfillingFedAvg


def _strategy(**kwargs) -> WaterfillingFedAvg:
    strategy = WaterfillingFedAvg(policy=RatePolicy([100, 10]), fraction_evaluate=0.0, **kwargs)
    strategy.policy.sx2 = np.array([2.0, 0.5])
    strategy.policy.s2 = np.array([1.0, 0.2])
    return strategy


def test_targets_follow_noise_and_costs_and_reach_the_distortion():
    strategy = _strategy(link_costs={4: 5.0})
    strategy.client_m2 = {1: np.array([2.5, 0.6]), 2: np.array([3.0, 0.7]), 3: np.array([12.0, 3.0]),
                          4: np.array([3.0, 0.7])}
    nodes = [1, 2, 3, 4]
    strategy.node_keys = {n: n for n in nodes}  # their partition-ids, as the clients report
    shared = np.array([1.0, 0.2])  # equal targets: D_l = (s2_l + target_l) / K
    targets = strategy.client_targets(1, nodes, shared)
    distortion = (shared + strategy.policy.s2) / 4
    noise = strategy.client_noise(nodes)
    for layer in range(2):
        per_client = np.array([targets[n][layer] for n in nodes])
        # Inverse-variance mean reaches the plan's distortion (silenced clients keep ~1e-7 of it).
        reached = 1.0 / np.sum(1.0 / (noise[:, layer] + per_client))
        assert reached == pytest.approx(distortion[layer], rel=1e-6)
        assert per_client[0] < per_client[1] < per_client[2]  # noisier clients add more noise
        assert per_client[3] > per_client[1]  # same noise as node 2, dearer link: fewer bits
    rates = theory.waterfill(distortion[0], noise[:, 0], [1, 1, 1, 5.0])
    assert np.all(np.diff(rates[:3]) < 0)


def test_clients_above_the_water_level_are_silenced_and_get_no_weight():
    strategy = _strategy()
    strategy.client_m2 = {1: np.array([2.5, 0.6]), 2: np.array([500.0, 100.0])}
    targets = strategy.client_targets(1, [1, 2], np.array([0.2, 0.05]))
    assert targets[2][0] > 1e5 and targets[1][0] < 1.0
    assert np.all(targets[2] >= strategy.silent_noise())  # left out of the sx2/s2 estimates
    update = type("U", (), {})
    updates = []
    for node in (1, 2):
        u = update()
        u.node_id, u.noise_var = node, targets[node]
        updates.append(u)
    weights = strategy.aggregation_weights(updates, None)
    assert np.allclose(weights.sum(axis=0), 1.0) and np.all(weights[1] < 1e-5)


def test_rounds_run_and_the_dear_link_gets_the_larger_target():
    """Link costs keyed by partition-id, which clients report when asked (flrd.link-key)."""
    grid = InProcessGrid(plain_client_app([compression_mod]), 4)
    dear = sorted(grid.get_node_ids())[0]  # partition-id 0: costs are keyed by it, not node ids
    result = WaterfillingFedAvg(link_costs={0: 8.0}, fraction_evaluate=0.0).start(
        grid, initial_arrays(), num_rounds=3)
    assert result.train_metrics_clientapp[3]["flrd.accepted"] == 4
    last = {m.metadata.dst_node_id: CompressionRequest.from_config(next(iter(m.content.config_records.values())))
            for m in grid.sent[-4:]}
    others = np.array([last[n].noise_var for n in last if n != dear])
    dear_targets = np.array(last[dear].noise_var)
    assert np.all(dear_targets >= others.max(axis=0)) and np.all(dear_targets > others.min(axis=0))

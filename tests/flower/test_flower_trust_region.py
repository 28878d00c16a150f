"""The trust-region rule inside the strategy: absolute targets from the first round."""

import numpy as np
from flower_fakes import InProcessGrid, initial_arrays, plain_client_app
from flwr.app import ConfigRecord

from flrd.clients import compression_mod
from flrd.protocol import CompressionRequest
from flrd.strategies.baselines import build_strategy
from flrd.trust_region import TrustRegionPolicy


def test_the_strategy_sends_absolute_targets_from_the_first_round_and_trains():
    strategy = build_strategy("trust-region", [200, 10], noise_fraction=0.03, fraction_evaluate=0.0)
    assert isinstance(strategy.policy, TrustRegionPolicy) and strategy.policy.noise_fraction == 0.03
    grid = InProcessGrid(plain_client_app([compression_mod]), 3)
    start = initial_arrays()
    messages = list(strategy.configure_train(1, start, ConfigRecord(), grid))
    request = CompressionRequest.from_config(messages[0].content["config"])
    assert request is not None and request.relative_noise is None
    mean_square = [float(np.mean(a.numpy().astype(np.float64) ** 2)) for a in start.values()]
    np.testing.assert_allclose(strategy.policy.reference_mean_square, mean_square)
    # Nothing is known of s2 yet: each of the 3 clients adds 3 D_l.
    expected = 3 * strategy.policy.first_round_fraction * strategy.policy._shrunk_mean_square(np.array(mean_square))
    np.testing.assert_allclose(request.noise_var, expected, rtol=1e-12)
    arrays, metrics = strategy.aggregate_train(1, grid.send_and_receive(messages))
    assert arrays is not None and metrics["flrd.accepted"] == 3
    assert strategy.policy.s2 is not None  # round 1 already feeds the estimates

"""SideInformationFedAvg: planning, successive decoding with deferral, hostile replies,
state, and a real Flower simulation (docs/wyner_ziv.md)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from flrd.codecs import CodecError
from flrd.codecs.message import encode_update
from flrd.config import RunConfig
from flrd.policy import FixedLambdaPolicy
from flrd.strategies import SideInformation, SideInformationFedAvg
from flrd.strategies.decoding import DeferredReply

SHAPES = {"w": (64, 256), "b": (64,)}
SX2, S2, K, LAM = 10.0, 1.0, 8, 4.0
ROWS = np.linspace(0.2, 2.0, 64)
PROFILE = np.outer(ROWS, np.ones(256)).ravel() / ROWS.mean()


def _updates(seed):
    rng = np.random.default_rng(seed)
    scale = {"w": PROFILE, "b": np.ones(64)}
    x = {n: np.sqrt(SX2 * scale[n]) * rng.standard_normal(scale[n].size) for n in SHAPES}
    ys = [{n: (x[n] + np.sqrt(S2 * scale[n]) * rng.standard_normal(x[n].size)).reshape(SHAPES[n]).astype(np.float32)
           for n in SHAPES} for _ in range(K)]
    return x, ys


def _strategy():
    policy = FixedLambdaPolicy([int(np.prod(s)) for s in SHAPES.values()], fixed_lambda=LAM)
    policy.sx2, policy.s2, policy.rounds_observed = np.full(2, SX2), np.full(2, S2), 1
    return SideInformationFedAvg(policy=policy, fraction_train=1.0)


def _round(strategy, server_round, ys, hostile=None):
    """Plan, encode, decode in node order (deferring, then retrying): per node the
    decoded update or the exception, and the messages' and independent sizes."""
    zeros = {n: np.zeros(s) for n, s in SHAPES.items()}
    nodes = list(range(1, K + 1))
    sent = strategy._plan(server_round, zeros, nodes)
    payloads = {node: encode_update(y, sent.requests[node], node_id=node).payload for node, y in zip(nodes, ys)}
    independent = sum(8 * len(encode_update(y, replace(sent.requests[n], wyner_ziv=None), node_id=n).payload)
                      for n, y in zip(nodes, ys))
    if hostile is not None:
        payloads[hostile] = encode_update({n: (v * 0 + 50.0).astype(np.float32) for n, v in ys[0].items()},
                                          sent.requests[hostile], node_id=hostile).payload
    accepted, results, deferred = [], {}, []
    for node in nodes:
        side = SideInformation(server_round, zeros, None, [], sent.requests[node], node, decoded_nodes=list(accepted))
        try:
            results[node] = strategy.decoder.decode(payloads[node], side)
            accepted.append(node)
        except DeferredReply:
            deferred.append(node)
    strategy.decoder.defer = False
    for node in deferred:
        side = SideInformation(server_round, zeros, None, [], sent.requests[node], node, decoded_nodes=list(accepted))
        try:
            results[node] = strategy.decoder.decode(payloads[node], side)
            accepted.append(node)
        except CodecError as err:
            results[node] = err
    strategy.decoder.defer = True
    strategy.decoder.feed(accepted)
    strategy.profiles.update(strategy.decoder.profiles(accepted))
    return sent, results, sum(8 * len(p) for p in payloads.values()), independent


def test_first_round_learns_the_profile_then_codes_below_independent_at_the_planned_noise():
    strategy = _strategy()
    _, ys = _updates(0)
    sent, results, bits, independent = _round(strategy, 1, ys)
    assert all(r.wyner_ziv is None for r in sent.requests.values())  # no profile yet
    assert np.corrcoef(strategy.profiles["w"].expand(), PROFILE)[0, 1] > 0.8
    x, ys = _updates(1)
    sent, results, bits, independent = _round(strategy, 2, ys)
    order = sorted(sent.requests)
    assert sent.requests[order[0]].wyner_ziv is None  # the first reply has no side information
    coded = [sent.requests[n].wyner_ziv for n in order[1:] if sent.requests[n].wyner_ziv is not None]
    assert len(coded) >= K - 2 and all(c[0] is not None and c[1] is None for c in coded)  # the big layer only
    assert all(not isinstance(r, Exception) for r in results.values())
    assert bits < 0.8 * independent
    aggregate = np.mean([r.arrays["w"].ravel() for r in results.values()], axis=0)
    noise = float(sent.targets[order[0]][0])
    measured = np.mean((aggregate - np.mean([y["w"].ravel() for y in ys], axis=0)) ** 2)
    assert abs(measured / (noise / K) - 1) < 0.15  # the plan's noise, per client, averaged over K


def test_a_hostile_reply_fails_alone():
    strategy = _strategy()
    _round(strategy, 1, _updates(0)[1])
    _, ys = _updates(1)
    sent, results, *_ = _round(strategy, 2, ys, hostile=3)
    assert isinstance(results[3], CodecError)
    assert all(not isinstance(r, Exception) for n, r in results.items() if n != 3)
    assert strategy.decoder.failed_replies == 1


def test_state_restores_the_same_plan():
    strategy = _strategy()
    _round(strategy, 1, _updates(0)[1])
    strategy.last_m2, strategy.independent_scale = np.array([11.0, 11.0]), 0.9
    restored = _strategy()
    restored.load_state_dict(strategy.state_dict())
    zeros = {n: np.zeros(s) for n, s in SHAPES.items()}
    assert restored._plan(2, zeros, list(range(1, K + 1))).requests == \
        strategy._plan(2, zeros, list(range(1, K + 1))).requests
    bad = {**strategy.state_dict(), "sideinfo.independent-scale": -1.0}
    with pytest.raises(ValueError, match="independent-scale"):
        restored.load_state_dict(bad)


def test_side_info_is_refused_where_it_cannot_apply():
    from flrd.strategies import build_strategy

    with pytest.raises(ValueError, match="side_info"):
        build_strategy("qsgd", [10], side_info=True)
    assert isinstance(build_strategy("fixed-lambda", [10], side_info=True), SideInformationFedAvg)


@pytest.mark.slow
def test_run_simulation_with_side_information(tmp_path):
    from flrd.clients.client_app import build_client_app
    from flrd.simulations.engine import simulate
    from flrd.strategies.server_app import build_server_app

    results = []
    config = RunConfig(num_server_rounds=3, fraction_train=1.0, min_train_nodes=5, fraction_evaluate=1.0,
                       local_steps=5, policy="fixed-lambda", fixed_lambda=16.0, side_info=True, audit=True)
    server = build_server_app(config, sink=lambda result, layers: results.append(result))
    simulate(server, build_client_app(config.to_run_config()), 5, config, out_dir=tmp_path)
    train = results[0].train_metrics_clientapp
    assert train[1]["flrd.wz-payloads"] == 0  # round 1 learns the profile
    for server_round in (2, 3):
        metrics = train[server_round]
        assert metrics["flrd.accepted"] == 5 and metrics["flrd.wz-failed"] == 0
        assert metrics["flrd.wz-payloads"] > 0
        assert metrics["flrd.uplink-bits"] <= 1.03 * metrics["flrd.independent-bits"]
    assert not math.isnan(float(train[3]["flrd.independent-bits"]))

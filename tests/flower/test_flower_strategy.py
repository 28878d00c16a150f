"""RateAwareFedAvg and CompressedStrategy driven through an in-process Grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flower_fakes import InProcessGrid, initial_arrays, plain_client_app
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideFixedClipping,
    FedAdam,
    FedAvg,
    FedProx,
)

from flrd.clients import compression_mod
from flrd.codecs.header import header_bytes
from flrd.policy import RatePolicy
from flrd.protocol import MESSAGE_ARRAY, CompressionRequest
from flrd.strategies import (
    BASELINES,
    CompressedStrategy,
    RateAwareFedAvg,
    RateControl,
    UpdateDecoder,
    build_strategy,
)
from flrd.strategies.decoding import ClientUpdate, SentRound
from flrd.trust_region import TrustRegionPolicy

NO_EVAL = {"fraction_evaluate": 0.0}


def _grid(num_nodes: int = 5, **kwargs) -> InProcessGrid:
    return InProcessGrid(plain_client_app([compression_mod]), num_nodes, **kwargs)


def _requests(grid: InProcessGrid) -> list[CompressionRequest]:
    return [CompressionRequest.from_config(next(iter(m.content.config_records.values())))
            for m in grid.sent]


def _arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def test_realized_bits_equal_what_flower_counts_minus_the_array_name():
    grid = _grid()
    result = RateAwareFedAvg(**NO_EVAL).start(grid, initial_arrays(), num_rounds=3)
    per_round = [grid.replies[5 * r:5 * r + 5] for r in range(3)]
    for server_round, replies in enumerate(per_round, start=1):
        counted = sum(r.content["arrays"].count_bytes() - len(MESSAGE_ARRAY) for r in replies)
        assert result.train_metrics_clientapp[server_round]["flrd.uplink-bits"] == 8 * counted
        assert result.train_metrics_clientapp[server_round]["flrd.accepted"] == 5


def test_report_and_reply_bits_equal_what_flower_counts():
    plain = _grid()
    result = RateAwareFedAvg(**NO_EVAL).start(plain, initial_arrays(), num_rounds=1)
    assert all("flrd.metrics" not in r.content.metric_records for r in plain.replies)
    assert result.train_metrics_clientapp[1]["flrd.report-bits"] == 0  # nothing beside the payload

    grid = _grid()
    result = RateAwareFedAvg(audit=True, **NO_EVAL).start(grid, initial_arrays(), num_rounds=2)
    for server_round in (1, 2):
        replies = grid.replies[5 * (server_round - 1):5 * server_round]
        counted = sum(r.content.metric_records["flrd.metrics"].count_bytes() for r in replies)
        whole = sum(record.count_bytes() for r in replies
                    for key, record in r.content.items() if key != "flrd.exact-update")
        metrics = result.train_metrics_clientapp[server_round]
        assert counted > 0 and metrics["flrd.report-bits"] == 8 * counted
        assert metrics["flrd.reply-bits"] == 8 * whole > metrics["flrd.uplink-bits"]


def test_rounds_follow_the_policy_and_report_bounds():
    sizes = [a.size for a in initial_arrays().to_numpy_ndarrays()]
    result = RateAwareFedAvg(policy=RatePolicy(sizes), **NO_EVAL).start(_grid(), initial_arrays(), num_rounds=3)
    first, third = result.train_metrics_clientapp[1], result.train_metrics_clientapp[3]
    assert first["flrd.warmup"] == 1 and "flrd.planned-r-sum-bits" not in first
    assert third["flrd.warmup"] == 0
    assert 0 < third["flrd.planned-r-sum-bits"] < third["flrd.planned-r-ind-bits"]
    assert 0 < third["flrd.planned-lambda"] <= 4.0
    assert len(third["flrd.sx2"]) == len(third["flrd.s2"]) == 2


def test_the_default_policy_is_the_trust_region_rule_without_a_warm_up():
    grid = _grid()
    strategy = RateAwareFedAvg(**NO_EVAL)
    result = strategy.start(grid, initial_arrays(), num_rounds=2)
    assert isinstance(strategy.policy, TrustRegionPolicy)
    assert result.train_metrics_clientapp[1]["flrd.warmup"] == 0
    assert all(r.relative_noise is None and r.noise_var is not None for r in _requests(grid))


class HalfNoiseFedAvg(RateAwareFedAvg):
    """Overrides only the distortion rule: a fixed fraction of the gradient noise."""

    def noise_targets(self, server_round, plan):
        return 0.5 * np.maximum(self.policy.s2, 1e-6) if self.policy.s2 is not None else \
            np.full(2, 1e-3)


def test_a_subclass_overriding_only_the_distortion_rule_runs_rounds():
    grid = _grid()
    strategy = HalfNoiseFedAvg(**NO_EVAL)
    result = strategy.start(grid, initial_arrays(), num_rounds=3)
    requests = _requests(grid)
    assert all(r.noise_var == (1e-3, 1e-3) for r in requests[:5])
    s2 = result.train_metrics_clientapp[2]["flrd.s2"]  # estimates used to plan round 3
    assert all(r.noise_var == pytest.approx(tuple(0.5 * np.array(s2))) for r in requests[10:])
    assert result.train_metrics_clientapp[3]["flrd.accepted"] == 5


def test_stock_fedadam_wrapped_matches_fedadam_on_plain_clients():
    plain = FedAdam(**NO_EVAL).start(
        InProcessGrid(plain_client_app(), 4), initial_arrays(), num_rounds=3)
    wrapped = CompressedStrategy(FedAdam(**NO_EVAL), codec="float32").start(
        _grid(4), initial_arrays(), num_rounds=3)
    for name, values in _arrays(plain.arrays).items():
        np.testing.assert_allclose(_arrays(wrapped.arrays)[name], values, atol=1e-5)
    assert wrapped.train_metrics_clientapp[3]["flrd.accepted"] == 4
    assert wrapped.train_metrics_clientapp[3]["train_loss"] == pytest.approx(
        plain.train_metrics_clientapp[3]["train_loss"], rel=1e-4)


@pytest.mark.parametrize("inner", [
    lambda: FedProx(proximal_mu=0.1, **NO_EVAL),
    lambda: DifferentialPrivacyServerSideFixedClipping(
        FedAvg(**NO_EVAL), noise_multiplier=0.0, clipping_norm=1e-3, num_sampled_clients=4),
], ids=["fedprox", "dp-fixed-clipping"])
def test_other_stock_strategies_run_wrapped(inner):
    grid = _grid(4)
    result = CompressedStrategy(inner(), audit=True).start(grid, initial_arrays(), num_rounds=2)
    assert result.train_metrics_clientapp[2]["flrd.accepted"] == 4
    moved = [_arrays(result.arrays)[k] - _arrays(initial_arrays())[k] for k in ("w", "b")]
    assert all(np.all(np.isfinite(d)) for d in moved) and np.any(moved[0] != 0)


def test_dp_clipping_acts_on_decoded_updates():
    inner = DifferentialPrivacyServerSideFixedClipping(
        FedAvg(**NO_EVAL), noise_multiplier=0.0, clipping_norm=1e-3, num_sampled_clients=4)
    result = CompressedStrategy(inner, codec="float32").start(_grid(4), initial_arrays(),
                                                              num_rounds=1)
    step = [_arrays(result.arrays)[k] - _arrays(initial_arrays())[k] for k in ("w", "b")]
    assert np.sqrt(sum(np.sum(d.astype(np.float64) ** 2) for d in step)) <= 1e-3 * (1 + 1e-4)


def test_dp_accountant_refuses_rate_aware_fedavg_but_accepts_the_wrapped_design():
    from types import SimpleNamespace

    from flwr.supercore.privacy_accounting import (
        NeighboringRelation,
        PrivacyConfig,
        SamplingMethod,
    )

    accountant = SimpleNamespace(config=PrivacyConfig(
        1e-5, 4, NeighboringRelation.ADD_OR_REMOVE_ONE, SamplingMethod.NO_AMPLIFICATION))
    with pytest.raises(ValueError, match="FedAvg.aggregate_train"):
        DifferentialPrivacyServerSideFixedClipping(RateAwareFedAvg(), 1.0, 1.0, 4,
                                                   accountant=accountant)
    inner = DifferentialPrivacyServerSideFixedClipping(FedAvg(), 1.0, 1.0, 4,
                                                       accountant=accountant)
    assert CompressedStrategy(inner).strategy is inner


def test_inverse_variance_weights_when_clients_get_different_targets():
    strategy = RateAwareFedAvg(policy=RatePolicy([3, 2]))
    strategy.policy.s2 = np.array([1.0, 2.0])
    sent = SentRound(1, None, {"a": np.zeros(3), "b": np.zeros(2)}, {}, {})

    def update(node, examples, targets):
        return ClientUpdate(node, {}, type("R", (), {"num_examples": examples})(), 0,
                            None if targets is None else np.array(targets), None)

    same = strategy.aggregation_weights([update(1, 10, [1, 1]), update(2, 30, [1, 1])], sent)
    np.testing.assert_allclose(same, [[0.25, 0.25], [0.75, 0.75]])
    differ = strategy.aggregation_weights([update(1, 10, [1.0, 0.0]), update(2, 30, [3.0, 2.0])],
                                          sent)
    inverse = np.array([[1 / 2, 1 / 2], [1 / 4, 1 / 4]])
    np.testing.assert_allclose(differ, inverse / inverse.sum(axis=0))


class SplitTargets(RateAwareFedAvg):
    """The per-client hook: the first sampled node gets four times the noise."""

    def client_targets(self, server_round, node_ids, targets):
        return {n: targets * (4.0 if i == 0 else 1.0) for i, n in enumerate(sorted(node_ids))}


def test_per_client_targets_reach_the_clients():
    grid = _grid(3)
    SplitTargets(**NO_EVAL).start(grid, initial_arrays(), num_rounds=3)
    last = {m.metadata.dst_node_id: r for m, r in zip(grid.sent[-3:], _requests(grid)[-3:])}
    first, *rest = sorted(last)
    for node in rest:
        assert np.allclose(np.array(last[first].noise_var), 4 * np.array(last[node].noise_var))


def test_state_restore_continues_with_the_same_decisions(tmp_path):
    def start(strategy, arrays, rounds):
        grid = InProcessGrid(plain_client_app([compression_mod], seed_by_round=False), 4)
        return grid, strategy.start(grid, arrays, num_rounds=rounds)

    grid_a, straight = start(RateAwareFedAvg(**NO_EVAL), initial_arrays(), 5)
    first = RateAwareFedAvg(**NO_EVAL)
    _, half = start(first, initial_arrays(), 3)
    (tmp_path / "state.json").write_text(json.dumps(first.state_dict()))
    resumed = RateAwareFedAvg(**NO_EVAL)  # a fresh server process
    resumed.load_state_dict(json.loads((tmp_path / "state.json").read_text()))
    grid_b, rest = start(resumed, half.arrays, 2)

    def decisions(grid, skip=0):
        return sorted(((m.metadata.dst_node_id, r) for m, r in
                       zip(grid.sent[skip:], _requests(grid)[skip:])), key=lambda p: p[0])
    assert decisions(grid_b) == decisions(grid_a, skip=12)
    assert rest.train_metrics_clientapp[2]["flrd.planned-lambda"] == \
        straight.train_metrics_clientapp[5]["flrd.planned-lambda"]
    for name, values in _arrays(straight.arrays).items():
        np.testing.assert_array_equal(_arrays(rest.arrays)[name], values)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_every_baseline_runs_two_rounds(name):
    grid = _grid(3)
    strategy = build_strategy(name, [200, 10], bits=2.0, fixed_lambda=2.0, audit=True, **NO_EVAL)
    result = strategy.start(grid, initial_arrays(), num_rounds=2)
    metrics = result.train_metrics_clientapp[2]
    assert metrics["flrd.accepted"] == 3 and metrics["flrd.measured-distortion-audit"] >= 0
    assert all(np.all(np.isfinite(v)) for v in _arrays(result.arrays).values())
    request = _requests(grid)[-1]
    assert request.codec == BASELINES[name].codec
    assert request.error_feedback == BASELINES[name].error_feedback
    if BASELINES[name].fixed_rate:
        assert request.bits == 2.0
    if name == "fixed-lambda":
        assert metrics["flrd.planned-lambda"] == 2.0
    if name.startswith("signsgd"):  # one bit per coordinate plus each layer's sign payload
        bits_per_client = metrics["flrd.uplink-bits"] / 3
        headers = header_bytes(2, 2) + header_bytes(1, 2)  # layers w (20, 10) and b (10,)
        assert 210 + 8 * headers <= bits_per_client < 210 + 8 * (headers + 32)


def test_empty_rounds_and_all_failures_keep_the_model():
    grid = InProcessGrid(plain_client_app([compression_mod], fail=lambda r, p: True), 3)
    result = RateAwareFedAvg(**NO_EVAL).start(grid, initial_arrays(), num_rounds=2)
    assert result.train_metrics_clientapp[2]["flrd.failed"] == 3
    assert result.train_metrics_clientapp[2]["flrd.uplink-bits"] == 0
    for name, values in _arrays(initial_arrays()).items():
        np.testing.assert_array_equal(_arrays(result.arrays or initial_arrays())[name], values)


def test_configs_with_several_config_records_are_refused():
    class TwoConfigs(FedAvg):
        def configure_train(self, server_round, arrays, config, grid):
            content = {"arrays": arrays, "a": ConfigRecord(), "b": ConfigRecord()}
            return [Message(RecordDict(content), dst_node_id=1, message_type="train")]

    class Compressed(RateControl, TwoConfigs):
        pass

    with pytest.raises(ValueError, match="several ConfigRecords"):
        Compressed().configure_train(1, initial_arrays(), ConfigRecord(), grid=None)


def test_fedprox_config_reaches_the_clients_next_to_the_flrd_keys():
    grid = _grid(3)
    CompressedStrategy(FedProx(proximal_mu=0.1, **NO_EVAL)).start(grid, initial_arrays(), 1)
    config = grid.sent[0].content["config"]
    assert config["proximal-mu"] == 0.1 and config["flrd.codec"] == "dithered"


class RecordingDecoder(UpdateDecoder):
    """Decodes as usual and records the side information it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, int, object]] = []

    def decode(self, payloads, side):
        self.seen.append((side.server_round, len(side.decoded), side.previous_update))
        return super().decode(payloads, side)


def test_the_decoder_receives_side_information():
    decoder = RecordingDecoder()
    first = RateAwareFedAvg(decoder=decoder, **NO_EVAL).start(_grid(3), initial_arrays(), 1)
    strategy = RateAwareFedAvg(decoder=decoder, **NO_EVAL)
    strategy.start(_grid(3), initial_arrays(), 2)
    assert [(r, k) for r, k, _ in decoder.seen[3:]] == [(1, 0), (1, 1), (1, 2),
                                                       (2, 0), (2, 1), (2, 2)]
    assert all(prev is None for r, _, prev in decoder.seen[3:] if r == 1)
    applied = {k: _arrays(first.arrays)[k] - _arrays(initial_arrays())[k] for k in ("w", "b")}
    for name, values in applied.items():  # round 2 sees round 1's applied update
        np.testing.assert_allclose(decoder.seen[6][2][name], values, atol=1e-6)


class BrokenRule(RateAwareFedAvg):
    def noise_targets(self, server_round, plan):
        return np.array([0.1, 0.1, 0.1])  # three targets for a two-layer model


def test_a_distortion_rule_of_the_wrong_shape_fails_at_the_server():
    with pytest.raises(ValueError, match="must be 2 finite values"):
        BrokenRule(**NO_EVAL).configure_train(1, initial_arrays(), ConfigRecord(), _grid(2))


@pytest.mark.parametrize(("name", "planned"), [("rate-aware", True), ("fixed-lambda", True),
                                               ("signsgd", False), ("float32", False), ("m22", False)])
def test_baselines_report_a_plan_only_when_their_codec_follows_it(name, planned):
    strategy = build_strategy(name, [200, 10], bits=2.0, fixed_lambda=2.0, **NO_EVAL)
    metrics = strategy.start(_grid(3), initial_arrays(), num_rounds=2).train_metrics_clientapp[2]
    assert ("flrd.planned-lambda" in metrics) == planned
    assert ("flrd.planned-distortion" in metrics) == planned

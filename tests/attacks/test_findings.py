"""Regression tests for the findings of issue 12 that are not one reply kind of
``test_hostile_replies.py``: crafted codec blocks, absurd losses, real replays,
configuration and saved state."""

from __future__ import annotations

import copy

import hostile
import numpy as np
import pytest
from flwr.app import ConfigRecord, MetricRecord
from rounds import HOSTILE_NODE, Round, assert_same_arrays, context_of

from flrd.policy import RatePolicy
from flrd.strategies import RateAwareFedAvg, WaterfillingFedAvg

NO_EVAL = {"fraction_evaluate": 0.0}


def _float32_round() -> Round:
    return Round(RateAwareFedAvg(codec="float32", **NO_EVAL))


@pytest.mark.parametrize("shape", [(0, 2**63), (2**63 - 1,), (2**31, 2**31), (10, 20)],
                         ids=["0x2^63", "2^63", "2^62", "other-layer"])
def test_a_block_declaring_any_shape_is_left_out_before_allocating(shape):
    def craft(reply, ctx):
        blocks = [hostile.float32_block(ctx, i, np.zeros(4), shape=shape) for i in range(len(ctx.layout))]
        hostile.set_payload(reply, hostile.baseline_message(ctx, blocks))

    run = _float32_round()
    arrays, metrics = run.run(1, craft)
    assert metrics["flrd.rejected-payload"] == 1
    assert_same_arrays(arrays, run.honest[0])


@pytest.mark.parametrize("value, kind", [(np.inf, "payload"), (-np.inf, "payload"),
                                         (np.finfo(np.float32).max, "payload"),
                                         (np.nan, "payload"), (3e38, "outlier"), (1e30, "outlier")])
def test_non_finite_or_huge_values_in_a_valid_message_are_left_out_not_clipped(value, kind, caplog):
    def craft(reply, ctx):
        blocks = [hostile.float32_block(ctx, i, np.full(int(np.prod(s)), value), shape=s)
                  for i, s in enumerate(ctx.layout.values())]
        hostile.set_payload(reply, hostile.baseline_message(ctx, blocks, m2=1e-4))

    run = _float32_round()
    arrays, metrics = run.run(1, craft)
    assert metrics[f"flrd.rejected-{kind}"] == 1, caplog.text
    assert_same_arrays(arrays, run.honest[0])
    assert all(np.isfinite(a.numpy()).all() for a in arrays.values())


def test_a_replayed_reply_from_another_node_or_an_earlier_round_is_left_out():
    run = Round(RateAwareFedAvg(**NO_EVAL))
    run.run(1)
    first = {r.metadata.src_node_id: hostile.payload_of(r) for r in run.grid.replies}

    def replay(reply, ctx):  # this node's own round-1 message, then another node's
        hostile.set_payload(reply, first[HOSTILE_NODE])

    _, metrics = run.run(2, replay)
    assert metrics["flrd.rejected-payload"] == 1

    def replay_other(reply, ctx):
        current = {r.metadata.src_node_id: r for r in run.grid.replies[-6:]}
        hostile.set_payload(reply, hostile.payload_of(current[HOSTILE_NODE + 1]))

    _, metrics = run.run(3, replay_other)
    assert metrics["flrd.rejected-payload"] == 1


def test_one_absurd_train_loss_does_not_steer_the_policy():
    run = Round(RateAwareFedAvg(**NO_EVAL))
    run.run(1), run.run(2)
    _, metrics = run.run(3, hostile.absurd_loss)
    assert metrics["flrd.rejected"] == 0  # a finite loss is accepted; the policy tracks the median
    state, honest = run.strategy.policy.state_dict(), run.honest_strategy.policy.state_dict()
    assert state["smoothed_loss"] < 1e3 and state["best_loss"] < 1e3
    assert abs(state["smoothed_loss"] - honest["smoothed_loss"]) < 0.5 * honest["smoothed_loss"]


def test_inflated_statistics_move_the_estimates_by_less_than_2x():
    """Two of ten clients send m2 30x the truth (plausible enough to be accepted): the
    winsorized estimates stay within 2x of the honest ones."""
    run = Round(RateAwareFedAvg(**NO_EVAL), num_nodes=10)
    run.run(1), run.run(2)
    clean = copy.deepcopy(run)
    clean.run(3)

    def two_inflated(reply, ctx):
        hostile.inflated_m2(reply, ctx)

    messages = list(run.strategy.configure_train(3, run.arrays, ConfigRecord(), run.grid))
    replies = run.grid.send_and_receive(messages)
    sent = {m.metadata.dst_node_id: m for m in messages}
    for node in (103, 107):
        reply = next(r for r in replies if r.metadata.src_node_id == node)
        two_inflated(reply, context_of(sent[node], reply))
    _, metrics = run.strategy.aggregate_train(3, replies)
    for key in ("sx2", "s2"):
        forged, honest = getattr(run.strategy.policy, key), getattr(clean.strategy.policy, key)
        ratio = np.maximum(forged / honest, honest / forged)
        assert np.all(ratio < 2.0), (key, ratio)


def test_three_accepted_replies_far_noisier_than_their_targets_do_not_move_sx2():
    """sx2 comes from cross products of the decoded updates, so an aggregated update
    with 30x its power in extra noise (statistics honest for what it sent) cannot
    raise it; before, the aggregate's power carried that noise into sx2."""
    policy = RatePolicy([200, 10], smoothing=1.0, shrink_coordinates=0.0)  # this round's estimate alone
    run = Round(RateAwareFedAvg(policy=policy, **NO_EVAL), num_nodes=10)
    run.run(1), run.run(2)
    start = run.arrays["w"].numpy().astype(np.float64)
    clean = copy.deepcopy(run)
    clean.run(3)
    messages = list(run.strategy.configure_train(3, run.arrays, ConfigRecord(), run.grid))
    replies = run.grid.send_and_receive(messages)
    sent = {m.metadata.dst_node_id: m for m in messages}
    for node in (103, 105, 107):
        reply = next(r for r in replies if r.metadata.src_node_id == node)
        hostile.noisy_update(reply, context_of(sent[node], reply))
    arrays, metrics = run.strategy.aggregate_train(3, replies)
    assert metrics["flrd.accepted"] == 10, dict(metrics)
    forged, honest = run.strategy.policy.sx2, clean.strategy.policy.sx2
    # The attack works: the extra noise raises the aggregate's power in layer w by more
    # than 0.3 sx2, so §8's sx2 (aggregate power minus declared noise) would move > 1.3x.
    power = {name: float(np.mean((a["w"].numpy() - start) ** 2)) for name, a in (("forged", arrays),
                                                                                ("honest", clean.arrays))}
    assert power["forged"] - power["honest"] > 0.3 * honest[0], (power, honest)
    ratio = forged[0] / honest[0]  # the 200-coordinate layer (the bias layer's sx2 is ~0)
    assert np.isfinite(ratio) and 1 / 1.3 < ratio < 1.3, ratio


@pytest.mark.parametrize("kwargs, bound", [
    ({"codec": "nope"}, "unknown codec"), ({"bits": 64}, "(0, 32]"), ({"bits": -1}, "(0, 32]"),
    ({"fraction_train": -3}, "(0, 1]"), ({"fraction_train": 5}, "(0, 1]"),
    ({"fraction_train": 0}, "(0, 1]"), ({"seed": -1}, "2**64"),
])
def test_strategy_constructors_name_the_bound(kwargs, bound):
    with pytest.raises(ValueError, match=bound.replace("(", r"\(").replace("]", r"\]").replace("*", r"\*")):
        RateAwareFedAvg(**kwargs)


@pytest.mark.parametrize("kwargs", [{"lambda_cap": 1e308}, {"lambda_cap": -1.0}, {"robust_fraction": 0.5}])
def test_policy_constructor_names_the_bound(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        RatePolicy([10, 10], **kwargs)


def test_simulate_with_a_negative_alpha_exits_non_zero_with_one_line(capsys):
    from flrd.simulations.cli import main

    code = main(["simulate", "--alpha", "-1", "--rounds", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "alpha" in err[0], err


def test_waterfilling_resumes_to_identical_decisions():
    run = Round(WaterfillingFedAvg(**NO_EVAL))
    run.run(1), run.run(2)
    resumed = WaterfillingFedAvg(**NO_EVAL)
    resumed.load_state_dict(copy.deepcopy(run.strategy.state_dict()))
    twin = copy.deepcopy(run)
    twin.strategy = resumed
    resumed.previous_update = run.strategy.previous_update  # side information is not state
    a = list(run.strategy.configure_train(3, run.arrays, ConfigRecord(), run.grid))
    b = list(twin.strategy.configure_train(3, twin.arrays, ConfigRecord(), twin.grid))
    def by_node(messages):
        return {m.metadata.dst_node_id: dict(m.content["config"]) for m in messages}

    assert by_node(a) == by_node(b) and len(a) == 6


def test_forged_report_records_have_no_effect():
    """``flrd.qnoise``, ``flrd.m2`` and ``flrd.payload-bits`` are no longer read: a reply
    carrying forged ones aggregates and steers exactly like the same reply without."""
    from flrd.protocol import M2, METRICS_RECORD, PAYLOAD_BITS, QNOISE

    run = Round(RateAwareFedAvg(**NO_EVAL))
    run.run(1), run.run(2)
    messages = list(run.strategy.configure_train(3, run.arrays, ConfigRecord(), run.grid))
    replies = run.grid.send_and_receive(messages)
    twin = copy.deepcopy(run.strategy)
    forged = copy.deepcopy(replies)
    for reply in forged:  # the record travels only when asked; a hostile client sends it anyway
        reply.content[METRICS_RECORD] = MetricRecord({M2: [1e6, 1e6], QNOISE: [1e-30, 1e-30], PAYLOAD_BITS: 8})
    arrays, metrics = run.strategy.aggregate_train(3, forged)
    expected, expected_metrics = twin.aggregate_train(3, copy.deepcopy(replies))
    assert_same_arrays(arrays, expected)
    assert metrics["flrd.uplink-bits"] == expected_metrics["flrd.uplink-bits"]
    assert run.strategy.policy.state_dict() == twin.policy.state_dict()

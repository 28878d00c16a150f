"""Hypothesis-driven hostile messages through RateAwareFedAvg.aggregate_train.

Every case frames mutated, random or crafted bytes with a valid 16-bit check (which a
client can always compute), so the decoder itself runs. No exception may escape, the
hostile reply is never counted as a failure of the others, an accepted one must be a
finite update of the right shapes, and one reply costs bounded time.
"""

from __future__ import annotations

import copy
import functools
import time

import hostile
import numpy as np
from flwr.app import ConfigRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rounds import HOSTILE_NODE, Round, context_of

from flrd.strategies import RateAwareFedAvg

# Worst seconds one hostile reply may add on a shared 2-core CI machine. The stratified
# coder builds a fixed-size table (up to 2**16 symbols) for a forged maximal statistic
# the first time it meets one; everything else is bounded by the tiny layer here.
SECONDS_PER_REPLY = 5.0


@functools.cache
def _prepare():
    run = Round(RateAwareFedAvg(fraction_evaluate=0.0))
    run.run(1), run.run(2)
    messages = list(run.strategy.configure_train(3, run.arrays, ConfigRecord(), run.grid))
    replies = run.grid.send_and_receive(messages)
    sent = {m.metadata.dst_node_id: m for m in messages}
    target = next(r for r in replies if r.metadata.src_node_id == HOSTILE_NODE)
    return run.strategy, replies, context_of(sent[HOSTILE_NODE], target), hostile.payload_of(target)


MAX_BODY = 128  # bytes; the honest body of this 6-node round is ~22

# What to do with the honest body: ("random", bytes), ("mutate", xor edits, cut),
# ("stats", forged leading statistic bytes, trailing bytes).
actions = st.one_of(
    st.tuples(st.just("random"), st.binary(max_size=MAX_BODY)),
    st.tuples(st.just("mutate"), st.lists(st.tuples(st.integers(0, MAX_BODY), st.integers(1, 255)),
                                          max_size=8), st.integers(0, MAX_BODY)),
    st.tuples(st.just("stats"), st.binary(min_size=1, max_size=4), st.binary(max_size=8)),
)


def _body(honest: bytes, action: tuple) -> bytes:
    if action[0] == "random":
        return action[1]
    if action[0] == "mutate":
        return _edit(honest, action[1])[: action[2]]
    head, tail = action[1], action[2]
    return head + honest[len(head):] + tail


def _edit(data: bytes, changes: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for pos, byte in changes:
        if out:
            out[pos % len(out)] ^= byte
    return bytes(out)


@settings(max_examples=1500, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(action=actions, family=st.integers(0, 255))
def test_no_hostile_message_escapes_or_costs_more_than_its_own_reply(action, family):
    saved, saved_replies, ctx, honest = _prepare()
    strategy, replies = copy.deepcopy(saved), copy.deepcopy(saved_replies)
    body = _body(honest[3:], action)
    reply = next(r for r in replies if r.metadata.src_node_id == HOSTILE_NODE)
    message = hostile.frame(ctx, body, family & 1)
    if family > 1:  # also a wrong version/flags byte
        message = bytes([family]) + message[1:]
    hostile.set_payload(reply, message)
    started = time.perf_counter()
    arrays, metrics = strategy.aggregate_train(3, replies)
    assert time.perf_counter() - started < SECONDS_PER_REPLY
    assert metrics["flrd.accepted"] + metrics["flrd.rejected"] == 6
    assert metrics["flrd.accepted"] >= 5  # the honest replies always count
    assert all(np.isfinite(a.numpy()).all() for a in arrays.values())

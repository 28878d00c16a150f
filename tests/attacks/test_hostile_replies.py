"""Every hostile reply kind is left out, named and counted; the honest aggregate is unchanged.

Each case runs the real round flow (``configure_train`` -> in-process clients with
``compression_mod`` -> ``aggregate_train``) of RateAwareFedAvg under Corollary 3's rule
and of CompressedStrategy around Flower's FedAvg under the default trust-region rule, in
the first round (Corollary 3: a warm-up with relative noise targets) and in a round with
per-layer noise targets, and compares the aggregate with the same round without the
hostile reply.
"""

from __future__ import annotations

import copy

import hostile
import pytest
from flwr.serverapp.strategy import FedAvg
from rounds import HOSTILE_NODE, Round, assert_same_arrays

from flrd.policy import RatePolicy
from flrd.strategies import CompressedStrategy, RateAwareFedAvg

KIND_OF = {"list_loss": "metrics", "nan_loss": "metrics", "negative_examples": "metrics",
           "zero_examples": "metrics", "absurd_examples": "metrics", "list_examples": "metrics",
           "huge_examples": "outlier", "huge_values": "outlier",
           # warm-up: the noise is relative to the forged m2, so the decoded update is
           # as loud as the statistic says, and stands out from the round instead
           "forged_m2": ("payload", "outlier")}


class Corollary3FedAvg(RateAwareFedAvg):
    """Corollary 3's rule, whose first round is a warm-up (relative noise targets)."""

    def make_policy(self, layer_sizes):
        return RatePolicy(layer_sizes)


STRATEGIES = {
    "rate-aware": lambda: Corollary3FedAvg(fraction_evaluate=0.0),
    "compressed-fedavg": lambda: CompressedStrategy(FedAvg(fraction_evaluate=0.0)),
}


def _name(kind) -> str:
    return next(k for k, v in vars(hostile).items() if v is kind)


_PREPARED: dict[tuple[str, bool], Round] = {}


def _prepared(strategy: str, targets: bool) -> Round:
    """A copy of a Round ready for its hostile round: fresh (warm-up), or after two
    clean rounds (per-layer noise targets). Built once per module."""
    if (strategy, targets) not in _PREPARED:
        run = Round(STRATEGIES[strategy]())
        if targets:
            run.run(1), run.run(2)
        run.grid.sent.clear(), run.grid.replies.clear()
        _PREPARED[strategy, targets] = run
    return copy.deepcopy(_PREPARED[strategy, targets])


@pytest.mark.parametrize("targets", [False, True], ids=["first-round", "noise-targets"])
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("kind", hostile.EXCLUDED.values(), ids=hostile.EXCLUDED.keys())
def test_a_hostile_reply_is_left_out_named_and_counted(kind, strategy, targets, caplog):
    run = _prepared(strategy, targets)
    server_round = 3 if targets else 1
    arrays, metrics = run.run(server_round, kind)
    kinds = KIND_OF.get(_name(kind), "payload")
    expected = next((k for k in kinds if metrics[f"flrd.rejected-{k}"]), kinds[0]) \
        if isinstance(kinds, tuple) else kinds
    assert metrics[f"flrd.rejected-{expected}"] == 1, dict(metrics)
    assert (metrics["flrd.rejected"], metrics["flrd.accepted"]) == (1, 5)
    assert f"reply from node {HOSTILE_NODE} left out ({expected})" in caplog.text
    honest_arrays, honest_metrics = run.honest
    assert_same_arrays(arrays, honest_arrays)
    if targets:  # the policy learnt exactly what it learns without the reply
        assert run.strategy.policy.state_dict() == run.honest_strategy.policy.state_dict()
    assert honest_metrics["flrd.accepted"] == 5

"""RateAwareFedAvg: FedAvg whose clients send updates at the rate-distortion-optimal rate."""

from __future__ import annotations

from collections.abc import Callable
from logging import INFO

from flwr.app import MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp.strategy import FedAvg

from flrd.policy import RatePolicy
from flrd.protocol import METRICS_RECORD

from .aggregation import apply_update, majority_update, to_record, weighted_mean
from .decoding import DecodedRound, UpdateDecoder
from .rate_control import Aggregate, RateControl

__all__ = ["RateAwareFedAvg"]


class RateAwareFedAvg(RateControl, FedAvg):
    """FedAvg with compressed uplink at the distortion chosen by a rate policy.

    Each round the policy (by default the trust-region rule of docs/THEORY.md §17;
    ``RatePolicy`` for Corollary 3 of the seed paper; both on live estimates of the
    global-gradient variance ``sx2`` and gradient-noise variance ``s2``) picks the
    distortion; clients running ``compression_mod`` add the matching quantization
    noise; the strategy decodes, checks and averages the updates (inverse-variance
    weights when clients had different targets, otherwise FedAvg's example weights)
    and reports realized uplink bits next to the bounds ``R_sum`` and ``R_ind``.
    The round flow is :class:`~flrd.strategies.RateControl`'s; this class only
    chooses the aggregation (:meth:`aggregate_decoded`).

    Parameters
    ----------
    policy, codec, bits, error_feedback, audit, seed, decoder, loss_key, min_replies
        See :class:`~flrd.strategies.rate_control.RateControl`.
    majority_vote : bool (default: False)
        Combine the decoded updates by sign majority vote (SignSGD-MV) instead of
        averaging them.
    fraction_train, fraction_evaluate, min_train_nodes, min_evaluate_nodes,
    min_available_nodes, weighted_by_key, arrayrecord_key, configrecord_key,
    train_metrics_aggr_fn, evaluate_metrics_aggr_fn
        As in :class:`flwr.serverapp.strategy.FedAvg`; ``train_metrics_aggr_fn``
        sees the apps' own MetricRecords (flrd's record is reported separately).

    Examples
    --------
    Server side::

        strategy = RateAwareFedAvg(codec="dithered", fraction_train=0.5)
        result = strategy.start(grid, ArrayRecord(model.state_dict()), num_rounds=10)

    Client side: add ``flrd.clients.compression_mod`` to the ClientApp's mods.
    """

    # pylint: disable=too-many-arguments,too-many-locals
    def __init__(
        self,
        *,
        policy: RatePolicy | None = None,
        codec: str = "dithered",
        bits: float | None = None,
        error_feedback: bool = False,
        audit: bool = False,
        seed: int = 0,
        decoder: UpdateDecoder | None = None,
        loss_key: str = "train_loss",
        min_replies: int = 0,
        majority_vote: bool = False,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        min_train_nodes: int = 2,
        min_evaluate_nodes: int = 2,
        min_available_nodes: int = 2,
        weighted_by_key: str = "num-examples",
        arrayrecord_key: str = "arrays",
        configrecord_key: str = "config",
        train_metrics_aggr_fn: Callable[[list[RecordDict], str], MetricRecord] | None = None,
        evaluate_metrics_aggr_fn: Callable[[list[RecordDict], str], MetricRecord] | None = None,
    ) -> None:
        super().__init__(
            policy=policy, codec=codec, bits=bits, error_feedback=error_feedback,
            audit=audit, seed=seed, decoder=decoder, loss_key=loss_key, min_replies=min_replies,
            fraction_train=fraction_train, fraction_evaluate=fraction_evaluate,
            min_train_nodes=min_train_nodes, min_evaluate_nodes=min_evaluate_nodes,
            min_available_nodes=min_available_nodes, weighted_by_key=weighted_by_key,
            arrayrecord_key=arrayrecord_key, configrecord_key=configrecord_key,
            train_metrics_aggr_fn=train_metrics_aggr_fn,
            evaluate_metrics_aggr_fn=evaluate_metrics_aggr_fn,
        )
        self.majority_vote = majority_vote

    def summary(self) -> None:
        """Log summary configuration of the strategy."""
        log(INFO, "\t├──> flrd settings:")
        log(INFO, "\t│\t├── Codec: %s (%s)", self.codec,
            f"{self.bits} bits/coordinate" if self.bits is not None else "policy targets")
        log(INFO, "\t│\t├── Error feedback: %s | audit: %s", self.error_feedback, self.audit)
        log(INFO, "\t│\t└── Aggregation: %s", "majority vote" if self.majority_vote else "mean")
        super().summary()

    def aggregate_decoded(self, server_round: int, decoded: DecodedRound) -> Aggregate:
        """The weighted mean of the decoded updates (:meth:`aggregation_weights`), or
        their sign majority vote, applied to the global model.

        The majority vote is not linear: it returns no weights.
        """
        if self.majority_vote:
            update, weights = majority_update(decoded.updates), None
        else:
            weights = self.aggregation_weights(decoded.updates, decoded.sent)
            update = weighted_mean(decoded.updates, weights)
        arrays = to_record(apply_update(decoded.sent.global_arrays, update))
        records = [RecordDict({k: v for k, v in r.content.metric_records.items() if k != METRICS_RECORD})
                   for r in decoded.replies]
        return Aggregate(arrays, self.train_metrics_aggr_fn(records, self.weighted_by_key), weights)

"""RateAwareFedAvg: FedAvg whose clients send updates at the rate-distortion-optimal rate."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from logging import INFO, WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import sample_nodes

from flrd.policy import RatePolicy
from flrd.protocol import METRICS_RECORD

from .aggregation import Arrays, apply_update, majority_update, to_record, weighted_mean
from .decoding import ClientUpdate, UpdateDecoder
from .rate_control import RateControl

__all__ = ["RateAwareFedAvg"]


class RateAwareFedAvg(RateControl, FedAvg):
    """FedAvg with compressed uplink at the distortion chosen by a rate policy.

    Each round the policy (Corollary 3 of the seed paper, on live estimates of the
    global-gradient variance ``sx2`` and gradient-noise variance ``s2``) picks the
    distortion; clients running ``compression_mod`` add the matching quantization
    noise; the strategy decodes, checks and averages the updates (inverse-variance
    weights when clients had different targets, otherwise FedAvg's example weights)
    and reports realized uplink bits next to the bounds ``R_sum`` and ``R_ind``.

    Parameters
    ----------
    policy, codec, bits, error_feedback, audit, seed, decoder, loss_key
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
            audit=audit, seed=seed, decoder=decoder, loss_key=loss_key,
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

    def select_nodes(self, server_round: int, grid: Grid) -> list[int]:
        """Client selection: FedAvg's uniform sample. Override to select differently."""
        num_nodes = int(len(list(grid.get_node_ids())) * self.fraction_train)
        sample_size = max(num_nodes, self.min_train_nodes)
        node_ids, _ = sample_nodes(grid, self.min_available_nodes, sample_size)
        return node_ids

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample nodes and send each the model and its compression request."""
        if self.fraction_train == 0.0:
            return []
        node_ids = self.select_nodes(server_round, grid)
        log(INFO, "configure_train: Sampled %s nodes", len(node_ids))
        config["server-round"] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        messages = self._construct_messages(record, node_ids, MessageType.TRAIN)
        return self.attach_requests(server_round, arrays, messages)

    def aggregate_updates(
        self, server_round: int, updates: list[ClientUpdate]
    ) -> tuple[Arrays, np.ndarray | None]:
        """Combine the decoded updates; also return the linear weights ``(K, L)`` used.

        Returns ``None`` as weights for non-linear rules: the majority vote, whose
        signs are scaled by the clients' mean absolute update per layer.
        """
        if self.majority_vote:
            return majority_update(updates), None
        weights = self.aggregation_weights(updates)
        return weighted_mean(updates, weights), weights

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Decode and check the replies, then average the updates into the model."""
        decoded = self.decode_replies(server_round, replies)
        if not decoded.updates:
            return None, self.observe_round(server_round, decoded, None, None)
        update, weights = self.aggregate_updates(server_round, decoded.updates)
        arrays = to_record(apply_update(decoded.sent.global_arrays, update))
        metrics = self._client_metrics(decoded.replies)
        metrics.update(self.observe_round(server_round, decoded, update, weights))
        return arrays, metrics

    def _client_metrics(self, replies: list[Message]) -> MetricRecord:
        records = [RecordDict({k: v for k, v in r.content.metric_records.items()
                               if k != METRICS_RECORD}) for r in replies]
        if not all(len(r.metric_records) == 1
                   and self.weighted_by_key in next(iter(r.metric_records.values()))
                   for r in records):
            log(WARNING, "aggregate_train: client metrics lack one MetricRecord with "
                         "'%s'; not aggregated", self.weighted_by_key)
            return MetricRecord()
        return self.train_metrics_aggr_fn(records, self.weighted_by_key)


"""CompressedStrategy: rate-controlled compressed uplink around any Flower strategy."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from logging import INFO, WARNING

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from flrd.policy import RatePolicy
from flrd.protocol import METRICS_RECORD

from .decoding import UpdateDecoder
from .aggregation import example_weights
from .decoding import DecodedRound
from .rate_control import RateControl

__all__ = ["CompressedStrategy"]


class CompressedStrategy(RateControl, Strategy):
    """Wrap a Flower strategy so that its clients send rate-controlled compressed updates.

    The wrapper writes each client's compression request into the train messages the
    inner strategy built, and in ``aggregate_train`` decodes and checks the replies
    *before* the inner strategy sees them: the inner strategy receives plain replies
    carrying reconstructed weights (``global + decoded update``) and the apps' own
    metrics, exactly as from an uncompressed ClientApp. It therefore works with
    FedAvg, FedProx, FedAdam and the other Message-API strategies, and with Flower's
    DP wrappers. Put it outermost::

        CompressedStrategy(DifferentialPrivacyServerSideFixedClipping(FedAvg(), ...))

    so clipping and noise act on decoded updates; the DP wrapper's accountant accepts
    the unmodified FedAvg inside it, whereas it refuses strategies that override
    ``aggregate_train`` such as :class:`~flrd.strategies.RateAwareFedAvg`.

    The inner strategy's aggregation rule is kept as it is (example weights for FedAvg),
    so per-client targets from :meth:`client_targets` are not inverse-variance weighted
    here; the variance estimates use the example-weighted mean of the decoded updates.

    Parameters
    ----------
    strategy : Strategy
        The strategy that samples clients and aggregates.
    policy, codec, bits, error_feedback, audit, seed, decoder, loss_key
        See :class:`~flrd.strategies.rate_control.RateControl`.

    Examples
    --------
    ::

        from flwr.serverapp.strategy import FedAdam
        strategy = CompressedStrategy(FedAdam(), codec="dithered")
    """

    # pylint: disable=too-many-arguments
    def __init__(
        self,
        strategy: Strategy,
        *,
        policy: RatePolicy | None = None,
        codec: str = "dithered",
        bits: float | None = None,
        error_feedback: bool = False,
        audit: bool = False,
        seed: int = 0,
        decoder: UpdateDecoder | None = None,
        loss_key: str = "train_loss",
    ) -> None:
        super().__init__(policy=policy, codec=codec, bits=bits, error_feedback=error_feedback,
                         audit=audit, seed=seed, decoder=decoder, loss_key=loss_key)
        self.strategy = strategy

    def __repr__(self) -> str:
        """Compute a string representation of the strategy."""
        return f"CompressedStrategy({self.strategy!r}, codec={self.codec!r})"

    def summary(self) -> None:
        """Log summary configuration of the strategy."""
        log(INFO, "\t├──> flrd compression (%s, %s)", self.codec,
            f"{self.bits} bits/coordinate" if self.bits is not None else "policy targets")
        self.strategy.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Let the inner strategy configure the round, then add compression requests."""
        messages = self.strategy.configure_train(server_round, arrays, config, grid)
        return self.attach_requests(server_round, arrays, messages)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Decode and check replies, let the inner strategy aggregate the weights."""
        decoded = self.decode_replies(server_round, replies)
        _drop_inconsistent(decoded, getattr(self.strategy, "weighted_by_key", None))
        plain = self.weight_replies(decoded)
        arrays, metrics = (self.strategy.aggregate_train(server_round, plain)
                           if plain else (None, None))
        applied = None
        if arrays is not None:
            applied = {name: array.numpy() - decoded.sent.global_arrays[name]
                       for name, array in arrays.items()}
        merged = MetricRecord(dict(metrics or {}))
        weights = (example_weights(decoded.updates, len(decoded.sent.global_arrays))
                   if decoded.updates else None)
        merged.update(self.observe_round(server_round, decoded, applied, weights))
        return arrays, merged

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Configure the next round of evaluation (inner strategy)."""
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Aggregate evaluation results (inner strategy)."""
        return self.strategy.aggregate_evaluate(server_round, replies)


def _drop_inconsistent(decoded: DecodedRound, weight_key: str | None) -> None:
    """Leave out replies whose app records differ in layout from the majority's.

    Flower's strategies raise on inconsistent replies; one odd client must not stop
    the round.
    """
    def layout(reply: Message) -> tuple[object, ...]:
        records = {k: r for k, r in reply.content.metric_records.items() if k != METRICS_RECORD}
        weighted = weight_key is None or (
            len(records) == 1 and isinstance(next(iter(records.values())).get(weight_key),
                                             int | float))
        return weighted, tuple(sorted((k, tuple(sorted(r))) for k, r in records.items()))

    if not decoded.replies:
        return
    layouts = [layout(reply) for reply in decoded.replies]
    common, _ = Counter(layouts).most_common(1)[0]
    kept = [i for i, item in enumerate(layouts) if item == common and item[0]]
    for i in sorted(set(range(len(layouts))) - set(kept)):
        log(WARNING, "aggregate_train: reply from node %s left out: its metrics differ "
                     "from the other replies'", decoded.replies[i].metadata.src_node_id)
    decoded.num_rejected += len(layouts) - len(kept)
    decoded.replies = [decoded.replies[i] for i in kept]
    decoded.updates = [decoded.updates[i] for i in kept]

"""CompressedStrategy: rate-controlled compressed uplink around a Flower strategy instance."""

from __future__ import annotations

from collections.abc import Iterable
from logging import INFO

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from .rate_control import RateControl, mean_aggregator

__all__ = ["CompressedStrategy"]


class _Delegate(Strategy):
    """A Strategy that forwards every call to the instance ``strategy``."""

    def __init__(self, strategy: Strategy) -> None:
        self.strategy = strategy

    def summary(self) -> None:
        """Log the inner strategy's summary."""
        self.strategy.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """The inner strategy's train messages."""
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The inner strategy's aggregation."""
        return self.strategy.aggregate_train(server_round, replies)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """The inner strategy's evaluation messages."""
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """The inner strategy's evaluation aggregate."""
        return self.strategy.aggregate_evaluate(server_round, replies)


class CompressedStrategy(RateControl, _Delegate):
    """Wrap a Flower strategy instance so that its clients send rate-controlled updates.

    A thin shell over :class:`~flrd.strategies.RateControl`'s round flow: the inner
    strategy samples the nodes and builds the train messages, RateControl adds the
    compression requests, decodes and checks the replies, and the inner strategy
    aggregates replies that carry plain weights (``global + decoded update``) and the
    apps' own metrics, exactly as from an uncompressed ClientApp. Use it for strategy
    instances you did not build yourself, e.g. Flower's DP wrappers; put it outermost::

        CompressedStrategy(DifferentialPrivacyServerSideFixedClipping(FedAvg(), ...))

    so clipping and noise act on decoded updates. For your own strategy classes the
    mixin form ``class MyStrategy(RateControl, FedProx)`` does the same.

    Parameters
    ----------
    strategy : Strategy
        The strategy that samples clients and aggregates.
    **kwargs
        RateControl's parameters: ``policy``, ``codec``, ``bits``, ``error_feedback``,
        ``audit``, ``seed``, ``decoder``, ``loss_key``.

    Examples
    --------
    >>> from flwr.serverapp.strategy import FedAdam
    >>> CompressedStrategy(FedAdam(), codec="dithered")
    CompressedStrategy(FedAdam(...), codec='dithered')
    """

    def __init__(self, strategy: Strategy, **kwargs: object) -> None:
        super().__init__(strategy=strategy, **kwargs)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        """Compute a string representation of the strategy."""
        return f"CompressedStrategy({type(self.strategy).__name__}(...), codec={self.codec!r})"

    def summary(self) -> None:
        """Log summary configuration of the strategy."""
        log(INFO, "\t├──> flrd compression (%s, %s)", self.codec,
            f"{self.bits} bits/coordinate" if self.bits is not None else "policy targets")
        super().summary()

    @property
    def weighted_by_key(self) -> str | None:
        """The inner strategy's example-count key (None if it has none)."""
        return getattr(self.strategy, "weighted_by_key", None)

    @property
    def fraction_train(self) -> float | None:
        """The inner strategy's sampled fraction (None if it has none)."""
        return getattr(self.strategy, "fraction_train", None)

    def mean_aggregator(self) -> bool:
        """Whether the inner strategy's model estimate is the example-weighted mean."""
        return mean_aggregator(type(self.strategy))

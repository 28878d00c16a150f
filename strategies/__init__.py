"""flrd's Flower server side: rate-aware strategies and the payload transport.

- :class:`RateControl`: the round flow; ``class X(RateControl, AnyFlowerStrategy)``.
- :class:`RateAwareFedAvg`: FedAvg with the rate policy and compressed uplink.
- :class:`CompressedStrategy`: the same flow around a Flower strategy instance.
- :class:`WaterfillingFedAvg`: per-client rates by water-filling (noise, link costs).
- :class:`SideInformationFedAvg`: Wyner-Ziv coding against the server's side information.
- :class:`UpdateDecoder` / :class:`SideInformation`: the replaceable decoding step.
- :func:`build_strategy`: the baselines selectable by the run config's ``policy`` key.
- :func:`format_round`: one line per round from its MetricRecord, for any ServerApp.

The ServerApp for the paper's task lives in ``server_app`` (``strategies.server_app:app``).
"""

from .baselines import BASELINES, Baseline, build_strategy
from .compressed import CompressedStrategy
from .decoding import (
    ClientUpdate,
    DecodedRound,
    RejectedReply,
    SentRound,
    SideInformation,
    UpdateDecoder,
)
from .rate_aware import RateAwareFedAvg
from .rate_control import Aggregate, RateControl
from .reporting import format_round, measured_bounds
from .side_information import SideInformationFedAvg, WynerZivDecoder
from .transport import TransportError, unwrap_payload, unwrap_payloads
from .waterfilling import WaterfillingFedAvg

__all__ = [
    "Aggregate",
    "BASELINES",
    "Baseline",
    "ClientUpdate",
    "CompressedStrategy",
    "DecodedRound",
    "RateAwareFedAvg",
    "RateControl",
    "RejectedReply",
    "SentRound",
    "SideInformation",
    "SideInformationFedAvg",
    "TransportError",
    "UpdateDecoder",
    "WaterfillingFedAvg",
    "WynerZivDecoder",
    "build_strategy",
    "format_round",
    "measured_bounds",
    "unwrap_payload",
    "unwrap_payloads",
]

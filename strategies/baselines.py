"""The policies selectable by the run config's ``policy`` key, as configured strategies.

Example:
    >>> strategy = build_strategy("qsgd", [100, 10], bits=4.0)
    >>> strategy.codec, strategy.bits
    ('qsgd', 4.0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from flrd.policy import FixedLambdaPolicy, RatePolicy
from flrd.trust_region import DEFAULT_NOISE_FRACTION, TrustRegionPolicy

from .rate_aware import RateAwareFedAvg
from .side_information import SideInformationFedAvg
from .waterfilling import WaterfillingFedAvg

__all__ = ["BASELINES", "Baseline", "build_strategy"]


@dataclass(frozen=True)
class Baseline:
    """How one named policy compresses.

    Attributes:
        codec: ``flrd.codecs`` name.
        fixed_rate: send the configured ``bits`` per coordinate instead of the policy's
            noise targets.
        error_feedback: clients keep their compression error for the next round.
        majority_vote: the server combines signs by majority instead of averaging.
        fixed_lambda: the distortion is ``lambda`` times the error-free one every round.
        trust_region: the distortion is a fixed fraction of the initial model's power
            (:class:`~flrd.trust_region.TrustRegionPolicy`).
        per_client: per-client targets by water-filling (:class:`WaterfillingFedAvg`).
    """

    codec: str
    fixed_rate: bool = False
    error_feedback: bool = False
    majority_vote: bool = False
    fixed_lambda: bool = False
    trust_region: bool = False
    per_client: bool = False

    @property
    def takes_side_info(self) -> bool:
        """Whether Wyner-Ziv coding (:class:`SideInformationFedAvg`) can run it: the
        dithered codec at one noise target per layer (not water-filling's per-client ones)."""
        return self.codec == "dithered" and not self.per_client


BASELINES: dict[str, Baseline] = {
    "rate-aware": Baseline("dithered"),
    "waterfilling": Baseline("dithered", per_client=True),
    "fixed-lambda": Baseline("dithered", fixed_lambda=True),
    "trust-region": Baseline("dithered", trust_region=True),
    "float32": Baseline("float32"),
    "m22": Baseline("m22", fixed_rate=True),
    "signsgd": Baseline("sign"),
    "signsgd-mv": Baseline("sign", majority_vote=True),
    "qsgd": Baseline("qsgd", fixed_rate=True),
    "terngrad": Baseline("terngrad"),
    "topk-ef": Baseline("topk", fixed_rate=True, error_feedback=True),
    "topk-ef-global": Baseline("topk-global", fixed_rate=True, error_feedback=True),
}


def build_strategy(name: str, layer_sizes: Sequence[int], *, bits: float = 2.0,
                   fixed_lambda: float = 1.0, noise_fraction: float = DEFAULT_NOISE_FRACTION,
                   policy_params: Mapping[str, float] | None = None, side_info: bool = False,
                   **strategy_kwargs: object) -> RateAwareFedAvg:
    """A :class:`RateAwareFedAvg` configured as baseline ``name``.

    Every baseline keeps the rate policy running, so its rounds are reported next to
    the bounds at the same estimates. ``policy_params`` go to the policy,
    ``strategy_kwargs`` to the strategy (e.g. ``fraction_train``, ``audit``).
    ``side_info`` codes against the server's side information
    (:class:`SideInformationFedAvg`); it needs a dithered policy with shared targets.
    """
    if name not in BASELINES:
        raise ValueError(f"unknown policy {name!r}; expected one of {sorted(BASELINES)}")
    baseline = BASELINES[name]
    if side_info and not baseline.takes_side_info:
        raise ValueError(f"side_info needs a dithered policy with one target per layer, not {name!r}")
    params = dict(policy_params or {})
    if baseline.fixed_lambda:
        params.pop("lambda_cap", None)  # the fixed lambda sets the cap
        policy: RatePolicy = FixedLambdaPolicy(layer_sizes, fixed_lambda=fixed_lambda, **params)
    elif baseline.trust_region:
        policy = TrustRegionPolicy(layer_sizes, noise_fraction=noise_fraction, **params)
    else:
        policy = RatePolicy(layer_sizes, **params)
    strategy_class = (WaterfillingFedAvg if baseline.per_client else SideInformationFedAvg if side_info
                      else RateAwareFedAvg)
    return strategy_class(
        policy=policy,
        codec=baseline.codec,
        bits=bits if baseline.fixed_rate else None,
        error_feedback=baseline.error_feedback,
        majority_vote=baseline.majority_vote,
        **strategy_kwargs,  # type: ignore[arg-type]
    )

"""A distortion rule that scales the noise to the model: a per-round trust region.

Corollary 3 prices quantization noise through Theorem 1's smoothness ``beta``, the
largest curvature; the noise actually pays the mean curvature, and on the reference
MNIST task the cheapest constant ``lambda`` sits just below a cliff where training
breaks (docs/THEORY.md §16, §17). Near that cliff the statistics that Corollary 3
needs are not measurable any more (``sx2`` drowns in the noise), and a rule tied to
``s2`` feeds back: a noisier model has a larger ``s2``, so fixed ``lambda`` adds more
noise, which is why ``lambda = 2048`` diverges where 1024 trains.

This rule ties the noise to something the noise cannot inflate: the model's own
power when the run starts. Every round the aggregate's distortion of layer ``l`` is

    D_l = f_t * ms_l   per coordinate,

where ``ms_l`` is the layer's mean square weight in the first round, shrunk towards
the model-wide mean square by ``shrink_coordinates`` (a zero-initialized bias layer
still gets a share), and the fraction ``f_t`` is

- ``first_round_fraction`` (0.1) in the first ``first_rounds`` (2) rounds: a randomly
  initialized model loses nothing to noise of a tenth of its power, and no estimate
  is needed, so there is no warm-up round;
- afterwards ``signal_multiple * S / sum_l n_l ms_l`` with ``S = sum_l n_l sx2_l``
  the smoothed signal power, clipped to ``[noise_fraction, first_round_fraction]``:
  §16's per-round optimum is proportional to ``S``, far outside the quadratic model
  early on, hence the clip; once ``S`` drowns in the noise, ``noise_fraction`` holds;
- times the loss back-off of :class:`~flrd.policy.RatePolicy`, kept above
  ``min_backoff_scale``.

Clients add ``K D_l - s2_l`` (THEORY §9), never less than ``min_lambda_cap * s2_l``.

Example:
    >>> policy = TrustRegionPolicy([1000, 10], noise_fraction=0.02, shrink_coordinates=0.0)
    >>> policy.observe_model([0.02, 0.5])
    >>> plan = policy.plan(num_clients=10)  # the first round: a tenth of the power
    >>> plan.warmup, plan.distortion_per_layer.round(6).tolist()
    (False, [0.002, 0.05])
    >>> policy.observe_model([0.5, 0.5])  # later models do not move the reference
    >>> policy.reference_mean_square.tolist()
    [0.02, 0.5]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .policy import _FROZEN_LAYER_NOISE, RatePolicy, RoundPlan
from .state_file import StateError, require_float_list
from .theory import checks

__all__ = ["DEFAULT_NOISE_FRACTION", "NOISE_FRACTION_MAX", "TrustRegionPolicy"]

DEFAULT_NOISE_FRACTION = 0.03
"""The default floor: over 3 seeds within 1.1x of the best constant lambda under IID
clients and under Dirichlet(0.3) label skew (BENCHMARKS.md, "The lambda curve over seeds")."""

NOISE_FRACTION_MAX = 1.0
"""Largest ``noise_fraction``: noise of the model's whole power every round erases it."""

_REFERENCE = "reference_mean_square"


class TrustRegionPolicy(RatePolicy):
    """Distortion ``D_l = f_t * ms_l`` per round, ``f_t`` between ``noise_fraction`` and
    ``first_round_fraction`` (see the module docstring).

    Parameters
    ----------
    layer_sizes : coordinates per layer ``n_l``.
    noise_fraction : the smallest per-round distortion of the aggregate, as a fraction
        of the model's initial mean square, in ``(0, NOISE_FRACTION_MAX]`` (default
        0.03; over 3 seeds 0.02, 0.025, 0.03, 0.035 and 0.04 were measured, BENCHMARKS.md,
        "The lambda curve over seeds"). Noise that the loss does not correct accumulates
        like a random walk in the flat directions of the weights: after 60 rounds at 0.03
        it has about 1.8 times the initial power.
    signal_multiple : ``rho`` of the signal term ``rho S`` (default 300; 0 turns it
        off). §16's optimum ``S / (h beta_bar)`` is about 2000 ``S`` late in the
        reference training (more early on); the factor 7 is a safety margin. With 100
        the median bits to 90 % over 3 seeds were 1.13x under label skew and 0.96x
        under IID clients (BENCHMARKS.md, "The lambda curve over seeds").
    first_round_fraction : the fraction of the first ``first_rounds`` rounds, and the
        largest one ever (default 0.1). The first rounds' updates are the largest of the
        run, so at ``noise_fraction`` they would cost several later rounds' bits.
    first_rounds : rounds at ``first_round_fraction`` (default 2, at least 1). At that
        noise the round's signal is not measurable, so the round after the first
        would see no signal and fall to ``noise_fraction``.
    min_backoff_scale : the loss back-off never cuts the noise below this fraction of
        the rule's (default 0.25). The median training loss of a round's clients is
        noisy under label skew; unbounded, the back-off kept halving the noise on the
        natural late plateau, and a round cost 13x more bits (BENCHMARKS.md).
    **kwargs : :class:`~flrd.policy.RatePolicy`'s (estimation, back-off,
        ``min_lambda_cap``, ``shrink_coordinates``).
    """

    def __init__(self, layer_sizes: ArrayLike, *, noise_fraction: float = DEFAULT_NOISE_FRACTION,
                 first_round_fraction: float = 0.1, first_rounds: int = 2, signal_multiple: float = 300.0,
                 min_backoff_scale: float = 0.25, **kwargs: Any) -> None:
        self.first_rounds = checks.integer("first_rounds", first_rounds, minimum=1)
        self.signal_multiple = float(checks.nonnegative("signal_multiple", signal_multiple))
        self.noise_fraction = float(checks.in_range("noise_fraction", noise_fraction, 0.0, NOISE_FRACTION_MAX,
                                                    low_open=True))
        self.first_round_fraction = float(checks.in_range("first_round_fraction", first_round_fraction, 0.0,
                                                          NOISE_FRACTION_MAX, low_open=True))
        self.min_backoff_scale = float(checks.in_range("min_backoff_scale", min_backoff_scale, 0.0, 1.0,
                                                       low_open=True))
        super().__init__(layer_sizes, **kwargs)
        self.reference_mean_square: NDArray[np.float64] | None = None

    def backoff_floor(self) -> float:
        """The loss back-off stops at ``min_backoff_scale``."""
        return self.min_backoff_scale

    def observe_model(self, weight_mean_square: ArrayLike) -> None:
        """:meth:`RatePolicy.observe_model`; the first model observed becomes the reference."""
        ms = self._checked_mean_square(weight_mean_square)
        if self.reference_mean_square is None:
            self.reference_mean_square = ms

    def plan(self, num_clients: int) -> RoundPlan:
        """Targets for the next round; a warm-up only before any model was observed."""
        if num_clients < 1:
            raise ValueError(f"num_clients must be >= 1, got {num_clients!r}")
        if self.reference_mean_square is None:
            return super().plan(num_clients)
        ms = self._shrunk_mean_square(self.reference_mean_square)
        D_l = self.fraction() * ms
        s2 = self.s2 if self.s2 is not None else np.zeros_like(D_l)
        noise_var = np.maximum(num_clients * D_l - s2, self.min_lambda_cap * s2)
        if self.s2 is not None:  # frozen layers (sx2 = s2 = 0): nothing to send
            noise_var[~self.active_layers] = _FROZEN_LAYER_NOISE
        noise_var = np.maximum(noise_var, _FROZEN_LAYER_NOISE)
        D_l = (s2 + noise_var) / num_clients  # what the clients will actually reach
        n = self.layer_sizes
        known = self.s2 is not None and float(n @ s2) > 0
        lam = float(n @ noise_var / (n @ s2)) if known else float("nan")
        predicted = self.rate_bounds(D_l, num_clients) if known else {}
        return RoundPlan(num_clients, False, lam, float(n @ D_l), D_l, noise_var, self.warmup_relative_noise,
                         predicted)

    def fraction(self) -> float:
        """This round's distortion as a fraction of the reference power: the signal
        multiple ``rho S / sum n ms`` clipped to ``[noise_fraction, first_round_fraction]``,
        times the back-off; ``first_round_fraction`` in the first ``first_rounds`` rounds."""
        if self.rounds_observed < self.first_rounds or self.sx2 is None or self.reference_mean_square is None:
            return self.first_round_fraction
        power = float(self.layer_sizes @ self._shrunk_mean_square(self.reference_mean_square))
        signal = float(self.layer_sizes @ self.sx2)
        wanted = self.signal_multiple * signal / power if power > 0 else self.noise_fraction
        return float(np.clip(wanted, self.noise_fraction, max(self.first_round_fraction, self.noise_fraction))
                     * self.cap_scale)

    def _shrunk_mean_square(self, ms: NDArray[np.float64]) -> NDArray[np.float64]:
        n, c = self.layer_sizes, self.shrink_coordinates
        pooled = float(n @ ms) / float(n.sum())
        return (n * ms + c * pooled) / (n + c)

    def state_dict(self) -> dict[str, float | list[float]]:
        """:meth:`RatePolicy.state_dict` plus the reference mean squares."""
        ref = self.reference_mean_square
        return {**super().state_dict(), _REFERENCE: [] if ref is None else ref.tolist()}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Restore :meth:`state_dict` output, all or nothing (``StateError`` names the field)."""
        if isinstance(state, Mapping) and _REFERENCE not in state:
            raise StateError(_REFERENCE, "missing (a state saved by another policy, e.g. rate-aware? resume "
                                         "with the policy that saved it, or start a new state directory)")
        ref = require_float_list(state, _REFERENCE, lengths=(0, self.layer_sizes.size), low=0.0)
        super().load_state_dict({k: v for k, v in state.items() if k != _REFERENCE})
        self.reference_mean_square = ref if ref.size else None

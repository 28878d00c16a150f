"""Corollary 3's distortion rule (policy `rate-aware`) and the estimation every rule shares (pure; no Flower).

Each round the server observes the clients' reports, refreshes smoothed per-layer
estimates of ``sx2`` and ``s2`` (THEORY.md §8) and plans the next round: the total
distortion from Corollary 3 under a lambda cap that backs off when the loss stalls
(the paper's Fig. 8: training fails at very large lambda), split over layers by
Corollary 1, and turned into the per-client quantization-noise variance
``sq2_l = K D_l - s2_l`` that each client must add (THEORY.md §9).

Examples
--------
>>> import numpy as np
>>> policy = RatePolicy(layer_sizes=[1000, 10])
>>> policy.plan(num_clients=10).warmup  # nothing observed yet
True
>>> m2 = np.array([[3.0, 1.0]] * 5 + [[3.2, 1.1]] * 5)
>>> policy.observe(m2_k=m2, aggregate_sqnorm=np.array([2100.0, 9.0]), quant_noise_var_k=np.zeros((10, 2)))
>>> plan = policy.plan(num_clients=10)
>>> bool(np.all(plan.noise_var_per_layer > 0)), plan.lambda_ <= policy.lambda_cap
(True, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import theory
from .state_file import StateError, require_float, require_float_list, require_int
from .theory import checks

_FROZEN_LAYER_NOISE = 1e-30  # a zero update needs no bits; any positive target keeps it ~exact

LAMBDA_CAP_MAX = 1e12
"""Largest ``lambda_cap`` / ``fixed_lambda`` accepted: quantization noise 1e12 times the
gradient noise carries no information, and larger values overflow nothing useful."""

LAMBDA_CAP_MIN = 1e-3
"""Smallest ``lambda_cap``: ``lambda -> 0`` is error-free coding, infinitely many bits."""

WARMUP_RELATIVE_NOISE_MAX = 1e6
"""Largest noise-to-signal ratio of the warm-up rounds (beyond it the update is pure noise)."""


@dataclass(frozen=True)
class RoundPlan:
    """What one round asks of every client.

    ``warmup`` rounds have no variance estimates yet: clients then add noise of
    ``warmup_relative_noise`` times their own per-layer second moment instead.
    """

    num_clients: int
    warmup: bool
    lambda_: float
    distortion_total: float
    distortion_per_layer: NDArray[np.float64]
    noise_var_per_layer: NDArray[np.float64]
    warmup_relative_noise: float
    predicted: dict[str, float] = field(default_factory=dict)


class RatePolicy:
    """Corollary-3 distortion choice with smoothed live statistics.

    Parameters
    ----------
    layer_sizes : coordinates per layer ``n_l``.
    lambda_cap : largest ``lambda`` (quantization / gradient noise) ever chosen. The
        paper's Fig. 8 shows rounds growing slowly for moderate lambda and training
        failing for very large lambda; flrd's MNIST runs (BENCHMARKS.md) still reach
        90% at lambda = 64, so the default 16 leaves margin, and the back-off guards it.
    beta, initial_distance, target_accuracy_eps : Theorem 1's ``beta``, ``R0`` and
        ``eps``, which set how rounds trade against bits.
    smoothing : weight of the newest round in the exponential averages (0 < s <= 1).
    backoff : factor applied to the cap after ``patience`` rounds in which the smoothed
        loss did not improve by at least ``min_improvement`` (relative); each improving
        round undoes one back-off.
    min_lambda_cap : the cap never backs off below this.
    warmup_relative_noise : noise-to-signal ratio clients use before any estimate. The
        default 8 makes the first round cost about 3 % of the bits to 90 % on the
        reference task (a per-client SNR of 1/8; measured against 0.05, which cost 27 %,
        and 4: BENCHMARKS.md); the estimates subtract the known noise.
    robust_fraction : fraction of a round's clients, from each end, whose reports
        (``m2_k``, quantization noise) may be arbitrary; they are winsorized per layer
        before the estimate (:func:`flrd.theory.winsorize`, THEORY.md §8). The default
        0.3 clips the 3 most extreme reports at each end among 10 (2 among 7, when
        replies were left out); 0 restores the plain mean.
    shrink_coordinates : prior strength, in coordinates, pulling each layer's split of
        ``sx2_l + s2_l`` towards the model-wide split ``sum n sx2 / sum n (sx2 + s2)``:
        a layer's own split counts ``n_l / (n_l + shrink_coordinates)``. ``sx2_l`` is a
        difference of two noisy terms and a 10- or 200-coordinate layer (biases) has too
        few coordinates to split reliably (docs/THEORY.md §13); layers of 10^4 and more
        keep their own. 0 turns it off.
    min_noise_fraction : floor of each round's ``s2_l`` estimate, as a fraction of the
        layer's ``sx2_l + s2_l`` (their sum is kept). Minibatch training always has
        gradient noise; an estimate of 0 is estimator noise (``s2`` is clipped at 0), and
        taken at face value it would make the rule ask for an exact, 32-bit layer.

    Bounds (``ValueError`` naming the bound otherwise): ``layer_sizes`` positive
    integers; ``lambda_cap`` in ``(LAMBDA_CAP_MIN, LAMBDA_CAP_MAX]``; ``beta >= 0``,
    ``initial_distance > 0``, ``target_accuracy_eps > 0``, all finite; ``smoothing`` and
    ``backoff`` in ``(0, 1]``; ``patience`` an integer ``>= 1``; ``min_improvement`` in
    ``[0, 1)``; ``min_lambda_cap`` in ``(0, LAMBDA_CAP_MAX]``; ``warmup_relative_noise``
    in ``(0, WARMUP_RELATIVE_NOISE_MAX]``; ``robust_fraction`` in ``[0, 0.5)``.

    Layers whose update is exactly zero (``sx2_l = s2_l = 0``: frozen) get no share of
    the distortion and a negligible noise target, so they cost almost nothing.
    """

    def __init__(
        self,
        layer_sizes: ArrayLike,
        *,
        lambda_cap: float = 16.0,
        beta: float = 1.0,
        initial_distance: float = 1.0,
        target_accuracy_eps: float = 0.01,
        smoothing: float = 0.5,
        backoff: float = 0.5,
        patience: int = 2,
        min_improvement: float = 1e-3,
        min_lambda_cap: float = 0.1,
        warmup_relative_noise: float = 8.0,
        robust_fraction: float = 0.3,
        min_noise_fraction: float = 0.01,
        shrink_coordinates: float = 1000.0,
    ) -> None:
        sizes = checks.positive("layer_sizes", layer_sizes).reshape(-1)
        if sizes.size == 0 or np.any(sizes != np.round(sizes)):
            raise ValueError(f"layer_sizes must be a non-empty list of positive integers, got {layer_sizes!r}")
        self.layer_sizes = sizes
        self.lambda_cap = float(checks.in_range("lambda_cap", lambda_cap, LAMBDA_CAP_MIN, LAMBDA_CAP_MAX,
                                                low_open=True))
        self.beta = float(checks.nonnegative("beta", beta))
        self.initial_distance = float(checks.positive("initial_distance", initial_distance))
        self.target_accuracy_eps = float(checks.positive("target_accuracy_eps", target_accuracy_eps))
        self.smoothing = float(checks.in_range("smoothing", smoothing, 0.0, 1.0, low_open=True))
        self.backoff = float(checks.in_range("backoff", backoff, 0.0, 1.0, low_open=True))
        self.patience = checks.integer("patience", patience, minimum=1)
        self.min_improvement = float(checks.in_range("min_improvement", min_improvement, 0.0, 1.0, high_open=True))
        self.min_lambda_cap = float(checks.in_range("min_lambda_cap", min_lambda_cap, 0.0, LAMBDA_CAP_MAX,
                                                    low_open=True))
        self.warmup_relative_noise = float(checks.in_range(
            "warmup_relative_noise", warmup_relative_noise, 0.0, WARMUP_RELATIVE_NOISE_MAX, low_open=True))
        self.robust_fraction = float(checks.in_range("robust_fraction", robust_fraction, 0.0, 0.5, high_open=True))
        self.min_noise_fraction = float(checks.in_range("min_noise_fraction", min_noise_fraction, 0.0, 1.0))
        self.shrink_coordinates = float(checks.nonnegative("shrink_coordinates", shrink_coordinates))
        self.sx2: NDArray[np.float64] | None = None
        self.s2: NDArray[np.float64] | None = None
        self.cap_scale = 1.0
        self.best_loss = np.inf
        self.smoothed_loss = np.nan
        self.stalled_rounds = 0
        self.rounds_observed = 0

    # ------------------------------------------------------------------ observe
    def observe(
        self,
        m2_k: ArrayLike,
        aggregate_sqnorm: ArrayLike | None = None,
        quant_noise_var_k: ArrayLike = 0.0,
        weights: ArrayLike | None = None,
        loss: float | None = None,
        loss_k: ArrayLike | None = None,
        signal_power: ArrayLike | None = None,
    ) -> None:
        """Fold one round's reports into the smoothed estimates and the loss tracker.

        Shapes: ``m2_k`` and ``quant_noise_var_k`` ``(K, L)``, ``aggregate_sqnorm`` ``(L,)``,
        ``weights`` ``(K,)``. Pass the clients' own training losses as ``loss_k``: the
        round's loss is then their median (NaN entries dropped), which one absurd value
        cannot move; ``loss``, one already-aggregated value, is trusted as given. Pass
        ``signal_power`` ``(L,)``, ``sx2`` measured from the updates themselves
        (:func:`flrd.theory.signal_power`), to keep declared statistics out of ``sx2``;
        ``aggregate_sqnorm`` and ``quant_noise_var_k`` are then not needed. Raises
        ``ValueError`` (and changes nothing) if the shapes do not match the layers or
        more than ``robust_fraction`` of the reports of a layer are invalid.
        """
        L = self.layer_sizes.size
        m2_k = np.asarray(m2_k, dtype=np.float64)
        if m2_k.ndim != 2 or m2_k.shape[1] != L:
            raise ValueError(f"m2_k must have shape (K, {L}), got {m2_k.shape}")
        given, given_name = ((aggregate_sqnorm, "aggregate_sqnorm") if signal_power is None
                             else (signal_power, "signal_power"))
        shape = np.shape(np.asarray(given, dtype=np.float64))
        if shape != (L,):
            raise ValueError(f"{given_name} must have shape ({L},), got {shape}")
        if loss is not None and loss_k is not None:
            raise ValueError("pass either loss (one aggregated value) or loss_k (per client), not both")
        round_loss = self._round_loss(loss, loss_k)
        estimate = theory.estimate_variances(m2_k, aggregate_sqnorm, self.layer_sizes, quant_noise_var_k, weights,
                                             robust_fraction=self.robust_fraction, sx2=signal_power)
        sx2, s2 = self._shrunk(estimate.sx2, estimate.s2)
        if self.sx2 is None or self.s2 is None:
            self.sx2, self.s2 = sx2, s2
        else:
            a = self.smoothing
            self.sx2 = (1 - a) * self.sx2 + a * sx2
            self.s2 = (1 - a) * self.s2 + a * s2
        self.rounds_observed += 1
        if round_loss is not None:
            self._track_loss(round_loss)

    def _shrunk(self, sx2: NDArray[np.float64], s2: NDArray[np.float64]
                ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """One round's estimates with each layer's split shrunk towards the model-wide one
        (``shrink_coordinates``) and ``s2`` floored (``min_noise_fraction``); each layer's
        ``sx2 + s2``, which is estimated well, is kept."""
        total = sx2 + s2
        n = self.layer_sizes
        weighted = float(n @ total)
        if weighted > 0 and self.shrink_coordinates > 0:
            pooled = float(n @ sx2) / weighted
            with np.errstate(invalid="ignore", divide="ignore"):
                own = np.where(total > 0, sx2 / total, pooled)
            share = (n * own + self.shrink_coordinates * pooled) / (n + self.shrink_coordinates)
            sx2 = share * total
        s2 = np.maximum(total - sx2, self.min_noise_fraction * total)
        return total - s2, s2

    @staticmethod
    def _round_loss(loss: float | None, loss_k: ArrayLike | None) -> float | None:
        if loss is not None:
            loss = float(loss)
            if not np.isfinite(loss):
                raise ValueError(f"loss must be finite, got {loss!r}")
            return loss
        if loss_k is None:
            return None
        values = np.asarray(loss_k, dtype=np.float64).reshape(-1)
        values = values[~np.isnan(values)]
        # The median: a minority of absurd (even infinite) losses cannot move it.
        return float(np.median(values)) if values.size else None

    def _track_loss(self, loss: float) -> None:
        # Clients differ every round: compare a smoothed loss, not single samples. A
        # non-finite median (most clients diverged) counts as a stalled round and is
        # kept out of the average, which it would poison for good.
        a = self.smoothing
        if np.isfinite(loss):
            self.smoothed_loss = loss if np.isnan(self.smoothed_loss) else (1 - a) * self.smoothed_loss + a * loss
        if np.isfinite(loss) and self.smoothed_loss < self.best_loss * (1 - self.min_improvement):
            self.best_loss, self.stalled_rounds = self.smoothed_loss, 0
            self.cap_scale = min(1.0, self.cap_scale / self.backoff)
            return
        self.stalled_rounds += 1
        if self.stalled_rounds >= self.patience:
            self.cap_scale = max(self.cap_scale * self.backoff, self.backoff_floor())
            self.stalled_rounds = 0

    def backoff_floor(self) -> float:
        """Smallest ``cap_scale`` the loss back-off reaches: the cap never backs off
        below ``min_lambda_cap``. Override to bound another rule's back-off."""
        return min(self.min_lambda_cap / self.lambda_cap, 1.0)

    def observe_model(self, weight_mean_square: ArrayLike) -> None:
        """Note the global model's per-layer mean square ``mean(w_l**2)`` before a round.

        The strategy calls it before every :meth:`plan`. Corollary 3 only checks it;
        rules that scale the noise to the model (:class:`flrd.trust_region.TrustRegionPolicy`)
        override it. Raises ``ValueError`` unless it holds one finite value ``>= 0`` per layer.
        """
        self._checked_mean_square(weight_mean_square)

    def _checked_mean_square(self, weight_mean_square: ArrayLike) -> NDArray[np.float64]:
        ms = np.asarray(weight_mean_square, dtype=np.float64)
        if ms.shape != self.layer_sizes.shape or not np.all(np.isfinite(ms) & (ms >= 0)):
            raise ValueError(f"weight_mean_square must hold {self.layer_sizes.size} finite values >= 0, got {ms}")
        return ms

    # --------------------------------------------------------------------- plan
    @property
    def effective_lambda_cap(self) -> float:
        """The cap after back-offs, never below ``min_lambda_cap`` (nor above ``lambda_cap``)."""
        return max(self.lambda_cap * self.cap_scale, min(self.min_lambda_cap, self.lambda_cap))

    @property
    def active_layers(self) -> NDArray[np.bool_]:
        """Layers with a non-zero update (``sx2_l + s2_l > 0``)."""
        assert self.sx2 is not None and self.s2 is not None
        return (self.sx2 + self.s2) > 0

    def choose(self, num_clients: int) -> theory.DistortionChoice:
        """The distortion rule: Corollary 3 under the effective cap, over the active layers.

        Override to change the rule; ``distortion_per_layer`` must cover the active
        layers only.
        """
        active = self.active_layers
        assert self.sx2 is not None and self.s2 is not None  # active_layers checked it
        return theory.choose_distortion(
            self.layer_sizes[active], self.sx2[active], self.s2[active], num_clients,
            R0=self.initial_distance, beta=self.beta, eps=self.target_accuracy_eps,
            lambda_cap=self.effective_lambda_cap,
        )

    def plan(self, num_clients: int) -> RoundPlan:
        """Targets for the next round with ``num_clients`` participants."""
        if num_clients < 1:
            raise ValueError(f"num_clients must be >= 1, got {num_clients!r}")
        L = self.layer_sizes.size
        if self.sx2 is None or self.s2 is None or np.sum(self.s2 * self.layer_sizes) <= 0 or num_clients < 2:
            return RoundPlan(num_clients, True, float("nan"), float("nan"), np.full(L, np.nan),
                             np.full(L, np.nan), self.warmup_relative_noise)
        choice = self.choose(num_clients)
        active = self.active_layers
        D_l = np.zeros(L)
        D_l[active] = choice.distortion_per_layer
        noise_var = np.full(L, _FROZEN_LAYER_NOISE)
        noise_var[active] = np.maximum(num_clients * D_l[active] - self.s2[active], 0.0)
        predicted = {"rounds_predicted": float(choice.rounds), **self.rate_bounds(D_l, num_clients)}
        return RoundPlan(num_clients, False, choice.lambda_, choice.distortion_total, D_l, noise_var,
                         self.warmup_relative_noise, predicted)

    def rate_bounds(self, distortion_per_layer: ArrayLike, num_clients: int) -> dict[str, float]:
        """Bits per round (all clients, active layers) of ``R_sum``, ``R_ind`` and SignSGD's model.

        The bounds are ``inf`` when an active layer sits at the error-free floor
        ``s2_l / K`` (lossless coding of a continuous source).
        """
        if self.sx2 is None or self.s2 is None:
            return {}
        active = self.active_layers
        n, sx2, s2, K = self.layer_sizes[active], self.sx2[active], self.s2[active], num_clients
        D_l = np.asarray(distortion_per_layer, dtype=np.float64)[active]
        sign = theory.signsgd_model(sx2, s2, K)
        out = {"signsgd_bits": float(n @ sign.signsgd_rate), "signsgd_r_ind_bits": float(n @ sign.independent_rate),
               "signsgd_r_sum_bits": float(n @ sign.sum_rate), "r_sum_bits": np.inf, "r_ind_bits": np.inf}
        if np.all(D_l > s2 / K):
            out["r_sum_bits"] = float(n @ theory.sum_rate(D_l, sx2, s2, K))
            out["r_ind_bits"] = float(n @ theory.independent_rate(D_l, sx2, s2, K))
        return out

    # -------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, float | list[float]]:
        """Everything needed to continue with the same decisions after a restart."""
        return {
            "sx2": [] if self.sx2 is None else self.sx2.tolist(),
            "s2": [] if self.s2 is None else self.s2.tolist(),
            "cap_scale": self.cap_scale,
            "best_loss": float(self.best_loss),
            "smoothed_loss": float(self.smoothed_loss),
            "stalled_rounds": float(self.stalled_rounds),
            "rounds_observed": float(self.rounds_observed),
        }

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Restore :meth:`state_dict` output, all or nothing.

        Every field is checked against the schema and against this policy
        (``layer_sizes``, ``patience``) before anything changes; a missing, unknown,
        mistyped or out-of-range field raises :class:`flrd.state_file.StateError` (a
        ``ValueError``) whose ``field`` names it.
        """
        if not isinstance(state, Mapping):
            raise StateError("(state)", f"must be a mapping, got {type(state).__name__}")
        unknown = sorted(set(state) - _STATE_FIELDS)
        if unknown:
            raise StateError(unknown[0], f"unknown field{_OTHER_POLICY}")
        L = self.layer_sizes.size
        sx2 = require_float_list(state, "sx2", lengths=(0, L), low=0.0)
        s2 = require_float_list(state, "s2", lengths=(sx2.size,), low=0.0)
        cap_scale = require_float(state, "cap_scale", low=0.0, high=1.0, low_open=True)
        best_loss = require_float(state, "best_loss", allow_inf=True)
        smoothed_loss = require_float(state, "smoothed_loss", allow_nan=True)
        stalled_rounds = require_int(state, "stalled_rounds", minimum=0, maximum=self.patience - 1)
        rounds_observed = require_int(state, "rounds_observed", minimum=0)
        if (rounds_observed == 0) != (sx2.size == 0):
            raise StateError("rounds_observed", f"{rounds_observed} rounds observed but {sx2.size} layer estimates")
        self.sx2, self.s2 = (None, None) if sx2.size == 0 else (sx2, s2)
        self.cap_scale, self.best_loss, self.smoothed_loss = cap_scale, best_loss, smoothed_loss
        self.stalled_rounds, self.rounds_observed = stalled_rounds, rounds_observed


_STATE_FIELDS = frozenset({"sx2", "s2", "cap_scale", "best_loss", "smoothed_loss", "stalled_rounds",
                           "rounds_observed"})
_OTHER_POLICY = (" (a state saved by another policy, e.g. trust-region? resume with the policy that "
                 "saved it, or start a new state directory)")


class FixedLambdaPolicy(RatePolicy):
    """Baseline: the paper's fixed ``lambda``, ``K D_l = s2_l (1 + lambda)`` on every layer.

    Examples
    --------
    >>> FixedLambdaPolicy([10], fixed_lambda=2.0).fixed_lambda
    2.0
    """

    def __init__(self, layer_sizes: ArrayLike, *, fixed_lambda: float, **kwargs) -> None:
        self.fixed_lambda = float(checks.in_range("fixed_lambda", fixed_lambda, 0.0, LAMBDA_CAP_MAX, low_open=True))
        super().__init__(layer_sizes, lambda_cap=max(self.fixed_lambda, 1e-2), **kwargs)

    def choose(self, num_clients: int) -> theory.DistortionChoice:
        active = self.active_layers
        assert self.sx2 is not None and self.s2 is not None  # active_layers checked it
        n, sx2, s2 = self.layer_sizes[active], self.sx2[active], self.s2[active]
        D_l = s2 * (1 + self.fixed_lambda) / num_clients
        D_tot = float(n @ D_l)
        rounds = int(theory.rounds_needed(D_tot, self.initial_distance, self.beta, self.target_accuracy_eps))
        per_round = float(n @ theory.sum_rate(D_l, sx2, s2, num_clients)) if np.all(s2 > 0) else np.inf
        return theory.DistortionChoice(self.fixed_lambda, D_tot, D_l, rounds, per_round, rounds * per_round)

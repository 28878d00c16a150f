"""The rate-aware distortion rule behind flrd's strategy (pure; no Flower).

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

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import theory

_FROZEN_LAYER_NOISE = 1e-30  # a zero update needs no bits; any positive target keeps it ~exact


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

    def metrics(self) -> dict[str, float]:
        """Flat float metrics for logging (bits are per round, summed over clients)."""
        out = {"lambda": self.lambda_, "distortion_total": self.distortion_total, "warmup": float(self.warmup)}
        out.update(self.predicted)
        return out


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
    warmup_relative_noise : noise-to-signal ratio clients use before any estimate.

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
        warmup_relative_noise: float = 0.05,
    ) -> None:
        self.layer_sizes = theory.checks.positive("layer_sizes", layer_sizes).reshape(-1)
        self.lambda_cap = float(theory.checks.positive("lambda_cap", lambda_cap))
        self.beta = float(theory.checks.nonnegative("beta", beta))
        self.initial_distance = float(theory.checks.positive("initial_distance", initial_distance))
        self.target_accuracy_eps = float(theory.checks.positive("target_accuracy_eps", target_accuracy_eps))
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing!r}")
        if not 0 < backoff <= 1:
            raise ValueError(f"backoff must be in (0, 1], got {backoff!r}")
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience!r}")
        self.smoothing, self.backoff, self.patience = float(smoothing), float(backoff), int(patience)
        if not 0 <= min_improvement < 1:
            raise ValueError(f"min_improvement must be in [0, 1), got {min_improvement!r}")
        self.min_improvement = float(min_improvement)
        self.min_lambda_cap = float(theory.checks.positive("min_lambda_cap", min_lambda_cap))
        self.warmup_relative_noise = float(theory.checks.positive("warmup_relative_noise", warmup_relative_noise))
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
        aggregate_sqnorm: ArrayLike,
        quant_noise_var_k: ArrayLike,
        weights: ArrayLike | None = None,
        loss: float | None = None,
    ) -> None:
        """Fold one round's reports into the smoothed estimates and the loss tracker.

        Shapes: ``m2_k`` and ``quant_noise_var_k`` ``(K, L)``, ``aggregate_sqnorm`` ``(L,)``.
        """
        estimate = theory.estimate_variances(m2_k, aggregate_sqnorm, self.layer_sizes, quant_noise_var_k, weights)
        if self.sx2 is None or self.s2 is None:
            self.sx2, self.s2 = estimate.sx2, estimate.s2
        else:
            a = self.smoothing
            self.sx2 = (1 - a) * self.sx2 + a * estimate.sx2
            self.s2 = (1 - a) * self.s2 + a * estimate.s2
        self.rounds_observed += 1
        if loss is not None:
            self._track_loss(float(loss))

    def _track_loss(self, loss: float) -> None:
        if not np.isfinite(loss):
            raise ValueError(f"loss must be finite, got {loss!r}")
        # Clients differ every round: compare a smoothed loss, not single samples.
        a = self.smoothing
        self.smoothed_loss = loss if np.isnan(self.smoothed_loss) else (1 - a) * self.smoothed_loss + a * loss
        if self.smoothed_loss < self.best_loss * (1 - self.min_improvement):
            self.best_loss, self.stalled_rounds = self.smoothed_loss, 0
            self.cap_scale = min(1.0, self.cap_scale / self.backoff)
            return
        self.stalled_rounds += 1
        if self.stalled_rounds >= self.patience:
            floor_scale = min(self.min_lambda_cap / self.lambda_cap, 1.0)
            self.cap_scale = max(self.cap_scale * self.backoff, floor_scale)
            self.stalled_rounds = 0

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

    def load_state_dict(self, state: dict[str, float | list[float]]) -> None:
        """Restore :meth:`state_dict` output (validated against ``layer_sizes``)."""
        sx2, s2 = np.asarray(state["sx2"], dtype=np.float64), np.asarray(state["s2"], dtype=np.float64)
        L = self.layer_sizes.size
        if sx2.size not in (0, L) or s2.size != sx2.size:
            raise ValueError(f"state has {sx2.size} layers, policy has {L}")
        self.sx2, self.s2 = (None, None) if sx2.size == 0 else (sx2, s2)
        self.cap_scale = float(state["cap_scale"])
        self.best_loss = float(state["best_loss"])
        self.smoothed_loss = float(state.get("smoothed_loss", np.nan))
        self.stalled_rounds = int(state["stalled_rounds"])
        self.rounds_observed = int(state["rounds_observed"])


class FixedLambdaPolicy(RatePolicy):
    """Baseline: the paper's fixed ``lambda``, ``K D_l = s2_l (1 + lambda)`` on every layer.

    Examples
    --------
    >>> FixedLambdaPolicy([10], fixed_lambda=2.0).fixed_lambda
    2.0
    """

    def __init__(self, layer_sizes: ArrayLike, *, fixed_lambda: float, **kwargs) -> None:
        super().__init__(layer_sizes, lambda_cap=max(float(fixed_lambda), 1e-2), **kwargs)
        self.fixed_lambda = float(theory.checks.positive("fixed_lambda", fixed_lambda))

    def choose(self, num_clients: int) -> theory.DistortionChoice:
        active = self.active_layers
        n, sx2, s2 = self.layer_sizes[active], self.sx2[active], self.s2[active]
        D_l = s2 * (1 + self.fixed_lambda) / num_clients
        D_tot = float(n @ D_l)
        rounds = int(theory.rounds_needed(D_tot, self.initial_distance, self.beta, self.target_accuracy_eps))
        per_round = float(n @ theory.sum_rate(D_l, sx2, s2, num_clients)) if np.all(s2 > 0) else np.inf
        return theory.DistortionChoice(self.fixed_lambda, D_tot, D_l, rounds, per_round, rounds * per_round)

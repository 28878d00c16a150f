"""Theorem 1's ``beta`` and ``eps`` estimated online from the server's view (THEORY.md §15).

The server sees, each round ``t``, the aggregate update ``delta_t`` it applies to the
model (server learning rate 1, no server momentum) and knows the expected squared norm
``noise_sqnorm_t`` of that aggregate's noise (minibatch and client noise plus the
quantization noise it asked for: ``sum_l n_l sum_k w_k^2 (s2_l + sq2_{k,l})``, from
:func:`flrd.theory.estimate_variances` and the round's plan). On a quadratic, one round
of FedAvg with ``E`` local momentum-SGD steps maps the error ``e = w - w*`` to the
coherent update ``-A e`` with ``A = contraction(H)`` (:func:`delta_contraction`, applied
to each eigenvalue of the Hessian ``H``), so consecutive rounds satisfy

    ||delta_t||^2 - <delta_{t+1}, delta_t> - noise_sqnorm_t  ~  delta_t^T A delta_t,

in expectation over the fresh noise of both rounds. :class:`SmoothnessEstimator` pools
that over rounds into the contraction ``kappa`` along the steps and inverts the scalar
map (:func:`curvature_from_contraction`) to the curvature ``beta`` in per-step
gradient units, the units of Theorem 1. :func:`target_eps` turns a loss target into
Theorem 1's ``eps = f_target - f*`` through the smooth-convex gap bound
``f - f* >= ||grad f||^2 / (2 beta)`` (:func:`suboptimality`), and
:func:`calibrated_distortion` feeds both, converted to the delta units of the live
statistics (THEORY.md §11), to Corollary 3.

How a policy would use it (not wired into :class:`flrd.policy.RatePolicy` yet): keep
one estimator; after each round call ``observe(aggregate, noise_sqnorm)`` with the
decoded aggregate (all layers) and the round's aggregate noise; once ``beta`` is
finite, plan the next round with :func:`calibrated_distortion` instead of
``choose_distortion`` with user constants, taking ``eps`` from :func:`target_eps`
(loss target, median client loss, ``sum_l n_l sx2_l`` of the live estimates) or from a
user-given suboptimality. Before two rounds are seen (``beta`` is NaN) keep the
warm-up or the cap. The estimator keeps the previous aggregate (one model's worth of
floats); it has no ``state_dict`` yet, so a restart loses one pair of rounds.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> est = SmoothnessEstimator(lr=0.05, steps=5, momentum=0.5)
>>> H = np.full(20_000, 2.0)  # curvature 2 in every direction
>>> A = delta_contraction(H, 0.05, 5, 0.5)
>>> e = rng.normal(size=H.size)
>>> for _ in range(4):
...     delta = -A * e + rng.normal(0.0, 0.1, H.size)  # coherent part + noise of variance 0.01
...     est.observe(delta, noise_sqnorm=0.01 * H.size)
...     e = e + delta
>>> round(est.beta, 1)
2.0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import brentq

from . import checks
from .convergence import DistortionChoice, choose_distortion
from .units import local_step_gains

_PEAK_GRID = 4097  # resolution of the search for the end of the invertible branch


def _gains_args(lr: float, steps: int, momentum: float) -> tuple[float, int, float]:
    eta = float(checks.positive("lr", lr))
    E = checks.integer("steps", steps, minimum=1)
    mu = float(checks.in_range("momentum", momentum, 0.0, 1.0, high_open=True))
    return eta, E, mu


def delta_contraction(curvature: ArrayLike, lr: float, steps: int, momentum: float = 0.0) -> NDArray[np.float64]:
    """``1 - p_E``: the share of the error one round removes along curvature ``curvature``.

    Local SGD with PyTorch's momentum (buffer from zero, ``v <- mu v + lambda e``,
    ``e <- e - lr v``) run ``steps`` times on ``f = lambda e^2 / 2`` from error ``e_0``
    ends at ``p_E e_0``; the coherent delta is ``-(1 - p_E) e_0``. For small
    ``lr * curvature`` this is ``lr C1 curvature = h curvature`` (THEORY.md §11).

    Examples
    --------
    >>> round(float(delta_contraction(1e-6, 0.01, 20, 0.5)) / 1e-6, 4)  # h = lr C1
    0.38
    >>> float(delta_contraction(1.0, 1.0, 3))  # one gradient step of size 1/lambda solves it
    1.0
    """
    lam = checks.nonnegative("curvature", curvature)
    eta, E, mu = _gains_args(lr, steps, momentum)
    e, v = np.ones_like(lam), np.zeros_like(lam)
    for _ in range(E):
        v = mu * v + lam * e
        e = e - eta * v
    return 1.0 - e


def curvature_from_contraction(contraction: float, lr: float, steps: int, momentum: float = 0.0) -> float:
    """Invert :func:`delta_contraction` on its first increasing branch.

    ``contraction <= 0`` (no measurable curvature, or noise) gives 0; a contraction at or
    above the branch's peak (the local steps remove the whole error: curvature not
    identifiable from one round) gives the curvature at the peak, a lower bound.

    Examples
    --------
    >>> kappa = float(delta_contraction(3.0, 0.01, 10, 0.5))
    >>> round(curvature_from_contraction(kappa, 0.01, 10, 0.5), 6)
    3.0
    """
    kappa = float(checks.finite("contraction", contraction))
    eta, E, mu = _gains_args(lr, steps, momentum)
    if kappa <= 0:
        return 0.0
    # Heavy ball is stable for lr * curvature < 2 (1 + mu); the first peak lies below.
    grid = np.linspace(0.0, 2 * (1 + mu) / eta, _PEAK_GRID)
    values = delta_contraction(grid, eta, E, mu)
    falling = np.flatnonzero(np.diff(values) <= 0)
    peak = int(falling[0]) if falling.size else grid.size - 1
    if kappa >= values[peak]:
        return float(grid[peak])
    # brentq: the branch is increasing, so the root is unique and bracketed.
    return float(brentq(lambda lam: float(delta_contraction(lam, eta, E, mu)) - kappa, 0.0, grid[peak],
                        xtol=1e-12 * grid[peak], rtol=1e-12))


def _sqnorm_and_dot(a: Sequence[NDArray[np.float64]], b: Sequence[NDArray[np.float64]]) -> tuple[float, float]:
    return (float(sum(np.vdot(x, x) for x in a)), float(sum(np.vdot(x, y) for x, y in zip(a, b, strict=True))))


class SmoothnessEstimator:
    """Online curvature ``beta`` (per-step gradient units) along the training steps.

    Parameters
    ----------
    lr, steps, momentum : the clients' local optimizer (PyTorch SGD), as in
        :func:`flrd.theory.local_step_gains`.
    smoothing : weight of the newest pair of rounds in the exponentially weighted sums
        (1: only the newest pair; ``1/t``-like pooling needs a small value).

    ``beta`` is the curvature whose round contraction equals the pooled contraction
    ``kappa = sum_t w_t (||d_t||^2 - <d_{t+1}, d_t> - N_t) / sum_t w_t ||d_t||^2``
    (``d`` the aggregates, ``N`` their noise), an estimate of
    ``sum w_t d_t^T A d_t / sum w_t ||d_t||^2``: the curvature **along the steps
    actually taken**, noise included, which to first order in ``h beta`` is the
    Rayleigh quotient ``sum w_t d_t^T H d_t / sum w_t ||d_t||^2`` (THEORY.md §15). It is
    the ``beta`` of the descent lemma along the trajectory, at most the largest
    eigenvalue of ``H``.
    """

    def __init__(self, lr: float, steps: int, momentum: float = 0.0, *, smoothing: float = 0.5) -> None:
        self.lr, self.steps, self.momentum = _gains_args(lr, steps, momentum)
        self.smoothing = float(checks.in_range("smoothing", smoothing, 0.0, 1.0, low_open=True))
        self._previous: list[NDArray[np.float64]] | None = None
        self._previous_noise = 0.0
        self._removed = np.nan  # smoothed ||d_t||^2 - <d_{t+1}, d_t> - N_t
        self._moved = np.nan  # smoothed ||d_t||^2

    def observe(self, delta: ArrayLike | Sequence[ArrayLike], noise_sqnorm: float) -> None:
        """Fold in one round's applied aggregate (an array or a list of layer arrays).

        ``noise_sqnorm`` is the expected ``||noise||^2`` of this aggregate (delta units).
        """
        layers = ([np.asarray(x, dtype=np.float64).ravel() for x in delta] if isinstance(delta, (list, tuple))
                  else [np.asarray(delta, dtype=np.float64).ravel()])
        checks.finite("delta", np.concatenate(layers))
        noise = float(checks.nonnegative("noise_sqnorm", noise_sqnorm))
        if self._previous is not None:
            if [x.size for x in layers] != [x.size for x in self._previous]:
                raise ValueError("delta must have the same layer sizes every round")
            moved, overlap = _sqnorm_and_dot(self._previous, layers)
            if moved > 0:
                removed = moved - overlap - self._previous_noise
                a = self.smoothing
                first = np.isnan(self._moved)
                self._removed = removed if first else (1 - a) * self._removed + a * removed
                self._moved = moved if first else (1 - a) * self._moved + a * moved
        self._previous, self._previous_noise = layers, noise

    @property
    def contraction(self) -> float:
        """Pooled ``kappa`` (NaN before two rounds): the share of a step one round removes."""
        return float(self._removed / self._moved) if self._moved > 0 else float("nan")

    @property
    def beta(self) -> float:
        """Curvature in per-step gradient units (NaN before two rounds)."""
        kappa = self.contraction
        return float("nan") if np.isnan(kappa) else curvature_from_contraction(kappa, self.lr, self.steps,
                                                                               self.momentum)

    @property
    def effective_step(self) -> float:
        """``h_eff = contraction(beta) / beta``: the step of one round read as one SGD step.

        Equals ``h = lr C1`` (THEORY.md §11) as ``beta -> 0``, and less beyond.
        """
        beta = self.beta
        if np.isnan(beta):
            return float("nan")
        if beta == 0:
            return local_step_gains(self.lr, self.steps, self.momentum).step
        return float(delta_contraction(beta, self.lr, self.steps, self.momentum)) / beta


def suboptimality(coherent_sqnorm: float, *, beta: float, step: float) -> float:
    """``f - f*`` estimated by ``||grad f||^2 / (2 beta)``, with ``grad f = coherent / step``.

    ``coherent_sqnorm`` is the squared norm of the round's coherent update in delta units
    (``sum_l n_l sx2_l`` of THEORY.md §8). A lower bound for any convex ``beta``-smooth
    loss, exact on a quadratic whose error lies along curvature ``beta``.

    Examples
    --------
    >>> suboptimality(1.0, beta=2.0, step=0.5)  # grad norm^2 = 4
    1.0
    """
    c = float(checks.nonnegative("coherent_sqnorm", coherent_sqnorm))
    return c / float(checks.positive("step", step)) ** 2 / (2 * float(checks.positive("beta", beta)))


def target_eps(loss: float, loss_target: float, gap: float) -> float:
    """Theorem 1's ``eps = f_target - f*`` from the current loss and its gap ``f - f*``.

    Raises ``ValueError`` if ``loss_target <= loss - gap`` (a target below the estimated
    optimum cannot be reached).

    Examples
    --------
    >>> target_eps(loss=1.0, loss_target=0.5, gap=0.75)
    0.25
    """
    f = float(checks.finite("loss", loss))
    f_target = float(checks.finite("loss_target", loss_target))
    f_star = f - float(checks.nonnegative("gap", gap))
    if f_target <= f_star:
        raise ValueError(f"loss_target must be > loss - gap = {f_star!r} (the estimated optimum), got {f_target!r}")
    return f_target - f_star


@dataclass(frozen=True)
class DeltaConstants:
    """Theorem 1's constants in the delta units of the live statistics (THEORY.md §11)."""

    beta: float  # step * beta_grad
    eps: float  # step * eps


def delta_constants(beta: float, eps: float, step: float) -> DeltaConstants:
    """``(h beta, h eps)``: Corollary 3 on delta statistics with these is Corollary 3 in gradient units.

    Examples
    --------
    >>> delta_constants(beta=2.0, eps=0.1, step=0.5)
    DeltaConstants(beta=1.0, eps=0.05)
    """
    h = float(checks.positive("step", step))
    return DeltaConstants(beta=h * float(checks.nonnegative("beta", beta)), eps=h * float(checks.positive("eps", eps)))


def calibrated_distortion(
    n_l: ArrayLike, sx2_l: ArrayLike, s2_l: ArrayLike, K: float,
    *, beta: float, eps: float, step: float, R0: float = 1.0, lambda_cap: float = 1e6,
) -> DistortionChoice:
    """Corollary 3 for delta statistics with ``beta`` (gradient units) and ``eps`` (loss units).

    The argmin depends on ``beta eps`` only; ``R0`` scales the round count, not the choice.

    Examples
    --------
    >>> c = calibrated_distortion([1], [2.0], [1.0], 10, beta=2.0, eps=0.02, step=0.5)
    >>> 1.5 < c.lambda_ < 2.5  # the same as beta = 1, eps = 0.01 in delta units (THEORY.md §7)
    True
    """
    constants = delta_constants(beta, eps, step)
    return choose_distortion(n_l, sx2_l, s2_l, K, R0=R0, beta=constants.beta, eps=constants.eps,
                             lambda_cap=lambda_cap)

"""Rounds to converge (Theorem 1), total cost, and the distortion choice (Corollary 3)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import checks
from .layers import _layer_args, error_free_distortion, round_cost, split_distortion

_LAMBDA_FLOOR = 1e-3  # lambda -> 0 costs infinitely many bits per round
_GRID_POINTS = 48
_ZOOM_LEVELS = 4  # log-lambda resolution ~ 9 / 47 / 24^3: far below the cost's flatness


def rounds_needed(
    D_tot: ArrayLike, R0: ArrayLike, beta: ArrayLike, eps: ArrayLike, *, integer: bool = True
) -> NDArray[np.float64]:
    """Rounds ``T`` after which ``E f(mean iterate) - f* <= eps`` (Theorem 1).

    ``T = ceil(R0^2 (sqrt(2 D_tot) + sqrt(2 D_tot + 4 beta eps))^2 / (4 eps^2))`` for a
    convex ``beta``-smooth loss, start distance ``R0`` and unbiased gradients whose
    error has total variance ``D_tot``. ``integer=False`` drops the ceiling (smooth in
    ``D_tot``, for optimization).

    Examples
    --------
    >>> int(rounds_needed(0.3, R0=1.0, beta=1.0, eps=0.01))
    6199
    """
    D_tot = checks.nonnegative("D_tot", D_tot)
    R0 = checks.positive("R0", R0)
    beta = checks.nonnegative("beta", beta)
    eps = checks.positive("eps", eps)
    rounds = R0**2 * (np.sqrt(2 * D_tot) + np.sqrt(2 * D_tot + 4 * beta * eps)) ** 2 / (4 * eps**2)
    # Guard the ceiling against float noise just above an integer.
    return np.ceil(rounds * (1 - 1e-12)) if integer else rounds


def total_cost(
    D_tot: ArrayLike, n_l: ArrayLike, sx2_l: ArrayLike, s2_l: ArrayLike, K: float,
    *, R0: float, beta: float, eps: float, integer: bool = True,
) -> NDArray[np.float64]:
    """Bits to reach ``eps`` with static statistics: ``T(D_tot) * B(D_tot)`` (Corollary 3).

    Examples
    --------
    >>> float(total_cost(0.3, [1], [2.0], [1.0], 10, R0=1.0, beta=1.0, eps=0.01)).__round__()
    27239
    """
    return rounds_needed(D_tot, R0, beta, eps, integer=integer) * round_cost(D_tot, n_l, sx2_l, s2_l, K)


def interior_optimum_margin(n_l: ArrayLike, sx2_l: ArrayLike, s2_l: ArrayLike, K: float,
                            *, beta: float, eps: float) -> float:
    """``sum_l n_l (sx2_l^2 - s2_l^2/K)/(sx2_l + s2_l) - 2 beta eps`` (THEORY.md §12).

    Positive: ``T(D_tot) B(D_tot)`` has an interior minimum over ``lambda``. Not
    positive: the cost falls towards its limit as ``lambda`` grows, so
    :func:`choose_distortion` returns its ``lambda_cap``.

    Examples
    --------
    >>> interior_optimum_margin([1], [2.0], [1.0], 10, beta=1.0, eps=0.01) > 0
    True
    >>> interior_optimum_margin([1], [0.3], [1.0], 10, beta=1.0, eps=0.01) > 0  # sx2 < s2/sqrt(K)
    False
    """
    n_l, sx2_l, s2_l, K = _layer_args(n_l, sx2_l, s2_l, K)
    beta = float(checks.nonnegative("beta", beta))
    eps = float(checks.positive("eps", eps))
    return float(np.sum(n_l * (sx2_l**2 - s2_l**2 / K) / (sx2_l + s2_l)) - 2 * beta * eps)


@dataclass(frozen=True)
class DistortionChoice:
    """A round's distortion target and what it costs (rates in bits)."""

    lambda_: float  # quantization noise / gradient noise, K D = s2 (1 + lambda)
    distortion_total: float  # D_tot, over all coordinates
    distortion_per_layer: NDArray[np.float64]  # D_l per coordinate (Corollary 1)
    rounds: int  # T(D_tot), Theorem 1
    round_cost_bits: float  # B(D_tot), Corollary 1
    total_cost_bits: float  # rounds * round_cost_bits


def choose_distortion(
    n_l: ArrayLike, sx2_l: ArrayLike, s2_l: ArrayLike, K: float,
    *, R0: float, beta: float, eps: float, lambda_cap: float = 10.0,
) -> DistortionChoice:
    """Distortion minimizing the total cost ``T(D_tot) B(D_tot)`` with ``lambda <= lambda_cap``.

    ``D_tot = (1 + lambda) sum_l n_l s2_l / K`` (the paper's knob at the model level);
    the budget is then split over layers by Corollary 1. The search zooms a log-spaced
    grid over ``lambda`` on the smooth cost (``T`` without its ceiling); the cost is
    unimodal in practice but the grid does not rely on it.

    Examples
    --------
    >>> c = choose_distortion([1], [2.0], [1.0], 10, R0=1.0, beta=1.0, eps=0.01)
    >>> 1.5 < c.lambda_ < 2.5  # THEORY.md §7: smallest near lambda = 2
    True
    """
    n_l, sx2_l, s2_l, K = _layer_args(n_l, sx2_l, s2_l, K)
    lambda_cap = float(checks.positive("lambda_cap", lambda_cap))
    if lambda_cap <= _LAMBDA_FLOOR:
        raise ValueError(f"lambda_cap must be > {_LAMBDA_FLOOR}, got {lambda_cap!r}")
    floor = error_free_distortion(n_l, s2_l, K)
    if floor <= 0:
        raise ValueError("sum_l n_l s2_l must be > 0: lambda is defined relative to the gradient noise")

    def cost(log_lambda: ArrayLike) -> NDArray[np.float64]:
        D_tot = floor * (1 + np.exp(log_lambda))
        return total_cost(D_tot, n_l, sx2_l, s2_l, K, R0=R0, beta=beta, eps=eps, integer=False)

    lo, hi = np.log(_LAMBDA_FLOOR), np.log(lambda_cap)
    for _ in range(_ZOOM_LEVELS):  # each level is one vectorized evaluation
        grid = np.linspace(lo, hi, _GRID_POINTS)
        best = int(np.argmin(cost(grid)))
        lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, grid.size - 1)]
    lam = float(np.exp(grid[best]))
    D_tot = floor * (1 + lam)
    rounds = int(rounds_needed(D_tot, R0, beta, eps))
    per_round = float(round_cost(D_tot, n_l, sx2_l, s2_l, K))
    return DistortionChoice(
        lambda_=lam,
        distortion_total=D_tot,
        distortion_per_layer=split_distortion(D_tot, n_l, sx2_l, s2_l, K),
        rounds=rounds,
        round_cost_bits=per_round,
        total_cost_bits=rounds * per_round,
    )

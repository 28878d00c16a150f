"""Heterogeneous workers: water-filling of the noise rates (THEORY.md §3).

With ``t_k = 2^(-2 r_k)`` the sum-rate problem ``min sum_k c_k r_k`` over
``sum_k (1 - t_k) / s2_k = 1/D`` is solved by ``t_k = min(1, c_k s2_k / theta)``; the
water level ``theta`` has a closed form once the active set is known, and the active
set is a prefix of the workers sorted by ``c_k s2_k``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize

from . import checks


def min_distortion(s2_k: ArrayLike) -> NDArray[np.float64]:
    """Error-free bound ``1 / sum_k 1/s2_k`` (variance of the best weighted mean).

    Reduces over the last axis. Every achievable distortion is strictly above it.

    Examples
    --------
    >>> float(min_distortion([1.0, 1.0, 2.0]))
    0.4
    """
    s2_k = checks.positive("s2_k", s2_k)
    return 1.0 / np.sum(1.0 / s2_k, axis=-1)


def _vector(name: str, value: ArrayLike) -> NDArray[np.float64]:
    arr = checks.positive(name, value)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    return arr


def waterfill(D: float, s2_k: ArrayLike, costs: ArrayLike | None = None) -> NDArray[np.float64]:
    """Per-worker noise rates ``r_k`` (bits per coordinate) of the cheapest point of F(D).

    Minimizes ``sum_k c_k r_k`` (``c_k = 1`` without ``costs``) subject to
    ``sum_k (1 - 2^(-2 r_k)) / s2_k = 1/D``. Workers with ``c_k s2_k >= theta`` get 0.

    Parameters
    ----------
    D : target per-coordinate distortion, ``> min_distortion(s2_k)``.
    s2_k : gradient-noise variance of each worker, shape ``(K,)``.
    costs : optional price per bit of each worker's link, shape ``(K,)``.

    Examples
    --------
    >>> waterfill(0.2, [1.0] * 10).round(4)  # homogeneous: 1/2 log2(KD/(KD - s2))
    array([0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    """
    s2_k = _vector("s2_k", s2_k)
    c_k = np.ones_like(s2_k) if costs is None else _vector("costs", costs)
    if c_k.shape != s2_k.shape:
        raise ValueError(f"costs must have shape {s2_k.shape}, got {c_k.shape}")
    D = float(checks.positive("D", D))
    checks.above_floor(np.asarray(D), min_distortion(s2_k), "1/sum(1/s2_k)")
    level = c_k * s2_k
    order = np.argsort(level)
    inv_s2 = np.cumsum(1.0 / s2_k[order])
    cost_sum = np.cumsum(c_k[order])
    excess = inv_s2 - 1.0 / D
    with np.errstate(divide="ignore", invalid="ignore"):
        theta = np.where(excess > 0, cost_sum / excess, np.inf)
    upper = np.append(level[order][1:], np.inf)
    valid = (excess > 0) & (level[order] < theta) & (theta <= upper * (1 + 1e-12))
    theta_star = theta[np.argmax(valid)]
    return 0.5 * np.log2(np.maximum(theta_star / level, 1.0))


def heterogeneous_sum_rate(D: float, sx2: float, s2_k: ArrayLike) -> float:
    """Minimum sum rate ``R_sum(D)`` for workers with different noise (THEORY.md §3).

    Examples
    --------
    >>> round(heterogeneous_sum_rate(0.2, 2.0, [1.0] * 10), 6)  # equals Corollary 2
    6.729716
    """
    sx2 = float(checks.nonnegative("sx2", sx2))
    return float(np.sum(waterfill(D, s2_k)) + 0.5 * np.log2(1.0 + sx2 / D))


def _branch_weights(c: NDArray[np.float64], sx2: float, s2: NDArray[np.float64]) -> NDArray[np.float64]:
    """Root ``w >= w*`` of ``sx2/(1+sx2 w) + s2/(1-s2 w) = c`` (the convex branch)."""
    a = c * sx2 * s2
    b = -c * (sx2 - s2)
    const = sx2 + s2 - c
    disc = np.maximum(b * b - 4 * a * const, 0.0)
    return (-b + np.sqrt(disc)) / (2 * a)


_INFEASIBLE = 1e300  # finite stand-in for inf inside the bounded 1-D search


def _independent_term(w, sx2: float, s2):
    """Rate ``1/2 log2((1 + sx2 w)/(1 - s2 w))`` of one worker at precision weight ``w``."""
    return 0.5 * np.log2((1 + sx2 * w) / (1 - s2 * w))


def _convex_branch_cost(total: float, sx2: float, s2: NDArray[np.float64]) -> float:
    """Least cost of spending ``total`` precision over workers ``s2``, all on their convex
    branch (equal marginal rates; closed-form roots, bisection on the multiplier); inf if
    that branch cannot hold ``total``."""
    if s2.size == 0:
        return 0.0 if total == 0 else np.inf
    if np.sum(1.0 / s2) <= total:
        return np.inf
    w_star = np.maximum((sx2 - s2) / (2 * sx2 * s2), 0.0)
    lo = float(np.max(sx2 / (1 + sx2 * w_star) + s2 / (1 - s2 * w_star)))
    if np.sum(_branch_weights(np.full(s2.size, lo), sx2, s2)) > total:
        return np.inf
    hi = 2.0 * lo
    while np.sum(_branch_weights(np.full(s2.size, hi), sx2, s2)) < total:
        hi *= 2.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if np.sum(_branch_weights(np.full(s2.size, mid), sx2, s2)) < total else (lo, mid)
    w = _branch_weights(np.full(s2.size, hi), sx2, s2)
    return float(np.sum(_independent_term(w * total / np.sum(w), sx2, s2)))


def heterogeneous_independent_rate(D: float, sx2: float, s2_k: ArrayLike) -> float:
    """``R_ind(D)`` for heterogeneous workers: the best independent coding.

    Minimizes ``sum_k 1/2 log2((1 + sx2 w_k) / (1 - s2_k w_k))`` over the weights
    ``w_k = 1/(s2_k + sv2_k)`` with ``sum_k w_k = 1/D`` (``w_k = 0``: worker silent).
    Each term is concave below ``w* = (sx2 - s2_k)/(2 sx2 s2_k)`` and convex above, so
    the problem is not convex and the minimum may silence workers. Candidates, for the
    ``m`` least noisy workers: all on their convex branch (KKT), or one of them (the
    least or the most noisy) on its concave branch, found by a bounded 1-D search.
    With ``sx2 <= s2`` and equal noise it equals :func:`~flrd.theory.independent_rate`;
    otherwise it can be lower. Not a hot path (``O(K^2)`` bisections).

    Examples
    --------
    >>> round(heterogeneous_independent_rate(0.2, 0.5, [1.0] * 10), 6)
    6.60964
    """
    s2_k = np.sort(_vector("s2_k", s2_k))
    sx2 = float(checks.positive("sx2", sx2))
    D = float(checks.positive("D", D))
    checks.above_floor(np.asarray(D), min_distortion(s2_k), "1/sum(1/s2_k)")
    total = 1.0 / D
    best = np.inf
    for m in range(1, s2_k.size + 1):
        active = s2_k[:m]
        best = min(best, _convex_branch_cost(total, sx2, active))
        for j in {0, m - 1}:  # one worker on its concave branch
            rest = np.delete(active, j)
            cap = min((sx2 - active[j]) / (2 * sx2 * active[j]), total, (1 - 1e-12) / active[j])
            if cap <= 0:
                continue
            result = optimize.minimize_scalar(
                lambda w, s2_j=active[j], rest=rest: min(
                    float(_independent_term(w, sx2, s2_j)) + _convex_branch_cost(total - w, sx2, rest),
                    _INFEASIBLE),
                bounds=(0.0, cap), method="bounded", options={"xatol": 1e-12 * max(cap, 1e-300)})
            best = min(best, float(result.fun))
            if rest.size == 0 or total <= cap:  # the worker alone, at the bound
                best = min(best, float(_independent_term(min(total, cap), sx2, active[j]))
                           + _convex_branch_cost(total - min(total, cap), sx2, rest))
    return best

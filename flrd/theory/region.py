"""The rate region of Theorem 2 and its weighted-sum boundary (Lemma 1, Problem 20)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize

from . import checks
from .waterfill import min_distortion

MAX_WORKERS_FOR_SUBSETS = 20  # membership checks enumerate all 2^K - 1 subsets


def noise_weights(r_k: ArrayLike, s2_k: ArrayLike) -> NDArray[np.float64]:
    """``u_k(r_k) = (1 - 2^(-2 r_k)) / s2_k``: the precision each worker contributes."""
    r_k = checks.nonnegative("r_k", r_k)
    s2_k = checks.positive("s2_k", s2_k)
    return -np.expm1(-2.0 * np.log(2.0) * r_k) / s2_k


def region_vertex(r_k: ArrayLike, sx2: float, s2_k: ArrayLike, order: ArrayLike | None = None) -> NDArray[np.float64]:
    """Corner point of the region for noise rates ``r_k`` and a decoding order.

    ``order[0]`` is decoded last (conditioned on all others), which suits the worker
    whose bits cost most. ``R_k = r_k + 1/2 log2(S_k / S_(k+1))`` along the order, with
    ``S_k = 1/sx2 + sum of u_j over workers from k onward``. The rates sum to
    ``sum r_k + 1/2 log2(1 + sx2 / D)`` for the ``D`` that ``r_k`` reaches.

    Examples
    --------
    >>> region_vertex([0.5, 0.5], sx2=1.0, s2_k=[1.0, 1.0]).round(4)
    array([0.7075, 0.7925])
    """
    r_k = checks.nonnegative("r_k", r_k)
    sx2 = float(checks.positive("sx2", sx2))
    u = noise_weights(r_k, s2_k)
    order = np.arange(r_k.size) if order is None else np.asarray(order)
    if sorted(order.tolist()) != list(range(r_k.size)):
        raise ValueError(f"order must be a permutation of 0..{r_k.size - 1}, got {order!r}")
    tail = 1.0 / sx2 + np.cumsum(u[order][::-1])[::-1]  # S_k along the order
    nxt = np.append(tail[1:], 1.0 / sx2)
    rates = np.empty_like(r_k)
    rates[order] = r_k[order] + 0.5 * np.log2(tail / nxt)
    return rates


def in_rate_region(R_k: ArrayLike, r_k: ArrayLike, D: float, sx2: float, s2_k: ArrayLike, rtol: float = 1e-9) -> bool:
    """Whether ``R_k`` satisfies every subset inequality of Theorem 2 for ``r_k in F(D)``.

    Raises ``ValueError`` if ``r_k`` is not in ``F(D)`` (to ``rtol``) or ``K > 20``.
    """
    R_k = checks.nonnegative("R_k", R_k)
    u = noise_weights(r_k, s2_k)
    r_k = np.asarray(r_k, dtype=np.float64)
    sx2 = float(checks.positive("sx2", sx2))
    D = float(checks.positive("D", D))
    if R_k.size > MAX_WORKERS_FOR_SUBSETS:
        raise ValueError(f"K must be <= {MAX_WORKERS_FOR_SUBSETS} for subset checks, got {R_k.size}")
    if not np.isclose(np.sum(u), 1.0 / D, rtol=rtol, atol=0.0):
        raise ValueError(f"r_k must lie in F(D): sum u_k = {np.sum(u)!r} but 1/D = {1.0 / D!r}")
    masks = (np.arange(1, 2**R_k.size)[:, None] >> np.arange(R_k.size)) & 1
    inside = masks.astype(bool)
    rhs = inside @ r_k + 0.5 * np.log2((1 / sx2 + 1 / D) / (1 / sx2 + (~inside) @ u))
    return bool(np.all(inside @ R_k >= rhs - rtol * np.maximum(1.0, np.abs(rhs))))


@dataclass(frozen=True)
class Allocation:
    """Optimal per-worker rates for a weighted sum (bits per coordinate)."""

    rates: NDArray[np.float64]
    noise_rates: NDArray[np.float64]
    weighted_sum: float


def weighted_sum_allocation(weights: ArrayLike, D: float, sx2: float, s2_k: ArrayLike) -> Allocation:
    """Minimize ``sum_k a_k R_k`` over the rate region at distortion ``D`` (Problem 20).

    For fixed ``r`` the optimum is the vertex that decodes the heaviest weight last
    (Lemma 1); the remaining problem in ``u = u(r)`` is convex and is solved with
    SLSQP under ``sum u_k = 1/D``, ``0 <= u_k < 1/s2_k``.

    Examples
    --------
    >>> alloc = weighted_sum_allocation([1.0, 1.0], 0.75, 1.0, [1.0, 1.0])
    >>> round(alloc.weighted_sum, 4)  # equal weights: the sum rate
    2.1962
    """
    a = checks.nonnegative("weights", weights)
    s2_k = checks.positive("s2_k", s2_k)
    sx2 = float(checks.positive("sx2", sx2))
    D = float(checks.positive("D", D))
    checks.above_floor(np.asarray(D), min_distortion(s2_k), "1/sum(1/s2_k)")
    order = np.argsort(-a, kind="stable")

    def objective(u: NDArray[np.float64]) -> float:
        r = -0.5 * np.log2(np.clip(1.0 - s2_k * u, 1e-300, None))
        return float(a @ region_vertex(r, sx2, s2_k, order))

    # u_k = c / s2_k with c = D_min / D < 1 is strictly feasible.
    start = (float(min_distortion(s2_k)) / D) / s2_k
    result = optimize.minimize(
        objective, start, method="SLSQP",
        bounds=[(0.0, (1 - 1e-12) / s) for s in s2_k],
        constraints=[{"type": "eq", "fun": lambda u: u.sum() * D - 1.0}],
        options={"ftol": 1e-14, "maxiter": 500},
    )
    if not result.success and abs(result.x.sum() * D - 1.0) > 1e-8:
        raise RuntimeError(f"weighted-sum allocation did not converge: {result.message}")
    u = np.clip(result.x, 0.0, (1 - 1e-12) / s2_k)
    r = -0.5 * np.log2(1.0 - s2_k * u)
    rates = region_vertex(r, sx2, s2_k, order)
    return Allocation(rates=rates, noise_rates=r, weighted_sum=float(a @ rates))

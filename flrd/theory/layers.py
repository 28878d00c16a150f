"""Several layers: the distortion budget split of Corollary 1 (THEORY.md §5)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import checks
from .rates import sum_rate

_BISECTION_STEPS = 64  # halves a log-space bracket of width ~140 to ~1e-17


def _layer_args(
    n_l: ArrayLike, sx2_l: ArrayLike, s2_l: ArrayLike, K: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], float]:
    n_l = checks.positive("n_l", n_l)
    sx2_l = checks.nonnegative("sx2_l", sx2_l)
    s2_l = checks.nonnegative("s2_l", s2_l)
    K = float(checks.workers(K))
    n_l, sx2_l, s2_l = np.broadcast_arrays(np.atleast_1d(n_l), np.atleast_1d(sx2_l), np.atleast_1d(s2_l))
    if np.any(sx2_l + s2_l <= 0):
        raise ValueError("every layer needs sx2_l + s2_l > 0 (a layer with no signal and no noise has no rate)")
    return n_l, sx2_l, s2_l, K


def error_free_distortion(n_l: ArrayLike, s2_l: ArrayLike, K: ArrayLike) -> float:
    """Total distortion of error-free averaging, ``sum_l n_l s2_l / K``: the floor of ``D_tot``."""
    return float(np.sum(checks.positive("n_l", n_l) * checks.nonnegative("s2_l", s2_l)) / float(checks.workers(K)))


def _steepness(excess, sx2_l, s2_l, K):
    """``-2 ln2 dR_sum/dD`` at ``D = s2/K + excess`` (unchecked; hot loop)."""
    D = s2_l / K + excess
    return s2_l / (D * excess) + sx2_l / (D * (D + sx2_l))


def _distortion_at_slope(nu: NDArray[np.float64], sx2_l, s2_l, K) -> NDArray[np.float64]:
    """``D_l`` with ``-dR_sum,l/dD_l = nu``, broadcasting ``nu[..., None]`` over layers.

    The steepness falls monotonically in ``D``, so bisection on ``log(D - s2/K)`` works.
    """
    target = 2.0 * np.log(2.0) * nu
    scale = sx2_l + s2_l
    lo = np.broadcast_to(np.log(scale * 1e-18), np.broadcast_shapes(target.shape, scale.shape))
    hi = lo + np.log(1e36)
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        too_steep = _steepness(np.exp(mid), sx2_l, s2_l, K) > target
        lo = np.where(too_steep, mid, lo)
        hi = np.where(too_steep, hi, mid)
    return s2_l / K + np.exp(0.5 * (lo + hi))


def _split(D_tot: NDArray[np.float64], n_l, sx2_l, s2_l, K) -> NDArray[np.float64]:
    """Vectorized Corollary-1 split for totals ``D_tot`` of shape ``(G,)``: returns ``(G, L)``."""
    if n_l.size == 1:
        return (D_tot / n_l)[:, None]
    floor = float(n_l @ (s2_l / K))
    lo = np.full(D_tot.shape, np.log(1e-30))  # log of the common slope nu
    hi = np.full(D_tot.shape, np.log(1e30))
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        spent = _distortion_at_slope(np.exp(mid)[:, None], sx2_l, s2_l, K) @ n_l
        lo, hi = np.where(spent > D_tot, mid, lo), np.where(spent > D_tot, hi, mid)
    excess = _distortion_at_slope(np.exp(0.5 * (lo + hi))[:, None], sx2_l, s2_l, K) - s2_l / K
    # Remove the bisection residue by rescaling the part above the floor.
    return s2_l / K + excess * ((D_tot - floor) / (excess @ n_l))[:, None]


def split_distortion(D_tot: float, n_l: ArrayLike, sx2_l: ArrayLike, s2_l: ArrayLike, K: float) -> NDArray[np.float64]:
    """Per-coordinate distortions ``D_l`` minimizing ``sum_l n_l R_sum,l(D_l)`` (Corollary 1).

    Subject to ``sum_l n_l D_l = D_tot``. KKT: every layer has the same slope
    ``dR_sum,l/dD_l = -nu``; ``nu`` is found by bisection, each ``D_l(nu)`` by a
    vectorized inner bisection.

    Parameters
    ----------
    D_tot : total distortion ``E||Xh - X||^2`` over all coordinates.
    n_l, sx2_l, s2_l : coordinates, global-gradient and noise variance per layer.
    K : number of workers.

    Examples
    --------
    >>> D = split_distortion(3.0, [10, 10], [1.0, 1.0], [1.0, 1.0], K=10)
    >>> D.round(6)  # identical layers share the budget equally
    array([0.15, 0.15])
    """
    n_l, sx2_l, s2_l, K = _layer_args(n_l, sx2_l, s2_l, K)
    D_tot = float(checks.positive("D_tot", D_tot))
    floor = error_free_distortion(n_l, s2_l, K)
    if D_tot <= floor:
        raise ValueError(f"D_tot must be > sum_l n_l s2_l / K = {floor!r} (error-free), got {D_tot!r}")
    return _split(np.array([D_tot]), n_l, sx2_l, s2_l, K)[0]


def round_cost(D_tot: ArrayLike, n_l: ArrayLike, sx2_l: ArrayLike, s2_l: ArrayLike, K: float) -> NDArray[np.float64]:
    """Minimum bits of one round at total distortion ``D_tot``: ``B(D_tot)`` of Corollary 1.

    Vectorized over ``D_tot``.

    Examples
    --------
    >>> float(round_cost(3.0, [10, 10], [1.0, 1.0], [1.0, 1.0], K=10)).__round__(4)
    187.8822
    """
    n_l, sx2_l, s2_l, K = _layer_args(n_l, sx2_l, s2_l, K)
    D_tot = checks.positive("D_tot", D_tot)
    floor = error_free_distortion(n_l, s2_l, K)
    if np.any(D_tot <= floor):
        raise ValueError(f"D_tot must be > sum_l n_l s2_l / K = {floor!r} (error-free), got {D_tot!r}")
    D_l = _split(np.atleast_1d(D_tot).ravel(), n_l, sx2_l, s2_l, K)
    return (sum_rate(D_l, sx2_l, s2_l, K) @ n_l).reshape(D_tot.shape)

"""Homogeneous closed forms: Corollary 2, independent coding, the classic CEO rate.

All rates are sum rates over the ``K`` workers in **bits per coordinate**; every
function broadcasts over its arguments like a numpy ufunc.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import checks

Arrays4 = tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]


def _homogeneous_args(D: ArrayLike, sx2: ArrayLike, s2: ArrayLike, K: ArrayLike) -> Arrays4:
    K = checks.workers(K)
    sx2 = checks.nonnegative("sx2", sx2)
    s2 = checks.nonnegative("s2", s2)
    D = checks.positive("D", D)
    checks.above_floor(D, s2 / K, "s2/K")
    return D, sx2, s2, K


def sum_rate(D: ArrayLike, sx2: ArrayLike, s2: ArrayLike, K: ArrayLike) -> NDArray[np.float64]:
    """Minimum sum rate of unbiased aggregation, Corollary 2 (THEORY.md §3).

    ``R_sum(D) = K/2 log2(K D / (K D - s2)) + 1/2 log2(1 + sx2 / D)`` for ``D > s2/K``.

    Parameters
    ----------
    D : per-coordinate distortion of the server's unbiased estimate.
    sx2 : variance of the global gradient.
    s2 : variance of each worker's gradient noise.
    K : number of workers (>= 1).

    Examples
    --------
    >>> float(sum_rate(0.2, sx2=2.0, s2=1.0, K=10))  # doctest: +ELLIPSIS
    6.7297...
    """
    D, sx2, s2, K = _homogeneous_args(D, sx2, s2, K)
    noise_part = -0.5 * K * np.log2(1.0 - s2 / (K * D))
    return noise_part + 0.5 * np.log2(1.0 + sx2 / D)


def independent_rate(
    D: ArrayLike, sx2: ArrayLike, s2: ArrayLike, K: ArrayLike
) -> NDArray[np.float64]:
    """Sum rate when each worker codes its own ``Y_k`` alone (the paper's ``R_ind``).

    ``R_ind(D) = K/2 log2((K D + sx2) / (K D - s2))``: the test channel of Theorem 2
    with equal noise on every worker, each description sent without exploiting the
    correlation between workers.

    Examples
    --------
    >>> float(independent_rate(0.2, sx2=2.0, s2=1.0, K=10))
    10.0
    """
    D, sx2, s2, K = _homogeneous_args(D, sx2, s2, K)
    return 0.5 * K * (np.log2(K * D + sx2) - np.log2(K * D - s2))


def sum_rate_slope(D: ArrayLike, sx2: ArrayLike, s2: ArrayLike, K: ArrayLike) -> NDArray[np.float64]:
    """Derivative ``d R_sum / d D`` (bits per coordinate per unit distortion), always < 0."""
    D, sx2, s2, K = _homogeneous_args(D, sx2, s2, K)
    return -(K * s2 / (D * (K * D - s2)) + sx2 / (D * (D + sx2))) / (2.0 * np.log(2.0))


def ceo_sum_rate(D: ArrayLike, sx2: ArrayLike, s2: ArrayLike, K: ArrayLike) -> NDArray[np.float64]:
    """Classic (biased, MMSE) quadratic Gaussian CEO sum rate (Oohama), for comparison.

    ``R(D) = 1/2 log2(sx2/D) + K/2 log2(K D sx2 / (K D sx2 - s2 (sx2 - D)))`` for
    ``D_mmse < D < sx2`` with ``D_mmse = sx2 s2 / (K sx2 + s2)``, and ``0`` for
    ``D >= sx2``: without the unbiasedness constraint the server may send nothing and
    output 0, which is why it cannot drive training.

    Examples
    --------
    >>> float(ceo_sum_rate(3.0, sx2=2.0, s2=1.0, K=10))
    0.0
    """
    K = checks.workers(K)
    sx2 = checks.positive("sx2", sx2)
    s2 = checks.nonnegative("s2", s2)
    D = checks.positive("D", D)
    checks.above_floor(D, sx2 * s2 / (K * sx2 + s2), "sx2 s2/(K sx2 + s2)")
    Dc = np.minimum(D, sx2)
    rate = 0.5 * np.log2(sx2 / Dc) - 0.5 * K * np.log2(1.0 - s2 * (sx2 - Dc) / (K * Dc * sx2))
    return np.where(D >= sx2, 0.0, rate)

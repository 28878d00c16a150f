"""Live estimates of ``sx2`` and ``s2`` from one round's reports (THEORY.md §8)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import checks


@dataclass(frozen=True)
class VarianceEstimate:
    """Per-layer estimates: ``sx2`` global-gradient and ``s2`` gradient-noise variance."""

    sx2: NDArray[np.float64]
    s2: NDArray[np.float64]


def estimate_variances(
    m2_k: ArrayLike,
    gbar_sqnorm: ArrayLike,
    n: ArrayLike,
    quant_noise_var: ArrayLike = 0.0,
    weights: ArrayLike | None = None,
) -> VarianceEstimate:
    """Method-of-moments estimates of ``sx2_l`` and ``s2_l`` per layer.

    With aggregation weights ``w_k`` (equal by default, ``sum w_k = 1``),
    ``E[m2_k] = sx2 + s2`` and ``E[||gbar||^2/n] = sx2 + s2 sum w_k^2 + sum w_k^2 sq2_k``,
    so ``s2 = (mbar - a + sum w_k^2 sq2_k) / (1 - sum w_k^2)`` and
    ``sx2 = mbar - s2``; with equal weights this is THEORY.md §8's
    ``(mbar - (a - sq2/K)) K/(K-1)``. Both are clipped at 0 (sampling noise can make
    the raw difference negative).

    Parameters
    ----------
    m2_k : ``||g_k,l||^2 / n_l`` reported by each client, shape ``(K,)`` or ``(K, L)``.
    gbar_sqnorm : ``||gbar_l||^2`` of the decoded aggregate, shape ``()`` or ``(L,)``.
    n : coordinates per layer ``n_l``.
    quant_noise_var : per-coordinate quantization-noise variance ``sq2``: scalar,
        per layer ``(L,)`` or per client and layer ``(K, L)``.
    weights : aggregation weights ``(K,)``; normalized to sum 1.

    Examples
    --------
    >>> est = estimate_variances([3.0, 3.2, 2.8], gbar_sqnorm=2.4 * 100, n=100)
    >>> round(float(est.s2), 3), round(float(est.sx2), 3)
    (0.9, 2.1)
    """
    m2_k = checks.nonnegative("m2_k", m2_k)
    if m2_k.ndim == 0 or m2_k.shape[0] < 2:
        raise ValueError(f"need reports from K >= 2 clients to separate s2 from sx2, got shape {m2_k.shape}")
    K = m2_k.shape[0]
    a = checks.nonnegative("gbar_sqnorm", gbar_sqnorm) / checks.positive("n", n)
    sq2 = np.broadcast_to(checks.nonnegative("quant_noise_var", quant_noise_var), m2_k.shape)
    w = np.full(K, 1.0 / K) if weights is None else checks.nonnegative("weights", weights)
    if w.shape != (K,) or w.sum() <= 0:
        raise ValueError(f"weights must have shape ({K},) and a positive sum, got {weights!r}")
    w = w / w.sum()
    w_col = w.reshape((K,) + (1,) * (m2_k.ndim - 1))
    concentration = float(np.sum(w**2))
    if concentration >= 1.0:
        raise ValueError("weights put all mass on one client: s2 is not identifiable")
    mbar = np.sum(w_col * m2_k, axis=0)
    s2 = (mbar - a + np.sum(w_col**2 * sq2, axis=0)) / (1.0 - concentration)
    s2 = np.clip(s2, 0.0, mbar)
    return VarianceEstimate(sx2=mbar - s2, s2=s2)

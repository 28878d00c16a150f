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


def winsorize(values: ArrayLike, fraction: float) -> NDArray[np.float64]:
    """Clip each column of ``values`` (clients along axis 0) to its order statistics.

    With ``K`` rows and ``k = floor(fraction K)``, every entry is clipped into
    ``[x_(k+1), x_(K-k)]`` (the (k+1)-th smallest and largest of its column), so up to
    ``k`` arbitrary entries per column, NaN and infinities included (NaN counts as the
    largest), move the column's mean by at most the spread of the others. Symmetric
    clipping leaves the mean of a symmetric distribution unchanged. Hand-written rather
    than ``scipy.stats.mstats.winsorize``, which works on masked arrays and does not
    order NaN as an extreme value.

    Examples
    --------
    >>> winsorize([1.0, 2.0, 3.0, 4.0, 1e6], 0.2).tolist()
    [2.0, 2.0, 3.0, 4.0, 4.0]
    """
    x = np.asarray(values, dtype=np.float64)
    fraction = float(checks.in_range("fraction", fraction, 0.0, 0.5, high_open=True))
    k = int(np.floor(fraction * x.shape[0])) if x.ndim else 0
    if k == 0:
        return x.copy()
    x = np.where(np.isnan(x), np.inf, x)  # a NaN report is as suspect as the largest one
    ordered = np.sort(x, axis=0)
    return np.clip(x, ordered[k], ordered[x.shape[0] - 1 - k])


def estimate_variances(
    m2_k: ArrayLike,
    gbar_sqnorm: ArrayLike | None,
    n: ArrayLike,
    quant_noise_var: ArrayLike = 0.0,
    weights: ArrayLike | None = None,
    *,
    robust_fraction: float = 0.0,
    sx2: ArrayLike | None = None,
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
    robust_fraction : fraction ``f`` of clients, from each end, whose reports may be
        arbitrary (THEORY.md §8, "Robust aggregation"): ``m2_k`` and
        ``quant_noise_var`` are :func:`winsorize`-d per layer before the weighted mean,
        so ``floor(f K)`` hostile clients (NaN, infinite, negative or huge values)
        move ``mbar`` by at most the honest clients' spread. For honest i.i.d. clients
        ``m2_k`` is symmetric to ``O(1/sqrt(n_l))``, so the clipped mean stays
        consistent (exact as ``n_l`` grows); with non-IID clients it shrinks the
        extreme honest reports towards the others.
    sx2 : ``sx2_l`` measured directly, e.g. by :func:`signal_power` from the decoded
        updates. ``gbar_sqnorm`` may then be None and ``quant_noise_var`` is not used;
        ``s2 = mbar - sx2`` (THEORY.md §13: nothing a client declares enters ``sx2``).

    Examples
    --------
    >>> est = estimate_variances([3.0, 3.2, 2.8], gbar_sqnorm=2.4 * 100, n=100)
    >>> round(float(est.s2), 3), round(float(est.sx2), 3)
    (0.9, 2.1)
    """
    m2_k = np.asarray(m2_k, dtype=np.float64)
    if m2_k.ndim == 0 or m2_k.shape[0] < 2:
        raise ValueError(f"need reports from K >= 2 clients to separate s2 from sx2, got shape {m2_k.shape}")
    K = m2_k.shape[0]
    sq2 = np.broadcast_to(np.asarray(quant_noise_var, dtype=np.float64), m2_k.shape)
    m2_k = checks.nonnegative("m2_k", winsorize(m2_k, robust_fraction))
    sq2 = checks.nonnegative("quant_noise_var", winsorize(sq2, robust_fraction))
    w = np.full(K, 1.0 / K) if weights is None else checks.nonnegative("weights", weights)
    if w.shape != (K,) or w.sum() <= 0:
        raise ValueError(f"weights must have shape ({K},) and a positive sum, got {weights!r}")
    w = w / w.sum()
    w_col = w.reshape((K,) + (1,) * (m2_k.ndim - 1))
    concentration = float(np.sum(w**2))
    if concentration >= 1.0:
        raise ValueError("weights put all mass on one client: s2 is not identifiable")
    mbar = np.sum(w_col * m2_k, axis=0)
    if sx2 is not None:
        measured = np.clip(np.broadcast_to(np.asarray(sx2, dtype=np.float64), mbar.shape), 0.0, mbar)
        return VarianceEstimate(sx2=measured, s2=mbar - measured)
    if gbar_sqnorm is None:
        raise ValueError("need gbar_sqnorm (the aggregate's squared norm) unless sx2 is given")
    a = checks.nonnegative("gbar_sqnorm", gbar_sqnorm) / checks.positive("n", n)
    s2 = (mbar - a + np.sum(w_col**2 * sq2, axis=0)) / (1.0 - concentration)
    s2 = np.clip(s2, 0.0, mbar)
    return VarianceEstimate(sx2=mbar - s2, s2=s2)


def signal_power(updates: ArrayLike, robust_fraction: float = 0.0) -> float:
    """``sx2`` of one layer from the cross products of ``K >= 2`` clients' updates.

    With ``g_k = x + z_k`` and independent zero-mean ``z_k`` (gradient noise, and the
    quantization noise of an unbiased codec), ``E[<g_j, g_k>] / n = sx2`` for ``j != k``:
    no client's own noise enters, so neither does any statistic a client declares
    about it (THEORY.md §13). With ``robust_fraction = 0`` this is the plain mean over
    the ``K (K - 1)`` pairs. Otherwise each client's ``K - 1`` products are reduced to
    their median and the ``K`` medians are :func:`winsorize`-d before the mean: a
    hostile update spoils only its own row and one entry of each other row, so
    ``floor(f K)`` of them (fewer than half of each row) move the estimate by at most
    the honest spread. The median of an honest row is unbiased when the noises are
    symmetric (their products are).

    Parameters
    ----------
    updates : shape ``(K, ...)``: one flattened layer per client (decoded or exact).
    robust_fraction : as in :func:`estimate_variances`, in ``[0, 0.5)``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(0.0, 1.0, 100_000)  # sx2 = 1, s2 = 4
    >>> updates = x + rng.normal(0.0, 2.0, (10, x.size))
    >>> round(signal_power(updates), 1), round(signal_power(updates, 0.3), 1)
    (1.0, 1.0)
    """
    y = np.asarray(updates, dtype=np.float64)
    if y.ndim == 0 or y.shape[0] < 2:
        raise ValueError(f"need updates from K >= 2 clients, got shape {y.shape}")
    K = y.shape[0]
    y = y.reshape(K, -1)
    if y.shape[1] == 0:
        return 0.0
    if not np.all(np.isfinite(y)):
        raise ValueError("updates must be finite")
    products = (y @ y.T)[~np.eye(K, dtype=bool)].reshape(K, K - 1) / y.shape[1]
    if robust_fraction == 0:
        return float(np.mean(products))
    return float(np.mean(winsorize(np.median(products, axis=1), robust_fraction)))

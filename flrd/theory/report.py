"""The ``flrd theory`` table: rates and rounds against lambda for given statistics."""

from __future__ import annotations

import numpy as np

from .convergence import choose_distortion, rounds_needed
from .rates import independent_rate, sum_rate
from .signsgd import signsgd_model

DEFAULT_LAMBDAS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


def theory_table(
    sx2: float = 2.0, s2: float = 1.0, K: int = 10, beta: float = 1.0, R0: float = 1.0,
    eps: float = 0.01, lambdas: tuple[float, ...] = DEFAULT_LAMBDAS, lambda_cap: float = 16.0,
) -> str:
    """Plain-text table for one layer: per lambda, ``D``, ``R_sum``, ``R_ind``, rounds, total bits.

    Examples
    --------
    >>> print(theory_table().splitlines()[0])  # doctest: +NORMALIZE_WHITESPACE
    flrd theory: sx2=2 s2=1 K=10 beta=1 R0=1 eps=0.01 (rates in bits per coordinate, summed over workers)
    """
    lam = np.asarray(lambdas, dtype=np.float64)
    D = s2 * (1 + lam) / K
    r_sum = sum_rate(D, sx2, s2, K)
    r_ind = independent_rate(D, sx2, s2, K)
    rounds = rounds_needed(D, R0, beta, eps)
    sign = signsgd_model(sx2, s2, K)
    best = choose_distortion([1], [sx2], [s2], K, R0=R0, beta=beta, eps=eps, lambda_cap=lambda_cap)
    lines = [
        f"flrd theory: sx2={sx2:g} s2={s2:g} K={K} beta={beta:g} R0={R0:g} eps={eps:g} "
        "(rates in bits per coordinate, summed over workers)",
        f"{'lambda':>8} {'D':>10} {'R_sum':>9} {'R_ind':>9} {'R_ind-R_sum':>12} {'rounds':>9} {'total bits':>12}",
    ]
    for row in zip(lam, D, r_sum, r_ind, rounds):
        l_, d_, rs, ri, t = row
        lines.append(f"{l_:8.3g} {d_:10.4g} {rs:9.4f} {ri:9.4f} {ri - rs:12.4f} {int(t):9d} {rs * t:12.4g}")
    lines += [
        "",
        f"SignSGD model: D_sign={float(sign.distortion):.4g}  SignSGD={float(sign.signsgd_rate):.4g}  "
        f"R_ind={float(sign.independent_rate):.4f}  R_sum={float(sign.sum_rate):.4f}",
        f"Corollary 3 choice (lambda <= {lambda_cap:g}): lambda={best.lambda_:.3f}  D={best.distortion_total:.4g}  "
        f"rounds={best.rounds}  bits/round={best.round_cost_bits:.4f}  total bits={best.total_cost_bits:.4g}",
    ]
    return "\n".join(lines)

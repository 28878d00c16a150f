"""SignSGD against the bound (THEORY.md §6, the paper's Fig. 7)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import checks
from .rates import independent_rate, sum_rate


@dataclass(frozen=True)
class SignSGDModel:
    """The paper's model of SignSGD at given statistics (all rates in bits per coordinate).

    ``distortion`` is the modelled ``D_sign``; ``signsgd_rate`` is what SignSGD spends
    (``K``: one bit per worker); ``independent_rate`` and ``sum_rate`` are ``R_ind`` and
    ``R_sum`` at ``D_sign``.
    """

    distortion: NDArray[np.float64]
    signsgd_rate: NDArray[np.float64]
    independent_rate: NDArray[np.float64]
    sum_rate: NDArray[np.float64]


def signsgd_distortion(sx2: ArrayLike, s2: ArrayLike, K: ArrayLike) -> NDArray[np.float64]:
    """``D_sign = (s2 + (1 - 2/pi) (sx2 + s2)) / K``: each worker's 1-bit error as independent noise.

    Examples
    --------
    >>> round(float(signsgd_distortion(1.0, 1.0, 4)), 4)
    0.4317
    """
    sx2 = checks.nonnegative("sx2", sx2)
    s2 = checks.nonnegative("s2", s2)
    K = checks.workers(K)
    return (s2 + (1.0 - 2.0 / np.pi) * (sx2 + s2)) / K


def signsgd_model(sx2: ArrayLike, s2: ArrayLike, K: ArrayLike) -> SignSGDModel:
    """Distortion of SignSGD and the three rates at it.

    ``R_ind(D_sign)`` is the constant ``K/2 log2((2 - 2/pi)/(1 - 2/pi)) ~ 0.9538 K``.

    Examples
    --------
    >>> m = signsgd_model(2.0, 1.0, 10)
    >>> round(float(m.independent_rate) / 10, 4)
    0.9538
    """
    D = signsgd_distortion(sx2, s2, K)
    K = np.asarray(K, dtype=np.float64)
    return SignSGDModel(
        distortion=D,
        signsgd_rate=np.broadcast_to(K, D.shape).astype(np.float64),
        independent_rate=independent_rate(D, sx2, s2, K),
        sum_rate=sum_rate(D, sx2, s2, K),
    )

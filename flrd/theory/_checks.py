"""Argument validation shared by the theory functions.

Every check raises ``ValueError`` whose message names the bound that was broken.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def finite(name: str, value: ArrayLike) -> NDArray[np.float64]:
    """Return ``value`` as a float64 array, rejecting NaN and infinities."""
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return arr


def nonnegative(name: str, value: ArrayLike) -> NDArray[np.float64]:
    """Finite and >= 0 (variances)."""
    arr = finite(name, value)
    if np.any(arr < 0):
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return arr


def positive(name: str, value: ArrayLike) -> NDArray[np.float64]:
    """Finite and > 0."""
    arr = finite(name, value)
    if np.any(arr <= 0):
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return arr


def workers(K: ArrayLike) -> NDArray[np.float64]:
    """Number of workers: finite and >= 1 (real values allowed for continuity)."""
    arr = finite("K", K)
    if np.any(arr < 1):
        raise ValueError(f"K must be >= 1, got {K!r}")
    return arr


def above_floor(D: NDArray[np.float64], floor: ArrayLike, what: str) -> None:
    """Require ``D > floor`` elementwise; ``what`` describes the floor."""
    if np.any(D <= floor):
        raise ValueError(
            f"D must be > {what} (the error-free variance); "
            f"got D={D!r}, floor={np.asarray(floor)!r}"
        )

"""Argument validation for flrd's public functions and constructors.

Every check returns the validated value (as float64 arrays, or a Python ``int``) and
raises ``ValueError`` whose message names the argument and the bound it broke, so a
caller can write ``self.lambda_cap = float(checks.positive("lambda_cap", lambda_cap))``.

Examples
--------
>>> from flrd.theory import checks
>>> float(checks.positive("lambda_cap", 16))
16.0
>>> checks.in_range("smoothing", 0.0, 0.0, 1.0, low_open=True)
Traceback (most recent call last):
...
ValueError: smoothing must be in (0, 1], got 0.0
>>> checks.integer("patience", 2.0, minimum=1)
2
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["above_floor", "finite", "in_range", "integer", "nonnegative", "positive", "workers"]


def finite(name: str, value: ArrayLike) -> NDArray[np.float64]:
    """Return ``value`` as a float64 array, rejecting NaN, infinities and non-numbers."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a finite number or array of numbers, got {value!r}") from err
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


def in_range(
    name: str, value: ArrayLike, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> NDArray[np.float64]:
    """Finite and inside ``[low, high]``; ``low_open`` / ``high_open`` exclude an end."""
    arr = finite(name, value)
    below = arr <= low if low_open else arr < low
    above = arr >= high if high_open else arr > high
    if np.any(below | above):
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{name} must be in {left}{low:g}, {high:g}{right}, got {value!r}")
    return arr


def integer(name: str, value: object, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """A whole number (an integral float such as ``3.0`` is accepted; ``bool`` is not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not np.isfinite(value) or float(value) != int(value):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    out = int(value)
    if minimum is not None and out < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if maximum is not None and out > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value!r}")
    return out


def workers(K: ArrayLike) -> NDArray[np.float64]:
    """Number of workers: finite and >= 1 (real values allowed for continuity)."""
    arr = finite("K", K)
    if np.any(arr < 1):
        raise ValueError(f"K must be >= 1, got {K!r}")
    return arr


def above_floor(D: NDArray[np.float64], floor: ArrayLike, what: str) -> None:
    """Require ``D > floor`` elementwise; ``what`` describes the floor."""
    if np.any(D <= np.asarray(floor)):
        raise ValueError(
            f"D must be > {what} (the error-free variance); "
            f"got D={D!r}, floor={np.asarray(floor)!r}"
        )

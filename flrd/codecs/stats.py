"""One-byte statistics: a layer's mean square on grids both sides know, rounded
stochastically so the server's mean over clients stays unbiased.

``SNR_GRID`` holds ``m2 / noise_var`` (the layer's SNR; the server knows the noise
target it asked for): 0, then 16 points per octave on [2**-12, 2**1) where the sparse
dithered codec's noise depends on m2, then 8 per octave up to 2**38. Indices below 255
take one byte; index ``255 + b`` takes the two bytes ``255, b`` (SNR >= 2**7.75,
where the layer's payload is several bits per coordinate anyway). Every grid value is
a dyadic rational (``ldexp(1 + f/F, e)``), so both sides hold the same floats.

``ABS_GRID`` (two bytes, 64 points per octave on [2**-512, 2**512)) carries m2 itself
when no noise target is known in advance (relative-noise warm-up).

Rounding: ``t`` between grid points ``a <= t < b`` becomes ``b`` with probability
``(t - a)/(b - a)`` (unbiased); ``0 < t < grid[1]`` rounds up to ``grid[1]`` (so a
nonzero layer is never declared zero; this small-layer bias is the only one), and
values above the grid clip to its top.

Example:
    >>> index = round_to_grid(SNR_GRID, 0.5, uniform=0.3)
    >>> float(SNR_GRID[index]), snr_bytes(index)
    (0.5, b'\\xb1')
"""

from __future__ import annotations

import numpy as np

from .errors import CodecError


def _dyadic(per_octave: int, first: int, stop: int) -> np.ndarray:
    e, f = np.divmod(np.arange(per_octave * (stop - first)), per_octave)
    return np.ldexp(1.0 + f / per_octave, e + first)


SNR_GRID = np.concatenate([[0.0], _dyadic(16, -12, 1), _dyadic(8, 1, 39)])[:511]
ABS_GRID = np.concatenate([[0.0], _dyadic(64, -512, 512)])[:65536]


def round_to_grid(grid: np.ndarray, value: float, uniform: float) -> int:
    """Index of ``value`` stochastically rounded on ``grid`` with ``uniform`` in [0, 1)."""
    if not value >= 0:
        raise ValueError(f"statistic must be >= 0, got {value}")
    if value == 0:
        return 0
    if value < grid[1]:
        return 1
    if value >= grid[-1]:
        return grid.size - 1
    low = int(np.searchsorted(grid, value, side="right")) - 1
    return low + int(uniform * (grid[low + 1] - grid[low]) < value - grid[low])


def snr_bytes(index: int) -> bytes:
    """One byte below 255, else ``255`` and a second byte."""
    return bytes([index]) if index < 255 else bytes([255, index - 255])


def read_snr(buf: memoryview | bytes, pos: int) -> tuple[int, int]:
    """(index, next position) of an :func:`snr_bytes` field at ``pos``."""
    if pos >= len(buf):
        raise CodecError("message truncated inside the statistics")
    index = buf[pos]
    if index < 255:
        return index, pos + 1
    if pos + 1 >= len(buf):
        raise CodecError("message truncated inside a two-byte statistic")
    return 255 + buf[pos + 1], pos + 2


def abs_bytes(index: int) -> bytes:
    return int(index).to_bytes(2, "little")


def read_abs(buf: memoryview | bytes, pos: int) -> tuple[int, int]:
    if pos + 2 > len(buf):
        raise CodecError("message truncated inside the statistics")
    return int.from_bytes(bytes(buf[pos : pos + 2]), "little"), pos + 2

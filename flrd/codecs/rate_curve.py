"""Operational rate curve of the default (dithered) codec.

``bits_per_coord(noise_var, snr)`` is the expected payload rate, in bits per
coordinate, of :class:`~flrd.codecs.DitheredCodec` on Gaussian data with mean square
``snr * noise_var`` at noise target ``noise_var``: the plan's keep probability times
the entropy of its stratified index tables (exact for the ideal coder on Gaussian
data), times ``1 + CODER_OVERHEAD``, the coder's measured excess
(``tests/codecs/test_codecs_message.py`` checks it against encodes at 2**18
coordinates; ``bench/bench_codecs.py`` prints both). Framing is not included: add
:data:`flrd.codecs.message.FRAMING_BYTES` and a statistic byte per layer.

The bound it is compared against is ``1/2 log2(1 + snr)``.

Example:
    >>> import numpy as np
    >>> r = bits_per_coord(1.0, np.array([0.01, 1.0, 3.0]))
    >>> (r / (0.5 * np.log2(1 + np.array([0.01, 1.0, 3.0])))).round(2).tolist()
    [2.08, 1.51, 1.26]
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .dithered import plan_layer
from .stratified import rate_bits

CODER_OVERHEAD = 0.003  # measured: constriction's 24-bit table quantization and flush


@functools.lru_cache(maxsize=4096)
def _one(snr: float) -> float:
    if snr <= 0:
        return 0.0
    plan = plan_layer(1.0, snr, snr, 0)
    return plan.keep_prob * rate_bits(0, plan.scale) * (1 + CODER_OVERHEAD)


def bits_per_coord(noise_var: float | np.ndarray, snr: float | np.ndarray) -> np.ndarray:
    """Expected bits per coordinate at noise target ``noise_var`` and layer SNR
    ``snr = m2 / noise_var`` (broadcast; the rate depends on the SNR only)."""
    noise_var, snr = np.broadcast_arrays(np.asarray(noise_var, float), np.asarray(snr, float))
    if np.any(noise_var <= 0) or np.any(~np.isfinite(snr)) or np.any(snr < 0):
        raise ValueError("noise_var must be > 0 and snr finite and >= 0")
    unique, inverse = np.unique(snr, return_inverse=True)
    return np.array([_one(float(s)) for s in unique])[inverse].reshape(snr.shape)


def bound_bits(snr: float | np.ndarray) -> np.ndarray:
    """The unbiased Gaussian bound ``1/2 log2(1 + snr)`` bits per coordinate."""
    return 0.5 * np.log2(1 + np.asarray(snr, float))


def noise_for_bits(bits: float) -> float:
    """Noise target D on unit-variance data at which the bound is ``bits``."""
    return 1.0 / (2.0 ** (2 * bits) - 1)


__all__ = ["CODER_OVERHEAD", "bits_per_coord", "bound_bits", "noise_for_bits"]
_ = math

"""QSGD: stochastic rounding of |x|/||x|| to ``levels`` uniform levels.

After Alistarh et al. 2017. The norm travels in the header; the signed level
indices are range-coded under their empirical frequencies (which replaces the
paper's Elias coding and is never worse than their entropy plus a small table).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np

from .base import Body, Codec, expect_params, int_param, register
from .entropy import decode_categorical, encode_categorical
from .errors import CodecError
from .header import Header
from .numerics import as_float_array, chunks, rms, store, subsample

MAX_LEVELS = 2**15 - 1


def _fractions(flat: np.ndarray, norm: float, levels: int, sl: slice) -> np.ndarray:
    return np.abs(flat[sl], dtype=np.float64) / norm * levels


@register
@dataclass(frozen=True)
class QSGDCodec(Codec):
    """Unbiased QSGD quantizer with ``levels`` levels per sign.

    Example:
        >>> import numpy as np
        >>> from flrd.codecs import decode
        >>> x = np.array([0.5, -0.5, 0.0, 0.7071])
        >>> decode(QSGDCodec(levels=4).encode(x, seed=0)).shape
        (4,)
    """

    levels: int = 4
    name: ClassVar[str] = "qsgd"
    codec_id: ClassVar[int] = 5
    unbiased: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not isinstance(self.levels, (int, np.integer)) or not 1 <= self.levels <= MAX_LEVELS:
            raise ValueError(f"levels must be in 1..{MAX_LEVELS}, got {self.levels}")

    def _encode(self, flat: np.ndarray, seed: int) -> tuple[tuple[float, ...], Body]:
        norm = rms(flat) * math.sqrt(flat.size)
        symbols = np.zeros(flat.size, dtype=np.int16)
        if norm > 0:
            rng = np.random.default_rng(seed)
            for sl in chunks(flat.size):
                a = _fractions(flat, norm, self.levels, sl)
                level = np.minimum(np.floor(a + rng.random(a.size)), self.levels)
                symbols[sl] = np.where(flat[sl] < 0, -level, level)
        return (self.levels, norm), encode_categorical(symbols)

    @classmethod
    def _decode(cls, header: Header, body: memoryview) -> np.ndarray:
        levels, norm = expect_params(header, 2, cls.name)
        levels = int_param(levels, "qsgd levels", 1, MAX_LEVELS)
        if norm < 0:
            raise CodecError(f"qsgd: norm must be >= 0, got {norm}")
        symbols = decode_categorical(body, header.size, (-levels, levels))  # validates before allocating
        out = np.empty(header.size, dtype=header.dtype)
        for sl, sym in zip(chunks(header.size), symbols, strict=True):
            store(out, sl, sym * (norm / levels))
        return out

    def expected_noise_var(self, array: Any) -> float:
        flat = as_float_array(array).reshape(-1)
        norm = rms(flat) * math.sqrt(flat.size)
        if norm == 0:
            return 0.0
        acc = 0.0
        for sl in chunks(flat.size):
            tau = _fractions(flat, norm, self.levels, sl) % 1.0
            acc += float(np.sum(tau * (1 - tau)))
        return (norm / self.levels) ** 2 * acc / flat.size

    @classmethod
    def for_noise_var(cls, noise_var: float, array: Any, **params: Any) -> Self:
        """Fewest levels meeting the target (bisection; the variance falls ~1/s²)."""
        lo, hi = 1, MAX_LEVELS
        while lo < hi:
            mid = (lo + hi) // 2
            if cls(levels=mid, **params).expected_noise_var(array) <= noise_var:
                hi = mid
            else:
                lo = mid + 1
        return cls(levels=lo, **params)

    @classmethod
    def for_bits(cls, bits_per_coord: float, array: Any, **params: Any) -> Self:
        """Most levels whose expected entropy (plus table and header) fits."""
        flat = as_float_array(array).reshape(-1)
        lo, hi = 1, MAX_LEVELS
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if _expected_bits(flat, mid) <= bits_per_coord:
                lo = mid
            else:
                hi = mid - 1
        return cls(levels=lo, **params)


def _expected_bits(flat: np.ndarray, levels: int) -> float:
    """Expected payload bits per coordinate: entropy of the expected symbol law on a
    subsample, plus the count table and header amortized over the layer."""
    n = max(flat.size, 1)
    norm = rms(flat) * math.sqrt(flat.size)
    if norm == 0:
        return 8 * 120 / n
    x = subsample(flat, 1 << 16)
    a = np.abs(x) / norm * levels
    low, tau = np.floor(a), a % 1.0
    sign = np.where(x < 0, -1, 1)
    top = int(low.max()) + 1
    hist = np.bincount((sign * low + top).astype(np.int64), 1 - tau, 2 * top + 1)
    hist += np.bincount((sign * np.minimum(low + 1, levels) + top).astype(np.int64), tau, 2 * top + 1)
    p = hist[hist > 0] / hist.sum()
    return float(-np.sum(p * np.log2(p))) + 8 * (120 + 4 * (2 * top + 1)) / n

"""TernGrad: stochastic ternary quantization with a max-norm scale and gradient clipping.

After Wen et al. 2017: each layer is first clipped to ``c`` times its RMS
(``clip_sigmas``, their ``c = 2.5``), then ``x̂ = s·t`` with ``s = max|clipped|`` and
``t ∈ {-1, 0, 1}``, ``P(t = sign x) = |x|/s``. Clipping trades a small bias on the
few coordinates beyond ``c σ`` for a much smaller ``s``, hence variance: on
heavy-tailed updates the variance falls several-fold (their §3.3). The ternary
symbols are range-coded under their empirical frequencies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import Body, FixedRateCodec, expect_params, register
from .entropy import decode_categorical, encode_categorical
from .errors import CodecError
from .header import Header
from .numerics import as_float_array, chunks, max_abs, rms, store


@register
@dataclass(frozen=True)
class TernGradCodec(FixedRateCodec):
    """Ternary quantizer; unbiased on the clipped values (``clip_sigmas = 0``: no clipping,
    unbiased everywhere).

    Example:
        >>> import numpy as np
        >>> from flrd.codecs import decode
        >>> decode(TernGradCodec().encode(np.array([1.0, -1.0, 0.0]))).tolist()
        [1.0, -1.0, 0.0]
    """

    clip_sigmas: float = 2.5
    name: ClassVar[str] = "terngrad"
    codec_id: ClassVar[int] = 6
    # Clipping biases only coordinates beyond c RMS (~1 % of a Gaussian layer at c = 2.5);
    # the server treats it as unbiased, as the TernGrad paper's analysis does.
    unbiased: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not (self.clip_sigmas == 0 or 1.0 <= self.clip_sigmas <= 1e6):
            raise ValueError(f"clip_sigmas must be 0 (no clipping) or in [1, 1e6], got {self.clip_sigmas!r}")

    def _clip(self, flat: np.ndarray) -> float:
        """The scale ``s``: ``max|x|``, or ``c RMS`` when that is smaller (clipping)."""
        top = max_abs(flat)
        return min(top, self.clip_sigmas * rms(flat)) if self.clip_sigmas > 0 else top

    def _encode(self, flat: np.ndarray, seed: int) -> tuple[tuple[float, ...], Body]:
        scale = self._clip(flat)
        symbols = np.zeros(flat.size, dtype=np.int8)
        if scale > 0:
            rng = np.random.default_rng(seed)
            for sl in chunks(flat.size):
                share = np.minimum(np.abs(flat[sl], dtype=np.float64) / scale, 1.0)
                keep = rng.random(sl.stop - sl.start) < share
                symbols[sl] = np.where(keep, np.where(flat[sl] < 0, -1, 1), 0)
        return (scale,), encode_categorical(symbols)

    @classmethod
    def _decode(cls, header: Header, body: memoryview) -> np.ndarray:
        (scale,) = expect_params(header, 1, cls.name)
        if scale < 0:
            raise CodecError(f"terngrad: scale must be >= 0, got {scale}")
        symbols = decode_categorical(body, header.size, (-1, 1))  # validates before allocating
        out = np.empty(header.size, dtype=header.dtype)
        for sl, sym in zip(chunks(header.size), symbols, strict=True):
            store(out, sl, sym * scale)
        return out

    def expected_noise_var(self, array: Any) -> float:
        flat = as_float_array(array).reshape(-1)
        if flat.size == 0:
            return 0.0
        scale = self._clip(flat)
        total = 0.0
        for sl in chunks(flat.size):
            magnitude = np.abs(flat[sl], dtype=np.float64)
            clipped = np.minimum(magnitude, scale)
            # variance of the ternary draw around the clipped value, plus the clipping bias
            total += float(np.sum(clipped * (scale - clipped) + (magnitude - clipped) ** 2))
        return total / flat.size

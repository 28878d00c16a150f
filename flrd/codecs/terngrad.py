"""TernGrad: stochastic ternary quantization with a max-norm scale.

After Wen et al. 2017 (without their optional gradient clipping): ``x̂ = s·t`` with
``s = max|x|`` and ``t ∈ {-1, 0, 1}``, ``P(t = sign x) = |x|/s``. The ternary
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
from .numerics import as_float_array, chunks, max_abs, store


@register
@dataclass(frozen=True)
class TernGradCodec(FixedRateCodec):
    """Unbiased ternary quantizer (no parameters).

    Example:
        >>> import numpy as np
        >>> from flrd.codecs import decode
        >>> decode(TernGradCodec().encode(np.array([1.0, -1.0, 0.0]))).tolist()
        [1.0, -1.0, 0.0]
    """

    name: ClassVar[str] = "terngrad"
    codec_id: ClassVar[int] = 6
    unbiased: ClassVar[bool] = True

    def _encode(self, flat: np.ndarray, seed: int) -> tuple[tuple[float, ...], Body]:
        scale = max_abs(flat)
        symbols = np.zeros(flat.size, dtype=np.int8)
        if scale > 0:
            rng = np.random.default_rng(seed)
            for sl in chunks(flat.size):
                keep = rng.random(sl.stop - sl.start) < np.abs(flat[sl], dtype=np.float64) / scale
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
        scale = max_abs(flat)
        return sum(
            float(np.sum(np.abs(flat[sl], dtype=np.float64) * (scale - np.abs(flat[sl], dtype=np.float64))))
            for sl in chunks(flat.size)
        ) / flat.size

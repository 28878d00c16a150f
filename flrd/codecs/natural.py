"""Natural compression: unbiased stochastic rounding to signed powers of two.

After Horváth et al. 2019. ``|x| ∈ [2^e, 2^(e+1))`` becomes ``2^(e+1)`` with
probability ``|x|/2^e - 1`` and ``2^e`` otherwise. Each entry is a sign bit plus an
exponent byte ``c`` meaning ``2^(e0 + c)`` (``c = 0`` is zero); ``e0`` travels in
the header. Entries below ``2^(e0+1)`` round unbiasedly to 0 or ``2^(e0+1)``.
Exponent bytes are range-coded under their empirical frequencies when that is
smaller than 8 bits each (it usually is: ~3 bits for Gaussian data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import Body, FixedRateCodec, expect_params, int_param, register
from .entropy import decode_categorical, encode_categorical
from .errors import CodecError
from .header import Header
from .numerics import as_float_array, chunks, max_abs, store

_E0_RANGE = (-1400, 1100)  # covers every float64 exponent


def _split(x: np.ndarray, e0: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Magnitudes, the lower power of two per entry and the upper one."""
    mag = np.abs(x, dtype=np.float64)
    small = mag < np.ldexp(1.0, e0 + 1)
    lower = np.where(small, 0.0, np.ldexp(1.0, np.frexp(mag)[1] - 1))
    upper = np.where(small, np.ldexp(1.0, e0 + 1), 2 * lower)
    return mag, lower, upper


@register
@dataclass(frozen=True)
class NaturalCodec(FixedRateCodec):
    """Unbiased power-of-two rounding (about 1 + H(exponent) bits per entry).

    Example:
        >>> import numpy as np
        >>> from flrd.codecs import decode
        >>> decode(NaturalCodec().encode(np.array([1.0, -4.0, 0.0]))).tolist()
        [1.0, -4.0, 0.0]
    """

    entropy_coded: bool = True
    name: ClassVar[str] = "natural"
    codec_id: ClassVar[int] = 9
    unbiased: ClassVar[bool] = True

    def _encode(self, flat: np.ndarray, seed: int) -> tuple[tuple[float, ...], Body]:
        e0 = int(np.frexp(max_abs(flat))[1]) - 255
        rng = np.random.default_rng(seed)
        codes = np.zeros(flat.size, dtype=np.uint8)
        signs = []
        for sl in chunks(flat.size):
            mag, lower, upper = _split(flat[sl], e0)
            rounded = np.where(rng.random(mag.size) * (upper - lower) < mag - lower, upper, lower)
            exps = np.frexp(rounded)[1] - 1 - e0  # frexp(2^e) = (0.5, e + 1)
            codes[sl] = np.where(rounded > 0, exps, 0)
            signs.append(np.packbits(flat[sl] < 0).tobytes())
        coded = encode_categorical(codes) if self.entropy_coded else []
        use_coded = bool(coded) and sum(len(c) for c in coded) < codes.size
        return (e0, int(use_coded)), [*signs, *(coded if use_coded else [codes.tobytes()])]

    @classmethod
    def _decode(cls, header: Header, body: memoryview) -> np.ndarray:
        e0, coded = expect_params(header, 2, cls.name)
        e0 = int_param(e0, "natural e0", *_E0_RANGE)
        coded = int_param(coded, "natural coded flag", 0, 1)
        n = header.size
        split = (n + 7) // 8
        if len(body) < split or (not coded and len(body) != split + n):
            raise CodecError(f"natural: body of {len(body)} bytes does not match {n} entries")
        signs = np.frombuffer(body[:split], dtype=np.uint8)
        if coded:
            code_chunks = decode_categorical(body[split:], n, (0, 255))
        else:
            raw = np.frombuffer(body[split:], dtype=np.uint8)
            code_chunks = (raw[sl] for sl in chunks(n))
        out = np.empty(n, dtype=header.dtype)
        for sl, code in zip(chunks(n), code_chunks, strict=True):
            negative = np.unpackbits(signs[sl.start // 8 : (sl.stop + 7) // 8], count=sl.stop - sl.start)
            mag = np.where(code > 0, np.ldexp(1.0, e0 + code.astype(np.int64)), 0.0)
            store(out, sl, np.where(negative, -mag, mag))
        return out

    def expected_noise_var(self, array: Any) -> float:
        flat = as_float_array(array).reshape(-1)
        if flat.size == 0:
            return 0.0
        e0 = int(np.frexp(max_abs(flat))[1]) - 255
        acc = 0.0
        for sl in chunks(flat.size):
            mag, lower, upper = _split(flat[sl], e0)
            acc += float(np.sum((upper - mag) * (mag - lower)))
        return acc / flat.size

"""SignSGD: one bit per entry with a per-layer reconstruction scale."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np

from .base import Body, Codec, expect_body, expect_params, int_param, register
from .errors import CodecError
from .header import Header
from .numerics import as_float_array, chunks, mean_abs, rms, store

SCALES = ("mean_abs", "gaussian")


@register
@dataclass(frozen=True)
class SignCodec(Codec):
    """Send ``x >= 0`` as one bit per entry; decode ``±s``.

    Args:
        scale: ``"mean_abs"`` (``s = mean|x|``, the MSE-optimal 1-bit scale for a
            sign quantizer) or ``"gaussian"`` (``s = sqrt(2/pi) * RMS(x)``, the
            Lloyd–Max 1-bit level for a Gaussian, THEORY §6).

    Example:
        >>> import numpy as np
        >>> from flrd.codecs import decode
        >>> decode(SignCodec().encode(np.array([2.0, -1.0, 0.0, -1.0]))).tolist()
        [1.0, -1.0, 1.0, -1.0]
    """

    scale: str = "mean_abs"
    name: ClassVar[str] = "sign"
    codec_id: ClassVar[int] = 4
    unbiased: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {self.scale!r}")

    def _scale(self, flat: np.ndarray) -> float:
        return mean_abs(flat) if self.scale == "mean_abs" else math.sqrt(2 / math.pi) * rms(flat)

    def _encode(self, flat: np.ndarray, seed: int) -> tuple[tuple[float, ...], Body]:
        body = [np.packbits(flat[sl] >= 0).tobytes() for sl in chunks(flat.size)]
        return (SCALES.index(self.scale), self._scale(flat)), body

    @classmethod
    def _decode(cls, header: Header, body: memoryview) -> np.ndarray:
        kind, scale = expect_params(header, 2, cls.name)
        int_param(kind, "sign scale kind", 0, 1)
        if scale < 0:
            raise CodecError(f"sign: scale must be >= 0, got {scale}")
        expect_body(body, (header.size + 7) // 8, cls.name)
        packed = np.frombuffer(body, dtype=np.uint8)
        out = np.empty(header.size, dtype=header.dtype)
        for sl in chunks(header.size):
            bits = np.unpackbits(packed[sl.start // 8 : (sl.stop + 7) // 8], count=sl.stop - sl.start)
            store(out, sl, np.where(bits, scale, -scale))
        return out

    def expected_noise_var(self, array: Any) -> float:
        flat = as_float_array(array).reshape(-1)
        if flat.size == 0:
            return 0.0
        s = self._scale(flat)
        return sum(float(np.sum((np.abs(flat[sl], dtype=np.float64) - s) ** 2)) for sl in chunks(flat.size)) / flat.size

    @classmethod
    def for_noise_var(cls, noise_var: float, array: Any, **params: Any) -> Self:
        return cls(**{"scale": "mean_abs", **params})

    @classmethod
    def for_bits(cls, bits_per_coord: float, array: Any, **params: Any) -> Self:
        return cls(**params)


def majority_vote(decoded: list[np.ndarray]) -> np.ndarray:
    """Server-side SignSGD aggregation: the elementwise sign of the summed signs.

    Returns +1/-1 entries (0 on ties) in the dtype and shape of the inputs.

    Example:
        >>> majority_vote([np.array([1.0, -2.0]), np.array([3.0, -1.0]), np.array([-1.0, 5.0])]).tolist()
        [1.0, -1.0]
    """
    if not decoded:
        raise ValueError("majority_vote needs at least one decoded array")
    shape = decoded[0].shape
    if any(d.shape != shape for d in decoded):
        raise ValueError(f"all arrays must have shape {shape}")
    votes = np.zeros(shape, dtype=np.int64)
    for d in decoded:
        votes += np.sign(d).astype(np.int64)
    return np.sign(votes).astype(decoded[0].dtype)

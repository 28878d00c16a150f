"""Top-k (per layer, or over the whole update) and Rand-k sparsification.

Kept values are sent as float16 or float32 after division by a power of two
just above their largest magnitude (a float64 header scale), so huge and tiny
layers stay representable and float32 values pass unchanged.
Top-k positions are Elias–Fano coded (about ``2 + log2(n/k)`` bits each); Rand-k
positions cost nothing: the decoder regenerates the seeded index set.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np

from .base import Body, Codec, expect_body, expect_params, int_param, register
from .errors import CodecError
from .header import Header
from .indices import elias_fano_decode, elias_fano_encode, elias_fano_size, random_subset, top_k_indices
from .numerics import as_float_array, rms, store

VALUE_DTYPES = ("float16", "float32")
_HEADER_BYTES = 80  # framing, parameters and CRC, for rate estimates


@dataclass(frozen=True)
class _Sparse(Codec):
    fraction: float = 0.01
    k: int | None = None
    value_dtype: str = "float32"

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        if self.k is not None and (not isinstance(self.k, (int, np.integer)) or self.k < 1):
            raise ValueError(f"k must be an int >= 1, got {self.k}")
        if self.value_dtype not in VALUE_DTYPES:
            raise ValueError(f"value_dtype must be one of {VALUE_DTYPES}, got {self.value_dtype!r}")

    def count(self, n: int) -> int:
        """Entries kept out of ``n`` (``k`` if given, else ``ceil(fraction * n)``)."""
        return min(n, self.k if self.k is not None else math.ceil(self.fraction * n))

    @property
    def _itemsize(self) -> int:
        return 2 if self.value_dtype == "float16" else 4

    def _pack_values(self, values: np.ndarray) -> tuple[float, bytes]:
        # A power-of-two scale divides exactly, so float32 inputs stay lossless.
        scale = float(np.ldexp(1.0, np.frexp(np.max(np.abs(values)))[1])) if values.size else 1.0
        stored = values / scale
        return scale, stored.astype("<f2" if self._itemsize == 2 else "<f4").tobytes()

    @staticmethod
    def _params(header: Header, name: str) -> tuple[int, int, float]:
        k, value_code, scale = expect_params(header, 3, name)
        if scale < 0:
            raise CodecError(f"{name}: scale must be >= 0, got {scale}")
        return int_param(k, f"{name} k", 0, header.size), int_param(value_code, f"{name} value dtype", 0, 1), scale

    @staticmethod
    def _values(buf: memoryview, value_code: int, scale: float) -> np.ndarray:
        return np.frombuffer(buf, dtype="<f2" if value_code == 0 else "<f4").astype(np.float64) * scale

    @classmethod
    def for_bits(cls, bits_per_coord: float, array: Any, **params: Any) -> Self:
        """Largest ``k`` whose payload fits ``bits_per_coord`` (at least one entry)."""
        if not bits_per_coord > 0:
            raise ValueError(f"bits_per_coord must be > 0, got {bits_per_coord}")
        n = as_float_array(array).size
        probe = cls(**params)
        lo, hi = 1, max(n, 1)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if probe._payload_bytes(n, mid) * 8 <= bits_per_coord * n:
                lo = mid
            else:
                hi = mid - 1
        return cls(k=lo, **params)

    @abc.abstractmethod
    def _payload_bytes(self, n: int, k: int) -> int:
        """Payload size for ``k`` kept entries out of ``n``."""


@register
@dataclass(frozen=True)
class TopKCodec(_Sparse):
    """Keep the ``k`` largest-magnitude entries (biased; use with ErrorFeedback).

    Example:
        >>> import numpy as np
        >>> from flrd.codecs import decode
        >>> decode(TopKCodec(k=2).encode(np.array([0.1, -3.0, 2.0, 0.5]))).tolist()
        [0.0, -3.0, 2.0, 0.0]
    """

    name: ClassVar[str] = "topk"
    codec_id: ClassVar[int] = 7
    unbiased: ClassVar[bool] = False

    def _encode(self, flat: np.ndarray, seed: int) -> tuple[tuple[float, ...], Body]:
        positions = top_k_indices(flat, self.count(flat.size))
        scale, values = self._pack_values(flat[positions].astype(np.float64))
        params = (positions.size, VALUE_DTYPES.index(self.value_dtype), scale)
        return params, [*elias_fano_encode(positions, flat.size), values]

    @classmethod
    def _decode(cls, header: Header, body: memoryview) -> np.ndarray:
        k, value_code, scale = cls._params(header, cls.name)
        split = elias_fano_size(header.size, k)
        expect_body(body, split + k * (2 if value_code == 0 else 4), cls.name)
        positions = elias_fano_decode(body[:split], header.size, k)
        out = np.zeros(header.size, dtype=header.dtype)
        store(out, positions, cls._values(body[split:], value_code, scale))
        return out

    def expected_noise_var(self, array: Any) -> float:
        flat = as_float_array(array).reshape(-1)
        if flat.size == 0:
            return 0.0
        kept = flat[top_k_indices(flat, self.count(flat.size))]
        return max(rms(flat) ** 2 * flat.size - rms(kept) ** 2 * kept.size, 0.0) / flat.size

    @classmethod
    def for_noise_var(cls, noise_var: float, array: Any, **params: Any) -> Self:
        """Smallest ``k`` whose dropped energy per coordinate is <= ``noise_var``."""
        flat = as_float_array(array).reshape(-1).astype(np.float64)
        if flat.size == 0:
            return cls(k=1, **params)
        top = float(np.max(np.abs(flat))) or 1.0
        energy = np.sort((flat / top) ** 2)  # ascending: tail sums are prefix sums
        dropped = np.cumsum(energy) * top**2  # dropped[j]: energy of the j+1 smallest
        fits = np.flatnonzero(dropped <= noise_var * flat.size)
        return cls(k=max(1, flat.size - (int(fits[-1]) + 1 if fits.size else 0)), **params)

    def _payload_bytes(self, n: int, k: int) -> int:
        return _HEADER_BYTES + elias_fano_size(n, k) + k * self._itemsize


@register
@dataclass(frozen=True)
class GlobalTopKCodec(TopKCodec):
    """Top-k over the whole update, as the M22 authors' code sparsifies: the ``k``
    largest magnitudes of all layers together, each layer coded as :class:`TopKCodec`
    with its share (at least one entry, so that every layer's scale travels).

    :meth:`for_bits_jointly` finds the largest global ``k`` whose payloads fit the
    budget; a lone array (:meth:`for_bits`) is plain top-k, and noise targets
    (:meth:`for_noise_var`) are per layer, as for :class:`TopKCodec`.

    Example:
        >>> import numpy as np
        >>> big, small = np.arange(1.0, 1001.0), np.full(1000, 0.5)
        >>> [c.k for c in GlobalTopKCodec.for_bits_jointly(1.0, [big, small])]
        [16, 1]
    """

    name: ClassVar[str] = "topk-global"
    codec_id: ClassVar[int] = 10

    @classmethod
    def for_bits_jointly(cls, bits_per_coord: float, arrays: Sequence[Any], **params: Any) -> list[Self]:
        """Keep every entry above the smallest magnitude threshold whose payloads fit
        ``bits_per_coord`` over all arrays together (ties at the threshold all go or all
        stay). Memory: one sorted magnitude copy per layer, in the input's precision."""
        if not bits_per_coord > 0:
            raise ValueError(f"bits_per_coord must be > 0, got {bits_per_coord}")
        mags = [np.sort(np.abs(as_float_array(a).reshape(-1))) for a in arrays]
        sizes = [m.size for m in mags]
        probe = cls(**params)
        budget = bits_per_coord * float(sum(sizes))

        def counts(threshold: float) -> list[int]:
            return [max(n - int(np.searchsorted(m, threshold, side="right")), 1) for n, m in zip(sizes, mags)]

        def fits(threshold: float) -> bool:
            return 8 * sum(probe._payload_bytes(n, k) for n, k in zip(sizes, counts(threshold))) <= budget

        lo, hi = 0.0, max((float(m[-1]) for m in mags if m.size), default=0.0)
        if fits(lo):
            hi = lo
        while lo < hi:  # bisection on the threshold: fits(hi) holds, fits(lo) does not
            mid = lo + (hi - lo) / 2
            if mid in (lo, hi):
                break
            lo, hi = (lo, mid) if fits(mid) else (mid, hi)
        return [cls(k=k, **params) for k in counts(hi)]


@register
@dataclass(frozen=True)
class RandKCodec(_Sparse):
    """Keep ``k`` uniformly random entries scaled by ``n/k`` (unbiased up to value
    rounding); the index set is regenerated from the header seed.

    Example:
        >>> import numpy as np
        >>> from flrd.codecs import decode
        >>> int(np.count_nonzero(decode(RandKCodec(k=3).encode(np.ones(10), seed=7))))
        3
    """

    name: ClassVar[str] = "randk"
    codec_id: ClassVar[int] = 8
    unbiased: ClassVar[bool] = True

    def _encode(self, flat: np.ndarray, seed: int) -> tuple[tuple[float, ...], Body]:
        k = self.count(flat.size)
        positions = random_subset(flat.size, k, np.random.default_rng(seed))
        scale, values = self._pack_values(flat[positions].astype(np.float64) * (flat.size / max(k, 1)))
        return (k, VALUE_DTYPES.index(self.value_dtype), scale), [values]

    @classmethod
    def _decode(cls, header: Header, body: memoryview) -> np.ndarray:
        k, value_code, scale = cls._params(header, cls.name)
        expect_body(body, k * (2 if value_code == 0 else 4), cls.name)
        positions = random_subset(header.size, k, np.random.default_rng(header.seed))
        out = np.zeros(header.size, dtype=header.dtype)
        store(out, positions, cls._values(body, value_code, scale))
        return out

    def expected_noise_var(self, array: Any) -> float:
        flat = as_float_array(array).reshape(-1)
        if flat.size == 0:
            return 0.0
        return (flat.size / self.count(flat.size) - 1) * rms(flat) ** 2

    @classmethod
    def for_noise_var(cls, noise_var: float, array: Any, **params: Any) -> Self:
        """Smallest ``k`` with ``(n/k - 1) * mean(x²) <= noise_var``."""
        flat = as_float_array(array).reshape(-1)
        m2 = rms(flat) ** 2
        k = math.ceil(flat.size * m2 / (noise_var + m2)) if m2 > 0 else 1
        return cls(k=min(max(k, 1), max(flat.size, 1)), **params)

    def _payload_bytes(self, n: int, k: int) -> int:
        return _HEADER_BYTES + k * self._itemsize



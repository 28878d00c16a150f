"""QSGD: stochastic rounding of |x|/||bucket|| to ``levels`` uniform levels per bucket.

After Alistarh et al. 2017: the layer may be cut into buckets of ``bucket_size``
consecutive coordinates (their experiments use 512), each quantized against its own
norm. The bucket norms travel as float32 at the start of the body (32 bits per
bucket, 0.0625 bit per coordinate at 512); the signed level indices are range-coded
under their empirical frequencies (which replaces the paper's Elias coding and is
never worse than their entropy plus a small table). The default ``bucket_size = 0``
is one bucket for the whole layer: with entropy coding one step size for the whole
layer is the better quantizer (a uniform step is what entropy-coded scalar
quantization wants), and at equal rate buckets of 512 measured 1.3-1.9x the NMSE on
Gaussian and MNIST-update data (BENCHMARKS.md, "Codecs"). Buckets matter for the
paper's fixed small ``s`` and Elias coding.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np

from .base import Body, Codec, expect_params, int_param, register
from .entropy import decode_categorical, encode_categorical
from .errors import CodecError
from .header import Header
from .numerics import CHUNK, as_float_array, chunks, rms, store

MAX_LEVELS = 2**15 - 1
MAX_BUCKET = 2**31
DEFAULT_BUCKET = 0


def _num_buckets(size: int, bucket_size: int) -> int:
    if size == 0:
        return 0
    return 1 if bucket_size == 0 else -(-size // bucket_size)


def _bucket_chunks(size: int, bucket_size: int) -> Iterator[slice]:
    """Slices of whole buckets (about ``CHUNK`` coordinates each; one slice per bucket
    when buckets are larger)."""
    if bucket_size == 0:
        yield slice(0, size)
        return
    yield from chunks(size, bucket_size * max(1, CHUNK // bucket_size))


def bucket_norms(flat: np.ndarray, bucket_size: int) -> np.ndarray:
    """float32 norm of every bucket, rounded up so that ``|x| <= norm`` holds exactly."""
    n = _num_buckets(flat.size, bucket_size)
    norms = np.zeros(n, dtype=np.float64)
    if bucket_size == 0 and n:  # chunked, in float64: no full-size temporaries
        norms[0] = rms(flat) * math.sqrt(flat.size)
    for sl in _bucket_chunks(flat.size, bucket_size) if bucket_size else ():
        x = flat[sl].astype(np.float64)
        top = np.abs(x).max() if x.size else 0.0
        scaled = x / top if top > 0 else x  # no overflow for 1e200
        first = sl.start // bucket_size
        sums = np.add.reduceat(scaled**2, np.arange(0, x.size, bucket_size)) if x.size else np.zeros(0)
        norms[first:first + sums.size] = np.sqrt(sums) * top
    out = norms.astype(np.float32)
    low = out.astype(np.float64) < norms
    out[low] = np.nextafter(out[low], np.float32(np.inf))
    return out


def _per_coordinate(norms: np.ndarray, sl: slice, bucket_size: int) -> np.ndarray:
    """Each coordinate's bucket norm over ``sl`` (float64)."""
    if bucket_size == 0:
        return np.full(sl.stop - sl.start, float(norms[0]) if norms.size else 0.0)
    index = np.arange(sl.start, sl.stop) // bucket_size
    return norms[index].astype(np.float64)


def _fractions(flat: np.ndarray, norm: np.ndarray, levels: int, sl: slice) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.abs(flat[sl], dtype=np.float64) / norm * levels
    return np.where(norm > 0, np.minimum(a, levels), 0.0)


@register
@dataclass(frozen=True)
class QSGDCodec(Codec):
    """Unbiased QSGD quantizer with ``levels`` levels per sign and per-bucket norms.

    Example:
        >>> import numpy as np
        >>> from flrd.codecs import decode
        >>> x = np.array([0.5, -0.5, 0.0, 0.7071])
        >>> decode(QSGDCodec(levels=4).encode(x, seed=0)).shape
        (4,)
    """

    levels: int = 4
    bucket_size: int = DEFAULT_BUCKET
    name: ClassVar[str] = "qsgd"
    codec_id: ClassVar[int] = 5
    unbiased: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not isinstance(self.levels, (int, np.integer)) or not 1 <= self.levels <= MAX_LEVELS:
            raise ValueError(f"levels must be in 1..{MAX_LEVELS}, got {self.levels}")
        if not isinstance(self.bucket_size, (int, np.integer)) or not 0 <= self.bucket_size <= MAX_BUCKET:
            raise ValueError(f"bucket_size must be in 0..{MAX_BUCKET} (0: the whole layer), got {self.bucket_size}")

    def _encode(self, flat: np.ndarray, seed: int) -> tuple[tuple[float, ...], Body]:
        norms = bucket_norms(flat, self.bucket_size)
        symbols = np.zeros(flat.size, dtype=np.int16)
        rng = np.random.default_rng(seed)
        for sl in chunks(flat.size):
            a = _fractions(flat, _per_coordinate(norms, sl, self.bucket_size), self.levels, sl)
            level = np.minimum(np.floor(a + rng.random(a.size)), self.levels)
            symbols[sl] = np.where(flat[sl] < 0, -level, level)
        return (self.levels, self.bucket_size), [norms.astype("<f4").tobytes(), *encode_categorical(symbols)]

    @classmethod
    def _decode(cls, header: Header, body: memoryview) -> np.ndarray:
        levels, bucket_size = expect_params(header, 2, cls.name)
        levels = int_param(levels, "qsgd levels", 1, MAX_LEVELS)
        bucket_size = int_param(bucket_size, "qsgd bucket_size", 0, MAX_BUCKET)
        count = _num_buckets(header.size, bucket_size)
        if len(body) < 4 * count:
            raise CodecError(f"qsgd: body of {len(body)} bytes cannot hold {count} bucket norms")
        norms = np.frombuffer(body[:4 * count], dtype="<f4")
        if not (np.all(np.isfinite(norms)) and np.all(norms >= 0)):
            raise CodecError("qsgd: bucket norms must be finite and >= 0")
        symbols = decode_categorical(body[4 * count:], header.size, (-levels, levels))  # validates first
        out = np.empty(header.size, dtype=header.dtype)
        for sl, sym in zip(chunks(header.size), symbols, strict=True):
            store(out, sl, sym * (_per_coordinate(norms, sl, bucket_size) / levels))
        return out

    def expected_noise_var(self, array: Any) -> float:
        flat = as_float_array(array).reshape(-1)
        if flat.size == 0:
            return 0.0
        norms = bucket_norms(flat, self.bucket_size)
        acc = 0.0
        for sl in chunks(flat.size):
            norm = _per_coordinate(norms, sl, self.bucket_size)
            tau = _fractions(flat, norm, self.levels, sl) % 1.0
            acc += float(np.sum(tau * (1 - tau) * (norm / self.levels) ** 2))
        return acc / flat.size

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
            if _expected_bits(flat, mid, params.get("bucket_size", DEFAULT_BUCKET)) <= bits_per_coord:
                lo = mid
            else:
                hi = mid - 1
        return cls(levels=lo, **params)


def _expected_bits(flat: np.ndarray, levels: int, bucket_size: int = DEFAULT_BUCKET) -> float:
    """Expected payload bits per coordinate: entropy of the expected symbol law on a
    subsample, plus the bucket norms, count table and header amortized over the layer."""
    n = max(flat.size, 1)
    norms = bucket_norms(flat, bucket_size)
    if not np.any(norms > 0):
        return 8 * (120 + 4 * norms.size) / n
    picked = np.arange(flat.size) if flat.size <= 1 << 16 else \
        np.random.default_rng(0).integers(0, flat.size, 1 << 16)
    x = flat[picked].astype(np.float64)
    norm = norms[picked // bucket_size if bucket_size else np.zeros(picked.size, np.int64)].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.where(norm > 0, np.minimum(np.abs(x) / norm * levels, levels), 0.0)
    low, tau = np.floor(a), a % 1.0
    sign = np.where(x < 0, -1, 1)
    top = int(low.max()) + 1
    hist = np.bincount((sign * low + top).astype(np.int64), 1 - tau, 2 * top + 1)
    hist += np.bincount((sign * np.minimum(low + 1, levels) + top).astype(np.int64), tau, 2 * top + 1)
    p = hist[hist > 0] / hist.sum()
    return float(-np.sum(p * np.log2(p))) + 8 * (120 + 4 * (2 * top + 1) + 4 * norms.size) / n

"""Thin helpers over ``constriction`` range coding.

Two uses: categorical symbols under an explicit count table (QSGD, TernGrad,
natural compression, M22's fitted cell probabilities) and integer symbols under a
quantized continuous law whose location varies per symbol (dithered quantization).
Every decoding failure becomes :class:`CodecError`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import constriction
import numpy as np
from scipy import special

from .errors import CodecError
from .numerics import chunks

_TABLE = struct.Struct("<qI")  # lowest symbol, alphabet size
FAMILIES = ("gaussian", "laplace", "cauchy")


def words_bytes(encoder: constriction.stream.queue.RangeEncoder) -> bytes:
    """The encoder's compressed words as little-endian bytes."""
    return encoder.get_compressed().astype("<u4").tobytes()


def decoder_for(buf: memoryview | bytes) -> constriction.stream.queue.RangeDecoder:
    """A range decoder over ``buf`` (length must be a multiple of 4)."""
    if len(buf) % 4:
        raise CodecError(f"entropy-coded block has {len(buf)} bytes, not a multiple of 4")
    return constriction.stream.queue.RangeDecoder(np.frombuffer(buf, dtype="<u4").astype(np.uint32))


def decode_guarded(decoder: constriction.stream.queue.RangeDecoder, *args: object) -> np.ndarray:
    """``decoder.decode(*args)`` with constriction's failures mapped to CodecError."""
    try:
        return decoder.decode(*args)
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as err:  # AssertionError on bad data; Rust panics derive from BaseException
        raise CodecError(f"corrupt entropy-coded data: {err}") from err


def categorical_probs(counts: np.ndarray) -> constriction.stream.model.Categorical:
    """A categorical model proportional to nonnegative ``counts``."""
    return constriction.stream.model.Categorical(counts.astype(np.float64), perfect=False)


def encode_categorical(symbols: np.ndarray) -> list[bytes]:
    """Range-code integer ``symbols`` under their own empirical frequencies.

    Layout: int64 lowest symbol, uint32 alphabet size K, K uint32 counts, then the
    coded words up to the end of the buffer (so place it last in a body).

    Example:
        >>> s = np.array([0, 1, 1, 1, -1])
        >>> data = b"".join(encode_categorical(s))
        >>> np.concatenate(list(decode_categorical(data, 5, (-8, 8)))).tolist()
        [0, 1, 1, 1, -1]
    """
    if symbols.size == 0:
        return []
    lo, hi = int(symbols.min()), int(symbols.max())
    counts = np.zeros(hi - lo + 1, dtype=np.int64)
    for sl in chunks(symbols.size):
        counts += np.bincount(symbols[sl].astype(np.int64) - lo, minlength=counts.size)
    table = [_TABLE.pack(lo, counts.size), counts.astype("<u4").tobytes()]
    if counts.size == 1:
        return table
    model = categorical_probs(counts)
    encoder = constriction.stream.queue.RangeEncoder()
    for sl in chunks(symbols.size):
        encoder.encode((symbols[sl].astype(np.int64) - lo).astype(np.int32), model)
    return [*table, words_bytes(encoder)]


def decode_categorical(buf: memoryview | bytes, count: int, bounds: tuple[int, int]) -> Iterator[np.ndarray]:
    """Validate a block from :func:`encode_categorical` whose symbols must lie in
    ``bounds`` (inclusive) and return an iterator of int64 symbol chunks
    (``CHUNK`` symbols each) totalling ``count`` symbols."""
    if count == 0:
        if len(buf):
            raise CodecError("non-empty entropy block for zero symbols")
        return iter(())
    if len(buf) < _TABLE.size:
        raise CodecError("entropy block shorter than its table header")
    lo, size = _TABLE.unpack_from(buf, 0)
    end = _TABLE.size + 4 * size
    if size < 1 or lo < bounds[0] or lo + size - 1 > bounds[1] or end > len(buf):
        raise CodecError(f"invalid symbol table (lowest {lo}, size {size})")
    counts = np.frombuffer(buf[_TABLE.size : end], dtype="<u4").astype(np.int64)
    if int(counts.sum()) != count:
        raise CodecError(f"symbol table counts sum to {int(counts.sum())}, expected {count}")
    if size == 1:
        if len(buf) != end:
            raise CodecError("trailing bytes after a single-symbol table")
        return (np.full(sl.stop - sl.start, lo, dtype=np.int64) for sl in chunks(count))
    decoder, model = decoder_for(buf[end:]), categorical_probs(counts)
    return (decode_guarded(decoder, model, sl.stop - sl.start).astype(np.int64) + lo for sl in chunks(count))


def continuous_model(family: int, lo: int, hi: int, scale: float) -> constriction.stream.model.Model:
    """Quantized law of ``FAMILIES[family]`` on ``[lo, hi]`` with fixed ``scale``;
    the location is supplied per symbol when coding."""
    m = constriction.stream.model
    if family == 0:
        return m.QuantizedGaussian(lo, hi, std=scale)
    if family == 1:
        return m.QuantizedLaplace(lo, hi, scale=scale)
    return m.QuantizedCauchy(lo, hi, scale=scale)


def family_cdf(family: int, z: np.ndarray) -> np.ndarray:
    """Standard CDF of ``FAMILIES[family]`` (unit scale, location 0)."""
    if family == 0:
        return special.ndtr(z)
    if family == 1:
        half = 0.5 * np.exp(-np.abs(z))
        return np.where(z < 0, half, 1.0 - half)
    return 0.5 + np.arctan(z) / np.pi

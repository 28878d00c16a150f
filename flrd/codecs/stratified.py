"""Dither-conditioned entropy coding with stratified tables (no per-symbol Python work).

Both sides know each coordinate's dither ``u`` (in units of the step, uniform on
(-1/2, 1/2)). The quantizer index ``q = round(x/Δ + u)`` is coded under the law of
``q`` given the dither's stratum (one of ``STRATA`` equal sub-intervals of the dither
range): one categorical table per stratum, computed from the model family and the
model scale in step units. Symbols of a group are sorted by stratum and each stratum
goes through constriction's range coder in one vectorized call. Indices beyond the
table's alphabet ``[-A, A]`` use the edge symbols as escapes and their excess follows
in the same stream (rare: the tables put the model's whole tail mass on the edges).

Exactness is untouched by the tables: they only set code lengths. The stratification
costs about 0.1 % of the rate against per-symbol conditioning (``STRATA = 32``).
"""

from __future__ import annotations

import functools

import constriction
import numpy as np
from scipy import special

from .errors import CodecError

STRATA = 32
_SUBPOINTS = 8  # dither points averaged per stratum
_RESOLUTION = 2.0**20  # table weights are integers: the same bits on every machine
_MAX_HALF = 1 << 15  # widest alphabet half-width
_TAIL = (7.0, 26.0)  # alphabet half-width in model scales: Gaussian, Laplace
_ESC_CHUNK = 16  # escape excess travels in 16-bit uniform pieces
FAMILIES = ("gaussian", "laplace")


def _cdf(family: int, z: np.ndarray) -> np.ndarray:
    if family == 0:
        return special.ndtr(z)
    half = 0.5 * np.exp(-np.abs(z))
    return np.where(z < 0, half, 1.0 - half)


def model_scale(family: int, m2: float, step: float) -> float:
    """Scale parameter of the family, in steps, for data of mean square ``m2``."""
    return float(np.sqrt(m2 / (1.0 if family == 0 else 2.0)) / step)


@functools.lru_cache(maxsize=512)
def tables(family: int, scale: float) -> tuple[int, tuple[constriction.stream.model.Categorical, ...], np.ndarray]:
    """(half-width A, one categorical model per stratum, their probabilities) for the
    index law with model ``scale`` (in steps), location 0."""
    half = int(min(_MAX_HALF, np.ceil(_TAIL[family] * scale) + 2))
    k = np.arange(-half, half + 1, dtype=np.float64)
    u = (np.arange(STRATA * _SUBPOINTS) + 0.5) / (STRATA * _SUBPOINTS) - 0.5  # midpoints
    upper = _cdf(family, (k[None, 1:] - 0.5 - u[:, None]) / scale)  # P(q <= k) for k < A
    cdf = np.concatenate([np.zeros((u.size, 1)), upper, np.ones((u.size, 1))], axis=1)
    probs = np.diff(cdf, axis=1).reshape(STRATA, _SUBPOINTS, -1).mean(axis=1)
    weights = np.round(probs * _RESOLUTION) + 1.0  # never zero: every index stays codable
    models = tuple(constriction.stream.model.Categorical(w, perfect=False) for w in weights)
    return half, models, weights / weights.sum(axis=1, keepdims=True)


def rate_bits(family: int, scale: float) -> float:
    """Expected bits per coded index when the data follow the model exactly."""
    _, _, probs = tables(family, scale)
    return float(-np.sum(probs * np.log2(probs)) / STRATA)


def strata_of(words: np.ndarray) -> np.ndarray:
    """Stratum of each dither: the top 5 of its 32 bits (``STRATA == 32``)."""
    return ((words >> np.uint64(27)) & np.uint64(STRATA - 1)).astype(np.uint8)


def encode_group(encoder: constriction.stream.queue.RangeEncoder, q: np.ndarray, strata: np.ndarray,
                 family: int, scale: float) -> None:
    """Append int64 indices ``q`` (with their dither strata) to ``encoder``."""
    half, models, _ = tables(family, scale)
    order = np.argsort(strata, kind="stable")
    bounds = np.searchsorted(strata[order], np.arange(STRATA + 1))
    clipped = np.clip(q, -half, half)
    symbols = (clipped + half).astype(np.int32)[order]
    escapes = np.flatnonzero(np.abs(q[order]) >= half)
    excess = np.abs(q[order]) - half
    for j in range(STRATA):
        lo, hi = bounds[j], bounds[j + 1]
        if lo == hi:
            continue
        encoder.encode(symbols[lo:hi], models[j])
        for pos in escapes[(escapes >= lo) & (escapes < hi)]:  # rare: one Python step each
            _encode_excess(encoder, int(excess[pos]))


def decode_group(decoder: constriction.stream.queue.RangeDecoder, strata: np.ndarray,
                 family: int, scale: float) -> np.ndarray:
    """Inverse of :func:`encode_group`: the int64 indices, in the original order."""
    half, models, _ = tables(family, scale)
    order = np.argsort(strata, kind="stable")
    counts = np.bincount(strata, minlength=STRATA)
    out = np.empty(strata.size, dtype=np.int64)
    pos = 0
    for j in range(STRATA):
        count = int(counts[j])
        if not count:
            continue
        s = _guarded(decoder.decode, models[j], count).astype(np.int64) - half
        for e in np.flatnonzero(np.abs(s) == half):
            s[e] += np.sign(s[e]) * _decode_excess(decoder)
        out[order[pos : pos + count]] = s
        pos += count
    return out


def _encode_excess(encoder: constriction.stream.queue.RangeEncoder, excess: int) -> None:
    nbits = excess.bit_length()  # < 54: |q| < 2**53 is checked by the caller
    encoder.encode(np.array([nbits], np.int32), constriction.stream.model.Uniform(64))
    for shift in range(0, nbits, _ESC_CHUNK):
        encoder.encode(np.array([(excess >> shift) & 0xFFFF], np.int32), constriction.stream.model.Uniform(1 << _ESC_CHUNK))


def _decode_excess(decoder: constriction.stream.queue.RangeDecoder) -> int:
    nbits = int(_guarded(decoder.decode, constriction.stream.model.Uniform(64), 1)[0])
    if nbits > 53:
        raise CodecError(f"escape of {nbits} bits exceeds the 53-bit index range")
    excess = 0
    for shift in range(0, nbits, _ESC_CHUNK):
        excess |= int(_guarded(decoder.decode, constriction.stream.model.Uniform(1 << _ESC_CHUNK), 1)[0]) << shift
    return excess


def _guarded(fn, *args):  # type: ignore[no-untyped-def]
    try:
        return fn(*args)
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as err:  # constriction panics derive from BaseException
        raise CodecError(f"corrupt entropy-coded data: {err}") from err


def stream_bytes(encoder: constriction.stream.queue.RangeEncoder) -> bytes:
    """The coded words, big-endian, trailing zero bytes dropped (the decoder reads
    missing words as zeros), so the stream costs whole bytes, not whole words."""
    return encoder.get_compressed().astype(">u4").tobytes().rstrip(b"\0")


def stream_decoder(buf: bytes | memoryview) -> constriction.stream.queue.RangeDecoder:
    """A range decoder over a buffer from :func:`stream_bytes`."""
    data = bytes(buf) + b"\0" * (-len(buf) % 4)
    return constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype=">u4").astype(np.uint32))

"""Dither-conditioned entropy coding with stratified tables (no per-symbol Python work).

Both sides know each coordinate's dither ``u`` (in units of the step, uniform on
(-1/2, 1/2)). The quantizer index ``q = round(x/Δ + u)`` is coded under the law of
``q`` given the dither's stratum (one of ``STRATA`` equal sub-intervals of the dither
range): one categorical table per stratum, computed from the model family and the
model scale in step units. Symbols of a group are sorted by stratum; within a stratum
consecutive ``k``-tuples (``k <= 4``, :func:`tuple_size`) go through constriction's
range coder as one symbol each, under the product table, in one vectorized call (the
coder's cost is per symbol, so this cuts it about k-fold at no rate cost); the few
symbols of a stratum that fill no whole tuple follow one by one. Indices beyond the
table's alphabet ``[-A, A]`` use the edge symbols as escapes and their excess follows
the group's last stratum (rare: the tables put the model's whole tail mass on the edges).

Exactness is untouched by the tables: they only set code lengths. The stratification
costs about 0.1 % of the rate against per-symbol conditioning (``STRATA = 32``).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import constriction
import numpy as np
from scipy import special

from .entropy import decode_guarded
from .errors import CodecError

STRATA = 32
_SUBPOINTS = 8  # dither points averaged per stratum
_RESOLUTION = 2.0**20  # table weights are integers: the same bits on every machine
# Widest alphabet half-width: 4096 steps covers SNR up to about 4e6 (11 bits per
# coordinate); rarer values escape. It bounds what one statistic byte, honest or
# forged, can make the decoder build: a table of STRATA x (2 * 4096 + 1) weights.
_MAX_HALF = 1 << 12
_MIN_HALF = 64  # a group of n indices gets a half-width of at most max(_MIN_HALF, 2 n)
# Alphabet half-width A = ceil(tail x model scale) + 1: |q| >= A needs |x| beyond 6
# Gaussian or 22 Laplace scales (probability ~1e-9), and is sent as an escape.
_TAIL = (6.0, 22.0)
_ANALYTIC_SCALE = 32.0  # model scales (in steps) above which rate_bits needs no table
_MAX_TUPLE = 4  # indices per range-coder symbol: constriction's cost is per symbol, not per bit
_ESC_CHUNK = 16  # escape excess travels in 16-bit uniform pieces
_STRATUM_BITS = 0xF8000000  # a dither's stratum: the top 5 of its low 32 bits (STRATA == 32)
FAMILIES = ("gaussian", "laplace")


def _cdf(family: int, z: np.ndarray) -> np.ndarray:
    if family == 0:
        return special.ndtr(z)
    half = 0.5 * np.exp(-np.abs(z))
    return np.where(z < 0, half, 1.0 - half)


def model_scale(family: int, m2: float, step: float) -> float:
    """Scale parameter of the family, in steps, for data of mean square ``m2``."""
    return float(np.sqrt(m2 / (1.0 if family == 0 else 2.0)) / step)


def group_half(size: int) -> int:
    """Largest alphabet half-width a group of ``size`` indices may use."""
    return max(_MIN_HALF, min(_MAX_HALF, 2 * size))


def tuple_size(half: int) -> int:
    """Indices coded per range-coder symbol for half-width ``half``: the most (up to
    ``_MAX_TUPLE``) whose joint alphabet fits the widest single table, so a tuple table
    never outgrows what one statistic byte may make the decoder build."""
    width = 2 * half + 1
    return max(k for k in range(1, _MAX_TUPLE + 1) if width**k <= 2 * _MAX_HALF + 1 or k == 1)


class Tables(NamedTuple):
    """Per-stratum coding tables for one index law.

    Attributes:
        half: alphabet half-width A (indices ``-A..A``; the edges double as escapes).
        tuple_size: k, indices per tuple symbol (:func:`tuple_size`).
        single: one categorical model per stratum over the ``2A + 1`` symbols.
        joint: one per stratum over the ``(2A + 1)**k`` tuples (product of ``single``).
        probs: the single models' probabilities, ``STRATA x (2A + 1)``.
    """

    half: int
    tuple_size: int
    single: tuple[constriction.stream.model.Categorical, ...]
    joint: tuple[constriction.stream.model.Categorical, ...]
    probs: np.ndarray


@functools.lru_cache(maxsize=256)
def tables(family: int, scale: float, max_half: int = _MAX_HALF) -> Tables:
    """The :class:`Tables` for the index law with model ``scale`` (in steps),
    location 0, and ``A <= max_half``.

    Built one stratum at a time, so the temporaries stay at ``_SUBPOINTS x (2 A + 1)``
    (and one joint table, at most ``2 * _MAX_HALF + 1`` entries).
    """
    half = int(min(max_half, _MAX_HALF, np.ceil(_TAIL[family] * scale) + 1))
    k = np.arange(-half, half + 1, dtype=np.float64)
    u = (np.arange(STRATA * _SUBPOINTS) + 0.5) / (STRATA * _SUBPOINTS) - 0.5  # midpoints
    probs = np.empty((STRATA, k.size))
    for j, points in enumerate(u.reshape(STRATA, _SUBPOINTS)):
        upper = _cdf(family, (k[None, 1:] - 0.5 - points[:, None]) / scale)  # P(q <= k) for k < A
        cdf = np.concatenate([np.zeros((points.size, 1)), upper, np.ones((points.size, 1))], axis=1)
        probs[j] = np.diff(cdf, axis=1).mean(axis=0)
    weights = np.round(probs * _RESOLUTION) + 1.0  # never zero: every index stays codable
    probs = weights / weights.sum(axis=1, keepdims=True)
    single = tuple(constriction.stream.model.Categorical(w, perfect=False) for w in weights)
    size = tuple_size(half)
    joint = single
    if size > 1:  # given the strata the indices are independent: the joint law is the product
        joint = tuple(constriction.stream.model.Categorical(_power(row, size), perfect=False) for row in probs)
    return Tables(half, size, single, joint, probs)


def _power(row: np.ndarray, size: int) -> np.ndarray:
    """Probabilities of ``size``-tuples of independent draws from ``row``, first draw
    most significant (the order of :func:`_tuples`)."""
    out = row
    for _ in range(size - 1):
        out = np.multiply.outer(out, row).reshape(-1)
    return out


def rate_bits(family: int, scale: float) -> float:
    """Expected bits per coded index when the data follow the model exactly.

    Above ``_ANALYTIC_SCALE`` steps it is the high-resolution value, the family's
    differential entropy in steps (Gaussian ``log2(sqrt(2 pi e) s)``, Laplace
    ``log2(2 e s)``; within 0.3 % of the table there): planning a layer then builds no
    table, whatever statistic a reply carries.
    """
    if scale > _ANALYTIC_SCALE:
        return float(np.log2(scale * (math.sqrt(2 * math.pi * math.e) if family == 0 else 2 * math.e)))
    probs = tables(family, scale).probs
    return float(-np.sum(probs * np.log2(probs)) / STRATA)


@functools.lru_cache(maxsize=64)
def _positions(pos_bits: int, shift: int, offset: int, dtype: str) -> np.ndarray:
    """``(arange(2**pos_bits) << shift) + offset`` in ``dtype``, shared read-only."""
    pos = np.arange(1 << pos_bits, dtype=dtype) << np.dtype(dtype).type(shift)
    pos += np.dtype(dtype).type(offset)
    pos.flags.writeable = False
    return pos


@functools.lru_cache(maxsize=4)
def _starts(dtype: str, bit: int) -> np.ndarray:
    """Smallest key of each stratum when the stratum sits at ``bit``."""
    return np.arange(STRATA, dtype=dtype) << np.dtype(dtype).type(bit)


def _keys(low: np.ndarray, sym_bits: int, offset: int = 0) -> tuple[np.ndarray, int]:
    """(sort keys, bit of the stratum in them): stratum, then position in the group,
    then ``sym_bits`` low bits preset to ``offset``. The positions make every key
    distinct, so an unstable (SIMD) sort of the keys is the stable order by stratum,
    and the symbols added into the low bits ride along (no argsort and gather)."""
    pos_bits = max(1, (low.size - 1).bit_length())
    if pos_bits + sym_bits <= 27:  # the stratum bits stay where the dither has them
        keys = low & np.uint32(_STRATUM_BITS)
        keys += _positions(pos_bits, sym_bits, offset, "<u4")[: low.size]
        return keys, 27
    if pos_bits + sym_bits > 59:
        raise ValueError(f"group of {low.size} symbols is too large to sort")
    keys = (low & np.uint32(_STRATUM_BITS)).astype(np.uint64) << np.uint64(32)
    keys += _positions(pos_bits, sym_bits, offset, "<u8")[: low.size]
    return keys, 59


def _bounds(keys: np.ndarray, bit: int) -> list[int]:
    """Start of each stratum's run in the sorted ``keys``, then their count."""
    return [*np.searchsorted(keys, _starts(keys.dtype.str, bit)).tolist(), keys.size]


def _runs(bounds: list[int], size: int) -> list[tuple[int, int, int, int, int, int]]:
    """Per stratum ``(t0, t1, lo, mid, tail, hi)``: the tuples ``[t0, t1)`` lying wholly
    inside its run ``[lo, hi)`` of the sorted symbols (tuple ``t`` holds symbols
    ``size*t .. size*t + size - 1``), and the run's other symbols ``[lo, mid)`` and
    ``[tail, hi)``, coded one by one."""
    runs = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        t0 = -(-lo // size)
        t1 = max(t0, hi // size)
        mid = min(hi, size * t0)
        runs.append((t0, t1, lo, mid, max(mid, size * t1), hi))
    return runs


def _tuples(symbols: np.ndarray, size: int, width: int) -> np.ndarray:
    """Consecutive ``size``-tuples of ``symbols`` as one base-``width`` number each."""
    count = symbols.size // size
    out = symbols[0 : size * count : size].copy()
    for r in range(1, size):
        out *= width
        out += symbols[r : size * count : size]
    return out


def encode_group(encoder: constriction.stream.queue.RangeEncoder, q: np.ndarray, low: np.ndarray,
                 family: int, scale: float, max_index: float = math.inf) -> None:
    """Append the indices ``q`` (integral values, float64 or int64) to ``encoder``,
    coded under their dither's stratum: ``low`` holds the dithers' 32 bits (uint32;
    only the top 5, the stratum, are read). Per stratum, in order: its whole tuples
    in one vectorized call, then its other symbols; after the last stratum, each
    escape's excess. ``max_index``, a bound on ``|q|`` the caller knows, spares the
    scan for escapes."""
    tab = tables(family, scale, group_half(low.size))
    half, size = tab.half, tab.tuple_size
    top = 2 * half
    sym_bits = top.bit_length()
    keys, bit = _keys(low, sym_bits, half)
    escaped = max_index >= half and bool(q.size) and not -half < np.minimum.reduce(q) <= np.maximum.reduce(q) < half
    wide = np.int32 if keys.dtype == np.uint32 else np.int64
    keys += (np.clip(q, -half, half) if escaped else q).astype(wide).view(keys.dtype)  # wraps: adds q
    keys.sort()
    symbols = keys & keys.dtype.type((1 << sym_bits) - 1)
    symbols = symbols.view(np.int32) if symbols.dtype == np.uint32 else symbols.astype(np.int32)
    joint = _tuples(symbols, size, top + 1) if size > 1 else symbols
    for j, (t0, t1, lo, mid, tail, hi) in enumerate(_runs(_bounds(keys, bit), size)):
        if t0 < t1:
            encoder.encode(joint[t0:t1], tab.joint[j])
        if lo < mid:
            encoder.encode(symbols[lo:mid], tab.single[j])
        if tail < hi:
            encoder.encode(symbols[tail:hi], tab.single[j])
    if escaped:  # rare: one Python step per escape
        edges = np.flatnonzero((symbols == 0) | (symbols == top))
        positions = (keys[edges] >> keys.dtype.type(sym_bits)) & keys.dtype.type((1 << (bit - sym_bits)) - 1)
        for excess in (np.abs(q[positions.astype(np.intp)]) - half).tolist():
            _encode_excess(encoder, int(excess))


def decode_group(decoder: constriction.stream.queue.RangeDecoder, low: np.ndarray,
                 family: int, scale: float) -> np.ndarray:
    """Inverse of :func:`encode_group` given the same ``low``: the indices as float64
    (exact up to the float64 rounding of indices beyond 2**53), in the original order."""
    tab = tables(family, scale, group_half(low.size))
    half, size = tab.half, tab.tuple_size
    top = 2 * half
    keys, bit = _keys(low, 0)
    keys.sort()
    symbols = np.zeros(low.size, dtype=np.int32)
    joint = np.zeros(low.size // size, dtype=np.int32) if size > 1 else symbols
    singles = []
    for j, (t0, t1, lo, mid, tail, hi) in enumerate(_runs(_bounds(keys, bit), size)):
        if t0 < t1:
            joint[t0:t1] = decode_guarded(decoder, tab.joint[j], t1 - t0)
        if lo < mid:
            singles.append((lo, decode_guarded(decoder, tab.single[j], mid - lo)))
        if tail < hi:
            singles.append((tail, decode_guarded(decoder, tab.single[j], hi - tail)))
    if size > 1:
        count = joint.size * size
        for r in range(size - 1, 0, -1):
            symbols[r:count:size] = joint % (top + 1)
            joint //= top + 1
        symbols[0:count:size] = joint
    for start, part in singles:  # after the tuples: the straddling tuples' entries are junk
        symbols[start : start + part.size] = part
    order = (keys & keys.dtype.type((1 << bit) - 1)).astype(np.intp)
    out = np.empty(low.size, dtype=np.float64)
    out[order] = symbols
    out -= half
    if np.minimum.reduce(symbols, initial=1) == 0 or np.maximum.reduce(symbols, initial=0) == top:
        for e in np.flatnonzero((symbols == 0) | (symbols == top)).tolist():
            out[order[e]] = (1 if symbols[e] else -1) * (half + _decode_excess(decoder))
    return out


def _encode_excess(encoder: constriction.stream.queue.RangeEncoder, excess: int) -> None:
    nbits = excess.bit_length()  # < 54: |q| < 2**53 is checked by the caller
    encoder.encode(np.array([nbits], np.int32), constriction.stream.model.Uniform(64))
    for shift in range(0, nbits, _ESC_CHUNK):
        piece = np.array([(excess >> shift) & 0xFFFF], np.int32)
        encoder.encode(piece, constriction.stream.model.Uniform(1 << _ESC_CHUNK))


def _decode_excess(decoder: constriction.stream.queue.RangeDecoder) -> int:
    nbits = int(decode_guarded(decoder, constriction.stream.model.Uniform(64), 1)[0])
    if nbits > 53:
        raise CodecError(f"escape of {nbits} bits exceeds the 53-bit index range")
    excess = 0
    for shift in range(0, nbits, _ESC_CHUNK):
        piece = decode_guarded(decoder, constriction.stream.model.Uniform(1 << _ESC_CHUNK), 1)
        excess |= int(piece[0]) << shift
    return excess


def stream_bytes(encoder: constriction.stream.queue.RangeEncoder) -> bytes:
    """The coded words, big-endian, trailing zero bytes dropped (the decoder reads
    missing words as zeros), so the stream costs whole bytes, not whole words."""
    return encoder.get_compressed().astype(">u4").tobytes().rstrip(b"\0")


def stream_decoder(buf: bytes | memoryview) -> constriction.stream.queue.RangeDecoder:
    """A range decoder over a buffer from :func:`stream_bytes`."""
    data = bytes(buf) + b"\0" * (-len(buf) % 4)
    return constriction.stream.queue.RangeDecoder(np.frombuffer(data, dtype=">u4").astype(np.uint32))

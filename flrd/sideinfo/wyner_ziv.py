"""Wyner-Ziv coding of one layer: dithered nested scalar lattice + LDPC binning.

The encoder is the subtractive-dithered quantizer of :mod:`flrd.codecs.dithered`
(``q = round((y + u)/Δ)``, reconstruction ``qΔ - u``, error uniform of variance
``Δ²/12`` independent of ``y``) but it never sends ``q``: it sends the low
``planes`` bits of ``q`` (``q mod 2^planes``, the coset of the coarse lattice
``2^planes Δ Z``), and for each bit plane only an LDPC syndrome whose length
matches the plane's entropy *given the decoder's side information*. It needs no
side information itself, only the conditional spread ``cond_std`` of ``y`` around
the side information ``w`` that the server will hold (``y - w ~ N(0, cond_std²)``
in the Gaussian CEO model), which the server sends.

The decoder recovers the planes from least to most significant by belief
propagation with LLRs computed from ``w`` and the planes already decoded (multilevel
coset decoding), then takes the one ``q`` in the window of ``2^planes`` integers
around ``(w + u)/Δ`` with those low bits. A CRC32 of ``q`` per block of
``BLOCK`` coordinates detects every failure (BP not converging, a wrong codeword,
or ``q`` outside the window: overload) with probability ``1 - 2^-32``; failed
blocks come back as NaN with ``ok = False`` and are never silently wrong. When a
block decodes, its output is bit-identical to the independent dithered
quantizer's, hence exactly unbiased with noise ``Δ²/12``.

Rates: plane ``j`` gets ``ceil(n (1 + GAP + SPREAD_MARGIN / sqrt(n e_j)) H_j) +
MIN_CHECKS`` syndrome bits, where ``H_j`` is its conditional entropy and ``e_j`` its
hard-decision error rate under the Gaussian model (:func:`plane_entropies`,
a function of ``cond_std / Δ`` only because the dither makes the offset uniform).
Planes that the side information fixes (expected errors < ``NEGLIGIBLE_ERRORS`` per
block) send nothing; planes that would need almost ``n`` checks go raw.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> w = 3.0 * rng.standard_normal(20_000)          # server's side information
    >>> y = w + rng.standard_normal(20_000)            # client's data, cond_std = 1
    >>> payload, rec = encode_reconstruct(y, step=2.0, cond_std=1.0, seed=5)
    >>> out = decode(payload, w, expected_size=y.size)
    >>> bool(out.ok.all() and np.array_equal(out.values, rec))
    True
    >>> 8 * len(payload) / y.size < 1.6  # independent dithered coding needs ~2.7 bit
    True
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from scipy import special

from flrd.codecs import CodecError

from .ldpc import SyndromeCode

BLOCK = 1 << 16  # coordinates per CRC-checked block (one LDPC code per plane)
MAX_PLANES = 6  # window of 64 steps: cond_std / Δ up to ~5 at OVERLOAD_PROB
OVERLOAD_PROB = 1e-9  # per coordinate, Gaussian model: y falls outside the window
GAP = 0.25  # syndrome bits above the plane entropy: regular degree-3 BP needs ~1.22x at 2-6.5e4 bits
SPREAD_MARGIN = 2.5  # extra relative margin 2.5/sqrt(expected errors): sparse planes fluctuate
MIN_CHECKS = 24
RAW_ABOVE = 0.9  # syndrome rates above this go raw: low-rate regular codes decode poorly
NEGLIGIBLE_ERRORS = 1e-4  # expected hard-decision errors per block below which a plane is not coded
_T_GRID = 64  # dither offsets averaged in the plane model
_CHUNK = 1 << 13
_VERSION = 1
_HEAD = struct.Struct("<2sBQddQBI")  # magic, version, n, step, cond_std, seed, planes, block
_MAGIC = b"WZ"

F64 = NDArray[np.float64]


def _entropy(p: F64, axis: int) -> F64:
    return -np.sum(np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0), axis=axis)


def planes_for(spread: float) -> int:
    """Fewest planes whose window ``[-2^(J-1), 2^(J-1))`` (in steps, around the side
    information) holds ``q`` except with probability ``OVERLOAD_PROB``;
    ``spread = cond_std / Δ``. Raises ValueError above ``MAX_PLANES``."""
    if not 0 < spread < math.inf:
        raise ValueError(f"spread (cond_std / step) must be positive and finite, got {spread}")
    half = spread * float(special.ndtri(1 - OVERLOAD_PROB / 2)) + 1  # round(Z + t) >= 2^(J-1) needs Z >= 2^(J-1) - 1
    planes = max(1, math.ceil(math.log2(half)) + 1)
    if planes > MAX_PLANES:
        raise ValueError(f"cond_std / step = {spread:.3g} needs more than MAX_PLANES = {MAX_PLANES} planes "
                         f"(a window of 2^{MAX_PLANES} steps): code this layer independently")
    return planes


@lru_cache(maxsize=256)
def plane_entropies(spread: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-plane conditional entropies ``H(b_j | w, u, b_<j)`` (bits) and MAP
    bit-error rates under ``y - w ~ N(0, (spread Δ)²)``, averaged over the dither.

    Their sum is ``H(q | w, u)``, the Slepian-Wolf rate of the dithered quantizer;
    with ``w = 0`` and ``spread = sd(y) / Δ`` it is the rate of independent dithered
    coding (:func:`dithered_rate`).
    """
    planes = planes_for(spread)
    t = (np.arange(_T_GRID) + 0.5) / _T_GRID - 0.5
    offsets = np.arange(-(2 ** (planes - 1)), 2 ** (planes - 1))
    edges = (offsets[None, :] + 0.5 - t[:, None]) / spread
    p = special.ndtr(edges) - special.ndtr(edges - 1 / spread)
    p /= p.sum(axis=1, keepdims=True)
    folded = [p]  # folded[j][:, r]: P(q mod 2^(planes - j) = r), residues relative to the window start
    for _ in range(planes):
        half = folded[-1].shape[1] // 2
        folded.append(folded[-1][:, :half] + folded[-1][:, half:])
    folded.reverse()  # folded[j]: distribution of the low j bits
    h = [float(np.mean(_entropy(folded[j + 1], 1) - _entropy(folded[j], 1))) for j in range(planes)]
    # MAP error of bit j given the low j bits: sum over classes of the smaller joint mass.
    err = [float(np.mean(np.minimum(folded[j + 1][:, : 2**j], folded[j + 1][:, 2**j :]).sum(axis=1)))
           for j in range(planes)]
    return tuple(h), tuple(err)


def dithered_rate(spread: float) -> float:
    """``H(q | u)`` in bit/coordinate for ``y ~ N(0, (spread Δ)²)``: what an ideal
    entropy coder spends on independent dithered quantization (the range-coded
    :class:`flrd.codecs.DitheredCodec` comes within a few 0.01 bit). Above a spread
    of 4 it uses the high-resolution form ``log2(sqrt(2 pi e) spread)`` (within 0.01)."""
    if spread > 4:
        return math.log2(math.sqrt(2 * math.pi * math.e) * spread)
    return float(sum(plane_entropies(spread)[0]))


def plane_checks(spread: float, n: int) -> list[int]:
    """Syndrome bits per plane for a block of ``n`` coordinates (0: not sent, n: raw)."""
    h, err = plane_entropies(spread)
    checks = []
    for h_j, e_j in zip(h, err):
        if n * e_j < NEGLIGIBLE_ERRORS:
            checks.append(0)
        else:
            margin = 1 + GAP + SPREAD_MARGIN / math.sqrt(n * e_j)
            m = math.ceil(n * margin * h_j) + MIN_CHECKS
            checks.append(n if m > RAW_ABOVE * n else m)
    return checks


def wz_rate(spread: float, n: int = BLOCK) -> float:
    """Bits per coordinate the encoder will spend at this spread on ``n``-coordinate
    blocks, header and CRC included."""
    return (8 * (_HEAD.size + 4) + sum(plane_checks(spread, n)) + 32 * planes_for(spread)) / n


def _code_seed(seed: int, block: int, plane: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, block, plane])


def _dither(seed: int, n: int, step: float) -> F64:
    return (np.random.default_rng(seed).random(n) - 0.5) * step


def _blocks(n: int, block: int) -> list[slice]:
    return [slice(s, min(s + block, n)) for s in range(0, n, block)]


def _crc(q: NDArray[np.int64]) -> int:
    return zlib.crc32(q.astype("<i8").tobytes())


def encode_reconstruct(y: NDArray[np.floating], step: float, cond_std: float, seed: int) -> tuple[bytes, F64]:
    """Payload for the flat array ``y`` and, bit for bit, what :func:`decode`
    returns when it succeeds (``qΔ - u``), so the client knows its realized noise.

    Args:
        y: finite values to code (flattened).
        step: quantizer step ``Δ``; the noise variance is ``Δ²/12``.
        cond_std: spread of ``y`` around the decoder's side information, as planned
            by the server (:mod:`flrd.sideinfo.allocation`).
        seed: dither and code seed in ``[0, 2**64)``, shared through the payload.
    """
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if not (math.isfinite(step) and step > 0 and math.isfinite(cond_std) and cond_std > 0):
        raise ValueError(f"step and cond_std must be positive and finite, got {step}, {cond_std}")
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    if not np.isfinite(y).all() or (y.size and np.abs(y).max() / step >= 2.0**52):
        raise ValueError("y must be finite with max|y| / step < 2**52")
    spread = cond_std / step
    planes = planes_for(spread)
    u = _dither(seed, y.size, step)
    q = np.round((y + u) / step).astype(np.int64)
    tables, data = [], []
    for b, sl in enumerate(_blocks(y.size, BLOCK)):
        checks = plane_checks(spread, sl.stop - sl.start)
        tables.append(struct.pack(f"<I{planes}I", _crc(q[sl]), *checks))
        for j, m in enumerate(checks):
            bits = ((q[sl] >> j) & 1).astype(bool)
            if m == bits.size:
                data.append(np.packbits(bits).tobytes())
            elif m:
                code = SyndromeCode.random(bits.size, m, _code_seed(seed, b, j))
                data.append(np.packbits(code.syndrome(bits)).tobytes())
    head = _HEAD.pack(_MAGIC, _VERSION, y.size, step, cond_std, seed, planes, BLOCK)
    return b"".join([head, *tables, *data]), q * step - u


def encode(y: NDArray[np.floating], step: float, cond_std: float, seed: int) -> bytes:
    """The payload of :func:`encode_reconstruct`."""
    return encode_reconstruct(y, step, cond_std, seed)[0]


@dataclass(frozen=True)
class Decoded:
    """Decoder output: ``values`` (NaN in failed blocks), ``ok`` per block, and the
    block slices, so the caller can re-request exactly the failed ones."""

    values: F64
    ok: NDArray[np.bool_]
    blocks: tuple[slice, ...]
    noise_var: float

    @property
    def failed_coords(self) -> int:
        return int(sum(sl.stop - sl.start for sl, good in zip(self.blocks, self.ok) if not good))


def _log_interval(lo: F64, hi: F64) -> F64:
    """``log(Φ(hi) - Φ(lo))`` without cancellation in either tail."""
    flip = lo > 0
    a, b = np.where(flip, -hi, lo), np.where(flip, -lo, hi)
    la, lb = special.log_ndtr(a), special.log_ndtr(b)
    with np.errstate(divide="ignore"):
        return lb + np.log1p(-np.exp(np.minimum(la - lb, 0.0)))


def _plane_llr(
    offset: F64, low: NDArray[np.int64], center: NDArray[np.int64], j: int, planes: int, spread: float
) -> F64:
    """LLR of bit ``j`` of ``q`` given the side information (``offset`` =
    ``(w + u)/Δ - center``) and the low ``j`` bits ``low``, over the window."""
    start = center - 2 ** (planes - 1)
    first = start + ((low - start) & (2**j - 1))  # lowest window value with those low bits
    cand = first[:, None] + (np.arange(2 ** (planes - j)) << j)[None, :]
    rel = (cand - center[:, None]).astype(np.float64) - offset[:, None]
    lp = _log_interval((rel - 0.5) / spread, (rel + 0.5) / spread)
    one = ((cand >> j) & 1).astype(bool)
    with np.errstate(invalid="ignore"):
        l0 = special.logsumexp(np.where(one, -np.inf, lp), axis=1)
        l1 = special.logsumexp(np.where(one, lp, -np.inf), axis=1)
    return np.nan_to_num(l0 - l1, nan=0.0, posinf=60.0, neginf=-60.0)


def _parse(payload: bytes | memoryview, expected_size: int) -> tuple[tuple, list[tuple[int, list[int]]], memoryview]:
    buf = memoryview(payload).cast("B")
    if len(buf) < _HEAD.size:
        raise CodecError("wyner-ziv: payload shorter than its header")
    magic, version, n, step, cond_std, seed, planes, block = _HEAD.unpack_from(buf, 0)
    if magic != _MAGIC or version != _VERSION:
        raise CodecError(f"wyner-ziv: not a version-{_VERSION} payload")
    if n != expected_size:
        raise CodecError(f"wyner-ziv: payload holds {n} coordinates, expected {expected_size}")
    if block != BLOCK or not 1 <= planes <= MAX_PLANES:
        raise CodecError(f"wyner-ziv: invalid block size {block} or plane count {planes}")
    if not (math.isfinite(step) and step > 0 and math.isfinite(cond_std) and cond_std > 0):
        raise CodecError(f"wyner-ziv: invalid step {step} or cond_std {cond_std}")
    if not 1e-6 <= cond_std / step <= 2.0**planes:
        raise CodecError(f"wyner-ziv: cond_std / step = {cond_std / step:.3g} out of range for {planes} planes")
    blocks = _blocks(n, BLOCK)
    table = struct.Struct(f"<I{planes}I")
    pos = _HEAD.size + table.size * len(blocks)
    if pos > len(buf):
        raise CodecError("wyner-ziv: payload shorter than its block tables")
    parsed, data_len = [], 0
    for b, sl in enumerate(blocks):
        crc, *checks = table.unpack_from(buf, _HEAD.size + table.size * b)
        if any(m > sl.stop - sl.start for m in checks):
            raise CodecError(f"wyner-ziv: block {b} declares more syndrome bits than coordinates")
        parsed.append((crc, checks))
        data_len += sum(-(-m // 8) for m in checks)
    if len(buf) - pos != data_len:
        raise CodecError(f"wyner-ziv: body has {len(buf) - pos} bytes, the tables declare {data_len}")
    return (n, step, cond_std, seed, planes), parsed, buf[pos:]


def decode(payload: bytes | memoryview, side_info: NDArray[np.floating], expected_size: int) -> Decoded:
    """Decode against ``side_info`` (same length as the payload's array).

    Work is bounded by ``expected_size``: at most ``MAX_PLANES`` BP runs of
    ``ITERATIONS`` iterations per block. Raises only :class:`CodecError` for a
    malformed payload (before allocating anything of the declared size); a
    well-formed payload whose decoding fails (side information too far) gives
    ``ok = False`` for that block instead.
    """
    (n, step, cond_std, seed, planes), parsed, data = _parse(payload, expected_size)
    w = np.asarray(side_info, dtype=np.float64).reshape(-1)
    if w.size != n or not np.isfinite(w).all():
        raise ValueError(f"side_info must hold {n} finite values, got {w.size}")
    spread = cond_std / step
    u = _dither(seed, n, step)
    values = np.full(n, np.nan)
    ok = np.zeros(len(parsed), dtype=bool)
    blocks = tuple(_blocks(n, BLOCK))
    pos = 0
    for b, (sl, (crc, checks)) in enumerate(zip(blocks, parsed)):
        size = sl.stop - sl.start
        c = (w[sl] + u[sl]) / step
        center = np.round(c).astype(np.int64)
        offset = c - center
        low = np.zeros(size, dtype=np.int64)
        for j, m in enumerate(checks):
            nbytes = -(-m // 8)
            packed = np.frombuffer(data[pos : pos + nbytes], dtype=np.uint8)
            pos += nbytes
            if m == size:
                bits = np.unpackbits(packed, count=size).astype(bool)
            else:
                llr = np.concatenate([_plane_llr(offset[s], low[s], center[s], j, planes, spread)
                                      for s in _blocks(size, _CHUNK)])
                if m == 0:
                    bits = llr < 0
                else:
                    code = SyndromeCode.random(size, m, _code_seed(seed, b, j))
                    bits, _ = code.decode(np.unpackbits(packed, count=m).astype(bool), llr)
            low |= bits.astype(np.int64) << j
        start = center - 2 ** (planes - 1)
        q = start + ((low - start) & (2**planes - 1))
        if _crc(q) == crc:
            ok[b] = True
            values[sl] = q * step - u[sl]
    return Decoded(values, ok, blocks, step**2 / 12)

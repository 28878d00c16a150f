"""Wyner-Ziv coding of one layer: dithered nested scalar lattice + LDPC binning.

The encoder is the subtractive-dithered quantizer of :mod:`flrd.codecs.dithered`
(``q = round((y + u)/Δ)``, reconstruction ``U = qΔ - u``, error uniform of variance
``Δ²/12`` independent of ``y``), optionally on a shared-seed random subset that keeps
each coordinate with probability ``p`` (the low-rate scheme of the dithered codec).
It never sends ``q``: for each bit plane of ``q`` it sends only an LDPC syndrome whose
length matches the plane's entropy *given the decoder's side information*. It needs
no side information itself, only the spread ``cond_std`` of ``y`` around the side
information ``w`` that the server will hold, and the residual law's tail: Gaussian,
or a Student t of ``tail_df`` degrees of freedom (real updates are heavy-tailed:
docs/wyner_ziv.md).

The decoder recovers the planes from least to most significant by belief
propagation with LLRs computed from ``w`` and the planes already decoded (multilevel
coset decoding), then takes the ``q`` nearest to ``(w + u)/Δ`` with those low bits.
Planes are coded up to the last one whose expected hard-decision errors per block
reach ``NEGLIGIBLE_ERRORS``; no fixed window bounds ``q``. A CRC32 of ``q`` per block
of ``BLOCK`` kept coordinates detects every failure (BP not converging, a wrong
codeword, a residual beyond the coded planes) with probability ``1 - 2^-32``; failed
blocks come back as NaN with ``ok = False`` and are never silently wrong.

The estimate is ``w + (mask / p)(U - w)``: on kept coordinates the decoded ``U``
corrects the side information, elsewhere ``w`` stands (a control variate). Given
``w`` (which never depends on this reply's subset or dither) it is exactly unbiased,
with noise ``(1/p - 1) E(y - w)² + (Δ²/12)/p`` per coordinate; ``p = 1`` returns
``U`` itself, bit-identical to the independent dithered quantizer's output.

Rates: plane ``j`` gets ``ceil(n (1 + GAP + SPREAD_MARGIN / sqrt(n e_j)) H_j) +
MIN_CHECKS`` syndrome bits, where ``H_j`` is its conditional entropy and ``e_j`` its
hard-decision error rate under the residual model (:func:`plane_entropies`, a
function of ``cond_std / Δ`` and the tail only, because the dither makes the offset
uniform). Planes that would need almost ``n`` checks go raw. The server may plan
other rates (:mod:`.allocation` does, for side information whose quality varies by
coordinate); they travel in the header, 4 bytes per plane, with a CRC per block.

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
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from scipy import special

from flrd.codecs import CodecError

from .ldpc import SyndromeCode

BLOCK = 1 << 16  # kept coordinates per CRC-checked block (one LDPC code per plane)
MAX_PLANES = 16  # planes a payload may code; more would mean a residual of 2^15 steps
GAP = 0.25  # syndrome bits above the plane entropy: regular degree-3 BP needs ~1.22x at 2-6.5e4 bits
SPREAD_MARGIN = 2.5  # extra relative margin 2.5/sqrt(expected errors): sparse planes fluctuate
MIN_CHECKS = 24
RAW_ABOVE = 0.9  # syndrome rates above this go raw: low-rate regular codes decode poorly
NEGLIGIBLE_ERRORS = 1e-4  # expected hard-decision errors per block below which a plane is not coded
# 0: Gaussian residuals; else Student t degrees of freedom. Below 6 the upper planes'
# sparse errors need syndromes of a few dozen checks over thousands of bits, which BP
# does not decode reliably (measured: t4 data under the t4 model mostly fails).
TAIL_DFS = (0, *range(6, 31))
_NEIGHBOURS = 4  # candidates per bit value in a plane's LLR (the nearest ones dominate)
_T_GRID = 64  # dither offsets averaged in the plane model
_MODEL_TAIL = 1e-12  # residual mass the plane model may leave outside its window
_CHUNK = 1 << 13
_VERSION = 2  # 2: random subset, Student-t residuals, plane rates in the header
_HEAD = struct.Struct("<2sBQddQdBB")  # magic, version, n, step, cond_std, seed, keep_prob, tail_df, planes
# then one float32 syndrome rate per plane
_MAGIC = b"WZ"
_MASK_STREAM = 1  # SeedSequence child of the subset, apart from the dither's stream

F64 = NDArray[np.float64]


def _entropy(p: F64, axis: int) -> F64:
    return -np.sum(np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0), axis=axis)


def _t_scale(tail_df: int) -> float:
    """Standard t quantiles per unit of standard deviation (1 for the Gaussian)."""
    return 1.0 if tail_df == 0 else math.sqrt(tail_df / (tail_df - 2))


def _cdf(z: F64, tail_df: int) -> F64:
    """CDF of the unit-variance residual law."""
    return special.ndtr(z) if tail_df == 0 else special.stdtr(tail_df, z * _t_scale(tail_df))


def _check_model(spread: float, tail_df: int) -> None:
    if not 0 < spread < math.inf:
        raise ValueError(f"spread (cond_std / step) must be positive and finite, got {spread}")
    if tail_df not in TAIL_DFS:
        raise ValueError(f"tail_df must be 0 (Gaussian) or an integer in [6, 30], got {tail_df}")


def _window(spread: float, tail_df: int) -> int:
    """Half-width in steps holding the residual except for ``_MODEL_TAIL``."""
    z = float(special.ndtri(1 - _MODEL_TAIL / 2)) if tail_df == 0 else \
        float(special.stdtrit(tail_df, 1 - _MODEL_TAIL / 2)) / _t_scale(tail_df)
    half = spread * z + 1
    return 2 ** max(1, math.ceil(math.log2(half)))


@lru_cache(maxsize=256)
def plane_entropies(spread: float, tail_df: int = 0) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-plane conditional entropies ``H(b_j | w, u, b_<j)`` (bits) and MAP
    bit-error rates when ``(y - w) / cond_std`` follows the residual law
    (``tail_df = 0``: Gaussian; else Student t, scaled to unit variance) and
    ``spread = cond_std / Δ``, averaged over the dither. Planes run up to
    ``MAX_PLANES`` or until the law leaves nothing to code.

    Their sum is ``H(q | w, u)``, the Slepian-Wolf rate of the dithered quantizer;
    with ``w = 0`` and ``spread = sd(y) / Δ`` it is the rate of independent dithered
    coding (:func:`dithered_rate`).
    """
    _check_model(spread, tail_df)
    half = min(_window(spread, tail_df), 2 ** (MAX_PLANES - 1))
    planes = int(math.log2(half)) + 1
    grid = max(8, min(_T_GRID, 2**17 // half))  # wide windows: the dither average matters less
    t = (np.arange(grid) + 0.5) / grid - 0.5
    offsets = np.arange(-half, half)
    edges = (offsets[None, :] + 0.5 - t[:, None]) / spread
    p = np.diff(_cdf(np.concatenate([edges[:, :1] - 1 / spread, edges], axis=1), tail_df), axis=1)
    p /= p.sum(axis=1, keepdims=True)
    folded = [p]  # folded[j][:, r]: P(q mod 2^(planes - j) = r), residues relative to the window start
    for _ in range(planes):
        cut = folded[-1].shape[1] // 2
        folded.append(folded[-1][:, :cut] + folded[-1][:, cut:])
    folded.reverse()  # folded[j]: distribution of the low j bits
    h = [float(np.mean(_entropy(folded[j + 1], 1) - _entropy(folded[j], 1))) for j in range(planes)]
    # MAP error of bit j given the low j bits: sum over classes of the smaller joint mass.
    err = [float(np.mean(np.minimum(folded[j + 1][:, : 2**j], folded[j + 1][:, 2**j :]).sum(axis=1)))
           for j in range(planes)]
    return tuple(h), tuple(err)


def dithered_rate(spread: float, tail_df: int = 0) -> float:
    """``H(q | u)`` in bit/coordinate for ``y`` of standard deviation ``spread Δ``
    under the residual law: what an ideal entropy coder spends on independent
    dithered quantization (the range-coded :class:`flrd.codecs.DitheredCodec` comes
    within a few 0.01 bit of the Gaussian value). For a Gaussian above a spread of 4
    it uses the high-resolution form ``log2(sqrt(2 pi e) spread)`` (within 0.01)."""
    if spread > 4 and tail_df == 0:
        return math.log2(math.sqrt(2 * math.pi * math.e) * spread)
    return float(sum(plane_entropies(spread, tail_df)[0]))


def plane_rates(entropies: Sequence[float], errors: Sequence[float], n: int) -> tuple[float, ...]:
    """Syndrome bits per coded coordinate for each plane, from the planes'
    conditional entropies and hard-decision error rates, on blocks of ``n``: 0 for a
    plane the side information fixes (fewer than ``NEGLIGIBLE_ERRORS`` expected
    errors), 1 for one sent raw, else ``(1 + GAP + SPREAD_MARGIN / sqrt(n e_j)) H_j``;
    up to the last plane that is coded."""
    rates = []
    for h_j, e_j in zip(entropies, errors):
        if n * e_j < NEGLIGIBLE_ERRORS:
            rates.append(0.0)
        else:
            rate = (1 + GAP + SPREAD_MARGIN / math.sqrt(n * e_j)) * h_j
            rates.append(1.0 if rate + MIN_CHECKS / n > RAW_ABOVE else float(np.float32(rate)))
    while rates and rates[-1] == 0:
        rates.pop()
    return tuple(rates) or (0.0,)


def model_rates(spread: float, n: int = BLOCK, tail_df: int = 0) -> tuple[float, ...]:
    """:func:`plane_rates` when every residual follows the model at ``spread``."""
    return plane_rates(*plane_entropies(spread, tail_df), n)


def _checks(rates: Sequence[float], size: int) -> list[int]:
    """Syndrome bits per plane for a block of ``size`` coded coordinates."""
    out = []
    for rate in rates:
        m = 0 if rate == 0 else size if rate >= 1 else min(size, math.ceil(rate * size) + MIN_CHECKS)
        out.append(size if m > RAW_ABOVE * size else m)
    return out


def payload_bits(rates: Sequence[float], coded: int) -> int:
    """Exact payload size in bits for ``coded`` kept coordinates at these plane rates."""
    blocks = _blocks(coded, BLOCK)
    body = sum(-(-m // 8) for sl in blocks for m in _checks(rates, sl.stop - sl.start))
    return 8 * (_HEAD.size + 4 * len(rates) + 4 * len(blocks) + body)


def wz_rate(spread: float, n: int = BLOCK, tail_df: int = 0) -> float:
    """Bits per coded coordinate the encoder spends at the model's rates for this
    spread, on ``n`` coded coordinates, header and CRC included."""
    return payload_bits(model_rates(spread, min(n, BLOCK), tail_df), n) / n


def _code_seed(seed: int, block: int, plane: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, block, plane])


def _dither(seed: int, n: int, step: float) -> F64:
    return (np.random.default_rng(seed).random(n) - 0.5) * step


def _kept(seed: int, n: int, keep_prob: float) -> NDArray[np.int64]:
    """Indices of the kept coordinates (all of them at ``keep_prob = 1``)."""
    if keep_prob >= 1.0:
        return np.arange(n, dtype=np.int64)
    return np.flatnonzero(np.random.default_rng([seed, _MASK_STREAM]).random(n) < keep_prob)


def _blocks(n: int, block: int) -> list[slice]:
    return [slice(s, min(s + block, n)) for s in range(0, n, block)]


def _crc(q: NDArray[np.int64]) -> int:
    return zlib.crc32(q.astype("<i8").tobytes())


def _check_params(step: float, cond_std: float, seed: int, keep_prob: float, tail_df: int) -> None:
    if not (math.isfinite(step) and step > 0 and math.isfinite(cond_std) and cond_std > 0):
        raise ValueError(f"step and cond_std must be positive and finite, got {step}, {cond_std}")
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    if not 0 < keep_prob <= 1:
        raise ValueError(f"keep_prob must be in (0, 1], got {keep_prob}")
    _check_model(cond_std / step, tail_df)
    if cond_std / step > 2 ** (MAX_PLANES - 8):
        raise ValueError(f"cond_std / step = {cond_std / step:.3g} is above 2**{MAX_PLANES - 8}: "
                         "code this layer independently")


def encode_reconstruct(y: NDArray[np.floating], step: float, cond_std: float, seed: int, *,
                       keep_prob: float = 1.0, tail_df: int = 0,
                       rates: Sequence[float] | None = None) -> tuple[bytes, F64]:
    """Payload for the flat array ``y`` and, bit for bit, the dithered values ``U``
    that :func:`decode` recovers on the kept coordinates (NaN elsewhere; every
    coordinate at ``keep_prob = 1``).

    Args:
        y: finite values to code (flattened).
        step: quantizer step ``Δ``; the noise on kept coordinates is ``Δ²/12``.
        cond_std: spread of ``y`` around the decoder's side information, as planned
            by the server (:mod:`flrd.sideinfo.allocation`); the decoder's default
            residual spread.
        seed: dither, subset and code seed in ``[0, 2**64)``, shared through the payload.
        keep_prob: probability that a coordinate is coded (shared-seed subset).
        tail_df: residual law of the plan: 0 Gaussian, else Student t (``TAIL_DFS``).
        rates: syndrome bits per coded coordinate per plane, least significant
            first (0: not sent, 1: raw), as the server planned them; default
            :func:`model_rates` at ``cond_std / step``.
    """
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    _check_params(step, cond_std, seed, keep_prob, tail_df)
    if not np.isfinite(y).all() or (y.size and np.abs(y).max() / step >= 2.0**52):
        raise ValueError("y must be finite with max|y| / step < 2**52")
    kept = _kept(seed, y.size, keep_prob)
    if rates is None:
        rates = model_rates(cond_std / step, max(1, min(kept.size, BLOCK)), tail_df)
    rates = tuple(float(np.float32(r)) for r in rates)
    if not 1 <= len(rates) <= MAX_PLANES or not all(0 <= r <= 1 for r in rates):
        raise ValueError(f"need 1 to {MAX_PLANES} plane rates in [0, 1], got {rates}")
    u = _dither(seed, y.size, step)[kept]
    q = np.round((y[kept] + u) / step).astype(np.int64)
    crcs, data = [], []
    for b, sl in enumerate(_blocks(kept.size, BLOCK)):
        crcs.append(_crc(q[sl]))
        for j, m in enumerate(_checks(rates, sl.stop - sl.start)):
            bits = ((q[sl] >> j) & 1).astype(bool)
            if m == bits.size:
                data.append(np.packbits(bits).tobytes())
            elif m:
                code = SyndromeCode.random(bits.size, m, _code_seed(seed, b, j))
                data.append(np.packbits(code.syndrome(bits)).tobytes())
    head = _HEAD.pack(_MAGIC, _VERSION, y.size, step, cond_std, seed, keep_prob, tail_df, len(rates))
    rec = np.full(y.size, np.nan)
    rec[kept] = q * step - u
    return b"".join([head, struct.pack(f"<{len(rates)}f", *rates), struct.pack(f"<{len(crcs)}I", *crcs),
                     *data]), rec


def encode(y: NDArray[np.floating], step: float, cond_std: float, seed: int, *,
           keep_prob: float = 1.0, tail_df: int = 0, rates: Sequence[float] | None = None) -> bytes:
    """The payload of :func:`encode_reconstruct`."""
    return encode_reconstruct(y, step, cond_std, seed, keep_prob=keep_prob, tail_df=tail_df, rates=rates)[0]


@dataclass(frozen=True)
class Decoded:
    """Decoder output.

    Attributes:
        values: the unbiased estimate ``w + (mask/p)(U - w)``; NaN over failed blocks.
        ok: per block, whether its CRC matched.
        blocks: per block, the slice of coordinates it covers, so the caller can
            re-request exactly the failed ones.
        noise_var: the estimate's noise per coordinate, measured on the decoded
            blocks: ``(1/p - 1)(mean (U - w)² - Δ²/12) + (Δ²/12)/p`` (``Δ²/12`` at
            ``p = 1``).
        coded: coordinates the payload coded (the kept subset's size).
        dithered: ``U`` on the kept coordinates of decoded blocks, NaN elsewhere:
            ``y`` plus uniform noise of variance ``coded_noise_var`` (``Δ²/12``), the
            reply's information for side information.
    """

    values: F64
    ok: NDArray[np.bool_]
    blocks: tuple[slice, ...]
    noise_var: float
    coded: int
    dithered: F64
    coded_noise_var: float

    @property
    def failed_coords(self) -> int:
        return int(sum(sl.stop - sl.start for sl, good in zip(self.blocks, self.ok) if not good))


def _log_interval(lo: F64, hi: F64, tail_df: int) -> F64:
    """``log(F(hi) - F(lo))`` for the unit-variance residual law, without
    cancellation in either tail (both ends are moved to the lower tail)."""
    flip = lo > 0
    a, b = np.where(flip, -hi, lo), np.where(flip, -lo, hi)
    if tail_df == 0:
        la, lb = special.log_ndtr(a), special.log_ndtr(b)
    else:
        scale = _t_scale(tail_df)
        with np.errstate(divide="ignore"):
            la, lb = np.log(special.stdtr(tail_df, a * scale)), np.log(special.stdtr(tail_df, b * scale))
    with np.errstate(divide="ignore", invalid="ignore"):
        return lb + np.log1p(-np.exp(np.minimum(la - lb, 0.0)))


def _plane_llr(center: F64, low: NDArray[np.int64], j: int, spread: float | F64, tail_df: int) -> F64:
    """LLR of bit ``j`` of ``q`` given the side information (``center`` =
    ``(w + u)/Δ``, residual spread ``spread`` in steps, scalar or per coordinate) and
    the low ``j`` bits ``low``, over the ``2 _NEIGHBOURS`` candidates nearest to
    ``center``."""
    spread = np.reshape(spread, (-1, 1))
    period = 2**j
    base = low + period * np.round((center - low) / period).astype(np.int64)
    cand = base[:, None] + period * np.arange(-_NEIGHBOURS, _NEIGHBOURS)[None, :]
    rel = cand.astype(np.float64) - center[:, None]
    lp = _log_interval((rel - 0.5) / spread, (rel + 0.5) / spread, tail_df)
    one = ((cand >> j) & 1).astype(bool)
    with np.errstate(invalid="ignore"):
        l0 = special.logsumexp(np.where(one, -np.inf, lp), axis=1)
        l1 = special.logsumexp(np.where(one, lp, -np.inf), axis=1)
    return np.nan_to_num(l0 - l1, nan=0.0, posinf=60.0, neginf=-60.0)


@dataclass(frozen=True)
class Header:
    """A payload's parameters, as :func:`encode` wrote them."""

    size: int
    step: float
    cond_std: float
    seed: int
    keep_prob: float
    tail_df: int
    rates: tuple[float, ...]


def parse_header(payload: bytes | memoryview, expected_size: int) -> Header:
    """The checked header of a payload (CodecError if malformed), e.g. to compare it
    with what the server asked for before decoding."""
    (n, step, cond_std, seed, keep_prob, tail_df), rates, _ = _parse(payload, expected_size)
    return Header(n, step, cond_std, seed, keep_prob, tail_df, rates)


def _parse(payload: bytes | memoryview, expected_size: int) -> tuple[tuple, tuple[float, ...], memoryview]:
    """The checked header fields, the plane rates, and the payload's bytes."""
    try:
        buf = memoryview(payload).cast("B")
    except TypeError as err:
        raise CodecError(f"wyner-ziv: payload must be bytes-like, got {type(payload).__name__}") from err
    if len(buf) < _HEAD.size:
        raise CodecError("wyner-ziv: payload shorter than its header")
    magic, version, n, step, cond_std, seed, keep_prob, tail_df, planes = _HEAD.unpack_from(buf, 0)
    if magic != _MAGIC or version != _VERSION:
        raise CodecError(f"wyner-ziv: not a version-{_VERSION} payload")
    if n != expected_size:
        raise CodecError(f"wyner-ziv: payload holds {n} coordinates, expected {expected_size}")
    try:
        _check_params(step, cond_std, seed, keep_prob, tail_df)
    except ValueError as err:
        raise CodecError(f"wyner-ziv: {err}") from err
    if not cond_std / step >= 1e-6:
        raise CodecError(f"wyner-ziv: cond_std / step = {cond_std / step:.3g} below 1e-6")
    if not 1 <= planes <= MAX_PLANES or len(buf) < _HEAD.size + 4 * planes:
        raise CodecError(f"wyner-ziv: {planes} planes (at most {MAX_PLANES}) or a truncated rate table")
    rates = struct.unpack_from(f"<{planes}f", buf, _HEAD.size)
    if not all(0 <= r <= 1 for r in rates):
        raise CodecError(f"wyner-ziv: plane rates {rates} outside [0, 1]")
    return (n, step, cond_std, seed, keep_prob, tail_df), rates, buf[_HEAD.size + 4 * planes :]


def decode(payload: bytes | memoryview, side_info: NDArray[np.floating], expected_size: int,
           side_var: NDArray[np.floating] | None = None) -> Decoded:
    """Decode against ``side_info`` (same length as the payload's array).

    ``side_var``, when given, is the variance of ``y - side_info`` per coordinate
    (the decoder's own knowledge, e.g. a posterior's): the LLRs use it instead of the
    header's ``cond_std``.

    Work is bounded by ``expected_size``: per block of kept coordinates at most one
    BP run of ``ITERATIONS`` iterations per plane (``MAX_PLANES`` at most). Raises
    only :class:`CodecError` for a malformed payload (before allocating anything of
    the declared size); a well-formed payload whose decoding fails (side information
    too far) gives ``ok = False`` for that block instead.
    """
    (n, step, cond_std, seed, keep_prob, tail_df), rates, buf = _parse(payload, expected_size)
    w = np.asarray(side_info, dtype=np.float64).reshape(-1)
    if w.size != n or not np.isfinite(w).all():
        raise ValueError(f"side_info must hold {n} finite values, got {w.size}")
    kept = _kept(seed, n, keep_prob)
    if side_var is None:
        spreads = np.full(kept.size, cond_std / step)
    else:
        var = np.asarray(side_var, dtype=np.float64).reshape(-1)
        if var.size != n or not (np.isfinite(var).all() and (var > 0).all()):
            raise ValueError(f"side_var must hold {n} positive finite values")
        spreads = np.sqrt(var[kept]) / step
    kept_blocks = _blocks(kept.size, BLOCK)
    checks = [_checks(rates, sl.stop - sl.start) for sl in kept_blocks]
    body = 4 * len(kept_blocks) + sum(-(-m // 8) for c in checks for m in c)
    if len(buf) != body:
        raise CodecError(f"wyner-ziv: body has {len(buf)} bytes, the header implies {body}")
    crcs = struct.unpack_from(f"<{len(kept_blocks)}I", buf, 0)
    pos = 4 * len(kept_blocks)
    u = _dither(seed, n, step)[kept]
    centers = (w[kept] + u) / step
    q_all = np.zeros(kept.size, dtype=np.int64)
    ok = np.zeros(len(kept_blocks), dtype=bool)
    for b, sl in enumerate(kept_blocks):
        size, center = sl.stop - sl.start, centers[sl]
        low = np.zeros(size, dtype=np.int64)
        for j, m in enumerate(checks[b]):
            nbytes = -(-m // 8)
            packed = np.frombuffer(buf[pos : pos + nbytes], dtype=np.uint8)
            pos += nbytes
            if m == size:
                bits = np.unpackbits(packed, count=size).astype(bool)
            else:
                spread = spreads[sl]
                llr = np.concatenate([_plane_llr(center[s], low[s], j, spread[s], tail_df)
                                      for s in _blocks(size, _CHUNK)])
                if m == 0:
                    bits = llr < 0
                else:
                    code = SyndromeCode.random(size, m, _code_seed(seed, b, j))
                    bits, _ = code.decode(np.unpackbits(packed, count=m).astype(bool), llr)
            low |= bits.astype(np.int64) << j
        period = 2 ** len(checks[b])
        q_all[sl] = low + period * np.round((center - low) / period).astype(np.int64)
        ok[b] = _crc(q_all[sl]) == crcs[b]
    return _estimate(w, kept, q_all * step - u, kept_blocks, ok, step, keep_prob)


def _estimate(w: F64, kept: NDArray[np.int64], dithered: F64, kept_blocks: list[slice], ok: NDArray[np.bool_],
              step: float, keep_prob: float) -> Decoded:
    """``w + (mask/p)(U - w)``, NaN over failed blocks, and its measured noise."""
    n = w.size
    # Block b covers the coordinates from its first kept one to the next block's first.
    starts = [0] + [int(kept[sl.start]) for sl in kept_blocks[1:]] + [n]
    blocks = tuple(slice(starts[b], starts[b + 1]) for b in range(len(kept_blocks))) or (slice(0, n),)
    ok_all = ok if len(kept_blocks) else np.ones(1, dtype=bool)
    qnoise = step**2 / 12
    if keep_prob >= 1.0:
        values = np.full(n, np.nan)
        values[kept] = dithered
    else:
        values = w.copy()
        values[kept] += (dithered - w[kept]) / keep_prob
    good = np.zeros(kept.size, dtype=bool)
    for sl, g in zip(kept_blocks, ok):
        good[sl] = g
    resid = float(np.mean((dithered[good] - w[kept[good]]) ** 2)) if good.any() else qnoise
    noise = qnoise / keep_prob + (1 / keep_prob - 1) * max(resid - qnoise, 0.0)
    coded = np.full(n, np.nan)
    coded[kept] = dithered
    for sl, g in zip(blocks, ok_all):
        if not g:
            values[sl] = np.nan
            coded[sl] = np.nan
    return Decoded(values, ok_all, blocks, noise, int(kept.size), coded, qnoise)

"""Subtractive-dithered quantization, plain or on a shared-seed random subset.

For a layer with mean square ``m2`` and noise target ``D`` (SNR ``t = m2/D``) the
codec picks one of two unbiased schemes, per layer, from what both sides know
(``D``, the transmitted one-byte ``m2``, the seed):

* **plain** (high SNR): step ``Δ = sqrt(12 D)``; the encoder sends
  ``q = round(x/Δ + u)`` and the decoder outputs ``(q - u)Δ``. The error is uniform
  on ``[-Δ/2, Δ/2]`` and independent of ``x``: noise exactly ``D``.
* **sparse** (low SNR): every coordinate is kept with probability ``p`` (the high
  32 bits of its counter-based random word below ``p·2**32``: no indices travel),
  kept coordinates are dithered at noise ``D_q = d_q·m2`` and scaled by ``1/p``.
  Per coordinate the noise is ``x_i²(1/p - 1) + D_q/p``; on average over the layer
  ``(1/p - 1)·m2 + D_q/p``, which equals ``D`` for ``p = t(1 + d_q)/(1 + t)``.
  ``d_q`` minimizes the expected rate ``p·r(D_q)``, where the dithered quantizer is
  most efficient (``d_q`` near 1: kept coordinates at SNR about 1).

Dither and subset come from :mod:`flrd.codecs.rng` (Philox of (seed, index); plain
layers take two 32-bit dithers per 64-bit word); the indices are range coded under a
table per dither stratum (:mod:`.stratified`), in groups of :func:`group_size`.
The planning ``m2`` is the one-byte statistic (:mod:`.stats`), stochastically
rounded, so the server computes the same plan and the expected noise.

Rate on N(0, 1), framing included (``bench/bench_codecs.py``): about 2.0-2.1x the
bound ``1/2 log2(1 + 1/D)`` at SNR 0.004-0.1, 1.5x at 0.5 bit, 1.25x at 1 bit.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Self

import constriction
import numpy as np

from .base import Body, Codec, expect_params, int_param, positive_float, register
from .errors import CodecError
from .header import Header
from .numerics import as_float_array, chunks, max_abs, rms, store
from .rng import KEY_HI, both_halves, dither_unit, keep_limit, keep_threshold, low_bits
from .stats import SNR_GRID, round_to_grid
from .stratified import (
    decode_group,
    encode_group,
    model_scale,
    rate_bits,
    stream_bytes,
    stream_decoder,
)

_ALL = 2**32  # keep threshold meaning "every coordinate"
_MAX_STEPS = 2.0**52  # max|x|/Δ bound keeping q exact in float64
# Kept symbols entropy-coded per stratum sort, and coordinates per chunk: 1/16 of the
# layer within these bounds, so the temporaries stay a fraction of the layer while
# big layers pay few groups' Python work (32 strata x up to 3 coder calls each).
_GROUP_BITS = (14, 16)


def group_size(size: int) -> int:
    """Coordinates per chunk and kept symbols per coded group for a layer of ``size``
    (a power of two, so chunks start on Philox blocks)."""
    return 1 << max(_GROUP_BITS[0], min(_GROUP_BITS[1], size.bit_length() - 5))
_DQ_GRID = 2.0 ** (np.arange(-16, 17) / 8)  # candidate d_q = D_q / m2
_STAT_SALT = 0x5354  # separates the statistic's rounding coin from the dither stream


@dataclass(frozen=True)
class Plan:
    """What encoder and decoder agree on for one layer.

    Attributes:
        step: quantizer step Δ.
        threshold: keep coordinate i iff the high 32 bits of its word are below it
            (``2**32``: plain dithering, every coordinate).
        family: entropy-model family (0 Gaussian, 1 Laplace).
        m2: planning mean square (the transmitted statistic); 0 sends nothing.
        quant_noise: noise of the quantizer on the kept coordinates, ``step**2/12``
            (the target itself for plain dithering).
    """

    step: float
    threshold: int
    family: int
    m2: float
    quant_noise: float

    @property
    def keep_prob(self) -> float:
        return self.threshold / 2**32

    @property
    def scale(self) -> float:
        return model_scale(self.family, self.m2, self.step)

    def expected_noise_var(self, m2: float) -> float:
        """Layer-average noise for data of mean square ``m2`` (``self.m2`` for the
        server's estimate from the statistic)."""
        if self.m2 == 0:
            return m2
        p = self.keep_prob
        return (1.0 / p - 1.0) * m2 + self.quant_noise / p


@functools.lru_cache(maxsize=4096)
def choose_dq(snr: float) -> float | None:
    """``d_q`` of the cheapest sparse setting at ``snr``, or None when plain wins
    (expected rates from the Gaussian tables; costs rounded so that last-bit
    differences of the math library cannot flip the choice between machines)."""
    plain = rate_bits(0, math.sqrt(snr / 12.0))
    best, best_cost = None, round(plain, 9)
    for dq in _DQ_GRID:
        p = snr * (1.0 + dq) / (1.0 + snr)
        if p >= 1.0:
            break
        cost = round(p * rate_bits(0, 1.0 / math.sqrt(12.0 * dq)), 9)
        if cost < best_cost:
            best, best_cost = float(dq), cost
    return best


def plan_layer(noise_var: float, m2: float, snr: float, family: int = 0) -> Plan:
    """The plan for target ``noise_var`` given the planning ``m2`` and ``snr``
    (``m2 / noise_var``, passed exactly as both sides hold it).

    Example:
        >>> plan = plan_layer(100.0, 1.0, 0.01)
        >>> round(plan.keep_prob, 4), round(plan.expected_noise_var(1.0), 6)
        (0.0198, 100.0)
    """
    if m2 == 0:
        return Plan(1.0, 0, family, 0.0, 0.0)
    dq = choose_dq(snr)
    if dq is None:
        return Plan(math.sqrt(12.0 * noise_var), _ALL, family, m2, noise_var)
    p = snr * (1.0 + dq) / (1.0 + snr)
    threshold = keep_threshold(p)
    # D_q from the exact inclusion probability, so the noise meets the target.
    dq_noise = (threshold / 2**32) * (noise_var + m2) - m2
    return Plan(math.sqrt(12.0 * dq_noise), threshold, family, m2, dq_noise)


class Moments(NamedTuple):
    """A layer's mean square, mean magnitude and largest magnitude (NaN or infinite
    when the layer is not finite)."""

    m2: float
    mean_abs: float
    max_abs: float


def moments(flat: np.ndarray) -> Moments:
    """:class:`Moments` in one chunked pass: float32 input in float32 (pairwise sums
    per chunk, accurate to ~1e-7, far below the statistic's grid), else float64; no
    BLAS (its thread pool costs more than it saves on a shared machine)."""
    if flat.size == 0:
        return Moments(0.0, 0.0, 0.0)
    work = np.float32 if flat.dtype == np.float32 else np.float64  # float16 squares overflow
    sq = ab = top = 0.0
    for sl in chunks(flat.size, 1 << 16):
        part = np.abs(flat[sl], dtype=work)
        peak = float(np.maximum.reduce(part))  # NaN if the chunk holds one
        if not math.isfinite(peak):
            return Moments(math.nan, math.nan, math.nan)
        top = max(top, peak)
        ab += float(np.add.reduce(part))
        part *= part
        sq += float(np.add.reduce(part))
    if not np.isfinite(sq):  # float64 input near its range: scale first
        sq = rms(flat) ** 2 * flat.size
    return Moments(sq / flat.size, ab / flat.size, top)


def family_from(m2: float, mean_abs: float) -> int:
    """Laplace when the layer is heavier-tailed than Gaussian (mean|x|/rms below the
    midpoint of the two laws' 0.80 and 0.71), else Gaussian."""
    return int(m2 > 0 and mean_abs / math.sqrt(m2) < 0.753)


def choose_family(flat: np.ndarray) -> int:
    """:func:`family_from` the layer's moments."""
    m = moments(flat)
    return family_from(m.m2, m.mean_abs)


def stat_uniform(key: int) -> float:
    """The client's coin for rounding the statistic (any fixed function of the key)."""
    return float(np.random.default_rng([key, _STAT_SALT]).random())


def _words(key: int) -> np.random.Philox:
    return np.random.Philox(key=np.array([key, KEY_HI], dtype=np.uint64))


Pieces = Iterator[tuple[np.ndarray, np.ndarray]]
_TORCH_SPAN = 1 << 20  # coordinates per device pass of the torch path


def _numpy_pieces(flat: np.ndarray, plan: Plan, key: int, out: np.ndarray | None) -> Pieces:
    """(float64 indices, uint32 dithers) of the kept coordinates, chunk by chunk;
    writes the reconstruction into ``out`` when given."""
    gen, step, sparse = _words(key), plan.step, plan.threshold < _ALL
    for sl in chunks(flat.size, group_size(flat.size)):
        values = flat[sl]
        if sparse:
            words = gen.random_raw(values.size)
            kept = np.flatnonzero(words < keep_limit(plan.threshold))
            values, low = values[kept], low_bits(words[kept])
        else:
            low = both_halves(gen.random_raw((values.size + 1) // 2))[: values.size]
        u = dither_unit(low)
        q = np.divide(values, step, dtype=np.float64)
        q += u
        np.rint(q, out=q)
        if out is not None:
            rec = q - u
            rec *= step / plan.keep_prob
            if sparse:
                out[sl] = 0
                out[sl][kept] = rec
            else:
                out[sl] = rec
        del u  # not held while the caller codes the group: peak memory
        yield q, low


def _torch_pieces(tensor: Any, plan: Plan, key: int) -> Pieces:
    """As :func:`_numpy_pieces` on the tensor's device, in float64, bit-identical to
    numpy; only the kept indices and strata come to the CPU.

    The device works on spans of up to ``_TORCH_SPAN`` coordinates (whole groups; the
    counter-based dither makes a span's words those of its groups), so a layer costs a
    few hundred kernel launches per span instead of per group; the spans bound what
    crosses to the host at once.
    """
    import torch

    from .rng import philox_torch

    flat, step, n = tensor.detach().reshape(-1), plan.step, int(tensor.numel())
    group = group_size(n)
    for span in chunks(n, max(group, _TORCH_SPAN // group * group)):
        values = flat[span]
        if plan.threshold < _ALL:
            words = philox_torch(key, values.numel(), flat.device, start=span.start)
            keep = torch.bitwise_and(torch.bitwise_right_shift(words, 32), 0xFFFFFFFF) < plan.threshold
            kept = torch.nonzero(keep).reshape(-1)
            low = torch.bitwise_and(words[kept], 0xFFFFFFFF)
            values = values[kept]
            per_group = torch.stack([part.sum() for part in torch.split(keep, group)]).cpu().tolist()
        else:  # words start at span.start / 2, a multiple of 4 (groups are multiples of 8)
            words = philox_torch(key, (values.numel() + 1) // 2, flat.device, start=span.start // 2)
            halves = [torch.bitwise_and(words, 0xFFFFFFFF),
                      torch.bitwise_and(torch.bitwise_right_shift(words, 32), 0xFFFFFFFF)]
            low = torch.stack(halves, dim=1).reshape(-1)[: values.numel()]
            per_group = [part.stop - part.start for part in chunks(values.numel(), group)]
        u = low.to(torch.float64) * 2.0**-32 + (2.0**-33 - 0.5)
        q = torch.round(values.to(torch.float64) / step + u).to(torch.int64).cpu().numpy()
        strata = torch.bitwise_right_shift(low, 27).to(torch.uint8).cpu().numpy()  # only these bits travel
        del words, u, low, values
        start = 0
        for count in per_group:
            yield q[start:start + count], strata[start:start + count].astype(np.uint32) << np.uint32(27)
            start += count


def encode_layer(encoder: constriction.stream.queue.RangeEncoder, array: Any, plan: Plan, key: int,
                 out: np.ndarray | None = None, top: float | None = None) -> None:
    """Append one layer (numpy array or torch tensor) to ``encoder`` under ``plan``;
    ``top``, the layer's largest magnitude when the caller knows it, spares a scan.

    Raises ValueError when ``max|x|/Δ >= 2**52`` (noise target too small for the data).
    """
    if plan.m2 == 0:
        if out is not None:
            out[:] = 0
        return
    if hasattr(array, "detach") and out is None:
        if top is None:
            top = float(array.detach().abs().max()) if array.numel() else 0.0
        group = group_size(int(array.numel()))
        pieces = _torch_pieces(array, plan, key)
    else:
        flat = as_float_array(array).reshape(-1)
        if top is None:
            top = max_abs(flat)
        group = group_size(flat.size)
        pieces = _numpy_pieces(flat, plan, key, out)
    if top / plan.step >= _MAX_STEPS:
        raise ValueError("noise target too small for this input: max|x|/step must be < 2**52, "
                         f"got {top / plan.step:.3e}")
    scale, count = plan.scale, 0
    pending: list[tuple[np.ndarray, np.ndarray]] = []
    max_index = top / plan.step + 2  # bounds |q|: lets groups skip the scan for escapes
    for q, low in pieces:
        pending.append((q, low))
        count += q.size
        if count >= group:
            encode_group(encoder, *_joined(pending), plan.family, scale, max_index)
            pending, count = [], 0
    if count:
        encode_group(encoder, *_joined(pending), plan.family, scale, max_index)


def _joined(pending: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The pieces of one coded group, concatenated (a single piece as it is)."""
    if len(pending) == 1:
        return pending[0]
    return np.concatenate([q for q, _ in pending]), np.concatenate([low for _, low in pending])


def decode_layer(decoder: constriction.stream.queue.RangeDecoder, size: int, plan: Plan, key: int,
                 dtype: np.dtype | type = np.float64) -> np.ndarray:
    """Inverse of :func:`encode_layer`: array of ``size`` entries in ``dtype`` (values
    beyond its finite range, which only crafted payloads produce, are clipped)."""
    out = np.zeros(size, dtype=dtype)
    if plan.m2 == 0 or size == 0:
        return out
    gen, scale, factor, sparse = _words(key), plan.scale, plan.step / plan.keep_prob, plan.threshold < _ALL
    group = group_size(size)
    pending: list[tuple[slice | np.ndarray, np.ndarray]] = []
    count = 0

    def flush() -> None:
        if len(pending) == 1:
            idx, low = pending[0]
        else:
            idx = np.concatenate([np.arange(i.start, i.stop) if isinstance(i, slice) else i for i, _ in pending])
            low = np.concatenate([part for _, part in pending])
        q = decode_group(decoder, low, plan.family, scale)
        q -= dither_unit(low)
        q *= factor
        store(out, idx, q)

    for sl in chunks(size, group):
        if sparse:
            words = gen.random_raw(sl.stop - sl.start)
            kept = np.flatnonzero(words < keep_limit(plan.threshold))
            pending.append((kept + sl.start, low_bits(words[kept])))
            count += kept.size
        else:
            pending.append((sl, both_halves(gen.random_raw((sl.stop - sl.start + 1) // 2))[: sl.stop - sl.start]))
            count += sl.stop - sl.start
        if count >= group:
            flush()
            pending, count = [], 0
    if count:
        flush()
    return out


def plan_for(noise_var: float, flat: np.ndarray, key: int, family: int | None = None) -> tuple[int, Plan]:
    """(statistic index, plan) the client uses for ``flat`` at target ``noise_var``."""
    m2, mean_abs, _ = moments(flat)
    index = round_to_grid(SNR_GRID, m2 / noise_var, stat_uniform(key))
    snr = float(SNR_GRID[index])
    fam = family_from(m2, mean_abs) if family is None else family
    return index, plan_layer(noise_var, snr * noise_var, snr, fam)


@register
@dataclass(frozen=True)
class DitheredCodec(Codec):
    """Unbiased dithered quantizer meeting the noise target ``noise_var``: plain
    dithering at high SNR, sparse dithering on a shared random subset at low SNR.

    The standalone payload carries the target, the one-byte statistic and the
    family as header parameters; :mod:`flrd.codecs.message` sends only the byte.

    Example:
        >>> import numpy as np
        >>> from flrd.codecs import decode
        >>> x = np.random.default_rng(0).standard_normal(100_000)
        >>> codec = DitheredCodec.for_noise_var(10.0, x)  # SNR 0.1: sparse
        >>> err = decode(codec.encode(x, seed=3)) - x
        >>> bool(abs(err.var() / codec.expected_noise_var(x) - 1) < 0.1)
        True
    """

    noise_var: float
    name: ClassVar[str] = "dithered"
    codec_id: ClassVar[int] = 2
    unbiased: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "noise_var", positive_float("noise_var", self.noise_var))

    @property
    def step(self) -> float:
        """Step of plain dithering, sqrt(12 noise_var) (sparse layers use their own)."""
        return math.sqrt(12.0 * self.noise_var)

    def plan(self, array: Any, seed: int) -> tuple[int, Plan]:
        """(statistic index, plan) for ``array`` with layer seed ``seed``."""
        return plan_for(self.noise_var, as_float_array(array).reshape(-1), seed)

    def _encode(self, flat: np.ndarray, seed: int) -> tuple[tuple[float, ...], Body]:
        index, plan = plan_for(self.noise_var, flat, seed)
        encoder = constriction.stream.queue.RangeEncoder()
        encode_layer(encoder, flat, plan, seed)
        return (self.noise_var, index, plan.family), [stream_bytes(encoder)]

    def encode_reconstruct(self, array: Any, *, seed: int = 0) -> tuple[bytes, np.ndarray]:
        """Payload and, bit for bit, what the decoder returns (in the input dtype)."""
        arr = as_float_array(array)
        payload = self.encode(arr, seed=seed)
        flat = arr.reshape(-1)
        _, plan = plan_for(self.noise_var, flat, seed)
        rec = np.empty(flat.size, dtype=np.float64)
        encode_layer(constriction.stream.queue.RangeEncoder(), flat, plan, seed, out=rec)
        top = float(np.finfo(arr.dtype).max)
        return payload, np.clip(rec, -top, top).astype(arr.dtype).reshape(arr.shape)

    @classmethod
    def _decode(cls, header: Header, body: memoryview) -> np.ndarray:
        noise_var, index, family = expect_params(header, 3, cls.name)
        if not noise_var > 0:
            raise CodecError(f"dithered: noise_var must be > 0, got {noise_var}")
        index = int_param(index, "dithered statistic", 0, SNR_GRID.size - 1)
        family = int_param(family, "dithered family", 0, 1)
        snr = float(SNR_GRID[index])
        plan = plan_layer(noise_var, snr * noise_var, snr, family)
        if plan.m2 == 0 and len(body):
            raise CodecError("dithered: non-empty body for a zero layer")
        if not (math.isfinite(plan.step) and plan.step > 0 and math.isfinite(plan.scale)):
            raise CodecError(f"dithered: invalid step {plan.step} for noise_var {noise_var}")
        try:
            return decode_layer(stream_decoder(body), header.size, plan, header.seed, header.dtype)
        except OverflowError as err:  # a crafted target whose plan leaves machine range
            raise CodecError(f"dithered: parameters out of range ({err})") from err

    def expected_noise_var(self, array: Any) -> float:
        """Expected noise over the dither, the subset and the statistic's rounding."""
        flat = as_float_array(array).reshape(-1)
        m2, mean_abs, _ = moments(flat)
        snr = m2 / self.noise_var
        if snr == 0:
            return 0.0
        low = max(1, min(int(np.searchsorted(SNR_GRID, snr, side="right")) - 1, SNR_GRID.size - 2))
        a, b = float(SNR_GRID[low]), float(SNR_GRID[low + 1])
        up = min(1.0, max(0.0, (snr - a) / (b - a)))
        family = family_from(m2, mean_abs)
        noise = [plan_layer(self.noise_var, t * self.noise_var, t, family).expected_noise_var(m2) for t in (a, b)]
        return noise[0] if noise[0] == noise[1] else (1 - up) * noise[0] + up * noise[1]

    @classmethod
    def for_noise_var(cls, noise_var: float, array: Any, **params: Any) -> Self:
        return cls(noise_var=noise_var, **params)

    @classmethod
    def for_bits(cls, bits_per_coord: float, array: Any, **params: Any) -> Self:
        """Smallest noise target whose payload fits ``bits_per_coord`` (bisection on the
        shipped rate curve, then checked by encoding)."""
        from .rate_curve import bits_per_coord as curve

        if not 0 < bits_per_coord <= 16:
            raise ValueError(f"bits_per_coord must be in (0, 16], got {bits_per_coord}")
        flat = as_float_array(array).reshape(-1)
        m2 = float(rms(flat)) ** 2
        if m2 == 0:
            return cls(noise_var=1.0, **params)
        lo, hi = math.log2(m2) - 40, math.log2(m2) + 20
        for _ in range(50):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if curve(2.0**mid, m2 / 2.0**mid) > bits_per_coord else (lo, mid)
        noise_var = 2.0**hi
        for _ in range(40):  # the curve ignores framing and non-Gaussian data: verify
            codec = cls(noise_var=noise_var, **params)
            if 8 * len(codec.encode(flat)) <= bits_per_coord * flat.size:
                break
            noise_var *= 1.05
        return codec

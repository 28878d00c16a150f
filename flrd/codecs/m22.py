"""M22: M-magnitude-weighted quantization with a fitted per-layer law.

After Liu et al., "M22: A Communication-Efficient Algorithm for Federated
Learning Inspired by Rate-Distortion" (arXiv 2301.09269), THEORY §10. Per layer:
standardize the layer by its RMS and fit a generalized normal or double Weibull law
(location fixed at 0, seeded subsample of at most 20k entries); optionally keep only
the top ``keep_fraction`` of entries by magnitude (the authors keep ``P / (100 b)``);
quantize the kept entries with the ``2**bits``-level codebook minimizing
``E[|x|^M (x - x̂)²]`` under the fitted law, conditioned on ``|x|`` at or above the
cut when entries were dropped (:mod:`flrd.codecs.lloyd`, cached by the shape and the
cut rounded to 0.01). Fitting the whole layer, not the survivors, keeps levels out of
the hole the cut leaves around zero (a law fitted to the survivors puts mass there).
Cell indices are bit-packed, or range-coded under the fitted law's cell
probabilities when that is smaller. Deterministic and biased.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import constriction
import numpy as np
from scipy import special, stats

from .base import Body, Codec, expect_params, int_param, register
from .entropy import categorical_probs, decode_guarded, decoder_for, words_bytes
from .errors import CodecError
from .header import Header
from .indices import elias_fano_decode, elias_fano_encode, elias_fano_size, top_k_indices
from .lloyd import FAMILIES, Design, design
from .numerics import as_float_array, chunks, rms, store, subsample
from .packing import iter_unpack_uint, pack_uint, packed_size

SHAPE_RANGE = (0.2, 10.0)
MAX_CUT = 100.0  # top-k cut in units of the fitted scale; beyond it the tail law is moot
MAX_M = 8.0
FIT_SAMPLE = 20_000
_MIN_FIT = 64  # fewer kept entries: skip the fit and assume a Gaussian
_PROB_GRID = 2.0**20  # cell probabilities are rounded so both sides build the same model


def _unit_variance_scale(family: int, shape: float) -> float:
    """Scale α giving the unit-scale law times α unit variance."""
    if family == 0:
        return math.exp(0.5 * (special.gammaln(1 / shape) - special.gammaln(3 / shape)))
    return math.exp(-0.5 * special.gammaln(1 + 2 / shape))


def fit_law(z: np.ndarray, family: int) -> tuple[float, float]:
    """(shape rounded to 0.01, scale) of the law fitted to standardized entries ``z``."""
    fallback = 2.0
    if z.size >= _MIN_FIT:
        law = stats.gennorm if family == 0 else stats.dweibull
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                shape, _, scale = law.fit(subsample(z, FIT_SAMPLE), floc=0)
        except Exception:  # degenerate samples (e.g. constant magnitudes) fail to fit
            shape, scale = fallback, math.nan
        if math.isfinite(shape) and math.isfinite(scale) and scale > 0:
            shape = round(min(max(shape, SHAPE_RANGE[0]), SHAPE_RANGE[1]), 2)
            return shape, float(scale)
    return fallback, _unit_variance_scale(family, fallback)


def _model(codebook: Design) -> constriction.stream.model.Categorical:
    return categorical_probs(np.maximum(np.round(codebook.probs * _PROB_GRID), 1.0))


@register
@dataclass(frozen=True)
class M22Codec(Codec):
    """Fitted-law Lloyd–Max quantizer with magnitude weight ``|x|^m``.

    Args:
        bits: levels ``2**bits``, 1..8.
        m: weight exponent M in ``[0, 8]``; M=0 is plain MSE, larger M moves levels
            outward to favour large entries.
        family: ``"gennorm"`` or ``"dweibull"``.
        keep_fraction: fraction of entries kept by top-k before quantizing, (0, 1].
        entropy_coded: range-code indices when that beats fixed-length packing.

    Example:
        >>> import numpy as np
        >>> from flrd.codecs import decode
        >>> x = np.random.default_rng(0).standard_normal(4096)
        >>> xh = decode(M22Codec(bits=3).encode(x))
        >>> bool(np.mean((xh - x) ** 2) < 0.04)
        True
    """

    bits: int = 2
    m: float = 0.0
    family: str = "gennorm"
    keep_fraction: float = 1.0
    entropy_coded: bool = True
    name: ClassVar[str] = "m22"
    codec_id: ClassVar[int] = 3
    unbiased: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if not isinstance(self.bits, (int, np.integer)) or not 1 <= self.bits <= 8:
            raise ValueError(f"bits must be in 1..8, got {self.bits}")
        if not 0 <= self.m <= MAX_M:
            raise ValueError(f"m must be in [0, {MAX_M}], got {self.m}")
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if not 0 < self.keep_fraction <= 1:
            raise ValueError(f"keep_fraction must be in (0, 1], got {self.keep_fraction}")

    def _plan(self, flat: np.ndarray) -> tuple[np.ndarray | None, np.ndarray, tuple[float, ...], Design]:
        """Kept positions (None if dense), kept values, header params, codebook."""
        n, family = flat.size, FAMILIES.index(self.family)
        k = n if self.keep_fraction == 1 else min(n, math.ceil(self.keep_fraction * n))
        positions = None if k == n else top_k_indices(flat, k)
        values = flat if positions is None else flat[positions]
        sigma = rms(flat)
        shape, alpha = fit_law(flat / sigma, family) if sigma > 0 else (2.0, 1.0)
        scale = sigma * alpha
        cut = 0.0
        if positions is not None and k > 0 and scale > 0:  # rounded down: every survivor stays above it
            cut = min(math.floor(float(np.min(np.abs(values))) / scale * 100) / 100, MAX_CUT)
        params = (self.bits, self.m, family, shape, scale, k, cut)
        return positions, values, params, design(self.family, shape, self.bits, float(self.m), cut)

    def _symbols(self, values: np.ndarray, scale: float, codebook: Design) -> np.ndarray:
        out = np.zeros(values.size, dtype=np.uint8)
        if scale > 0:
            for sl in chunks(values.size):
                out[sl] = np.searchsorted(codebook.boundaries, values[sl].astype(np.float64) / scale)
        else:  # all-zero layer: any cell decodes to 0
            out[:] = 2 ** (self.bits - 1)
        return out

    def _encode(self, flat: np.ndarray, seed: int) -> tuple[tuple[float, ...], Body]:
        positions, values, params, codebook = self._plan(flat)
        symbols = self._symbols(values, params[4], codebook)
        body: Body = elias_fano_encode(positions, flat.size) if positions is not None else []
        packed = pack_uint(symbols, self.bits)
        coded = b""
        if self.entropy_coded and symbols.size:
            encoder = constriction.stream.queue.RangeEncoder()
            model = _model(codebook)
            for sl in chunks(symbols.size):
                encoder.encode(symbols[sl].astype(np.int32), model)
            coded = words_bytes(encoder)
        use_coded = bool(coded) and len(coded) < packed_size(symbols.size, self.bits)
        return (*params, int(use_coded)), [*body, *([coded] if use_coded else packed)]

    @classmethod
    def _decode(cls, header: Header, body: memoryview) -> np.ndarray:
        bits, m, family, shape, scale, k, cut, coded = expect_params(header, 8, cls.name)
        n = header.size
        bits = int_param(bits, "m22 bits", 1, 8)
        family = int_param(family, "m22 family", 0, 1)
        k = int_param(k, "m22 kept count", 0, n)
        coded = int_param(coded, "m22 coded flag", 0, 1)
        if not (0 <= m <= MAX_M and SHAPE_RANGE[0] <= shape <= SHAPE_RANGE[1] and scale >= 0):
            raise CodecError(f"m22: invalid m={m}, shape={shape} or scale={scale}")
        if not (0 <= cut <= MAX_CUT and cut == round(cut, 2) and (cut == 0 or k < n)):
            raise CodecError(f"m22: invalid top-k cut {cut} (a multiple of 0.01 in [0, {MAX_CUT}], 0 when dense)")
        split = elias_fano_size(n, k) if k < n else 0
        if split > len(body) or (not coded and len(body) != split + packed_size(k, bits)):
            raise CodecError(f"m22: body of {len(body)} bytes does not match {k} kept entries")
        positions = elias_fano_decode(body[:split], n, k) if k < n else None
        codebook = design(FAMILIES[family], shape, bits, m, cut)
        symbol_chunks: Iterator[np.ndarray]
        if coded:
            decoder, model = decoder_for(body[split:]), _model(codebook)
            symbol_chunks = (decode_guarded(decoder, model, sl.stop - sl.start) for sl in chunks(k))
        else:
            symbol_chunks = iter_unpack_uint(body[split:], bits, k)
        out = np.zeros(n, dtype=header.dtype)
        for sl, symbols in zip(chunks(k), symbol_chunks, strict=True):
            store(out, sl if positions is None else positions[sl], codebook.levels[symbols] * scale)
        return out

    def expected_noise_var(self, array: Any) -> float:
        flat = as_float_array(array).reshape(-1)
        if flat.size == 0:
            return 0.0
        positions, values, params, codebook = self._plan(flat)
        recon = codebook.levels[self._symbols(values, params[4], codebook)] * params[4]
        err = float(np.sum((values.astype(np.float64) - recon) ** 2))
        dropped = rms(flat) ** 2 * flat.size - rms(values) ** 2 * values.size if positions is not None else 0.0
        return (err + max(dropped, 0.0)) / flat.size

    @classmethod
    def for_noise_var(cls, noise_var: float, array: Any, **params: Any) -> Self:
        for bits in range(1, 9):
            codec = cls(bits=bits, **params)
            if codec.expected_noise_var(array) <= noise_var:
                return codec
        return codec

    @classmethod
    def for_bits(cls, bits_per_coord: float, array: Any, **params: Any) -> Self:
        """Most levels whose measured payload fits ``bits_per_coord``; below one bit
        per coordinate (and without an explicit ``keep_fraction``) 1-bit codes are
        combined with the largest top-k fraction that fits."""
        if not bits_per_coord > 0:
            raise ValueError(f"bits_per_coord must be > 0, got {bits_per_coord}")
        arr = as_float_array(array)
        n = max(arr.size, 1)
        rate = lambda codec: 8 * len(codec.encode(arr)) / n  # noqa: E731
        for bits in range(8, 0, -1):
            codec = cls(bits=bits, **params)
            if rate(codec) <= bits_per_coord:
                return codec
        if "keep_fraction" in params:
            return codec
        lo, hi = 0.0, 1.0  # bisection on the kept fraction with 1-bit codes
        for _ in range(12):
            mid = 0.5 * (lo + hi)
            if rate(cls(bits=1, keep_fraction=max(mid, 1 / n), **params)) <= bits_per_coord:
                lo = mid
            else:
                hi = mid
        return cls(bits=1, keep_fraction=max(lo, 1 / n), **params)

"""Chunked numerics shared by the codecs.

Codecs work in float64 for accuracy but only on chunks of ``CHUNK`` elements, so
encode and decode need little memory beyond the input and the output.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numpy.typing import NDArray

from .errors import CodecError
from .header import DTYPE_CODES

# Small enough that a few float64 temporaries per chunk stay well under the input's
# size for layers of 2**18+ entries; a multiple of 8 so bit-packed chunks end on bytes.
CHUNK = 1 << 14
F64 = NDArray[np.float64]


def as_float_array(array: object) -> np.ndarray:
    """Return ``array`` as a float16/32/64 numpy array (torch tensors accepted).

    numpy has no bfloat16: a bfloat16 tensor becomes float32, which holds every
    bfloat16 value exactly, and decodes as float32.
    """
    if hasattr(array, "detach"):  # torch tensor; never import torch here
        tensor = array.detach()
        if str(tensor.dtype) == "torch.bfloat16":
            tensor = tensor.float()
        array = tensor.cpu().numpy()
    arr = np.asarray(array)
    if arr.dtype not in DTYPE_CODES:
        raise ValueError(f"array dtype must be float16, float32 or float64, got {arr.dtype}")
    return arr


def chunks(n: int, size: int = CHUNK) -> Iterator[slice]:
    """Consecutive slices covering ``range(n)``."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def check_finite(flat: np.ndarray) -> None:
    """Raise ValueError if ``flat`` holds NaN or infinity."""
    for sl in chunks(flat.size):
        if not np.isfinite(flat[sl]).all():
            raise ValueError("array must be finite: it contains NaN or infinity")


def max_abs(flat: np.ndarray) -> float:
    """Largest magnitude (0.0 for an empty array)."""
    return float(max((np.abs(flat[sl]).max() for sl in chunks(flat.size)), default=0.0))


def mean_abs(flat: np.ndarray) -> float:
    """Mean magnitude, accumulated in float64."""
    if flat.size == 0:
        return 0.0
    return sum(float(np.abs(flat[sl], dtype=np.float64).sum()) for sl in chunks(flat.size)) / flat.size


def rms(flat: np.ndarray) -> float:
    """Root mean square; scaled by the max first so 1e200 does not overflow."""
    top = max_abs(flat)
    if top == 0.0:
        return 0.0
    acc = 0.0
    for sl in chunks(flat.size):
        part = flat[sl].astype(np.float64) / top
        acc += float(part @ part)
    return top * float(np.sqrt(acc / flat.size))


def sq_error_mean(flat: np.ndarray, approx: np.ndarray) -> float:
    """Mean squared difference, accumulated chunk-wise in float64."""
    if flat.size == 0:
        return 0.0
    acc = 0.0
    for sl in chunks(flat.size):
        diff = flat[sl].astype(np.float64) - approx[sl]
        acc += float(diff @ diff)
    return acc / flat.size


def store(out: np.ndarray, sl: slice | np.ndarray, values: F64) -> None:
    """Write decoded float64 ``values`` into ``out[sl]``, clipped to ``out``'s finite
    range; NaN (only a crafted payload can produce it) raises CodecError."""
    top = float(np.finfo(out.dtype).max)
    clipped = np.clip(values, -top, top)
    if np.isnan(clipped).any():
        raise CodecError("payload decodes to NaN")
    out[sl] = clipped


def subsample(flat: np.ndarray, size: int, seed: int = 0) -> F64:
    """At most ``size`` entries of ``flat`` as float64 (seeded, drawn with replacement).

    With replacement because sampling without it may permute all ``n`` indices,
    which would cost more memory than the codec budget allows.
    """
    if flat.size <= size:
        return flat.astype(np.float64)
    idx = np.random.default_rng(seed).integers(0, flat.size, size)
    return flat[idx].astype(np.float64)

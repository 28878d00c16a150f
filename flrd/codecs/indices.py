"""Compact index sets: Elias–Fano coding and seeded random subsets.

Elias–Fano stores ``k`` sorted distinct indices below ``n`` in about
``k * (2 + log2(n / k))`` bits, within ~0.6 bit per index of the entropy of a
uniformly random k-subset, with vectorized encode and decode.
"""

from __future__ import annotations

import numpy as np

from .errors import CodecError
from .numerics import CHUNK, chunks
from .packing import pack_uint, packed_size, unpack_uint


def _low_width(n: int, k: int) -> int:
    return max(0, (n // k).bit_length() - 1) if k else 0


def elias_fano_size(n: int, k: int) -> int:
    """Bytes used by :func:`elias_fano_encode` for ``k`` indices below ``n``."""
    if k == 0:
        return 0
    low = _low_width(n, k)
    return packed_size(k, low) + packed_size(k + ((n - 1) >> low) + 1, 1)


def elias_fano_encode(idx: np.ndarray, n: int) -> list[bytes]:
    """Encode sorted distinct int indices in ``[0, n)``.

    Example:
        >>> data = b"".join(elias_fano_encode(np.array([3, 9, 10]), 16))
        >>> elias_fano_decode(data, 16, 3).tolist()
        [3, 9, 10]
    """
    k = idx.size
    if k == 0:
        return []
    low = _low_width(n, k)
    upper = np.zeros(k + ((n - 1) >> low) + 1, dtype=np.uint8)
    upper[(idx >> low) + np.arange(k)] = 1
    return [*pack_uint(idx & ((1 << low) - 1), low), np.packbits(upper).tobytes()]


def elias_fano_decode(buf: memoryview | bytes, n: int, k: int) -> np.ndarray:
    """Inverse of :func:`elias_fano_encode`; raises CodecError on invalid data."""
    if len(buf) != elias_fano_size(n, k):
        raise CodecError(f"index block is {len(buf)} bytes, expected {elias_fano_size(n, k)}")
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    low = _low_width(n, k)
    split = packed_size(k, low)
    upper_bits = k + ((n - 1) >> low) + 1
    ones = np.flatnonzero(np.unpackbits(np.frombuffer(buf[split:], np.uint8), count=upper_bits))
    if ones.size != k:
        raise CodecError(f"index block holds {ones.size} indices, expected {k}")
    idx = ((ones - np.arange(k)) << low) | unpack_uint(buf[:split], low, k).astype(np.int64)
    if idx[-1] >= n or np.any(np.diff(idx) <= 0):
        raise CodecError("index block does not decode to increasing indices below n")
    return idx


def random_subset(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform random sorted k-subset of ``range(n)`` using O(k + CHUNK) memory.

    Splits ``range(n)`` into chunks, draws how many indices each chunk gets from a
    multivariate hypergeometric law, then samples within chunks; the result is an
    exactly uniform k-subset without ever permuting all ``n`` indices.
    """
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.arange(0, n, CHUNK)
    sizes = np.minimum(CHUNK, n - starts)
    counts = rng.multivariate_hypergeometric(sizes, k, method="marginals")
    parts = [
        start + np.sort(rng.choice(size, count, replace=False))
        for start, size, count in zip(starts, sizes, counts, strict=True)
        if count
    ]
    return np.concatenate(parts).astype(np.int64)


def top_k_indices(flat: np.ndarray, k: int) -> np.ndarray:
    """Sorted positions of the ``k`` largest magnitudes (ties broken by position).

    Uses one magnitude copy partitioned in place instead of ``argpartition``,
    whose int64 index array would take twice a float32 input's memory.
    """
    n = flat.size
    if k >= n:
        return np.arange(n, dtype=np.int64)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    mags = np.abs(flat)
    mags.partition(n - k)
    threshold = mags[n - k]
    del mags
    above = [np.flatnonzero(np.abs(flat[sl]) > threshold) + sl.start for sl in chunks(n)]
    ties = [np.flatnonzero(np.abs(flat[sl]) == threshold) + sl.start for sl in chunks(n)]
    n_above = sum(part.size for part in above)
    picked = np.concatenate([*above, np.concatenate(ties)[: k - n_above]])
    return np.sort(picked).astype(np.int64)

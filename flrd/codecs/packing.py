"""Fixed-width bit packing of small unsigned integers (MSB first), chunked."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .numerics import CHUNK, chunks


def packed_size(count: int, width: int) -> int:
    """Bytes taken by ``count`` values of ``width`` bits."""
    return (count * width + 7) // 8


def pack_uint(values: np.ndarray, width: int) -> list[bytes]:
    """Pack integers in ``[0, 2**width)`` at ``width`` bits each (width 0..16).

    Example:
        >>> b"".join(pack_uint(np.array([1, 2, 3]), 2))
        b'l'
    """
    if width == 0 or values.size == 0:
        return []
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint32)
    out = []
    for sl in chunks(values.size):
        bits = (values[sl].astype(np.uint32)[:, None] >> shifts) & 1
        out.append(np.packbits(bits.astype(np.uint8)).tobytes())
    return out


def iter_unpack_uint(buf: memoryview | bytes, width: int, count: int) -> Iterator[np.ndarray]:
    """Inverse of :func:`pack_uint`, as uint16 chunks of ``CHUNK`` values; ``buf``
    must hold exactly ``packed_size(count, width)`` bytes."""
    raw = np.frombuffer(buf, dtype=np.uint8)
    weights = (1 << np.arange(width - 1, -1, -1)).astype(np.uint16)
    bytes_per_chunk = CHUNK * width // 8  # CHUNK is a multiple of 8: chunks align
    for i, sl in enumerate(chunks(count)):
        if width == 0:
            yield np.zeros(sl.stop - sl.start, dtype=np.uint16)
            continue
        part = raw[i * bytes_per_chunk : i * bytes_per_chunk + packed_size(sl.stop - sl.start, width)]
        yield np.unpackbits(part, count=(sl.stop - sl.start) * width).reshape(-1, width) @ weights


def unpack_uint(buf: memoryview | bytes, width: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_uint` as one uint16 array."""
    parts = list(iter_unpack_uint(buf, width, count))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)

"""Binary payload framing: header, body and CRC32.

Layout (all integers little-endian)::

    offset  size       field
    0       4          magic b"FLRD"
    4       1          format version (1)
    5       1          codec id (see registry)
    6       1          dtype code: 1 float16, 2 float32, 3 float64
    7       1          ndim (0..32)
    8       8*ndim     shape, uint64 each
    .       8          dither / randomness seed, uint64
    .       1          number of codec parameters P (0..255)
    .       8*P        codec parameters, float64 each (must be finite)
    .       8          body length B, uint64
    .       B          codec body
    .       4          CRC32 (zlib) of every preceding byte

Parameters are float64 so one generic, validated container carries every codec's
settings and side information (integers up to 2**53 are exact).
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import CodecError

MAGIC = b"FLRD"
VERSION = 2  # 2: the dithered body's new stratified coding (flrd.codecs.stratified)
MAX_NDIM = 32
DTYPE_CODES: dict[np.dtype, int] = {
    np.dtype(np.float16): 1,
    np.dtype(np.float32): 2,
    np.dtype(np.float64): 3,
}
_CODE_DTYPES = {code: dtype for dtype, code in DTYPE_CODES.items()}
_PREFIX = struct.Struct("<4sBBBB")
_U64 = struct.Struct("<Q")
_CRC = struct.Struct("<I")
MIN_PAYLOAD = _PREFIX.size + 8 + 1 + 8 + _CRC.size


def header_bytes(ndim: int, num_params: int) -> int:
    """Bytes of framing around a body: prefix, shape, seed, parameters, length, CRC32.

    Example:
        >>> header_bytes(ndim=2, num_params=2)  # a 2-D sign payload: 61 B + 2 B of bits
        61
    """
    return MIN_PAYLOAD + 8 * ndim + 8 * num_params


@dataclass(frozen=True)
class Header:
    """Decoded header fields; ``params`` are the codec's float64 parameters."""

    codec_id: int
    dtype: np.dtype
    shape: tuple[int, ...]
    seed: int
    params: tuple[float, ...]

    @property
    def size(self) -> int:
        """Number of array elements declared by ``shape``."""
        return math.prod(self.shape)


def pack_payload(header: Header, body: Sequence[bytes | memoryview]) -> bytes:
    """Frame ``body`` (a list of byte chunks, joined in order) behind ``header``."""
    if len(header.params) > 255:
        raise ValueError(f"at most 255 codec parameters, got {len(header.params)}")
    body_len = sum(len(part) for part in body)
    head = b"".join(
        [
            _PREFIX.pack(MAGIC, VERSION, header.codec_id, DTYPE_CODES[header.dtype], len(header.shape)),
            struct.pack(f"<{len(header.shape)}Q", *header.shape),
            _U64.pack(header.seed),
            struct.pack(f"<B{len(header.params)}d", len(header.params), *header.params),
            _U64.pack(body_len),
        ]
    )
    crc = zlib.crc32(head)
    for part in body:
        crc = zlib.crc32(part, crc)
    return b"".join([head, *body, _CRC.pack(crc)])


def peek_codec_id(payload: bytes | bytearray | memoryview) -> int:
    """The codec id of a payload whose prefix (magic, version) is valid; the rest is
    checked by :func:`parse_payload` when the codec decodes it."""
    view = _byte_view(payload)
    if len(view) < _PREFIX.size:
        raise CodecError(f"payload too short: {len(view)} bytes < {MIN_PAYLOAD}")
    return _prefix(view)[0]


def _prefix(view: memoryview) -> tuple[int, int, int]:
    """(codec id, dtype code, ndim) of a prefix whose magic and version are valid."""
    magic, version, codec_id, dtype_code, ndim = _PREFIX.unpack_from(view, 0)
    if magic != MAGIC:
        raise CodecError(f"wrong magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise CodecError(f"unsupported format version {version}, expected {VERSION}")
    return int(codec_id), int(dtype_code), int(ndim)


def _byte_view(payload: object) -> memoryview:
    try:  # anything exposing a contiguous buffer: bytes, memoryview, uint8 ndarray
        return memoryview(payload).cast("B")  # type: ignore[arg-type]
    except TypeError as err:
        raise CodecError(f"payload must be bytes-like, got {type(payload).__name__}") from err


def parse_payload(payload: bytes | bytearray | memoryview, max_elements: int) -> tuple[Header, memoryview]:
    """Validate the framing of ``payload`` and return its header and body view.

    Raises:
        CodecError: on any inconsistency; nothing proportional to declared sizes is
            allocated before the checks pass.
    """
    view = _byte_view(payload)
    if len(view) < MIN_PAYLOAD:
        raise CodecError(f"payload too short: {len(view)} bytes < {MIN_PAYLOAD}")
    codec_id, dtype_code, ndim = _prefix(view)
    (stored_crc,) = _CRC.unpack_from(view, len(view) - _CRC.size)
    if zlib.crc32(view[: len(view) - _CRC.size]) != stored_crc:
        raise CodecError("CRC32 mismatch: payload corrupted")
    if dtype_code not in _CODE_DTYPES:
        raise CodecError(f"unknown dtype code {dtype_code}")
    if ndim > MAX_NDIM:
        raise CodecError(f"ndim {ndim} exceeds {MAX_NDIM}")
    pos = _PREFIX.size
    fixed_rest = 8 * ndim + 8 + 1
    if pos + fixed_rest + 8 + _CRC.size > len(view):
        raise CodecError("payload truncated inside the shape")
    shape = struct.unpack_from(f"<{ndim}Q", view, pos)
    pos += 8 * ndim
    (seed,) = _U64.unpack_from(view, pos)
    nparams = view[pos + 8]
    pos += 9
    if pos + 8 * nparams + 8 + _CRC.size > len(view):
        raise CodecError("payload truncated inside the parameters")
    params = struct.unpack_from(f"<{nparams}d", view, pos)
    pos += 8 * nparams
    if not all(math.isfinite(p) for p in params):
        raise CodecError(f"non-finite header parameter in {params}")
    (body_len,) = _U64.unpack_from(view, pos)
    pos += 8
    if body_len != len(view) - _CRC.size - pos:
        raise CodecError(f"declared body length {body_len} != actual {len(view) - _CRC.size - pos}")
    size = math.prod(shape)
    if size > max_elements:
        raise CodecError(f"declared {size} elements exceed max_elements={max_elements}")
    header = Header(codec_id, _CODE_DTYPES[dtype_code], tuple(shape), seed, params)
    return header, view[pos : pos + body_len]

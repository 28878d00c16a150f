"""Codec lookup by name and payload decoding by codec id."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Codec
from .dithered import DitheredCodec
from .errors import CodecError
from .header import parse_payload
from .m22 import M22Codec
from .natural import NaturalCodec
from .qsgd import QSGDCodec
from .raw import Float32Codec
from .sign import SignCodec
from .sparse import RandKCodec, TopKCodec
from .terngrad import TernGradCodec

CODECS: dict[str, type[Codec]] = {
    cls.name: cls
    for cls in (
        Float32Codec,
        DitheredCodec,
        M22Codec,
        SignCodec,
        QSGDCodec,
        TernGradCodec,
        TopKCodec,
        RandKCodec,
        NaturalCodec,
    )
}
_BY_ID = {cls.codec_id: cls for cls in CODECS.values()}


def codec_class(name: str) -> type[Codec]:
    """The codec class registered as ``name`` (for its ``for_bits``/``for_noise_var``)."""
    if name not in CODECS:
        raise ValueError(f"unknown codec {name!r}; choose one of {sorted(CODECS)}")
    return CODECS[name]


def get(name: str, **params: Any) -> Codec:
    """Instantiate the codec ``name`` with ``params``.

    Example:
        >>> get("m22", bits=3, m=1.0)
        M22Codec(bits=3, m=1.0, family='gennorm', keep_fraction=1.0, entropy_coded=True)
    """
    return codec_class(name)(**params)


def decode(payload: bytes | bytearray | memoryview, *, max_elements: int = 2**28) -> np.ndarray:
    """Decode any flrd payload to an array of its original dtype and shape.

    Args:
        payload: bytes produced by some ``Codec.encode``.
        max_elements: refuse payloads declaring more elements (bounds memory).

    Raises:
        CodecError: for any malformed payload, before large allocations.

    Example:
        >>> import numpy as np
        >>> decode(get("float32").encode(np.eye(2))).tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """
    if not isinstance(max_elements, (int, np.integer)) or max_elements < 0:
        raise ValueError(f"max_elements must be an int >= 0, got {max_elements!r}")
    header, body = parse_payload(payload, int(max_elements))
    if header.codec_id not in _BY_ID:
        raise CodecError(f"unknown codec id {header.codec_id}")
    cls = _BY_ID[header.codec_id]
    try:
        with np.errstate(all="ignore"):  # crafted scales may overflow; store() clips
            flat = cls._decode(header, body)
    except (CodecError, MemoryError, KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as err:  # crafted input slipped past validation (Rust panics included)
        raise CodecError(f"undetected malformed {cls.name} payload ({type(err).__name__}: {err})") from err
    try:
        return flat.reshape(header.shape)
    except (ValueError, OverflowError, MemoryError) as err:  # e.g. shape (0, 2**63)
        raise CodecError(f"cannot shape the decoded array as {header.shape}: {err}") from err

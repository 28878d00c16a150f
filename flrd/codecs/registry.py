"""Codec lookup by name and payload decoding by codec id.

Each codec module registers its class with :func:`flrd.codecs.base.register`; this
module imports them all, so :data:`CODECS` is complete once ``flrd.codecs`` is imported.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Importing the codec modules registers their classes.
from . import dithered, m22, natural, qsgd, raw, sign, sparse, terngrad  # noqa: F401
from .base import CODECS, CODECS_BY_ID, Codec
from .errors import CodecError
from .header import peek_codec_id


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
    codec_id = peek_codec_id(payload)
    if codec_id not in CODECS_BY_ID:
        raise CodecError(f"unknown codec id {codec_id}")
    return CODECS_BY_ID[codec_id].decode_payload(payload, max_elements=max_elements)

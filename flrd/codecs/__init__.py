"""Quantizers that compress client updates near the rate-distortion bound.

Every codec encodes one float array into a self-describing payload (header with
codec id, dtype, shape, parameters and seed; body; CRC32) that the module-level
:func:`decode` turns back into an array of the original dtype and shape.
Malformed payloads raise :class:`CodecError`. Pure numpy/scipy/constriction: no
Flower import, torch only duck-typed.

Example:
    >>> import numpy as np
    >>> from flrd import codecs
    >>> x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    >>> codec = codecs.get("dithered", noise_var=0.01)
    >>> xh = codecs.decode(codec.encode(x, seed=1))
    >>> xh.dtype, xh.shape
    (dtype('float32'), (1000,))
"""

from .base import Codec
from .dithered import DitheredCodec
from .errors import CodecError
from .feedback import ErrorFeedback
from .lloyd import Design, design
from .m22 import M22Codec
from .natural import NaturalCodec
from .qsgd import QSGDCodec
from .raw import Float32Codec
from .registry import CODECS, codec_class, decode, get
from .sign import SignCodec, majority_vote
from .sparse import GlobalTopKCodec, RandKCodec, TopKCodec
from .terngrad import TernGradCodec

__all__ = [
    "CODECS",
    "Codec",
    "CodecError",
    "Design",
    "DitheredCodec",
    "ErrorFeedback",
    "Float32Codec",
    "GlobalTopKCodec",
    "M22Codec",
    "NaturalCodec",
    "QSGDCodec",
    "RandKCodec",
    "SignCodec",
    "TernGradCodec",
    "TopKCodec",
    "codec_class",
    "decode",
    "design",
    "get",
    "majority_vote",
]

"""The Codec interface shared by every quantizer."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar, Self, TypeVar

import numpy as np

from .errors import CodecError
from .header import Header, pack_payload, parse_payload
from .numerics import as_float_array, check_finite

#: Body chunks a codec returns, joined in order (a Sequence: lists of bytes qualify).
Body = Sequence[bytes | memoryview]
C = TypeVar("C", bound="Codec")

#: Every codec class by name and by wire id, filled by :func:`register` at import.
CODECS: dict[str, type[Codec]] = {}
CODECS_BY_ID: dict[int, type[Codec]] = {}


def register(cls: type[C]) -> type[C]:
    """Class decorator adding a codec to :data:`CODECS`; names and ids must be unique.

    Raises ``TypeError`` at import when a name or wire id is taken, so two codecs can
    never decode each other's payloads.
    """
    if cls.name in CODECS or cls.codec_id in CODECS_BY_ID:
        raise TypeError(f"codec {cls.__name__}: name {cls.name!r} or id {cls.codec_id} "
                        "is already registered")
    if not 0 < cls.codec_id < 256:
        raise TypeError(f"codec {cls.__name__}: id {cls.codec_id} must fit one byte (1..255)")
    CODECS[cls.name] = cls
    CODECS_BY_ID[cls.codec_id] = cls
    return cls


class Codec(abc.ABC):
    """A stateless lossy compressor for one float array (one model layer).

    Subclasses set ``name``, ``codec_id`` and ``unbiased`` and implement
    ``_encode`` / ``_decode`` on flat arrays; framing, validation and reshaping
    live here. Decode payloads with the module-level :func:`flrd.codecs.decode`.

    Example:
        >>> import numpy as np
        >>> from flrd.codecs import get, decode
        >>> codec = get("dithered", noise_var=0.01)
        >>> x = np.ones((3, 4), np.float32)
        >>> decode(codec.encode(x, seed=1)).shape
        (3, 4)
    """

    name: ClassVar[str]
    codec_id: ClassVar[int]
    unbiased: ClassVar[bool]

    def encode(self, array: Any, *, seed: int = 0) -> bytes:
        """Compress ``array`` into a self-describing payload.

        Args:
            array: float16/32/64 array (or CPU torch tensor) of any shape.
            seed: randomness seed in ``[0, 2**64)``, carried in the header so the
                decoder can regenerate dither or index sets.

        Raises:
            ValueError: non-finite input, unsupported dtype, or bad seed.
        """
        arr = as_float_array(array)
        if not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**64:
            raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
        flat = arr.reshape(-1)
        check_finite(flat)
        params, body = self._encode(flat, int(seed))
        header = Header(self.codec_id, arr.dtype, tuple(int(s) for s in arr.shape), int(seed), params)
        return pack_payload(header, body)

    def encode_reconstruct(self, array: Any, *, seed: int = 0) -> tuple[bytes, np.ndarray]:
        """The payload and, bit for bit, what ``decode(payload)`` will return.

        Clients use it to measure their realized noise. This default decodes; codecs
        that know the reconstruction while encoding override it to skip that work.
        """
        payload = self.encode(array, seed=seed)
        return payload, self.decode_payload(payload)

    @classmethod
    def decode_payload(cls, payload: bytes | bytearray | memoryview, *,
                       max_elements: int = 2**28) -> np.ndarray:
        """Decode a payload of this codec (any codec's: :func:`flrd.codecs.decode`).

        Raises:
            CodecError: for any malformed payload or one of another codec, before
                anything proportional to its declared size is allocated.
        """
        if not isinstance(max_elements, (int, np.integer)) or max_elements < 0:
            raise ValueError(f"max_elements must be an int >= 0, got {max_elements!r}")
        header, body = parse_payload(payload, int(max_elements))
        if header.codec_id != cls.codec_id:
            raise CodecError(f"payload of codec id {header.codec_id}, expected {cls.name} "
                             f"(id {cls.codec_id})")
        try:
            with np.errstate(all="ignore"):  # crafted scales may overflow; store() clips
                flat = cls._decode(header, body)
        except (CodecError, MemoryError, KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as err:  # crafted input slipped past validation (Rust panics too)
            raise CodecError(f"undetected malformed {cls.name} payload "
                             f"({type(err).__name__}: {err})") from err
        try:
            return flat.reshape(header.shape)
        except (ValueError, OverflowError, MemoryError) as err:  # e.g. shape (0, 2**63)
            raise CodecError(f"cannot shape the decoded array as {header.shape}: {err}") from err

    @abc.abstractmethod
    def _encode(self, flat: np.ndarray, seed: int) -> tuple[tuple[float, ...], Body]:
        """Return the header parameters and body chunks for a finite flat array."""

    @classmethod
    @abc.abstractmethod
    def _decode(cls, header: Header, body: memoryview) -> np.ndarray:
        """Return the flat decoded array (``header.dtype``, ``header.size`` entries).

        Must raise CodecError for invalid parameters or body sizes before allocating.
        """

    @abc.abstractmethod
    def expected_noise_var(self, array: Any) -> float:
        """Predicted per-coordinate MSE of ``decode(encode(array))`` for this input.

        Exact in expectation over the codec's randomness (exact outright for the
        deterministic codecs); value storage rounding is ignored where noted.
        """

    @classmethod
    @abc.abstractmethod
    def for_noise_var(cls, noise_var: float, array: Any, **params: Any) -> Self:
        """Cheapest settings whose expected MSE on ``array`` is <= ``noise_var``.

        When no setting reaches the target, the most accurate one is returned
        (check ``expected_noise_var``). ``params`` fix the non-searched options.
        """

    @classmethod
    @abc.abstractmethod
    def for_bits(cls, bits_per_coord: float, array: Any, **params: Any) -> Self:
        """Settings whose payload for ``array`` uses about ``bits_per_coord`` bits
        per coordinate (header included), the most accurate not exceeding it where
        the rate can be chosen."""

    @classmethod
    def for_bits_jointly(cls, bits_per_coord: float, arrays: Sequence[Any], **params: Any) -> list[Self]:
        """One codec per array such that the arrays *together* use about
        ``bits_per_coord`` bits per coordinate. By default each array gets
        :meth:`for_bits` on its own; a codec that allocates across layers (global
        top-k) overrides this."""
        return [cls.for_bits(bits_per_coord, array, **params) for array in arrays]


class FixedRateCodec(Codec, abc.ABC):
    """A codec with no rate knob: every noise or bit target gets its one setting."""

    @classmethod
    def for_noise_var(cls, noise_var: float, array: Any, **params: Any) -> Self:
        return cls(**params)

    @classmethod
    def for_bits(cls, bits_per_coord: float, array: Any, **params: Any) -> Self:
        return cls(**params)


def expect_params(header: Header, count: int, name: str) -> tuple[float, ...]:
    """Return ``header.params`` after checking there are exactly ``count``."""
    if len(header.params) != count:
        raise CodecError(f"{name}: expected {count} header parameters, got {len(header.params)}")
    return header.params


def int_param(value: float, what: str, lo: int, hi: int) -> int:
    """Header parameter that must be an integer in ``[lo, hi]``."""
    if value != int(value) or not lo <= value <= hi:
        raise CodecError(f"{what} must be an integer in {lo}..{hi}, got {value}")
    return int(value)


def expect_body(body: memoryview, size: int, name: str) -> None:
    """Check a fixed-size body before anything is allocated."""
    if len(body) != size:
        raise CodecError(f"{name}: body is {len(body)} bytes, expected {size}")


def positive_float(name: str, value: float) -> float:
    """Validate a constructor argument that must be a finite positive number."""
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value

"""The one exception type for malformed payloads."""

from __future__ import annotations


class CodecError(ValueError):
    """A payload could not be decoded: truncated, corrupted, or not a flrd payload.

    Raised by :func:`flrd.codecs.decode` for every malformed input (wrong magic or
    version, CRC mismatch, unknown codec id, declared sizes inconsistent with the
    payload length or above ``max_elements``, invalid header parameters, corrupt
    entropy-coded data). Always raised before any allocation proportional to a
    declared size. Subclasses ``ValueError`` so generic handlers still catch it.

    Example:
        >>> from flrd.codecs import decode, CodecError
        >>> try:
        ...     decode(b"not a payload")
        ... except CodecError as err:
        ...     print("rejected")
        rejected
    """

"""Strategy half of the payload transport: Flower Arrays back into codec bytes.

Only Arrays that ``flrd.clients.transport`` produced are accepted: stype
``"flrd.codec"``, dtype ``uint8``, a 1-D shape that matches the data length.

Example:
    >>> from flwr.app import Array
    >>> unwrap_payload(Array(dtype="uint8", shape=(2,), stype="flrd.codec", data=b"ok"))
    b'ok'
"""

from __future__ import annotations

from flwr.app import Array, ArrayRecord

from flrd.protocol import PAYLOAD_DTYPE, PAYLOAD_STYPE

__all__ = ["TransportError", "is_payload", "payload_bytes", "unwrap_payload", "unwrap_payloads"]


class TransportError(ValueError):
    """An Array that does not carry a well-formed flrd payload."""


def is_payload(array: Array) -> bool:
    """True for Arrays whose stype marks an flrd codec payload."""
    return array.stype == PAYLOAD_STYPE


def unwrap_payload(array: Array) -> bytes:
    """The payload bytes of ``array``; TransportError when it is not a valid payload."""
    if array.stype != PAYLOAD_STYPE:
        raise TransportError(f"stype {array.stype!r} is not {PAYLOAD_STYPE!r}")
    if array.dtype != PAYLOAD_DTYPE:
        raise TransportError(f"dtype {array.dtype!r} is not {PAYLOAD_DTYPE!r}")
    if tuple(array.shape) != (len(array.data),):
        raise TransportError(f"shape {tuple(array.shape)} does not match "
                             f"{len(array.data)} payload bytes")
    return array.data


def unwrap_payloads(record: ArrayRecord) -> dict[str, bytes]:
    """Every layer's payload, in the record's order; TransportError names the bad layer."""
    payloads = {}
    for name, array in record.items():
        try:
            payloads[name] = unwrap_payload(array)
        except TransportError as err:
            raise TransportError(f"layer {name!r}: {err}") from None
    return payloads


def payload_bytes(record: ArrayRecord) -> int:
    """Bytes of all payload Arrays in ``record`` (other Arrays are not counted)."""
    return sum(len(array.data) for array in record.values() if is_payload(array))

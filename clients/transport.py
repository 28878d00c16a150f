"""Client half of the payload transport: flrd message bytes into a Flower Array.

A message travels as ``Array(dtype="uint8", shape=(len(payload),), stype="flrd.codec",
data=payload)`` named ``flrd.update`` in the reply's ArrayRecord, so
``ArrayRecord.count_bytes()`` counts exactly the message bytes plus that name. The
strategy side (``flrd.strategies.transport``) unwraps it.

Example:
    >>> record = wrap_payloads({"flrd.update": b"abc"})
    >>> record.count_bytes() == 3 + len("flrd.update")
    True
"""

from __future__ import annotations

from collections.abc import Mapping

from flwr.app import Array, ArrayRecord

from flrd.protocol import PAYLOAD_DTYPE, PAYLOAD_STYPE

__all__ = ["wrap_payload", "wrap_payloads"]


def wrap_payload(payload: bytes) -> Array:
    """One payload as a Flower Array (Flower wants ``shape`` as a tuple).

    Example:
        >>> wrap_payload(b"xyz").shape
        (3,)
    """
    return Array(dtype=PAYLOAD_DTYPE, shape=(len(payload),), stype=PAYLOAD_STYPE,
                 data=bytes(payload))


def wrap_payloads(payloads: Mapping[str, bytes]) -> ArrayRecord:
    """An ArrayRecord holding one wrapped payload per entry, in the mapping's order."""
    return ArrayRecord({name: wrap_payload(payload) for name, payload in payloads.items()})

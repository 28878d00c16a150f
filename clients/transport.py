"""Client half of the payload transport: codec bytes into Flower Arrays.

A payload travels as ``Array(dtype="uint8", shape=(len(payload),), stype="flrd.codec",
data=payload)``, so ``ArrayRecord.count_bytes()`` counts exactly the payload bytes plus
the layer names. The strategy side (``flrd.strategies.transport``) unwraps it.

Example:
    >>> record = wrap_payloads({"fc.weight": b"abc", "fc.bias": b"de"})
    >>> record.count_bytes() == 5 + len("fc.weight") + len("fc.bias")
    True
"""

from __future__ import annotations

from collections.abc import Mapping

from flwr.app import Array, ArrayRecord

from flrd.protocol import PAYLOAD_DTYPE, PAYLOAD_STYPE

__all__ = ["wrap_payload", "wrap_payloads"]


def wrap_payload(payload: bytes) -> Array:
    """One codec payload as a Flower Array (no copy; Flower wants ``shape`` as a tuple).

    Example:
        >>> wrap_payload(b"xyz").shape
        (3,)
    """
    return Array(dtype=PAYLOAD_DTYPE, shape=(len(payload),), stype=PAYLOAD_STYPE,
                 data=bytes(payload))


def wrap_payloads(payloads: Mapping[str, bytes]) -> ArrayRecord:
    """An ArrayRecord holding one wrapped payload per layer, in the mapping's order."""
    return ArrayRecord({name: wrap_payload(payload) for name, payload in payloads.items()})

"""Decode train replies into client updates, rejecting anything that cannot be trusted.

:class:`UpdateDecoder` turns one client's payloads into arrays; it receives
:class:`SideInformation` (the global model sent this round, the previous global update,
the updates already decoded this round) so that a decoder exploiting correlation
between clients, e.g. distributed source coding, can replace it without touching the
strategy. :func:`decode_reply` wraps it with every check a reply must pass before it
may touch the aggregate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, Message

from flrd import codecs
from flrd.policy import RoundPlan
from flrd.protocol import AUDIT_RECORD, METRICS_RECORD, CompressionReport, CompressionRequest

from .transport import TransportError, payload_bytes, unwrap_payloads

__all__ = [
    "ClientUpdate",
    "DecodedRound",
    "RejectedReply",
    "SentRound",
    "SideInformation",
    "UpdateDecoder",
    "decode_reply",
    "reply_payload_bytes",
    "reply_report_bytes",
]

Arrays = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class SideInformation:
    """What the server knows when it decodes one client's payloads.

    Attributes:
        server_round: the round being aggregated.
        global_arrays: the model sent to the clients this round, by layer.
        previous_update: last round's applied global update (None in the first round
            and after a restart).
        decoded: updates of this round decoded so far, in arrival order.
    """

    server_round: int
    global_arrays: Arrays
    previous_update: Arrays | None
    decoded: Sequence[Arrays]


class UpdateDecoder:
    """Decodes each layer on its own with :func:`flrd.codecs.decode`.

    Subclass and override :meth:`decode` to use side information. Raise
    ``flrd.codecs.CodecError`` for payloads that cannot be decoded.

    Example:
        >>> import numpy as np
        >>> from flrd.codecs import get
        >>> side = SideInformation(1, {"w": np.zeros(3)}, None, [])
        >>> payload = get("float32").encode(np.ones(3, np.float32))
        >>> UpdateDecoder().decode({"w": payload}, side)["w"].tolist()
        [1.0, 1.0, 1.0]
    """

    def __init__(self, max_elements: int = 2**28) -> None:
        self.max_elements = max_elements

    def decode(self, payloads: Mapping[str, bytes], side: SideInformation) -> dict[str, np.ndarray]:
        """Decoded update of one client, by layer."""
        del side  # layer-wise decoding needs none
        return {name: codecs.decode(payload, max_elements=self.max_elements)
                for name, payload in payloads.items()}


class RejectedReply(ValueError):
    """A reply that must not enter the aggregate; the message says why."""


@dataclass(frozen=True)
class ClientUpdate:
    """One accepted reply, decoded.

    Attributes:
        node_id: the sender.
        update: decoded update by layer, float64, shaped like the global model.
        report: the client's own measurements (m2, realized noise, examples).
        payload_bytes: bytes of payload received.
        noise_var: the per-layer noise target this client was sent (None in rate mode).
        exact: the exact update in audit mode, else None.
    """

    node_id: int
    update: dict[str, np.ndarray]
    report: CompressionReport
    payload_bytes: int
    noise_var: np.ndarray | None
    exact: dict[str, np.ndarray] | None


@dataclass(frozen=True)
class SentRound:
    """What ``RateControl.attach_requests`` sent; aggregation checks replies against it."""

    server_round: int
    plan: RoundPlan
    global_arrays: Arrays
    requests: dict[int, CompressionRequest]
    targets: dict[int, np.ndarray | None]


@dataclass
class DecodedRound:
    """The outcome of ``RateControl.decode_replies``.

    ``updates[i]`` came in ``replies[i]``; ``uplink_bytes`` counts the payload of every
    reply that arrived, accepted or not; ``report_bytes`` the ``flrd.metrics`` records
    (per-layer ``m2``/``qnoise``) that travelled beside them. ``seconds`` times flrd's server work on the
    round: decoding here, plus the policy's estimation once observed.
    """

    sent: SentRound
    updates: list[ClientUpdate] = field(default_factory=list)
    replies: list[Message] = field(default_factory=list)
    uplink_bytes: int = 0
    report_bytes: int = 0
    num_replies: int = 0
    num_failed: int = 0
    num_rejected: int = 0
    decode_seconds: float = 0.0
    estimate_seconds: float = 0.0


def reply_payload_bytes(reply: Message) -> int:
    """Payload bytes a reply carried (0 for error replies and non-flrd Arrays)."""
    if reply.has_error():
        return 0
    return sum(payload_bytes(record) for key, record in reply.content.array_records.items()
               if key != AUDIT_RECORD)


def reply_report_bytes(reply: Message) -> int:
    """Bytes of the reply's ``flrd.metrics`` record (0 if it has none)."""
    if reply.has_error() or METRICS_RECORD not in reply.content.metric_records:
        return 0
    return reply.content.metric_records[METRICS_RECORD].count_bytes()


def decode_reply(reply: Message, decoder: UpdateDecoder, side: SideInformation,
                 noise_var: np.ndarray | None) -> ClientUpdate:
    """Check and decode one (non-error) train reply; RejectedReply says what is wrong."""
    content = reply.content
    if (metrics := content.metric_records.get(METRICS_RECORD)) is None:
        raise RejectedReply(f"no {METRICS_RECORD!r} record (is compression_mod installed?)")
    records = [r for key, r in content.array_records.items() if key != AUDIT_RECORD]
    if len(records) != 1:
        raise RejectedReply(f"expected one payload ArrayRecord, got {len(records)}")
    layers = list(side.global_arrays)
    if list(records[0].keys()) != layers:
        raise RejectedReply("payload layers differ from the global model's")
    try:
        payloads = unwrap_payloads(records[0])
        report = CompressionReport.from_metrics(metrics, len(layers))
    except (TransportError, ValueError) as err:
        raise RejectedReply(str(err)) from None
    received = sum(map(len, payloads.values()))
    if report.payload_bits != 8 * received:
        raise RejectedReply(f"reports {report.payload_bits} payload bits, sent {8 * received}")
    try:
        update = decoder.decode(payloads, side)
    except codecs.CodecError as err:
        raise RejectedReply(f"undecodable payload: {err}") from None
    exact = _audit(content.array_records.get(AUDIT_RECORD), side.global_arrays)
    return ClientUpdate(reply.metadata.src_node_id, _checked(update, side.global_arrays),
                        report, received, noise_var, exact)


def _checked(update: Mapping[str, np.ndarray], reference: Arrays) -> dict[str, np.ndarray]:
    if list(update) != list(reference):
        raise RejectedReply("decoded layers differ from the global model's")
    checked = {}
    for name, values in update.items():
        values = np.asarray(values, dtype=np.float64)
        if values.shape != np.shape(reference[name]):
            raise RejectedReply(f"layer {name!r}: decoded shape {values.shape} != "
                                f"model shape {np.shape(reference[name])}")
        if not np.all(np.isfinite(values)):
            raise RejectedReply(f"layer {name!r}: decoded update is not finite")
        checked[name] = values
    return checked


def _audit(record: ArrayRecord | None, reference: Arrays) -> dict[str, np.ndarray] | None:
    if record is None:
        return None
    try:
        exact = {name: array.numpy() for name, array in record.items()}
    except (TypeError, ValueError, EOFError, OSError) as err:  # whatever np.load raises
        raise RejectedReply(f"unreadable audit record: {err}") from None
    return _checked(exact, reference)

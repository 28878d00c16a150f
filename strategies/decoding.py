"""Decode train replies into client updates, rejecting anything that cannot be trusted.

A reply carries one flrd message (:mod:`flrd.codecs.message`); the server decodes it
with the request it sent to that node. :class:`UpdateDecoder` turns one client's
message into arrays and statistics; it receives
:class:`SideInformation` (the global model sent this round, the previous global update,
the updates already decoded this round) so that a decoder exploiting correlation
between clients, e.g. distributed source coding, can replace it without touching the
strategy. :func:`decode_reply` wraps it with every check a reply must pass before it
may touch the aggregate.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from flwr.app import ArrayRecord, Message, RecordDict

from flrd import codecs
from flrd.codecs.message import DecodedUpdate, decode_update
from flrd.policy import RoundPlan
from flrd.protocol import (
    AUDIT_RECORD,
    ENCODE_SECONDS,
    MESSAGE_ARRAY,
    METRICS_RECORD,
    NUM_EXAMPLES,
    CompressionReport,
    CompressionRequest,
)

from .transport import TransportError, payload_bytes, unwrap_payload

__all__ = [
    "ClientUpdate",
    "DecodedRound",
    "DeferredReply",
    "RejectedReply",
    "SentRound",
    "SideInformation",
    "UpdateDecoder",
    "decode_reply",
    "reply_payload_bytes",
    "reply_record_bytes",
    "reply_report_bytes",
]

Arrays = Mapping[str, np.ndarray]
STATISTIC_SPREAD = 100.0  # a transmitted m2 this far above what the update explains is refused
_TINY = 1e-30  # all-zero layers: zero statistics
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class SideInformation:
    """What the server knows when it decodes one client's payloads.

    Attributes:
        server_round: the round being aggregated.
        global_arrays: the model sent to the clients this round, by layer.
        previous_update: last round's applied global update (None in the first round
            and after a restart).
        decoded: updates of this round decoded so far, in arrival order.
        request: what this client was asked to send (needed to decode; the strategy
            passes ``decoded.sent.requests[node_id]``).
        node_id: the sender (its seeds derive from it).
        decoded_nodes: the senders of ``decoded``, in the same order.
    """

    server_round: int
    global_arrays: Arrays
    previous_update: Arrays | None
    decoded: Sequence[Arrays]
    request: CompressionRequest | None = None
    node_id: int = 0
    decoded_nodes: Sequence[int] = ()


class UpdateDecoder:
    """Decodes a message with :func:`flrd.codecs.message.decode_update`.

    Subclass and override :meth:`decode` to use side information. Raise
    ``flrd.codecs.CodecError`` for payloads that cannot be decoded. Work and memory
    are bounded by the layer sizes of the global model (the server's own layout).

    Example:
        >>> import numpy as np
        >>> from flrd.codecs.message import encode_update
        >>> request = CompressionRequest(codec="float32")
        >>> payload = encode_update({"w": np.ones(3, np.float32)}, request, node_id=1).payload
        >>> side = SideInformation(1, {"w": np.zeros(3)}, None, [], request, node_id=1)
        >>> UpdateDecoder().decode(payload, side).arrays["w"].tolist()
        [1.0, 1.0, 1.0]
    """

    def decode(self, payload: bytes, side: SideInformation) -> DecodedUpdate:
        """Decoded update of one client, by layer, with its transmitted statistics."""
        if side.request is None:
            raise codecs.CodecError("no request known for this reply: cannot decode")
        layout = {name: np.shape(values) for name, values in side.global_arrays.items()}
        return decode_update(payload, side.request, node_id=side.node_id, layout=layout)


class RejectedReply(ValueError):
    """A reply that must not enter the aggregate; the message says why."""


class DeferredReply(Exception):
    """A reply the decoder cannot decode yet (e.g. its side information is still too
    weak); the strategy retries it once the round's other replies are in."""


@dataclass(frozen=True)
class ClientUpdate:
    """One accepted reply, decoded.

    Attributes:
        node_id: the sender.
        update: decoded update by layer, float64, shaped like the global model.
        report: m2 (transmitted), expected noise, examples, encode time, and the
            message's framing and statistics bytes.
        payload_bytes: bytes of payload received (the whole message).
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
    """What ``RateControl.configure_train`` sent; aggregation checks replies against it."""

    server_round: int
    plan: RoundPlan
    global_arrays: Arrays
    requests: dict[int, CompressionRequest]
    targets: dict[int, np.ndarray | None]


@dataclass
class DecodedRound:
    """One round's decoded replies, as ``RateControl.aggregate_train`` collects them.

    ``updates[i]`` came in ``replies[i]``; ``uplink_bytes`` counts the payload of every
    reply that arrived, accepted or not (statistics travel inside it); ``report_bytes``
    the ``flrd.metrics`` records (the clients' encode time) that travelled beside them;
    ``reply_bytes`` every record of every reply as Flower counts it (the app's own
    metrics and Flower's per-record metadata included; the audit record left out). ``excluded``
    counts the replies left out, by kind. ``*_seconds`` time flrd's server work on the
    round: decoding, and the policy's estimation once observed.
    """

    sent: SentRound
    updates: list[ClientUpdate] = field(default_factory=list)
    replies: list[Message] = field(default_factory=list)
    uplink_bytes: int = 0
    report_bytes: int = 0
    reply_bytes: int = 0
    excluded: Counter[str] = field(default_factory=Counter)
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


def reply_record_bytes(reply: Message) -> int:
    """Bytes of every record in the reply as Flower's ``count_bytes`` counts them, except
    the audit record (a measurement aid that no deployment sends)."""
    if reply.has_error():
        return 0
    return sum(record.count_bytes() for key, record in reply.content.items() if key != AUDIT_RECORD)


def reply_report_bytes(reply: Message) -> int:
    """Bytes of the reply's ``flrd.metrics`` record (0 if it has none)."""
    if reply.has_error() or METRICS_RECORD not in reply.content.metric_records:
        return 0
    return reply.content.metric_records[METRICS_RECORD].count_bytes()


def decode_reply(reply: Message, decoder: UpdateDecoder, side: SideInformation,
                 noise_var: np.ndarray | None, request: CompressionRequest | None = None) -> ClientUpdate:
    """Check and decode one (non-error) train reply; RejectedReply says what is wrong.

    ``request`` (or ``side.request``) is what the server sent to the reply's node.
    """
    content = reply.content
    node_id = reply.metadata.src_node_id
    request = request if request is not None else side.request
    if request is None:
        raise RejectedReply("no request known for this node: cannot decode its reply")
    side = replace(side, request=request, node_id=node_id)
    if AUDIT_RECORD in content.array_records and not request.audit:
        # Never read: a forged exact update would otherwise feed the estimates.
        raise RejectedReply(f"an {AUDIT_RECORD!r} record the server did not ask for")
    records = [r for key, r in content.array_records.items() if key != AUDIT_RECORD]
    if len(records) != 1:
        raise RejectedReply(f"expected one payload ArrayRecord, got {len(records)}")
    if list(records[0].keys()) != [MESSAGE_ARRAY]:
        raise RejectedReply(f"the payload record must hold exactly {MESSAGE_ARRAY!r} "
                            "(is compression_mod installed?)")
    try:
        payload = unwrap_payload(records[0][MESSAGE_ARRAY])
    except TransportError as err:
        raise RejectedReply(str(err)) from None
    try:
        decoded = decoder.decode(payload, side)
    except codecs.CodecError as err:
        raise RejectedReply(f"undecodable payload: {err}") from None
    report = CompressionReport(
        payload_bits=8 * len(payload), m2=tuple(decoded.m2), qnoise=tuple(decoded.noise_var),
        num_examples=_num_examples(content), encode_seconds=_encode_seconds(content),
        framing_bytes=decoded.framing_bytes, stats_bytes=decoded.stats_bytes,
    )
    arrays = _checked(decoded.arrays, side.global_arrays)
    if problem := _statistics_problem(arrays, decoded.m2, decoded.noise_var):
        raise RejectedReply(problem)
    exact = _audit(content.array_records.get(AUDIT_RECORD), side.global_arrays)
    return ClientUpdate(node_id, arrays, report, len(payload), noise_var, exact)


def _num_examples(content: RecordDict) -> float:
    """The app's own ``num-examples`` (1.0 if absent or invalid)."""
    for key, record in content.metric_records.items():
        value = record.get(NUM_EXAMPLES)
        if key != METRICS_RECORD and _is_number(value) and math.isfinite(value) and value > 0:
            return float(value)
    return 1.0


def _encode_seconds(content: RecordDict) -> float:
    value = content.metric_records.get(METRICS_RECORD, {}).get(ENCODE_SECONDS, 0.0)
    return float(value) if _is_number(value) and math.isfinite(value) and value >= 0 else 0.0


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _checked(update: Mapping[str, np.ndarray], reference: Arrays) -> dict[str, np.ndarray]:
    if list(update) != list(reference):
        raise RejectedReply("decoded layers differ from the global model's")
    checked = {}
    for name, values in update.items():
        values = np.asarray(values, dtype=np.float64)
        if values.shape != np.shape(reference[name]):
            raise RejectedReply(f"layer {name!r}: decoded shape {values.shape} != "
                                f"model shape {np.shape(reference[name])}")
        # Decoders clip non-finite values to the dtype's range: float32's limit is Inf too.
        if not np.all(np.abs(values) < _FLOAT32_MAX):
            raise RejectedReply(f"layer {name!r}: decoded update is not finite")
        checked[name] = values
    return checked


def _statistics_problem(arrays: Mapping[str, np.ndarray], m2: Sequence[float],
                        noise_var: Sequence[float]) -> str | None:
    """Why a transmitted ``m2`` cannot belong to the decoded update, or None.

    For every codec the decoded mean square lies within ``m2 +- noise`` (unbiased codecs
    add the noise, biased ones such as sign or top-k remove it), so an ``m2`` more than
    ``STATISTIC_SPREAD`` times what the decoded update and its noise explain was forged.
    """
    for (name, values), layer_m2, layer_noise in zip(arrays.items(), m2, noise_var, strict=True):
        power = float(np.mean(np.square(values))) if values.size else 0.0
        if not math.isfinite(layer_m2) or layer_m2 > STATISTIC_SPREAD * (power + layer_noise) + _TINY:
            return (f"layer {name!r}: transmitted m2 {layer_m2:.3g} does not fit the decoded "
                    f"update (mean square {power:.3g}, noise {layer_noise:.3g})")
    return None


def _audit(record: ArrayRecord | None, reference: Arrays) -> dict[str, np.ndarray] | None:
    if record is None:
        return None
    try:
        exact = {name: array.numpy() for name, array in record.items()}
    except (TypeError, ValueError, EOFError, OSError) as err:  # whatever np.load raises
        raise RejectedReply(f"unreadable audit record: {err}") from None
    return _checked(exact, reference)

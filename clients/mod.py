"""``compression_mod``: a Flower client mod that sends compressed model updates.

Add it to any ClientApp whose train function returns new weights::

    app = ClientApp(mods=[compression_mod])

On a train message whose ConfigRecord carries ``flrd.`` keys (see
:mod:`flrd.protocol`), the mod lets the app train, computes the update
``new - received`` weights (sent as float32), encodes the whole update into one
flrd message (:mod:`flrd.codecs.message`: statistics travel inside it) and replaces
the reply's ArrayRecord (same record name) with one payload Array named
:data:`~flrd.protocol.MESSAGE_ARRAY`. Only when asked does it add the MetricRecord
``"flrd.metrics"``: the encode time in audit mode, the node's link key when the
request names one (both counted as report bytes); ``num-examples`` stays in the app's
own metrics. In audit mode the exact update
travels as ArrayRecord ``"flrd.exact-update"``, and a client asked for Wyner-Ziv layers
also reports the size of the same update coded independently
(:data:`~flrd.protocol.INDEPENDENT_BITS`). Error-feedback
residuals persist in ``context.state["flrd.error-feedback"]``. Messages of other types,
and train messages without ``flrd.`` keys, pass through untouched.

Failures (ill-formed config, replies the mod cannot read, non-finite updates, codec
settings the data cannot meet: any exception of the compression step) come back as
error replies with code ``MOD_FAILED_PRECONDITION`` and a reason naming the cause, so
the ClientApp never crashes on them and the server never receives a half-compressed
update.
"""

from __future__ import annotations

from dataclasses import replace
from logging import WARNING

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Error, Message, MessageType, MetricRecord
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import log
from flwr.common.constant import ErrorCode

from flrd.protocol import (
    AUDIT_RECORD,
    ENCODE_SECONDS,
    INDEPENDENT_BITS,
    LINK_KEY,
    MESSAGE_ARRAY,
    METRICS_RECORD,
    NUM_EXAMPLES,
    CompressionRequest,
)

from .compress import Residuals, compress_update
from .transport import wrap_payload

__all__ = ["EF_STATE_RECORD", "compression_mod"]

EF_STATE_RECORD = "flrd.error-feedback"
_SEP = "/"  # state key = "<layer>/<error-feedback state name>"


def compression_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Compress the update in the reply to a train message (see the module docstring).

    Example:
        >>> from flwr.clientapp import ClientApp
        >>> app = ClientApp(mods=[compression_mod])
    """
    if msg.metadata.message_type.split(".", 1)[0] != MessageType.TRAIN:
        return call_next(msg, context)
    try:
        request = _read_request(msg)
    except Exception as err:  # noqa: BLE001 -- any bad config becomes an error reply
        return _error_reply(msg, f"ill-formed flrd config: {_describe(err)}")
    if request is None:
        return call_next(msg, context)
    if len(msg.content.array_records) != 1:
        return _error_reply(msg, "the train message must carry exactly one ArrayRecord, "
                                 f"got {len(msg.content.array_records)}")
    # Copy the received weights now: the app may modify the message content in place.
    received = {k: v.numpy() for k, v in next(iter(msg.content.array_records.values())).items()}
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    try:
        _compress_reply(reply, request, received, context)
    except Exception as err:  # noqa: BLE001 -- the ClientApp must not crash on codec settings
        return _error_reply(msg, f"cannot compress the update: {_describe(err)}")
    return reply


def _describe(err: Exception) -> str:
    """ValueErrors carry flrd's own reasons; anything else also names its type."""
    return str(err) if type(err) in (ValueError, TypeError) else f"{type(err).__name__}: {err}"


def _read_request(msg: Message) -> CompressionRequest | None:
    requests = [r for r in (CompressionRequest.from_config(c)
                            for c in msg.content.config_records.values()) if r is not None]
    if len(requests) > 1:
        raise ValueError("flrd keys appear in more than one ConfigRecord")
    return requests[0] if requests else None


def _compress_reply(reply: Message, request: CompressionRequest,
                    received: dict[str, np.ndarray], context: Context) -> None:
    records = reply.content.array_records
    if len(records) != 1:
        raise ValueError(f"the reply must carry exactly one ArrayRecord, got {len(records)}")
    key, trained = next(iter(records.items()))
    if list(trained.keys()) != list(received):
        raise ValueError("the reply's layer names differ from the received ones")
    update = {name: _difference(trained[name], received[name], name) for name in received}
    residuals = _load_residuals(context) if request.error_feedback else None
    out = compress_update(update, request, node_id=context.node_id,
                          num_examples=_num_examples(reply), residuals=residuals)
    if request.error_feedback:
        _store_residuals(context, out.residuals)
    reply.content[key] = ArrayRecord({MESSAGE_ARRAY: wrap_payload(out.payload)})
    independent = None
    if request.audit and request.wyner_ziv is not None:  # both costs, measured on the same update
        independent = 8 * len(compress_update(update, replace(request, wyner_ziv=None),
                                              node_id=context.node_id).payload)
    if report := _report(request, out.report.encode_seconds, context, independent):
        reply.content[METRICS_RECORD] = report
    if request.audit:
        reply.content[AUDIT_RECORD] = ArrayRecord({n: Array(g) for n, g in update.items()})


def _report(request: CompressionRequest, encode_seconds: float, context: Context,
            independent_bits: int | None = None) -> MetricRecord | None:
    """What travels beside the payload, only when asked: the encode time and, for a
    Wyner-Ziv request, the independent encoding's size (audit mode), and the node's
    link key (``request.link_key``)."""
    values: dict[str, int | float] = {}
    if request.audit:
        values[ENCODE_SECONDS] = float(encode_seconds)
    if independent_bits is not None:
        values[INDEPENDENT_BITS] = independent_bits
    if request.link_key is not None:
        key = context.node_config.get(request.link_key)
        if isinstance(key, bool) or not isinstance(key, int):
            raise ValueError(f"node config {request.link_key!r} must be an integer, got {key!r}")
        values[LINK_KEY] = key
    return MetricRecord(values) if values else None


def _difference(trained: Array, received: np.ndarray, name: str) -> np.ndarray:
    new = trained.numpy()
    if new.shape != received.shape:
        raise ValueError(f"layer {name!r}: shape {new.shape} != sent {received.shape}")
    if not (np.issubdtype(new.dtype, np.number) and np.issubdtype(received.dtype, np.number)):
        raise ValueError(f"layer {name!r}: dtype {new.dtype} is not numeric")
    # Subtract in float64 so float32 weights give the exact float32 update.
    with np.errstate(all="ignore"):  # overflow shows up as non-finite, named below
        update = (new.astype(np.float64) - received.astype(np.float64)).astype(np.float32)
    if not np.isfinite(update).all():
        raise ValueError(f"non-finite update in layer {name!r}")
    return update


def _num_examples(reply: Message) -> float:
    for record in reply.content.metric_records.values():
        value = record.get(NUM_EXAMPLES)
        if isinstance(value, int | float) and value > 0:
            return float(value)
    return 1.0


def _load_residuals(context: Context) -> Residuals:
    record = context.state.array_records.get(EF_STATE_RECORD, ArrayRecord())
    residuals: dict[str, dict[str, np.ndarray]] = {}
    for key, array in record.items():
        layer, _, name = key.rpartition(_SEP)
        residuals.setdefault(layer, {})[name] = array.numpy()
    return residuals


def _store_residuals(context: Context, residuals: Residuals) -> None:
    context.state[EF_STATE_RECORD] = ArrayRecord({
        f"{layer}{_SEP}{name}": Array(np.asarray(value))
        for layer, state in residuals.items() for name, value in state.items()
    })


def _error_reply(msg: Message, reason: str) -> Message:
    log(WARNING, "compression_mod: %s", reason)
    return Message(Error(code=ErrorCode.MOD_FAILED_PRECONDITION, reason=reason), reply_to=msg)

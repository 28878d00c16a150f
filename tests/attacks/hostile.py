"""Hostile replies, crafted as a client would: through the real message format.

Each kind is a function ``kind(reply, ctx)`` that rewrites a compressed train reply in
place. ``ctx`` holds what a client knows: the request it was sent, its node id, the
layer layout and its own honest update. Payloads that must pass the 16-bit check are
built with :func:`flrd.codecs.message.encode_update` or framed with the real check,
which is an integrity code, not a secret: a hostile client can always compute it.
Used by ``tests/attacks`` and ``bench/bench_attacks.py``.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np
from flwr.app import Array, ArrayRecord, Message

from flrd.clients.transport import wrap_payload
from flrd.codecs import message as wire
from flrd.codecs.header import Header, pack_payload
from flrd.codecs.stats import ABS_GRID, abs_bytes
from flrd.protocol import AUDIT_RECORD, MESSAGE_ARRAY, CompressionRequest


@dataclass(frozen=True)
class Context:
    """What the hostile client knows when it crafts its reply."""

    request: CompressionRequest
    node_id: int
    layout: dict[str, tuple[int, ...]]
    update: dict[str, np.ndarray]  # its honest update (float64)


Kind = Callable[[Message, Context], None]


def payload_of(reply: Message) -> bytes:
    """The message bytes of a compressed reply."""
    return bytes(_record(reply)[MESSAGE_ARRAY].data)


def set_payload(reply: Message, payload: bytes) -> None:
    reply.content[_key(reply)] = ArrayRecord({MESSAGE_ARRAY: wrap_payload(payload)})


def frame(ctx: Context, rest: bytes, family: int = 0) -> bytes:
    """A message with a valid check for ``ctx``'s request and node around ``rest``."""
    context = wire._context(ctx.request, ctx.node_id, list(ctx.layout.values()))
    return bytes([wire.VERSION << 4 | family]) + wire._check(context, rest) + rest


@contextlib.contextmanager
def forged_statistics(factor: float) -> Iterator[None]:
    """While open, ``encode_update`` transmits every statistic ``factor`` times too large
    (clipped to the grid): the stream is coded for the forged plan, so the bit count
    matches the statistic."""
    honest = wire.round_to_grid

    def forged(grid: np.ndarray, value: float, u: float) -> int:
        return min(int(grid.size) - 1, honest(grid, value * factor, u))

    wire.round_to_grid = forged
    try:
        yield
    finally:
        wire.round_to_grid = honest


def baseline_message(ctx: Context, blocks: list[bytes], m2: float = 1e-4) -> bytes:
    """A message for a baseline-codec request (e.g. float32) from hand-made blocks."""
    stats = b"".join(abs_bytes(int(np.searchsorted(ABS_GRID, m2))) * 2 for _ in blocks)
    body = b"".join(wire._varint(len(b)) + b for b in blocks)
    return frame(ctx, stats + body)


def float32_block(ctx: Context, index: int, values: np.ndarray,
                  shape: tuple[int, ...] | None = None) -> bytes:
    """A float32 codec block with the layer's seed, any values and any declared shape."""
    values = np.asarray(values, dtype="<f4").reshape(-1)
    seed = wire.layer_seed(ctx.request.seed, ctx.node_id, index)
    header = Header(1, np.dtype(np.float32), shape if shape is not None else values.shape, seed, ())
    return pack_payload(header, [values.tobytes()])


# ---------------------------------------------------------------- payload kinds
def flip_byte(reply: Message, ctx: Context) -> None:
    data = bytearray(payload_of(reply))
    data[len(data) // 2] ^= 0x40
    set_payload(reply, bytes(data))


def truncate(reply: Message, ctx: Context) -> None:
    set_payload(reply, payload_of(reply)[: max(1, len(payload_of(reply)) // 2)])


def rename_array(reply: Message, ctx: Context) -> None:
    reply.content[_key(reply)] = ArrayRecord({"weights": _record(reply)[MESSAGE_ARRAY]})


def extra_array(reply: Message, ctx: Context) -> None:
    record = _record(reply)
    reply.content[_key(reply)] = ArrayRecord({MESSAGE_ARRAY: record[MESSAGE_ARRAY],
                                              "extra": wrap_payload(b"\x00" * 16)})


def missing_array(reply: Message, ctx: Context) -> None:
    reply.content[_key(reply)] = ArrayRecord()


def plain_weights(reply: Message, ctx: Context) -> None:
    reply.content[_key(reply)] = ArrayRecord({n: Array(np.zeros(s, np.float32))
                                              for n, s in ctx.layout.items()})


def replay_other_node(reply: Message, ctx: Context) -> None:
    """A valid message of another node (same round, same request)."""
    set_payload(reply, wire.encode_update(ctx.update, ctx.request, node_id=ctx.node_id + 1).payload)


def replay_earlier_round(reply: Message, ctx: Context) -> None:
    """A valid message of this node for another round seed."""
    old = replace(ctx.request, seed=(ctx.request.seed + 1) % 2**64)
    set_payload(reply, wire.encode_update(ctx.update, old, node_id=ctx.node_id).payload)


def float32_for_dithered(reply: Message, ctx: Context) -> None:
    """A float32 message where the request asked for another codec, framed with the
    check of the real request (so only the format can betray it)."""
    plain = CompressionRequest(codec="float32", seed=ctx.request.seed)
    sent = wire.encode_update(ctx.update, plain, node_id=ctx.node_id).payload
    set_payload(reply, frame(ctx, sent[wire.FRAMING_BYTES:], sent[0] & 1))


def huge_values(reply: Message, ctx: Context) -> None:
    """A valid message of an update 1e6 times the honest one (values up to ~1e4 here)."""
    big = {n: 1e6 * v for n, v in ctx.update.items()}
    set_payload(reply, wire.encode_update(big, ctx.request, node_id=ctx.node_id).payload)


def forged_m2(reply: Message, ctx: Context) -> None:
    """A valid message whose statistics say 1e6 times the true m2 (refused as forged)."""
    with forged_statistics(1e6):
        set_payload(reply, wire.encode_update(ctx.update, ctx.request, node_id=ctx.node_id).payload)


def inflated_m2(reply: Message, ctx: Context) -> None:
    """Statistics 30 times the truth: plausible enough to pass, left to the robust estimates."""
    with forged_statistics(30.0):
        set_payload(reply, wire.encode_update(ctx.update, ctx.request, node_id=ctx.node_id).payload)


def noisy_update(reply: Message, ctx: Context) -> None:
    """A valid message, honest statistics, of the update plus noise of 30x its power:
    under the outlier screen, so it is aggregated, and far noisier than its noise
    target says."""
    rng = np.random.default_rng(ctx.node_id)
    noisy = {n: v + rng.normal(0.0, np.sqrt(30.0 * np.mean(v**2) + 1e-30), v.shape) for n, v in ctx.update.items()}
    set_payload(reply, wire.encode_update(noisy, ctx.request, node_id=ctx.node_id).payload)


def unrequested_audit(reply: Message, ctx: Context) -> None:
    """A well-formed exact update the server did not ask for (100x the honest one)."""
    reply.content[AUDIT_RECORD] = ArrayRecord({n: Array(100 * v) for n, v in ctx.update.items()})


def huge_audit_header(reply: Message, ctx: Context) -> None:
    """An audit record whose npy header declares 2**41 float64 values."""
    descr = "{'descr': '<f8', 'fortran_order': False, 'shape': (2199023255552,), }"
    descr = descr.ljust(117) + "\n"
    array = Array(np.zeros(1))
    array.__dict__.update(shape=(2**41,), data=b"\x93NUMPY\x01\x00" + struct.pack("<H", len(descr))
                          + descr.encode())
    reply.content[AUDIT_RECORD] = ArrayRecord({n: array for n in ctx.layout})


def string_audit(reply: Message, ctx: Context) -> None:
    reply.content[AUDIT_RECORD] = ArrayRecord({n: Array(np.array(["x"] * 3)) for n in ctx.layout})


# ---------------------------------------------------------------- metric kinds
def _metric(key: str, value: object) -> Kind:
    def kind(reply: Message, ctx: Context) -> None:
        for name, record in reply.content.metric_records.items():
            if not name.startswith("flrd."):
                record[key] = value  # type: ignore[assignment]

    kind.__name__ = f"{key}={value!r}"
    return kind


list_loss = _metric("train_loss", [1.0, 2.0])
nan_loss = _metric("train_loss", float("nan"))
absurd_loss = _metric("train_loss", 1e300)
negative_examples = _metric("num-examples", -5)
zero_examples = _metric("num-examples", 0)
absurd_examples = _metric("num-examples", 1e300)
huge_examples = _metric("num-examples", 2**39)  # under the cap, 1000x the round's median
list_examples = _metric("num-examples", [1.0, 2.0])


#: Every kind that must be left out of the aggregate, named in the round record.
EXCLUDED: dict[str, Kind] = {k.__name__: k for k in (
    flip_byte, truncate, rename_array, extra_array, missing_array, plain_weights,
    replay_other_node, replay_earlier_round, float32_for_dithered, huge_values, forged_m2,
    unrequested_audit, huge_audit_header, string_audit, list_loss, nan_loss,
    negative_examples, zero_examples, absurd_examples, huge_examples, list_examples)}


def _key(reply: Message) -> str:
    return next(k for k in reply.content.array_records if k != AUDIT_RECORD)


def _record(reply: Message) -> ArrayRecord:
    return reply.content.array_records[_key(reply)]

"""One client's whole update as one message, sending only what the server cannot know.

The server knows the request it sent (codec, per-layer noise targets or rate), the
node id, the layer shapes and the round seed, so none of it travels. A message is::

    byte 0      version (high nibble) | family of the dithered layers (bit 0)
    bytes 1-2   16-bit check: CRC32 of the context (request, node, shapes) and of
                every following byte, truncated (a reply decoded against the wrong
                request or corrupted in transit is refused)
    statistics  per layer, in layer order (see below)
    blocks      per baseline-codec layer: varint length + that codec's own payload;
                per exact layer: float32 values
    stream      one range-coded stream holding every dithered layer (small layers
                pooled), to the end of the message

Statistics: a dithered layer with a noise target sends its ``m2/noise_var`` as one
byte (two at SNR >= 2**7.75) on :data:`flrd.codecs.stats.SNR_GRID`; with a relative
target (warm-up) its ``m2`` as two bytes on ``ABS_GRID``; an exact layer sends none
(the server reads m2 off the exact values); a baseline-codec layer sends ``m2`` and
its realized noise as two bytes each. The server's noise figure for a dithered layer
is the codec's expected noise at the transmitted ``m2`` (unbiased over clients).

Framing is 3 bytes per message; statistics 1 byte per dithered layer.

Example:
    >>> import numpy as np
    >>> from flrd.protocol import CompressionRequest
    >>> update = {"w": np.random.default_rng(0).standard_normal((16, 40)), "b": np.ones(16)}
    >>> request = CompressionRequest(codec="dithered", noise_var=(10.0, 10.0), seed=3)
    >>> sent = encode_update(update, request, node_id=5)
    >>> got = decode_update(sent.payload, request, node_id=5, layout={"w": (16, 40), "b": (16,)})
    >>> got.framing_bytes, got.stats_bytes, got.arrays["w"].shape
    (3, 2, (16, 40))
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import constriction
import numpy as np

from flrd.protocol import CompressionRequest

from .base import Codec
from .dithered import (
    Moments,
    Plan,
    decode_layer,
    encode_layer,
    family_from,
    moments,
    plan_layer,
    stat_uniform,
)
from .errors import CodecError
from .header import parse_payload
from .numerics import as_float_array, rms
from .registry import codec_class, decode, get
from .stats import ABS_GRID, SNR_GRID, abs_bytes, read_abs, read_snr, round_to_grid, snr_bytes
from .stratified import stream_bytes, stream_decoder

__all__ = ["DecodedUpdate", "EncodedUpdate", "FRAMING_BYTES", "decode_update", "encode_update", "layer_seed"]

VERSION = 2  # 2: tuple-coded strata, two dithers per Philox word, groups of up to 2**16
FRAMING_BYTES = 3
EXACT_CODEC = "float32"
_U64 = (1 << 64) - 1
_DITHERED, _EXACT, _BASELINE, _WZ = "dithered", "exact", "baseline", "wyner-ziv"


def layer_seed(seed: int, node_id: int, layer_index: int) -> int:
    """Independent 64-bit codec seed per (round seed, node, layer).

    Example:
        >>> layer_seed(1, 2, 0) != layer_seed(1, 3, 0) != layer_seed(1, 2, 1)
        True
    """
    entropy = [seed & _U64, node_id & _U64, layer_index]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])


@dataclass(frozen=True)
class EncodedUpdate:
    """What a client sends, and what it knows about it.

    Attributes:
        payload: the message bytes (all of them travel; 8 x len is the bit count).
        m2: per layer, the exact update's mean square.
        noise_var: per layer, the expected noise (dithered: the codec's formula at the
            exact m2; exact layers 0; baseline codecs their realized noise).
        reconstruction: per layer, what the server will decode (if asked for).
        framing_bytes, stats_bytes, body_bytes: the payload's breakdown.
    """

    payload: bytes
    m2: tuple[float, ...]
    noise_var: tuple[float, ...]
    reconstruction: dict[str, np.ndarray] | None
    framing_bytes: int
    stats_bytes: int
    body_bytes: int


@dataclass(frozen=True)
class DecodedUpdate:
    """What the server gets out of a message.

    Attributes:
        arrays: float64 update by layer, shaped as the layout.
        m2: per layer, the transmitted mean square (exact layers: computed).
        noise_var: per layer, the expected noise at that m2 (0 for exact layers,
            the transmitted realized noise for baseline codecs).
        framing_bytes, stats_bytes, body_bytes: the payload's breakdown.
        pending: Wyner-Ziv layers, by name: their payloads, checked against the
            request, to decode against the server's side information
            (:mod:`flrd.sideinfo`); ``arrays`` lacks them.
        coded: per layer, ``(keep probability, noise variance)`` of the coordinates
            the codec coded: a sparse dithered layer's decoded values are those
            coordinates' ``y + noise`` scaled by ``1/keep``, zero elsewhere.
    """

    arrays: dict[str, np.ndarray]
    m2: tuple[float, ...]
    noise_var: tuple[float, ...]
    framing_bytes: int
    stats_bytes: int
    body_bytes: int
    pending: dict[str, bytes] = field(default_factory=dict)
    coded: tuple[tuple[float, float], ...] = ()


def _kind(request: CompressionRequest, index: int) -> str:
    if request.wyner_ziv is not None and request.wyner_ziv[index] is not None:
        return _WZ
    if request.noise_var is not None and request.noise_var[index] == 0.0:
        return _EXACT  # the protocol's way to ask for an exact layer
    if request.codec == "dithered" and (request.noise_var is not None or request.relative_noise is not None):
        return _DITHERED
    return _BASELINE


def _plan(request: CompressionRequest, index: int, stat: int, family: int) -> Plan:
    """The dithered plan from the statistic index, identical on both sides."""
    if request.noise_var is not None:
        noise_var = request.noise_var[index]
        snr = float(SNR_GRID[stat])
        return plan_layer(noise_var, snr * noise_var, snr, family)
    if request.relative_noise is None:  # _kind() makes no dithered layer without a target
        raise ValueError("a dithered layer needs noise_var or relative_noise in the request")
    rel = float(request.relative_noise)
    m2 = float(ABS_GRID[stat])
    return plan_layer(rel * m2, m2, 1.0 / rel, family)


def _context(request: CompressionRequest, node_id: int, shapes: list[tuple[int, ...]]) -> int:
    text = repr((sorted(request.to_config().items()), int(node_id), shapes))
    return zlib.crc32(text.encode())


def _check(context: int, rest: bytes | memoryview) -> bytes:
    return (zlib.crc32(rest, context) & 0xFFFF).to_bytes(2, "little")


def _stats(name: str, values: Any) -> tuple[Moments, int]:
    """(moments, entropy-model family) of a numpy array or torch tensor, in float64
    without copying the layer to float64 at once.

    Raises ValueError naming the layer when it is not floating point or not finite.
    """
    if hasattr(values, "detach"):
        import torch

        flat, step = values.detach().reshape(-1), 1 << 16
        if not bool(torch.isfinite(flat).all()):
            raise ValueError(f"non-finite update in layer {name!r}")
        parts = [flat[i : i + step].double().abs() for i in range(0, flat.numel(), step)]
        size = max(flat.numel(), 1)
        m = Moments(sum(float((p**2).sum()) for p in parts) / size, sum(float(p.sum()) for p in parts) / size,
                    max((float(p.max()) for p in parts), default=0.0))
    else:
        arr = np.asarray(values)
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"layer {name!r}: dtype {arr.dtype} is not floating point")
        m = moments(as_float_array(arr).reshape(-1))
        if not math.isfinite(m.max_abs):
            raise ValueError(f"non-finite update in layer {name!r}")
    return m, family_from(m.m2, m.mean_abs)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 64, 7):
        if pos >= len(buf):
            raise CodecError("message truncated inside a length")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
    raise CodecError("length varint longer than 64 bits")


def _baseline_codecs(request: CompressionRequest, layers: Mapping[int, np.ndarray]) -> dict[int, Codec]:
    """The codec of every baseline layer; a rate target is met by the layers together."""
    cls = codec_class(request.codec) if layers else None
    if cls is None:
        return {}
    if request.bits is not None:
        return dict(zip(layers, cls.for_bits_jointly(request.bits, list(layers.values()))))
    if request.noise_var is not None:
        return {i: cls.for_noise_var(request.noise_var[i], g) for i, g in layers.items()}
    if request.relative_noise is not None:
        return {i: cls.for_noise_var(request.relative_noise * float(rms(g.reshape(-1))) ** 2, g)
                for i, g in layers.items()}
    return {i: get(request.codec) for i in layers}


def encode_update(update: Mapping[str, Any], request: CompressionRequest, *, node_id: int,
                  reconstruct: bool = False) -> EncodedUpdate:
    """Encode every layer of ``update`` (numpy arrays or torch tensors) as ``request`` asks.

    Raises:
        ValueError: the request does not fit the update, a layer is not finite (the
            message names it), or a noise target is too small for the data.
    """
    names = list(update)
    if request.noise_var is not None and len(request.noise_var) != len(names):
        raise ValueError(f"{len(request.noise_var)} noise targets for {len(names)} layers")
    kinds = [_kind(request, i) for i in range(len(names))]
    stats = [_stats(n, update[n]) for n in names]
    baseline = {i: _numpy(update[n]) for i, n in enumerate(names) if kinds[i] == _BASELINE}
    codecs = _baseline_codecs(request, baseline)
    dithered = [i for i, k in enumerate(kinds) if k == _DITHERED]
    largest = max(dithered, key=lambda i: _numel(update[names[i]]), default=None)
    family = stats[largest][1] if largest is not None else 0
    stat_part, blocks = bytearray(), bytearray()
    encoder = constriction.stream.queue.RangeEncoder()
    m2s: list[float] = []
    noise: list[float] = []
    recon: dict[str, np.ndarray] | None = {} if reconstruct else None
    for i, name in enumerate(names):
        m2, top, values, key = stats[i][0].m2, stats[i][0].max_abs, update[name], layer_seed(request.seed, node_id, i)
        m2s.append(m2)
        if kinds[i] == _EXACT:
            exact = _numpy(values).astype("<f4")
            blocks += exact.tobytes()
            noise.append(float(np.mean((exact.astype(np.float64) - _numpy(values)) ** 2)) if exact.size else 0.0)
            if recon is not None:
                recon[name] = exact.astype(np.float64)
        elif kinds[i] == _WZ:
            if recon is not None:
                raise ValueError(f"layer {name!r}: a Wyner-Ziv layer has no client-side reconstruction "
                                 "(error feedback needs one)")
            payload = _wyner_ziv_payload(_numpy(values), request, i, key)
            stat_part += abs_bytes(round_to_grid(ABS_GRID, m2, stat_uniform(key)))
            blocks += _varint(len(payload)) + payload
            noise.append(request.noise_var[i])  # type: ignore[index]
        elif kinds[i] == _BASELINE:
            g = baseline[i]
            payload, rec = codecs[i].encode_reconstruct(g, seed=key)
            qnoise = float(np.mean((rec.astype(np.float64) - g) ** 2)) if g.size else 0.0
            stat_part += abs_bytes(round_to_grid(ABS_GRID, m2, stat_uniform(key)))
            stat_part += abs_bytes(round_to_grid(ABS_GRID, qnoise, stat_uniform(key ^ 1)))
            blocks += _varint(len(payload)) + payload
            noise.append(qnoise)
            if recon is not None:
                recon[name] = rec.astype(np.float64)
        else:
            if request.noise_var is not None:
                index = round_to_grid(SNR_GRID, m2 / request.noise_var[i], stat_uniform(key))
                stat_part += snr_bytes(index)
            else:
                index = round_to_grid(ABS_GRID, m2, stat_uniform(key))
                stat_part += abs_bytes(index)
            plan = _plan(request, i, index, family)
            if recon is None:
                encode_layer(encoder, values, plan, key, top=top)
            else:
                out = np.empty(_numel(values), np.float64)
                encode_layer(encoder, _numpy(values), plan, key, out=out, top=top)
                recon[name] = out.reshape(np.shape(_numpy(values)))
            noise.append(plan.expected_noise_var(m2))
    stream = stream_bytes(encoder) if dithered else b""
    rest = bytes(stat_part) + bytes(blocks) + stream
    shapes = [tuple(int(s) for s in np.shape(update[n])) for n in names]
    head = bytes([VERSION << 4 | family]) + _check(_context(request, node_id, shapes), rest)
    return EncodedUpdate(head + rest, tuple(m2s), tuple(noise), recon, len(head), len(stat_part),
                         len(blocks) + len(stream))


def decode_update(payload: bytes | memoryview, request: CompressionRequest, *, node_id: int,
                  layout: Mapping[str, tuple[int, ...]]) -> DecodedUpdate:
    """Decode a message from :func:`encode_update`; work and memory stay bounded by
    the layer sizes in ``layout``. Raises only CodecError on malformed payloads."""
    shapes = [tuple(int(s) for s in shape) for shape in layout.values()]
    if request.noise_var is not None and len(request.noise_var) != len(shapes):
        raise ValueError(f"{len(request.noise_var)} noise targets for {len(shapes)} layers")
    try:
        view = memoryview(payload).cast("B")
    except TypeError as err:
        raise CodecError(f"payload must be bytes-like, got {type(payload).__name__}") from err
    try:
        with np.errstate(all="ignore"):
            return _decode(view, request, node_id, dict(zip(layout, shapes)))
    except (CodecError, MemoryError, KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as err:  # anything that slipped past validation (Rust panics included)
        raise CodecError(f"undetected malformed message ({type(err).__name__}: {err})") from err


def _decode(view: memoryview, request: CompressionRequest, node_id: int,
            layout: dict[str, tuple[int, ...]]) -> DecodedUpdate:
    if len(view) < FRAMING_BYTES:
        raise CodecError(f"message too short: {len(view)} bytes")
    if view[0] >> 4 != VERSION or view[0] & 0x0E:
        raise CodecError(f"unsupported message version/flags byte {view[0]:#x}")
    family = view[0] & 1
    if bytes(view[1:3]) != _check(_context(request, node_id, list(layout.values())), view[3:]):
        raise CodecError("check mismatch: corrupted, or decoded against the wrong request/node")
    names, sizes = list(layout), [math.prod(s) for s in layout.values()]
    kinds = [_kind(request, i) for i in range(len(names))]
    # Per layer its statistic indices: dithered (m2 or SNR,), baseline (m2, noise), exact ().
    pos, stat = FRAMING_BYTES, list[tuple[int, ...]]()
    for kind in kinds:
        if kind == _DITHERED and request.noise_var is not None:
            index, pos = read_snr(view, pos)
            stat.append((index,))
        elif kind == _DITHERED:
            index, pos = read_abs(view, pos)
            stat.append((index,))
        elif kind == _BASELINE:
            index, pos = read_abs(view, pos)
            qindex, pos = read_abs(view, pos)
            stat.append((index, qindex))
        elif kind == _WZ:
            index, pos = read_abs(view, pos)
            stat.append((index,))
        else:
            stat.append(())
    stats_bytes = pos - FRAMING_BYTES
    arrays: dict[str, np.ndarray] = {}
    pending: dict[str, bytes] = {}
    coded = [(1.0, 0.0)] * len(names)
    m2s, noise = [0.0] * len(names), [0.0] * len(names)
    for i, name in enumerate(names):
        if kinds[i] == _EXACT:
            if pos + 4 * sizes[i] > len(view):
                raise CodecError(f"layer {name!r}: message truncated inside exact values")
            values = np.frombuffer(view[pos : pos + 4 * sizes[i]], dtype="<f4").astype(np.float64)
            pos += 4 * sizes[i]
            arrays[name] = values.reshape(layout[name])
            m2s[i] = float(np.mean(values**2)) if values.size else 0.0
        elif kinds[i] == _BASELINE:
            length, pos = _read_varint(view, pos)
            if pos + length > len(view):
                raise CodecError(f"layer {name!r}: declared {length} bytes, {len(view) - pos} left")
            block = view[pos : pos + length]
            header, _ = parse_payload(block, sizes[i])
            if header.codec_id != codec_class(request.codec).codec_id or \
                    header.seed != layer_seed(request.seed, node_id, i):
                raise CodecError(f"layer {name!r}: block of codec id {header.codec_id} with another "
                                 f"seed or codec than the {request.codec!r} layer requested")
            values = decode(block, max_elements=sizes[i])
            pos += length
            if values.shape != layout[name]:
                raise CodecError(f"layer {name!r}: shape {values.shape} != {layout[name]}")
            arrays[name] = values.astype(np.float64)
            m2_index, noise_index = stat[i]
            m2s[i], noise[i] = float(ABS_GRID[m2_index]), float(ABS_GRID[noise_index])
            coded[i] = (1.0, noise[i])
        elif kinds[i] == _WZ:
            length, pos = _read_varint(view, pos)
            if pos + length > len(view):
                raise CodecError(f"layer {name!r}: declared {length} bytes, {len(view) - pos} left")
            pending[name] = bytes(view[pos : pos + length])
            _check_wyner_ziv(pending[name], request, i, layer_seed(request.seed, node_id, i), sizes[i], name)
            pos += length
            (m2_index,) = stat[i]
            m2s[i], noise[i] = float(ABS_GRID[m2_index]), request.noise_var[i]  # type: ignore[index]
    decoder = stream_decoder(view[pos:])
    for i, name in enumerate(names):
        if kinds[i] != _DITHERED:
            continue
        (index,) = stat[i]
        if index >= (SNR_GRID.size if request.noise_var is not None else ABS_GRID.size):
            raise CodecError(f"layer {name!r}: statistic index {index} out of range")
        plan = _plan(request, i, index, family)
        arrays[name] = decode_layer(decoder, sizes[i], plan, layer_seed(request.seed, node_id, i)).reshape(layout[name])
        m2s[i], noise[i] = plan.m2, plan.expected_noise_var(plan.m2)
        coded[i] = (plan.keep_prob, plan.quant_noise)
    # Bytes the decoder never reads are not what the request asked for (e.g. another
    # codec's message framed with this request's check).
    if (_DITHERED in kinds and not decoder.maybe_exhausted()) or (_DITHERED not in kinds and pos != len(view)):
        raise CodecError("trailing bytes after the message's last layer")
    ordered = {name: arrays[name] for name in names if name in arrays}
    return DecodedUpdate(ordered, tuple(m2s), tuple(noise), FRAMING_BYTES, stats_bytes,
                         len(view) - FRAMING_BYTES - stats_bytes, pending, tuple(coded))


def _wyner_ziv_payload(values: np.ndarray, request: CompressionRequest, index: int, key: int) -> bytes:
    # Imported here: flrd.sideinfo builds on this package (rate curve, framing size).
    from flrd.sideinfo import wyner_ziv

    layer = request.wyner_ziv[index]  # type: ignore[index]
    assert layer is not None
    return wyner_ziv.encode(values, layer.step, layer.cond_std, key, keep_prob=layer.keep_prob,
                            tail_df=request.wz_tail_df, rates=layer.rates)


def _check_wyner_ziv(payload: bytes, request: CompressionRequest, index: int, seed: int, size: int,
                     name: str) -> None:
    """CodecError unless the payload codes exactly what the request asked (a client
    may not pick a coarser step, another subset or larger syndromes)."""
    from flrd.sideinfo import wyner_ziv

    layer = request.wyner_ziv[index]  # type: ignore[index]
    assert layer is not None
    head = wyner_ziv.parse_header(payload, size)
    asked = (layer.step, layer.cond_std, seed, layer.keep_prob, request.wz_tail_df,
             tuple(float(np.float32(r)) for r in layer.rates))
    if (head.step, head.cond_std, head.seed, head.keep_prob, head.tail_df, head.rates) != asked:
        raise CodecError(f"layer {name!r}: Wyner-Ziv payload parameters differ from the request")


def _numel(values: Any) -> int:
    return int(values.numel()) if hasattr(values, "numel") else int(np.size(values))


def _numpy(values: Any) -> np.ndarray:
    return as_float_array(values) if hasattr(values, "detach") else np.asarray(values)

"""Compress one round's model update layer by layer (numpy and codecs only).

Every layer is sent as a float32 update. The codec parameters come from the
:class:`~flrd.protocol.CompressionRequest`: a per-layer noise-variance target, a rate in
bits per coordinate, or the codec's defaults. The client measures what it sent: the
exact update's mean square ``m2`` and the realized quantization noise ``qnoise``
(``||decode(payload) - g||^2 / n``, against the exact update ``g`` even with error
feedback).

Example:
    >>> import numpy as np
    >>> from flrd.protocol import CompressionRequest
    >>> out = compress_update({"w": np.ones(8, np.float32)},
    ...                       CompressionRequest(codec="float32"), node_id=3)
    >>> out.report.payload_bits == 8 * len(out.payloads["w"]), out.report.qnoise
    (True, (0.0,))
"""

from __future__ import annotations

import time

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from flrd import codecs
from flrd.protocol import CompressionReport, CompressionRequest

__all__ = ["CompressedUpdate", "compress_update", "layer_seed"]

_U64 = (1 << 64) - 1
EXACT_CODEC = "float32"

Residuals = Mapping[str, Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class CompressedUpdate:
    """Payloads in layer order, the report, and the error-feedback state to keep."""

    payloads: dict[str, bytes]
    report: CompressionReport
    residuals: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def layer_seed(seed: int, node_id: int, layer_index: int) -> int:
    """Independent 64-bit codec seed per (round seed, node, layer).

    Example:
        >>> layer_seed(1, 2, 0) != layer_seed(1, 3, 0) != layer_seed(1, 2, 1)
        True
    """
    entropy = [seed & _U64, node_id & _U64, layer_index]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])


def compress_update(update: Mapping[str, np.ndarray], request: CompressionRequest, *,
                    node_id: int, num_examples: float = 1.0,
                    residuals: Residuals | None = None) -> CompressedUpdate:
    """Encode every layer of ``update`` as ``request`` asks.

    Raises ValueError when the request does not fit the update (wrong number of
    per-layer targets) or a layer is not finite.
    """
    if request.noise_var is not None and len(request.noise_var) != len(update):
        raise ValueError(f"{len(request.noise_var)} noise targets for {len(update)} layers")
    started = time.perf_counter()
    payloads: dict[str, bytes] = {}
    kept: dict[str, dict[str, np.ndarray]] = {}
    m2, qnoise = [], []
    for index, (name, values) in enumerate(update.items()):
        g = np.asarray(values, dtype=np.float32)
        codec = _select_codec(request, index, g)
        seed = layer_seed(request.seed, node_id, index)
        if request.error_feedback:
            feedback = codecs.ErrorFeedback(codec)
            if residuals and name in residuals:
                feedback.load_state_dict(dict(residuals[name]))
            payloads[name] = feedback.encode(g, seed=seed)
            kept[name] = feedback.state_dict()
            decoded = codecs.decode(payloads[name])
        else:  # the reconstruction comes with the payload (no decode for dithered)
            payloads[name], decoded = codec.encode_reconstruct(g, seed=seed)
        error = decoded.astype(np.float64) - g
        m2.append(_mean_square(g.astype(np.float64)))
        qnoise.append(_mean_square(error))
    report = CompressionReport(
        payload_bits=8 * sum(len(p) for p in payloads.values()),
        m2=tuple(m2), qnoise=tuple(qnoise), num_examples=num_examples,
        encode_seconds=time.perf_counter() - started,
    )
    return CompressedUpdate(payloads, report, kept)


def _select_codec(request: CompressionRequest, index: int, g: np.ndarray) -> codecs.Codec:
    target = _noise_target(request, index, g)
    if target is not None:
        if target == 0.0:  # the protocol's way to ask for an exact layer
            return codecs.get(EXACT_CODEC)
        return codecs.codec_class(request.codec).for_noise_var(target, g)
    if request.bits is not None:
        return codecs.codec_class(request.codec).for_bits(request.bits, g)
    return codecs.get(request.codec)


def _noise_target(request: CompressionRequest, index: int, g: np.ndarray) -> float | None:
    if request.noise_var is not None:
        return request.noise_var[index]
    if request.relative_noise is not None:
        return request.relative_noise * _mean_square(g.astype(np.float64))
    return None


def _mean_square(values: np.ndarray) -> float:
    return float(np.mean(np.square(values))) if values.size else 0.0

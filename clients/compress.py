"""Compress one round's model update into one flrd message (numpy/torch and codecs only).

Every layer is sent as a float32 update (torch tensors are encoded on their device).
The codec parameters come from the :class:`~flrd.protocol.CompressionRequest`; the
message format is :mod:`flrd.codecs.message`. The client's report holds the exact
update's mean square ``m2`` and the expected noise of each layer (for dithered layers
the codec's formula at the exact ``m2``; realized noise for baseline codecs and
error feedback, where the reconstruction is at hand anyway).

Example:
    >>> import numpy as np
    >>> from flrd.protocol import CompressionRequest
    >>> out = compress_update({"w": np.ones(8, np.float32)},
    ...                       CompressionRequest(codec="float32"), node_id=3)
    >>> out.report.payload_bits == 8 * len(out.payload), out.report.qnoise
    (True, (0.0,))
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flrd.codecs.message import encode_update, layer_seed
from flrd.protocol import CompressionReport, CompressionRequest

__all__ = ["CompressedUpdate", "compress_update", "layer_seed"]

Residuals = Mapping[str, Mapping[str, np.ndarray]]
_RESIDUAL = "residual"


@dataclass(frozen=True)
class CompressedUpdate:
    """The message, the client's report, and the error-feedback state to keep."""

    payload: bytes
    report: CompressionReport
    residuals: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def compress_update(update: Mapping[str, Any], request: CompressionRequest, *,
                    node_id: int, num_examples: float = 1.0,
                    residuals: Residuals | None = None) -> CompressedUpdate:
    """Encode ``update`` as ``request`` asks.

    With error feedback the message encodes ``g + e`` and keeps
    ``e <- g + e - decoded`` (the reconstruction comes from the encoder: no decode).

    Raises ValueError when the request does not fit the update or a layer is not
    finite (the message names the layer).
    """
    started = time.perf_counter()
    kept: dict[str, dict[str, np.ndarray]] = {}
    if request.error_feedback:
        exact = {name: np.asarray(values, dtype=np.float32) for name, values in update.items()}
        targets = {name: _with_residual(name, g, residuals) for name, g in exact.items()}
        sent = encode_update(targets, request, node_id=node_id, reconstruct=True)
        assert sent.reconstruction is not None
        kept = {name: {_RESIDUAL: targets[name] - sent.reconstruction[name].astype(np.float32)}
                for name in targets}
        m2 = tuple(float(np.mean(np.square(g, dtype=np.float64))) if g.size else 0.0 for g in exact.values())
        qnoise = tuple(float(np.mean((sent.reconstruction[n] - exact[n]) ** 2)) if exact[n].size else 0.0
                       for n in exact)
    else:
        sent = encode_update(update, request, node_id=node_id)
        m2, qnoise = sent.m2, sent.noise_var
    report = CompressionReport(
        payload_bits=8 * len(sent.payload), m2=tuple(m2), qnoise=tuple(qnoise),
        num_examples=num_examples, encode_seconds=time.perf_counter() - started,
        framing_bytes=sent.framing_bytes, stats_bytes=sent.stats_bytes,
    )
    return CompressedUpdate(sent.payload, report, kept)


def _with_residual(name: str, g: np.ndarray, residuals: Residuals | None) -> np.ndarray:
    residual = (residuals or {}).get(name, {}).get(_RESIDUAL)
    if residual is None:
        return g
    residual = np.asarray(residual, dtype=np.float32)
    if residual.shape != g.shape or not np.isfinite(residual).all():
        raise ValueError(f"layer {name!r}: stored error-feedback residual is unusable")
    return g + residual

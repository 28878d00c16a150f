"""Error feedback for biased codecs (THEORY §10, Beznosikov et al.)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Codec
from .numerics import as_float_array


class ErrorFeedback:
    """Stateful wrapper sending ``g = C(e + x)`` and keeping ``e <- e + x - decode(g)``.

    The residual is kept in at least float32 and persisted through
    :meth:`state_dict` / :meth:`load_state_dict` (numpy arrays only, so a Flower
    ``Context`` can store it). Payloads decode with :func:`flrd.codecs.decode`.

    Example:
        >>> import numpy as np
        >>> from flrd.codecs import get, decode
        >>> ef = ErrorFeedback(get("topk", k=1))
        >>> x = np.array([3.0, 2.0])
        >>> decode(ef.encode(x)).tolist(), ef.residual.tolist()
        ([3.0, 0.0], [0.0, 2.0])
        >>> decode(ef.encode(x)).tolist()  # the carried 2.0 makes entry 1 the largest
        [0.0, 4.0]
    """

    def __init__(self, codec: Codec) -> None:
        if not isinstance(codec, Codec):
            raise TypeError(f"codec must be a flrd Codec, got {type(codec).__name__}")
        self.codec = codec
        self.residual: np.ndarray | None = None

    def encode(self, array: Any, *, seed: int = 0) -> bytes:
        """Encode ``array`` plus the carried residual; update the residual."""
        x = as_float_array(array)
        if self.residual is not None and self.residual.shape != x.shape:
            raise ValueError(f"array shape {x.shape} differs from the residual's {self.residual.shape}")
        work_dtype = np.result_type(x.dtype, np.float32)
        target = x.astype(work_dtype) + (self.residual if self.residual is not None else 0)
        # The codec's own reconstruction: exactly what decode(payload) returns, no second pass.
        payload, sent = self.codec.encode_reconstruct(target.astype(x.dtype), seed=seed)
        self.residual = target - sent.astype(work_dtype)
        return payload

    def state_dict(self) -> dict[str, np.ndarray]:
        """``{"residual": array}``, or ``{}`` before the first encode."""
        return {} if self.residual is None else {"residual": self.residual.copy()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore a :meth:`state_dict`; an empty dict resets the residual."""
        residual = state.get("residual")
        if residual is not None:
            residual = np.array(residual)
            if residual.dtype not in (np.float32, np.float64) or not np.isfinite(residual).all():
                raise ValueError("residual must be a finite float32/float64 array")
        self.residual = residual

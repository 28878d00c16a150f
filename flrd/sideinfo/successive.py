"""Successive decoding of a round's replies against the running estimate.

Replies are processed in the planned order (:mod:`flrd.sideinfo.allocation`):
independently coded ones arrive already decoded (arrays, from
:func:`flrd.codecs.decode`), Wyner-Ziv ones as payloads decoded against the MMSE
estimate of ``X`` from the prior and every reply accepted so far. Blocks that fail
are retried once at the end, against the estimate from all other replies; what
still fails is returned for the caller to re-request with independent coding.

Only accepted replies feed the side information: a Wyner-Ziv block is accepted when
its CRC matches, and an array when its mean squared distance to the current
estimate is below ``gate`` times the model's expectation, so a hostile reply can
make its own decoding fail but cannot steer the others'.

Example:
    >>> import numpy as np
    >>> from flrd.sideinfo import plan_layer, wyner_ziv
    >>> rng = np.random.default_rng(0)
    >>> n, K, sx2, s2 = 4096, 4, 10.0, 1.0
    >>> x = rng.normal(0, sx2**0.5, n)
    >>> plan = plan_layer(sx2, s2, K, D=0.5, n=n)
    >>> replies = []
    >>> for c in plan.clients:
    ...     y = x + rng.normal(0, 1, n)
    ...     if c.coding == "wz":
    ...         replies.append(wyner_ziv.encode(y, plan.step, c.cond_std, seed=c.position))
    ...     else:  # stands in for an independent dithered encoding
    ...         replies.append(y + rng.uniform(-plan.step / 2, plan.step / 2, n))
    >>> out = decode_successive(replies, s2=s2, noise_var=plan.noise_var, prior_var=sx2, expected_size=n)
    >>> out.failed, bool(abs(np.mean((out.aggregate() - x) ** 2) / 0.5 - 1) < 0.1)
    ([], True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from . import wyner_ziv

F64 = NDArray[np.float64]


@dataclass
class RoundDecode:
    """Per-client reconstructions (NaN where a block failed twice) and the failures."""

    values: list[F64]
    failed: list[tuple[int, slice]]  # (reply index, coordinates) to re-request
    accepted: NDArray[np.bool_]  # replies that fed the side information

    def aggregate(self) -> F64:
        """The unbiased estimate ``mean_k U_k``; raises ValueError while blocks are missing."""
        if self.failed:
            raise ValueError(f"{len(self.failed)} blocks still missing: resend them first")
        return np.mean(self.values, axis=0)


class _Posterior:
    """Per-coordinate MMSE estimate of X from the prior and accepted replies."""

    def __init__(self, prior_mean: F64, prior_var: float, obs_var: float):
        self.prec = np.full(prior_mean.size, 1.0 / prior_var)
        self.weighted = prior_mean / prior_var
        self.obs_var = obs_var

    def mean(self) -> F64:
        return self.weighted / self.prec

    def add(self, values: F64, sign: float = 1.0) -> None:
        known = np.isfinite(values)
        self.weighted[known] += sign * values[known] / self.obs_var
        self.prec[known] += sign / self.obs_var


def decode_successive(
    replies: Sequence[bytes | NDArray[np.floating]],
    *,
    s2: float,
    noise_var: float,
    prior_var: float,
    expected_size: int,
    prior_mean: NDArray[np.floating] | None = None,
    gate: float = 4.0,
) -> RoundDecode:
    """Decode ``replies`` in order (see the module docstring).

    Args:
        replies: per client, a Wyner-Ziv payload (bytes) or an already decoded array.
        s2, noise_var: gradient-noise and quantization-noise variances of the layer.
        prior_var, prior_mean: the prior on ``X`` (temporal prior, or 0 and ``sx2``).
        expected_size: coordinates of the layer; payloads of another size raise CodecError.
        gate: arrays farther than ``gate`` times the expected spread from the
            estimate are aggregated but do not feed the side information.
    """
    mean0 = np.zeros(expected_size) if prior_mean is None else np.asarray(prior_mean, dtype=np.float64).reshape(-1)
    post = _Posterior(mean0, prior_var, s2 + noise_var)
    values: list[F64] = []
    accepted = np.zeros(len(replies), dtype=bool)
    pending: list[int] = []
    for i, reply in enumerate(replies):
        if isinstance(reply, (bytes, bytearray, memoryview)):
            out = wyner_ziv.decode(reply, post.mean(), expected_size)
            values.append(out.values)
            accepted[i] = bool(out.ok.any())
            if not out.ok.all():
                pending.append(i)
        else:
            arr = np.asarray(reply, dtype=np.float64).reshape(-1)
            if arr.size != expected_size:
                raise ValueError(f"reply {i} has {arr.size} values, expected {expected_size}")
            values.append(arr)
            spread = s2 + noise_var + 1.0 / post.prec
            accepted[i] = bool(np.mean((arr - post.mean()) ** 2 / spread) <= gate)
        if accepted[i]:
            post.add(values[i])
    failed = []
    for i in pending:  # second pass: the side information of all other replies
        out = wyner_ziv.decode(replies[i], post.mean(), expected_size)  # type: ignore[arg-type]
        for sl, good in zip(out.blocks, out.ok):
            if good and not np.isfinite(values[i][sl]).all():
                values[i][sl] = out.values[sl]
                post.add(_only(out.values, sl))
            elif not good:
                failed.append((i, sl))
    return RoundDecode(values, failed, accepted)


def _only(values: F64, sl: slice) -> F64:
    """``values`` on ``sl``, NaN elsewhere (so only that block joins the estimate)."""
    out = np.full(values.size, np.nan)
    out[sl] = values[sl]
    return out

"""Successive decoding of a round's replies against the running estimate.

Replies are processed in the planned order (:mod:`flrd.sideinfo.allocation`):
independently coded ones arrive already decoded (arrays, from
:func:`flrd.codecs.decode`), Wyner-Ziv ones as payloads decoded against the MMSE
estimate of ``X`` from the prior and every reply accepted so far. Blocks that fail
are retried at the end against the estimate from all other replies, pass after pass
while blocks still decode (each success sharpens the estimate for the rest); what
still fails is returned for the caller to re-request with independent coding.

Side information takes each reply's coded coordinates with their bounded dithering
noise (a sparse reply's ``1/p``-scaled estimate is too spiky), scaled per coordinate
by a variance profile re-estimated from the replies (:mod:`.profile`). Only accepted
replies feed it: a Wyner-Ziv block when its CRC matches, and any reply only when its
values' mean squared distance to the current estimate is below ``gate`` times the
model's expectation, so a hostile reply can make its own decoding fail but cannot
steer the others'.

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
    ...         replies.append(wyner_ziv.encode(y, c.step, c.cond_std, seed=c.position,
    ...                                         keep_prob=c.keep_prob, rates=c.rates))
    ...     else:  # stands in for an independent dithered encoding
    ...         step = (12 * plan.noise_var) ** 0.5
    ...         replies.append(y + rng.uniform(-step / 2, step / 2, n))
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
from .profile import PowerSums, RunningProfile, power_sums

F64 = NDArray[np.float64]


@dataclass(frozen=True)
class Observed:
    """An independently coded reply: ``values``, its unbiased estimate for the
    aggregate, and ``coded``, what it tells the side information: ``y`` plus noise of
    variance ``coded_noise_var`` where finite (for a sparse dithered code, the kept
    coordinates before the ``1/p`` scaling; the scaled estimate is too spiky to be
    side information)."""

    values: NDArray[np.floating]
    coded: NDArray[np.floating]
    coded_noise_var: float

    @classmethod
    def from_dithered(cls, values: NDArray[np.floating], keep_prob: float, quant_noise: float) -> Observed:
        """A decoded dithered layer (:class:`flrd.codecs.DitheredCodec`, or a layer of
        :func:`flrd.codecs.message.decode_update` with its ``coded`` entry): on a
        sparse plan its coded coordinates are the nonzero ones, scaled by ``1/keep_prob``."""
        flat = np.asarray(values, dtype=np.float64).reshape(-1)
        coded = np.where(flat != 0, flat * keep_prob, np.nan) if keep_prob < 1 else flat
        return cls(flat, coded, quant_noise)


@dataclass
class RoundDecode:
    """Per-client reconstructions (NaN where a block still failed) and the failures."""

    values: list[F64]
    failed: list[tuple[int, slice]]  # (reply index, coordinates) to re-request
    accepted: NDArray[np.bool_]  # replies that fed the side information
    coded: list[F64]  # per reply, its side-information values (NaN where none)
    coded_noise_vars: list[float]  # and their noise variance

    def aggregate(self) -> F64:
        """The unbiased estimate ``mean_k U_k``; raises ValueError while blocks are missing."""
        if self.failed:
            raise ValueError(f"{len(self.failed)} blocks still missing: resend them first")
        return np.mean(self.values, axis=0)


class Posterior:
    """Per-coordinate MMSE estimate of X from the prior ``N(prior_mean, prior_var a)``
    and accepted observations ``Y + noise`` (``Y ~ N(X, s2 a)``), where ``a`` is the
    variance profile, re-estimated from the observations (:class:`.RunningProfile`).

    Args:
        prior_mean: flat prior mean of ``X`` (zeros without a temporal prior).
        prior_var, s2: layer variances (``sx2`` or a temporal prior's, and ``s2``).
        profile: the profile to start from (flat, mean 1), e.g. the planner's.
        shape: the layer's shape (a rank-1 profile needs two axes).
        gate: observations farther than ``gate`` times their expected mean squared
            distance from the estimate are refused (:meth:`fits`).
    """

    def __init__(self, prior_mean: F64, prior_var: float, s2: float, profile: NDArray[np.floating] | None = None,
                 shape: tuple[int, ...] | None = None, gate: float = 4.0):
        self.prior_mean, self.prior_var, self.s2, self.gate = prior_mean, prior_var, s2, gate
        self.profile = RunningProfile(shape or (prior_mean.size,), prior=profile)
        if self.profile.size != prior_mean.size:
            raise ValueError(f"shape {shape} does not hold {prior_mean.size} coordinates")
        self.scale = self.profile.current()
        self.data_prec = np.zeros(prior_mean.size)
        self.data_weighted = np.zeros(prior_mean.size)

    def _prec(self) -> F64:
        return 1.0 / (self.prior_var * self.scale) + self.data_prec

    def mean(self) -> F64:
        return (self.prior_mean / (self.prior_var * self.scale) + self.data_weighted) / self._prec()

    def spread(self) -> F64:
        """Variance of a new client's ``Y`` around :meth:`mean`, per coordinate."""
        return self.s2 * self.scale + 1.0 / self._prec()

    def fits(self, values: F64, noise_var: float) -> bool:
        """Whether the observed coordinates lie within ``gate`` times their expected
        mean squared distance from the estimate."""
        known = np.isfinite(values)
        if not known.any():
            return False
        expected = self.spread()[known] + noise_var
        return bool(np.mean((values[known] - self.mean()[known]) ** 2 / expected) <= self.gate)

    def add(self, values: F64, noise_var: float, sums: PowerSums | None = None) -> None:
        """Observe ``Y + noise`` (of variance ``noise_var``) where ``values`` is
        finite; the profile learns from it too (from ``sums`` when the caller already
        has them)."""
        known = np.isfinite(values)
        obs_var = self.s2 * self.scale[known] + noise_var
        self.data_weighted[known] += values[known] / obs_var
        self.data_prec[known] += 1.0 / obs_var
        self.profile.add_sums(sums if sums is not None else power_sums(values, noise_var, self.profile.shape))
        self.scale = self.profile.current()


def decode_successive(
    replies: Sequence[bytes | NDArray[np.floating] | Observed],
    *,
    s2: float,
    noise_var: float,
    prior_var: float,
    expected_size: int,
    prior_mean: NDArray[np.floating] | None = None,
    gate: float = 4.0,
    profile: NDArray[np.floating] | None = None,
    shape: tuple[int, ...] | None = None,
) -> RoundDecode:
    """Decode ``replies`` in order (see the module docstring).

    Args:
        replies: per client, a Wyner-Ziv payload (bytes), or an independently coded
            reply as :class:`Observed` or as its unbiased array (noise ``noise_var``).
        s2: gradient-noise variance of the layer.
        noise_var: noise of each reply's estimate (the plan's).
        prior_var, prior_mean: the prior on ``X`` (temporal prior, or 0 and ``sx2``).
        expected_size: coordinates of the layer; payloads of another size raise CodecError.
        gate: replies farther than ``gate`` times the expected spread from the
            estimate are aggregated but do not feed the side information.
        profile, shape: the variance profile to start from (:mod:`.profile`; the
            planner's, :func:`.plan_layer`) and the layer's shape; the decoder
            re-estimates the profile from the replies as it goes.
    """
    mean0 = np.zeros(expected_size) if prior_mean is None else np.asarray(prior_mean, dtype=np.float64).reshape(-1)
    post = Posterior(mean0, prior_var, s2, profile, shape, gate)
    values: list[F64] = []
    coded: list[F64] = []
    coded_noise: list[float] = []
    accepted = np.zeros(len(replies), dtype=bool)
    pending: list[int] = []
    block_slices: dict[int, tuple[slice, ...]] = {}
    for i, reply in enumerate(replies):
        if isinstance(reply, (bytes, bytearray, memoryview)):
            out = wyner_ziv.decode(reply, post.mean(), expected_size, side_var=post.spread())
            values.append(out.values)
            block_slices[i] = out.blocks
            if not out.ok.all():
                pending.append(i)
            # Side information takes the coded coordinates' dithered values: y plus
            # bounded noise, where the control-variate estimate is spiky.
            coded.append(out.dithered)
            coded_noise.append(out.coded_noise_var)
            accepted[i] = post.fits(out.dithered, out.coded_noise_var)
            if accepted[i]:
                post.add(out.dithered, out.coded_noise_var)
        else:
            obs = reply if isinstance(reply, Observed) else Observed(reply, reply, noise_var)
            arr = np.asarray(obs.values, dtype=np.float64).reshape(-1)
            side = np.asarray(obs.coded, dtype=np.float64).reshape(-1)
            if arr.size != expected_size or side.size != expected_size:
                raise ValueError(f"reply {i} has {arr.size} values, expected {expected_size}")
            values.append(arr)
            coded.append(side)
            coded_noise.append(obs.coded_noise_var)
            accepted[i] = post.fits(side, obs.coded_noise_var)
            if accepted[i]:
                post.add(side, obs.coded_noise_var)
    # Later passes: the side information of all other replies, until no block decodes.
    progress = True
    while pending and progress:
        progress, still = False, []
        for i in pending:
            out = wyner_ziv.decode(replies[i], post.mean(), expected_size, side_var=post.spread())  # type: ignore[arg-type]
            fresh = np.full(expected_size, np.nan)
            for sl, good in zip(out.blocks, out.ok):
                if good and not np.isfinite(values[i][sl]).all():
                    values[i][sl] = out.values[sl]
                    coded[i][sl] = fresh[sl] = out.dithered[sl]
            if np.isfinite(fresh).any():
                progress = True
                if post.fits(fresh, out.coded_noise_var):
                    post.add(fresh, out.coded_noise_var)
            if not np.isfinite(values[i]).all():
                still.append(i)
        pending = still
    failed = [(i, sl) for i in pending for sl in block_slices[i] if not np.isfinite(values[i][sl]).all()]
    return RoundDecode(values, failed, accepted, coded, coded_noise)

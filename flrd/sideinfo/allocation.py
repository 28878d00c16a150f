"""Per-client Wyner-Ziv parameters from the CEO model: the successive-decoding vertex.

Every client adds dithered noise of variance ``noise_var = K D - s2`` (THEORY §9),
so the unweighted mean of the ``K`` reconstructions ``U_k = Y_k + V_k`` is unbiased
with distortion ``D``. The server decodes the clients in a fixed order; the client
at position ``k`` (``k`` replies decoded before it) is decoded against the MMSE
estimate of ``X`` from the prior ``N(prior_mean, prior_var)`` and those ``k``
replies, around which ``Y_k`` spreads with variance

    cond_var_k = s2 + 1 / (1/prior_var + k / (s2 + noise_var)).

Its ideal Wyner-Ziv rate ``1/2 log2(1 + cond_var_k / noise_var)`` equals the rate
of the Lemma-1 vertex (THEORY §4) with equal noise rates ``r_k`` (the water-filling
solution for equal ``s2``; ``sx2 -> prior_var``) and client ``0`` decoded first:
earlier clients pay more, later ones less, and the ``K`` rates add up to ``R_sum``
(exactly, with ``prior_var = sx2``). The practical rate is the dithered lattice's
conditional entropy plus the LDPC gap (:func:`flrd.sideinfo.wyner_ziv.wz_rate`), on
the random subset whose size minimizes it (:func:`cheapest_wz`: at low conditional
SNR few coordinates are coded, each at conditional SNR near 1, as in the dithered
codec), with the side information's quality followed per coordinate
(:func:`plan_layer`). Each position takes Wyner-Ziv coding only where that is below
``WZ_HURDLE`` times the expected rate of flrd's independent codec for the same client
(:func:`flrd.codecs.rate_curve.bits_per_coord`), so by the model the plan never
costs more than independent coding. Position 0 without a temporal prior always
codes independently.

Example:
    >>> plan = plan_layer(sx2=10.0, s2=1.0, K=10, D=0.2)
    >>> [c.coding for c in plan.clients][:3]
    ['independent', 'wz', 'wz']
    >>> bool(plan.predicted_bits < plan.independent_bits)
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from flrd import theory
from flrd.codecs import dithered, rate_curve
from flrd.codecs.message import FRAMING_BYTES

from . import wyner_ziv
from .wyner_ziv import BLOCK

MIN_WZ_COORDS = 1024  # coded coordinates per payload below which BP fails too often and headers dominate
# Rates are planned for residuals this much wider (in variance) than predicted: the
# first Wyner-Ziv reply of a MNIST round met residuals 1.2x the posterior's variance
# with exact sx2 and s2, the strategy's smoothed estimates lag growing ones by 15-35 %,
# and BP has no slack below ~1.2x a plane's entropy.
COND_VAR_MARGIN = 1.5
# A position codes Wyner-Ziv only when predicted this much cheaper than independent
# coding: the independent codec's size on real updates is predicted within ~10 %, and late
# in training a plan fixed in advance overshoots shrinking updates.
WZ_HURDLE = 0.85
SIM_COORDS = 4096  # coordinates the planner follows to predict each position's side information
_SIM_SEED = 0x5EED
_DQ_GRID = 2.0 ** (np.arange(-8, 9) / 4)  # candidate D_q / cond_var on the kept subset
_SPREAD_BINS = 16  # per octave: spreads are rounded up to this grid before the plane model


@dataclass(frozen=True)
class ClientPlan:
    """What the server sends the client decoded at ``position`` for one layer.

    ``step``, ``keep_prob`` and ``rates`` are the Wyner-Ziv payload's (unused when
    ``coding`` is ``"independent"``: that client codes at ``LayerPlan.noise_var``)."""

    position: int
    coding: str  # "wz" or "independent"
    cond_std: float  # rms spread of Y_k around the side information at this position
    step: float
    keep_prob: float
    rates: tuple[float, ...]  # syndrome bits per coded coordinate, per plane
    predicted_bits_per_coord: float  # of the chosen coding
    wz_bits_per_coord: float  # predicted Wyner-Ziv rate (inf if out of range or without side information)
    vertex_bits_per_coord: float  # ideal Lemma-1 vertex rate at this position


@dataclass(frozen=True)
class LayerPlan:
    """Plan for one layer of ``n`` coordinates; rates in bits per coordinate."""

    noise_var: float  # per client: every reply's estimate carries this noise
    clients: tuple[ClientPlan, ...]
    sum_rate: float  # R_sum (Corollary 2) at the prior
    independent_rate: float  # R_ind
    independent_bits: float  # predicted total of K independent encodings (flrd's dithered codec)
    tail_df: int  # residual law the Wyner-Ziv payloads assume (0: Gaussian)

    @property
    def predicted_bits(self) -> float:
        """Predicted total of the plan, summed over clients."""
        return float(sum(c.predicted_bits_per_coord for c in self.clients))

    @property
    def coding(self) -> str:
        """``"wz"`` when any client uses Wyner-Ziv coding, else ``"independent"``."""
        return "wz" if any(c.coding == "wz" for c in self.clients) else "independent"


def conditional_vars(s2: float, noise_var: float, K: int, prior_var: float) -> np.ndarray:
    """``cond_var_k`` for positions ``k = 0..K-1`` when every reply informs every
    coordinate equally (see the module docstring)."""
    k = np.arange(K, dtype=np.float64)
    return s2 + 1.0 / (1.0 / prior_var + k / (s2 + noise_var))


def independent_bits_per_coord(noise_var: float, m2: float, n: int) -> float:
    """Predicted bits per coordinate of flrd's dithered codec on ``n`` Gaussian
    coordinates of mean square ``m2`` at noise ``noise_var``, with the message's
    framing and the layer's statistic byte."""
    return float(rate_curve.bits_per_coord(noise_var, m2 / noise_var)) + 8 * (FRAMING_BYTES + 1) / n


def mixture_rates(spreads: np.ndarray, n: int, tail_df: int = 0) -> tuple[float, ...]:
    """Plane rates for blocks of ``n`` coded coordinates whose residual spreads (in
    steps) are distributed like ``spreads``: the planes' entropies and error rates
    averaged over the coordinates (spreads rounded up to 1/16 octave)."""
    bins, counts = np.unique(2.0 ** (np.ceil(np.log2(spreads) * _SPREAD_BINS) / _SPREAD_BINS), return_counts=True)
    h, e = np.zeros(wyner_ziv.MAX_PLANES), np.zeros(wyner_ziv.MAX_PLANES)
    for spread, count in zip(bins, counts):
        hs, es = wyner_ziv.plane_entropies(float(spread), tail_df)
        h[: len(hs)] += count * np.array(hs)
        e[: len(es)] += count * np.array(es)
    return wyner_ziv.plane_rates(h / counts.sum(), e / counts.sum(), n)


def cheapest_wz(cond_vars: np.ndarray, noise_var: float, n: int, tail_df: int = 0,
                var_margin: float = COND_VAR_MARGIN) -> tuple[float, float, float, tuple[float, ...]]:
    """``(bits per coordinate, step, keep_prob, plane rates)`` of the cheapest
    Wyner-Ziv setting whose estimate has noise ``noise_var`` when ``Y`` spreads
    around the side information with variances like ``cond_vars`` (mean ``c``): kept
    coordinates at quantizer noise ``D_q = d c`` with ``p = c (1 + d) / (noise_var + c)``
    (the noise of :func:`flrd.sideinfo.wyner_ziv.decode` is ``(1/p - 1) c + D_q / p``),
    or every coordinate at ``D_q = noise_var``; rates for ``var_margin`` times wider
    residuals. ``inf`` bits when no setting fits."""
    cond = float(np.mean(cond_vars))
    best: tuple[float, float, float, tuple[float, ...]] = (math.inf, math.sqrt(12.0 * noise_var), 1.0, (0.0,))
    for d in (*_DQ_GRID, noise_var / cond):
        p = min(cond * (1.0 + d) / (noise_var + cond), 1.0)
        coded = int(p * n)
        if coded < MIN_WZ_COORDS:
            continue
        step = math.sqrt(12.0 * (d * cond if p < 1.0 else noise_var))
        spreads = np.sqrt(cond_vars) / step
        if spreads.max() > 2.0 ** (wyner_ziv.MAX_PLANES - 8):
            continue
        rates = mixture_rates(spreads * math.sqrt(var_margin), min(coded, BLOCK), tail_df)
        bits = wyner_ziv.payload_bits(rates, coded) / n
        if bits < best[0]:
            best = (bits, step, p, rates)
    return best


def plan_layer(sx2: float, s2: float, K: int, D: float, prior_var: float | None = None, n: int = BLOCK,
               tail_df: int = 0, profile: np.ndarray | None = None, allow_wz: bool = True,
               independent_scale: float = 1.0, var_margin: float = COND_VAR_MARGIN,
               independent_m2: float | None = None) -> LayerPlan:
    """Choose Wyner-Ziv or independent coding per client for one layer.

    The planner follows ``SIM_COORDS`` coordinates through the round: each reply
    informs only the coordinates it codes (all of them, or a random subset), so the
    side information's quality varies by coordinate, and each position's rates are
    the average over that spread (:func:`mixture_rates`).

    Args:
        sx2, s2: CEO model variances of the layer (THEORY §1).
        K: clients in the round; ``D``: planned distortion, ``D > s2 / K``.
        prior_var: variance of ``X`` around the temporal prior both sides hold
            (default ``sx2``: prior mean 0, no temporal prior).
        n: coordinates of the layer.
        tail_df: residual law for the Wyner-Ziv payloads (0 Gaussian, else Student t).
        profile: relative variance per coordinate (mean 1; :mod:`.profile`), which
            scales ``sx2``, ``s2`` and ``prior_var`` per coordinate; default flat.
        allow_wz: False codes every client independently (e.g. before the server
            has a profile of a layer whose coordinates differ: docs/wyner_ziv.md).
        independent_scale: measured over predicted size of independent encodings
            (real updates are not Gaussian: the codec's Laplace tables often code
            them below :func:`flrd.codecs.rate_curve.bits_per_coord`), so that the
            choice compares Wyner-Ziv with what independent coding really costs.
        independent_m2: the mean square the clients' updates are expected to have,
            for the independent codec's cost (default ``sx2 + s2``): the Wyner-Ziv
            code is planned on conservative variances and fixed in advance, while
            independent coding adapts to the update it gets.
        var_margin: plan the syndromes for residuals this much wider (in variance)
            than the model predicts (``COND_VAR_MARGIN`` for estimated variances; 1
            when the model is exact, as in the Gaussian benchmark).
    """
    if K < 1:
        raise ValueError(f"K must be >= 1, got {K}")
    if not (sx2 >= 0 and s2 > 0 and math.isfinite(sx2) and math.isfinite(s2)):
        raise ValueError(f"need sx2 >= 0 and s2 > 0 finite, got {sx2}, {s2}")
    if not D > s2 / K:
        raise ValueError(f"D must be > s2/K = {s2 / K}, got {D}")
    prior_var = sx2 if prior_var is None else prior_var
    if not prior_var >= 0:
        raise ValueError(f"prior_var must be >= 0, got {prior_var}")
    prior_var = max(prior_var, 1e-12 * s2)  # a perfect prior: keep the formulas finite
    noise_var = K * D - s2
    m2 = sx2 + s2 if independent_m2 is None else independent_m2
    if not (math.isfinite(m2) and m2 > 0):
        raise ValueError(f"independent_m2 must be finite and > 0, got {m2}")
    if not (math.isfinite(independent_scale) and independent_scale > 0):
        raise ValueError(f"independent_scale must be finite and > 0, got {independent_scale}")
    independent = independent_scale * independent_bits_per_coord(noise_var, m2, n)
    ind_plan = dithered.plan_layer(noise_var, m2, m2 / noise_var)
    scale = np.ones(min(n, SIM_COORDS)) if profile is None else \
        np.asarray(profile, dtype=np.float64).reshape(-1)[:: max(1, n // SIM_COORDS)]
    rng = np.random.default_rng(_SIM_SEED)
    prec = 1.0 / (prior_var * scale)
    r = 0.5 * math.log2(1.0 + s2 / noise_var)
    vertex = theory.region_vertex(np.full(K, r), prior_var, np.full(K, s2), order=np.arange(K)[::-1])
    clients = []
    for k in range(K):
        cond_vars = s2 * scale + 1.0 / prec
        useful = allow_wz and (k > 0 or prior_var < sx2)  # position 0 without a temporal prior: none
        wz, step, keep, rates = cheapest_wz(cond_vars, noise_var, n, tail_df, var_margin) if useful else \
            (math.inf, math.sqrt(12.0 * noise_var), 1.0, (0.0,))
        coding = "wz" if useful and wz < WZ_HURDLE * independent else "independent"
        clients.append(ClientPlan(k, coding, math.sqrt(float(np.mean(cond_vars))), step, keep, rates,
                                  wz if coding == "wz" else independent, wz, float(vertex[k])))
        coded_p, coded_noise = (keep, step**2 / 12) if coding == "wz" else \
            (ind_plan.keep_prob, ind_plan.quant_noise)
        prec += (rng.random(scale.size) < coded_p) / (s2 * scale + coded_noise)
    return LayerPlan(
        noise_var=noise_var,
        clients=tuple(clients),
        sum_rate=float(theory.sum_rate(D, sx2, s2, K)),
        independent_rate=float(theory.independent_rate(D, sx2, s2, K)),
        independent_bits=K * independent,
        tail_df=tail_df,
    )

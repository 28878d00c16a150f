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
conditional entropy plus the LDPC gap (:func:`flrd.sideinfo.wyner_ziv.wz_rate`);
each position takes Wyner-Ziv coding only where that is below independent dithered
coding of the same client, so by the model the plan never costs more than
independent coding. Position 0 without a temporal prior always codes independently.

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

from .wyner_ziv import BLOCK, dithered_rate, wz_rate

MIN_WZ_COORDS = 4096  # shorter blocks: BP fails too often and headers dominate

DITHERED_OVERHEAD_BITS = 8 * 120  # header and coder flush of flrd.codecs.DitheredCodec per layer


@dataclass(frozen=True)
class ClientPlan:
    """What the server sends the client decoded at ``position`` for one layer."""

    position: int
    coding: str  # "wz" or "independent"
    cond_std: float  # spread of Y_k around the side information at this position
    predicted_bits_per_coord: float  # of the chosen coding
    wz_bits_per_coord: float  # predicted Wyner-Ziv rate (inf if out of range)
    vertex_bits_per_coord: float  # ideal Lemma-1 vertex rate at this position


@dataclass(frozen=True)
class LayerPlan:
    """Plan for one layer of ``n`` coordinates; rates in bits per coordinate."""

    noise_var: float
    step: float
    clients: tuple[ClientPlan, ...]
    sum_rate: float  # R_sum (Corollary 2) at the prior
    independent_rate: float  # R_ind
    independent_bits: float  # predicted total of K independent dithered encodings

    @property
    def predicted_bits(self) -> float:
        """Predicted total of the plan, summed over clients."""
        return float(sum(c.predicted_bits_per_coord for c in self.clients))

    @property
    def coding(self) -> str:
        """``"wz"`` when any client uses Wyner-Ziv coding, else ``"independent"``."""
        return "wz" if any(c.coding == "wz" for c in self.clients) else "independent"


def conditional_vars(s2: float, noise_var: float, K: int, prior_var: float) -> np.ndarray:
    """``cond_var_k`` for positions ``k = 0..K-1`` (see the module docstring)."""
    k = np.arange(K, dtype=np.float64)
    return s2 + 1.0 / (1.0 / prior_var + k / (s2 + noise_var))


def plan_layer(sx2: float, s2: float, K: int, D: float, prior_var: float | None = None, n: int = BLOCK) -> LayerPlan:
    """Choose Wyner-Ziv or independent coding per client for one layer.

    Args:
        sx2, s2: CEO model variances of the layer (THEORY §1).
        K: clients in the round; ``D``: planned distortion, ``D > s2 / K``.
        prior_var: variance of ``X`` around the temporal prior both sides hold
            (default ``sx2``: prior mean 0, no temporal prior).
        n: coordinates per block, for the header and CRC share of the rate.
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
    step = math.sqrt(12.0 * noise_var)
    independent = dithered_rate(math.sqrt(sx2 + s2) / step) + DITHERED_OVERHEAD_BITS / n
    r = 0.5 * math.log2(1.0 + s2 / noise_var)
    vertex = theory.region_vertex(np.full(K, r), prior_var, np.full(K, s2), order=np.arange(K)[::-1])
    clients = []
    for k, cond_var in enumerate(conditional_vars(s2, noise_var, K, prior_var)):
        cond_std = math.sqrt(cond_var)
        try:
            wz = wz_rate(cond_std / step, n)
        except ValueError:  # spread beyond MAX_PLANES: the side information is useless here
            wz = math.inf
        useful = n >= MIN_WZ_COORDS and (k > 0 or prior_var < sx2)  # position 0 without a temporal prior: none
        coding = "wz" if useful and wz < independent else "independent"
        clients.append(ClientPlan(k, coding, cond_std, wz if coding == "wz" else independent, wz, float(vertex[k])))
    return LayerPlan(
        noise_var=noise_var,
        step=step,
        clients=tuple(clients),
        sum_rate=float(theory.sum_rate(D, sx2, s2, K)),
        independent_rate=float(theory.independent_rate(D, sx2, s2, K)),
        independent_bits=K * independent,
    )




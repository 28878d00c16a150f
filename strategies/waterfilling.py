"""Per-client rates by water-filling, for clients with different noise and link costs.

THEORY.md §3: at a layer's distortion ``D_l`` the cheapest noise rates are
``t_k = min(1, c_k s2_k / theta)`` (:func:`flrd.theory.waterfill`). A client with rate
``r_k`` adds quantization noise ``sq2_k = 1/u_k - s2_k``, ``u_k = (1 - 2^(-2 r_k))/s2_k``,
and the inverse-variance mean of the clients then has distortion exactly ``D_l``.
Noisy clients and clients on expensive links send fewer bits; those above the water
level get a noise target so large that their payload is nearly empty and their
weight nearly zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from flwr.app import MetricRecord

from flrd import theory

from .aggregation import inverse_variance_weights
from .decoding import ClientUpdate, DecodedRound
from .rate_aware import RateAwareFedAvg
from .rate_control import Arrays

__all__ = ["WaterfillingFedAvg"]

SILENT_NOISE_FACTOR = 1e6  # noise target of silent clients, relative to the layer's sx2 + s2


class WaterfillingFedAvg(RateAwareFedAvg):
    """RateAwareFedAvg whose clients get individual noise targets by water-filling.

    Each client's noise ``s2_k,l`` is estimated from its last report as
    ``m2_k,l - sx2_l`` (floored at ``noise_floor`` times the pooled ``s2_l``); clients
    not heard from yet count with the pooled ``s2_l``.

    Parameters
    ----------
    link_costs : price per bit of each node's uplink, by node id (default 1).
    noise_floor : smallest per-client noise, relative to the pooled ``s2_l``.
    **kwargs : as :class:`RateAwareFedAvg`.

    Examples
    --------
    >>> strategy = WaterfillingFedAvg(link_costs={7: 4.0}, fraction_train=0.5)
    """

    def __init__(self, *, link_costs: Mapping[int, float] | None = None, noise_floor: float = 0.05,
                 **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.link_costs = {int(node): float(theory._checks.positive("link cost", cost))
                           for node, cost in (link_costs or {}).items()}
        self.noise_floor = float(theory._checks.positive("noise_floor", noise_floor))
        self.client_m2: dict[int, np.ndarray] = {}
        self.round_noise: dict[int, np.ndarray] = {}
        self.silent_nodes: set[int] = set()

    def client_noise(self, node_ids: Sequence[int]) -> np.ndarray:
        """``s2_k,l`` ``(K, L)`` for the sampled nodes, from their last reports."""
        assert self.policy is not None and self.policy.sx2 is not None and self.policy.s2 is not None
        sx2, s2 = self.policy.sx2, self.policy.s2
        floor = np.maximum(self.noise_floor * s2, 1e-12 * (sx2 + s2) + 1e-300)
        rows = [self.client_m2[n] - sx2 if n in self.client_m2 else s2 for n in node_ids]
        return np.maximum(np.array(rows, dtype=np.float64), floor)

    def client_targets(self, server_round: int, node_ids: Sequence[int],
                       targets: np.ndarray) -> dict[int, np.ndarray]:
        """Water-fill every layer's distortion over the sampled clients."""
        assert self.policy is not None and self.policy.s2 is not None and self.policy.sx2 is not None
        K = len(node_ids)
        distortion = (targets + self.policy.s2) / K  # the plan's D_l
        noise = self.client_noise(node_ids)
        costs = np.array([self.link_costs.get(n, 1.0) for n in node_ids])
        silent = SILENT_NOISE_FACTOR * (self.policy.sx2 + self.policy.s2)
        out = np.empty_like(noise)
        for layer, D in enumerate(distortion):
            s2_k = noise[:, layer]
            if D <= float(theory.min_distortion(s2_k)):  # estimates too coarse: share equally
                out[:, layer] = targets[layer]
                continue
            rate = theory.waterfill(float(D), s2_k, costs)
            precision = theory.noise_weights(rate, s2_k)
            with np.errstate(divide="ignore"):
                out[:, layer] = np.where(precision > 0, 1.0 / precision - s2_k, silent[layer])
        self.round_noise = {n: noise[i] for i, n in enumerate(node_ids)}
        self.silent_nodes = {n for i, n in enumerate(node_ids) if np.any(out[i] >= silent)}
        return {n: np.maximum(out[i], 0.0) for i, n in enumerate(node_ids)}

    def aggregation_weights(self, updates: Sequence[ClientUpdate]) -> np.ndarray:
        """Inverse-variance weights with each client's own noise estimate."""
        if any(u.noise_var is None or u.node_id not in self.round_noise for u in updates):
            return super().aggregation_weights(updates)
        targets = np.stack([u.noise_var for u in updates])  # type: ignore[misc]
        noise = np.stack([self.round_noise[u.node_id] for u in updates])
        return inverse_variance_weights(targets, noise)

    def estimation_updates(self, decoded: DecodedRound) -> list[ClientUpdate]:
        """Leave silenced clients out of the ``sx2``/``s2`` estimates: their huge noise
        would swamp the aggregate's second moment."""
        return [u for u in decoded.updates if u.node_id not in self.silent_nodes]

    def observe_round(self, server_round: int, decoded: DecodedRound,
                      applied: Arrays | None, weights: np.ndarray | None) -> MetricRecord:
        """Remember each client's second moments, then observe as usual."""
        for update in decoded.updates:
            self.client_m2[update.node_id] = np.asarray(update.report.m2, dtype=np.float64)
        return super().observe_round(server_round, decoded, applied, weights)

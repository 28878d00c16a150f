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
from dataclasses import replace

import numpy as np
from flwr.app import MetricRecord

from flrd import theory
from flrd.policy import RatePolicy, RoundPlan
from flrd.protocol import LINK_KEY, METRICS_RECORD, CompressionRequest
from flrd.state_file import require_float_list, require_int

from .aggregation import Arrays, inverse_variance_weights
from .decoding import ClientUpdate, DecodedRound, SentRound
from .rate_aware import RateAwareFedAvg
from .rate_control import StateDict

__all__ = ["WaterfillingFedAvg"]

SILENT_NOISE_FACTOR = 1e6  # noise target of silent clients, relative to the layer's sx2 + s2


class WaterfillingFedAvg(RateAwareFedAvg):
    """RateAwareFedAvg whose clients get individual noise targets by water-filling.

    Each client's noise ``s2_k,l`` is estimated from its last report as
    ``m2_k,l - sx2_l`` (floored at ``noise_floor`` times the pooled ``s2_l``); clients
    not heard from yet count with the pooled ``s2_l``.

    Parameters
    ----------
    link_costs : price per bit of each node's uplink, keyed by the value of the node's
        ``link_cost_key`` node config (default 1 for every other node).
    link_cost_key : node-config key the costs are keyed by (default ``partition-id``,
        which simulations and ``flower-supernode --node-config`` set); clients report it
        beside their payload.
    noise_floor : smallest per-client noise, relative to the pooled ``s2_l``.
    **kwargs : as :class:`RateAwareFedAvg`.

    Examples
    --------
    >>> strategy = WaterfillingFedAvg(link_costs={7: 4.0}, fraction_train=0.5)  # partition 7
    """

    def __init__(self, *, link_costs: Mapping[int, float] | None = None,
                 link_cost_key: str = "partition-id", noise_floor: float = 0.05,
                 **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.link_costs = {int(node): float(theory.checks.positive("link cost", cost))
                           for node, cost in (link_costs or {}).items()}
        self.link_cost_key = link_cost_key
        self.noise_floor = float(theory.checks.positive("noise_floor", noise_floor))
        self.client_m2: dict[int, np.ndarray] = {}
        self.node_keys: dict[int, int] = {}

    def make_policy(self, layer_sizes: list[int]) -> RatePolicy:
        """Corollary 3 (:class:`~flrd.policy.RatePolicy`): the water-filling splits the
        round's distortion of the rate-distortion rule, which the per-client bounds price."""
        return RatePolicy(layer_sizes)

    def client_noise(self, node_ids: Sequence[int]) -> np.ndarray:
        """``s2_k,l`` ``(K, L)`` for the sampled nodes, from their last reports."""
        assert self.policy is not None and self.policy.sx2 is not None and self.policy.s2 is not None
        sx2, s2 = self.policy.sx2, self.policy.s2
        floor = np.maximum(self.noise_floor * s2, 1e-12 * (sx2 + s2) + 1e-300)
        rows = [self.client_m2[n] - sx2 if n in self.client_m2 else s2 for n in node_ids]
        return np.maximum(np.array(rows, dtype=np.float64), floor)

    def link_cost(self, node_id: int) -> float:
        """Price per bit of a node's uplink: ``link_costs`` is keyed by the node-config
        value ``link_cost_key`` (default ``partition-id``) the node reported, since
        Flower's node ids are random; nodes not heard from yet cost 1."""
        key = self.node_keys.get(node_id)
        return self.link_costs.get(key, 1.0) if key is not None else 1.0

    def client_targets(self, server_round: int, node_ids: Sequence[int],
                       targets: np.ndarray) -> dict[int, np.ndarray]:
        """Water-fill every layer's distortion over the sampled clients."""
        assert self.policy is not None and self.policy.s2 is not None and self.policy.sx2 is not None
        K = len(node_ids)
        distortion = (targets + self.policy.s2) / K  # the plan's D_l
        noise = self.client_noise(node_ids)
        costs = np.array([self.link_cost(n) for n in node_ids])
        silent = self.silent_noise()
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
        return {n: np.maximum(out[i], 0.0) for i, n in enumerate(node_ids)}

    def codec_for(self, server_round: int, node_id: int, plan: RoundPlan,
                  targets: np.ndarray | None) -> CompressionRequest:
        """RateAwareFedAvg's request, asking for the node's link key when links are priced."""
        request = super().codec_for(server_round, node_id, plan, targets)
        return replace(request, link_key=self.link_cost_key) if self.link_costs else request

    def silent_noise(self) -> np.ndarray:
        """The noise target of clients above the water level, per layer."""
        assert self.policy is not None and self.policy.sx2 is not None and self.policy.s2 is not None
        return SILENT_NOISE_FACTOR * (self.policy.sx2 + self.policy.s2)

    def aggregation_weights(self, updates: Sequence[ClientUpdate], sent: SentRound) -> np.ndarray:
        """Inverse-variance weights with each client's own noise estimate.

        The policy and the clients' reports change only after aggregation, so
        :meth:`client_noise` gives the estimates the round was planned with.
        """
        if any(u.noise_var is None for u in updates):
            return super().aggregation_weights(updates, sent)
        targets = np.stack([u.noise_var for u in updates])  # type: ignore[misc]
        noise = self.client_noise([u.node_id for u in updates])
        return inverse_variance_weights(targets, noise)

    def estimation_updates(self, decoded: DecodedRound) -> list[ClientUpdate]:
        """Leave silenced clients out of the ``sx2``/``s2`` estimates: their huge noise
        would swamp the aggregate's second moment."""
        if decoded.sent.plan.warmup or self.policy is None or self.policy.sx2 is None:
            return decoded.updates
        silent = self.silent_noise()
        return [u for u in decoded.updates
                if u.noise_var is None or not np.any(np.asarray(u.noise_var) >= silent)]

    def observe_round(self, decoded: DecodedRound, applied: Arrays | None,
                      weights: np.ndarray | None) -> MetricRecord:
        """Remember each client's second moments and link key, then observe as usual."""
        for update, reply in zip(decoded.updates, decoded.replies, strict=True):
            self.client_m2[update.node_id] = np.asarray(update.report.m2, dtype=np.float64)
            key = reply.content.metric_records.get(METRICS_RECORD, {}).get(LINK_KEY)
            if isinstance(key, int):
                self.node_keys[update.node_id] = key
        return super().observe_round(decoded, applied, weights)

    def state_dict(self) -> StateDict:
        """RateControl's state plus the clients' last second moments and link keys."""
        state = super().state_dict()
        for node_id, m2 in self.client_m2.items():
            state[f"client-m2.{node_id}"] = [float(v) for v in m2]
        for node_id, key in self.node_keys.items():
            state[f"node-key.{node_id}"] = key
        return state

    def load_state_dict(self, state: StateDict) -> None:
        """Restore :meth:`state_dict` output."""
        own = {k: v for k, v in state.items() if k.startswith(("client-m2.", "node-key."))}
        super().load_state_dict({k: v for k, v in state.items() if k not in own})
        self.client_m2, self.node_keys = {}, {}
        for key, value in own.items():
            kind, _, node = key.partition(".")
            if kind == "client-m2":
                layers = (self.policy.layer_sizes.size if self.policy is not None
                          else len(value) if isinstance(value, list) else 0)
                self.client_m2[int(node)] = require_float_list(own, key, lengths=(layers,), low=0.0)
            else:
                self.node_keys[int(node)] = require_int(own, key)


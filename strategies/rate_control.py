"""RateControl: the rate-distortion machinery that flrd's strategies share.

A mixin placed before a Flower strategy class in the bases. It plans each round with a
:class:`~flrd.policy.RatePolicy`, writes one :class:`~flrd.protocol.CompressionRequest`
per client into the train messages, decodes and checks the replies, feeds the policy
and reports the round. The strategies decide what to do with the decoded updates
(:class:`~flrd.strategies.RateAwareFedAvg` averages them itself,
:class:`~flrd.strategies.CompressedStrategy` hands weights to any inner strategy).

Overridable hooks, one decision each: :meth:`RateControl.make_policy`,
:meth:`~RateControl.plan_round`, :meth:`~RateControl.noise_targets` (the distortion
rule), :meth:`~RateControl.client_targets` (per-client rates, e.g. water-filling),
:meth:`~RateControl.client_request` (the codec choice),
:meth:`~RateControl.aggregation_weights` and :meth:`~RateControl.decode_reply`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from logging import INFO, WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import log

from flrd.policy import RatePolicy, RoundPlan
from flrd.protocol import AUDIT_RECORD, METRICS_RECORD, CompressionRequest

from .aggregation import (
    Arrays,
    apply_update,
    example_weights,
    inverse_variance_weights,
    to_record,
    weighted_mean,
)
from .decoding import (
    ClientUpdate,
    DecodedRound,
    RejectedReply,
    SentRound,
    SideInformation,
    UpdateDecoder,
    decode_reply,
    reply_payload_bytes,
    reply_report_bytes,
)
from .reporting import round_metrics

__all__ = ["RateControl"]

StateDict = dict[str, int | float | list[float]]
_POLICY_PREFIX = "policy."


class RateControl:
    """Mixin adding rate-distortion-controlled compression to a Message-API strategy.

    Parameters
    ----------
    policy : RatePolicy, optional
        The distortion rule's state. Built by :meth:`make_policy` from the model's
        layer sizes in the first round when not given.
    codec : str (default: "dithered")
        ``flrd.codecs`` name the clients encode with.
    bits : float, optional
        Fixed rate in bits per coordinate (m22, qsgd, topk baselines). When unset the
        clients get per-layer noise-variance targets from the distortion rule.
    error_feedback : bool (default: False)
        Ask clients to carry their compression error into the next round.
    audit : bool (default: False)
        Ask clients to also send the exact update (not counted as uplink bits) so the
        realized distortion can be measured; for testing.
    seed : int (default: 0)
        Base of the per-round seeds sent to clients.
    decoder : UpdateDecoder, optional
        Turns payloads into updates; replace it for side-information decoding.
    loss_key : str (default: "train_loss")
        Client metric passed to the policy as the round's loss, when present.
    """

    def __init__(self, *, policy: RatePolicy | None = None, codec: str = "dithered",
                 bits: float | None = None, error_feedback: bool = False,
                 audit: bool = False, seed: int = 0, decoder: UpdateDecoder | None = None,
                 loss_key: str = "train_loss", **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.policy = policy
        self.codec = codec
        self.bits = bits
        self.error_feedback = error_feedback
        self.audit = audit
        self.seed = seed
        self.decoder = decoder if decoder is not None else UpdateDecoder()
        self.loss_key = loss_key
        self.rounds_completed = 0
        self.previous_update: Arrays | None = None
        self.sent_round: SentRound | None = None
        self._policy_state: StateDict | None = None

    # ------------------------------------------------------------------ hooks
    def make_policy(self, layer_sizes: list[int]) -> RatePolicy:
        """The policy used when none was given (called once, in the first round)."""
        return RatePolicy(layer_sizes)

    def plan_round(self, server_round: int, num_clients: int) -> RoundPlan:
        """The policy's plan for a round with ``num_clients`` participants."""
        assert self.policy is not None
        return self.policy.plan(num_clients=num_clients)

    def noise_targets(self, server_round: int, plan: RoundPlan) -> np.ndarray | None:
        """The distortion rule: per-layer quantization-noise variance every client adds.

        ``None`` means warm-up: clients add noise relative to their own update
        (``plan.warmup_relative_noise``). Override to impose another rule.
        """
        return None if plan.warmup else np.asarray(plan.noise_var_per_layer, dtype=np.float64)

    def client_targets(self, server_round: int, node_ids: Sequence[int],
                       targets: np.ndarray) -> dict[int, np.ndarray]:
        """Per-client targets (hook for per-client rates, e.g. water-filling).

        RateAwareFedAvg combines clients given different targets with inverse-variance
        weights (:meth:`aggregation_weights`).
        """
        return {node_id: targets for node_id in node_ids}

    def client_request(self, server_round: int, node_id: int, plan: RoundPlan,
                       targets: np.ndarray | None) -> CompressionRequest:
        """The codec choice for one client: codec, rate or noise target, options."""
        request = CompressionRequest(codec=self.codec, error_feedback=self.error_feedback,
                                     audit=self.audit, seed=self._round_seed())
        if self.bits is not None:
            return replace(request, bits=self.bits)
        if targets is None:
            return replace(request, relative_noise=plan.warmup_relative_noise)
        return replace(request, noise_var=tuple(float(t) for t in targets))

    def aggregation_weights(self, updates: Sequence[ClientUpdate]) -> np.ndarray:
        """Weights ``(K, L)``, each column summing to 1: by examples, or inverse variance.

        Inverse-variance weights ``1 / (s2_l + target_kl)`` make the weighted mean the
        minimum-variance unbiased combination when clients were given different noise
        targets; with equal targets they reduce to equal weights, so the examples
        decide (FedAvg).
        """
        by_examples = example_weights(updates, len(self._sent().global_arrays))
        targets = [u.noise_var for u in updates]
        if any(t is None for t in targets) or all(np.array_equal(t, targets[0]) for t in targets):
            return by_examples
        stacked = np.stack(targets)  # type: ignore[arg-type]
        known = self.policy is not None and self.policy.s2 is not None
        s2 = np.broadcast_to(self.policy.s2 if known else 0.0, stacked.shape[1:])  # type: ignore[union-attr]
        if np.any(s2 + stacked <= 0):
            return by_examples  # a client was asked for an exact layer: no finite weight
        return inverse_variance_weights(stacked, s2)

    def decode_reply(self, reply: Message, side: SideInformation,
                     targets: np.ndarray | None) -> ClientUpdate:
        """Check and decode one reply with :attr:`decoder`; raise RejectedReply to drop it."""
        return decode_reply(reply, self.decoder, side, targets)

    # ------------------------------------------------------------- round flow
    def attach_requests(self, server_round: int, arrays: ArrayRecord,
                        messages: Iterable[Message]) -> list[Message]:
        """Plan the round and write each client's request into its train message."""
        messages = list(messages)
        global_arrays = {name: array.numpy() for name, array in arrays.items()}
        self._ensure_policy([int(v.size) for v in global_arrays.values()])
        if not messages:
            self.sent_round = None
            return messages
        plan = self.plan_round(server_round, len(messages))
        node_ids = [msg.metadata.dst_node_id for msg in messages]
        shared = None if self.bits is not None else self.noise_targets(server_round, plan)
        targets = (dict.fromkeys(node_ids) if shared is None
                   else dict(self.client_targets(server_round, node_ids, shared)))
        for node_id, node_targets in targets.items():
            _check_targets(node_id, node_targets, len(global_arrays))
        requests = {}
        for msg in messages:
            node_id = msg.metadata.dst_node_id
            requests[node_id] = self.client_request(server_round, node_id, plan, targets[node_id])
            msg.content = _with_request(msg.content, requests[node_id])
        self.sent_round = SentRound(server_round, plan, global_arrays, requests, targets)
        return messages

    def decode_replies(self, server_round: int, replies: Iterable[Message]) -> DecodedRound:
        """Decode every reply that can be trusted; log why any other is left out.

        Replies are taken in node-id order, so the aggregate does not depend on the
        order in which they arrived.
        """
        started = time.perf_counter()
        decoded = DecodedRound(self._sent(server_round))
        for reply in sorted(replies, key=lambda r: r.metadata.src_node_id):
            decoded.num_replies += 1
            decoded.uplink_bytes += reply_payload_bytes(reply)
            decoded.report_bytes += reply_report_bytes(reply)
            node_id = reply.metadata.src_node_id
            if reply.has_error():
                decoded.num_failed += 1
                log(WARNING, "aggregate_train: node %s failed: %s", node_id, reply.error.reason)
                continue
            try:
                update = self._decode_checked(server_round, reply, decoded)
            except RejectedReply as err:
                decoded.num_rejected += 1
                log(WARNING, "aggregate_train: rejected reply from node %s: %s", node_id, err)
                continue
            decoded.updates.append(update)
            decoded.replies.append(reply)
        decoded.decode_seconds = time.perf_counter() - started
        return decoded

    def weight_replies(self, decoded: DecodedRound) -> list[Message]:
        """The accepted replies as a plain Flower app sends them: new weights, app metrics.

        Each payload ArrayRecord becomes ``global + update`` (global dtypes) under its
        own name; flrd's records are removed. Replies are changed in place.
        """
        for reply, update in zip(decoded.replies, decoded.updates, strict=True):
            content = RecordDict({k: v for k, v in reply.content.items()
                                  if k not in (METRICS_RECORD, AUDIT_RECORD)})
            key = next(iter(content.array_records))
            content[key] = to_record(apply_update(decoded.sent.global_arrays, update.update))
            reply.content = content
        return decoded.replies

    def observe_round(self, server_round: int, decoded: DecodedRound,
                      applied: Arrays | None, weights: np.ndarray | None) -> MetricRecord:
        """Feed the policy, keep the applied update as side information, report the round.

        ``applied`` is the update that moved the global model (None if it did not move);
        ``weights`` ``(K, L)`` are the linear aggregation weights, if the aggregation
        was linear (they give the distortion estimates).
        """
        started = time.perf_counter()
        self._observe_policy(decoded)
        decoded.estimate_seconds = time.perf_counter() - started
        self.previous_update = applied
        self.rounds_completed += 1
        metrics = round_metrics(self.rounds_completed, decoded, self.policy, applied, weights)
        log(INFO, "flrd round %d: %d/%d replies used, uplink %d bits (R_sum %s, R_ind %s)",
            self.rounds_completed, len(decoded.updates), len(decoded.sent.requests),
            metrics["flrd.uplink-bits"], metrics.get("flrd.r-sum-bits", "n/a"),
            metrics.get("flrd.r-ind-bits", "n/a"))
        return metrics

    # ------------------------------------------------------------------ state
    def state_dict(self) -> StateDict:
        """Round counter and policy state (JSON- and ConfigRecord-compatible).

        Example:
            >>> from flrd.strategies import RateAwareFedAvg
            >>> RateAwareFedAvg().state_dict()
            {'rounds-completed': 0}
        """
        state: StateDict = {"rounds-completed": self.rounds_completed}
        policy_state = (self.policy.state_dict() if self.policy is not None
                        else self._policy_state or {})
        state.update({_POLICY_PREFIX + k: v for k, v in policy_state.items()})
        return state

    def load_state_dict(self, state: StateDict) -> None:
        """Continue from :meth:`state_dict` output (e.g. after a server restart).

        The side information of the last round is not part of the state: the first
        round after a restart decodes without a previous update.
        """
        self.rounds_completed = int(state["rounds-completed"])  # type: ignore[arg-type]
        policy_state = {k[len(_POLICY_PREFIX):]: v for k, v in state.items()
                        if k.startswith(_POLICY_PREFIX)}
        if self.policy is not None and policy_state:
            self.policy.load_state_dict(policy_state)
        else:  # applied once the policy exists (its layer sizes come with the model)
            self._policy_state = policy_state or None

    # ---------------------------------------------------------------- helpers
    def _sent(self, server_round: int | None = None) -> SentRound:
        if self.sent_round is None:
            raise RuntimeError("aggregate_train called without a configured round")
        if server_round is not None and server_round != self.sent_round.server_round:
            raise RuntimeError(f"aggregating round {server_round}, but round "
                               f"{self.sent_round.server_round} was configured")
        return self.sent_round

    def _round_seed(self) -> int:
        entropy = [self.seed & ((1 << 64) - 1), self.rounds_completed + 1]
        return int(np.random.SeedSequence(entropy).generate_state(1)[0])

    def _ensure_policy(self, layer_sizes: list[int]) -> None:
        if self.policy is None:
            self.policy = self.make_policy(layer_sizes)
        if list(self.policy.layer_sizes) != layer_sizes:
            raise ValueError(f"policy layer sizes {list(self.policy.layer_sizes)} "
                             f"!= model layer sizes {layer_sizes}")
        if self._policy_state is not None:
            self.policy.load_state_dict(self._policy_state)
            self._policy_state = None

    def _decode_checked(self, server_round: int, reply: Message,
                        decoded: DecodedRound) -> ClientUpdate:
        node_id = reply.metadata.src_node_id
        if node_id not in decoded.sent.requests:
            raise RejectedReply("the node was not asked to train this round")
        if any(u.node_id == node_id for u in decoded.updates):
            raise RejectedReply("a second reply from the same node")
        side = SideInformation(server_round, decoded.sent.global_arrays, self.previous_update,
                               [u.update for u in decoded.updates])
        return self.decode_reply(reply, side, decoded.sent.targets[node_id])

    def estimation_updates(self, decoded: DecodedRound) -> list[ClientUpdate]:
        """The updates the ``sx2``/``s2`` estimates use (all accepted ones; override to filter)."""
        return decoded.updates

    def _observe_policy(self, decoded: DecodedRound) -> None:
        updates = self.estimation_updates(decoded)
        if len(updates) < 2 or self.policy is None:
            log(INFO, "flrd: %d usable replies; variance estimates unchanged", len(updates))
            return
        by_examples = example_weights(updates, len(decoded.sent.global_arrays))
        # With audit records the estimates use the exact updates: §8 assumes quantization
        # errors independent of the gradient, which biased codecs (sign, top-k) break.
        exact = all(u.exact is not None for u in updates)
        weights, mean = by_examples[:, 0], weighted_mean(updates, by_examples, exact=exact)
        qnoise = np.zeros((len(updates), len(mean))) if exact else np.array([u.report.qnoise for u in updates])
        replies = {id(u): r for u, r in zip(decoded.updates, decoded.replies)}
        try:
            self.policy.observe(
                m2_k=np.array([u.report.m2 for u in updates]),
                aggregate_sqnorm=np.array([np.sum(np.square(v)) for v in mean.values()]),
                quant_noise_var_k=qnoise, weights=weights,
                loss=_mean_metric([replies[id(u)] for u in updates], self.loss_key, weights))
        except ValueError as err:  # e.g. all weight on one client: nothing to learn
            log(WARNING, "flrd: policy did not observe this round: %s", err)


def _check_targets(node_id: int, targets: np.ndarray | None, num_layers: int) -> None:
    # A wrong rule would make every client fail; stop at the server instead.
    if targets is None:
        return
    values = np.asarray(targets, dtype=np.float64)
    if values.shape != (num_layers,) or not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(f"noise targets for node {node_id} must be {num_layers} finite "
                         f"values >= 0, got {targets!r}")


def _with_request(content: RecordDict, request: CompressionRequest) -> RecordDict:
    # A fresh RecordDict per message: strategies often share one between all messages.
    configs = list(content.config_records.items())
    if len(configs) > 1:
        raise ValueError("train messages with several ConfigRecords are ambiguous for flrd")
    key, config = configs[0] if configs else ("config", ConfigRecord())
    new = RecordDict(dict(content.items()))
    new[key] = ConfigRecord({**config, **request.to_config()})
    return new


def _mean_metric(replies: Sequence[Message], key: str, weights: np.ndarray) -> float | None:
    values = []
    for reply in replies:
        found = [r[key] for name, r in reply.content.metric_records.items()
                 if name != METRICS_RECORD and isinstance(r.get(key), int | float)]
        if not found:
            return None
        values.append(float(found[0]))  # type: ignore[arg-type]
    value = float(np.dot(weights, values))
    return value if math.isfinite(value) else None

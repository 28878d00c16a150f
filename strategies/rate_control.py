"""RateControl: the round flow of every flrd strategy, as a mixin over any Flower strategy.

Put it first in the bases, ``class MyStrategy(RateControl, FedProx)``, or wrap an instance
with :class:`~flrd.strategies.CompressedStrategy`. The flow is written once, here:

1. ``configure_train``: the base strategy samples nodes and builds its train messages
   (``super().configure_train``); RateControl plans the round with its
   :class:`~flrd.policy.RatePolicy` and writes one
   :class:`~flrd.protocol.CompressionRequest` into each message.
2. ``aggregate_train``: every reply is checked and decoded; the accepted updates are
   handed to :meth:`~RateControl.aggregate_decoded` (by default the base strategy's own
   ``aggregate_train`` on replies that carry plain weights, ``global + update``); the
   policy observes the round and the round's :class:`~flwr.app.MetricRecord` reports
   the realized bits beside the bounds.

Hooks, one decision each (override in a subclass):

- :meth:`~RateControl.noise_targets`: the distortion rule (per-layer noise variance).
- :meth:`~RateControl.client_targets`: per-client targets (e.g. water-filling).
- :meth:`~RateControl.codec_for`: the compression request of one client.
- :meth:`~RateControl.aggregation_weights`: the linear weights of the decoded updates.
- :meth:`~RateControl.aggregate_decoded`: how decoded updates become the new model.
- :meth:`~RateControl.estimation_updates`: which updates feed the ``sx2``/``s2`` estimates.
- :meth:`~RateControl.observe_round`: what the strategy learns from a decoded round.

Hooks receive what they need as arguments (the :class:`SentRound` of the round, the
decoded updates); the only state kept between ``configure_train`` and
``aggregate_train`` is that SentRound.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from logging import INFO, WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedProx, FedYogi

from flrd import theory
from flrd.codecs import codec_class
from flrd.codecs.base import FixedRateCodec
from flrd.policy import RatePolicy, RoundPlan
from flrd.protocol import AUDIT_RECORD, METRICS_RECORD, CompressionRequest
from flrd.state_file import require_int
from flrd.trust_region import TrustRegionPolicy

from .aggregation import (
    Arrays,
    apply_update,
    example_weights,
    inverse_variance_weights,
    to_record,
)
from .decoding import (
    ClientUpdate,
    DecodedRound,
    DeferredReply,
    RejectedReply,
    SentRound,
    SideInformation,
    UpdateDecoder,
    decode_reply,
    reply_payload_bytes,
    reply_record_bytes,
    reply_report_bytes,
)
from .reporting import format_round, round_metrics
from .validation import app_metrics_problem, majority, metrics_layout, outlying

__all__ = ["Aggregate", "RateControl", "mean_aggregator"]

StateDict = dict[str, int | float | list[float]]
_POLICY_PREFIX = "policy."
EXAMPLES_SPREAD = 1000.0  # a reply claiming more examples than this x the round's median is left out
UPDATE_SQNORM_SPREAD = 100.0  # likewise for the update's squared norm (10x the norm)
# Base strategies whose model estimate is the example-weighted mean of the replies
# (FedOpt variants and FedAvgM then step a server optimizer along it).
_MEAN_AGGREGATORS = (FedAvg.aggregate_train, FedAdam.aggregate_train, FedYogi.aggregate_train,
                     FedAdagrad.aggregate_train, FedAvgM.aggregate_train, FedProx.aggregate_train)


@dataclass(frozen=True)
class Aggregate:
    """What :meth:`RateControl.aggregate_decoded` returns.

    Attributes:
        arrays: the new global model (None: the model does not move this round).
        metrics: the base strategy's aggregated app metrics.
        weights: ``(K, L)`` linear weights of the decoded updates in the model
            estimate, when the estimate is linear; they give the distortion measures.
    """

    arrays: ArrayRecord | None
    metrics: MetricRecord | None
    weights: np.ndarray | None


class RateControl:
    """Mixin adding rate-distortion-controlled compressed uplink to a Message-API strategy.

    Parameters
    ----------
    policy : RatePolicy, optional
        The distortion rule's state. Built by :meth:`make_policy` from the model's
        layer sizes in the first round when not given (the trust-region rule;
        ``RatePolicy`` is Corollary 3).
    codec : str (default: "dithered")
        ``flrd.codecs`` name the clients encode with.
    bits : float, optional
        Fixed rate in bits per coordinate (m22, qsgd, topk baselines). When unset the
        clients get per-layer noise-variance targets from the distortion rule.
    error_feedback : bool (default: False)
        Ask clients to carry their compression error into the next round.
    audit : bool (default: False)
        Ask clients to also send the exact update (not counted as uplink bits) so the
        realized distortion can be measured; for experiments.
    seed : int (default: 0)
        Base of the per-round seeds sent to clients.
    decoder : UpdateDecoder, optional
        Turns payloads into updates; replace it for side-information decoding.
    loss_key : str (default: "train_loss")
        Client metric passed to the policy as the round's loss, when present.
    min_replies : int (default: 0)
        Stop the run (``RuntimeError`` naming the round and the counts) when fewer
        replies survive a round's checks. With 0 a round that keeps none logs a
        warning and leaves the model where it was.
    **kwargs
        Passed on to the base strategy (e.g. ``fraction_train``, ``proximal_mu``).

    Examples
    --------
    >>> from flwr.serverapp.strategy import FedProx
    >>> class CompressedFedProx(RateControl, FedProx):
    ...     pass
    >>> strategy = CompressedFedProx(proximal_mu=0.1, codec="dithered")
    """

    def __init__(self, *, policy: RatePolicy | None = None, codec: str = "dithered",
                 bits: float | None = None, error_feedback: bool = False,
                 audit: bool = False, seed: int = 0, decoder: UpdateDecoder | None = None,
                 loss_key: str = "train_loss", min_replies: int = 0, **kwargs: object) -> None:
        super().__init__(**kwargs)
        codec_class(codec)  # an unknown name fails here, not in every client
        if bits is not None and not 0 < bits <= 32:
            raise ValueError(f"bits must be in (0, 32] bits per coordinate, got {bits!r}")
        if not isinstance(min_replies, int) or isinstance(min_replies, bool) or min_replies < 0:
            raise ValueError(f"min_replies must be an integer >= 0, got {min_replies!r}")
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**64:
            raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
        fraction = getattr(self, "fraction_train", None)
        if fraction is not None and not 0 < fraction <= 1:
            raise ValueError(f"fraction_train must be in (0, 1] for a compressed strategy, "
                             f"got {fraction!r}")
        self.policy = policy
        self.codec = codec
        self.bits = None if bits is None else float(bits)
        self.error_feedback = error_feedback
        self.audit = audit
        self.seed = seed
        self.decoder = decoder if decoder is not None else UpdateDecoder()
        self.loss_key = loss_key
        self.min_replies = min_replies
        self.rounds_completed = 0
        self.previous_update: Arrays | None = None
        self.sent_round: SentRound | None = None
        self._policy_state: StateDict | None = None
        self.last_round_metrics = MetricRecord()  # for per-round printing in a ServerApp

    # ------------------------------------------------------------------ hooks
    def make_policy(self, layer_sizes: list[int]) -> RatePolicy:
        """The policy used when none was given (called once, in the first round): the
        trust-region rule (docs/THEORY.md §17), which needs no warm-up round. Pass
        ``policy=RatePolicy(layer_sizes)`` for Corollary 3."""
        return TrustRegionPolicy(layer_sizes)

    def noise_targets(self, server_round: int, plan: RoundPlan) -> np.ndarray | None:
        """The distortion rule: per-layer quantization-noise variance every client adds.

        ``None`` means warm-up: clients add noise relative to their own update
        (``plan.warmup_relative_noise``). Override to impose another rule.
        """
        return None if plan.warmup else np.asarray(plan.noise_var_per_layer, dtype=np.float64)

    def client_targets(self, server_round: int, node_ids: Sequence[int],
                       targets: np.ndarray) -> dict[int, np.ndarray]:
        """Per-client targets from the shared ones (hook for per-client rates)."""
        return {node_id: targets for node_id in node_ids}

    def codec_for(self, server_round: int, node_id: int, plan: RoundPlan,
                  targets: np.ndarray | None) -> CompressionRequest:
        """The compression request of one client: codec, rate or noise target, options."""
        request = CompressionRequest(codec=self.codec, error_feedback=self.error_feedback,
                                     audit=self.audit, seed=self._round_seed())
        if self.bits is not None:
            return replace(request, bits=self.bits)
        if targets is None:
            return replace(request, relative_noise=plan.warmup_relative_noise)
        return replace(request, noise_var=tuple(float(t) for t in targets))

    def aggregation_weights(self, updates: Sequence[ClientUpdate], sent: SentRound) -> np.ndarray:
        """Weights ``(K, L)``, each column summing to 1: by examples, or inverse variance.

        Inverse-variance weights ``1 / (s2_l + target_kl)`` are the minimum-variance
        unbiased combination when clients were given different noise targets; with
        equal targets they reduce to equal weights, so the examples decide (FedAvg).
        """
        by_examples = example_weights(updates, len(sent.global_arrays))
        targets = [u.noise_var for u in updates]
        if any(t is None for t in targets) or all(np.array_equal(t, targets[0]) for t in targets):
            return by_examples
        stacked = np.stack(targets)  # type: ignore[arg-type]
        # The policy observes only after aggregation: its s2 is the one the round was planned with.
        known = self.policy is not None and self.policy.s2 is not None
        s2 = np.broadcast_to(self.policy.s2 if known else 0.0, stacked.shape[1:])  # type: ignore[union-attr]
        if np.any(s2 + stacked <= 0):
            return by_examples  # a client was asked for an exact layer: no finite weight
        return inverse_variance_weights(stacked, s2)

    def aggregate_decoded(self, server_round: int, decoded: DecodedRound) -> Aggregate:
        """The base strategy's ``aggregate_train`` on replies carrying plain weights.

        Each accepted reply reaches it as a plain Flower app would send it: its
        ArrayRecord holds ``global + decoded update`` and flrd's records are removed.
        The weights returned are the example weights when the base strategy's model
        estimate is the example-weighted mean (FedAvg, FedProx, FedOpt variants,
        FedAvgM), else None (FedMedian, Krum, ...).
        """
        plain = _plain_replies(decoded)
        arrays, metrics = super().aggregate_train(server_round, plain)  # type: ignore[misc]
        weights = None
        if self.mean_aggregator():
            weights = example_weights(decoded.updates, len(decoded.sent.global_arrays))
        return Aggregate(arrays, metrics, weights)

    def follows_targets(self) -> bool:
        """Whether the clients' codec meets the rule's noise targets (an unbiased codec
        with a noise knob, no fixed rate): only then are the planned lambda and
        distortion reported; SignSGD, Top-k, M22 and float32 ignore them."""
        codec = codec_class(self.codec)
        return self.bits is None and codec.unbiased and not issubclass(codec, FixedRateCodec)

    def mean_aggregator(self) -> bool:
        """Whether the base strategy's model estimate is the example-weighted mean."""
        return mean_aggregator(type(self))

    def estimation_updates(self, decoded: DecodedRound) -> list[ClientUpdate]:
        """The updates the ``sx2``/``s2`` estimates use (all accepted ones; override to filter)."""
        return decoded.updates

    def decode_reply(self, reply: Message, side: SideInformation,
                     sent: SentRound) -> ClientUpdate:
        """Check and decode one reply with :attr:`decoder`; raise RejectedReply to drop it."""
        return decode_reply(reply, self.decoder, side, sent.targets[reply.metadata.src_node_id])

    # ------------------------------------------------------------- round flow
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """The base strategy's train messages, each with its compression request."""
        messages = list(super().configure_train(server_round, arrays, config, grid))  # type: ignore[misc]
        global_arrays = {name: array.numpy() for name, array in arrays.items()}
        self._ensure_policy([int(v.size) for v in global_arrays.values()])
        if not messages:
            self.sent_round = None
            return messages
        self.sent_round = self._plan(server_round, global_arrays,
                                     [m.metadata.dst_node_id for m in messages])
        for msg in messages:
            msg.content = _with_request(msg.content, self.sent_round.requests[msg.metadata.dst_node_id])
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Decode and check the replies, aggregate them, observe and report the round."""
        sent = self._sent(server_round)
        decoded = self._decode_replies(sent, replies)
        self._check_survivors(server_round, decoded)
        result = (self.aggregate_decoded(server_round, decoded) if decoded.updates
                  else Aggregate(None, None, None))
        applied = None
        if result.arrays is not None:
            applied = {name: array.numpy().astype(np.float64) - sent.global_arrays[name]
                       for name, array in result.arrays.items()}
        metrics = MetricRecord(dict(result.metrics or {}))
        metrics.update(self.observe_round(decoded, applied, result.weights))
        self.last_round_metrics = metrics
        log(INFO, "%s", format_round(metrics))
        return result.arrays, metrics

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

        Raises ``flrd.state_file.StateError`` naming the field when a value is invalid.

        The side information of the last round is not part of the state: the first
        round after a restart decodes without a previous update.
        """
        self.rounds_completed = require_int(state, "rounds-completed", minimum=0)
        policy_state = {k[len(_POLICY_PREFIX):]: v for k, v in state.items()
                        if k.startswith(_POLICY_PREFIX)}
        if self.policy is not None and policy_state:
            self.policy.load_state_dict(policy_state)
        else:  # applied once the policy exists (its layer sizes come with the model)
            self._policy_state = policy_state or None

    # ---------------------------------------------------------------- helpers
    def _plan(self, server_round: int, global_arrays: Arrays, node_ids: list[int]) -> SentRound:
        assert self.policy is not None
        self.policy.observe_model([float(np.mean(np.square(a, dtype=np.float64))) if a.size else 0.0
                                   for a in global_arrays.values()])
        plan = self.policy.plan(num_clients=len(node_ids))
        shared = None if self.bits is not None else self.noise_targets(server_round, plan)
        targets: dict[int, np.ndarray | None] = (
            dict.fromkeys(node_ids) if shared is None
            else dict(self.client_targets(server_round, node_ids, shared)))
        for node_id in node_ids:
            _check_targets(node_id, targets.get(node_id), len(global_arrays), shared is None)
        requests = {n: self.codec_for(server_round, n, plan, targets[n]) for n in node_ids}
        return SentRound(server_round, plan, global_arrays, requests, targets)

    def _decode_replies(self, sent: SentRound, replies: Iterable[Message]) -> DecodedRound:
        """Decode every reply that can be trusted; log why any other is left out.

        Replies are taken in node-id order, so the aggregate does not depend on the
        order in which they arrived. Exclusions are counted by kind in ``decoded.excluded``.
        """
        started = time.perf_counter()
        decoded = DecodedRound(sent)
        weight_key = getattr(self, "weighted_by_key", None)
        deferred: list[Message] = []
        for reply in sorted(replies, key=lambda r: r.metadata.src_node_id):
            decoded.num_replies += 1
            decoded.uplink_bytes += reply_payload_bytes(reply)
            decoded.report_bytes += reply_report_bytes(reply)
            decoded.reply_bytes += reply_record_bytes(reply)
            node_id = reply.metadata.src_node_id
            if reply.has_error():
                decoded.num_failed += 1
                log(WARNING, "flrd: node %s failed: %s", node_id, reply.error.reason)
                continue
            self._accept(reply, decoded, weight_key, deferred)
        self.retry_deferred(decoded, deferred, weight_key)
        self._screen(decoded, weight_key)
        decoded.decode_seconds = time.perf_counter() - started
        return decoded

    def _accept(self, reply: Message, decoded: DecodedRound, weight_key: str | None,
                deferred: list[Message] | None) -> bool:
        """Decode ``reply`` into ``decoded``; False when it was left out or, with a
        ``deferred`` list, set aside there for :meth:`retry_deferred`."""
        try:
            update = self._decode_checked(reply, decoded, weight_key)
        except DeferredReply as err:
            if deferred is None:
                raise RuntimeError("a decoder deferred a reply on its last try") from err
            deferred.append(reply)
            return False
        except RejectedReply as err:
            self._exclude(decoded, reply.metadata.src_node_id, err.args[0], str(err.__cause__ or err))
            return False
        decoded.updates.append(update)
        decoded.replies.append(reply)
        return True

    def retry_deferred(self, decoded: DecodedRound, deferred: list[Message], weight_key: str | None) -> None:
        """Decode the replies the decoder deferred, now that the others are in (hook;
        the default decoder never defers)."""
        for reply in deferred:
            self._accept(reply, decoded, weight_key, None)

    def _decode_checked(self, reply: Message, decoded: DecodedRound,
                        weight_key: str | None) -> ClientUpdate:
        node_id = reply.metadata.src_node_id
        if node_id not in decoded.sent.requests:
            raise RejectedReply("protocol") from RejectedReply("the node was not asked to train")
        if any(u.node_id == node_id for u in decoded.updates):
            raise RejectedReply("protocol") from RejectedReply("a second reply from the same node")
        if problem := app_metrics_problem(reply, weight_key):
            raise RejectedReply("metrics") from RejectedReply(problem)
        side = SideInformation(decoded.sent.server_round, decoded.sent.global_arrays,
                               self.previous_update, [u.update for u in decoded.updates],
                               request=decoded.sent.requests[node_id], node_id=node_id,
                               decoded_nodes=[u.node_id for u in decoded.updates])
        try:
            return self.decode_reply(reply, side, decoded.sent)
        except DeferredReply:
            raise
        except RejectedReply as err:
            raise RejectedReply("payload") from err
        except Exception as err:  # a crafted record must cost its own reply only
            raise RejectedReply("payload") from RejectedReply(f"{type(err).__name__}: {err}")

    def _screen(self, decoded: DecodedRound, weight_key: str | None) -> None:
        """Leave out accepted replies that stand out from their round: metrics laid out
        unlike the majority's, examples or update norms far above the round's median."""
        updates, replies = decoded.updates, decoded.replies
        layouts = majority([metrics_layout(r) for r in replies])
        examples = np.array([_weight(r, weight_key, u) for r, u in zip(replies, updates, strict=True)])
        relative = [decoded.sent.requests[u.node_id].relative_noise for u in updates]
        big_update = _outlying_updates(updates, relative)
        reasons = [("metrics", "its metrics are laid out unlike the other replies'") if not same
                   else ("outlier", f"{examples[i]:.3g} examples, over {EXAMPLES_SPREAD:g}x the "
                                    "round's median") if far
                   else ("outlier", f"update norm over {math.sqrt(UPDATE_SQNORM_SPREAD):g}x the "
                                    "round's median") if big
                   else None
                   for i, (same, far, big) in enumerate(zip(
                       layouts, outlying(examples, EXAMPLES_SPREAD), big_update, strict=True))]
        for reply, reason in zip(replies, reasons, strict=True):
            if reason is not None:
                self._exclude(decoded, reply.metadata.src_node_id, *reason)
        decoded.updates = [u for u, r in zip(updates, reasons, strict=True) if r is None]
        decoded.replies = [m for m, r in zip(replies, reasons, strict=True) if r is None]

    def _check_survivors(self, server_round: int, decoded: DecodedRound) -> None:
        kept = len(decoded.updates)
        counts = (f"{kept} of {len(decoded.sent.requests)} sampled replies kept ({decoded.num_failed} "
                  f"failed, {decoded.num_rejected} left out, "
                  f"{len(decoded.sent.requests) - decoded.num_replies} missing)")
        if kept < self.min_replies:
            raise RuntimeError(f"flrd: round {server_round}: {counts}, fewer than "
                               f"min_replies={self.min_replies}; stopping the run")
        if kept == 0:
            log(WARNING, "flrd: round %s: %s; the model did not move", server_round, counts)

    def _exclude(self, decoded: DecodedRound, node_id: int, kind: str, reason: str) -> None:
        decoded.num_rejected += 1
        decoded.excluded[kind] += 1
        log(WARNING, "flrd: reply from node %s left out (%s): %s", node_id, kind, reason)

    def observe_round(self, decoded: DecodedRound, applied: Arrays | None,
                      weights: np.ndarray | None) -> MetricRecord:
        """Feed the policy, keep the applied update as side information, report the round.

        ``applied`` is the update that moved the global model (None if it did not move);
        ``weights`` ``(K, L)`` are the linear aggregation weights, if any.
        """
        started = time.perf_counter()
        self._observe_policy(decoded)
        decoded.estimate_seconds = time.perf_counter() - started
        self.previous_update = applied
        self.rounds_completed += 1
        return round_metrics(self.rounds_completed, decoded, self.policy, applied, weights,
                             rate_controlled=self.follows_targets())

    def _observe_policy(self, decoded: DecodedRound) -> None:
        updates = self.estimation_updates(decoded)
        if len(updates) < 2 or self.policy is None:
            log(INFO, "flrd: %d usable replies; variance estimates unchanged", len(updates))
            return
        by_examples = example_weights(updates, len(decoded.sent.global_arrays))
        # THEORY.md §8 assumes quantization errors independent of the gradient, which
        # biased codecs (sign, top-k) break: their estimates use the audited exact
        # updates when there are any. Unbiased codecs estimate from what was decoded, as
        # in a deployment without audit, so a simulation measures the deployed system.
        exact = not codec_class(self.codec).unbiased and all(u.exact is not None for u in updates)
        replies = {id(u): r for u, r in zip(decoded.updates, decoded.replies, strict=True)}
        try:
            # sx2 from the updates' cross products: no declared statistic enters it
            # (docs/THEORY.md §13); the declared m2 only splits off s2.
            signal = [theory.signal_power(np.stack([(u.exact if exact else u.update)[name]  # type: ignore[index]
                                                    for u in updates]), self.policy.robust_fraction)
                      for name in updates[0].update]
            self.policy.observe(
                m2_k=np.array([u.report.m2 for u in updates]), weights=by_examples[:, 0],
                signal_power=np.array(signal),
                loss_k=_client_losses([replies[id(u)] for u in updates], self.loss_key))
        except ValueError as err:  # e.g. all weight on one client: nothing to learn
            log(WARNING, "flrd: policy did not observe this round: %s", err)

    def _sent(self, server_round: int) -> SentRound:
        if self.sent_round is None:
            raise RuntimeError("aggregate_train called without a configured round")
        if server_round != self.sent_round.server_round:
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


def mean_aggregator(strategy_class: type) -> bool:
    """True when the strategy's ``aggregate_train`` (the first after RateControl's in the
    MRO) is FedAvg's example-weighted mean, or a FedOpt/FedAvgM step along it."""
    mro = strategy_class.__mro__
    start = mro.index(RateControl) + 1 if RateControl in mro else 0
    for cls in mro[start:]:
        if "aggregate_train" in vars(cls):
            return vars(cls)["aggregate_train"] in _MEAN_AGGREGATORS
    return False


def _outlying_updates(updates: Sequence[ClientUpdate], relative_noise: Sequence[float | None]) -> np.ndarray:
    """Updates whose squared norm exceeds ``UPDATE_SQNORM_SPREAD`` times what their noise
    targets plus the round's median signal power (``m2 - target``, per layer) explain:
    far beyond what honest training and the requested quantization noise produce.

    A warm-up target (``relative_noise`` times the client's own ``m2``) is read at the
    round's median transmitted ``m2``, so a forged statistic cannot widen its own
    tolerance. Summed over the model, not layer by layer: at very low SNR the sparse
    codec keeps a handful of coordinates (0 to 3 of 200 at SNR 1/512), so a decoded
    layer's power swings by orders of magnitude between honest clients, and the
    round's median power says nothing about the noise."""
    if not updates:
        return np.zeros(0, dtype=bool)
    power = np.array([[float(np.mean(np.square(v))) if v.size else 0.0 for v in u.update.values()]
                      for u in updates])
    sizes = np.array([v.size for v in updates[0].update.values()], dtype=np.float64)
    median_m2 = np.median(np.array([u.report.m2 for u in updates], dtype=np.float64), axis=0)
    noise = np.array([u.noise_var if u.noise_var is not None
                      else (rel or 0.0) * median_m2
                      for u, rel in zip(updates, relative_noise, strict=True)], dtype=np.float64)
    signal = np.median(np.maximum(power - noise, 0.0), axis=0)
    sqnorm, expected = power @ sizes, (noise + signal) @ sizes
    return sqnorm > UPDATE_SQNORM_SPREAD * np.where(expected > 0, expected, np.inf) \
        if len(updates) >= 3 else np.zeros(len(updates), dtype=bool)


def _weight(reply: Message, weight_key: str | None, update: ClientUpdate) -> float:
    """The example count the base strategy will weight ``reply`` by."""
    for name, record in reply.content.metric_records.items():
        if name != METRICS_RECORD and weight_key is not None and weight_key in record:
            return float(record[weight_key])  # type: ignore[arg-type]
    return update.report.num_examples


def _plain_replies(decoded: DecodedRound) -> list[Message]:
    """The accepted replies with ``global + update`` (global dtypes) in place of the payload
    and without flrd's records, changed in place."""
    for reply, update in zip(decoded.replies, decoded.updates, strict=True):
        content = RecordDict({k: v for k, v in reply.content.items()
                              if k not in (METRICS_RECORD, AUDIT_RECORD)})
        key = next(iter(content.array_records))
        content[key] = to_record(apply_update(decoded.sent.global_arrays, update.update))
        reply.content = content
    return decoded.replies


def _check_targets(node_id: int, targets: np.ndarray | None, num_layers: int,
                   warmup: bool) -> None:
    # A wrong rule would make every client fail; stop at the server instead.
    if warmup and targets is None:
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


def _client_losses(replies: Sequence[Message], key: str) -> np.ndarray | None:
    """Each reply's ``key`` metric (NaN where missing); None when no reply has it.

    The policy tracks their median, so one absurd value cannot steer the back-off.
    """
    values = []
    for reply in replies:
        found = [r[key] for name, r in reply.content.metric_records.items()
                 if name != METRICS_RECORD and isinstance(r.get(key), int | float)]
        values.append(float(found[0]) if found else math.nan)  # type: ignore[arg-type]
    return None if all(math.isnan(v) for v in values) else np.array(values)

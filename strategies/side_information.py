"""SideInformationFedAvg: Wyner-Ziv coding of the clients' updates (docs/wyner_ziv.md).

Each round the strategy plans, per layer, which clients code against the server's side
information (:func:`flrd.sideinfo.plan_layer`: the successive-decoding vertex of the
CEO rate region, with the cheapest practical code per position) and sends each client
its per-layer Wyner-Ziv parameters in the compression request. The server decodes the
replies in node-id order, the order it planned: every Wyner-Ziv layer against the MMSE
estimate from the replies already accepted (:class:`WynerZivDecoder`). A layer the
side information does not help, the first reply of a round, and every layer before the
server has a variance profile for it (the first round) are coded independently.

Only accepted replies feed the side information, and a reply's values feed it only
when they lie near the estimate, so a hostile reply can spoil its own decoding, not an
honest one's. A reply whose Wyner-Ziv block fails its CRC waits until the round's
other replies are in and is decoded again against all of them, pass after pass while
some succeed; one that still fails is left out (``flrd.wz-failed``): the aggregate is
never silently corrupted.

Each position's choice compares the predicted Wyner-Ziv size with the independent
codec's, the latter scaled by what independent replies measurably cost against their
prediction (real updates are not Gaussian). The variance profiles, that scale and the
mean reported ``m2`` of the last two rounds are part of :meth:`state_dict`, so a
restarted run plans the same codes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from logging import WARNING

import numpy as np
from flwr.app import Message, MetricRecord
from flwr.common import log

from flrd.codecs import CodecError
from flrd.codecs.message import DecodedUpdate
from flrd.protocol import INDEPENDENT_BITS, METRICS_RECORD, WynerZivLayer
from flrd.sideinfo import plan_layer, wyner_ziv
from flrd.sideinfo.allocation import MIN_WZ_COORDS, independent_bits_per_coord
from flrd.sideinfo.profile import PowerSums, RankOneProfile, RunningProfile, power_sums
from flrd.sideinfo.successive import Observed, Posterior
from flrd.state_file import StateError

from .aggregation import Arrays
from .decoding import DecodedRound, DeferredReply, SentRound, SideInformation, UpdateDecoder
from .rate_aware import RateAwareFedAvg
from .rate_control import StateDict

__all__ = ["SideInformationFedAvg", "WynerZivDecoder"]

_PROFILE_PREFIX = "sideinfo.profile."
MAX_GROWTH = 1.5  # largest round-over-round growth of the updates' m2 extrapolated


@dataclass(frozen=True)
class _Layer:
    """The decoder's model of one layer this round."""

    shape: tuple[int, ...]
    sx2: float | None  # None: no Wyner-Ziv code this round; the layer only teaches the profile
    s2: float | None
    profile: np.ndarray | None


class WynerZivDecoder(UpdateDecoder):
    """Decodes Wyner-Ziv layers against the replies accepted before them this round.

    The strategy announces each round's layer models (:meth:`start_round`); the
    decoder keeps, per node it decoded, the values that may become side information
    (a Wyner-Ziv layer's dithered values on its coded coordinates; an independent
    dithered layer's coded coordinates, unscaled) until the strategy has accepted the
    reply (``side.decoded_nodes``), feeds them into the estimate then and drops them;
    only their row and column power sums stay for the round's profiles.
    """

    def __init__(self) -> None:
        self.layers: dict[str, _Layer] = {}
        self.server_round = -1
        self.posteriors: dict[str, Posterior] = {}
        self.coded: dict[int, dict[str, tuple[np.ndarray, float, PowerSums]]] = {}  # until fed
        self.sums: dict[int, dict[str, PowerSums]] = {}
        self.fed: set[int] = set()
        self.decoded_payloads = 0
        self.failed_replies = 0
        self.defer = True  # a failed layer defers its reply until the round's others are in

    def start_round(self, server_round: int, layers: dict[str, _Layer]) -> None:
        """Forget the last round; model ``layers`` (name -> model) this round."""
        self.server_round, self.layers = server_round, layers
        self.posteriors = {name: Posterior(np.zeros(int(np.prod(m.shape))), max(m.sx2, 1e-12 * m.s2), m.s2,
                                           m.profile, m.shape)
                           for name, m in layers.items() if m.sx2 is not None and m.s2 is not None}
        self.coded, self.sums, self.fed = {}, {}, set()
        self.decoded_payloads = self.failed_replies = 0

    def decode(self, payload: bytes, side: SideInformation) -> DecodedUpdate:
        """The update with its Wyner-Ziv layers decoded against the side information;
        DeferredReply (or, on the last try, CodecError) when a block fails its CRC."""
        decoded = super().decode(payload, side)
        if side.server_round != self.server_round:
            if decoded.pending:
                raise CodecError("Wyner-Ziv layers in a round the decoder was not told about")
            return decoded
        self.feed(side.decoded_nodes)
        arrays, kept, payloads = dict(decoded.arrays), {}, 0
        for index, name in enumerate(side.global_arrays):
            if name in decoded.pending:
                if name not in self.posteriors:
                    raise CodecError(f"layer {name!r}: a Wyner-Ziv payload the server did not plan")
                post = self.posteriors[name]
                estimate = post.mean()
                out = wyner_ziv.decode(decoded.pending[name], estimate, estimate.size, side_var=post.spread())
                if not out.ok.all():
                    reason = (f"layer {name!r}: {out.failed_coords} coordinates failed their CRC "
                              "(side information too far from the update)")
                    if self.defer:
                        raise DeferredReply(reason)
                    self.failed_replies += 1
                    raise CodecError(reason)
                payloads += 1
                arrays[name] = out.values.reshape(np.shape(side.global_arrays[name]))
                kept[name] = (out.dithered, out.coded_noise_var)
            elif name in self.layers:
                observed = Observed.from_dithered(decoded.arrays[name], *decoded.coded[index])
                kept[name] = (np.asarray(observed.coded, dtype=np.float64), observed.coded_noise_var)
        self.coded[side.node_id] = {name: (values, noise, power_sums(values, noise, self.layers[name].shape))
                                    for name, (values, noise) in kept.items()}
        self.sums[side.node_id] = {name: sums for name, (_, _, sums) in self.coded[side.node_id].items()}
        self.decoded_payloads += payloads
        return replace(decoded, arrays={name: arrays[name] for name in side.global_arrays}, pending={})

    def feed(self, node_ids: Sequence[int]) -> None:
        """Add the accepted nodes' values to the side information (once each)."""
        for node_id in node_ids:
            if node_id in self.fed or node_id not in self.coded:
                continue
            self.fed.add(node_id)
            for name, (values, noise, sums) in self.coded.pop(node_id).items():
                post = self.posteriors.get(name)
                if post is not None and post.fits(values, noise):
                    post.add(values, noise, sums)

    def profiles(self, node_ids: list[int]) -> dict[str, RankOneProfile]:
        """Variance profiles of the modelled layers from the accepted nodes' values."""
        out = {}
        for name, layer in self.layers.items():
            running = RunningProfile(layer.shape, prior_weight=0.0)
            for node_id in node_ids:
                if name in self.sums.get(node_id, {}):
                    running.add_sums(self.sums[node_id][name])
            if (fitted := running.fit()) is not None:
                out[name] = fitted
        return out


class SideInformationFedAvg(RateAwareFedAvg):
    """:class:`RateAwareFedAvg` whose clients code against the server's side information.

    Parameters
    ----------
    tail_df : int (default: 0)
        Residual law of the Wyner-Ziv payloads (0 Gaussian, else Student t); with the
        variance profile, MNIST residuals are near Gaussian (docs/wyner_ziv.md).
    **kwargs
        As :class:`RateAwareFedAvg`; ``decoder`` is always a :class:`WynerZivDecoder`.

    Examples
    --------
    >>> strategy = SideInformationFedAvg(fraction_train=0.1)
    >>> type(strategy.decoder).__name__
    'WynerZivDecoder'
    """

    def __init__(self, *, tail_df: int = 0, **kwargs: object) -> None:
        kwargs.pop("decoder", None)
        super().__init__(decoder=WynerZivDecoder(), **kwargs)  # type: ignore[arg-type]
        if tail_df not in wyner_ziv.TAIL_DFS:
            raise ValueError(f"tail_df must be 0 (Gaussian) or an integer in [6, 30], got {tail_df!r}")
        self.tail_df = tail_df
        self.profiles: dict[str, RankOneProfile] = {}
        self.round_choice: dict[str, int] = {}
        self.independent_scale = 1.0  # measured / predicted size of independent replies
        self.last_m2: np.ndarray | None = None  # mean reported m2 per layer, last round
        self.previous_m2: np.ndarray | None = None  # and the round before

    def _plan(self, server_round: int, global_arrays: Arrays, node_ids: list[int]) -> SentRound:
        sent = super()._plan(server_round, global_arrays, node_ids)
        layers = self._layer_models(sent, global_arrays)
        assert isinstance(self.decoder, WynerZivDecoder)
        self.decoder.start_round(server_round, layers)
        self.round_choice = {}
        codes: dict[int, list[WynerZivLayer | None]] = {n: [None] * len(global_arrays) for n in node_ids}
        order = sorted(node_ids)
        for index, name in enumerate(global_arrays):
            model, target = layers.get(name), sent.targets[order[0]]
            if model is None or model.profile is None or model.sx2 is None or model.s2 is None or target is None:
                continue
            noise = float(target[index])
            plan = plan_layer(model.sx2, model.s2, len(order), (model.s2 + noise) / len(order),
                              n=int(np.prod(model.shape)), tail_df=self.tail_df, profile=model.profile,
                              independent_scale=self.independent_scale,
                              independent_m2=self._expected_m2(index, model))
            for node_id, client in zip(order, plan.clients):
                if client.coding == "wz":
                    codes[node_id][index] = WynerZivLayer(client.step, client.cond_std, client.keep_prob,
                                                          client.rates)
            self.round_choice[name] = sum(c.coding == "wz" for c in plan.clients)
        requests = {n: replace(r, wyner_ziv=tuple(codes[n]), wz_tail_df=self.tail_df)
                    if any(codes[n]) else r for n, r in sent.requests.items()}
        return replace(sent, requests=requests)

    def _layer_models(self, sent: SentRound, global_arrays: Arrays) -> dict[str, _Layer]:
        """Layers the decoder models: 2-D or larger and big enough. Their variances
        (``sx2``, ``s2``; None when no Wyner-Ziv code can be planned this round: no
        live estimates, no shared noise target, a fixed-rate or error-feedback run)
        and the profile learned so far. Every modelled layer's replies teach the
        profile, the warm-up round's included."""
        policy = self.policy
        targets = list(sent.targets.values())
        plannable = not (policy is None or policy.sx2 is None or policy.s2 is None or self.bits is not None
                         or self.codec != "dithered" or self.error_feedback or any(t is None for t in targets)
                         or not all(np.array_equal(t, targets[0]) for t in targets))
        growth = self._growth() if plannable else None
        models = {}
        for index, (name, array) in enumerate(global_arrays.items()):
            if np.ndim(array) < 2 or np.size(array) < MIN_WZ_COORDS:
                continue
            profile = self.profiles.get(name)
            model = _Layer(tuple(np.shape(array)), None, None, None if profile is None else profile.expand())
            if growth is not None:
                s2 = float(policy.s2[index]) * growth[index]  # type: ignore[index, union-attr]
                sx2 = float(policy.sx2[index]) * growth[index]  # type: ignore[index, union-attr]
                if s2 > 0 and math.isfinite(sx2) and targets[0][index] > 0:  # type: ignore[index]
                    model = replace(model, sx2=max(sx2, 0.0), s2=s2)
            models[name] = model
        return models

    def retry_deferred(self, decoded: DecodedRound, deferred: list[Message], weight_key: str | None) -> None:
        """Retry the replies whose Wyner-Ziv layers failed against the side information
        of every reply accepted since, pass after pass while some decode; the rest get
        a last try and are left out if they still fail (``flrd.wz-failed``)."""
        assert isinstance(self.decoder, WynerZivDecoder)
        while deferred:
            still: list[Message] = []
            for reply in deferred:
                self._accept(reply, decoded, weight_key, still)
            if len(still) == len(deferred):
                break
            deferred = still
        self.decoder.defer = False
        try:
            super().retry_deferred(decoded, deferred, weight_key)
        finally:
            self.decoder.defer = True

    def _growth(self) -> np.ndarray:
        """Per layer, how much to scale the smoothed ``sx2``, ``s2`` for this round's
        codes: the mean reported ``m2`` of the last round, times its last
        round-over-round growth (1 to ``MAX_GROWTH``; ``MAX_GROWTH`` in the first
        planned round, which has none yet), over the estimates' ``sx2 + s2``, never
        below 1. Updates grow by 10-35 % a round early in training and the smoothed
        estimates lag: syndromes sized on them fail (residuals 1.4-1.9x the plan's,
        docs/wyner_ziv.md). Planning too wide only costs rate, which the choice
        against independent coding bounds."""
        policy = self.policy
        assert policy is not None and policy.sx2 is not None and policy.s2 is not None
        if self.last_m2 is None:
            return np.ones(len(policy.s2))
        trend = np.full(len(policy.s2), MAX_GROWTH) if self.previous_m2 is None else \
            np.clip(self.last_m2 / np.maximum(self.previous_m2, 1e-300), 1.0, MAX_GROWTH)
        return np.clip(self.last_m2 * trend / np.maximum(policy.sx2 + policy.s2, 1e-300), 1.0, 2 * MAX_GROWTH)

    def _expected_m2(self, index: int, model: _Layer) -> float | None:
        """This round's expected mean square of a layer's updates, for the cost of
        coding it independently: the last round's, times its last round-over-round
        ratio (0.5 to ``MAX_GROWTH``), shrinking included."""
        if self.last_m2 is None or self.previous_m2 is None:
            return None
        ratio = self.last_m2[index] / max(float(self.previous_m2[index]), 1e-300)
        expected = float(self.last_m2[index]) * min(max(ratio, 0.5), MAX_GROWTH)
        return expected if expected > 0 else None

    def observe_round(self, decoded: DecodedRound, applied: Arrays | None,
                      weights: np.ndarray | None) -> MetricRecord:
        """Learn the variance profiles from the round's accepted replies, then report
        the Wyner-Ziv choice and, in audit mode, the independent encodings' size."""
        assert isinstance(self.decoder, WynerZivDecoder)
        accepted = [u.node_id for u in decoded.updates]
        self.decoder.feed(accepted)
        self.profiles.update(self.decoder.profiles(accepted))
        if (scale := _independent_scale(decoded)) is not None:
            self.independent_scale = scale
        if decoded.updates:
            self.previous_m2 = self.last_m2
            self.last_m2 = np.mean([u.report.m2 for u in decoded.updates], axis=0)
        metrics = super().observe_round(decoded, applied, weights)
        metrics["flrd.wz-layers"] = sum(1 for k in self.round_choice.values() if k)
        metrics["flrd.wz-payloads"] = self.decoder.decoded_payloads
        metrics["flrd.wz-failed"] = self.decoder.failed_replies
        independent = _independent_bits(decoded)
        if independent is not None:
            metrics["flrd.independent-bits"] = independent
        return metrics

    def state_dict(self) -> StateDict:
        """:meth:`RateControl.state_dict` and the variance profiles (rank-1 factors)."""
        state = super().state_dict()
        state["sideinfo.independent-scale"] = self.independent_scale
        for key, m2 in (("sideinfo.last-m2", self.last_m2), ("sideinfo.previous-m2", self.previous_m2)):
            if m2 is not None:
                state[key] = [float(v) for v in m2]
        for name, profile in self.profiles.items():
            state[f"{_PROFILE_PREFIX}{name}.rows"] = [float(v) for v in profile.rows]
            state[f"{_PROFILE_PREFIX}{name}.cols"] = [float(v) for v in profile.cols]
        return state

    def load_state_dict(self, state: StateDict) -> None:
        super().load_state_dict({k: v for k, v in state.items() if not k.startswith("sideinfo.")})
        scale = state.get("sideinfo.independent-scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not (math.isfinite(scale) and scale > 0):
            raise StateError("sideinfo.independent-scale", f"must be a finite number > 0, got {scale!r}")
        self.independent_scale = float(scale)
        for attr, key in (("last_m2", "sideinfo.last-m2"), ("previous_m2", "sideinfo.previous-m2")):
            value = state.get(key)
            if value is not None and not (isinstance(value, list) and all(
                    isinstance(v, int | float) and math.isfinite(v) and v >= 0 for v in value)):
                raise StateError(key, f"must be a list of finite numbers >= 0, got {value!r}")
            setattr(self, attr, None if value is None else np.array(value, dtype=np.float64))
        names = {k[len(_PROFILE_PREFIX):].rsplit(".", 1)[0] for k in state if k.startswith(_PROFILE_PREFIX)}
        profiles = {}
        for name in names:
            rows, cols = (state.get(f"{_PROFILE_PREFIX}{name}.{part}") for part in ("rows", "cols"))
            if not (isinstance(rows, list) and isinstance(cols, list)):
                raise StateError(f"{_PROFILE_PREFIX}{name}", "needs both rows and cols lists")
            try:
                profiles[name] = RankOneProfile(np.array(rows, dtype=np.float64), np.array(cols, dtype=np.float64))
            except ValueError as err:
                raise StateError(f"{_PROFILE_PREFIX}{name}", str(err)) from None
        self.profiles = profiles


def _independent_scale(decoded: DecodedRound) -> float | None:
    """Realized over predicted bits of the round's accepted replies that coded every
    layer independently at noise targets (at least the first in each planned round),
    each predicted at its own transmitted ``m2``; None when there are none."""
    realized = predicted = 0.0
    sizes = [int(np.size(a)) for a in decoded.sent.global_arrays.values()]
    for update in decoded.updates:
        request = decoded.sent.requests[update.node_id]
        if request.wyner_ziv is not None or request.noise_var is None or request.codec != "dithered":
            continue
        bits = 0.0
        for n, noise, m2 in zip(sizes, request.noise_var, update.report.m2):
            bits += 32.0 * n if noise == 0 else n * independent_bits_per_coord(noise, max(m2, 1e-300), n)
        realized += 8 * update.payload_bytes
        predicted += bits
    return realized / predicted if predicted > 0 else None


def _independent_bits(decoded: DecodedRound) -> int | None:
    """Audit: what the accepted replies would have sent without side information (a
    reply without Wyner-Ziv layers counts its own payload); None unless every
    Wyner-Ziv reply reported it."""
    total = 0
    for update, reply in zip(decoded.updates, decoded.replies, strict=True):
        request = decoded.sent.requests[update.node_id]
        if request.wyner_ziv is None:
            total += 8 * update.payload_bytes
            continue
        value = reply.content.metric_records.get(METRICS_RECORD, {}).get(INDEPENDENT_BITS)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            if request.audit:
                log(WARNING, "flrd: node %s sent no independent size in audit mode", update.node_id)
            return None
        total += value
    return total

"""The per-round MetricRecord: realized bits, outcomes, the plan's bounds, estimates.

Keys (all prefixed ``flrd.``): ``round``, ``uplink-bits`` (8 x payload bytes of every
reply that arrived), ``report-bits`` (8 x bytes of the ``flrd.metrics`` records sent
beside the payloads: the per-layer statistics the policy needs), ``accepted-bits``, ``sent``, ``replies``, ``accepted``,
``rejected``, ``failed``; ``weight-concentration`` (per layer ``sum_k w_kl^2`` of the
linear aggregation weights); flrd's own time: ``encode-seconds`` (summed over the accepted
clients), ``decode-seconds`` and ``estimate-seconds`` (server); the plan's ``lambda``, ``distortion-total``,
``distortion-per-layer``, ``warmup``, ``rounds-predicted``, ``r-sum-bits``,
``r-ind-bits``, ``signsgd-bits``, ``signsgd-r-ind-bits``, ``signsgd-r-sum-bits`` (bits
per round, all clients) at the planned distortion; the policy's ``sx2`` and ``s2`` per
layer; the realized distortion: ``quant-distortion`` (``sum_l n_l sum_k w_kl^2
qnoise_kl``), ``distortion-est`` (adds the gradient noise ``s2_l sum_k w_kl^2``) and, in
audit mode, ``audit-distortion`` (``||estimate - exact weighted mean||^2``); and the
bounds at that realized distortion, ``measured-r-sum-bits`` and ``measured-r-ind-bits``
(what any scheme reaching the same distortion needs; compare ``uplink-bits`` with them).
"""

from __future__ import annotations

import math

import numpy as np
from flwr.app import MetricRecord

from flrd.policy import RatePolicy

from .aggregation import Arrays, example_weights, weighted_mean
from .decoding import DecodedRound

__all__ = ["round_metrics"]


def round_metrics(round_index: int, decoded: DecodedRound, policy: RatePolicy | None,
                  applied: Arrays | None, weights: np.ndarray | None) -> MetricRecord:
    """The MetricRecord of one round (see the module docstring for the keys)."""
    metrics = MetricRecord({
        "flrd.round": round_index,
        "flrd.uplink-bits": 8 * decoded.uplink_bytes,
        "flrd.report-bits": 8 * decoded.report_bytes,
        "flrd.accepted-bits": 8 * sum(u.payload_bytes for u in decoded.updates),
        "flrd.sent": len(decoded.sent.requests),
        "flrd.replies": decoded.num_replies,
        "flrd.accepted": len(decoded.updates),
        "flrd.rejected": decoded.num_rejected,
        "flrd.failed": decoded.num_failed,
        "flrd.encode-seconds": float(sum(u.report.encode_seconds for u in decoded.updates)),
        "flrd.decode-seconds": decoded.decode_seconds,
        "flrd.estimate-seconds": decoded.estimate_seconds,
    })
    plan = decoded.sent.plan
    for key, value in plan.metrics().items():
        if math.isfinite(value):  # warm-up rounds have no lambda or D yet
            metrics["flrd." + key.replace("_", "-")] = float(value)
    if not plan.warmup:
        metrics["flrd.distortion-per-layer"] = [float(v) for v in plan.distortion_per_layer]
    if policy is not None and policy.sx2 is not None and policy.s2 is not None:
        metrics["flrd.sx2"] = [float(v) for v in policy.sx2]
        metrics["flrd.s2"] = [float(v) for v in policy.s2]
    if weights is not None and decoded.updates:
        metrics.update(_distortion(decoded, weights, policy))
        # sum_k w_kl^2 per layer: the error-free part of the distortion is s2_l times it.
        metrics["flrd.weight-concentration"] = [float(v) for v in np.sum(weights**2, axis=0)]
    if (audit := _audit_distortion(decoded, applied, weights)) is not None:
        metrics["flrd.audit-distortion"] = float(sizes_of(decoded) @ audit)
        metrics["flrd.audit-distortion-per-layer"] = [float(v) for v in audit]
        if weights is not None and policy is not None and policy.s2 is not None:
            # Measured beats modelled: bounds at the audited distortion.
            measured = np.asarray(policy.s2) * np.sum(weights**2, axis=0) + audit
            metrics.update(_measured_bounds(policy, measured, len(decoded.updates)))
    return metrics


def _measured_bounds(policy: RatePolicy, distortion: np.ndarray, num_clients: int) -> dict[str, float]:
    bounds = policy.rate_bounds(distortion, num_clients)
    return {"flrd.measured-" + key.replace("_", "-"): float(bounds[key])
            for key in ("r_sum_bits", "r_ind_bits") if math.isfinite(bounds[key])}


def sizes_of(decoded: DecodedRound) -> np.ndarray:
    """Coordinates per layer of the round's model."""
    return np.array([v.size for v in decoded.sent.global_arrays.values()], dtype=np.float64)


def _distortion(decoded: DecodedRound, weights: np.ndarray,
                policy: RatePolicy | None) -> dict[str, float]:
    sizes = sizes_of(decoded)
    qnoise = np.array([u.report.qnoise for u in decoded.updates])
    quant = np.sum(weights**2 * qnoise, axis=0)  # per layer, per coordinate
    out = {"flrd.quant-distortion": float(sizes @ quant)}
    if policy is not None and policy.s2 is not None:
        measured = np.asarray(policy.s2) * np.sum(weights**2, axis=0) + quant
        out["flrd.distortion-est"] = float(sizes @ measured)
        out.update(_measured_bounds(policy, measured, len(decoded.updates)))
    return out


def _audit_distortion(decoded: DecodedRound, applied: Arrays | None,
                      weights: np.ndarray | None) -> np.ndarray | None:
    """Per layer, ``||estimate_l - exact mean_l||^2 / n_l`` when every accepted client
    sent its exact update.

    The estimate is the weighted mean of the decoded updates for linear aggregation,
    otherwise the applied update (e.g. the majority vote).
    """
    updates = decoded.updates
    if not updates or any(u.exact is None for u in updates):
        return None
    estimate = weighted_mean(updates, weights) if weights is not None else applied
    if estimate is None:
        return None
    if weights is None:
        weights = example_weights(updates, len(decoded.sent.global_arrays))
    exact = weighted_mean(updates, weights, exact=True)
    return np.array([np.mean(np.square(estimate[k] - exact[k])) for k in exact])

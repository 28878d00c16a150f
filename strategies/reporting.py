"""The per-round MetricRecord, and its one-line summary.

Every rate and distortion key says whether it is **planned** (what the policy chose
before the round) or **measured** (what the round reached); ``modelled-signsgd-*`` are
the paper's SignSGD model (THEORY.md §6). Bits are per round, summed over clients.
Keys (all prefixed ``flrd.``):

- outcome: ``round``, ``sent``, ``replies``, ``accepted``, ``failed``, ``rejected`` and
  ``rejected-<kind>`` (``protocol``, ``metrics``, ``payload``, ``outlier``);
- realized cost: ``uplink-bits`` (8 x payload bytes of every reply that arrived,
  framing and statistics included), of the accepted replies ``framing-bits`` and
  ``stats-bits`` (parts of the payload), ``accepted-bits``, ``bits-per-coord``
  (accepted bits per client and coordinate); ``report-bits`` (the ``flrd.metrics``
  timing records beside the payloads) and ``reply-bits`` (every record of every
  reply as Flower counts it, the audit record left out: what a deployment pays);
- time: ``encode-seconds`` (summed over accepted clients), ``decode-seconds``,
  ``estimate-seconds``;
- the plan (rate-controlled policies only): ``warmup``, ``planned-lambda``,
  ``planned-distortion``, ``planned-distortion-per-layer``, ``planned-rounds``,
  ``planned-r-sum-bits``, ``planned-r-ind-bits``;
- estimates: ``sx2`` and ``s2`` per layer (smoothed, after this round);
- measured: ``measured-weight-concentration`` (per layer ``sum_k w_kl^2``),
  ``measured-sampling-distortion`` (``sum_l n_l s2_l sum_k w_kl^2``),
  ``measured-quant-distortion`` (``sum_l n_l sum_k w_kl^2 qnoise_kl``),
  ``measured-distortion`` (their sum), in audit mode ``measured-distortion-audit`` and
  ``measured-distortion-audit-per-layer`` (``||estimate - exact mean||^2``), and the
  bounds at the measured distortion (the audited one when there is one):
  ``measured-r-sum-bits``, ``measured-r-ind-bits`` and ``modelled-signsgd-bits``,
  ``modelled-signsgd-r-ind-bits``, ``modelled-signsgd-r-sum-bits``.

Unequal weights act like ``K_eff = 1 / sum_k w_kl^2`` equal clients in the bounds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from flwr.app import MetricRecord

from flrd import theory
from flrd.policy import RatePolicy

from .aggregation import Arrays, example_weights, weighted_mean
from .decoding import DecodedRound

__all__ = ["format_round", "round_metrics"]

REJECTION_KINDS = ("protocol", "metrics", "payload", "outlier")


def round_metrics(round_index: int, decoded: DecodedRound, policy: RatePolicy | None,
                  applied: Arrays | None, weights: np.ndarray | None, *,
                  rate_controlled: bool) -> MetricRecord:
    """The MetricRecord of one round (see the module docstring for the keys)."""
    sizes = _sizes(decoded)
    accepted_bits = 8 * sum(u.payload_bytes for u in decoded.updates)
    clients = len(decoded.updates)
    metrics = MetricRecord({
        "flrd.round": round_index,
        "flrd.sent": len(decoded.sent.requests),
        "flrd.replies": decoded.num_replies,
        "flrd.accepted": clients,
        "flrd.failed": decoded.num_failed,
        "flrd.rejected": decoded.num_rejected,
        **{f"flrd.rejected-{kind}": int(decoded.excluded[kind]) for kind in REJECTION_KINDS},
        "flrd.uplink-bits": 8 * decoded.uplink_bytes,
        "flrd.framing-bits": 8 * sum(u.report.framing_bytes for u in decoded.updates),
        "flrd.stats-bits": 8 * sum(u.report.stats_bytes for u in decoded.updates),
        "flrd.report-bits": 8 * decoded.report_bytes,
        "flrd.reply-bits": 8 * decoded.reply_bytes,
        "flrd.accepted-bits": accepted_bits,
        "flrd.bits-per-coord": float(accepted_bits / (clients * sizes.sum())) if clients else 0.0,
        "flrd.encode-seconds": float(sum(u.report.encode_seconds for u in decoded.updates)),
        "flrd.decode-seconds": decoded.decode_seconds,
        "flrd.estimate-seconds": decoded.estimate_seconds,
    })
    plan = decoded.sent.plan
    if rate_controlled:
        metrics["flrd.warmup"] = int(plan.warmup)
    if rate_controlled and not plan.warmup:
        metrics["flrd.planned-lambda"] = float(plan.lambda_)
        metrics["flrd.planned-distortion"] = float(plan.distortion_total)
        metrics["flrd.planned-distortion-per-layer"] = [float(v) for v in plan.distortion_per_layer]
        for key, name in (("rounds_predicted", "planned-rounds"), ("r_sum_bits", "planned-r-sum-bits"),
                          ("r_ind_bits", "planned-r-ind-bits")):
            if math.isfinite(value := plan.predicted.get(key, math.nan)):
                metrics[f"flrd.{name}"] = float(value)
    if policy is None or policy.sx2 is None or policy.s2 is None:
        return metrics
    metrics["flrd.sx2"] = [float(v) for v in policy.sx2]
    metrics["flrd.s2"] = [float(v) for v in policy.s2]
    if not decoded.updates:
        return metrics
    # A non-linear rule (majority vote) has no weights: its estimate is the applied update,
    # and the example weights stand in for the sampling part.
    linear = weights if weights is not None else example_weights(decoded.updates, sizes.size)
    concentration = np.sum(linear**2, axis=0)
    sampling = np.asarray(policy.s2) * concentration
    metrics["flrd.measured-weight-concentration"] = [float(v) for v in concentration]
    metrics["flrd.measured-sampling-distortion"] = float(sizes @ sampling)
    distortion = None
    if weights is not None:
        qnoise = np.array([u.report.qnoise for u in decoded.updates])
        quant = np.sum(weights**2 * qnoise, axis=0)
        metrics["flrd.measured-quant-distortion"] = float(sizes @ quant)
        metrics["flrd.measured-distortion"] = float(sizes @ (sampling + quant))
        distortion = sampling + quant
    if (audit := _audit_distortion(decoded, applied, weights)) is not None:
        metrics["flrd.measured-distortion-audit"] = float(sizes @ audit)
        metrics["flrd.measured-distortion-audit-per-layer"] = [float(v) for v in audit]
        distortion = sampling + audit  # measured beats modelled
    if distortion is not None:
        metrics.update(measured_bounds(sizes, np.asarray(policy.sx2), np.asarray(policy.s2),
                                       1.0 / concentration, distortion))
    return metrics


def measured_bounds(sizes: np.ndarray, sx2: np.ndarray, s2: np.ndarray, k_eff: np.ndarray,
                    distortion: np.ndarray) -> dict[str, float]:
    """Bits per round of ``R_sum``, ``R_ind`` at the per-layer ``distortion``, and the
    SignSGD model, over the layers that moved (``sx2 + s2 > 0``).

    ``R_sum``/``R_ind`` are left out when a layer sits at or below its error-free floor
    ``s2 / K_eff`` (lossless coding of a continuous source needs infinite rate).

    Example:
        >>> b = measured_bounds(np.array([10.0]), np.array([2.0]), np.array([1.0]),
        ...                     np.array([10.0]), np.array([0.2]))
        >>> round(b["flrd.measured-r-sum-bits"] / 10, 4)  # Corollary 2 at D=0.2, K=10
        6.7297
    """
    active = (sx2 + s2) > 0
    n, x, g, k, D = sizes[active], sx2[active], s2[active], k_eff[active], distortion[active]
    sign = theory.signsgd_model(x, g, k)
    out = {"flrd.modelled-signsgd-bits": float(n @ sign.signsgd_rate),
           "flrd.modelled-signsgd-r-ind-bits": float(n @ sign.independent_rate),
           "flrd.modelled-signsgd-r-sum-bits": float(n @ sign.sum_rate)}
    if np.all(D > g / k):
        out["flrd.measured-r-sum-bits"] = float(n @ theory.sum_rate(D, x, g, k))
        out["flrd.measured-r-ind-bits"] = float(n @ theory.independent_rate(D, x, g, k))
    return out


def format_round(train: Mapping[str, object], evaluation: Mapping[str, object] | None = None) -> str:
    """One line per round from its train MetricRecord (and the server's evaluation).

    Usable in any ServerApp: ``format_round(result.train_metrics_clientapp[r],
    result.evaluate_metrics_serverapp.get(r))``.

    Example:
        >>> format_round({"flrd.round": 3, "flrd.accepted": 10, "flrd.sent": 10,
        ...               "flrd.uplink-bits": 123456, "flrd.bits-per-coord": 0.0619,
        ...               "flrd.planned-lambda": 16.0, "flrd.planned-distortion": 0.0021,
        ...               "flrd.measured-distortion": 0.0023, "flrd.measured-r-ind-bits": 61728.0},
        ...              {"test-accuracy": 0.91})  # doctest: +NORMALIZE_WHITESPACE
        'round 3: 10/10 clients, 1.235e+05 bits (0.0619 bit/coord) | planned lambda 16, D 0.0021 |
         measured D 0.0023, bits/R_ind 2 | accuracy 0.910'
    """
    def num(key: str) -> float | None:
        value = train.get(key)
        return float(value) if isinstance(value, int | float) else None  # type: ignore[arg-type]

    parts = [f"round {train.get('flrd.round', '?')}: {train.get('flrd.accepted', 0)}/"
             f"{train.get('flrd.sent', 0)} clients, {num('flrd.uplink-bits') or 0:.4g} bits "
             f"({num('flrd.bits-per-coord') or 0:.3g} bit/coord)"]
    if num("flrd.warmup"):
        parts.append("planned warm-up")
    elif (lam := num("flrd.planned-lambda")) is not None:
        parts.append(f"planned lambda {lam:.3g}, D {num('flrd.planned-distortion'):.3g}")
    measured = num("flrd.measured-distortion-audit") or num("flrd.measured-distortion")
    if measured is not None:
        text = f"measured D {measured:.3g}"
        bits = num("flrd.accepted-bits") or num("flrd.uplink-bits") or 0.0
        for bound in ("R_ind", "R_sum"):
            if value := num(f"flrd.measured-{bound.lower().replace('_', '-')}-bits"):
                text += f", bits/{bound} {bits / value:.3g}"
        parts.append(text)
    if evaluation is not None and isinstance(acc := evaluation.get("test-accuracy"), int | float):
        parts.append(f"accuracy {acc:.3f}")
    return " | ".join(parts)


def _sizes(decoded: DecodedRound) -> np.ndarray:
    return np.array([v.size for v in decoded.sent.global_arrays.values()], dtype=np.float64)


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

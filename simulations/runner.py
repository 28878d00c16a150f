"""Run one policy of a sweep as a Flower simulation and turn its Result into records.

The ServerApp is the reference one, from :func:`flrd.strategies.server_app.build_server_app`,
with a sink that captures the strategy's Result in this process and a progress bar.
Clients are :func:`flrd.clients.client_app.build_client_app`, run on Flower's Ray
backend through :mod:`.engine`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import MetricRecord
from flwr.serverapp.strategy import Result

from flrd.clients.client_app import build_client_app
from flrd.strategies.server_app import build_server_app

from .engine import simulate
from .settings import PolicySpec, Settings


@dataclass
class RunRecord:
    """Rows of one (policy, seed) run: ``rounds`` per round, ``layers`` per round and layer."""

    rounds: list[dict[str, object]] = field(default_factory=list)
    layers: list[dict[str, object]] = field(default_factory=list)


def run_policy(settings: Settings, spec: PolicySpec, seed: int, progress=None) -> RunRecord:
    """Simulate ``settings.rounds`` rounds of one policy with one seed."""
    config = spec.run_config(settings.app_config(), seed)
    captured: dict[str, object] = {}
    stamps = {0: time.perf_counter()}

    def on_round(server_round: int, evaluation: MetricRecord | None) -> None:
        stamps[server_round] = time.perf_counter()
        if progress is not None:
            progress.update(1)
            if evaluation is not None:
                progress.set_postfix(acc=f"{float(evaluation['test-accuracy']):.3f}")

    server = build_server_app(config, on_round=on_round, print_rounds=progress is None,
                              sink=lambda result, layers: captured.update(result=result, layers=layers))
    simulate(server, build_client_app(config.to_run_config()), settings.num_clients, config,
             client_cpus=settings.client_cpus, out_dir=settings.out_dir, quiet=progress is not None)
    if "result" not in captured:
        raise RuntimeError(f"the ServerApp of policy {spec.label!r} (seed {seed}) failed; see the log above")
    record = records_from_result(captured["result"], spec.label, seed, captured["layers"], stamps)  # type: ignore[arg-type]
    if not any(row["clients"] for row in record.rounds):
        raise RuntimeError(f"policy {spec.label!r} (seed {seed}) aggregated no round: every "
                           "client failed or was left out; see the warnings above")
    return record


def records_from_result(result: Result, policy: str, seed: int, layers: list[tuple[str, int]],
                        stamps: dict[int, float]) -> RunRecord:
    """Flatten a strategy Result into the rows documented in :mod:`.records`.

    Every bound and distortion is read from the strategy's round record
    (:mod:`flrd.strategies.reporting`), where it is computed once.
    """
    record = RunRecord()
    cumulative = 0
    for server_round in sorted(result.evaluate_metrics_serverapp):
        evaluation = result.evaluate_metrics_serverapp[server_round]
        train = result.train_metrics_clientapp.get(server_round, MetricRecord())
        bits = int(train.get("flrd.uplink-bits", 0))  # type: ignore[arg-type]
        cumulative += bits

        number = _reader(train)

        sx2, s2 = train.get("flrd.sx2"), train.get("flrd.s2")
        n_l = np.array([n for _, n in layers], dtype=np.float64)
        row: dict[str, object] = {
            "policy": policy, "seed": seed, "round": server_round,
            "clients": int(train.get("flrd.accepted", 0)),  # type: ignore[arg-type]
            "uplink_bits": bits, "uplink_bits_cum": cumulative,
            **{f"{part}_bits": int(train.get(f"flrd.{part}-bits", 0))  # type: ignore[arg-type]
               for part in ("framing", "stats", "report", "reply")},
            "bits_per_coord": number("flrd.bits-per-coord"),
            "rejected": int(train.get("flrd.rejected", 0)),  # type: ignore[arg-type]
            "test_loss": float(evaluation["test-loss"]),  # type: ignore[arg-type]
            "test_accuracy": float(evaluation["test-accuracy"]),  # type: ignore[arg-type]
            "lambda": number("flrd.planned-lambda"),
            "target_distortion": number("flrd.planned-distortion"),
            "compression_distortion": number("flrd.measured-distortion-audit"),
            "sampling_distortion": number("flrd.measured-sampling-distortion"),
            "measured_distortion": (number("flrd.measured-distortion-audit")
                                    + number("flrd.measured-sampling-distortion")),
            "r_sum_bits": number("flrd.measured-r-sum-bits"),
            "r_ind_bits": number("flrd.measured-r-ind-bits"),
            "signsgd_bits": number("flrd.modelled-signsgd-bits"),
            "signsgd_r_ind_bits": number("flrd.modelled-signsgd-r-ind-bits"),
            "signsgd_r_sum_bits": number("flrd.modelled-signsgd-r-sum-bits"),
            "sx2_total": float(n_l @ np.asarray(sx2)) if isinstance(sx2, list) else math.nan,
            "s2_total": float(n_l @ np.asarray(s2)) if isinstance(s2, list) else math.nan,
            **{key.replace("-", "_"): number(f"flrd.{key}")
               for key in ("wz-layers", "wz-payloads", "wz-failed", "independent-bits")},
            "round_seconds": stamps.get(server_round, math.nan) - stamps.get(server_round - 1,
                                                                             stamps[0]),
            **{f"{part}_seconds": number(f"flrd.{part}-seconds") for part in ("encode", "decode", "estimate")},
        }
        record.rounds.append(row)
        if isinstance(sx2, list) and isinstance(s2, list):
            audit = train.get("flrd.measured-distortion-audit-per-layer")
            target = train.get("flrd.planned-distortion-per-layer")
            for index, (name, n) in enumerate(layers):
                record.layers.append({
                    "policy": policy, "seed": seed, "round": server_round, "layer": name, "n": n,
                    "sx2": sx2[index], "s2": s2[index],
                    "target_distortion": target[index] if isinstance(target, list) else math.nan,
                    "compression_distortion": audit[index] if isinstance(audit, list) else math.nan,
                })
    return record


def _reader(train: MetricRecord) -> Callable[[str], float]:
    """``number(key)``: a metric of ``train`` as a float (NaN when absent)."""
    def number(key: str) -> float:
        value = train.get(key)
        return float(value) if isinstance(value, int | float) else math.nan  # type: ignore[arg-type]
    return number

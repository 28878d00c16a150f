"""Run one policy of a sweep as a Flower simulation and turn its Result into records.

The ServerApp here is the reference one with two additions a harness needs: it
captures the strategy's :class:`~flwr.serverapp.strategy.Result` in this process and it
ticks a progress bar. Clients are :func:`flrd.clients.client_app.build_client_app`
configured by the settings, run on Flower's Ray backend.
"""

from __future__ import annotations

import contextlib
import logging
import os
import math
import time
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Result
from flwr.simulation import run_simulation

from flrd import theory
from flrd.clients.client_app import build_client_app
from flrd.datasets import load_mnist
from flrd.models import build_model
from flrd.strategies import build_strategy
from flrd.training import evaluate

from .settings import PolicySpec, Settings


@dataclass
class RunRecord:
    """Rows of one (policy, seed) run: ``rounds`` per round, ``layers`` per round and layer."""

    rounds: list[dict[str, object]] = field(default_factory=list)
    layers: list[dict[str, object]] = field(default_factory=list)


class _Evaluator:
    """``Strategy.start``'s per-round callback: central test metrics, wall time, progress."""

    def __init__(self, model, progress) -> None:
        self.model, self.progress = model, progress
        self.data = load_mnist()
        self.stamps: dict[int, float] = {}

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        self.model.load_state_dict(arrays.to_torch_state_dict())
        loss, accuracy = evaluate(self.model, self.data.x_test, self.data.y_test)
        self.stamps[server_round] = time.perf_counter()
        if self.progress is not None and server_round > 0:
            self.progress.update(1)
            self.progress.set_postfix(acc=f"{accuracy:.3f}")
        return MetricRecord({"test-loss": loss, "test-accuracy": accuracy})


def run_policy(settings: Settings, spec: PolicySpec, seed: int, progress=None) -> RunRecord:
    """Simulate ``settings.rounds`` rounds of one policy with one seed."""
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # silences a Ray FutureWarning; no GPUs used
    if progress is not None:  # the bar replaces Flower's per-round log; errors still show
        logging.getLogger("flwr").setLevel(logging.ERROR)
    captured: dict[str, object] = {}
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        model = build_model(settings.model, seed=seed)
        state = model.state_dict()
        strategy = build_strategy(
            spec.name, [t.numel() for t in state.values()],
            bits=spec.value if spec.value is not None and spec.name != "fixed-lambda" else settings.bits,
            fixed_lambda=spec.value if spec.name == "fixed-lambda" and spec.value is not None else 1.0,
            policy_params={"lambda_cap": settings.lambda_cap, **settings.policy_params},
            audit=settings.audit, seed=seed,
            fraction_train=settings.clients_per_round / settings.num_clients,
            min_train_nodes=settings.clients_per_round, min_available_nodes=settings.num_clients,
            fraction_evaluate=0.0,
        )
        evaluator = _Evaluator(model, progress)
        start = time.perf_counter()
        captured["result"] = strategy.start(
            grid=grid, initial_arrays=ArrayRecord(state), num_rounds=settings.rounds,
            timeout=settings.round_timeout_s, train_config=ConfigRecord(), evaluate_fn=evaluator)
        captured["stamps"] = {0: start, **evaluator.stamps}
        captured["layers"] = [(name, t.numel()) for name, t in state.items()]

    settings.out_dir.mkdir(parents=True, exist_ok=True)
    # Ray workers import from their working directory first. Started from a source
    # checkout, they would find its flrd/ folder, which lacks flrd.clients & co. (the
    # wheel maps those), so they start in the output folder instead.
    with contextlib.chdir(settings.out_dir):
        run_simulation(
            server_app=server,
            client_app=build_client_app(settings.client_config(seed)),
            num_supernodes=settings.num_clients,
            backend_config={"client_resources": {"num_cpus": settings.client_cpus, "num_gpus": 0.0},
                            "init_args": {"logging_level": "ERROR", "log_to_driver": False}},
        )
    if "result" not in captured:
        raise RuntimeError(f"the ServerApp of policy {spec.label!r} (seed {seed}) failed; see the log above")
    return records_from_result(captured["result"], spec.label, seed, captured["layers"], captured["stamps"])  # type: ignore[arg-type]


def records_from_result(result: Result, policy: str, seed: int, layers: list[tuple[str, int]],
                        stamps: dict[int, float]) -> RunRecord:
    """Flatten a strategy Result into the rows documented in :mod:`.records`."""
    record = RunRecord()
    n_l = np.array([n for _, n in layers], dtype=np.float64)
    cumulative = 0
    for server_round in sorted(result.evaluate_metrics_serverapp):
        evaluation = result.evaluate_metrics_serverapp[server_round]
        train = result.train_metrics_clientapp.get(server_round, MetricRecord())
        bits = int(train.get("flrd.uplink-bits", 0))
        cumulative += bits
        clients = int(train.get("flrd.accepted", 0))
        accepted_bits = int(train.get("flrd.accepted-bits", 0))
        row: dict[str, object] = {
            "policy": policy, "seed": seed, "round": server_round, "clients": clients,
            "uplink_bits": bits, "uplink_bits_cum": cumulative,
            "report_bits": int(train.get("flrd.report-bits", 0)),
            "bits_per_coord": accepted_bits / (clients * n_l.sum()) if clients else math.nan,
            "test_loss": float(evaluation["test-loss"]), "test_accuracy": float(evaluation["test-accuracy"]),
            "lambda": float(train.get("flrd.lambda", math.nan)),
            "target_distortion": float(train.get("flrd.distortion-total", math.nan)),
            "round_seconds": stamps[server_round] - stamps.get(server_round - 1, stamps[server_round]),
            **{f"{part}_seconds": float(train.get(f"flrd.{part}-seconds", math.nan))
               for part in ("encode", "decode", "estimate")},
        }
        sx2, s2 = train.get("flrd.sx2"), train.get("flrd.s2")
        if clients >= 2 and isinstance(sx2, list) and isinstance(s2, list):
            row.update(_bounds(np.asarray(sx2), np.asarray(s2), n_l, clients, train))
            audit = train.get("flrd.audit-distortion-per-layer")
            target = train.get("flrd.distortion-per-layer")
            for index, (name, n) in enumerate(layers):
                record.layers.append({
                    "policy": policy, "seed": seed, "round": server_round, "layer": name, "n": n,
                    "sx2": sx2[index], "s2": s2[index],
                    "target_distortion": target[index] if isinstance(target, list) else math.nan,
                    "compression_distortion": audit[index] if isinstance(audit, list) else math.nan,
                })
        record.rounds.append(row)
    return record


def _bounds(sx2: np.ndarray, s2: np.ndarray, n_l: np.ndarray, K: int, train: MetricRecord) -> dict[str, float]:
    """R_sum / R_ind at the measured per-layer distortion, and the SignSGD model.

    Unequal aggregation weights act like ``K_eff = 1 / sum_k w_k^2`` equal clients.
    Bounds are NaN when a layer was sent losslessly (they are infinite there) and for
    frozen layers nothing is counted.
    """
    concentration = train.get("flrd.weight-concentration")
    K_eff = 1.0 / np.asarray(concentration, dtype=np.float64) if isinstance(concentration, list) else np.full(n_l.size, K)
    active = (sx2 + s2) > 0
    out = {"sx2_total": float(n_l @ sx2), "s2_total": float(n_l @ s2),
           "sampling_distortion": float(n_l @ (s2 / K_eff))}
    n, x, g, k = n_l[active], sx2[active], s2[active], K_eff[active]
    sign = theory.signsgd_model(x, g, k)
    out.update(signsgd_bits=float(n.sum() * K), signsgd_r_ind_bits=float(n @ sign.independent_rate),
               signsgd_r_sum_bits=float(n @ sign.sum_rate))
    audit = train.get("flrd.audit-distortion-per-layer")
    if isinstance(audit, list):
        compression = np.asarray(audit, dtype=np.float64)
        D_l = s2 / K_eff + compression
        out.update(compression_distortion=float(n_l @ compression), measured_distortion=float(n_l @ D_l),
                   r_sum_bits=math.nan, r_ind_bits=math.nan)
        if np.all(compression[active] > 0):
            out.update(r_sum_bits=float(n @ theory.sum_rate(D_l[active], x, g, k)),
                       r_ind_bits=float(n @ theory.independent_rate(D_l[active], x, g, k)))
    return out

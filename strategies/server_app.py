"""ServerApp for the paper's task: MNIST 2NN trained with a rate-aware compressed uplink.

Run config (``[tool.flwr.app.config]``; every key has a default):

- ``num-server-rounds`` (3), ``policy`` ("rate-aware"; see ``BASELINES``), ``model``
  ("mlp"), ``seed`` (0), ``round-timeout`` (600 s)
- ``fraction-train`` (1.0), ``min-train-nodes`` (2), ``fraction-evaluate`` (0.0)
- ``bits`` (2.0, fixed-rate baselines), ``fixed-lambda`` (1.0), ``lambda-cap`` (16.0),
  ``beta`` (1.0), ``initial-distance`` (1.0), ``target-accuracy-eps`` (0.01),
  ``smoothing`` (0.5)
- ``audit`` (false), ``central-eval`` (true)
- ``state-dir`` (""): when set, the model and the strategy state are saved there after
  every round, and a restarted run resumes from them.

Per round it prints realized uplink bits next to the bounds ``R_sum`` and ``R_ind`` at
the distortion the round actually reached (for the rate-aware policy close to the
planned one; for the baselines whatever their codec gave).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Result

from flrd.models import build_model

from .baselines import build_strategy
from .rate_aware import RateAwareFedAvg

__all__ = ["app", "format_report", "parse_report"]

app = ServerApp()

_POLICY_KEYS = {"lambda-cap": "lambda_cap", "beta": "beta", "initial-distance": "initial_distance",
                "target-accuracy-eps": "target_accuracy_eps", "smoothing": "smoothing"}
_COLUMNS = (("round", "flrd.round"), ("used", "flrd.accepted"), ("sent", "flrd.sent"),
            ("uplink bits", "flrd.uplink-bits"), ("R_sum bits", "flrd.measured-r-sum-bits"),
            ("R_ind bits", "flrd.measured-r-ind-bits"), ("lambda", "flrd.lambda"),
            ("D planned", "flrd.distortion-total"), ("D model", "flrd.distortion-est"))


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Train for ``num-server-rounds`` rounds and print the per-round rate report."""
    cfg = context.run_config
    model = build_model(str(cfg.get("model", "mlp")), seed=int(cfg.get("seed", 0)))
    arrays = ArrayRecord(model.state_dict())
    strategy = build_strategy(
        str(cfg.get("policy", "rate-aware")), [a.size for a in arrays.to_numpy_ndarrays()],
        bits=float(cfg.get("bits", 2.0)), fixed_lambda=float(cfg.get("fixed-lambda", 1.0)),
        policy_params={name: float(cfg[key]) for key, name in _POLICY_KEYS.items() if key in cfg},
        audit=bool(cfg.get("audit", False)), seed=int(cfg.get("seed", 0)),
        fraction_train=float(cfg.get("fraction-train", 1.0)),
        min_train_nodes=int(cfg.get("min-train-nodes", 2)),
        fraction_evaluate=float(cfg.get("fraction-evaluate", 0.0)),
    )
    state_dir = Path(str(cfg["state-dir"])) if cfg.get("state-dir") else None
    if state_dir is not None and (state_dir / "state.json").exists():
        arrays = _resume(state_dir, strategy)
    result = strategy.start(
        grid=grid, initial_arrays=arrays, num_rounds=int(cfg.get("num-server-rounds", 3)),
        timeout=float(cfg.get("round-timeout", 600)), train_config=ConfigRecord(),
        evaluate_fn=_Evaluator(model, strategy, state_dir, bool(cfg.get("central-eval", True))),
    )
    print(format_report(result), flush=True)


class _Evaluator:
    """Strategy.start's per-round callback: central accuracy, and the saved state."""

    def __init__(self, model: torch.nn.Module, strategy: RateAwareFedAvg,
                 state_dir: Path | None, central_eval: bool) -> None:
        self.model, self.strategy = model, strategy
        self.state_dir, self.central_eval = state_dir, central_eval

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if self.state_dir is not None and server_round > 0:
            _save(self.state_dir, self.strategy, arrays)
        if not self.central_eval:
            return None
        from flrd.datasets import load_mnist  # the data are only needed here
        from flrd.training import evaluate

        self.model.load_state_dict(arrays.to_torch_state_dict())
        data = load_mnist()
        loss, accuracy = evaluate(self.model, data.x_test, data.y_test)
        return MetricRecord({"test-loss": loss, "test-accuracy": accuracy})


def _save(state_dir: Path, strategy: RateAwareFedAvg, arrays: ArrayRecord) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    np.savez(state_dir / "model.npz", **{k: a.numpy() for k, a in arrays.items()})
    (state_dir / "state.json").write_text(json.dumps(strategy.state_dict()))


def _resume(state_dir: Path, strategy: RateAwareFedAvg) -> ArrayRecord:
    strategy.load_state_dict(json.loads((state_dir / "state.json").read_text()))
    with np.load(state_dir / "model.npz") as saved:
        return ArrayRecord({name: Array(saved[name]) for name in saved.files})


def format_report(result: Result) -> str:
    """The per-round table: realized uplink bits next to ``R_sum`` and ``R_ind`` (bits
    per round over all clients, at the realized distortion)."""
    lines = [" | ".join(f"{title:>12}" for title, _ in _COLUMNS) + " | test acc"]
    for server_round, metrics in sorted(result.train_metrics_clientapp.items()):
        cells = [_cell(metrics.get(key)) for _, key in _COLUMNS]
        evaluation = result.evaluate_metrics_serverapp.get(server_round, MetricRecord())
        lines.append(" | ".join(f"{c:>12}" for c in cells)
                     + f" | {_cell(evaluation.get('test-accuracy'))}")
    return "\n".join(lines)


def parse_report(text: str) -> list[dict[str, str]]:
    """Rows of :func:`format_report`'s table found in ``text`` (e.g. a ``flwr run --stream`` log),
    one dict per round keyed by the column titles.

    Example:
        >>> log = ["round | used | sent | uplink bits | x", "    1 |    3 |    3 |        800 | y"]
        >>> parse_report("\\n".join(log))
        [{'round': '1', 'used': '3', 'sent': '3', 'uplink bits': '800', 'x': 'y'}]
    """
    titles: list[str] | None = None
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if cells[0].endswith("round") and len(cells) > 4:
            titles = [cells[0].split()[-1], *cells[1:]]
        elif titles and len(cells) == len(titles) and cells[0].isdigit():
            rows.append(dict(zip(titles, cells)))
    return rows


def _cell(value: object) -> str:
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-"

"""A sweep: every policy x seed of a :class:`Settings`, written to CSV/JSON, figures and a report."""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from flrd import theory

from . import figures
from .records import LAYER_COLUMNS, ROUND_COLUMNS, write_csv, write_json
from .report import write_report
from .runner import run_policy
from .settings import PolicySpec, Settings
from .summary import lambda_sweep, policy_table


def run_sweep(settings: Settings, *, show_progress: bool = True) -> Path:
    """Run the sweep and write ``rounds.csv``, ``layers.csv``, ``summary.json``, PNGs, ``report.md``.

    Returns the output folder. Partial results are written after every run, so an
    interrupted sweep leaves what it finished.
    """
    out = Path(settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specs = [PolicySpec.parse(text) for text in settings.policies]
    rounds: list[dict[str, object]] = []
    layers: list[dict[str, object]] = []
    started = time.perf_counter()
    for seed in settings.seeds:
        for spec in specs:
            with _progress(f"{spec.label} seed {seed}", settings.rounds, show_progress) as bar:
                record = run_policy(settings, spec, seed, bar)
            rounds += record.rounds
            layers += record.layers
            write_csv(out / "rounds.csv", rounds, ROUND_COLUMNS)
            write_csv(out / "layers.csv", layers, LAYER_COLUMNS)
    table = policy_table(rounds, settings.target_accuracy)
    points = _with_prediction(lambda_sweep(rounds, settings.target_accuracy), rounds, settings)
    write_json(out / "summary.json", {"settings": _jsonable(asdict(settings)), "policies": table,
                                      "lambda_sweep": points, "seconds": time.perf_counter() - started})
    _figures(out, rounds, layers, specs, points, settings, table)
    write_report(out, settings, table, points, rounds)
    return out


def _figures(out: Path, rounds, layers, specs, points, settings: Settings, table) -> None:
    labels = [s.label for s in specs]
    stats_policy = next((label for label in labels if label.startswith("rate-aware")), labels[0])
    figures.statistics_figure(rounds, layers, stats_policy, out / "fig6_statistics.png")
    compressing = [label for label in labels if label != "float32"][:6] or labels[:1]
    figures.rates_figure(rounds, compressing, out / "fig7_rates.png")
    figures.accuracy_figure(rounds, settings.target_accuracy, out / "bits_to_accuracy.png")
    if len(points) >= 2:
        adaptive = {str(line["policy"]): float(line["bits_to_target"]) for line in table  # type: ignore[arg-type]
                    if not str(line["policy"]).startswith("fixed-lambda=")
                    and str(line["policy"]).startswith(("rate-aware", "waterfilling", "trust-region"))}
        figures.lambda_figure(points, out / "fig8_lambda.png", adaptive)


def _with_prediction(points, rounds, settings: Settings):
    """Add Theorem 1's rounds shape (scaled to the smallest lambda) for Fig. 8."""
    if not points:
        return points
    noise = [float(r["s2_total"]) / float(r["clients"]) for r in rounds
             if str(r["policy"]).startswith("fixed-lambda=") and float(r["clients"]) >= 2
             and not math.isnan(float(r.get("s2_total", math.nan)))]
    if not noise:
        return points
    floor = float(np.mean(noise))
    params = {"R0": settings.run.initial_distance, "beta": settings.run.beta,
              "eps": settings.run.target_accuracy_eps}
    shape = [float(theory.rounds_needed(floor * (1 + p["lambda"]), integer=False, **params)) for p in points]
    anchor = next((i for i, p in enumerate(points) if math.isfinite(p["rounds_to_target"])), None)
    scale = points[anchor]["rounds_to_target"] / shape[anchor] if anchor is not None else math.nan
    return [{**p, "predicted_rounds": s * scale} for p, s in zip(points, shape)]


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


class _progress:
    """A tqdm bar when tqdm is installed and wanted, else nothing."""

    def __init__(self, label: str, total: int, enabled: bool) -> None:
        self.label, self.total, self.enabled, self.bar = label, total, enabled, None

    def __enter__(self):
        if self.enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return None
            self.bar = tqdm(total=self.total, desc=self.label, unit="round")
        return self.bar

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()

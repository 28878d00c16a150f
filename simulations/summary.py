"""Per-policy summaries of a sweep: bits to a target accuracy, per-bit accuracy, Fig. 8 points."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

Row = Mapping[str, object]


def group_runs(rows: Iterable[Row]) -> dict[tuple[str, int], list[Row]]:
    """Rows of each (policy, seed), sorted by round."""
    runs: dict[tuple[str, int], list[Row]] = defaultdict(list)
    for row in rows:
        runs[(str(row["policy"]), int(float(row["seed"])))].append(row)  # type: ignore[arg-type]
    return {key: sorted(value, key=lambda r: float(r["round"])) for key, value in runs.items()}  # type: ignore[arg-type]


def bits_to_accuracy(run: Sequence[Row], target: float) -> tuple[float, float]:
    """(cumulative uplink bits, round) when test accuracy first reaches ``target``; NaN if never."""
    for row in run:
        if float(row["test_accuracy"]) >= target:  # type: ignore[arg-type]
            return float(row["uplink_bits_cum"]), float(row["round"])  # type: ignore[arg-type]
    return math.nan, math.nan


def per_bit_accuracy(run: Sequence[Row]) -> float:
    """M22's per-bit accuracy: best ``(acc_t - acc_0) / bits_t`` over the run, in accuracy per Mbit."""
    start = float(run[0]["test_accuracy"])  # type: ignore[arg-type]
    gains = [(float(r["test_accuracy"]) - start) / float(r["uplink_bits_cum"]) * 1e6  # type: ignore[arg-type]
             for r in run if float(r["uplink_bits_cum"]) > 0]  # type: ignore[arg-type]
    return max(gains) if gains else math.nan


def policy_table(rows: Iterable[Row], target: float) -> list[dict[str, object]]:
    """One line per policy over its seeds.

    Bits and rounds to the target are the **median over seeds, a run that never
    reaches the target counting as infinite** (so a policy that fails in most seeds
    has an infinite median), with their range (``*_min``, ``*_max``); the other
    columns are means over seeds. ``reached`` is the share of seeds that reached it.
    """
    per_policy: dict[str, list[dict[str, float]]] = defaultdict(list)
    for (policy, _seed), run in group_runs(rows).items():
        bits, rounds = bits_to_accuracy(run, target)
        trained = [r for r in run if float(r["round"]) > 0]  # type: ignore[arg-type]
        per_policy[policy].append({
            "bits_to_target": math.inf if math.isnan(bits) else bits,
            "rounds_to_target": math.inf if math.isnan(rounds) else rounds,
            "final_accuracy": float(run[-1]["test_accuracy"]),  # type: ignore[arg-type]
            "bits_per_coord": float(np.nanmean([float(r["bits_per_coord"]) for r in trained])) if trained else math.nan,  # type: ignore[arg-type]
            "per_bit_accuracy": per_bit_accuracy(run),
            "reached": float(not math.isnan(bits)),
        })
    table = []
    for policy, runs in sorted(per_policy.items()):
        line: dict[str, object] = {"policy": policy, "seeds": len(runs)}
        for key in runs[0]:
            values = np.array([r[key] for r in runs])
            if key in _TO_TARGET:
                line[key] = float(np.median(values))
                line[f"{key}_min"], line[f"{key}_max"] = float(values.min()), float(values.max())
            else:
                line[key] = float(np.nanmean(values)) if np.any(~np.isnan(values)) else math.nan
        table.append(line)
    return table


_TO_TARGET = ("bits_to_target", "rounds_to_target")


def lambda_sweep(rows: Iterable[Row], target: float) -> list[dict[str, float]]:
    """Fig. 8 points from ``fixed-lambda=<value>`` runs, over seeds.

    Per lambda: median bits and rounds to the target (a run that never reaches it
    counts as infinite), mean final accuracy, and mean uplink bits and ``R_sum`` per
    trained round.
    """
    by_lambda: dict[float, list[Sequence[Row]]] = defaultdict(list)
    for (policy, _seed), run in group_runs(rows).items():
        if policy.startswith("fixed-lambda="):
            by_lambda[float(policy.split("=", 1)[1])].append(run)
    points = []
    for lam, runs in sorted(by_lambda.items()):
        trained = [r for run in runs for r in run if float(r["round"]) > 0]  # type: ignore[arg-type]
        reached = [bits_to_accuracy(run, target) for run in runs]
        points.append({
            "lambda": lam,
            "bits_to_target": float(np.median([math.inf if math.isnan(b) else b for b, _ in reached])),
            "rounds_to_target": float(np.median([math.inf if math.isnan(t) else t for _, t in reached])),
            "final_accuracy": float(np.mean([float(run[-1]["test_accuracy"]) for run in runs])),  # type: ignore[arg-type]
            "mean_round_bits": float(np.mean([float(r["uplink_bits"]) for r in trained])),  # type: ignore[arg-type]
            "mean_r_sum_bits": float(np.nanmean([float(r.get("r_sum_bits", math.nan)) for r in trained])),  # type: ignore[arg-type]
        })
    return points

"""``report.md``: what a person reads after ``flrd simulate``."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .settings import Settings


def _fmt(value: object, spec: str = ".4g") -> str:
    if isinstance(value, float):
        return "—" if math.isnan(value) else "∞" if math.isinf(value) else format(value, spec)
    return str(value)


def write_report(out: Path, settings: Settings, table, points, rounds) -> Path:
    """Write the Markdown report next to the CSVs and figures."""
    run = settings.run
    lines = [
        "# flrd simulation report", "",
        f"{settings.num_clients} clients ({settings.clients_per_round} per round), {settings.rounds} rounds, "
        f"model `{run.model}`, partition `{run.partition}`, {run.local_steps} local steps "
        f"(batch {run.batch_size}, lr {run.lr}, momentum {run.momentum}), seeds {list(settings.seeds)}.",
        "", f"## Policies (target accuracy {settings.target_accuracy:.0%})", "",
        "Bits and rounds to the target: median over seeds [range], a run that does not reach "
        f"the target within the {settings.rounds} rounds counting as infinite (∞); the other "
        "columns are means over seeds.", "",
        "| policy | uplink bits to target | rounds to target | final accuracy | bits/coord/client "
        "| accuracy per Mbit | seeds reaching |",
        "|---|---|---|---|---|---|---|",
    ]
    for line in table:
        reaching = _fmt(line["reached"] * line["seeds"], ".0f")
        lines.append(
            f"| {line['policy']} | {_spread(line, 'bits_to_target', '.3e')} "
            f"| {_spread(line, 'rounds_to_target', '.0f')} "
            f"| {_fmt(line['final_accuracy'], '.4f')} | {_fmt(line['bits_per_coord'], '.3f')} "
            f"| {_fmt(line['per_bit_accuracy'], '.3g')} | {reaching}/{line['seeds']} |")
    lines += ["", "## Where the bits go, against the bounds at the measured distortion", "",
              "Rounds after the first; the bounds use the live estimates of `sx2`, `s2` and the "
              "audited compression error of the aggregate. `uplink` is 8 x the payload bytes "
              "(framing and statistics included); `framing` and `stats` are its parts; "
              "`Flower reply` is every record of every reply as Flower counts it (the app's own "
              "metrics and Flower's per-record metadata too; not the audit record): what a "
              "deployment pays. `warm-up` is round 1's share of all uplink bits. Lossless policies (float32) "
              "have no finite bound; for biased codecs (sign, top-k, M22) the bounds of unbiased "
              "estimation are a reference, not a limit.", "",
              "| policy | uplink / R_ind: mean | worst round | uplink / R_sum | framing | stats "
              "| Flower reply / uplink | warm-up |",
              "|---|---|---|---|---|---|---|---|"]
    for policy in dict.fromkeys(str(r["policy"]) for r in rounds):
        runs = [r for r in rounds if r["policy"] == policy and float(r["round"]) > 0]
        rows = [r for r in runs if float(r["round"]) > 1 and not math.isnan(float(r.get("r_ind_bits", math.nan)))]
        if not rows:
            continue
        column = _columns(rows)
        bits = column("uplink_bits")
        first = sum(float(r["uplink_bits"]) for r in runs if float(r["round"]) == 1)
        lines.append(
            f"| {policy} | {np.mean(bits / column('r_ind_bits')):.3g} "
            f"| {np.max(bits / column('r_ind_bits')):.3g} | {np.mean(bits / column('r_sum_bits')):.3g} "
            f"| {column('framing_bits').sum() / bits.sum():.2%} | {column('stats_bits').sum() / bits.sum():.2%} "
            f"| {column('reply_bits').sum() / bits.sum():.3g} "
            f"| {first / sum(float(r['uplink_bits']) for r in runs):.1%} |")
    if points:
        lines += ["", "## Fixed-lambda sweep (Fig. 8)", "", "Medians over seeds (∞: not reached).", "",
                  "| lambda | bits to target | rounds to target | final accuracy | bits per round "
                  "| R_sum per round |", "|---|---|---|---|---|---|"]
        lines += [f"| {p['lambda']:g} | {_fmt(p['bits_to_target'], '.3e')} | {_fmt(p['rounds_to_target'], '.0f')} "
                  f"| {p['final_accuracy']:.4f} | {p['mean_round_bits']:.3e} | {p['mean_r_sum_bits']:.3e} |"
                  for p in points]
    lines += ["", "## Figures", ""]
    for name, caption in [("fig6_statistics.png", "sx2 and s2 per round (Fig. 6)"),
                          ("fig7_rates.png", "realized bits against R_ind and R_sum (Fig. 7)"),
                          ("fig8_lambda.png", "rounds and bits against lambda (Fig. 8)"),
                          ("bits_to_accuracy.png", "accuracy against cumulative uplink bits")]:
        if (out / name).exists():
            lines.append(f"![{caption}]({name})")
    lines += ["", "Per-round data: `rounds.csv`, `layers.csv` (columns in docs/simulations.md); "
              "summary: `summary.json`."]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _spread(line, key: str, spec: str) -> str:
    """``median [min, max]`` of a to-target column (just the value for one seed)."""
    value, low, high = (line[key], line[f"{key}_min"], line[f"{key}_max"])
    return _fmt(value, spec) if low == high else f"{_fmt(value, spec)} [{_fmt(low, spec)}, {_fmt(high, spec)}]"


def _columns(rows: list) -> Callable[[str], np.ndarray]:
    """``column(key)``: that column of ``rows`` as a float array."""
    return lambda key: np.array([float(r[key]) for r in rows])

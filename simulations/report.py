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
    lines += _side_information(rounds)
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


def _side_information(rounds: list) -> list[str]:
    """Per round of each side-information run: realized bits beside the same updates'
    independent encodings (audit) and the bounds, and the Wyner-Ziv choice."""
    rows = [r for r in rounds if float(r["round"]) > 0 and not math.isnan(_number(r.get("independent_bits")))]
    if not rows:
        return []
    lines = ["", "## Side information (Wyner-Ziv)", "",
             "Per round: `uplink` realized; `independent` what the same accepted updates cost coded "
             "independently (each client encodes both, audit mode); the bounds at the measured distortion; "
             "the Wyner-Ziv layers, payloads decoded and replies left out after a failed CRC. The last "
             "row of each run sums the rounds from 2 on.", "",
             "| policy | seed | round | uplink | independent | uplink / independent | R_ind | R_sum "
             "| uplink / R_ind | uplink / R_sum | WZ layers | WZ payloads | failed |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        bits, ind = float(r["uplink_bits"]), float(r["independent_bits"])
        r_ind, r_sum = float(r["r_ind_bits"]), float(r["r_sum_bits"])
        choice = " | ".join(_fmt(r[key], ".0f") for key in ("wz_layers", "wz_payloads", "wz_failed"))
        lines.append(f"| {r['policy']} | {_fmt(r['seed'], '.0f')} | {_fmt(r['round'], '.0f')} | {bits:.4g} "
                     f"| {ind:.4g} | {bits / ind:.3f} | {r_ind:.4g} | {r_sum:.4g} | {bits / r_ind:.3g} "
                     f"| {bits / r_sum:.3g} | {choice} |")
    for policy, seed in dict.fromkeys((r["policy"], r["seed"]) for r in rows):
        later = [r for r in rows if (r["policy"], r["seed"]) == (policy, seed) and float(r["round"]) >= 2]
        if not later:
            continue
        total = {key: sum(float(r[key]) for r in later) for key in
                 ("uplink_bits", "independent_bits", "r_ind_bits", "r_sum_bits", "wz_payloads", "wz_failed")}
        lines.append(f"| {policy} | {_fmt(seed, '.0f')} | 2-{_fmt(later[-1]['round'], '.0f')} "
                     f"| {total['uplink_bits']:.4g} | {total['independent_bits']:.4g} "
                     f"| {total['uplink_bits'] / total['independent_bits']:.3f} | {total['r_ind_bits']:.4g} "
                     f"| {total['r_sum_bits']:.4g} | {total['uplink_bits'] / total['r_ind_bits']:.3g} "
                     f"| {total['uplink_bits'] / total['r_sum_bits']:.3g} | | {total['wz_payloads']:.0f} "
                     f"| {total['wz_failed']:.0f} |")
    return lines


def _number(value: object) -> float:
    """A CSV or record value as a float (NaN when empty or missing)."""
    return math.nan if value in (None, "") else float(value)  # type: ignore[arg-type]


def _spread(line, key: str, spec: str) -> str:
    """``median [min, max]`` of a to-target column (just the value for one seed)."""
    value, low, high = (line[key], line[f"{key}_min"], line[f"{key}_max"])
    return _fmt(value, spec) if low == high else f"{_fmt(value, spec)} [{_fmt(low, spec)}, {_fmt(high, spec)}]"


def _columns(rows: list) -> Callable[[str], np.ndarray]:
    """``column(key)``: that column of ``rows`` as a float array."""
    return lambda key: np.array([float(r[key]) for r in rows])

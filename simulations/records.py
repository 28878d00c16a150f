"""Per-round records of a simulation and their CSV/JSON files.

``rounds.csv`` has one row per (policy, seed, round); ``layers.csv`` one row per
(policy, seed, round, layer). :data:`ROUND_COLUMNS` and :data:`LAYER_COLUMNS` document
every column (also rendered into ``docs/simulations.md``). Bits are totals over the
clients of a round; distortions in ``rounds.csv`` are totals over all coordinates
(``E||Xh - X||^2``), in ``layers.csv`` per coordinate.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

ROUND_COLUMNS: dict[str, str] = {
    "policy": "policy name (see `flrd simulate --help`); fixed-lambda runs carry their lambda, e.g. `fixed-lambda=2`",
    "seed": "seed of the run (model init, partitions, client sampling, dithers)",
    "round": "server round, 1-based",
    "clients": "replies that were decoded and aggregated this round",
    "rejected": "replies left out this round (flrd.rejected-* in the round record says why)",
    "uplink_bits": "8 x payload bytes of all replies that arrived (framing and statistics included)",
    "uplink_bits_cum": "running sum of uplink_bits",
    "framing_bits": "the part of uplink_bits that is message framing (accepted replies)",
    "stats_bits": "the part of uplink_bits that is per-layer statistics (accepted replies)",
    "report_bits": ("8 x bytes of the flrd.metrics records beside the payloads (audit timing, link keys), "
                    "not in uplink_bits"),
    "reply_bits": ("8 x bytes of every record of every reply as Flower counts it (app metrics included, "
                   "the audit record not)"),
    "bits_per_coord": "uplink_bits / (clients x model coordinates): bits per coordinate per client",
    "test_loss": "central test loss of the global model after the round",
    "test_accuracy": "central test accuracy of the global model after the round",
    "lambda": "lambda of the round's plan (quantization / gradient noise; NaN in warm-up)",
    "target_distortion": "D_tot the plan asked for (NaN in warm-up or for fixed-rate policies)",
    "compression_distortion": "audit: ||aggregate of decoded updates - aggregate of exact updates||^2",
    "sampling_distortion": "sum_l n_l s2_l / K from the live estimates: the error-free sampling part",
    "measured_distortion": "compression_distortion + sampling_distortion",
    "r_sum_bits": "R_sum (Corollary 1/2) at the measured per-layer distortion, bits per round",
    "r_ind_bits": "R_ind (independent coding) at the measured per-layer distortion, bits per round",
    "signsgd_bits": "what SignSGD would send: K x coordinates",
    "signsgd_r_ind_bits": "R_ind at the SignSGD model distortion (THEORY.md §6)",
    "signsgd_r_sum_bits": "R_sum at the SignSGD model distortion (THEORY.md §6)",
    "sx2_total": "sum_l n_l sx2_l: estimated squared norm of the global update",
    "s2_total": "sum_l n_l s2_l: estimated gradient-noise energy per client",
    "wz_layers": "side-info runs: layers some client coded against the server's side information",
    "wz_payloads": "side-info runs: Wyner-Ziv layer payloads decoded (clients x layers)",
    "wz_failed": "side-info runs: replies left out because a Wyner-Ziv block failed its CRC",
    "independent_bits": ("side-info runs with audit: uplink_bits of the accepted replies had each coded "
                         "its update independently (measured by the clients on the same update)"),
    "round_seconds": "wall time of the round (training, coding, aggregation, evaluation)",
    "encode_seconds": "flrd's client time: encoding and measuring qnoise, summed over the clients",
    "decode_seconds": "flrd's server time decoding and checking the replies",
    "estimate_seconds": "flrd's server time updating the sx2/s2 estimates and the policy",
}

LAYER_COLUMNS: dict[str, str] = {
    "policy": "as in rounds.csv",
    "seed": "as in rounds.csv",
    "round": "as in rounds.csv",
    "layer": "layer name in the model's state_dict",
    "n": "coordinates of the layer",
    "sx2": "smoothed estimate of the global-update variance per coordinate",
    "s2": "smoothed estimate of the gradient-noise variance per coordinate",
    "target_distortion": "D_l the plan asked for, per coordinate",
    "compression_distortion": "audit: per-coordinate squared error of the aggregate",
}


def write_csv(path: Path, rows: Iterable[Mapping[str, object]], columns: Iterable[str]) -> None:
    """Write ``rows`` with exactly ``columns`` (missing values empty)."""
    columns = list(columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="raise")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: row.get(key, "") for key in columns})


def read_csv(path: Path) -> list[dict[str, object]]:
    """Read a file written by :func:`write_csv`; numbers come back as floats."""
    with path.open(newline="") as handle:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def write_json(path: Path, payload: object) -> None:
    """Pretty JSON with NaN written as null (strict JSON readers reject NaN)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_nan_to_none(payload), indent=2, sort_keys=True))


def _number(text: str) -> object:
    if text == "":
        return float("nan")
    try:
        return float(text)
    except ValueError:
        return text


def _nan_to_none(value: object) -> object:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    return value

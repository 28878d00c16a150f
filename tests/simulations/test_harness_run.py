"""A real (small) `flrd simulate` sweep through Flower's simulation engine."""

import math

import pytest

from flrd.codecs.header import header_bytes
from flrd.config import RunConfig
from flrd.simulations.records import read_csv
from flrd.simulations.settings import Settings
from flrd.simulations.sweep import run_sweep


@pytest.mark.slow
def test_small_sweep_writes_consistent_records(tmp_path):
    settings = Settings(out_dir=tmp_path, num_clients=6, clients_per_round=3,
                        policies=("rate-aware", "float32", "fixed-lambda=2"),
                        run=RunConfig(num_server_rounds=2, local_steps=3, audit=True))
    out = run_sweep(settings, show_progress=False)
    rounds = read_csv(out / "rounds.csv")
    by_policy = {p: [r for r in rounds if r["policy"] == p] for p in ("rate-aware", "float32", "fixed-lambda=2")}
    assert all([r["round"] for r in rows] == [0.0, 1.0, 2.0] for rows in by_policy.values())
    d = 199_210
    for row in by_policy["float32"][1:]:
        # 32 bits per coordinate plus each layer's float32 payload header (6 layers, 2-D
        # weights and 1-D biases), and a few bytes of message framing and statistics.
        headers = 3 * (header_bytes(2, 0) + header_bytes(1, 0))
        assert 32 * d * 3 + 8 * 3 * headers <= row["uplink_bits"] <= 32 * d * 3 + 8 * 3 * (headers + 64)
        assert row["uplink_bits_cum"] >= row["uplink_bits"]
    for row in by_policy["rate-aware"][1:] + by_policy["fixed-lambda=2"][1:]:
        assert row["bits_per_coord"] < 8  # compressed, far below float32
        assert row["r_sum_bits"] <= row["r_ind_bits"]
        assert row["compression_distortion"] > 0 and not math.isnan(row["sx2_total"])
    assert by_policy["fixed-lambda=2"][2]["lambda"] == 2.0
    layers = read_csv(out / "layers.csv")
    assert {r["layer"] for r in layers} == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
                                            "fc3.weight", "fc3.bias"}
    for name in ("report.md", "summary.json", "fig6_statistics.png", "fig7_rates.png", "bits_to_accuracy.png"):
        assert (out / name).stat().st_size > 0
    assert "| rate-aware |" in (out / "report.md").read_text()

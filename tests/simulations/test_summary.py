"""Summaries, records and figures of the harness on synthetic rows (no Flower run)."""

import math

import pytest

from flrd.simulations.figures import accuracy_figure, rates_figure
from flrd.simulations.records import LAYER_COLUMNS, ROUND_COLUMNS, read_csv, write_csv
from flrd.simulations.settings import PolicySpec, Settings
from flrd.simulations.summary import bits_to_accuracy, lambda_sweep, per_bit_accuracy, policy_table


def synthetic(policy, seed, accuracies, bits_per_round):
    rows, cum = [], 0
    for t, acc in enumerate(accuracies):
        bits = 0 if t == 0 else bits_per_round
        cum += bits
        rows.append({"policy": policy, "seed": seed, "round": t, "clients": 0 if t == 0 else 10,
                     "uplink_bits": bits, "uplink_bits_cum": cum, "bits_per_coord": bits / 1000 if t else math.nan,
                     "test_accuracy": acc, "r_sum_bits": bits / 4, "r_ind_bits": bits / 2,
                     "signsgd_bits": 1000, "signsgd_r_ind_bits": 900, "signsgd_r_sum_bits": 500})
    return rows


def test_bits_to_target_and_per_bit_accuracy():
    run = synthetic("a", 0, [0.1, 0.5, 0.85, 0.91, 0.95], 1_000_000)
    assert bits_to_accuracy(run, 0.9) == (3_000_000, 3)
    assert math.isnan(bits_to_accuracy(run, 0.99)[0])
    assert per_bit_accuracy(run) == pytest.approx(0.4)  # (0.5 - 0.1) per first Mbit


def test_policy_table_takes_medians_with_misses_as_infinite_and_counts_reaching_runs():
    rows = (synthetic("a", 0, [0.1, 0.95], 100) + synthetic("a", 1, [0.1, 0.5], 100)
            + synthetic("a", 2, [0.1, 0.5, 0.91], 30) + synthetic("b", 0, [0.1, 0.92], 50)
            + synthetic("c", 0, [0.1, 0.5], 50) + synthetic("c", 1, [0.1, 0.5], 50) + synthetic("c", 2, [0.1, 0.95], 5))
    table = {line["policy"]: line for line in policy_table(rows, 0.9)}
    assert table["a"]["bits_to_target"] == 100 and table["a"]["reached"] == pytest.approx(2 / 3)
    assert (table["a"]["bits_to_target_min"], table["a"]["bits_to_target_max"]) == (60, math.inf)
    assert table["a"]["rounds_to_target"] == 2
    assert table["b"]["bits_to_target"] == 50
    assert table["c"]["bits_to_target"] == math.inf  # reached in 1 of 3 seeds


def test_lambda_sweep_reads_fixed_lambda_runs():
    rows = synthetic("fixed-lambda=4", 0, [0.1, 0.5, 0.92], 10) + synthetic("fixed-lambda=1", 0, [0.1, 0.95], 40)
    points = lambda_sweep(rows, 0.9)
    assert [p["lambda"] for p in points] == [1.0, 4.0]
    assert [p["rounds_to_target"] for p in points] == [1.0, 2.0]
    assert [p["bits_to_target"] for p in points] == [40.0, 20.0]
    missed = lambda_sweep(synthetic("fixed-lambda=9", 0, [0.1, 0.5], 10), 0.9)
    assert missed[0]["bits_to_target"] == math.inf and missed[0]["final_accuracy"] == 0.5


def test_csv_round_trip_and_documented_columns(tmp_path):
    rows = synthetic("a", 0, [0.1, 0.5], 100)
    write_csv(tmp_path / "r.csv", rows, ROUND_COLUMNS)
    back = read_csv(tmp_path / "r.csv")
    assert back[1]["uplink_bits"] == 100.0 and back[1]["policy"] == "a"
    assert math.isnan(back[0]["lambda"])
    docs = (__import__("pathlib").Path(__file__).resolve().parents[2] / "docs" / "simulations.md").read_text()
    assert all(f"`{column}`" in docs for column in [*ROUND_COLUMNS, *LAYER_COLUMNS])


def test_figures_are_written(tmp_path):
    rows = synthetic("a", 0, [0.1, 0.5, 0.9], 100) + synthetic("b", 0, [0.1, 0.6, 0.95], 300)
    accuracy_figure(rows, 0.9, tmp_path / "acc.png")
    rates_figure(rows, ["a", "b"], tmp_path / "rates.png")
    assert (tmp_path / "acc.png").stat().st_size > 10_000 and (tmp_path / "rates.png").stat().st_size > 10_000


def test_settings_validate_and_policy_specs_parse():
    assert PolicySpec.parse("fixed-lambda=2").label == "fixed-lambda=2"
    assert PolicySpec.parse("rate-aware").value is None
    base = Settings().app_config()
    trust = PolicySpec.parse("trust-region=0.05").run_config(base, seed=3)
    assert (trust.policy, trust.noise_fraction, trust.seed) == ("trust-region", 0.05, 3)
    assert PolicySpec.parse("fixed-lambda=8").run_config(base, seed=0).fixed_lambda == 8.0
    assert PolicySpec.parse("m22=3").run_config(base, seed=0).bits == 3.0
    with pytest.raises(ValueError, match="'noise-fraction' must be <= 1"):
        PolicySpec.parse("trust-region=2").run_config(base, seed=0)
    with pytest.raises(ValueError, match="clients_per_round must be in 2..num_clients=5"):
        Settings(num_clients=5, clients_per_round=6)


def test_accuracy_figure_styles_are_distinct_for_twelve_policies():
    from flrd.simulations.figures import _style

    styles = [tuple(sorted((k, str(v)) for k, v in _style(i).items())) for i in range(12)]
    assert len(set(styles)) == 12

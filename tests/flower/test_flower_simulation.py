"""The real ServerApp and ClientApp under Flower's Simulation Engine (run_simulation)."""

from __future__ import annotations

import pytest

from flrd.clients.client_app import build_client_app
from flrd.config import RunConfig
from flrd.simulations.engine import simulate
from flrd.strategies.server_app import build_server_app, parse_report

MLP_PARAMS = 199_210


@pytest.mark.slow
def test_run_simulation_with_the_real_apps(capfd, tmp_path):
    config = RunConfig(num_server_rounds=2, fraction_train=1.0, min_train_nodes=3,
                       fraction_evaluate=1.0, local_steps=5)
    server = build_server_app(config)
    client = build_client_app(config.to_run_config())
    simulate(server, client, 3, config, out_dir=tmp_path)
    rows = parse_report(capfd.readouterr().out)
    assert [row["round"] for row in rows] == [1, 2]
    for row in rows:
        assert row["used"] == row["sent"] == 3  # every sampled client's update was used
        assert 0 < row["bits"] < 3 * 32 * MLP_PARAMS  # below float32
        assert row["R_ind"] > 1 and row["R_sum"] >= row["R_ind"]  # realized bits above both bounds (R_sum <= R_ind)

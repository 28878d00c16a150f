"""The real ServerApp and ClientApp under Flower's Simulation Engine (run_simulation)."""

from __future__ import annotations

import pytest

from flrd.strategies.server_app import parse_report
from flwr.serverapp import ServerApp

MLP_PARAMS = 199_210


@pytest.mark.slow
def test_run_simulation_with_the_real_apps(capfd, tmp_path, monkeypatch):
    # Ray workers import from their working directory: keep the source checkout out of it.
    monkeypatch.chdir(tmp_path)
    from flwr.simulation import run_simulation

    import flrd.strategies.server_app as server_module
    from flrd.clients.client_app import app as client_app

    server_app = ServerApp()

    @server_app.main()
    def main(grid, context):  # run_simulation passes no run config: set the test's here
        context.run_config.update({"num-server-rounds": 2, "policy": "rate-aware"})
        server_module.main(grid, context)

    run_simulation(server_app, client_app, num_supernodes=3,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": 2}})
    rows = parse_report(capfd.readouterr().out)
    assert [row["round"] for row in rows] == ["1", "2"]
    for row in rows:
        assert row["used"] == row["sent"] == "3"  # every sampled client's update was used
        assert 0 < int(row["uplink bits"]) < 3 * 32 * MLP_PARAMS  # below float32
        assert 0 < float(row["R_sum bits"]) < float(row["R_ind bits"]) < int(row["uplink bits"])
        assert 0.0 <= float(row["test acc"]) <= 1.0

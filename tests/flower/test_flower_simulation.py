"""The real ServerApp and ClientApp under Flower's Simulation Engine (run_simulation)."""

from __future__ import annotations

import pytest
from flwr.serverapp import ServerApp

MLP_PARAMS = 199_210


def report_rows(text: str) -> list[dict[str, str]]:
    """The ServerApp's per-round table, one dict per round keyed by the column titles."""
    titles, rows = None, []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if cells[0].endswith("round") and len(cells) > 4:
            titles = [cells[0].split()[-1], *cells[1:]]
        elif titles and len(cells) == len(titles) and cells[0].isdigit():
            rows.append(dict(zip(titles, cells)))
    return rows


@pytest.mark.slow
def test_run_simulation_with_the_real_apps(capfd):
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
    rows = report_rows(capfd.readouterr().out)
    assert [row["round"] for row in rows] == ["1", "2"]
    for row in rows:
        assert row["used"] == row["sent"] == "3"  # every sampled client's update was used
        assert 0 < int(row["uplink bits"]) < 3 * 32 * MLP_PARAMS  # below float32
        assert 0 < float(row["R_sum bits"]) < float(row["R_ind bits"]) < int(row["uplink bits"])
        assert 0.0 <= float(row["test acc"]) <= 1.0

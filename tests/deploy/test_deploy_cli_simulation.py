"""``flwr run .`` of the App with the local-simulation federation, as a user runs it."""

from __future__ import annotations

import tomllib

import pytest
from deploy_procs import REPO, flwr, flwr_json, free_port, pids_with_marker

from flrd.strategies.server_app import parse_report

NUM_SUPERNODES = 4


@pytest.mark.slow
def test_flwr_run_local_simulation_completes(workspace):
    """``flwr run .`` from the repository root, on Flower's default local connection."""
    pyproject = (REPO / "pyproject.toml").read_bytes()
    assert "federations" not in tomllib.loads(pyproject.decode())["tool"]["flwr"]  # nothing to migrate
    # Private ports for the local SuperLink, so parallel sessions do not collide.
    env = dict(workspace.env, FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(free_port()),
               FLWR_LOCAL_CONTROL_API_PORT=str(free_port()))
    try:
        done = flwr(env, "run", ".", "--stream",
                    "--run-config", "num-server-rounds=2 fraction-train=1.0 local-steps=5",
                    "--federation-config", f"num-supernodes={NUM_SUPERNODES}",
                    cwd=REPO, timeout=420)
    finally:  # the CLI starts the local SuperLink detached: stop it by its PID
        workspace.procs.adopt(pids_with_marker(str(workspace.home)))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert (REPO / "pyproject.toml").read_bytes() == pyproject  # flwr run left the App as it was
    runs = flwr_json(env, "ls")["runs"]
    assert [run["status"] for run in runs] == ["finished:completed"], runs
    rows = parse_report(output)
    assert [row["round"] for row in rows] == [1, 2], output[-3000:]
    for row in rows:
        assert row["used"] == row["sent"] >= 2, output[-3000:]  # sampled from the nodes connected so far
        assert row["bits"] > 0 and row["R_sum"] >= row["R_ind"] > 1  # realized bits above both bounds (R_sum <= R_ind)
    # A new user's log: one line per round, beside a start-up of Flower's CLI, SuperLink
    # and Ray (about 16 lines, whatever the number of rounds) that flrd does not print.
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) - len(rows) <= 20, output
    assert not any("Aggregated MetricRecord" in line or "configure_train" in line for line in lines)


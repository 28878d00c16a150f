"""A real deployment on 127.0.0.1: flower-superlink, two flower-supernodes, ``flwr run``.

``flwr run --stream`` exits 0 even when the ServerApp fails, so success is read from
``flwr ls`` (``finished:completed``) and from the ServerApp's own report in the logs.
"""

from __future__ import annotations

import ssl

import httpx
import pytest
from deploy_procs import BIN, flwr, flwr_json, free_port, wait_for, wait_runs_finished
from deploy_tls import ServerCertificates, make_server_certificates, make_supernode_keys

from flrd.strategies.server_app import parse_report

NUM_NODES = 2


def start_superlink(workspace, port: int, certs: ServerCertificates | None = None) -> None:
    """Start a SuperLink on 127.0.0.1:``port`` and wait until /health answers.

    With ``certs`` it serves TLS and requires SuperNode authentication.
    """
    security = ("--insecure",) if certs is None else (
        "--ssl-certfile", str(certs.server_cert), "--ssl-keyfile", str(certs.server_key),
        "--ssl-ca-certfile", str(certs.ca_cert), "--enable-supernode-auth")
    workspace.procs.start(
        "superlink", str(BIN / "flower-superlink"), *security,
        "--host", "127.0.0.1", "--port", str(port),
        # Legacy gRPC endpoints still open by default on fixed ports: move them.
        "--fleet-api-address", f"127.0.0.1:{free_port()}",
        "--control-api-address", f"127.0.0.1:{free_port()}",
        "--disable-runtime-dependency-installation")
    scheme = "http" if certs is None else "https"
    verify = False if certs is None else ssl.create_default_context(cafile=str(certs.ca_cert))

    def healthy() -> bool:
        if workspace.procs.procs[-1].poll() is not None:
            raise RuntimeError(f"superlink exited:\n{workspace.procs.log('superlink')}")
        try:
            return httpx.get(f"{scheme}://127.0.0.1:{port}/health", timeout=1,
                             verify=verify).is_success
        except httpx.HTTPError:
            return False

    wait_for(healthy, 60, "the SuperLink's health endpoint")


def start_supernode(workspace, name: str, port: int, partition: int, *args: str):
    """Start a SuperNode holding partition ``partition`` of ``NUM_NODES``."""
    return workspace.procs.start(
        name, str(BIN / "flower-supernode"), *args, "--superlink", f"127.0.0.1:{port}",
        "--port", str(free_port()),
        "--node-config", f"partition-id={partition} num-partitions={NUM_NODES}",
        "--max-retries", "5", "--max-wait-time", "60")


def run_two_rounds(workspace, connection: str) -> str:
    """``flwr run`` the App for 2 rounds; return the run's logs once it completed."""
    done = flwr(workspace.env, "run", ".", connection, "--run-config", "num-server-rounds=2",
                cwd=workspace.app, timeout=120)
    assert done.returncode == 0 and "Successfully started run" in done.stdout, done.stdout
    runs = wait_runs_finished(workspace.env, connection, timeout=360)
    assert [run["status"] for run in runs] == ["finished:completed"], runs
    logs = flwr(workspace.env, "log", runs[0]["run-id"], connection, "--show", timeout=60)
    return logs.stdout


def assert_report(logs: str) -> None:
    rows = parse_report(logs)
    assert [row["round"] for row in rows] == [1, 2], logs[-3000:]
    for row in rows:
        assert row["used"] == row["sent"] == NUM_NODES
        assert row["bits"] > 0 and row["R_sum"] >= row["R_ind"] > 1  # realized bits above both bounds (R_sum <= R_ind)


@pytest.mark.slow
def test_insecure_deployment_runs_two_rounds(workspace):
    port = free_port()
    workspace.connect("deploy", address=f"127.0.0.1:{port}", insecure=True)
    start_superlink(workspace, port)
    for i in range(NUM_NODES):
        start_supernode(workspace, f"supernode{i}", port, i, "--insecure")
    assert_report(run_two_rounds(workspace, "deploy"))


@pytest.mark.slow
def test_tls_deployment_with_supernode_auth_refuses_unregistered_nodes(workspace):
    certs = make_server_certificates(workspace.root / "certs")
    keys = [make_supernode_keys(workspace.root / "keys", f"node{i}") for i in range(3)]
    port = free_port()
    workspace.connect("secure", address=f"127.0.0.1:{port}",
                      **{"root-certificates": str(certs.ca_cert)})
    start_superlink(workspace, port, certs)
    for _, public in keys[:NUM_NODES]:
        done = flwr(workspace.env, "supernode", "register", str(public), "secure")
        assert done.returncode == 0 and "registered successfully" in done.stdout, done.stdout
    registered = {n["node-id"] for n in flwr_json(workspace.env, "supernode", "list",
                                                   "secure")["nodes"]}
    assert len(registered) == NUM_NODES
    tls = ("--root-certificates", str(certs.ca_cert))
    for i, (private, _) in enumerate(keys):
        start_supernode(workspace, f"supernode{i}", port, i % NUM_NODES, *tls,
                        "--auth-supernode-private-key", str(private))
    stranger = workspace.procs.procs[-1]
    wait_for(lambda: stranger.poll() is not None, 90, "the unregistered SuperNode to exit")
    assert stranger.returncode != 0
    assert "Failed to activate SuperNode" in workspace.procs.log(f"supernode{NUM_NODES}")

    def registered_online() -> bool:
        nodes = flwr_json(workspace.env, "supernode", "list", "secure")["nodes"]
        return {n["node-id"] for n in nodes if n["status"] == "online"} == registered

    wait_for(registered_online, 60, "the registered SuperNodes to come online")
    assert_report(run_two_rounds(workspace, "secure"))

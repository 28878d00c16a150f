"""The reference ServerApp and ClientApp (MNIST MLP) on the in-process Grid."""

from __future__ import annotations

import numpy as np
from flower_fakes import InProcessGrid

from flrd.clients.client_app import app as client_app
from flrd.config import RunConfig
from flrd.protocol import CompressionRequest
from flrd.state_file import load_state
from flrd.strategies import server_app
from flrd.strategies.server_app import parse_report

RUN_CONFIG = {"num-server-rounds": 1, "local-steps": 2, "central-eval": False}


def _run(grid: InProcessGrid, run_config: dict) -> None:
    server_app.run_server(grid, RunConfig.from_run_config(run_config))


def test_server_app_saves_and_resumes_its_state(tmp_path, capsys):
    config = {**RUN_CONFIG, "state-dir": str(tmp_path)}
    _run(InProcessGrid(client_app, 2, run_config=config), config)
    _, state = load_state(tmp_path)
    assert state["rounds-completed"] == 1 and len(state["policy.sx2"]) == 6
    with np.load(tmp_path / "model.npz") as saved:
        model = {k: saved[k] for k in saved.files}
    assert list(model) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
                           "fc3.weight", "fc3.bias"]

    grid = InProcessGrid(client_app, 2, run_config=config)
    _run(grid, config)  # a restarted server
    sent = grid.sent[0].content["arrays"]
    for name, values in model.items():
        np.testing.assert_array_equal(sent[name].numpy(), values)
    rounds = [row["round"] for row in parse_report(capsys.readouterr().out)]
    assert rounds == [1, 2]  # the second run continued the round count
    assert load_state(tmp_path)[1]["rounds-completed"] == 2


def test_run_config_selects_the_baseline(capsys):
    config = {**RUN_CONFIG, "policy": "qsgd", "bits": 3.0}
    grid = InProcessGrid(client_app, 2, run_config=config)
    _run(grid, config)
    request = CompressionRequest.from_config(grid.sent[0].content["config"])
    assert (request.codec, request.bits) == ("qsgd", 3.0)
    row = parse_report(capsys.readouterr().out)[0]
    assert row["used"] == row["sent"] == 2
    # 3 bits/coordinate, plus the message's framing and per-layer statistics (< 64 B)
    assert 2 * 2.5 * 199_210 < row["bits"] <= 2 * (3 * 199_210 + 8 * 64)



def test_trust_region_keeps_its_reference_model_across_a_restart(tmp_path):
    from flrd.models import build_model

    config = {**RUN_CONFIG, "policy": "trust-region", "state-dir": str(tmp_path)}
    first = InProcessGrid(client_app, 2, run_config=config)
    _run(first, config)
    initial = [float(np.mean(t.double().numpy() ** 2)) for t in build_model("mlp", seed=0).state_dict().values()]
    np.testing.assert_allclose(load_state(tmp_path)[1]["policy.reference_mean_square"], initial, rtol=1e-12)
    request = CompressionRequest.from_config(first.sent[0].content["config"])
    assert request.relative_noise is None and all(v > 0 for v in request.noise_var)  # no warm-up

    grid = InProcessGrid(client_app, 2, run_config=config)
    _run(grid, config)  # restarted on the trained model: the reference stays the first one
    np.testing.assert_allclose(load_state(tmp_path)[1]["policy.reference_mean_square"], initial, rtol=1e-12)
    assert load_state(tmp_path)[1]["rounds-completed"] == 2

"""The harness's one dependency on Flower's deprecated ``run_simulation``.

This test fails the day Flower removes it; ``simulations/engine.py`` says what to do.
"""

import inspect

from flwr import simulation


def test_run_simulation_still_exists_with_the_arguments_the_adapter_uses():
    assert hasattr(simulation, "run_simulation"), "Flower removed run_simulation: see simulations/engine.py"
    parameters = inspect.signature(simulation.run_simulation).parameters
    assert {"server_app", "client_app", "num_supernodes", "backend_config"} <= set(parameters)

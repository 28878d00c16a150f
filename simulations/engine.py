"""The one place the harness drives Flower's simulation engine.

Flower 1.41 deprecated ``flwr.simulation.run_simulation`` and names ``flwr run`` as its
replacement. The harness keeps ``run_simulation`` here, behind this adapter, because it
needs what ``flwr run`` cannot give a Python caller: the strategy's Result in this
process (no FAB, no SuperLink, no output files to parse) and a live progress bar.
``tests/simulations/test_engine.py`` runs it, so the day Flower removes it CI fails
here, in one place. The App itself runs with ``flwr run .`` (README).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from flrd.config import RunConfig

__all__ = ["simulate"]


def simulate(server: ServerApp, client: ClientApp, num_supernodes: int, config: RunConfig, *,
             client_cpus: float = 1.0, out_dir: Path = Path("."), quiet: bool = True) -> None:
    """Run ``server`` and ``num_supernodes`` virtual ``client`` nodes.

    ``run_simulation`` takes no run config: build both apps with ``config`` fixed
    (:func:`~flrd.strategies.server_app.build_server_app`,
    :func:`~flrd.clients.client_app.build_client_app`); here it sets the log level.
    """
    from flwr.simulation import run_simulation

    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # silences a Ray FutureWarning; no GPUs used
    if quiet and not config.verbose:  # the progress bar replaces Flower's log; warnings still show
        logging.getLogger("flwr").setLevel(logging.WARNING)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Ray workers import from their working directory first. Started from a source
    # checkout, they would find its flrd/ folder, which lacks flrd.clients & co. (the
    # wheel maps those), so they start in the output folder instead.
    flower_log = logging.getLogger("flwr")
    deprecation = _DropDeprecationNotice()
    flower_log.addFilter(deprecation)  # this adapter is where that notice is handled
    with contextlib.chdir(out_dir), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*run_simulation.*", category=DeprecationWarning)
        try:
            run_simulation(
                server_app=server, client_app=client, num_supernodes=num_supernodes,
                backend_config={"client_resources": {"num_cpus": client_cpus, "num_gpus": 0.0},
                                "init_args": {"logging_level": "ERROR", "log_to_driver": False}},
            )
        finally:
            flower_log.removeFilter(deprecation)


class _DropDeprecationNotice(logging.Filter):
    """Drops Flower's logged notice that ``run_simulation`` is deprecated (see above)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("run_simulation" in message or "deprecated feature" in message.lower()
                    or "entirely in future versions" in message)

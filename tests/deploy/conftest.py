"""Fixtures for tests that run Flower's CLIs as separate processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from deploy_procs import Processes, copy_app, flwr_env


class Workspace:
    """A private FLWR_HOME, a copy of the App, and the processes a test starts."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "flwr-home"
        self.home.mkdir()
        self.env = flwr_env(self.home)
        self.app = copy_app(root / "app")
        self.procs = Processes(self.env, root)

    def connect(self, name: str, **settings: str | bool) -> None:
        """Write a SuperLink connection ``name`` into this FLWR_HOME's config.toml."""
        lines = [f'[superlink.{name}]'] + [
            f"{key} = {str(value).lower() if isinstance(value, bool) else repr(str(value))}"
            for key, value in settings.items()]
        with open(self.home / "config.toml", "a") as config:
            config.write("\n" + "\n".join(lines) + "\n")


@pytest.fixture
def workspace(tmp_path):
    """A Workspace whose processes are all stopped (by PID) when the test ends."""
    space = Workspace(tmp_path)
    try:
        yield space
    finally:
        space.procs.stop_all()

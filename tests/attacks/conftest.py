"""Fixtures for the attack suite: Flower's task identity, the in-process fakes."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
from flwr.supercore.task_identity import TaskIdentity

sys.path.insert(0, str(Path(__file__).parent.parent / "flower"))  # flower_fakes


@pytest.fixture(autouse=True)
def task_identity():
    """Messages need a run/node identity, which Flower's runtime sets per process."""
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    random.seed(0)  # Flower samples nodes with the global `random`
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved

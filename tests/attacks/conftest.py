"""Fixtures for the attack suite: Flower's task identity, the in-process fakes."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "flower"))  # flower_fakes

from flower_fakes import task_identity  # noqa: E402, F401  (an autouse fixture, used by pytest)

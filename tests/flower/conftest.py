"""Fixtures for the Flower-side tests."""

from flower_fakes import task_identity  # noqa: F401  (an autouse fixture, used by pytest)

"""One definition of every run-config key: pyproject.toml, the CLI and the docs agree with it."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import pytest

from flrd.config import RunConfig, config_keys, markdown_table
from flrd.simulations.cli import HARNESS_KEYS, build_parser

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_app_config_is_the_run_config_default():
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert table == RunConfig().to_run_config()


def test_docs_embed_the_generated_table():
    text = (ROOT / "docs" / "strategy.md").read_text()
    section = text.split("<!-- run-config:start -->")[1].split("<!-- run-config:end -->")[0]
    assert section.strip() == markdown_table()


def _simulate_options() -> dict[str, argparse.Action]:
    parser = build_parser()
    simulate = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {flag: action for action in simulate.choices["simulate"]._actions
            for flag in action.option_strings}


def test_every_key_is_a_simulate_option_with_the_same_default_or_set_by_the_harness():
    options = _simulate_options()
    for key, default, _ in config_keys():
        if key in HARNESS_KEYS:
            assert f"--{key}" not in options
            continue
        assert options[f"--{key}"].default == default, key


def test_harness_keys_are_real_keys():
    assert set(HARNESS_KEYS) <= {key for key, _, _ in config_keys()}


@pytest.mark.parametrize(("config", "message"), [
    ({"lr": 0.0}, "'lr' must be > 0"),
    ({"fraction-train": 1.5}, "'fraction-train' must be <= 1"),
    ({"policy": "nope"}, "'policy' must be one of"),
    ({"lambda-cap": 1e308}, "'lambda-cap' must be <= 1e\\+12"),
    ({"local-steps": 2.5}, "'local-steps' must be an integer"),
    ({"audit": 1}, "'audit' must be true or false"),
    ({"num-server-round": 3}, "unknown run config keys"),
    ({"momentum": float("nan")}, "'momentum' must be finite"),
])
def test_bad_run_config_names_the_bound(config, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.from_run_config(config)


def test_round_trip():
    config = RunConfig(policy="qsgd", bits=4.0, partition="dirichlet")
    assert RunConfig.from_run_config(config.to_run_config()) == config

"""The reference App's run config: every key, its default and its meaning, in one place.

``flwr run`` passes the keys of ``[tool.flwr.app.config]`` (pyproject.toml); the
``flrd simulate`` harness builds the same :class:`RunConfig` from its command line. Both
the ServerApp (``strategies.server_app``) and the ClientApp (``clients.client_app``) read
it through :meth:`RunConfig.from_run_config`, so a default lives here and nowhere else;
``tests/test_config.py`` fails when pyproject.toml, the CLI or docs/strategy.md drift.

Example:
    >>> config = RunConfig.from_run_config({"policy": "signsgd", "num-server-rounds": 5})
    >>> config.policy, config.num_server_rounds, config.local_steps
    ('signsgd', 5, 20)
    >>> RunConfig.from_run_config({"lr": -1.0})
    Traceback (most recent call last):
    ...
    ValueError: run config 'lr' must be > 0, got -1.0
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .trust_region import DEFAULT_NOISE_FRACTION

__all__ = ["POLICIES", "RunConfig", "config_keys", "markdown_table"]

#: Policies selectable by ``policy`` (see ``flrd.strategies.BASELINES``).
POLICIES = ("rate-aware", "waterfilling", "fixed-lambda", "trust-region", "float32", "m22", "signsgd",
            "signsgd-mv", "qsgd", "terngrad", "topk-ef", "topk-ef-global")
MODELS = ("mlp", "cnn")
PARTITIONS = ("iid", "dirichlet", "shards")


def _key(doc: str, *, low: float | None = None, high: float | None = None,
         strict_low: bool = False, choices: tuple[str, ...] | None = None) -> dict[str, Any]:
    return {"doc": doc, "low": low, "high": high, "strict_low": strict_low, "choices": choices}


@dataclass(frozen=True)
class RunConfig:
    """The run config of the reference App (MNIST, Flower simulation or deployment).

    Field ``local_steps`` is run-config key ``local-steps``, and so on. Each field's
    metadata holds its documentation and bounds; :meth:`from_run_config` checks them.
    """

    num_server_rounds: int = field(default=25, metadata=_key("server rounds", low=1))
    policy: str = field(default="trust-region", metadata=_key(
        "compression policy: the trust-region rule, the Corollary-3 rule (rate-aware) or a baseline",
        choices=POLICIES))
    model: str = field(default="mlp", metadata=_key("model to train", choices=MODELS))
    seed: int = field(default=0, metadata=_key("seed of the model, partitions, sampling and codecs", low=0))
    round_timeout: float = field(default=600.0, metadata=_key(
        "seconds the server waits for a round's replies", low=0, strict_low=True))
    fraction_train: float = field(default=0.1, metadata=_key(
        "fraction of the connected nodes sampled per round", low=0, high=1, strict_low=True))
    min_train_nodes: int = field(default=2, metadata=_key("fewest nodes sampled per round", low=2))
    min_replies: int = field(default=0, metadata=_key(
        "stop the run when fewer replies survive a round's checks (0: never)", low=0))
    fraction_evaluate: float = field(default=0.1, metadata=_key(
        "fraction of nodes asked for federated evaluation (0: none)", low=0, high=1))
    bits: float = field(default=2.0, metadata=_key(
        "bits per coordinate of the fixed-rate baselines (m22, qsgd, topk-ef, topk-ef-global)",
        low=0, high=32, strict_low=True))
    fixed_lambda: float = field(default=256.0, metadata=_key(
        "lambda of the fixed-lambda policy (quantization / gradient noise)", low=0))
    noise_fraction: float = field(default=DEFAULT_NOISE_FRACTION, metadata=_key(
        "smallest per-round distortion of the trust-region policy, as a fraction of the first model's mean square",
        low=0, high=1, strict_low=True))
    lambda_cap: float = field(default=16.0, metadata=_key(
        "largest lambda the rate-aware rule may choose", low=0, high=1e12, strict_low=True))
    beta: float = field(default=1.0, metadata=_key("Theorem 1's smoothness beta", low=0))
    initial_distance: float = field(default=1.0, metadata=_key(
        "Theorem 1's initial distance R0", low=0, strict_low=True))
    target_accuracy_eps: float = field(default=0.01, metadata=_key(
        "Theorem 1's target accuracy eps", low=0, strict_low=True))
    smoothing: float = field(default=0.5, metadata=_key(
        "weight of the newest round in the smoothed estimates", low=0, high=1, strict_low=True))
    warmup_relative_noise: float = field(default=8.0, metadata=_key(
        "first round's quantization noise, relative to each layer's own mean square "
        "(8: per-client SNR 1/8, about 0.17 bit per coordinate)",
        low=0, high=1e6, strict_low=True))
    audit: bool = field(default=False, metadata=_key(
        "clients also send their exact update (outside the bit count) to measure distortion"))
    side_info: bool = field(default=False, metadata=_key(
        "Wyner-Ziv coding against the server's side information, for the dithered policies "
        "(trust-region, rate-aware, fixed-lambda); docs/wyner_ziv.md"))
    central_eval: bool = field(default=True, metadata=_key(
        "the server evaluates the global model on the MNIST test set each round"))
    state_dir: str = field(default="", metadata=_key(
        "folder where model and strategy state are saved each round; a restart resumes"))
    verbose: bool = field(default=False, metadata=_key(
        "show Flower's own per-round log besides flrd's one line per round"))
    local_steps: int = field(default=20, metadata=_key("local SGD steps per round", low=1))
    batch_size: int = field(default=128, metadata=_key("local minibatch size", low=1))
    lr: float = field(default=0.01, metadata=_key("local learning rate", low=0, strict_low=True))
    momentum: float = field(default=0.5, metadata=_key("local SGD momentum", low=0, high=1))
    partition: str = field(default="iid", metadata=_key(
        "how MNIST is split over the nodes", choices=PARTITIONS))
    dirichlet_alpha: float = field(default=0.5, metadata=_key(
        "Dirichlet concentration of the dirichlet partition", low=0, strict_low=True))

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            _check(item, getattr(self, item.name))

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, object]) -> RunConfig:
        """Parse Flower's ``context.run_config`` (dashed keys); unknown keys are errors."""
        by_key = {config_key(item.name): item for item in dataclasses.fields(cls)}
        if unknown := sorted(set(run_config) - set(by_key)):
            raise ValueError(f"unknown run config keys {unknown}; known: {sorted(by_key)}")
        # Any: _coerce returns each field's own type, which the dict type cannot say per key
        values: dict[str, Any] = {by_key[key].name: _coerce(by_key[key], key, value)
                                  for key, value in run_config.items()}
        return cls(**values)

    def to_run_config(self) -> dict[str, bool | int | float | str]:
        """Dashed keys and values, as in ``[tool.flwr.app.config]``."""
        return {config_key(item.name): getattr(self, item.name) for item in dataclasses.fields(self)}

    def replace(self, **changes: object) -> RunConfig:
        """A copy with ``changes`` (field names), validated."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def config_key(field_name: str) -> str:
    """Run-config key of a :class:`RunConfig` field (``local_steps`` -> ``local-steps``)."""
    return field_name.replace("_", "-")


def config_keys() -> list[tuple[str, object, str]]:
    """``(key, default, doc)`` of every run-config key, in declaration order."""
    return [(config_key(f.name), f.default, f.metadata["doc"]) for f in dataclasses.fields(RunConfig)]


def _coerce(item: dataclasses.Field[Any], key: str, value: object) -> object:
    kind = item.type if isinstance(item.type, type) else {"int": int, "float": float, "str": str,
                                                          "bool": bool}[str(item.type)]
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"run config {key!r} must be true or false, got {value!r}")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise ValueError(f"run config {key!r} must be a string, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"run config {key!r} must be a number, got {value!r}")
    if kind is int:
        if value != int(value):
            raise ValueError(f"run config {key!r} must be an integer, got {value!r}")
        return int(value)
    return float(value)


def _check(item: dataclasses.Field[Any], value: object) -> None:
    key, meta = config_key(item.name), item.metadata
    if meta["choices"] is not None and value not in meta["choices"]:
        raise ValueError(f"run config {key!r} must be one of {list(meta['choices'])}, got {value!r}")
    if not isinstance(value, int | float) or isinstance(value, bool):
        return
    if not math.isfinite(value):
        raise ValueError(f"run config {key!r} must be finite, got {value!r}")
    low, high = meta["low"], meta["high"]
    if low is not None and (value <= low if meta["strict_low"] else value < low):
        raise ValueError(f"run config {key!r} must be {'>' if meta['strict_low'] else '>='} {low:g}, "
                         f"got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"run config {key!r} must be <= {high:g}, got {value!r}")


def markdown_table() -> str:
    """The Markdown table of every key, default and meaning (docs/strategy.md embeds it).

    Run ``python -m flrd.config`` to print it.
    """
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, doc in config_keys():
        shown = f'"{default}"' if isinstance(default, str) else str(default).lower() \
            if isinstance(default, bool) else f"{default:g}"
        rows.append(f"| `{key}` | `{shown}` | {doc} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())

"""The reference ServerApp (MNIST, rate-controlled compressed uplink), built in one place.

``flwr run .`` uses :data:`app`; the ``flrd simulate`` harness builds its ServerApp with
:func:`build_server_app` too, adding only a result sink and a progress bar. Run config
keys, their defaults and meanings: :class:`flrd.config.RunConfig` (listed in
docs/strategy.md, "Run config").

Per round it prints one line (:func:`~flrd.strategies.reporting.format_round`): clients,
realized uplink bits, the planned lambda and distortion, the measured distortion and
the realized bits over ``R_ind`` at it, and the test accuracy. With ``verbose = true``
Flower's own per-round log shows too.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Result

from flrd.config import RunConfig
from flrd.models import build_model
from flrd.state_file import STATE_FILE, StateError, StateFileError, load_state, save_state

from .baselines import BASELINES, build_strategy
from .rate_control import RateControl
from .reporting import format_round

__all__ = ["app", "build_server_app", "build_strategy_from_config", "parse_report", "run_server"]

ResultSink = Callable[[Result, list[tuple[str, int]]], None]
RoundHook = Callable[[int, MetricRecord | None], None]
_QUIET_LOGGERS = ("flwr",)


def build_strategy_from_config(config: RunConfig, layer_sizes: list[int]) -> RateControl:
    """The strategy a run config asks for (policy, its knobs, sampling)."""
    return build_strategy(
        config.policy, layer_sizes, bits=config.bits, fixed_lambda=config.fixed_lambda,
        noise_fraction=config.noise_fraction,
        policy_params={"lambda_cap": config.lambda_cap, "beta": config.beta,
                       "initial_distance": config.initial_distance,
                       "target_accuracy_eps": config.target_accuracy_eps,
                       "smoothing": config.smoothing,
                       "warmup_relative_noise": config.warmup_relative_noise},
        side_info=config.side_info and BASELINES[config.policy].takes_side_info,  # the others run as they are
        audit=config.audit, seed=config.seed, min_replies=config.min_replies,
        fraction_train=config.fraction_train,
        min_train_nodes=config.min_train_nodes, min_available_nodes=config.min_train_nodes,
        fraction_evaluate=config.fraction_evaluate,
    )


def run_server(grid: Grid, config: RunConfig, *, on_round: RoundHook | None = None,
               print_rounds: bool = True) -> Result:
    """Train for ``num_server_rounds`` rounds; print one line per round (``print_rounds``).

    ``on_round(server_round, evaluation)`` is called after each round's evaluation
    (e.g. for a progress bar).
    """
    with _quiet(not config.verbose):
        return _run(grid, config, on_round, print_rounds)


@contextlib.contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    """Flower's per-round INFO log off (warnings stay) while the server runs."""
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    if enabled:
        for logger in loggers:
            logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _run(grid: Grid, config: RunConfig, on_round: RoundHook | None, print_rounds: bool) -> Result:
    model = build_model(config.model, seed=config.seed)
    arrays = ArrayRecord(model.state_dict())
    strategy = build_strategy_from_config(config, [a.size for a in arrays.to_numpy_ndarrays()])
    state_dir = Path(config.state_dir) if config.state_dir else None
    if state_dir is not None and (state_dir / STATE_FILE).exists():
        saved, state = load_state(state_dir)  # StateFileError names the file and field
        try:
            strategy.load_state_dict(state)  # type: ignore[arg-type]
        except StateError as err:  # one documented error, naming the file and the field
            raise StateFileError(state_dir / STATE_FILE, err.field, str(err)) from None
        arrays = ArrayRecord({name: Array(values) for name, values in saved.items()})
    evaluator = _Evaluator(model, strategy, state_dir, config.central_eval, on_round, print_rounds)
    return strategy.start(grid=grid, initial_arrays=arrays, num_rounds=config.num_server_rounds,
                          timeout=config.round_timeout, train_config=ConfigRecord(),
                          evaluate_fn=evaluator)


def build_server_app(config: RunConfig | None = None, *, sink: ResultSink | None = None,
                     on_round: RoundHook | None = None, print_rounds: bool = True) -> ServerApp:
    """The reference ServerApp.

    Args:
        config: fixed run config; when None, the ``flwr run`` run config is read.
        sink: receives the strategy's Result and the model's ``(layer, size)`` list.
        on_round: called after each round's evaluation (see :func:`run_server`).
        print_rounds: print one line per round (off under a progress bar).
    """
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        run_config = config if config is not None else RunConfig.from_run_config(context.run_config)
        result = run_server(grid, run_config, on_round=on_round, print_rounds=print_rounds)
        if sink is not None:
            state = build_model(run_config.model).state_dict()
            sink(result, [(name, t.numel()) for name, t in state.items()])

    return server


class _Evaluator:
    """Strategy.start's per-round callback: central accuracy, saved state, the round's line."""

    def __init__(self, model: torch.nn.Module, strategy: RateControl, state_dir: Path | None,
                 central_eval: bool, on_round: RoundHook | None, print_rounds: bool) -> None:
        self.model, self.strategy, self.state_dir = model, strategy, state_dir
        self.central_eval, self.on_round, self.print_rounds = central_eval, on_round, print_rounds

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if self.state_dir is not None and server_round > 0:
            save_state(self.state_dir, {k: a.numpy() for k, a in arrays.items()},
                       self.strategy.state_dict())
        evaluation = self._evaluate(arrays) if self.central_eval else None
        if server_round > 0:
            if self.print_rounds:
                print(format_round(self.strategy.last_round_metrics, evaluation), flush=True)
            if self.on_round is not None:
                self.on_round(server_round, evaluation)
        return evaluation

    def _evaluate(self, arrays: ArrayRecord) -> MetricRecord:
        from flrd.datasets import load_mnist  # the data are only needed here
        from flrd.training import evaluate

        self.model.load_state_dict(arrays.to_torch_state_dict())
        data = load_mnist()
        loss, accuracy = evaluate(self.model, data.x_test, data.y_test)
        return MetricRecord({"test-loss": loss, "test-accuracy": accuracy})


_LINE = re.compile(r"round (?P<round>\d+): (?P<used>\d+)/(?P<sent>\d+) clients, "
                   r"(?P<bits>[-+.\deE]+) bits")
_RATIO = re.compile(r"bits/(?P<bound>R_ind|R_sum) (?P<value>[-+.\deE]+)")


def parse_report(text: str) -> list[dict[str, float]]:
    """The per-round lines of :func:`~flrd.strategies.reporting.format_round` found in
    ``text`` (e.g. a ``flwr run --stream`` log): round, used, sent, bits and the
    measured ``bits/R_ind`` and ``bits/R_sum`` ratios when printed.

    Example:
        >>> parse_report("x\\nround 2: 3/4 clients, 800 bits (0.1 bit/coord) | measured D 0.1, "
        ...              "bits/R_ind 1.5, bits/R_sum 2")
        [{'round': 2.0, 'used': 3.0, 'sent': 4.0, 'bits': 800.0, 'R_ind': 1.5, 'R_sum': 2.0}]
    """
    rows = []
    for line in text.splitlines():
        if (match := _LINE.search(line)) is None:
            continue
        row = {key: float(value) for key, value in match.groupdict().items()}
        row.update({m["bound"]: float(m["value"]) for m in _RATIO.finditer(line)})
        rows.append(row)
    return rows


app = build_server_app()

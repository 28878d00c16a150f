"""Client-side DP (``fixedclipping_mod``) with compressed uplink and federated evaluation.

``fixedclipping_mod`` answers every message without a ``clipping_norm`` key with an
error, evaluate messages included, so it must sit on the train function
(``@app.train(mods=[fixedclipping_mod])``), not in ``ClientApp(mods=...)``. As the inner
mod it clips the new weights before ``compression_mod`` computes the update from them.
"""

from __future__ import annotations

import numpy as np
from flower_fakes import InProcessGrid, initial_arrays, plain_client_app
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod
from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping, FedAvg

from flrd.clients import compression_mod
from flrd.protocol import AUDIT_RECORD, PAYLOAD_STYPE
from flrd.strategies import CompressedStrategy

NODES, ROUNDS = 4, 3
CLIPPING_NORM = 0.05  # well below the plain app's unclipped update norm (about 1 to 4)


def _dp_strategy() -> CompressedStrategy:
    fedavg = FedAvg(fraction_evaluate=1.0, min_train_nodes=NODES, min_evaluate_nodes=NODES,
                    min_available_nodes=NODES)
    # noise_multiplier 0: the step is then the mean of the clipped, decoded updates.
    return CompressedStrategy(DifferentialPrivacyClientSideFixedClipping(
        fedavg, noise_multiplier=0.0, clipping_norm=CLIPPING_NORM, num_sampled_clients=NODES),
        audit=True)


def _evaluate(msg: Message, context: Context) -> Message:
    weights = msg.content["arrays"]["w"].numpy()
    pid = int(context.node_config["partition-id"])
    metrics = MetricRecord({"eval_norm": float(np.linalg.norm(weights)), "num-examples": 1 + pid})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


def _documented_app() -> ClientApp:
    """The recipe of docs/strategy.md: clipping on train only, compression app-wide."""
    plain = plain_client_app()
    app = ClientApp(mods=[compression_mod])

    @app.train(mods=[fixedclipping_mod])
    def train(msg: Message, context: Context) -> Message:
        return plain(msg, context)

    app.evaluate()(_evaluate)
    return app


def _norm(arrays: dict[str, np.ndarray]) -> float:
    return float(np.sqrt(sum(np.sum(v.astype(np.float64) ** 2) for v in arrays.values())))


def _run(app: ClientApp) -> tuple[InProcessGrid, object, list[dict[str, np.ndarray]]]:
    models: list[dict[str, np.ndarray]] = []

    def record(server_round: int, arrays) -> None:
        models.append({k: a.numpy().copy() for k, a in arrays.items()})

    grid = InProcessGrid(app, NODES)
    result = _dp_strategy().start(grid, initial_arrays(), num_rounds=ROUNDS, evaluate_fn=record)
    return grid, result, models


def _replies(grid: InProcessGrid, kind: str) -> list[Message]:
    return [m for m in grid.replies if m.metadata.message_type == kind]


def test_clipped_updates_are_compressed_and_evaluation_aggregated():
    grid, result, models = _run(_documented_app())
    train = _replies(grid, "train")
    assert len(train) == NODES * ROUNDS and not any(m.has_error() for m in train)
    for reply in train:
        payloads = reply.content["arrays"]
        assert all(array.stype == PAYLOAD_STYPE for array in payloads.values())
        # compression_mod's exact update is new - received: clipped before compression.
        exact = {k: a.numpy() for k, a in reply.content[AUDIT_RECORD].items()}
        assert _norm(exact) <= CLIPPING_NORM * (1 + 1e-5)
    for server_round in range(1, ROUNDS + 1):
        metrics = result.train_metrics_clientapp[server_round]
        assert metrics["flrd.accepted"] == NODES and metrics["flrd.uplink-bits"] > 0
        # The step is the mean of clipped updates (norm <= clipping norm) plus the codec's
        # error, whose squared norm the audit measures.
        step = _norm({k: models[server_round][k] - models[server_round - 1][k] for k in models[0]})
        codec_error = np.sqrt(metrics["flrd.measured-distortion-audit"])
        assert step <= CLIPPING_NORM + codec_error + 1e-6
    evaluate = _replies(grid, "evaluate")
    assert len(evaluate) == NODES * ROUNDS and not any(m.has_error() for m in evaluate)
    assert sorted(result.evaluate_metrics_clientapp) == list(range(1, ROUNDS + 1))
    assert all(result.evaluate_metrics_clientapp[r]["eval_norm"] > 0 for r in range(1, ROUNDS + 1))


def test_unclipped_updates_exceed_the_clipping_norm():
    """Without the mod the same run's updates are far larger: the clipping is what bounds them."""
    plain = plain_client_app()
    app = ClientApp(mods=[compression_mod])
    app.train()(plain)
    app.evaluate()(_evaluate)
    grid, _, _ = _run(app)
    norms = [_norm({k: a.numpy() for k, a in m.content[AUDIT_RECORD].items()})
             for m in _replies(grid, "train")]
    assert min(norms) > 10 * CLIPPING_NORM


def test_fixedclipping_mod_as_an_app_mod_breaks_evaluation():
    """The old recipe ``ClientApp(mods=[compression_mod, fixedclipping_mod])``: training
    works, every evaluate reply is an error, and no evaluation is aggregated."""
    app = plain_client_app([compression_mod, fixedclipping_mod])
    grid, result, _ = _run(app)
    assert not any(m.has_error() for m in _replies(grid, "train"))
    evaluate = _replies(grid, "evaluate")
    assert evaluate and all(m.has_error() for m in evaluate)
    assert "clipping_norm" in evaluate[0].error.reason
    assert not result.evaluate_metrics_clientapp

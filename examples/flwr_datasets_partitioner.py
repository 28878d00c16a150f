"""A ``flwr-datasets`` partitioner with flrd, offline, over the MNIST copy flrd ships.

Any ``flwr_datasets.partitioner`` works on an in-memory ``datasets.Dataset``: build it
from your arrays, assign it to the partitioner, and load each node's partition by its
``partition-id`` node config (set by the simulation engine, or by
``flower-supernode --node-config "partition-id=0 num-partitions=4"``). Here the
``DirichletPartitioner`` gives each node a label-skewed share, the setting where
compressed updates differ most between clients.
Run: ``python examples/flwr_datasets_partitioner.py`` (offline).
"""

import torch
from datasets import Dataset
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr_datasets.partitioner import DirichletPartitioner
from torch import nn

from flrd.clients import compression_mod
from flrd.config import RunConfig
from flrd.datasets import load_mnist
from flrd.simulations.engine import simulate
from flrd.strategies import RateAwareFedAvg, format_round

NUM_CLIENTS, NUM_ROUNDS, NUM_IMAGES = 4, 3, 8000  # a subsample keeps the run short
partitioner = None  # built once per worker process, on first use


def load_partition(partition_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This node's images (float, in [0, 1]) and labels."""
    global partitioner
    if partitioner is None:
        mnist = load_mnist()
        partitioner = DirichletPartitioner(num_partitions=NUM_CLIENTS, partition_by="label",
                                           alpha=0.5, seed=42)
        partitioner.dataset = Dataset.from_dict({
            "image": mnist.x_train[:NUM_IMAGES].reshape(NUM_IMAGES, -1),
            "label": mnist.y_train[:NUM_IMAGES],
        })
    columns = partitioner.load_partition(partition_id).with_format("numpy")[:]
    return (torch.tensor(columns["image"], dtype=torch.float32) / 255,
            torch.tensor(columns["label"]))


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))


client = ClientApp(mods=[compression_mod])


@client.train()
def train(msg: Message, context: Context) -> Message:
    model = make_model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    x, y = load_partition(int(context.node_config["partition-id"]))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for x_batch, y_batch in zip(x.split(32), y.split(32), strict=True):  # one local epoch
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x_batch), y_batch)
        loss.backward()
        optimizer.step()
    metrics = MetricRecord({"train_loss": loss.item(), "num-examples": len(x)})
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
    return Message(content, reply_to=msg)


server = ServerApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    strategy = RateAwareFedAvg(fraction_evaluate=0.0, min_train_nodes=NUM_CLIENTS)
    result = strategy.start(grid, ArrayRecord(make_model().state_dict()), num_rounds=NUM_ROUNDS)
    rounds = result.train_metrics_clientapp.values()
    print(*map(format_round, rounds), sep="\n")  # flrd's line per round
    print(f"uplink: {sum(m['flrd.uplink-bits'] for m in rounds):.4g} bits in {NUM_ROUNDS} rounds")


if __name__ == "__main__":
    simulate(server, client, num_supernodes=NUM_CLIENTS, config=RunConfig())

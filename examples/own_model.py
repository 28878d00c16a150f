"""Your own torch model and data, trained by Flower with flrd's compressed uplink.

The ClientApp trains and returns new weights, as any Flower app does; ``compression_mod``
turns them into a compressed update, and ``RateAwareFedAvg`` picks each round's rate.
Run: ``python examples/own_model.py`` (offline; Ray's start-up dominates its run time).
"""

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from torch import nn

from flrd.clients import compression_mod
from flrd.config import RunConfig
from flrd.datasets import load_mnist
from flrd.simulations.engine import simulate
from flrd.strategies import RateAwareFedAvg, format_round

NUM_CLIENTS, NUM_ROUNDS = 4, 3


def make_model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))


client = ClientApp(mods=[compression_mod])  # flrd's one addition to a ClientApp


@client.train()
def train(msg: Message, context: Context) -> Message:
    model = make_model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    mnist, pid = load_mnist(), int(context.node_config["partition-id"])  # every 4th image
    x, y = (torch.tensor(a[pid:8000:NUM_CLIENTS]) for a in (mnist.x_train, mnist.y_train))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for x_batch, y_batch in zip(x.split(32), y.split(32), strict=True):  # one local epoch
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x_batch / 255), y_batch)
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
    # Flower's simulation, offline, with Flower's log quietened (RunConfig's defaults)
    simulate(server, client, num_supernodes=NUM_CLIENTS, config=RunConfig())

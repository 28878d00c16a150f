"""Hostile clients against flrd's server: worst-case cost per reply, and a 20%-hostile run.

    python bench/bench_attacks.py fuzz --cases 20000
    python bench/bench_attacks.py run            # clean vs 20% hostile, MNIST, 25 rounds

``fuzz`` sends mutated and crafted messages (valid 16-bit check, so the decoder runs)
through ``RateAwareFedAvg.aggregate_train`` on the in-process grid of the tests and
prints, next to the legitimate reply's size and decode time measured in the same run,
the worst extra time and tracemalloc peak one hostile reply cost.

``run`` trains the reference App's strategy (``flrd.strategies.server_app.run_server``,
reference ClientApp training) on 100-client IID MNIST, seed 0, 25 rounds of 10 clients,
once clean and once with a client mod that makes the replies of partitions with
``pid % 5 == round % 5`` (20% of the clients, ~2 of each round's 10) hostile. The
clients run in this process (the tests' in-process Grid) instead of Ray workers, so
both runs see the same sampling and the hostile mod needs no pickling.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import random
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "attacks"), str(ROOT / "tests" / "flower")]

import hostile  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


# ------------------------------------------------------------------------- fuzz
def _mutations(rng: np.random.Generator, ctx: hostile.Context, honest: bytes) -> bytes:
    """One hostile message: valid check around mutated, random or crafted bytes."""
    from flrd.codecs import message as wire

    rest = bytearray(honest[wire.FRAMING_BYTES:])
    choice = rng.integers(6)
    if choice == 0 and rest:  # flip bytes
        for i in rng.integers(0, len(rest), size=rng.integers(1, 8)):
            rest[i] ^= int(rng.integers(1, 256))
    elif choice == 1:  # truncate or extend
        rest = rest[: rng.integers(0, len(rest) + 1)] + bytes(rng.integers(0, 256, rng.integers(0, 64), np.uint8))
    elif choice == 2:  # random bytes, any length up to 4x
        rest = bytearray(rng.integers(0, 256, rng.integers(0, 4 * len(rest) + 8), np.uint8).tobytes())
    elif choice == 3:  # max or min statistic bytes
        for i in range(min(len(rest), int(rng.integers(1, 5)))):
            rest[i] = 0xFF if rng.random() < 0.5 else 0x00
    elif choice == 4:  # another valid message: other node / seed / scale
        scale = float(10 ** rng.uniform(-3, 8))
        other = {n: scale * v for n, v in ctx.update.items()}
        return wire.encode_update(other, ctx.request, node_id=ctx.node_id).payload
    else:  # a huge declared float32 block, whatever was asked
        shape = tuple(int(s) for s in rng.choice([0, 1, 2**20, 2**31, 2**63 - 1], size=rng.integers(1, 4)))
        block = hostile.float32_block(ctx, 0, np.zeros(4), shape=shape)
        return hostile.baseline_message(ctx, [block] * len(ctx.layout))
    return hostile.frame(ctx, bytes(rest), honest[0] & 1)


def fuzz(cases: int, seed: int = 0) -> dict[str, float]:
    """Run ``cases`` hostile replies through aggregate_train; return the worst costs."""
    from rounds import HOSTILE_NODE, Round, context_of

    from flrd.policy import RatePolicy
    from flrd.strategies import RateAwareFedAvg

    class Corollary3FedAvg(RateAwareFedAvg):  # the rule docs/threat-model.md's figures ran under
        def make_policy(self, layer_sizes):
            return RatePolicy(layer_sizes)

    run = Round(Corollary3FedAvg(fraction_evaluate=0.0), num_nodes=6)
    run.run(1), run.run(2)
    messages = list(run.strategy.configure_train(3, run.arrays, _config(), run.grid))
    replies = run.grid.send_and_receive(messages)
    sent = {m.metadata.dst_node_id: m for m in messages}
    target = next(r for r in replies if r.metadata.src_node_id == HOSTILE_NODE)
    ctx = context_of(sent[HOSTILE_NODE], target)
    honest = hostile.payload_of(target)
    saved = copy.deepcopy(run.strategy)

    def aggregate(batch):
        strategy = copy.deepcopy(saved)
        tracemalloc.start()
        started = time.perf_counter()
        _, metrics = strategy.aggregate_train(3, batch)
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return seconds, peak, metrics

    clean = [aggregate(copy.deepcopy(replies)) for _ in range(5)]
    base_s, base_peak = min(c[0] for c in clean), min(c[1] for c in clean)
    one_s = min(aggregate(copy.deepcopy([target]))[0] for _ in range(5))  # one legitimate reply
    rng = np.random.default_rng(seed)
    worst_s = worst_peak = 0.0
    accepted = 0
    for _ in range(cases):
        batch = copy.deepcopy(replies)
        reply = next(r for r in batch if r.metadata.src_node_id == HOSTILE_NODE)
        hostile.set_payload(reply, _mutations(rng, ctx, honest))
        seconds, peak, metrics = aggregate(batch)
        accepted += int(metrics["flrd.accepted"]) - 5
        worst_s, worst_peak = max(worst_s, seconds - base_s), max(worst_peak, peak - base_peak)
    layer_bytes = sum(8 * int(np.prod(s)) for s in ctx.layout.values())
    print(f"fuzz: {cases} hostile replies through RateAwareFedAvg.aggregate_train ({machine()})")
    print(f"  legitimate reply: {len(honest)} payload bytes, model {layer_bytes} bytes as float64, "
          f"a 1-reply round aggregates in {1e3 * one_s:.2f} ms; the clean 6-reply round in "
          f"{1e3 * base_s:.2f} ms, peak {base_peak / 1024:.0f} KiB")
    print(f"  worst extra per hostile reply: {1e3 * worst_s:.2f} ms, {worst_peak / 1024:.0f} KiB "
          f"(tracemalloc peak); hostile replies accepted as plausible updates: {accepted}")
    return {"worst_seconds": worst_s, "worst_peak": worst_peak, "accepted": accepted}


def _config():
    from flwr.app import ConfigRecord

    return ConfigRecord()


# -------------------------------------------------------------- the 20% run
BENCH_KINDS = [hostile.flip_byte, hostile.truncate, hostile.float32_for_dithered,
               hostile.huge_values, hostile.forged_m2, hostile.inflated_m2, hostile.noisy_update,
               hostile.replay_other_node, hostile.replay_earlier_round,
               hostile.huge_examples, hostile.negative_examples, hostile.absurd_examples,
               hostile.list_loss, hostile.absurd_loss]


def _chosen(msg, context, reply) -> tuple[int, int] | None:
    """(partition id, round) of a train reply whose ``pid % 5 == round % 5``, else None."""
    if msg.metadata.message_type != "train" or reply.has_error():
        return None
    pid, server_round = int(context.node_config["partition-id"]), int(msg.content["config"]["server-round"])
    return (pid, server_round) if pid % 5 == server_round % 5 else None


def hostile_mod(msg, context, call_next):
    """Makes the train replies of ``pid % 5 == round % 5`` hostile, by (round, pid)."""
    from flrd.codecs.message import decode_update
    from flrd.protocol import CompressionRequest

    reply = call_next(msg, context)
    if (chosen := _chosen(msg, context, reply)) is None:
        return reply
    pid, server_round = chosen
    request = CompressionRequest.from_config(msg.content["config"])
    layout = {n: tuple(a.shape) for n, a in msg.content["arrays"].items()}
    update = decode_update(hostile.payload_of(reply), request, node_id=context.node_id, layout=layout).arrays
    kind = BENCH_KINDS[(server_round + pid // 5) % len(BENCH_KINDS)]
    kind(reply, hostile.Context(request, context.node_id, layout, update))
    return reply


def silent_mod(msg, context, call_next):
    """The control: the same (round, pid) replies as ``hostile_mod``, failed instead of
    hostile, so the server aggregates exactly the clients it keeps under attack."""
    from flwr.app import Error, Message

    reply = call_next(msg, context)
    if _chosen(msg, context, reply) is None:
        return reply
    return Message(Error(code=0, reason="control: this client drops out"), reply_to=msg)


def train(hostile_clients: bool, control: bool = False, policy: str = "rate-aware"):
    from flower_fakes import InProcessGrid
    from flwr.app import Context
    from flwr.clientapp import ClientApp

    from flrd.clients import compression_mod
    from flrd.clients.client_app import evaluate as client_evaluate
    from flrd.clients.client_app import train as client_train
    from flrd.config import RunConfig
    from flrd.strategies.server_app import run_server

    config = RunConfig(num_server_rounds=25, seed=0, fraction_train=0.1, min_train_nodes=10,
                       fraction_evaluate=0.0, partition="iid", policy=policy)
    first = [hostile_mod] if hostile_clients else [silent_mod] if control else []
    app = ClientApp(mods=[*first, compression_mod])

    @app.train()
    def _train(msg, context: Context):
        return client_train(msg, context, config)

    @app.evaluate()
    def _evaluate(msg, context: Context):
        return client_evaluate(msg, context, config)

    random.seed(0)  # Flower samples with the global random: same sample in both runs
    grid = InProcessGrid(app, 100, run_config=config.to_run_config())
    return run_server(grid, config)


def done_when(policy: str) -> None:
    import logging

    started = time.perf_counter()
    logging.getLogger("flwr").setLevel(logging.ERROR)
    clean, attacked, control = train(False, policy=policy), train(True, policy=policy), \
        train(False, control=True, policy=policy)
    acc = {name: float(r.evaluate_metrics_serverapp[max(r.evaluate_metrics_serverapp)]["test-accuracy"])
           for name, r in (("clean", clean), ("hostile", attacked), ("control", control))}
    print(f"20%-hostile run: RateAwareFedAvg, policy {policy}, 100-client IID MNIST, seed 0, 25 rounds x 10 clients "
          f"({machine()})")
    print(f"  final test accuracy: clean {acc['clean']:.4f}, hostile {acc['hostile']:.4f} "
          f"(difference {100 * (acc['clean'] - acc['hostile']):+.2f} points); control (the same "
          f"replies dropped instead) {acc['control']:.4f}")
    kinds = {k: sum(int(m.get(f"flrd.rejected-{k}", 0)) for m in attacked.train_metrics_clientapp.values())
             for k in ("protocol", "metrics", "payload", "outlier")}
    excluded = sum(int(m["flrd.rejected"]) for m in attacked.train_metrics_clientapp.values())
    print(f"  replies left out over the run: {excluded} ({kinds})")
    print("  max over rounds >= 2 and layers of max(a/b, b/a) of the smoothed estimates:")
    for label, a, b in (("hostile vs clean", attacked, clean), ("control vs clean", control, clean),
                        ("hostile vs control", attacked, control)):
        worst = _worst_ratios(a, b)
        print(f"    {label:18s}: sx2 {worst['sx2'][0]:.3f} ({worst['sx2'][1]}), "
              f"s2 {worst['s2'][0]:.3f} ({worst['s2'][1]}); planned D {_worst_plan_ratio(a, b)}")
    print(f"  wall time {time.perf_counter() - started:.0f} s")


def _worst_plan_ratio(a, b) -> str:
    """The largest max(a/b, b/a) of the planned distortion over rounds, and the round:
    what the estimates move in the end (near-zero estimates make huge ratios that no
    plan follows)."""
    ratios = {r: max(x / y, y / x) for r, m in a.train_metrics_clientapp.items()
              if r >= 2 and (base := b.train_metrics_clientapp.get(r)) is not None
              and (x := float(m.get("flrd.planned-distortion", np.nan))) > 0
              and (y := float(base.get("flrd.planned-distortion", np.nan))) > 0}
    if not ratios:
        return "- (no planned distortion)"
    worst = max(ratios, key=ratios.__getitem__)
    return f"{ratios[worst]:.3f} (round {worst})"


def _worst_ratios(a, b) -> dict[str, tuple[float, str]]:
    """Per statistic, the largest ratio over rounds >= 2 and layers, and where it is."""
    worst = {"sx2": (1.0, "-"), "s2": (1.0, "-")}
    for server_round, metrics in a.train_metrics_clientapp.items():
        base = b.train_metrics_clientapp.get(server_round)
        if server_round < 2 or base is None or "flrd.sx2" not in metrics or "flrd.sx2" not in base:
            continue
        for key in worst:
            x, y = np.array(metrics[f"flrd.{key}"]), np.array(base[f"flrd.{key}"])
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(np.isfinite(np.maximum(x / y, y / x)), np.maximum(x / y, y / x), 1.0)
            if ratio.max() > worst[key][0]:
                worst[key] = (float(ratio.max()), f"round {server_round}, layer {int(ratio.argmax())}")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    fuzz_parser = sub.add_parser("fuzz", help="worst cost of one hostile reply")
    fuzz_parser.add_argument("--cases", type=int, default=2000)
    fuzz_parser.add_argument("--seed", type=int, default=0)
    run_parser = sub.add_parser("run", help="clean vs 20%% hostile training run")
    run_parser.add_argument("--policy", default="rate-aware",
                            help="run-config policy (default rate-aware: the one docs/threat-model.md reports)")
    args = parser.parse_args()
    if args.what == "fuzz":
        fuzz(args.cases, args.seed)
    else:
        done_when(args.policy)


if __name__ == "__main__":
    main()

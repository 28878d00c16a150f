"""Simulation benchmarks for BENCHMARKS.md (issue 5).

``accuracy``: uplink bits to reach a test accuracy with 100 MNIST clients, per policy,
with float32 in the same run as the reference (ratio column).
``scaling``: wall time per round and peak memory of all processes (the driver, Ray and
its workers) at 100, 300 and 1000 clients, rate-aware against float32 in the same run,
with flrd's own share (client encoding, server decoding and estimation) separated.

    python bench/bench_simulation.py accuracy --out bench-out/accuracy
    python bench/bench_simulation.py scaling --out bench-out/scaling
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import threading
import time
from pathlib import Path

import numpy as np

from flrd.config import RunConfig
from flrd.simulations.records import read_csv
from flrd.simulations.settings import Settings
from flrd.simulations.summary import policy_table
from flrd.simulations.sweep import run_sweep

ACCURACY_POLICIES = ("float32", "rate-aware", "waterfilling", "signsgd", "signsgd-mv", "m22=2", "qsgd=4", "topk-ef=0.5",
                     "fixed-lambda=1", "fixed-lambda=4", "fixed-lambda=16", "fixed-lambda=64")


def machine() -> str:
    return f"{platform.platform()} | {os.cpu_count()} CPUs | python {platform.python_version()} | no GPU"


class TreeMemory:
    """Peak summed RSS and PSS (kB) of this process and all its descendants, sampled every 0.2 s."""

    def __init__(self) -> None:
        self.peak_rss_kb = self.peak_pss_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            rss = pss = 0
            for pid in _tree(os.getpid()):
                rss += _field(f"/proc/{pid}/status", "VmRSS:")
                pss += _field(f"/proc/{pid}/smaps_rollup", "Pss:")
            self.peak_rss_kb, self.peak_pss_kb = max(self.peak_rss_kb, rss), max(self.peak_pss_kb, pss)


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _field(path: str, name: str) -> int:
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(name):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def accuracy(out: Path, rounds: int, local_steps: int, target: float) -> None:
    settings = Settings(out_dir=out, num_clients=100, clients_per_round=10, policies=ACCURACY_POLICIES,
                        target_accuracy=target,
                        run=RunConfig(num_server_rounds=rounds, local_steps=local_steps, audit=True))
    started = time.perf_counter()
    run_sweep(settings)
    table = policy_table(read_csv(out / "rounds.csv"), target)
    reference = next(line for line in table if line["policy"] == "float32")["bits_to_target"]
    print(f"\nmachine: {machine()}; {time.perf_counter() - started:.0f} s")
    print(f"100 clients, 10 per round, {local_steps} local steps, {rounds} rounds, target {target:.0%}")
    print("| policy | bits to target | vs float32 | rounds to target | final accuracy | bits/coord/client |")
    print("|---|---|---|---|---|---|")
    for line in table:
        bits = line["bits_to_target"]
        ratio = bits / reference if np.isfinite(bits) and np.isfinite(reference) else float("nan")
        print(f"| {line['policy']} | {bits:.3e} | {ratio:.3f} | {line['rounds_to_target']:.0f} "
              f"| {line['final_accuracy']:.4f} | {line['bits_per_coord']:.3f} |")


def scaling(out: Path, sizes: list[int], rounds: int) -> None:
    print(f"machine: {machine()}")
    print("Per round, rounds 2.. (round 1 starts Ray). flrd CPU-s: client encoding summed over the "
          "round's clients (they run on 2 Ray actors in parallel), server decoding + estimation.")
    print("| clients | per round | policy | s/round | vs float32 | client encode CPU-s | server flrd s "
          "| peak RSS sum (GB) | peak PSS sum (GB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in sizes:
        per_round: dict[str, float] = {}
        for policy in ("float32", "rate-aware"):
            settings = Settings(out_dir=out / f"{n}-{policy}", num_clients=n, clients_per_round=max(2, n // 10),
                                policies=(policy,), run=RunConfig(num_server_rounds=rounds))
            with TreeMemory() as memory:
                run_sweep(settings, show_progress=False)
            rows = [r for r in read_csv(settings.out_dir / "rounds.csv") if r["round"] >= 2]
            seconds = float(np.mean([r["round_seconds"] for r in rows]))
            encode = float(np.mean([r["encode_seconds"] for r in rows]))
            server = float(np.mean([r["decode_seconds"] + r["estimate_seconds"] for r in rows]))
            per_round[policy] = seconds
            print(f"| {n} | {settings.clients_per_round} | {policy} | {seconds:.2f} | "
                  f"{seconds / per_round['float32']:.2f} | {encode:.2f} | {server:.2f} "
                  f"| {memory.peak_rss_kb / 2**20:.2f} | {memory.peak_pss_kb / 2**20:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    jobs = parser.add_subparsers(dest="job", required=True)
    acc = jobs.add_parser("accuracy")
    acc.add_argument("--out", type=Path, default=Path("bench-out/accuracy"))
    acc.add_argument("--rounds", type=int, default=40)
    acc.add_argument("--local-steps", type=int, default=20)
    acc.add_argument("--target", type=float, default=0.9)
    scale = jobs.add_parser("scaling")
    scale.add_argument("--out", type=Path, default=Path("bench-out/scaling"))
    scale.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000])
    scale.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.ERROR)  # the tables are the output
    if args.job == "accuracy":
        accuracy(args.out, args.rounds, args.local_steps, args.target)
    else:
        scaling(args.out, args.sizes, args.rounds)


if __name__ == "__main__":
    main()

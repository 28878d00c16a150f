"""Mean curvature of the MNIST MLP's loss along FedAvg training, and the distortion it implies.

    python bench/bench_curvature.py --rounds 30

Exact FedAvg (no compression) on 100-client IID MNIST, 10 clients per round, the
reference local training (20 steps, batch 128, lr 0.01, momentum 0.5), seed 0. At
selected rounds each sampled client estimates the **mean curvature**
``beta_bar = tr(H) / n`` of its minibatch loss (256 samples) by Hutchinson's estimator
(two Rademacher probes, :func:`flrd.training.mean_curvature`). The server side takes the median over
the clients and prints, beside the round's coherent power ``S = sum_l n_l sx2_l``
(:func:`flrd.theory.signal_power`) and gradient-noise power ``sum_l n_l s2_l``:

- ``D*  = S / (h beta_bar)``: the total noise variance that maximizes the expected loss
  decrease per bit of one round, when the bits fall like ``1/D`` and isotropic noise
  of total variance ``D`` raises the loss by ``beta_bar D / 2`` (docs/THEORY.md §16);
- ``lambda* = K D* / sum n s2 - 1``: the same in the paper's lambda.

An analysis aid for the distortion rule (issue 10), not a test; it prints the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from flrd import theory
from flrd.datasets import load_mnist
from flrd.datasets.partition import partition_indices
from flrd.models import build_model
from flrd.training import evaluate, get_weights, mean_curvature, set_weights, train_local

PROBE_ROUNDS = (1, 2, 3, 5, 8, 12, 16, 20, 25, 30, 40, 50, 60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    data = load_mnist()
    parts = partition_indices(data.y_train, 100, "iid", seed=0)
    model = build_model("mlp", seed=0)
    weights = get_weights(model)
    rng = np.random.default_rng(0)
    h = theory.local_step_gains(0.01, 20, 0.5).step
    started = time.perf_counter()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"torch {torch.__version__}; h = lr C1 = {h:.3f}")
    print("| round | S = sum n sx2 | sum n s2 | beta_bar (median [range]) | D* | lambda* | test accuracy |")
    print("|---|---|---|---|---|---|---|")
    for server_round in range(1, args.rounds + 1):
        curvatures, updates = [], []
        for client in rng.choice(100, 10, replace=False):
            set_weights(model, weights)
            index = parts[client]
            if server_round in PROBE_ROUNDS:
                batch = index[rng.choice(len(index), 256, replace=False)]
                curvatures.append(mean_curvature(model, data.x_train[batch], data.y_train[batch], probes=2,
                                                 seed=int(rng.integers(1 << 31))))
            train_local(model, data.x_train[index], data.y_train[index], steps=20,
                        seed=int(rng.integers(1 << 31)))
            updates.append(np.concatenate([(a - b).ravel() for a, b in zip(get_weights(model), weights,
                                                                             strict=True)]).astype(np.float64))
        stacked = np.stack(updates)
        signal = theory.signal_power(stacked) * stacked.shape[1]
        noise = float(np.mean(np.sum(stacked**2, axis=1))) - signal
        mean, offset, new = stacked.mean(axis=0), 0, []
        for array in weights:
            new.append((array + mean[offset:offset + array.size].reshape(array.shape)).astype(np.float32))
            offset += array.size
        weights = new
        if curvatures:
            beta_bar = float(np.median(curvatures))
            best = signal / (h * beta_bar)
            set_weights(model, weights)
            accuracy = evaluate(model, data.x_test, data.y_test)[1]
            print(f"| {server_round} | {signal:.3g} | {noise:.3g} | {beta_bar:.3g} [{min(curvatures):.2g}, "
                  f"{max(curvatures):.2g}] | {best:.3g} | {10 * best / noise - 1:.3g} | {accuracy:.3f} |", flush=True)
    print(f"wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

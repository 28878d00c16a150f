"""Does Corollary 3's lambda cap bind on MNIST? (docs/THEORY.md §12)

Runs plain FedAvg (exact updates, no compression) on the shipped MNIST with the
reference settings (100 IID clients, 10 per round, 20 local steps, batch 128, lr 0.01,
momentum 0.5, MLP), estimates sx2_l and s2_l from each round's updates (THEORY.md §8),
and prints per round: the interior-optimum criterion
``sum_l n_l (sx2_l^2 - s2_l^2/K) / (sx2_l + s2_l)`` against ``2 beta eps``, and the lambda
Corollary 3 picks with the default constants, uncapped and under the default cap 16.

    python bench/bench_corollary3.py --rounds 12
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from flrd import theory
from flrd.datasets import load_mnist
from flrd.datasets.partition import partition_indices
from flrd.models import build_model
from flrd.training import get_weights, set_weights, train_local


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--clients-per-round", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    data, model = load_mnist(), build_model("mlp", seed=0)
    parts = partition_indices(data.y_train, 100, "iid", seed=0)
    rng = np.random.default_rng(0)
    weights = get_weights(model)
    n_l = np.array([w.size for w in weights])
    K, beta, eps = args.clients_per_round, 1.0, 0.01
    print(f"machine: {platform.platform()} | python {platform.python_version()} | torch threads 1")
    print(f"{'round':>5} {'sum n_l sx2_l':>14} {'sum n_l s2_l':>13} {'criterion':>10} {'2 beta eps':>10} "
          f"{'lambda*':>9} {'lambda (cap 16)':>15}")
    for rnd in range(1, args.rounds + 1):
        deltas = []
        for k in rng.choice(100, K, replace=False):
            set_weights(model, weights)
            idx = parts[k]
            train_local(model, data.x_train[idx], data.y_train[idx], steps=20, seed=int(rnd * 1000 + k))
            deltas.append([a - b for a, b in zip(get_weights(model), weights)])
        m2 = np.array([[np.mean(d[layer] ** 2) for layer in range(len(n_l))] for d in deltas])
        mean = [np.mean([d[layer] for d in deltas], axis=0) for layer in range(len(n_l))]
        est = theory.estimate_variances(m2, np.array([np.sum(g**2) for g in mean]), n_l)
        sx2, s2 = est.sx2, est.s2
        criterion = float(np.sum(n_l * (sx2**2 - s2**2 / K) / (sx2 + s2)))
        free = theory.choose_distortion(n_l, sx2, s2, K, R0=1.0, beta=beta, eps=eps, lambda_cap=1e6)
        capped = theory.choose_distortion(n_l, sx2, s2, K, R0=1.0, beta=beta, eps=eps, lambda_cap=16.0)
        print(f"{rnd:5d} {n_l @ sx2:14.4g} {n_l @ s2:13.4g} {criterion:10.3g} {2 * beta * eps:10.3g} "
              f"{free.lambda_:9.3g} {capped.lambda_:15.3g}")
        weights = [w + g for w, g in zip(weights, mean)]
    print(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

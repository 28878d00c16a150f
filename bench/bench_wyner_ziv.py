"""Wyner-Ziv coding against R_sum and R_ind, with independent dithered coding as the
reference measured on the same data in the same run.

Gaussian CEO model (K clients, X ~ N(0, sx2), Y_k = X + N(0, s2), lambda with
K D = s2 (1 + lambda)) and real MNIST-MLP local updates (K clients from one common
start, IID partitions; sx2 and s2 estimated per layer from the exact updates).

    .venv/bin/python bench/bench_wyner_ziv.py gaussian [--n 65536 --trials 2]
    .venv/bin/python bench/bench_wyner_ziv.py mnist [--clients 10 --lambdas 16 256]

Blocks that still fail after the retry are re-sent with independent dithered coding
and their bits counted, so every aggregate is complete and unbiased.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from flrd import theory
from flrd.codecs import DitheredCodec, decode
from flrd.sideinfo import decode_successive, plan_layer, wyner_ziv


def code_layer(ys: np.ndarray, plan, prior_var: float, s2: float, seed: int) -> dict:
    """Code the K rows of ``ys`` per ``plan``; returns bits, reconstructions, failures,
    and the independent reference on the same rows."""
    K, n = ys.shape
    replies, bits = [], 0
    for c, y in zip(plan.clients, ys):
        if c.coding == "wz":
            payload = wyner_ziv.encode(y, plan.step, c.cond_std, seed=seed + c.position)
            replies.append(payload)
        else:
            payload = DitheredCodec(plan.noise_var).encode(y, seed=seed + c.position)
            replies.append(decode(payload).astype(np.float64))
        bits += 8 * len(payload)
    t0 = time.perf_counter()
    out = decode_successive(replies, s2=s2, noise_var=plan.noise_var, prior_var=prior_var, expected_size=n)
    seconds = time.perf_counter() - t0
    resent = 0
    for i, sl in out.failed:  # re-request: independent coding of the failed block
        payload = DitheredCodec(plan.noise_var).encode(ys[i, sl], seed=seed + 1000 + i)
        out.values[i][sl] = decode(payload)
        bits += 8 * len(payload)
        resent += sl.stop - sl.start
    out.failed = []
    ref_bits, ref_vals = 0, []
    for k, y in enumerate(ys):
        payload = DitheredCodec(plan.noise_var).encode(y, seed=seed + 500 + k)
        ref_bits += 8 * len(payload)
        ref_vals.append(decode(payload).astype(np.float64))
    return {"bits": bits, "agg": out.aggregate(), "resent": resent, "ref_bits": ref_bits,
            "ref_agg": np.mean(ref_vals, axis=0), "seconds": seconds,
            "n_wz": sum(c.coding == "wz" for c in plan.clients)}


def slope(xh: np.ndarray, x: np.ndarray) -> float:
    return float(np.dot(xh - xh.mean(), x - x.mean()) / np.dot(x - x.mean(), x - x.mean()))


def gaussian(args: argparse.Namespace) -> None:
    K, n, s2 = args.clients, args.n, 1.0
    print(f"Gaussian CEO, K={K}, n={n} per trial, {args.trials} trials; bits per coordinate summed over clients")
    print("sx2/s2  lam  | WZ used | realized  R_sum(Dm) R_ind(Dm) real/Rsum | D_m/D  slope   | "
          "resent/coord | ind.ref bits  ref/Rind | s")
    for ratio in args.ratios:
        for lam in args.lambdas:
            D = s2 * (1 + lam) / K
            plan = plan_layer(ratio * s2, s2, K, D, n=n)
            rng = np.random.default_rng(int(ratio * 1000 + lam))
            bits = ref_bits = resent = 0.0
            errs, ref_errs, xs, xhs, secs = [], [], [], [], 0.0
            for t in range(args.trials):
                x = rng.normal(0, np.sqrt(ratio * s2), n)
                ys = x + rng.normal(0, np.sqrt(s2), (K, n))
                r = code_layer(ys, plan, ratio * s2, s2, seed=10_000 * t)
                bits += r["bits"]
                ref_bits += r["ref_bits"]
                resent += r["resent"]
                secs += r["seconds"]
                errs.append(r["agg"] - x)
                ref_errs.append(r["ref_agg"] - x)
                xs.append(x)
                xhs.append(r["agg"])
            coords = n * args.trials
            Dm = float(np.mean(np.concatenate(errs) ** 2))
            Dref = float(np.mean(np.concatenate(ref_errs) ** 2))
            b, rb = bits / coords, ref_bits / coords
            rs = float(theory.sum_rate(Dm, ratio * s2, s2, K))
            ri = float(theory.independent_rate(Dm, ratio * s2, s2, K))
            ri_ref = float(theory.independent_rate(Dref, ratio * s2, s2, K))
            gain = slope(np.concatenate(xhs), np.concatenate(xs))
            print(f"{ratio:6g} {lam:4g}  | {r['n_wz']:2d}/{K:<3d}  | {b:8.3f}  {rs:8.3f}  {ri:8.3f}  {b / rs:8.2f}  | "
                  f"{Dm / D:5.3f}  {gain:6.4f} | {resent / (coords * K):10.2e}   | "
                  f"{rb:9.3f}  {rb / ri_ref:8.2f} | {secs:5.1f}", flush=True)


def mnist_updates(K: int, warmup_rounds: int, local_steps: int, seed: int) -> list[np.ndarray]:
    """K local updates (per layer, shape (K, n_l)) from the global model after
    ``warmup_rounds`` exact FedAvg rounds of K clients each."""
    from flrd.datasets import load_mnist, partition_indices
    from flrd.models import build_model
    from flrd.training import get_weights, set_weights, train_local

    data = load_mnist()
    parts = partition_indices(data.y_train, 100, "iid", seed=seed)
    model = build_model("mlp", seed=seed)
    start = get_weights(model)
    rng = np.random.default_rng(seed)
    for rnd in range(warmup_rounds + 1):
        chosen = rng.choice(100, size=K, replace=K > 100)
        deltas = []
        for k, c in enumerate(chosen):
            set_weights(model, start)
            train_local(model, data.x_train[parts[c]], data.y_train[parts[c]], steps=local_steps,
                        seed=seed + 1000 * rnd + k)
            deltas.append([w - s for w, s in zip(get_weights(model), start)])
        if rnd < warmup_rounds:
            start = [s + np.mean([d[i] for d in deltas], axis=0) for i, s in enumerate(start)]
    return [np.stack([d[i].reshape(-1) for d in deltas]).astype(np.float64) for i in range(len(start))]


def mnist(args: argparse.Namespace) -> None:
    K = args.clients
    t0 = time.perf_counter()
    layers = mnist_updates(K, args.warmup_rounds, args.local_steps, args.seed)
    print(f"MNIST-MLP, K={K} IID clients after {args.warmup_rounds} exact FedAvg rounds, "
          f"{args.local_steps} local steps; updates in {time.perf_counter() - t0:.0f} s")
    for lam in args.lambdas:
        tot = {"wz": 0.0, "ref": 0.0, "rsum": 0.0, "rind": 0.0, "n": 0, "resent": 0, "qerr": 0.0, "qplan": 0.0}
        for li, ys in enumerate(layers):
            n = ys.shape[1]
            mbar, a = float(np.mean(ys**2)), float(np.mean(ys.mean(axis=0) ** 2))
            s2 = max((mbar - a) * K / (K - 1), 1e-30)
            sx2 = max(mbar - s2, 0.0)
            D = s2 * (1 + lam) / K
            plan = plan_layer(sx2, s2, K, D, n=min(n, wyner_ziv.BLOCK))
            r = code_layer(ys, plan, sx2, s2, seed=77 * li)
            tot["wz"] += r["bits"]
            tot["ref"] += r["ref_bits"]
            tot["n"] += n
            tot["resent"] += r["resent"]
            tot["rsum"] += n * plan.sum_rate
            tot["rind"] += n * plan.independent_rate
            tot["qerr"] += float(np.sum((r["agg"] - ys.mean(axis=0)) ** 2))
            tot["qplan"] += n * plan.noise_var / K
            print(f"  lam={lam:<5g} layer {li} n={n:<7d} sx2/s2={sx2 / s2:7.3f} WZ clients {r['n_wz']:3d}/{K} "
                  f"wz {r['bits'] / n:7.3f} ind {r['ref_bits'] / n:7.3f} R_sum {plan.sum_rate:7.3f} "
                  f"R_ind {plan.independent_rate:7.3f} bit/coord"
                  f" resent {r['resent']}", flush=True)
        print(f"lam={lam}: WZ {tot['wz']:.0f} bits, independent {tot['ref']:.0f} bits "
              f"(WZ/ind {tot['wz'] / tot['ref']:.3f}), R_sum {tot['rsum']:.0f}, R_ind {tot['rind']:.0f}; "
              f"WZ/R_sum {tot['wz'] / tot['rsum']:.2f}, WZ/R_ind {tot['wz'] / tot['rind']:.2f}, "
              f"ind/R_ind {tot['ref'] / tot['rind']:.2f}; "
              f"quantization error / planned {tot['qerr'] / tot['qplan']:.3f}; "
              f"resent coords {tot['resent']}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="which", required=True)
    g = sub.add_parser("gaussian")
    g.add_argument("--clients", type=int, default=10)
    g.add_argument("--n", type=int, default=65536)
    g.add_argument("--trials", type=int, default=2)
    g.add_argument("--ratios", type=float, nargs="+", default=[0.1, 1.0, 10.0])
    g.add_argument("--lambdas", type=float, nargs="+", default=[0.25, 1.0, 4.0, 16.0])
    m = sub.add_parser("mnist")
    m.add_argument("--clients", type=int, default=10)
    m.add_argument("--lambdas", type=float, nargs="+", default=[16.0, 256.0])
    m.add_argument("--warmup-rounds", type=int, default=2)
    m.add_argument("--local-steps", type=int, default=20)
    m.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    print(f"machine: {platform.machine()} {platform.processor() or ''} python {platform.python_version()}")
    gaussian(args) if args.which == "gaussian" else mnist(args)


if __name__ == "__main__":
    main()

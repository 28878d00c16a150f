"""Wyner-Ziv coding against R_sum and R_ind, with independent dithered coding as the
reference measured on the same data in the same run.

Gaussian CEO model (K clients, X ~ N(0, sx2), Y_k = X + N(0, s2), lambda with
K D = s2 (1 + lambda)) and real MNIST-MLP local updates (K clients from one common
start, IID partitions; sx2 and s2 estimated per layer from the exact updates).

    .venv/bin/python bench/bench_wyner_ziv.py gaussian [--n 65536 --trials 2]
    .venv/bin/python bench/bench_wyner_ziv.py mnist [--clients 10 --lam 16 --rounds 7]
    .venv/bin/python bench/bench_wyner_ziv.py residuals   # why the variance profile

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
from flrd.sideinfo import Observed, decode_successive, plan_layer, wyner_ziv
from flrd.sideinfo.profile import estimate_profile


def independent_reply(y: np.ndarray, noise_var: float, seed: int) -> tuple[Observed, bytes]:
    """flrd's independent dithered code of ``y``, as the server sees it (the server
    computes the same plan from the payload's statistic)."""
    codec = DitheredCodec(noise_var)
    payload = codec.encode(y, seed=seed)
    _, plan = codec.plan(y, seed)
    return Observed.from_dithered(decode(payload), plan.keep_prob, plan.quant_noise), payload


def code_layer(ys: np.ndarray, plan, prior_var: float, s2: float, seed: int,
               profile: np.ndarray | None = None, shape: tuple[int, ...] | None = None) -> dict:
    """Code the K rows of ``ys`` per ``plan``; returns bits, reconstructions, failures,
    and the independent reference on the same rows."""
    K, n = ys.shape
    replies, bits = [], 0
    for c, y in zip(plan.clients, ys):
        if c.coding == "wz":
            payload = wyner_ziv.encode(y, c.step, c.cond_std, seed=seed + c.position, keep_prob=c.keep_prob,
                                       tail_df=plan.tail_df, rates=c.rates)
            replies.append(payload)
        else:
            reply, payload = independent_reply(y, plan.noise_var, seed + c.position)
            replies.append(reply)
        bits += 8 * len(payload)
    t0 = time.perf_counter()
    out = decode_successive(replies, s2=s2, noise_var=plan.noise_var, prior_var=prior_var, expected_size=n,
                           profile=profile, shape=shape)
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
            "n_wz": sum(c.coding == "wz" for c in plan.clients), "coded": out.coded,
            "coded_noise": out.coded_noise_vars}


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
            # The model is exact here: no margin for estimation error (the strategy's is COND_VAR_MARGIN).
            plan = plan_layer(ratio * s2, s2, K, D, n=n, tail_df=args.tail_df, var_margin=1.0)
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


def mnist_rounds(K: int, rounds: int, local_steps: int, seed: int):
    """Per round, the K clients' local updates (per layer, shape (K, n_l)) from the
    global model, which moves by their exact mean (FedAvg); and the layer shapes."""
    from flrd.datasets import load_mnist, partition_indices
    from flrd.models import build_model
    from flrd.training import get_weights, set_weights, train_local

    data = load_mnist()
    parts = partition_indices(data.y_train, 100, "iid", seed=seed)
    model = build_model("mlp", seed=seed)
    start = get_weights(model)
    rng = np.random.default_rng(seed)
    for rnd in range(1, rounds + 1):
        chosen = rng.choice(100, size=K, replace=K > 100)
        deltas = []
        for k, c in enumerate(chosen):
            set_weights(model, start)
            train_local(model, data.x_train[parts[c]], data.y_train[parts[c]], steps=local_steps,
                        seed=seed + 1000 * rnd + k)
            deltas.append([w - s for w, s in zip(get_weights(model), start)])
        yield rnd, [np.stack([d[i].reshape(-1) for d in deltas]).astype(np.float64) for i in range(len(start))], \
            [s.shape for s in start]
        start = [s + np.mean([d[i] for d in deltas], axis=0) for i, s in enumerate(start)]


def mnist(args: argparse.Namespace) -> None:
    K, lam = args.clients, args.lam
    print(f"MNIST-MLP, K={K} IID clients of 100 per round, lambda={lam:g}, {args.local_steps} local steps, "
          f"residual law t{args.tail_df or '(Gaussian)'}, profile {'on' if args.profile else 'off'}; "
          "bits summed over clients and layers")
    print("round | WZ bits   independent  WZ/ind | R_sum     R_ind     | WZ/R_sum WZ/R_ind ind/R_ind | "
          "D_m/D  | WZ replies | resent coords | s")
    profiles: dict[int, np.ndarray] = {}
    tot = {"wz": 0.0, "ref": 0.0, "rsum": 0.0, "rind": 0.0}
    for rnd, layers, shapes in mnist_rounds(K, args.rounds, args.local_steps, args.seed):
        row = {"wz": 0.0, "ref": 0.0, "rsum": 0.0, "rind": 0.0, "err": 0.0, "plan": 0.0, "resent": 0, "n_wz": 0,
               "replies": 0, "s": 0.0}
        for li, (ys, shape) in enumerate(zip(layers, shapes)):
            n = ys.shape[1]
            mbar, a = float(np.mean(ys**2)), float(np.mean(ys.mean(axis=0) ** 2))
            s2 = max((mbar - a) * K / (K - 1), 1e-30)
            sx2 = max(mbar - s2, 0.0)
            D = s2 * (1 + lam) / K
            # No profile yet (round 1): a layer of 2-D coordinates is coded independently.
            plan = plan_layer(sx2, s2, K, D, n=n, tail_df=args.tail_df, profile=profiles.get(li),
                              allow_wz=li in profiles or len(shape) < 2 or not args.profile)
            r = code_layer(ys, plan, sx2, s2, seed=77 * li + 100_000 * rnd, profile=profiles.get(li), shape=shape)
            if args.profile:
                profiles[li] = estimate_profile(r["coded"], r["coded_noise"], shape).expand()
            row["wz"] += r["bits"]
            row["ref"] += r["ref_bits"]
            row["rsum"] += n * plan.sum_rate
            row["rind"] += n * plan.independent_rate
            row["err"] += float(np.sum((r["agg"] - ys.mean(axis=0)) ** 2)) + n * s2 / K
            row["plan"] += n * D
            row["resent"] += r["resent"]
            row["n_wz"] += r["n_wz"]
            row["replies"] += K
            row["s"] += r["seconds"]
        if rnd >= 2:
            for key in tot:
                tot[key] += row[key]
        print(f"{rnd:5d} | {row['wz']:9.0f} {row['ref']:11.0f}  {row['wz'] / row['ref']:6.3f} | "
              f"{row['rsum']:9.0f} {row['rind']:9.0f} | {row['wz'] / row['rsum']:8.2f} {row['wz'] / row['rind']:8.2f} "
              f"{row['ref'] / row['rind']:9.2f} | {row['err'] / row['plan']:6.3f} | "
              f"{row['n_wz']:4d}/{row['replies']:<5d} | "
              f"{row['resent']:13d} | {row['s']:5.1f}", flush=True)
    print(f"rounds 2-{args.rounds}: WZ {tot['wz']:.0f} bits, independent {tot['ref']:.0f} "
          f"(WZ/ind {tot['wz'] / tot['ref']:.3f}, {100 * (1 - tot['wz'] / tot['ref']):.1f} % below), "
          f"R_sum {tot['rsum']:.0f}, R_ind {tot['rind']:.0f}: WZ/R_sum {tot['wz'] / tot['rsum']:.2f}, "
          f"WZ/R_ind {tot['wz'] / tot['rind']:.2f}, independent/R_ind {tot['ref'] / tot['rind']:.2f}", flush=True)


def residuals(args: argparse.Namespace) -> None:
    """Excess kurtosis of one client's residual around the other clients' mean, pooled
    over each 2-D layer and scaled by the rank-1 profile of the other clients' updates."""
    from scipy import stats

    *_, (rnd, layers, shapes) = mnist_rounds(args.clients, args.rounds, args.local_steps, args.seed)
    print(f"MNIST-MLP, round {rnd}, K={args.clients}: client 0's residual around the others' mean")
    print("layer  n        | excess kurtosis pooled | scaled by the others' rank-1 profile")
    for li, (ys, shape) in enumerate(zip(layers, shapes)):
        if len(shape) < 2:
            continue
        others = ys[1:]
        profile = estimate_profile(list(others - others.mean(axis=0)), [0.0] * len(others), shape).expand()
        r = ys[0] - others.mean(axis=0)
        print(f"{li:5d}  {r.size:<8d} | {stats.kurtosis(r):22.2f} | {stats.kurtosis(r / np.sqrt(profile)):8.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="which", required=True)
    g = sub.add_parser("gaussian")
    g.add_argument("--clients", type=int, default=10)
    g.add_argument("--n", type=int, default=65536)
    g.add_argument("--trials", type=int, default=2)
    g.add_argument("--ratios", type=float, nargs="+", default=[0.1, 1.0, 10.0])
    g.add_argument("--lambdas", type=float, nargs="+", default=[0.25, 1.0, 4.0, 16.0])
    g.add_argument("--tail-df", type=int, default=0, help="residual law the payloads assume (0: Gaussian)")
    m = sub.add_parser("mnist")
    m.add_argument("--clients", type=int, default=10)
    m.add_argument("--lam", type=float, default=16.0)
    m.add_argument("--rounds", type=int, default=7)
    m.add_argument("--no-profile", dest="profile", action="store_false",
                   help="flat variance profile (no per-coordinate side information)")
    m.add_argument("--local-steps", type=int, default=20)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--tail-df", type=int, default=0, help="Student-t residual law (0: Gaussian)")
    r = sub.add_parser("residuals")
    r.add_argument("--clients", type=int, default=10)
    r.add_argument("--rounds", type=int, default=3)
    r.add_argument("--local-steps", type=int, default=20)
    r.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    print(f"machine: {platform.machine()} {platform.processor() or ''} python {platform.python_version()}")
    {"gaussian": gaussian, "mnist": mnist, "residuals": residuals}[args.which](args)


if __name__ == "__main__":
    main()

"""The ``flrd`` console script."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flrd.theory.report import DEFAULT_LAMBDAS, theory_table


def _theory(args: argparse.Namespace) -> int:
    print(theory_table(sx2=args.sx2, s2=args.s2, K=args.K, beta=args.beta, R0=args.R0, eps=args.eps,
                       lambdas=tuple(args.lambdas), lambda_cap=args.lambda_cap))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from .settings import Settings  # Flower, torch and Ray load only for this job
    from .sweep import run_sweep

    policies = tuple(args.policies) + tuple(f"fixed-lambda={lam:g}" for lam in args.lambda_grid)
    settings = Settings(
        out_dir=args.out, num_clients=args.clients, clients_per_round=args.per_round, rounds=args.rounds,
        policies=policies, seeds=tuple(args.seeds), model=args.model, partition=args.partition,
        dirichlet_alpha=args.alpha, local_steps=args.local_steps, bits=args.bits,
        lambda_cap=args.lambda_cap, target_accuracy=args.target, audit=not args.no_audit,
    )
    out = run_sweep(settings, show_progress=not args.quiet)
    print(f"report: {out / 'report.md'}")
    print((out / "report.md").read_text())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Argument parser with one sub-command per job."""
    parser = argparse.ArgumentParser(prog="flrd", description=__doc__)
    jobs = parser.add_subparsers(dest="job", required=True)
    theory = jobs.add_parser("theory", help="rates and rounds versus lambda for given statistics")
    theory.add_argument("--sx2", type=float, default=2.0, help="global-gradient variance (default 2)")
    theory.add_argument("--s2", type=float, default=1.0, help="gradient-noise variance (default 1)")
    theory.add_argument("--K", type=int, default=10, help="number of workers (default 10)")
    theory.add_argument("--beta", type=float, default=1.0, help="smoothness of the loss (default 1)")
    theory.add_argument("--R0", type=float, default=1.0, help="initial distance to the optimum (default 1)")
    theory.add_argument("--eps", type=float, default=0.01, help="target accuracy (default 0.01)")
    theory.add_argument("--lambdas", type=float, nargs="+", default=list(DEFAULT_LAMBDAS))
    theory.add_argument("--lambda-cap", type=float, default=16.0, help="largest lambda Corollary 3 may pick")
    theory.set_defaults(run=_theory)

    from .settings import DEFAULT_POLICIES

    sim = jobs.add_parser("simulate", help="Flower simulation sweep: realized bits against the bounds")
    sim.add_argument("--out", type=Path, default=Path("flrd-report"), help="output folder (default flrd-report)")
    sim.add_argument("--clients", type=int, default=100, help="virtual SuperNodes (default 100)")
    sim.add_argument("--per-round", type=int, default=10, help="clients sampled per round (default 10)")
    sim.add_argument("--rounds", type=int, default=25, help="server rounds per run (default 25)")
    sim.add_argument("--policies", nargs="+", default=list(DEFAULT_POLICIES),
                     help="rate-aware, waterfilling, float32, signsgd, signsgd-mv, m22=BITS, qsgd=BITS, topk-ef=BITS, "
                          "fixed-lambda=LAMBDA (default: %(default)s)")
    sim.add_argument("--lambda-grid", type=float, nargs="*", default=[],
                     help="also run fixed-lambda at each value (Fig. 8)")
    sim.add_argument("--seeds", type=int, nargs="+", default=[0])
    sim.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    sim.add_argument("--partition", choices=["iid", "dirichlet", "shards"], default="iid")
    sim.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration (default 0.5)")
    sim.add_argument("--local-steps", type=int, default=20, help="local SGD steps per round (default 20)")
    sim.add_argument("--bits", type=float, default=2.0, help="bits for fixed-rate policies without =BITS")
    sim.add_argument("--lambda-cap", type=float, default=16.0, help="largest lambda the rate-aware policy picks")
    sim.add_argument("--target", type=float, default=0.9, help="test accuracy target (default 0.9)")
    sim.add_argument("--no-audit", action="store_true", help="do not ship exact updates for measurement")
    sim.add_argument("--quiet", action="store_true", help="no progress bars")
    sim.set_defaults(run=_simulate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``flrd <job> [options]``."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ValueError as error:  # invalid statistics: say which bound, no traceback
        print(f"flrd {args.job}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

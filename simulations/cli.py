"""The ``flrd`` console script."""

from __future__ import annotations

import argparse
import sys

from flrd.theory.report import DEFAULT_LAMBDAS, theory_table


def _theory(args: argparse.Namespace) -> int:
    print(theory_table(sx2=args.sx2, s2=args.s2, K=args.K, beta=args.beta, R0=args.R0, eps=args.eps,
                       lambdas=tuple(args.lambdas), lambda_cap=args.lambda_cap))
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

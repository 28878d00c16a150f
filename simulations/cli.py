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


#: RunConfig keys the harness sets itself, so ``flrd simulate`` has no flag for them.
HARNESS_KEYS = {"policy": "--policies", "seed": "--seeds", "fraction-train": "--clients/--per-round",
                "min-train-nodes": "--per-round", "fraction-evaluate": "(none: central evaluation)",
                "fixed-lambda": "--policies fixed-lambda=L",
                "noise-fraction": "--policies trust-region=F", "audit": "--no-audit",
                "central-eval": "(always on)", "state-dir": "(none)"}
_ALIASES = {"num-server-rounds": ["--rounds"], "dirichlet-alpha": ["--alpha"]}


def _simulate(args: argparse.Namespace) -> int:
    from flrd.config import RunConfig

    from .settings import Settings  # Flower, torch and Ray load only for this job
    from .sweep import run_sweep

    policies = tuple(args.policies) + tuple(f"fixed-lambda={lam:g}" for lam in args.lambda_grid)
    run = RunConfig.from_run_config({key: getattr(args, _dest(key)) for key, _, _ in _app_keys()}
                                    | {"audit": not args.no_audit})
    settings = Settings(out_dir=args.out, num_clients=args.clients, clients_per_round=args.per_round,
                        policies=policies, seeds=tuple(args.seeds), target_accuracy=args.target,
                        run=run)
    out = run_sweep(settings, show_progress=not args.quiet)
    print(f"report: {out / 'report.md'}")
    print((out / "report.md").read_text())
    return 0


def _app_keys() -> list[tuple[str, object, str]]:
    from flrd.config import config_keys

    return [(key, default, doc) for key, default, doc in config_keys() if key not in HARNESS_KEYS]


def _dest(key: str) -> str:
    return key.replace("-", "_")


def _add_app_options(parser: argparse._ArgumentGroup) -> None:
    """One option per RunConfig key the harness does not set itself, with its default."""
    import dataclasses

    from flrd.config import RunConfig

    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    for key, default, doc in _app_keys():
        flags = [f"--{key}", *_ALIASES.get(key, [])]
        if isinstance(default, bool):
            parser.add_argument(*flags, dest=_dest(key), action=argparse.BooleanOptionalAction,
                                default=default, help=f"{doc} (default: %(default)s)")
            continue
        parser.add_argument(*flags, dest=_dest(key), type=type(default), default=default,
                            choices=fields[_dest(key)].metadata["choices"],
                            help=f"{doc} (default: %(default)s)")


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
    sim.add_argument("--policies", nargs="+", default=list(DEFAULT_POLICIES),
                     help="trust-region=FRACTION, rate-aware, waterfilling, float32, signsgd, signsgd-mv, terngrad, "
                          "m22=BITS, qsgd=BITS, topk-ef=BITS, topk-ef-global=BITS, fixed-lambda=LAMBDA "
                          "(default: %(default)s)")
    sim.add_argument("--lambda-grid", type=float, nargs="*", default=[],
                     help="also run fixed-lambda at each value (Fig. 8)")
    sim.add_argument("--seeds", type=int, nargs="+", default=[0])
    sim.add_argument("--target", type=float, default=0.9, help="test accuracy target (default 0.9)")
    sim.add_argument("--no-audit", action="store_true",
                     help="do not ship exact updates for measuring the distortion (audit is on by default)")
    sim.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_app_options(sim.add_argument_group("App run config (flrd.config.RunConfig)"))
    sim.set_defaults(run=_simulate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``flrd <job> [options]``."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, RuntimeError) as error:  # bad input or a failed run: one line, no traceback
        print(f"flrd {args.job}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

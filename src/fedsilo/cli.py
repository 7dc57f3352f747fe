"""The ``fedsilo`` command.

::

    fedsilo run CONFIG --out RUN_DIR [--engine local|simulation] [--set key=value ...]
    fedsilo run --resume RUN_DIR [--engine ...]
    fedsilo sweep CONFIG --out DIR [--grid key=v1,v2 ...] [--modes m1,m2] [--seeds N] [--set ...] [--audit]
    fedsilo audit RUN_DIR [--attacks a,b] [--set audit.key=value ...] [--device DEV]

User errors (bad config, bad data, an existing run folder) print one clear line and exit with
status 2; ``-v`` shows debug logs and tracebacks.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import __version__

logger = logging.getLogger("fedsilo.cli")

EXIT_USER_ERROR = 2


def _user_errors() -> tuple[type[BaseException], ...]:
    from .config import ConfigError
    from .data.errors import DataError
    from .loop import FederationError
    from .runs import RunDirError

    return (ConfigError, DataError, RunDirError, FederationError, FileNotFoundError)


def setup_logging(verbose: bool) -> bool:
    """Rich logging on a terminal, plain lines elsewhere; returns whether stderr is a terminal."""
    tty = sys.stderr.isatty()
    level = logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    if tty:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, rich_tracebacks=verbose, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level)
    # Flower logs every sampling step at INFO through its own handler; keep it to warnings.
    # (Import it first: importing flwr resets its logger to DEBUG.)
    import flwr.supercore.logger  # noqa: F401

    flwr = logging.getLogger("flwr")
    flwr.setLevel(logging.DEBUG if verbose else logging.WARNING)
    flwr.propagate = False
    for name in ("ray", "matplotlib", "PIL", "filelock", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return tty


def _reporter(tty: bool):
    from .progress import Reporter, RichReporter

    return RichReporter() if tty else Reporter()


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, tty: bool) -> int:
    from . import progress
    from .config import load_config
    from .runner import resume_run, start_run

    if args.resume:
        if args.config or args.sets:
            raise SystemExit("fedsilo run --resume takes only the run folder (its config is fixed)")
        with progress.use(_reporter(tty)):
            run = resume_run(args.resume, args.engine)
    else:
        if not args.config:
            raise SystemExit("fedsilo run needs a CONFIG file (or --resume RUN_DIR)")
        cfg = load_config(args.config, args.sets)
        out = args.out or str(Path("runs") / f"{cfg.experiment.name}-{time.strftime('%Y%m%d-%H%M%S')}")
        with progress.use(_reporter(tty)):
            run = start_run(cfg, out, args.engine)
    _print_run_summary(run)
    return 0


def _print_run_summary(run) -> None:
    from .summary import scope_table, text_table

    header, rows = scope_table(run)
    if rows:
        print(f"\nFinal metrics ({run.cfg.experiment.mode}, {run.cfg.federation.rounds} rounds):")
        print(text_table(header, rows))
    print(f"\nResults: {run.path}")


def cmd_sweep(args: argparse.Namespace, tty: bool) -> int:
    from . import progress
    from .sweep import SweepSpec, parse_grid, run_sweep

    seeds = args.seed_list or list(range(args.seed_base, args.seed_base + args.seeds))
    spec = SweepSpec(config=args.config, grid=parse_grid(args.grid), modes=args.modes.split(","),
                     seeds=seeds, overrides=list(args.sets), engine=args.engine, audit=args.audit)
    out = args.out or str(Path("runs") / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    with progress.use(_reporter(tty)):
        md = run_sweep(spec, out)
    print(md.read_text(encoding="utf-8"))
    print(f"Results: {out}")
    return 0


def cmd_audit(args: argparse.Namespace, tty: bool) -> int:
    from .privacy.audit import AUDIT_MD, run_audit

    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()] if args.attacks else None
    run_audit(args.run_dir, attacks, args.sets, args.device)
    print((Path(args.run_dir) / AUDIT_MD).read_text(encoding="utf-8"))
    print(f"Audit: {Path(args.run_dir) / 'audit.json'}")
    return 0


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedsilo", description="Cross-silo federated learning for medical imaging.")
    parser.add_argument("--version", action="version", version=f"fedsilo {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs and tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run (or resume) one experiment")
    run.add_argument("config", nargs="?", help="experiment TOML file")
    run.add_argument("--out", help="run folder (must not exist or be empty; default runs/<name>-<time>)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    run.add_argument("--engine", choices=["local", "simulation"], help="override experiment.engine")
    run.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key, e.g. --set federation.rounds=10 (repeatable)")
    run.set_defaults(func=cmd_run)

    sw = sub.add_parser("sweep", help="grid x modes x seeds, then a comparison table")
    sw.add_argument("config", help="experiment TOML file")
    sw.add_argument("--out", help="sweep folder (default runs/sweep-<time>)")
    sw.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                    help="config key and the values to sweep (repeatable: the product is run)")
    sw.add_argument("--modes", default="federated,centralised,local", help="comma-separated modes")
    sw.add_argument("--seeds", type=int, default=1, help="number of seeds (experiment.seed, +1, ...)")
    sw.add_argument("--seed-base", type=int, default=0, help="first seed")
    sw.add_argument("--seed-list", type=lambda s: [int(x) for x in s.split(",")], help="explicit seeds, e.g. 0,7,9")
    sw.add_argument("--engine", choices=["local", "simulation"], help="override experiment.engine")
    sw.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key for every run (repeatable)")
    sw.add_argument("--audit", action="store_true", help="audit each finished run (audit_* columns in the table)")
    sw.set_defaults(func=cmd_sweep)

    au = sub.add_parser("audit", help="measure what a finished run leaks (membership, inversion, ...)")
    au.add_argument("run_dir", help="a finished run folder")
    au.add_argument("--attacks", help="comma-separated audits of the task (default: audit.attacks, or all)")
    au.add_argument("--set", dest="sets", action="append", default=[], metavar="audit.KEY=VALUE",
                    help="override an [audit] setting, e.g. --set audit.reference_models=8 (repeatable)")
    au.add_argument("--device", help="torch device (default: the run's experiment.device)")
    au.set_defaults(func=cmd_audit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    tty = setup_logging(args.verbose)
    try:
        return int(args.func(args, tty) or 0)
    except _user_errors() as exc:
        if args.verbose:
            logger.exception("failed")
        print(f"fedsilo: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("fedsilo: interrupted; resume with `fedsilo run --resume RUN_DIR`", file=sys.stderr)
        return 130

"""The ``fedsilo`` command.

::

    fedsilo run CONFIG --out RUN_DIR [--engine local|simulation] [--set key=value ...]
    fedsilo run --resume RUN_DIR [--engine ...]
    fedsilo sweep CONFIG --out DIR [--grid key=v1,v2 ...] [--modes m1,m2] [--seeds N] [--set ...] [--audit]
    fedsilo report RUN_OR_SWEEP_DIR
    fedsilo data phantom --kind abdomen|fundus --modality ct|mr --n N --out DIR
    fedsilo data inspect PATH_OR_CONFIG [--preview PNG]
    fedsilo data deidentify DICOM_DIR --out DIR
    fedsilo compare RUN_A RUN_B ... [--out FILE]
    fedsilo audit RUN_DIR [--attacks a,b] [--set audit.key=value ...] [--device DEV]
    fedsilo deploy certs --out DIR --sites a,b,c [--hosts host1,10.0.0.5]
    fedsilo deploy superlink --certs DIR [--address 0.0.0.0:9093]
    fedsilo deploy supernode --certs DIR --site NAME --data PATH --superlink HOST:PORT [--port 9094]
    fedsilo deploy run CONFIG --superlink HOST:PORT --certs DIR --out RUN_DIR   (or --resume RUN_DIR)
    fedsilo deploy split-data CONFIG --out DIR   (rehearsal: each site's share of a config's data)

User errors (bad config, bad data, an existing run folder) print one clear line and exit with
status 2; ``-v`` shows debug logs and tracebacks.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from fedsilo.cli.common import EXIT_USER_ERROR, UsageError
from fedsilo.cli.parser import build_parser

logger = logging.getLogger("fedsilo.cli")

__all__ = ["EXIT_USER_ERROR", "UsageError", "build_parser", "main", "setup_logging"]


#: Where the user-error types live. An exception of one of them means its module was imported,
#: so :func:`_user_errors` never imports one (fedsilo.run.folder alone pulls in torch: seconds).
_USER_ERRORS = (
    ("fedsilo.config", "ConfigError"),
    ("fedsilo.data.errors", "DataError"),
    ("fedsilo.run.folder", "RunDirError"),
    ("fedsilo.rounds", "FederationError"),
    ("fedsilo.deploy.certs", "DeployError"),
)


def _user_errors() -> tuple[type[BaseException], ...]:
    found = [getattr(sys.modules[m], name) for m, name in _USER_ERRORS
             if m in sys.modules and hasattr(sys.modules[m], name)]
    return (*found, FileNotFoundError, UsageError)


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
    for name in ("ray", "matplotlib", "PIL", "filelock", "urllib3", "opacus"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return tty


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
        for note in getattr(exc, "__notes__", ()):  # what became of the run folder, and what to do
            print(f"fedsilo: {note}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("fedsilo: interrupted; resume with `fedsilo run --resume RUN_DIR`", file=sys.stderr)
        return 130

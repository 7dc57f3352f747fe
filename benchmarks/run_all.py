"""``make bench``: run every benchmark and rewrite its section of RESULTS.md.

    python -m benchmarks.run_all [--only engine,scale] [--quick]
"""

from __future__ import annotations

import argparse
import importlib
import logging
import time
import warnings

from .common import write_section

BENCHMARKS = ["framework", "engine", "scale", "messages", "augment", "dp", "poisoning"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", help="comma-separated benchmark names")
    parser.add_argument("--quick", action="store_true", help="smaller settings (smoke check)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)  # Opacus' secure-RNG and hook notices
    names = args.only.split(",") if args.only else BENCHMARKS
    for name in names:
        try:
            module = importlib.import_module(f"benchmarks.bench_{name}")
        except ModuleNotFoundError:
            print(f"benchmark {name!r} not available yet, skipped")
            continue
        t0 = time.monotonic()
        print(f"== {module.TITLE}", flush=True)
        body = module.run(quick=args.quick)
        command = f"python -m benchmarks.run_all --only {name}" + (" --quick" if args.quick else "")
        write_section(module.NAME, module.TITLE, command, body, t0)
        print(body, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

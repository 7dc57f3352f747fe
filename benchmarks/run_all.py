"""``make bench``: run every benchmark and rewrite its section of RESULTS.md.

    python -m benchmarks.run_all [--only engine,scale] [--quick]
"""

from __future__ import annotations

import argparse
import importlib
import logging
import time
import warnings

from benchmarks.common import table, write_section

#: The poisoning study (``bench_poisoning``) has its own target, ``make bench-poisoning`` (about 25 min),
#: and still runs here with ``--only poisoning``.
BENCHMARKS = ["framework", "engine", "scale", "cluster", "messages", "augment", "dp", "secagg", "deploy"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", help="comma-separated benchmark names")
    parser.add_argument("--quick", action="store_true", help="smaller settings (smoke check)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)  # Opacus' secure-RNG and hook notices
    names = args.only.split(",") if args.only else BENCHMARKS
    start = time.monotonic()
    took: list[list[object]] = []
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
        took.append([name, module.TITLE, f"{time.monotonic() - t0:.0f}"])
        print(body, flush=True)
    if not args.only:  # the whole `make bench`: record how long it took (issue 9: under 30 minutes on 2 cores)
        total = time.monotonic() - start
        body = (table(["benchmark", "section", "seconds"], took)
                + f"\n\nTotal: {total:.0f} s ({total / 60:.1f} min) for `make bench`"
                + (" --quick" if args.quick else "") + ".")
        write_section("make-bench", "`make bench`: every benchmark in one run (issue 9)",
                      "make bench" + (" (--quick)" if args.quick else ""), body, start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

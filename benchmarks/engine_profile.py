"""Profile of the local engine's round overhead, and the fix measured against an older commit.

Part 1 (profile): cProfile of a realistic 10-site run on the local engine; the table lists where
the time outside the sites' own training goes (functions that run per message).

Part 2 (before/after): the round overhead of this tree and of ``--before REV`` (default: the
commit before ``KeptArray`` existed), measured alternately in fresh subprocesses, ``--repeats``
times each, same config and seed; medians and their ratio.

    python -m benchmarks.engine_profile [--before REV] [--repeats 3]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_engine import MODELS, _config, overhead
from benchmarks.common import REPO, table, write_section

NAME = "engine-profile"
TITLE = "Profile of the local engine's round overhead, before and after the fix (issue 9)"
MODEL = "realistic (GradeCNN w32 d3, 32 px, 100 img/site)"
SITES, ROUNDS = 10, 5
#: Last commit whose messages decode every Array from its bytes on each read.
BEFORE = "5c02e4e"
#: Per-message functions whose time is outside the sites' training (file:function suffixes).
WATCH = [
    ("flwr/app/message/array.py", "numpy", "Array.numpy (decode .npy bytes)"),
    ("flwr/app/message/array.py", "from_numpy_ndarray", "Array from ndarray (encode .npy bytes)"),
    ("fedsilo/federation/messages.py", "state_to_arrays", "state_to_arrays (site reply)"),
    ("fedsilo/federation/client_app.py", "_model_from", "load global weights into the site's model"),
    ("fedsilo/federation/validation.py", "check_train_reply", "update validation"),
    ("flwr/serverapp/strategy/fedavg.py", "aggregate_train", "FedAvg aggregation"),
    ("fedsilo/federation/messages.py", "cast_like", "cast aggregate to model dtypes"),
]

# A fresh interpreter on one source tree: the run's median round overhead and round time, as JSON.
_CHILD = """
import json, sys, tempfile
from pathlib import Path
sys.path[:0] = [{src!r}, {bench!r}]
from benchmarks.bench_engine import MODELS, _config, overhead
from fedsilo.run.start import start_run
cfg = _config({sites}, MODELS[{model!r}], {rounds})
with tempfile.TemporaryDirectory() as tmp:
    start_run(cfg, Path(tmp) / "run", "local")
    print(json.dumps(overhead(Path(tmp) / "run")))
"""


def profile_rows() -> tuple[list[list[object]], float, float]:
    """cProfile one local run; per-round milliseconds of the watched functions."""
    from fedsilo.run.start import start_run

    with tempfile.TemporaryDirectory() as tmp:
        start_run(_config(3, MODELS[MODEL], 2), Path(tmp) / "warm", "local")  # imports, caches
        prof = cProfile.Profile()
        prof.enable()
        start_run(_config(SITES, MODELS[MODEL], ROUNDS), Path(tmp) / "run", "local")
        prof.disable()
        over, rnd = overhead(Path(tmp) / "run")
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    rows = []
    for path, func, label in WATCH:
        cum = sum(v[3] for (file, _, name), v in stats.items() if file.endswith(path) and name == func)
        calls = sum(v[1] for (file, _, name), v in stats.items() if file.endswith(path) and name == func)
        rows.append([label, calls, f"{1000 * cum / ROUNDS:.1f}"])
    return rows, over, rnd


def ab(before: str, repeats: int) -> dict[str, list[tuple[float, float]]]:
    """Alternate runs of the ``before`` commit and this tree; (overhead, round) seconds per run."""
    out: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), before], cwd=REPO, check=True,
                       capture_output=True)
        try:
            trees = {"before": old, "after": REPO}
            for _ in range(repeats):
                for label, tree in trees.items():
                    code = _CHILD.format(src=str(tree / "src"), bench=str(tree), sites=SITES, model=MODEL,
                                         rounds=ROUNDS)
                    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
                    out[label].append(tuple(json.loads(res.stdout.strip().splitlines()[-1])))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=REPO, capture_output=True)
    return out


def run(before: str = BEFORE, repeats: int = 3) -> str:
    rows, over, rnd = profile_rows()
    runs = ab(before, repeats)
    med = {k: (statistics.median(o for o, _ in v), statistics.median(r for _, r in v)) for k, v in runs.items()}
    bo, ao = med["before"][0], med["after"][0]
    ab_rows = [[label, f"{1000 * o:.1f}", f"{r:.3f}", f"{100 * o / r:.2f}%",
                ", ".join(f"{1000 * x:.0f}" for x, _ in runs[label])] for label, (o, r) in med.items()]
    return (
        f"Local engine, {MODEL}, {SITES} sites, {ROUNDS} rounds (overhead: median over rounds 2..{ROUNDS} of the "
        "training phase's wall time minus the sites' training time).\n\n"
        f"**Profile** (this tree, cProfile on; overhead {1000 * over:.0f} ms of a {rnd:.2f} s round). Milliseconds "
        "per round, cumulative (nested entries overlap):\n\n"
        + table(["function", "calls", "ms per round"], rows)
        + "\n\n**Fix.** In one process, every message's arrays were encoded to `.npy` bytes (Flower's wire "
        "format) that nothing read, and every training reply was decoded from those bytes three to four times "
        "(the site's model load, update validation, aggregation, dtype casting). `KeptArray` "
        "(`fedsilo/federation/messages.py`) keeps a private copy of its ndarray, hands out copies of it, and "
        "makes the bytes only when something reads them (Flower sending the message to another process, "
        "byte counts); what travels is unchanged, and messages from another process decode as before.\n\n"
        f"**Before/after** (commit `{before}` vs this tree, alternating fresh processes, {repeats} runs each, "
        "profiler off):\n\n"
        + table(["tree", "round overhead (ms, median)", "round (s)", "overhead share", "runs (ms)"], ab_rows)
        + f"\n\nOverhead after / before: {ao / bo:.2f}x.\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default=BEFORE, help="git revision to compare with (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    t0 = time.monotonic()
    body = run(args.before, args.repeats)
    write_section(NAME, TITLE, f"python -m benchmarks.engine_profile --before {args.before} --repeats {args.repeats}",
                  body, t0)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

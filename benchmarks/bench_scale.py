"""Scale: 3 -> 10 -> 50 -> 100 sites holding the same total data: wall time and peak memory.

Each site count runs in its own process (``fedsilo run``, local engine, one thread), so its peak
resident memory (``ru_maxrss`` from ``wait4``) is its own. With the total number of training
images fixed, the compute is fixed: time should stay flat (linear in total samples, not in
sites) and memory should not grow with the number of sites — the in-process engine keeps one
model and one optimiser, not one per site.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, table

NAME = "scale"
TITLE = "Scale: sites with the same total data, wall time and peak memory (issue 9)"


def _round_seconds(out: Path) -> float:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return sum(r.get("round_seconds", 0.0) for r in rows if r["scope"] == "global")


def _run(sites: int, n_train: int, rounds: int, out: Path) -> tuple[float, float, float]:
    cmd = [sys.executable, "-m", "fedsilo", "run", str(REPO / "configs" / "quick-classify.toml"), "--out", str(out),
           "--set", "experiment.threads=1", "--set", f"federation.num_sites={sites}",
           "--set", f"federation.rounds={rounds}", "--set", f"federation.eval_every={rounds}",
           "--set", "partition.name=iid", "--set", f"data.phantom.n_train={n_train}",
           "--set", "data.phantom.n_test=200", "--set", "train.local_epochs=1", "--set", "eval.keep_models=false"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-2000:]}")
    return seconds, _round_seconds(out), usage.ru_maxrss / 1024  # kB -> MB


def run(quick: bool = False) -> str:
    counts = (3, 10, 50) if quick else (3, 10, 50, 100)
    n_train, rounds = (1000, 2) if quick else (2000, 3)
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for sites in counts:
            seconds, training, rss = _run(sites, n_train, rounds, Path(tmp) / f"s{sites}")
            results[sites] = (seconds, training, rss)
            print(f"  {sites} sites: {seconds:.1f} s ({training:.1f} s in rounds), peak {rss:.0f} MB", flush=True)
    _, base_t, base_m = results[counts[0]]
    for sites, (seconds, training, rss) in results.items():
        rows.append([sites, n_train // sites, f"{seconds:.1f}", f"{training:.1f}", f"{training / base_t:.2f}",
                     f"{rss:.0f}", f"{100 * (rss / base_m - 1):+.1f}%"])
    _, t50, m50 = results[50]
    return (f"Phantom fundus classification (quick-classify model), {n_train} training images in total, iid, "
            f"{rounds} rounds of 1 local epoch, local engine, one thread; each row its own process "
            f"(process wall time includes start-up and data generation; the goal is judged on the time spent in training rounds, from metrics.jsonl).\n\n"
            + table(["sites", "images per site", "process wall s", "training rounds s", "rounds vs 3 sites",
                     "peak RSS MB", "memory vs 3 sites"], rows)
            + f"\n\nGoals: time flat within 10% (3 -> 50 sites: {t50 / base_t:.2f}x, "
              f"{'met' if abs(t50 / base_t - 1) <= 0.10 else 'NOT met'}); peak memory +<= 10% from 3 to 50 sites "
              f"({100 * (m50 / base_m - 1):+.1f}%, {'met' if m50 / base_m <= 1.10 else 'NOT met'}).\n")

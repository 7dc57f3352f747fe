"""Shared helpers: machine description, timing, and writing a section of RESULTS.md in place."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.results_toc import update_contents
from fedsilo.run.folder import cpu_model

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
REPO = RESULTS.parents[1]


def machine() -> str:
    """'2 CPU cores (Intel Xeon), 24 GB RAM, torch 2.13.0+cpu' — what every figure is quoted with."""
    model = cpu_model()
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) / 1024**2
        ram = f"{mem:.0f} GB RAM"
    except (OSError, ValueError, IndexError):
        ram = "RAM unknown"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{os.cpu_count()} CPU cores ({model}), {ram}, torch {torch.__version__}, "
            f"python {platform.python_version()}, load average at start {load:.2f}")


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def write_section(name: str, title: str, command: str, body: str, started: float, results: Path = RESULTS) -> None:
    """Replace (or append) the section ``name`` of ``results`` (RESULTS.md), stamped with command,
    machine, date, commit; then regenerate the file's contents (:mod:`benchmarks.results_toc`)."""
    stamp = (f"- Command: `{command}`\n- Machine: {machine()}\n"
             f"- Date: {dt.date.today().isoformat()}; commit {commit()}; took {time.monotonic() - started:.0f} s\n")
    block = f"<!-- bench:{name} -->\n## {title}\n\n{stamp}\n{body.strip()}\n<!-- /bench:{name} -->"
    text = results.read_text(encoding="utf-8") if results.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    results.write_text(text, encoding="utf-8")
    update_contents(results)


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)

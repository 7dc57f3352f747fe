"""Headline tables from finished sweeps: per-run numbers, mean ± std and a 95% interval over seeds.

Used by the scripts that write a RESULTS.md section from run folders (``retinamnist_grading``,
``fedgin_chaos_schedule``): they read a ``fedsilo sweep`` folder (``sweep.json`` and
``<grid>/<mode>/seed-<s>/``), or run the sweep first when asked to.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from fedsilo.report.summary import final_metrics, selected_metrics
from fedsilo.run.folder import RunDir
from fedsilo.sweep import SweepSpec, combo_slug

logger = logging.getLogger(__name__)


class MissingRuns(FileNotFoundError):
    """A sweep folder lacks runs (or is no sweep); the message names them and how to make them."""


@dataclass
class Run:
    """One finished run of a sweep and its numbers."""

    combo: dict[str, str]
    mode: str
    seed: int
    path: Path
    metrics: dict[str, float]
    commit: str
    seconds: float
    cfg: object


@dataclass
class SeedStats:
    """Mean, sample std and the t-based 95% interval of the mean over ``n`` seeds (NaN bounds for n < 2)."""

    mean: float
    std: float
    low: float
    high: float
    n: int

    def pm(self, digits: int = 3) -> str:
        """``0.485 ± 0.017`` (just the value for one seed, '–' for none)."""
        if self.n == 0:
            return "–"
        return f"{self.mean:.{digits}f}" + (f" ± {self.std:.{digits}f}" if self.n > 1 else "")

    def ci(self, digits: int = 3) -> str:
        """``[0.443, 0.527]``, or why there is none."""
        if self.n < 2:
            return "– (one seed)" if self.n == 1 else "–"
        return f"[{self.low:.{digits}f}, {self.high:.{digits}f}]"


def seed_stats(values: Iterable[float]) -> SeedStats:
    """Mean ± sample std over seeds and the 95% confidence interval of the mean (Student's t, n - 1
    degrees of freedom); non-finite values are left out."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if arr.size == 0:
        return SeedStats(math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(arr.mean())
    if arr.size == 1:
        return SeedStats(mean, 0.0, math.nan, math.nan, 1)
    std = float(arr.std(ddof=1))
    half = float(stats.t.ppf(0.975, arr.size - 1)) * std / math.sqrt(arr.size)
    return SeedStats(mean, std, mean - half, mean + half, int(arr.size))


def percent(value: float, reference: float) -> float:
    """``value`` as a percentage of ``reference`` (NaN when the reference is 0 or missing)."""
    if not (math.isfinite(value) and math.isfinite(reference)) or reference == 0:
        return math.nan
    return 100.0 * value / reference


def pct(value: float, digits: int = 1) -> str:
    return "–" if not math.isfinite(value) else f"{value:.{digits}f}%"


def _seconds(path: Path, env: dict) -> float:
    """Wall time of a run: from env.json's start time to final.pt (NaN if either is missing)."""
    try:
        start = dt.datetime.fromisoformat(env["start_time"]).timestamp()
        return max(0.0, os.path.getmtime(path / "final.pt") - start)
    except (KeyError, ValueError, OSError):
        return math.nan


def load_run(path: Path, combo: dict[str, str], mode: str, seed: int, primary: str,
             higher_is_better: bool = True) -> Run:
    """A finished run folder's final metrics and its validation-selected (``sel_*``) test metrics."""
    run = RunDir.open(path)
    metrics = {**final_metrics(run), **selected_metrics(run, primary, higher_is_better)}
    env = run.read_env()
    return Run(combo, mode, seed, path, metrics, str(env.get("git", {}).get("commit", "unknown"))[:7],
               _seconds(path, env), run.cfg)


def read_spec(sweep_dir: Path) -> SweepSpec:
    """The ``sweep.json`` of a sweep folder (:class:`MissingRuns` when there is none)."""
    spec_file = sweep_dir / "sweep.json"
    if not spec_file.is_file():
        raise MissingRuns(f"{sweep_dir}: no sweep.json, so not a `fedsilo sweep` folder (run the sweep first)")
    return SweepSpec(**json.loads(spec_file.read_text(encoding="utf-8")))


def load_sweep(sweep_dir: Path, primary: str, higher_is_better: bool = True) -> list[Run]:
    """Every run a sweep folder's ``sweep.json`` plans, in grid, mode, seed order.

    Raises
    ------
    MissingRuns
        When ``sweep.json`` is absent or a planned run has not finished (no ``final.pt``).
    """
    spec = read_spec(sweep_dir)
    keys = list(spec.grid)
    planned = [(combo, mode, seed, sweep_dir / combo_slug(list(combo.items())) / mode / f"seed-{seed}")
               for values in itertools.product(*(spec.grid[k] for k in keys))
               for combo in [dict(zip(keys, values, strict=True))]
               for mode in spec.modes for seed in spec.seeds]
    missing = [str(path) for *_, path in planned if not (path / "final.pt").is_file()]
    if missing:
        raise MissingRuns(f"{sweep_dir}: {len(missing)} of {len(planned)} runs have not finished "
                          f"(no final.pt): {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
    return [load_run(path, combo, mode, seed, primary, higher_is_better) for combo, mode, seed, path in planned]


def ensure_sweep(spec: SweepSpec, out: Path, rerun: bool) -> None:
    """Run (or finish) the sweep ``spec`` into ``out`` when ``rerun``; finished runs are kept."""
    if not rerun:
        return
    from fedsilo.sweep import run_sweep

    logger.info("Running the sweep into %s (%d runs; finished ones are kept)", out,
                len(spec.modes) * len(spec.seeds) * math.prod(len(v) for v in spec.grid.values()))
    run_sweep(spec, out)


def stats_of(runs: Sequence[Run], key: str) -> SeedStats:
    return seed_stats(r.metrics.get(key, math.nan) for r in runs)


def run_seconds(runs: Sequence[Run]) -> float:
    """Seconds the runs took one after another (those whose time is known)."""
    return sum(r.seconds for r in runs if math.isfinite(r.seconds))


def runs_note(runs: Sequence[Run]) -> str:
    """'12 runs, commit 6129608, 17 min of run time (sum)': which code made the numbers, and how
    long they took one after the other."""
    commits = sorted({r.commit for r in runs})
    seconds = run_seconds(runs)
    return (f"{len(runs)} runs, commit{'s' if len(commits) > 1 else ''} {', '.join(commits)}, "
            f"{seconds / 60:.0f} min of run time one after another")

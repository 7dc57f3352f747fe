"""Sweeps: a grid of config values x modes x seeds, then one comparison table.

``fedsilo sweep CONFIG --grid federation.num_sites=3,5,7,10 --modes federated,centralised,local
--seeds 3 --out DIR`` validates every config first, runs each combination into
``DIR/<grid values>/<mode>/seed-<s>/`` (skipping finished runs and resuming interrupted ones, so
a sweep can be re-run after a crash), and writes ``DIR/summary.csv`` and ``DIR/summary.md``:
mean ± std over seeds of each headline metric and "% of centralised" of the task's primary
metric.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fedsilo.config import ConfigError, ExperimentConfig, load_config
from fedsilo.fileio import atomic_write_text
from fedsilo.report.summary import (
    PERCENT_EXPLAINED,
    MetricTable,
    final_metrics,
    group_metrics,
    markdown_table,
    percent_note,
    percent_of,
    pm,
    selected_metrics,
)
from fedsilo.run.folder import RunDir, RunDirError

logger = logging.getLogger(__name__)

MODES = ("federated", "centralised", "local")


@dataclass
class SweepSpec:
    """What a sweep runs (saved as ``sweep.json``; a re-run must match it)."""

    config: str
    grid: dict[str, list[str]] = field(default_factory=dict)
    modes: list[str] = field(default_factory=lambda: ["federated"])
    seeds: list[int] = field(default_factory=lambda: [0])
    overrides: list[str] = field(default_factory=list)
    engine: str | None = None
    #: run ``fedsilo audit`` on each finished run (its audit_* numbers become table columns)
    audit: bool = False


@dataclass
class SweepRun:
    combo: tuple[tuple[str, str], ...]
    mode: str
    seed: int
    cfg: ExperimentConfig
    path: Path


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """``["a.b=1,2", "c.d=x"]`` -> ``{"a.b": ["1", "2"], "c.d": ["x"]}``."""
    grid: dict[str, list[str]] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--grid {item!r} must look like section.key=v1,v2,...")
        key, values = item.split("=", 1)
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not vals:
            raise ConfigError(f"--grid {item!r} lists no values")
        grid[key.strip()] = vals
    return grid


def combo_slug(combo: Sequence[tuple[str, str]]) -> str:
    """Folder name of a grid point, e.g. ``num_sites=3``."""
    if not combo:
        return "default"
    return "_".join(f"{k.split('.')[-1]}={v}" for k, v in combo).replace("/", "-")


def plan(spec: SweepSpec, out: Path) -> list[SweepRun]:
    """Every run of the sweep with its validated config (errors before any work starts)."""
    for mode in spec.modes:
        if mode not in MODES:
            raise ConfigError(f"--modes must be among {', '.join(MODES)}, got {mode!r}")
    keys = list(spec.grid)
    runs = []
    for values in itertools.product(*(spec.grid[k] for k in keys)):
        combo = tuple(zip(keys, values, strict=True))
        for mode in spec.modes:
            for seed in spec.seeds:
                sets = [*spec.overrides, *(f"{k}={v}" for k, v in combo),
                        f"experiment.mode={mode}", f"experiment.seed={seed}"]
                cfg = load_config(spec.config, sets)
                runs.append(SweepRun(combo, mode, seed, cfg, out / combo_slug(combo) / mode / f"seed-{seed}"))
    return runs


def run_sweep(spec: SweepSpec, out: str | Path) -> Path:
    """Run (or continue) a sweep into ``out``; return the Markdown summary's path."""
    from fedsilo.report import write_run_files
    from fedsilo.run.start import resume_run, start_run

    out = Path(out)
    runs = plan(spec, out)
    spec_file = out / "sweep.json"
    if spec_file.exists():
        previous = json.loads(spec_file.read_text(encoding="utf-8"))
        previous.setdefault("audit", False)  # sweeps from before the audit option
        if previous != asdict(spec):
            raise RunDirError(f"{out} holds a different sweep ({spec_file}); choose another --out")
    elif out.exists() and any(out.iterdir()):
        raise RunDirError(f"sweep folder {str(out)!r} exists, is not empty and is not a sweep; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(spec_file, json.dumps(asdict(spec), indent=2) + "\n")
    for i, r in enumerate(runs, start=1):
        what = f"{combo_slug(r.combo)} {r.mode} seed {r.seed}"
        if (r.path / "final.pt").exists():
            logger.info("Sweep run %d/%d (%s): finished earlier, kept", i, len(runs), what)
        else:
            logger.info("Sweep run %d/%d: %s -> %s", i, len(runs), what, r.path)
            if (r.path / "config.toml").exists():
                resume_run(r.path, spec.engine)
            else:
                start_run(r.cfg, r.path, spec.engine)
            write_run_files(r.path)
        if spec.audit and not (r.path / "audit.json").exists():
            from fedsilo.audit.registry import run_audit

            logger.info("Sweep run %d/%d: auditing %s", i, len(runs), r.path)
            run_audit(r.path)
            write_run_files(r.path)  # the model card and report quote the measured leakage
    md = write_summary(runs, out)
    try:
        from fedsilo.report import sweep_report

        sweep_report(out)
    except Exception:  # noqa: BLE001 - the tables are written; the report can be redone
        logger.exception("Could not write the sweep report (redo it with `fedsilo report %s`)", out)
    return md


def write_summary(runs: list[SweepRun], out: Path) -> Path:
    """summary.csv (one line per run) and summary.md (mean ± std over seeds, % of centralised),
    plus the task's extra tables (:meth:`~fedsilo.report.tasks.TaskPresenter.sweep_tables`) as
    ``<name>.csv`` and sections of summary.md."""
    from fedsilo.report.tasks import presenter_for

    task = presenter_for(runs[0].cfg)
    per_run = {}
    for r in runs:
        run = RunDir.open(r.path)
        per_run[r.path] = {**final_metrics(run, task.counts_in_site_mean),
                           **selected_metrics(run, task.primary_metric, task.higher_is_better)}
    all_keys = sorted({k for m in per_run.values() for k in m})
    metric_keys = task.summary_columns(all_keys)
    # privacy columns side by side with quality, whatever columns the task chose
    metric_keys += [k for k in all_keys if k.startswith(("privacy_", "audit_")) and k not in metric_keys]
    percent = task.percent_keys(all_keys)
    if f"sel_test_{task.primary_metric}" in all_keys:
        percent[f"sel_test_{task.primary_metric}"] = task.higher_is_better

    with (out / "summary.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        grid_keys = [k for k, _ in runs[0].combo]
        writer.writerow([*grid_keys, "mode", "seed", "run", *metric_keys])
        for r in runs:
            m = per_run[r.path]
            writer.writerow([*(v for _, v in r.combo), r.mode, r.seed, str(r.path.relative_to(out)),
                             *(m.get(k, "") for k in metric_keys)])

    groups: dict[tuple[tuple[tuple[str, str], ...], str], dict[Path, dict[str, float]]] = {}
    for r in runs:
        groups.setdefault((r.combo, r.mode), {})[r.path] = per_run[r.path]
    stats = {key: group_metrics(v) for key, v in groups.items()}
    header = ["grid", "mode", "seeds", *metric_keys, *(f"% of centralised: {k}" for k in percent)]
    rows = []
    nan = (float("nan"), 0.0)
    for (combo, mode), st in stats.items():
        cells = []
        for key, hib in percent.items():
            pct = percent_of(st.get(key, nan)[0], stats.get((combo, "centralised"), {}).get(key, nan)[0], hib)
            cells.append("–" if pct != pct else f"{pct:.1f}%")
        n = len(groups[(combo, mode)])
        rows.append([combo_slug(combo), mode, str(n), *(pm(*st.get(k, nan), n=n) for k in metric_keys), *cells])
    spread = ("Mean ± std over seeds of the final round" if max((len(g) for g in groups.values()), default=1) > 1
              else "One seed per setting: the final round's values (no spread to show; `--seeds 3` gives mean ± std)")
    text = (f"# Sweep summary\n\n{spread}; `sel_*` columns: "
            "the round with the best global validation score (model selection on the sites' "
            f"validation splits, not on the test split). {PERCENT_EXPLAINED if percent else ''}\n\n"
            f"{markdown_table(header, rows)}\n")
    for table in task.sweep_tables(all_keys):
        text += f"\n## {table.title}\n\n{write_metric_table(table, stats, groups, out)}\n"
    md = out / "summary.md"
    atomic_write_text(md, text)
    logger.info("Sweep summary: %s", md)
    return md


def write_metric_table(table: MetricTable, stats: dict[tuple[tuple[tuple[str, str], ...], str],
                                                       dict[str, tuple[float, float]]],
                       groups: dict[tuple[tuple[tuple[str, str], ...], str], dict[Path, dict[str, float]]],
                       out: Path) -> str:
    """Write ``<name>.csv`` (mean, std, % of centralised per column) and return the Markdown table
    (``mean ± std`` and, where a centralised run of the same grid point exists, its percentage)."""
    nan = (float("nan"), 0.0)
    md_rows, csv_rows = [], []
    for (combo, mode), st in stats.items():
        ref = stats.get((combo, "centralised"), {})
        cells, flat = [], []
        for key in table.keys:
            mean, std = st.get(key, nan)
            pct = percent_of(mean, ref.get(key, nan)[0], table.higher_is_better)
            cell = pm(mean, std, 3, n=len(groups[(combo, mode)]))
            if pct == pct and mode != "centralised":
                cell += f" ({pct:.0f}%)"
            cells.append(cell)
            flat += ["" if mean != mean else f"{mean:.6g}", "" if mean != mean else f"{std:.6g}",
                     "" if pct != pct else f"{pct:.2f}"]
        label = [combo_slug(combo), mode, str(len(groups[(combo, mode)]))]
        md_rows.append([*label, *cells])
        csv_rows.append([*label, *flat])
    with (out / f"{table.name}.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["grid", "mode", "seeds",
                         *(f"{c}_{part}" for c in table.columns for part in ("mean", "std", "pct_of_centralised"))])
        writer.writerows(csv_rows)
    note = percent_note(table.higher_is_better) if "centralised" in {mode for _, mode in stats} else ""
    return (f"{note}\n\n" if note else "") + markdown_table(["grid", "mode", "seeds", *table.columns], md_rows)

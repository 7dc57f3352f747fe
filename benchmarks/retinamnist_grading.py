"""The headline table "Federated DR grading on RetinaMNIST (issue 2)" from its sweep's run folders.

    python -m benchmarks.retinamnist_grading [--runs runs/retina] [--rerun] [--seeds 0,1,2]

Reads the sweep folder ``--runs`` (``fedsilo sweep configs/retinamnist-classify.toml --grid
partition.name=iid,dirichlet --modes federated,centralised --seeds 3 --set experiment.threads=1``);
``--rerun`` runs (or finishes) that sweep first: 12 runs, about 17 min on 2 CPU cores. Writes the
section ``retinamnist-grading`` of benchmarks/RESULTS.md: mean ± std and the 95% interval over seeds,
and which data chose what (the selected round on the sites' validation splits; the test split only
reported).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import RESULTS, write_section
from benchmarks.run_stats import (
    MissingRuns,
    Run,
    ensure_sweep,
    load_sweep,
    pct,
    percent,
    read_spec,
    run_seconds,
    runs_note,
    stats_of,
)
from fedsilo.report.summary import markdown_table
from fedsilo.sweep import SweepSpec

logger = logging.getLogger(__name__)

NAME = "retinamnist-grading"
TITLE = "Federated DR grading on RetinaMNIST (issue 2)"
CONFIG = "configs/retinamnist-classify.toml"
PARTITIONS = ("iid", "dirichlet")
MODES = ("federated", "centralised")
#: Relative gap to centralised kappa allowed by issue 2's goal ("within 10% of centralised").
GOAL_PERCENT = 90.0


def spec(config: str = CONFIG, seeds: Sequence[int] = (0, 1, 2), overrides: Sequence[str] = ()) -> SweepSpec:
    """The sweep behind the table (the same as the command in the module's docstring)."""
    return SweepSpec(config=config, grid={"partition.name": list(PARTITIONS)}, modes=list(MODES),
                     seeds=list(seeds), overrides=["experiment.threads=1", *overrides])


def command(s: SweepSpec, out: Path) -> str:
    sets = "".join(f" --set {o}" for o in s.overrides)
    return (f"fedsilo sweep {s.config} --out {out} --grid partition.name={','.join(s.grid['partition.name'])} "
            f"--modes {','.join(s.modes)} --seeds {len(s.seeds)}{sets}")


def _group(runs: Sequence[Run], partition: str, mode: str) -> list[Run]:
    return [r for r in runs if r.combo.get("partition.name") == partition and r.mode == mode]


def protocol(runs: Sequence[Run], s: SweepSpec) -> str:
    """Data, model and training of the runs, read from the first run's resolved config."""
    cfg = runs[0].cfg
    d, t, c, f = cfg.data, cfg.train, cfg.classifier, cfg.federation
    test_n = runs[0].metrics.get("test_n", math.nan)
    seeds = ", ".join(str(x) for x in s.seeds)
    return (
        f"- Data: `{d.path}`: the {d.train_split} split partitioned over {f.num_sites} sites "
        f"(`partition.name` iid or dirichlet with alpha {cfg.partition.alpha:g}), {d.val_fraction:.0%} of each "
        f"site kept as its validation split; the file's {d.test_split} split"
        f"{'' if math.isnan(test_n) else f' ({test_n:.0f} images)'} is the held-out test set.\n"
        f"- Model and training: GradeCNN ({c.depth} blocks, width {c.width}, {c.norm} norm, dropout {c.dropout:g}), "
        f"{t.optimizer} lr {t.lr:g} ({t.lr_schedule}), {f.rounds} rounds of {t.local_epochs} local epoch(s), "
        f"batch {t.batch_size}; {f.strategy.name} weighted by examples. Centralised: the same sites' training "
        "splits pooled, one period per round.\n"
        f"- n = {len(s.seeds)} runs per row (seeds {seeds}); {runs_note(runs)}."
    )


def rows(runs: Sequence[Run], alpha: float) -> tuple[list[list[str]], dict[str, dict[str, float]]]:
    """Table rows and, per partition, the federated kappa as % of centralised (final, selected)."""
    out, ratios = [], {}
    for partition in PARTITIONS:
        cent = _group(runs, partition, "centralised")
        ref_final, ref_sel = stats_of(cent, "test_kappa").mean, stats_of(cent, "sel_test_kappa").mean
        for mode in MODES:
            group = _group(runs, partition, mode)
            if not group:
                continue
            kf, ks = stats_of(group, "test_kappa"), stats_of(group, "sel_test_kappa")
            p_final, p_sel = percent(kf.mean, ref_final), percent(ks.mean, ref_sel)
            if mode == "federated":
                ratios[partition] = {"final": p_final, "selected": p_sel}
            label = partition if partition == "iid" else f"{partition} (alpha {alpha:g})"
            out.append([label, mode, str(kf.n), kf.pm(), kf.ci(), stats_of(group, "test_accuracy").pm(),
                        ks.pm(), ks.ci(), f"{stats_of(group, 'sel_round').mean:.0f}",
                        pct(p_final), pct(p_sel)])
    return out, ratios


HEADER = ["partition", "mode", "n", "test kappa (final)", "95% CI", "test accuracy (final)",
          "test kappa (selected)", "95% CI", "selected round (mean)", "% of centralised (final)",
          "% of centralised (selected)"]

CHOICE = (
    "Which data chose what: `final` is the last round (nothing chosen); `selected` is, per run, the round "
    "with the best global validation kappa (the mean over the sites' validation splits); the partition and "
    "the mode are the conditions compared, not choices. The test split is only read to report these two "
    "models: no setting was chosen on it. The config's fixed settings (optimiser, learning rate, rounds, "
    "width) were set in issue 2 after SGD with momentum, FedAvgM, FedBN, group norm, 3 local epochs and "
    "100 rounds of 5 local steps were tried on seeds 0-1; the record of that comparison does not say which "
    "split it was judged on, so the figures above are those of the settings as shipped, not a tuned optimum."
)


def reading(ratios: dict[str, dict[str, float]]) -> str:
    """What the numbers say, with the numbers of this run (no hand-written figures)."""
    iid, skew = ratios.get("iid", {}), ratios.get("dirichlet", {})
    final = iid.get("final", math.nan)
    goal = ("holds" if final >= GOAL_PERCENT else "does not hold") if math.isfinite(final) else "cannot be read"
    return (
        f"Reading: with sites holding the same grade mix (iid), federated FedAvg reaches {pct(final)} of the "
        f"centralised test kappa at the last round ({pct(iid.get('selected', math.nan))} with validation-based "
        f"round selection): the goal \"within 10% of centralised\" {goal} for the mean over seeds. With label skew "
        f"(Dirichlet) it reaches {pct(skew.get('final', math.nan))} (selected: "
        f"{pct(skew.get('selected', math.nan))}): the non-IID cost this platform exists to measure, not hidden "
        "by tuning. The 95% intervals are over seeds (Student's t); with 3 seeds they are wide, and kappa on a "
        "test set of about a hundred images moves by several points between seeds."
    )


def body(runs: Sequence[Run], s: SweepSpec) -> str:
    table_rows, ratios = rows(runs, runs[0].cfg.partition.alpha)
    return "\n\n".join([protocol(runs, s), markdown_table(HEADER, table_rows), CHOICE, reading(ratios)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, default=Path("runs/retina"), help="the sweep folder (default runs/retina)")
    p.add_argument("--rerun", action="store_true", help="run (or finish) the sweep first (about 17 min on 2 cores)")
    p.add_argument("--config", default=CONFIG, help=f"experiment config (default {CONFIG})")
    p.add_argument("--seeds", default="0,1,2", help="seeds of a --rerun (default 0,1,2)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="extra override of a --rerun")
    p.add_argument("--results", type=Path, default=RESULTS, help="Markdown file to write the section into")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        seeds = [int(x) for x in a.seeds.split(",") if x.strip()]
    except ValueError:
        p.error(f"--seeds {a.seeds!r}: expected comma-separated integers such as 0,1,2")
    try:
        ensure_sweep(spec(a.config, seeds, a.overrides), a.runs, a.rerun)
        s = read_spec(a.runs)
        if "partition.name" not in s.grid or "centralised" not in s.modes:
            raise MissingRuns(f"{a.runs}: its sweep.json varies {sorted(s.grid) or 'nothing'} over modes {s.modes}; "
                              "expected a grid over partition.name with federated and centralised runs")
        runs = load_sweep(a.runs, "kappa")
    except MissingRuns as e:
        logger.error("%s\nRun it with: python -m benchmarks.retinamnist_grading --runs %s --rerun", e, a.runs)
        return 2
    # "took": the runs' own time, one after another (this script only reads them)
    write_section(NAME, TITLE, command(s, a.runs) + f" && python -m benchmarks.retinamnist_grading --runs {a.runs}",
                  body(runs, s), time.monotonic() - run_seconds(runs), a.results)
    logger.info("Wrote the section %r of %s", TITLE, a.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

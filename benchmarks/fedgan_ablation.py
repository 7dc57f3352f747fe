"""The RESULTS.md section "FedGAN diversity ablation (issue 17)" from run folders.

    python -m benchmarks.fedgan_ablation [--runs runs/fedgan-ablation] [--rerun] [--sites 3,10]
        [--seeds 0,1,2] [--methods keep_opt,ema,...] [--scale 1.0] [--set KEY=VALUE] [--plan]

Protocol: ``configs/fedgan-retinamnist.toml`` (RetinaMNIST over severity-specialised sites) at each
``--sites``; every method (the baseline, each option of issue 17 alone; names in
:data:`benchmarks.fedgan_ablation_tables.METHODS`) federated and centralised (the same method; a
federated-only option's centralised run is the baseline's), over ``--seeds``. The runs never read
the held-out split (``data.test_split = ""``): they score the generator with
``gan.evaluation = "federated"`` (fixed feature network, statistics over the sites' own training
images), and that validation FD chooses, per number of sites, (1) the combination: the options
that beat the baseline, the best of each exclusive group, run as one more method when there are
two or more; (2) the selected configuration: the lowest federated validation FD of all. Only then
is the held-out split (the config's ``data.test_split``, RetinaMNIST's 120 val images) read, for
the baseline and the selected configuration, federated and centralised, with the reference
networks of ``gan.evaluation = "reference"`` (FD / KID / precision / recall / coverage, TSTR when
conditional, the paper's realism); the result is kept in the run folder (``ablation-test.json``).

``--rerun`` runs (or finishes) what is missing; ``--scale F`` multiplies every schedule's rounds by
F (a reduced study, marked as such in the section); ``--plan`` lists the runs and exits. Runs of
one number of sites are independent of the other's: ``--sites 3`` and ``--sites 10`` can run as
two processes into the same ``--runs``, then one call without ``--rerun`` writes the section.
Needs ../shared/data/retinamnist (skipped, with the reason, when absent).

Cost: 108 runs (+ 6 per number of sites for a combination of two or more options) of 900 local
steps per site; measured on the shared 2-core machine (load 3-6): about 0.04 s per site and local
step plus 0.5 s per round, i.e. 2.4 min per 3-site run and 6.4 min per 10-site run, so about 9 h
in one process (``--jobs 2`` runs two at a time, one torch thread each as the config sets); ``--scale 0.25``
at 3 sites took about 1 min per run.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import re
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from benchmarks.common import RESULTS, write_section
from benchmarks.fedgan_ablation_tables import (
    BASELINE,
    METHODS,
    MODES,
    Method,
    Record,
    centralised_counterpart,
    choose_combination,
    combine,
    select,
    site_section,
)
from benchmarks.run_stats import MissingRuns, _seconds
from fedsilo.config import config_from_dict, load_config, to_dict
from fedsilo.report.summary import final_metrics
from fedsilo.run.folder import RunDir

logger = logging.getLogger(__name__)

NAME = "fedgan-ablation"
TITLE = "FedGAN diversity ablation (issue 17)"
CONFIG = "configs/fedgan-retinamnist.toml"
TEST_FILE = "ablation-test.json"


def overrides(method: Method, sites: int, mode: str, seed: int, base: tuple[int, int], scale: float,
              extra: Sequence[str] = ()) -> list[str]:
    """The config overrides of one run: the method's options and schedule (rounds x ``scale``),
    validation-only evaluation (no held-out split), then ``extra``."""
    rounds, steps = method.schedule or base
    rounds = max(2, round(rounds * scale))
    out = ["gan.evaluation=federated", "data.test_split=", f"federation.num_sites={sites}",
           f"federation.rounds={rounds}", f"federation.eval_every={rounds}", f"train.local_steps={steps}",
           *method.sets, f"experiment.mode={mode}", f"experiment.seed={seed}"]
    if method.ema:
        out.append(f"gan.ema_decay={ema_decay(rounds):.4f}")
    return [*out, *extra]


def ema_decay(rounds: int) -> float:
    """Per-round EMA decay for a run of ``rounds``: an averaging window of about a sixth of the run
    (0.9 at 60 rounds), at least 0.5."""
    return max(0.5, 1.0 - 6.0 / rounds)


def run_path(runs: Path, sites: int, mode: str, method: Method, seed: int) -> Path:
    return runs / f"sites={sites}" / mode / method.name / f"seed-{seed}"


class Study:
    """Plans, runs and loads the ablation's runs (see the module doc)."""

    def __init__(self, runs: Path, config: str, seeds: Sequence[int], scale: float, extra: Sequence[str],
                 rerun: bool, jobs: int = 1, modes: Sequence[str] = MODES, tag: str = "") -> None:
        self.runs, self.config, self.seeds, self.scale = runs, config, list(seeds), scale
        self.extra, self.rerun, self.jobs = list(extra), rerun, jobs
        self.modes, self.tag = tuple(modes), tag  # tag: suffix of the mode folders (e.g. a DP study's)
        cfg = load_config(config)
        self.base = (cfg.federation.rounds, cfg.train.local_steps)
        self.test_split = cfg.data.test_split

    def plan(self, sites: int, method: Method) -> list[tuple[str, int, Path, Method]]:
        """(mode, seed, folder, the method run there) of ``method`` at ``sites``."""
        out = []
        for mode in self.modes:
            run_m = method if mode == "federated" else centralised_counterpart(method)
            for seed in self.seeds:
                out.append((mode, seed, run_path(self.runs, sites, mode + self.tag, run_m, seed), run_m))
        return out

    def run_missing(self, sites: int, methods: Sequence[Method]) -> None:
        """With ``rerun``, run (or finish) every unfinished run of ``methods`` at ``sites``, ``jobs``
        at a time, each in its own process; a run that fails is logged and left unfinished (so
        :meth:`records` names it). Refuses a folder that holds another config's run."""
        todo: dict[Path, list[str]] = {}
        for method in methods:
            for mode, seed, path, run_m in self.plan(sites, method):
                sets = overrides(run_m, sites, mode, seed, self.base, self.scale, self.extra)
                self._check(path, sets)
                if self.rerun and not (path / "final.pt").is_file():
                    todo[path] = sets
        if not todo:
            return
        logger.info("%d run(s) to do at %d sites, %d at a time", len(todo), sites, self.jobs)
        if self.jobs == 1:
            for i, (path, sets) in enumerate(todo.items(), 1):
                logger.info("[%d/%d] %s", i, len(todo), path)
                run_one(self.config, str(path), sets)
            return
        ctx = multiprocessing.get_context("spawn")  # torch and fork do not mix
        with ProcessPoolExecutor(max_workers=self.jobs, mp_context=ctx) as pool:
            futures = {pool.submit(run_one, self.config, str(path), sets): path for path, sets in todo.items()}
            for i, future in enumerate(as_completed(futures), 1):
                try:
                    future.result()
                    logger.info("[%d/%d] finished %s", i, len(todo), futures[future])
                except Exception:  # noqa: BLE001 - one failed run must not stop the others
                    logger.exception("[%d/%d] FAILED %s", i, len(todo), futures[future])

    def records(self, sites: int, method: Method) -> list[Record]:
        """Load the runs of ``method`` (after :meth:`run_missing`); MissingRuns names what is missing."""
        out, missing = [], []
        for mode, seed, path, _ in self.plan(sites, method):
            if (path / "final.pt").is_file():
                out.append(self._load(path, sites, method.name, mode, seed))
            else:
                missing.append(str(path))
        if missing:
            raise MissingRuns(f"{len(missing)} run(s) of {method.name} at {sites} sites have not finished (no "
                              f"final.pt): {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        return out

    def _check(self, path: Path, sets: list[str]) -> None:
        if (path / "config.toml").is_file():
            if to_dict(RunDir.open(path).cfg) != to_dict(load_config(self.config, sets)):
                raise MissingRuns(f"{path} holds a run of another config (an earlier --scale, --set or "
                                  "version?); choose another --runs")

    @staticmethod
    def _load(path: Path, sites: int, method: str, mode: str, seed: int) -> Record:
        run = RunDir.open(path)
        env = run.read_env()
        # the runs' "test_*" numbers are the federated evaluation's: validation, no held-out image
        val = {k[5:]: v for k, v in final_metrics(run).items() if k.startswith("test_")}
        test_file = path / TEST_FILE
        test = json.loads(test_file.read_text(encoding="utf-8"))["metrics"] if test_file.is_file() else None
        return Record(sites, method, mode, seed, val, test, _seconds(path, env),
                      str(env.get("git", {}).get("commit", "unknown"))[:7], str(path))

    def read_test(self, record: Record) -> None:
        """The held-out numbers of ``record``'s run (computed once, kept in its folder)."""
        record.test = held_out_metrics(Path(record.path), self.test_split)


def run_one(config: str, path: str, sets: list[str]) -> None:
    """Start (or resume) one run of the study in ``path`` and write its report files."""
    from fedsilo.report import write_run_files
    from fedsilo.run.start import resume_run, start_run

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    folder = Path(path)
    if (folder / "config.toml").is_file():
        resume_run(folder)
    else:
        start_run(load_config(config, sets), folder)
    write_run_files(folder)


def held_out_metrics(path: Path, split: str) -> dict[str, float]:
    """Score the run's released generator on the held-out ``split`` with the reference networks
    (``gan.evaluation = "reference"``); cached in ``path/ablation-test.json``."""
    cache = path / TEST_FILE
    if cache.is_file():
        return json.loads(cache.read_text(encoding="utf-8"))["metrics"]
    from fedsilo.run.load import load_state
    from fedsilo.seeding import resolve_device
    from fedsilo.tasks import make_task

    run = RunDir.open(path)
    cfg = config_from_dict(to_dict(run.cfg), [f"data.test_split={split}", "gan.evaluation=reference"])
    task = make_task(cfg)
    device = resolve_device(cfg.experiment.device)
    model = task.build_model()
    model.load_state_dict(load_state(run)["model"])  # the released generator (the EMA one when kept)
    model.to(device).eval()
    logger.info("Reading the held-out split %r for %s", split, path)
    metrics = {k: float(v) for k, v in task.evaluate(model, task.test_data(), device).items()}
    cache.write_text(json.dumps({"split": split, "metrics": metrics}, indent=1) + "\n", encoding="utf-8")
    return metrics


def sample_figure(study: Study, sites: int, methods: Sequence[Method], seed: int, out: Path) -> Path:
    """Sample grids of ``methods``' released generators (seed ``seed``), federated beside
    centralised, one row per method, written to ``out`` (PNG): the same 64 latent codes (and grades,
    when conditional) in every panel, the runs' own ``samples/round-NNN.png`` ones, so panels
    differ only by the generator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from fedsilo.run.load import load_state
    from fedsilo.tasks import make_task
    from fedsilo.tasks.synthesis.evaluation import grid_images
    from fedsilo.tasks.synthesis.grids import sample_grid

    fig, axes = plt.subplots(len(methods), len(MODES), figsize=(4.2 * len(MODES), 4.4 * len(methods)), squeeze=False)
    for row, method in zip(axes, methods):
        for ax, (mode, _, path, run_m) in zip(row, (p for p in study.plan(sites, method) if p[1] == seed)):
            run = RunDir.open(path)
            model = make_task(run.cfg).build_model()
            model.load_state_dict(load_state(run)["model"])  # the released generator (EMA where on)
            fake = grid_images(model.generator, run.cfg.experiment.seed, run.cfg.gan.conditional, torch.device("cpu"))
            ax.imshow(sample_grid(fake, nrow=8).squeeze(), cmap="gray", interpolation="nearest")
            ax.set_title(f"{method.name}, {mode}" + (f"\n(the {run_m.name} run)" if run_m is not method else ""),
                         fontsize=10)
            ax.axis("off")
    fig.suptitle(f"Released generators at {sites} sites, seed {seed}: the same 64 latent codes per panel")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=72)  # about the grids' own resolution (8 x 30 px per panel side)
    plt.close(fig)
    return out


def run_time(records: Sequence[Record]) -> tuple[list[Record], float]:
    """The distinct runs of ``records`` (a centralised run can stand for several methods) and their
    seconds of run time one after another."""
    unique = list({r.path: r for r in records}.values())
    return unique, sum(r.seconds for r in unique if math.isfinite(r.seconds))


def study_sites(study: Study, sites: int, methods: Sequence[Method]) -> tuple[list[Record], Method, str]:
    """Every record at ``sites``, the combination and the selected method (whose test is read)."""
    study.run_missing(sites, methods)
    records = [r for m in methods for r in study.records(sites, m)]
    combination = combine(choose_combination(records, sites, methods))
    names = [m.name for m in methods]
    if combination.parts:
        study.run_missing(sites, [combination])
        records += study.records(sites, combination)
        names.append(combination.name)
    selected = select(records, sites, names)
    for r in records:
        if r.method in (BASELINE, selected):
            study.read_test(r)
    return records, combination, selected


def protocol(args: argparse.Namespace, study: Study, methods: Sequence[Method], reduced: list[str]) -> str:
    rounds, steps = study.base
    lines = []
    if reduced:
        lines.append(f"**REDUCED STUDY** ({'; '.join(reduced)}): not all of issue 17's protocol"
                     + ("; the numbers indicate, they do not settle the goals (with fewer rounds than the protocol's "
                        "the federated generator may not have learnt the modes yet: compare options within this "
                        "table only)." if args.scale != 1 else ": the goals are checked only for what ran."))
    lines += [
        f"- Protocol: `{args.config}` (RetinaMNIST 28 px over severity-specialised sites, DCGAN, FedAvg; "
        f"{rounds} rounds x {steps} local steps, rounds x {args.scale:g} here) at {args.sites} sites, federated vs "
        f"centralised with the same method (a federated-only option's centralised run is the baseline's), seeds "
        f"{args.seeds}; 1000 generated images per evaluation, the final round's (released, EMA where on) generator."
        + (f" Extra settings: `{' '.join(args.overrides)}`." if args.overrides else ""),
        "- Methods: " + "; ".join(f"`{m.name}` = {m.label}" for m in methods) + ".",
        *([f"- Given on the command line, not chosen by this study's selection: "
           f"{', '.join(f'`{m.name}`' for m in methods if m.parts)} (a combination chosen beforehand, e.g. at "
           "another number of sites; see the command)."] if any(m.parts for m in methods) else []),
        "- Which numbers were selected on what: the combination and the selected configuration were chosen at each "
        "number of sites on the federated runs' validation FD (mean over seeds), computed at the sites against their "
        "own training images in fedsilo's fixed feature network (`gan.evaluation = \"federated\"`); the runs had no "
        "held-out split loaded (`data.test_split = \"\"`). The held-out split (`data.test_split` of the config: "
        "RetinaMNIST's 120 val images) was then read once, for the baseline (the reference, fixed in advance) and "
        "the selected configuration, federated and centralised, in the reference networks' features (trained on "
        "the pooled training images; not Inception, not comparable with published FIDs). Modes and seeds are "
        "conditions, not choices; no round selection. The validation FD sees training images: it rewards fitting "
        "the sites' distribution and cannot see memorisation.",
    ]
    return "\n".join(lines)


def parse_ints(text: str, what: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--{what} {text!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if not out:
        raise ValueError(f"--{what} lists nothing")
    return out


def parse_methods(text: str | None) -> list[Method]:
    """The baseline and the named options (all of :data:`METHODS` when ``text`` is None); a name
    ``a+b`` is the combination of options ``a`` and ``b`` (for instance one chosen at another
    number of sites), run as one method."""
    names = list(METHODS) if text is None else [n.strip() for n in text.split(",") if n.strip()]
    unknown = [p for n in names for p in n.split("+") if p not in METHODS]
    if unknown:
        raise ValueError(f"--methods: unknown {', '.join(unknown)}; expected among {', '.join(METHODS)} "
                         "(or a combination a+b)")
    out = [METHODS[BASELINE]]
    for name in names:
        if name != BASELINE:
            out.append(combine([METHODS[p] for p in name.split("+")]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, default=Path("runs/fedgan-ablation"), help="folder of the study's runs")
    p.add_argument("--rerun", action="store_true", help="run (or finish) the missing runs first")
    p.add_argument("--sites", default="3,10", help="numbers of sites (default 3,10)")
    p.add_argument("--seeds", default="0,1,2", help="seeds (default 0,1,2)")
    p.add_argument("--methods", help=f"options besides the baseline (default all: {','.join(list(METHODS)[1:])})")
    p.add_argument("--scale", type=float, default=1.0, help="reduced study: every schedule's rounds x SCALE (0 < SCALE <= 1)")
    p.add_argument("--config", default=CONFIG, help=f"experiment config (default {CONFIG})")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="extra override of every run")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time with --rerun, each its own process (give "
                   "each run --set experiment.threads=K with jobs x K <= the machine's cores)")
    p.add_argument("--tag", default="", help="a section of its own, e.g. --tag conditional for a study with "
                   "--set gan.conditional=true (letters, digits, '-'; default: the main section)")
    p.add_argument("--plan", action="store_true", help="list the planned runs and exit")
    p.add_argument("--results", type=Path, default=RESULTS, help="Markdown file to write the section into")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        sites, seeds, methods = parse_ints(a.sites, "sites"), parse_ints(a.seeds, "seeds"), parse_methods(a.methods)
        if a.tag and not re.fullmatch(r"[A-Za-z0-9-]+", a.tag):
            raise ValueError(f"--tag {a.tag!r}: expected letters, digits and '-'")
        if a.jobs < 1:
            raise ValueError(f"--jobs {a.jobs}: expected at least 1")
        if not 0 < a.scale <= 1:
            raise ValueError(f"--scale {a.scale}: expected 0 < SCALE <= 1")
    except ValueError as e:
        p.error(str(e))
    data = Path(load_config(a.config).data.path)
    if not data.is_file():
        logger.warning("fedgan_ablation skipped: RetinaMNIST not found at %s (the config's data.path)", data)
        return 0
    study = Study(a.runs, a.config, seeds, a.scale, a.overrides, a.rerun and not a.plan, a.jobs)
    if a.plan:
        seen = {path: overrides(run_m, s, mode, seed, study.base, a.scale, a.overrides)
                for s in sites for m in methods for mode, seed, path, run_m in study.plan(s, m)}
        for path, sets in seen.items():
            print(path, " ".join(sets))
        print(f"{len(seen)} runs, besides a combination of two or more options (per number of sites, "
              f"{2 * len(seeds)} runs more)")
        return 0
    started = time.monotonic()
    conditional = load_config(a.config, a.overrides).gan.conditional
    parts, all_records = [], []
    try:
        for s in sites:
            records, combination, selected = study_sites(study, s, methods)
            all_records += records
            names = [m.name for m in methods] + ([combination.name] if combination.parts else [])
            figure = a.results.parent / "figures" / f"fedgan-ablation{'-' + a.tag if a.tag else ''}-{s}-sites.png"
            shown = [METHODS[BASELINE]]
            if selected != BASELINE:
                shown.append(next(m for m in [*methods, combination] if m.name == selected))
            sample_figure(study, s, shown, seeds[0], figure)
            parts.append(site_section(records, s, names, combination, selected)
                         + f"\n\n![Sample grids at {s} sites]({figure.relative_to(a.results.parent).as_posix()})\n\n"
                         f"*Sample grids of the released generators at {s} sites (seed {seeds[0]}), federated beside "
                         "centralised: the baseline" + (f" and the selected `{selected}`" if selected != BASELINE else "")
                         + "; the same 64 latent codes in every panel"
                         + ("; each row one DR grade (0-4, repeating)" if conditional else "") + ".*")
    except MissingRuns as e:
        logger.error("%s\nRun them with: python -m benchmarks.fedgan_ablation --runs %s --sites %s --seeds %s%s "
                     "--rerun", e, a.runs, a.sites, a.seeds, f" --scale {a.scale:g}" if a.scale != 1 else "")
        return 2
    reduced = [w for w, hit in ((f"rounds x {a.scale:g}", a.scale != 1), (f"seeds {a.seeds}", len(seeds) < 3),
                                (f"sites {a.sites}", sorted(sites) != [3, 10]),
                                (f"{len(methods) - 1} of {len(METHODS) - 1} options", len(methods) < len(METHODS)))
               if hit]
    unique, secs = run_time(all_records)
    commits = sorted({r.commit for r in unique})
    note = (f"- {len(unique)} runs, commit{'s' if len(commits) > 1 else ''} {', '.join(commits)}, "
            f"{secs / 60:.0f} min of run time one after another.")
    body = "\n\n".join([protocol(a, study, methods, reduced) + "\n" + note, *parts])
    cmd = (f"python -m benchmarks.fedgan_ablation --runs {a.runs} --sites {a.sites} --seeds {a.seeds}"
           + (f" --methods {a.methods}" if a.methods else "") + (f" --scale {a.scale:g}" if a.scale != 1 else "")
           + "".join(f" --set {o}" for o in a.overrides) + " --rerun")
    name, title = NAME, TITLE
    if a.tag:
        cmd += f" --tag {a.tag}"
        name, title = f"{NAME}-{a.tag}", f"{TITLE}: {a.tag.replace('-', ' ')}"
    write_section(name, title, cmd, body, min(started, time.monotonic() - secs), a.results)
    logger.info("Wrote the section %r of %s", title, a.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

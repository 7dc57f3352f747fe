"""The methods of the FedGAN diversity ablation (issue 17), how one is selected on validation data,
and the tables of its RESULTS.md section; no training here (see :mod:`benchmarks.fedgan_ablation`).

A :class:`Record` is one finished run: its validation numbers (``gan.evaluation = "federated"``:
fedsilo's fixed feature network, statistics over the sites' own training images, combined at the
coordinator; no test image) and, for the reported configurations only, its test numbers (the
reference networks of ``gan.evaluation = "reference"`` against the held-out split).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from benchmarks.run_stats import SeedStats, pct, percent, seed_stats
from fedsilo.report.summary import markdown_table

BASELINE = "baseline"
MODES = ("federated", "centralised")
#: The selection criterion: validation FD of the federated runs, mean over seeds (lower is better).
VAL_KEY = "fd"
VAL_COLUMNS = [("fd", "val FD"), ("recall", "val recall"), ("precision", "val precision"),
               ("coverage", "val coverage")]
TEST_COLUMNS = [("fd", "FD"), ("kid", "KID"), ("precision", "precision"), ("recall", "recall"),
                ("coverage", "coverage"), ("tstr_kappa", "TSTR kappa"), ("realism", "realism (paper; reference only)")]
#: Issue 17's goals per number of sites: (federated/centralised FD at most, recall % at least, precision % at least).
GOALS = {3: (1.5, 85.0, 95.0), 10: (2.0, 70.0, 95.0)}
#: Issue 17's TSTR goal: the federated generator's TSTR kappa >= 90% of the centralised one's.
TSTR_GOAL = 90.0


@dataclass(frozen=True)
class Method:
    """One option of the ablation (or a combination of options).

    Attributes
    ----------
    name
        Short name (folder and table row).
    label
        What it changes, for the section.
    sets
        Config overrides (``section.key=value``).
    group
        Mutually exclusive options share a group (the combination takes at most one of each).
    federated_only
        True when the option has no effect in centralised mode (the centralised run of the
        baseline stands for it).
    schedule
        ``(rounds, local_steps)`` replacing the protocol's, or None.
    ema
        Whether the generator's EMA is on (its decay follows the number of rounds).
    parts
        The single options a combination is made of (empty for a single option).
    """

    name: str
    label: str
    sets: tuple[str, ...] = ()
    group: str = ""
    federated_only: bool = False
    schedule: tuple[int, int] | None = None
    ema: bool = False
    parts: tuple[str, ...] = field(default=())


METHODS: dict[str, Method] = {m.name: m for m in [
    Method(BASELINE, "the protocol as it is (FedAvg of G and D, fresh Adam each round)"),
    Method("keep_opt", "Adam state kept at the sites between rounds", ("train.keep_optimizer_state=true",)),
    Method("fedadam_g", "FedAdam on the generator (server lr 0.1)", ("gan.federation.server_opt_g=fedadam",),
           group="server_g", federated_only=True),
    Method("fedavgm_g", "FedAvgM on the generator (server lr 0.1, momentum 0.9)",
           ("gan.federation.server_opt_g=fedavgm",), group="server_g", federated_only=True),
    Method("ema", "EMA of the generator (per-round decay max(0.5, 1 - 6/rounds))", ema=True),
    Method("diffaugment", "DiffAugment colour, translation, cutout",
           ('gan.diffaugment=["color", "translation", "cutout"]',)),
    Method("spectral_norm", "spectral normalisation of D", ("gan.spectral_norm=true",)),
    Method("local_norm_d", "D's normalisation layers kept at each site (FedBN for D)",
           ("gan.federation.discriminator=local_norm",), group="d_sharing", federated_only=True),
    Method("local_d", "each site keeps its own D; only G is averaged", ("gan.federation.discriminator=local",),
           group="d_sharing", federated_only=True),
    Method("steps_5", "180 rounds x 5 local steps (same steps, 3x the aggregations)", schedule=(180, 5),
           group="schedule"),
    Method("steps_30", "30 rounds x 30 local steps (same steps, half the aggregations)", schedule=(30, 30),
           group="schedule"),
]}


def combine(parts: Sequence[Method]) -> Method:
    """One method made of ``parts`` (single options of distinct groups); a single part is itself."""
    if not parts:
        return METHODS[BASELINE]
    if len(parts) == 1:
        return parts[0]
    groups = [p.group for p in parts if p.group]
    if len(groups) != len(set(groups)):
        raise ValueError(f"options {', '.join(p.name for p in parts)} include two of one group {groups}")
    schedules = [p.schedule for p in parts if p.schedule is not None]
    return Method("+".join(p.name for p in parts), " + ".join(p.label for p in parts),
                  tuple(s for p in parts for s in p.sets), federated_only=all(p.federated_only for p in parts),
                  schedule=schedules[0] if schedules else None, ema=any(p.ema for p in parts),
                  parts=tuple(p.name for p in parts))


def centralised_counterpart(method: Method) -> Method:
    """The centralised run that stands for ``method``: without its federated-only options (the
    baseline's when nothing else is left)."""
    parts = [METHODS[n] for n in method.parts] if method.parts else [method]
    return combine([p for p in parts if not p.federated_only and p.name != BASELINE])


@dataclass
class Record:
    """One finished run: validation numbers (no test image) and, if read, test numbers."""

    sites: int
    method: str
    mode: str
    seed: int
    val: dict[str, float]
    test: dict[str, float] | None = None
    seconds: float = math.nan
    commit: str = "unknown"
    path: str = ""


def pick(records: Sequence[Record], sites: int, method: str, mode: str) -> list[Record]:
    return [r for r in records if r.sites == sites and r.method == method and r.mode == mode]


def val_stats(records: Sequence[Record], sites: int, method: str, mode: str, key: str = VAL_KEY) -> SeedStats:
    return seed_stats(r.val.get(key, math.nan) for r in pick(records, sites, method, mode))


def held_out_stats(records: Sequence[Record], sites: int, method: str, mode: str, key: str) -> SeedStats:
    return seed_stats((r.test or {}).get(key, math.nan) for r in pick(records, sites, method, mode))


def choose_combination(records: Sequence[Record], sites: int, methods: Sequence[Method]) -> list[Method]:
    """The single options whose federated validation FD (mean over seeds) is below the baseline's,
    the best of each mutually exclusive group, in ``methods`` order."""
    base = val_stats(records, sites, BASELINE, "federated").mean
    best: dict[str, tuple[float, Method]] = {}
    for m in methods:
        if m.name == BASELINE or m.parts:
            continue
        v = val_stats(records, sites, m.name, "federated").mean
        if math.isfinite(v) and (not math.isfinite(base) or v < base):
            key = m.group or m.name
            if key not in best or v < best[key][0]:
                best[key] = (v, m)
    chosen = {m.name for _, m in best.values()}
    return [m for m in methods if m.name in chosen]


def select(records: Sequence[Record], sites: int, candidates: Sequence[str]) -> str:
    """The candidate with the lowest federated validation FD (mean over seeds; ties: the first);
    the baseline when none has a finite one."""
    best, best_v = BASELINE, math.inf
    for name in candidates:
        v = val_stats(records, sites, name, "federated").mean
        if math.isfinite(v) and v < best_v:
            best, best_v = name, v
    return best


def validation_rows(records: Sequence[Record], sites: int, names: Sequence[str], combination: str,
                    selected: str) -> list[list[str]]:
    """Per method and mode: the validation numbers (mean ± std, 95% CI of FD), FD vs the baseline's."""
    base = {mode: val_stats(records, sites, BASELINE, mode).mean for mode in MODES}
    rows = []
    for name in names:
        for mode in MODES:
            if not pick(records, sites, name, mode):
                continue
            fd = val_stats(records, sites, name, mode)
            cells = [val_stats(records, sites, name, mode, k).pm() for k, _ in VAL_COLUMNS[1:]]
            note = [w for w, hit in (("in the combination", name in combination.split("+") and name != combination),
                                     ("combination", name == combination and "+" in name),
                                     ("**selected**", name == selected)) if hit and mode == "federated"]
            rows.append([name, mode, str(fd.n), fd.pm(), fd.ci(), pct(percent(fd.mean, base[mode])), *cells,
                         ", ".join(note)])
    return rows


def held_out_rows(records: Sequence[Record], sites: int, names: Sequence[str]) -> list[list[str]]:
    """Per reported method and mode: mean ± std and the 95% interval of every test number."""
    rows = []
    for name in names:
        for mode in MODES:
            group = pick(records, sites, name, mode)
            if not group:
                continue
            st = [held_out_stats(records, sites, name, mode, k) for k, _ in TEST_COLUMNS]
            rows.append([name, mode, str(len(group)), *(s.pm() for s in st)])
            rows.append(["", "95% CI", "", *(s.ci() for s in st)])
    return rows


def paired_ratio(these: Sequence[Record], reference: Sequence[Record], key: str) -> tuple[float, SeedStats]:
    """Test ``key`` of ``these`` over ``reference``'s, runs paired by seed: the ratio of the means
    and the per-seed ratios' mean and 95% interval."""
    num = {r.seed: (r.test or {}).get(key, math.nan) for r in these}
    den = {r.seed: (r.test or {}).get(key, math.nan) for r in reference}
    per_seed = [num[s] / den[s] for s in sorted(num.keys() & den.keys())
                if math.isfinite(num[s]) and math.isfinite(den[s]) and den[s] != 0]
    f, c = (seed_stats(v.values()).mean for v in (num, den))
    return (f / c if math.isfinite(f) and math.isfinite(c) and c != 0 else math.nan), seed_stats(per_seed)


def ratio(records: Sequence[Record], sites: int, method: str, key: str) -> tuple[float, SeedStats]:
    """Federated over centralised test ``key`` (same method, same seed): see :func:`paired_ratio`."""
    return paired_ratio(pick(records, sites, method, "federated"), pick(records, sites, method, "centralised"), key)


def ratio_cell(of_means: float, per_seed: SeedStats, scale: float, unit: str) -> str:
    if not math.isfinite(of_means):
        return "–"
    ci = f" (per seed {per_seed.mean * scale:.2f}{unit}, 95% CI [{per_seed.low * scale:.2f}, " \
         f"{per_seed.high * scale:.2f}])" if per_seed.n > 1 else ""
    return f"{of_means * scale:.2f}{unit}{ci}"


def verdict(value: float, bound: float | None, at_most: bool) -> str:
    if bound is None:
        return "no goal at this number of sites"
    if not math.isfinite(value):
        return "not measured"
    ok = value <= bound if at_most else value >= bound
    return f"{'holds' if ok else 'does not hold'} ({'<=' if at_most else '>='} {bound:g})"


def goal_rows(records: Sequence[Record], sites: int, names: Sequence[str]) -> list[list[str]]:
    """Issue 17's goals as ratios for each reported method: FD fed/cent, recall and precision and
    TSTR kappa as % of centralised, each with its verdict (on the ratio of the means)."""
    fd_max, rec_min, prec_min = GOALS.get(sites, (None, None, None))
    rows = []
    for name in names:
        for key, label, scale, unit, bound, at_most in (
                ("fd", "FD federated / centralised", 1.0, "x", fd_max, True),
                ("recall", "recall, % of centralised", 100.0, "%", rec_min, False),
                ("precision", "precision, % of centralised", 100.0, "%", prec_min, False),
                ("tstr_kappa", "TSTR kappa, % of centralised", 100.0, "%", TSTR_GOAL, False)):
            of_means, per_seed = ratio(records, sites, name, key)
            cen = held_out_stats(records, sites, name, "centralised", key)
            says = (verdict(of_means * scale, bound, at_most) if math.isfinite(of_means)
                    else "not measured (unconditional generator)" if cen.n == 0 and key == "tstr_kappa"
                    else "undefined (centralised value 0)" if cen.n and cen.mean == 0 else "not measured")
            rows.append([str(sites), name, label, ratio_cell(of_means, per_seed, scale, unit), says])
    return rows


def site_section(records: Sequence[Record], sites: int, names: Sequence[str], combination: Method,
                 selected: str) -> str:
    """The part of the section for one number of sites."""
    chosen = "+".join(combination.parts) if combination.parts else combination.name
    combo_note = (f"Combination (options whose federated validation FD beat the baseline's, the best of each "
                  f"exclusive group): **{chosen}**" + ("" if combination.parts else
                                                       " (one option or none: no separate combination run)"))
    reported = [BASELINE] + ([selected] if selected != BASELINE else [])
    parts = [f"### {sites} sites",
             "**Validation (no test image)**: FD / recall / precision / coverage in fedsilo's fixed feature network "
             "against the sites' own training images, computed at the sites and combined "
             "(`gan.evaluation = \"federated\"`); mean ± std over seeds, FD's 95% CI, FD as % of the baseline's.",
             markdown_table(["method", "mode", "n", "val FD", "val FD 95% CI", "val FD, % of baseline",
                             *(c for _, c in VAL_COLUMNS[1:]), "choice"],
                            validation_rows(records, sites, names, combination.name, selected)),
             combo_note + f"; selected (lowest federated validation FD of all rows): **{selected}**.",
             f"**Test split, read once, for the baseline and the selected configuration only** "
             f"({', '.join(reported)}): mean ± std over seeds, 95% CI (Student's t).",
             markdown_table(["method", "mode", "n", *(c for _, c in TEST_COLUMNS)], held_out_rows(records, sites, reported)),
             "**Issue 17's goals** (ratio of the means over seeds; per-seed ratios' mean and 95% CI in brackets)",
             markdown_table(["sites", "configuration", "measure", "value", "goal"], goal_rows(records, sites, reported))]
    return "\n\n".join(parts)

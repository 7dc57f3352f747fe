"""DP results with the fixed mechanism (issue 16), each row with its empirical epsilon lower bound.

    python -m benchmarks.privacy_audit [--out runs/bench-privacy-audit] [--seeds 0,1,2] [--only fedgan|grids]

1. ``fedgan-dp``: FedGAN on RetinaMNIST (``configs/fedgan-retinamnist.toml``: 3 severity-specialised
   sites, 60 rounds x 15 local steps) without DP (epsilon = inf: the same GroupNorm discriminator,
   nothing clipped or noised) and with sample-level DP-SGD on the discriminator at epsilon = 8 per
   site; quality, every GAN attack, and the one-run audit (``privacy.canaries = 1000``).
2. ``privacy-sweeps``: epsilon grids (inf, 16, 8, 4, 2) of ``quick-fedgan`` and ``quick-fedgin`` on
   the phantoms (5 rounds), with membership attacks and the one-run audit.

Nothing is selected: every setting is the fixed protocol named above, and each run reads its test
split once (its final evaluation). Runs go two at a time (one torch thread each). Each table row
is the mean over seeds with a 95% t-interval (cut to the metric's range); attack AUCs carry their
pooled n.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from scipy import stats

from benchmarks.common import REPO, table, write_section

FEDGAN = "configs/fedgan-retinamnist.toml"
EPSILONS = ["inf", "16", "8", "4", "2"]
AUDIT_FEDGAN = ["audit.max_samples=500", "audit.latent_steps=100"]
QUICK = {
    "quick-fedgan": ("configs/quick-fedgan.toml", ["audit.max_samples=150", "audit.latent_steps=40",
                                                    "audit.gan_samples=300"]),
    "quick-fedgin": ("configs/quick-fedgin.toml", ["audit.reference_models=2", "audit.inversion_iterations=100",
                                                    "audit.max_samples=100"]),
}
#: Natural range of each quality metric (a t-interval over 3 seeds is cut to it).
RANGES = {"test_realism": (0.0, 1.0), "test_fd": (0.0,), "test_precision": (0.0, 1.0), "test_recall": (0.0, 1.0),
          "test_dice3d_ct_mean": (0.0, 1.0), "test_dice3d_mr_mean": (0.0, 1.0)}
COMMON = ["privacy.mode=sample", "privacy.delta=1e-5", "privacy.canaries=1000", "experiment.threads=1"]


def one_run(config: str, out: str, overrides: list[str], audit: list[str]) -> dict[str, Any]:
    """Train, audit and return the run's final metrics and audit summary (in a worker process)."""
    from fedsilo.audit.registry import run_audit
    from fedsilo.config import load_config
    from fedsilo.report.summary import final_rows
    from fedsilo.run.folder import RunDir
    from fedsilo.run.start import start_run

    path = Path(out)
    if not (path / "final.pt").exists():
        start_run(load_config(REPO / config, overrides), path)
    if not (path / "audit.json").exists():
        run_audit(path, overrides=audit)
    report = json.loads((path / "audit.json").read_text())
    return {"metrics": final_rows(RunDir.open(path)).get("global", {}), "summary": report["summary"],
            "attacks": report["attacks"], "privacy": report["privacy"]}


def mean_ci(values: list[float], low: float = -math.inf, high: float = math.inf) -> str:
    """``mean [low, high]`` (95% t-interval over seeds, cut to the metric's range ``[low, high]``),
    or the value for one seed."""
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return "–"
    m = statistics.fmean(values)
    if len(values) < 2:
        return f"{m:.3f}"
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return f"{m:.3f} [{max(m - half, low):.3f}, {min(m + half, high):.3f}]"


def auc_cell(results: list[dict], attack: str) -> str:
    aucs = [r["attacks"][attack]["auc"] for r in results if attack in r["attacks"]]
    n = sum(r["attacks"][attack]["n_pos"] + r["attacks"][attack]["n_neg"] for r in results if attack in r["attacks"])
    return f"{mean_ci(aucs, 0.0, 1.0)} (n={n})" if aucs else "–"


def bound_cell(results: list[dict]) -> str:
    bounds = [r["summary"].get("dp_canary_epsilon_lower_bound") for r in results]
    if any(b is None for b in bounds):
        return "– (no DP-SGD)"
    hits = ", ".join(f"{int(r['summary']['dp_canary_correct'])}/{int(r['summary']['dp_canary_guesses'])}"
                     for r in results)
    return f"{max(bounds):.2f} (largest of {len(bounds)}; right guesses {hits})"


def soundness(results: list[dict]) -> str:
    """One sentence: is every run's empirical bound at or below its accountant's epsilon?"""
    pairs = [(r["summary"]["dp_canary_epsilon_lower_bound"], r["privacy"].get("epsilon")) for r in results
             if "dp_canary_epsilon_lower_bound" in r["summary"] and isinstance(r["privacy"].get("epsilon"), float)]
    above = [(b, e) for b, e in pairs if b > e]
    if not pairs:
        return ""
    if above:
        return f"{len(above)} of {len(pairs)} private runs have an empirical bound ABOVE their accountant's epsilon: {above}."
    return (f"All {len(pairs)} private runs have an empirical bound at or below their accountant's epsilon "
            f"(largest bound {max(b for b, _ in pairs):.2f}).")


def strongest(results: list[dict]) -> str:
    """The attack with the largest mean AUC over seeds, and that AUC."""
    means = {a: statistics.fmean(r["attacks"][a]["auc"] for r in results)
             for a in ("logan", "gan_leaks_blackbox", "gan_leaks_whitebox") if all(a in r["attacks"] for r in results)}
    best = max(means, key=means.get)
    return f"{best} {means[best]:.3f}"


def eps_cell(results: list[dict]) -> str:
    eps = [r["privacy"].get("epsilon") for r in results]
    eps = [e for e in eps if isinstance(e, (int, float))]
    return mean_ci(eps) if eps and all(math.isfinite(e) for e in eps) else "∞"


def run_all(jobs: list[tuple[str, str, list[str], list[str]]]) -> list[dict]:
    with ProcessPoolExecutor(max_workers=2) as pool:
        return list(pool.map(one_run, *zip(*jobs, strict=True)))


def wall_start(jobs: list[tuple[str, str, list[str], list[str]]]) -> float:
    """A ``time.monotonic()`` start such that the section's "took" is the runs' own wall time (first
    run folder created to last audit written), also when the table is rendered again from them."""
    first = min((Path(out) / "config.toml").stat().st_mtime for _, out, _, _ in jobs)
    last = max((Path(out) / "audit.json").stat().st_mtime for _, out, _, _ in jobs)
    return time.monotonic() - (last - first)


def fedgan_section(out: Path, seeds: list[int]) -> None:
    settings = {"no DP (epsilon = inf)": "inf", "DP, epsilon = 8 per site": "8"}
    jobs = [(FEDGAN, str(out / f"fedgan-eps{e}-seed{s}"), [*COMMON, f"privacy.epsilon={e}", f"experiment.seed={s}"],
             AUDIT_FEDGAN) for e in settings.values() for s in seeds]
    results = run_all(jobs)
    started = wall_start(jobs)
    rows = []
    for i, name in enumerate(settings):
        res = results[i * len(seeds):(i + 1) * len(seeds)]
        m = [r["metrics"] for r in res]
        rows.append([name, eps_cell(res), bound_cell(res)]
                    + [mean_ci([x.get(k) for x in m], *RANGES.get(k, ())) for k in ("test_realism", "test_fd", "test_precision",
                                                                 "test_recall")]
                    + [auc_cell(res, a) for a in ("logan", "gan_leaks_blackbox", "gan_leaks_whitebox", "dcr")])
    header = ["setting", "accountant's epsilon", "empirical epsilon >= (95%)", "realism", "FD", "precision",
              "recall", "LOGAN AUC", "GAN-Leaks black-box AUC", "GAN-Leaks white-box AUC", "DCR AUC"]
    dp = results[len(seeds):]
    recall = statistics.fmean(r["metrics"].get("test_recall", math.nan) for r in dp)
    body = (f"Protocol: `{FEDGAN}` at 3 sites, sample-level DP-SGD on the discriminator (Opacus, Poisson "
            f"sampling, clipping norm 1.0, noise calibrated to epsilon = 8 per site over the run, delta = 1e-5; "
            f"noise and sampling from os.urandom at each site), against the same model without DP. "
            f"Seeds {', '.join(map(str, seeds))}; quality: mean over seeds [95% t-interval], 1000 generated images "
            f"against the 120 RetinaMNIST val images (read once per run); attacks: members = the sites' training "
            f"images, non-members = the val images, n = both sides over all seeds. One-run audit: 1000 gradient "
            f"canaries (Steinke et al. 2023); the bound is the largest over seeds.\n\n"
            + table(header, rows)
            + f"\n\nReading: {soundness(results)} Largest mean membership AUC over the GAN attacks: "
              + "; ".join(f"{name}: {strongest(results[i * len(seeds):(i + 1) * len(seeds)])}"
                          for i, name in enumerate(settings))
              + f". The private generator still collapses (mean recall {recall:.2f}): the sound mechanism "
              "does not fix the FedGAN DP quality gap, which issue 17 takes on."
            + "\n\nWhat changed since the previous version of this table: the discriminator's DP-SGD step now draws "
              "a fixed number of fakes (train.batch_size) with grades from a uniform prior, so one real image "
              "moves a step's clipped sum by at most C, as the accountant assumes (before, the number of fakes "
              "followed the Poisson batch, so one image changed two clipped terms: issue 16 estimated the real epsilon of the \"epsilon = 8\" run at roughly 20-32).")
    write_section("fedgan-dp", "FedGAN on RetinaMNIST with and without DP: quality, leakage, empirical epsilon (issue 16)",
                  f"python -m benchmarks.privacy_audit --only fedgan --seeds {','.join(map(str, seeds))}", body,
                  started)


def grids_section(out: Path, seeds: list[int]) -> None:
    parts, everything = [], []
    for name, (config, audit) in QUICK.items():
        # quick-fedgan: the reference networks RESULTS.md's realism/FD came from (the config itself
        # now evaluates federatedly)
        scoring = ["gan.evaluation=reference", "gan.reference_epochs=5"] if name == "quick-fedgan" else []
        jobs = [(config, str(out / f"{name}-eps{e}-seed{s}"),
                 [*COMMON, *scoring, f"privacy.epsilon={e}", "federation.rounds=5", f"experiment.seed={s}"], audit)
                for e in EPSILONS for s in seeds]
        results = run_all(jobs)
        everything += jobs
        rows = []
        for i, e in enumerate(EPSILONS):
            res = results[i * len(seeds):(i + 1) * len(seeds)]
            m = [r["metrics"] for r in res]
            if name == "quick-fedgan":
                quality = [mean_ci([x.get(k) for x in m], *RANGES.get(k, ())) for k in ("test_realism", "test_fd")]
                attacks = [auc_cell(res, a) for a in ("logan", "gan_leaks_blackbox", "dcr")]
            else:
                quality = [mean_ci([x.get(k) for x in m], *RANGES.get(k, ())) for k in ("test_dice3d_ct_mean", "test_dice3d_mr_mean")]
                attacks = [auc_cell(res, a) for a in ("loss", "lira", "rmia")]
            rows.append([e, eps_cell(res), bound_cell(res), *quality, *attacks])
        if name == "quick-fedgan":
            header = ["target epsilon", "accountant's epsilon", "empirical epsilon >= (95%)", "realism", "FD",
                      "LOGAN AUC", "GAN-Leaks black-box AUC", "DCR AUC"]
        else:
            header = ["target epsilon", "accountant's epsilon", "empirical epsilon >= (95%)", "CT 3D Dice",
                      "MR 3D Dice", "loss-attack AUC", "LiRA AUC", "RMIA AUC"]
        parts.append(f"**{name}** (`{config}`, 5 rounds, sample-level DP-SGD, 1000 canaries)\n\n" + table(header, rows)
                     + f"\n\n{soundness(results)}")
    body = (f"Small-scale epsilon grids on the phantoms (seeds {', '.join(map(str, seeds))}; mean [95% t-interval] over "
            "seeds, cut to the metric's range; attack n pooled over seeds): they show the pipeline and the audit, not study-grade quality (the "
            "5-round models are barely trained). Every row's empirical lower bound must stay at or below the "
            "accountant's epsilon; with 1000 canaries the bound cannot exceed about 4.7, so rows above that "
            "cannot be refuted by this audit.\n\n" + "\n\n".join(parts)
            + "\n\nWhat changed: DP noise is now secure (os.urandom), segmentation's DP loss and augmentation are "
              "per slice, and membership pools are matched by modality and organ content (the old segmentation "
              "AUCs below 0.5 partly measured 'this slice shows an organ').")
    write_section("privacy-sweeps", "Privacy-utility sweeps at small scale with empirical epsilon (issue 16)",
                  f"python -m benchmarks.privacy_audit --only grids --seeds {','.join(map(str, seeds))}", body,
                  wall_start(everything))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=REPO / "runs" / "bench-privacy-audit")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--only", choices=["fedgan", "grids"])
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.only in (None, "grids"):
        grids_section(args.out, seeds)
    if args.only in (None, "fedgan"):
        fedgan_section(args.out, seeds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

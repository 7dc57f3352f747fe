"""Poisoned updates (issue 7): 5 sites, one sends sign-flipped x10 updates, another NaNs.

Each strategy (fedavg, fedmedian, fedtrimmedavg, krum, multikrum, centeredclip) runs once clean
and once attacked on the in-process engine; the attacks are the ClientApp's robustness-study hook
(:mod:`fedsilo.federation.poisoning`, node config ``attack``), i.e. the same code path a SuperNode
runs. Update validation (:mod:`fedsilo.federation.validation`) rejects the NaN site before any
strategy sees it; the sign-flipped update passes validation (it is finite and well-shaped) and
must be handled by the aggregation rule.

The study is data-rich on purpose: the two bad sites' data are lost in every attacked run, so a
defence can at best match fedavg over the three honest sites. With 8000 phantom images that
ceiling equals the clean run (the last row shows it), and the table measures the aggregation rule
rather than the lost data. Runs are independent and go two at a time (one per core).

    python -m benchmarks.poisoning [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

from benchmarks.common import table, write_section
from fedsilo.config import config_from_dict
from fedsilo.federation.client_app import app as client_app
from fedsilo.federation.inprocess import run_inprocess
from fedsilo.run.app import make_server_app
from fedsilo.run.folder import RunDir

NAME = "poisoning"
TITLE = "Poisoned updates: sign-flip x10 and NaN sites vs robust aggregation (issue 7)"
STRATEGIES = ("fedavg", "fedmedian", "fedtrimmedavg", "krum", "multikrum", "centeredclip")
ATTACKS = {1: {"attack": "signflip10"}, 3: {"attack": "nan"}}  # partition id -> node config
#: The best any defence can do: the two bad sites' data are lost (both send NaNs, both rejected).
HONEST_ONLY = {1: {"attack": "nan"}, 3: {"attack": "nan"}}
#: (rounds, training images, local steps per round) of the study and of ``--quick``.
SCHEDULES = {False: (25, 8000, 30), True: (3, 500, 5)}
RUNS = {"clean": None, "attacked": ATTACKS, "honest sites only (3 of 5)": HONEST_ONLY}


def _config(strategy: str, rounds: int, n_train: int, local_steps: int):
    return config_from_dict({
        "experiment": {"name": f"poison-{strategy}", "threads": 1, "seed": 0},
        "data": {"source": "phantom", "image_size": 32, "val_fraction": 0.15,
                 "phantom": {"n_train": n_train, "n_test": 1000, "n_cameras": 3}},
        "partition": {"name": "iid"},
        "federation": {"num_sites": 5, "rounds": rounds, "eval_every": rounds, "min_sites": 3,
                       "strategy": {"name": strategy, "trim_beta": 0.25, "num_malicious": 1,
                                    "num_selected": 3}},
        "train": {"local_steps": local_steps, "batch_size": 32, "lr": 0.003, "optimizer": "adamw"},
        "classifier": {"width": 16, "depth": 3},
    })


def _final(run_dir: Path) -> dict[str, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = max(r["round"] for r in rows)
    out: dict[str, float] = {"rejected": 0.0}
    for r in rows:
        if r["scope"] == "global" and "sites_rejected" in r:
            out["rejected"] += r["sites_rejected"]
        if r["scope"] == "global" and r["round"] == last:
            out.update({k: r[k] for k in ("test_kappa", "test_accuracy", "test_kappa_ci_low", "test_kappa_ci_high")
                        if k in r})
    return out


def one(strategy: str, label: str, quick: bool, tmp: str) -> dict[str, float]:
    """Final test metrics of one run: ``label`` is a key of :data:`RUNS`."""
    cfg = _config(strategy, *SCHEDULES[quick])
    run = RunDir.create(Path(tmp) / f"{strategy}-{label.split()[0]}", cfg, engine="local")
    run_inprocess(make_server_app(run.path), client_app, 5, node_extra=RUNS[label])
    return _final(run.path)


def _goal(strategy: str, label: str, res: dict[str, float], clean: dict[str, float]) -> str:
    if label != "attacked" or strategy == "fedavg":
        return ""
    if clean["test_kappa"] < 0.05:  # nothing to keep: the verdict would be vacuous
        return "n/a (clean run did not learn)"
    kept = [100 * (res[k] - clean[k]) >= -2.0 for k in ("test_kappa", "test_accuracy")]
    return " / ".join("yes" if k else "no" for k in kept)


def run(quick: bool = False, workers: int = 2) -> str:
    log = logging.getLogger(__name__)
    jobs = [("fedavg", "honest sites only (3 of 5)")]
    jobs += [(s, label) for s in STRATEGIES for label in ("clean", "attacked")]
    results: dict[tuple[str, str], dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(
            max_workers=max(1, min(workers, os.cpu_count() or 1)), mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(one, s, label, quick, tmp): (s, label) for s, label in jobs}
        for done in as_completed(futures):
            results[futures[done]] = done.result()
            log.warning("poisoning: %s %s done (%d/%d)", *futures[done], len(results), len(jobs))
    ref = results[("fedavg", "clean")]
    rows = []
    for s, label in jobs[1:] + jobs[:1]:
        res, clean = results[(s, label)], results.get((s, "clean"), ref)
        honest = label.startswith("honest")
        ci = (f"{res['test_kappa']:.3f} [{res['test_kappa_ci_low']:.2f}, {res['test_kappa_ci_high']:.2f}]"
              if "test_kappa_ci_low" in res else f"{res['test_kappa']:.3f}")
        rows.append([s, label, ci, f"{res['test_accuracy']:.3f}",
                     "" if honest else f"{100 * (res['test_kappa'] - clean['test_kappa']):+.1f}",
                     "" if honest else f"{100 * (res['test_accuracy'] - clean['test_accuracy']):+.1f}",
                     f"{100 * (res['test_kappa'] - ref['test_kappa']):+.1f}", int(res["rejected"]),
                     _goal(s, label, res, clean)])
    rounds, n_train, steps = SCHEDULES[quick]
    note = (f"5 sites (IID split of {n_train} phantom fundus images, 32 px), {rounds} rounds of {steps} local AdamW "
            "steps (batch 32, lr 0.003, cosine), seed 0, GradeCNN w16 d3. Attacked runs: site-2 sends "
            "`w = g - 10 (w_honest - g)` (sign-flip x10), site-4 sends NaNs. Deltas are in points (x100) against "
            "the same strategy's clean run, and (last delta) against clean fedavg. Test kappa (quadratic) with its "
            "bootstrap 95% interval on the 1000 held-out phantom images. "
            "'Rejected' counts updates refused by validation over all rounds (the NaN site, every round); "
            "fedtrimmedavg trims 25% at each end (with the NaN site rejected, 4 updates remain: one trimmed at "
            "each end, which makes it the median of 4; 20% would trim none); krum and multikrum assume 1 "
            "malicious site, multikrum averages the 3 best-scored updates; centeredclip clips each update around "
            "the running estimate at the round's median update norm, 3 iterations (Karimireddy et al., ICML "
            "2021). The last row is the ceiling for any defence: fedavg over the 3 honest sites only (both bad "
            "sites send NaNs and are rejected). Goal column: the attacked run lost at most 2 points of kappa / "
            "accuracy against the strategy's clean run (a gain counts as kept).\n\n")
    return note + table(["strategy", "run", "test kappa [95% CI]", "test accuracy", "delta kappa (pts)",
                         "delta accuracy (pts)", "kappa vs clean fedavg (pts)", "rejected updates",
                         "at most 2 pts lost (kappa / accuracy)"], rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    t0 = time.monotonic()
    body = run(quick=args.quick)
    write_section(NAME, TITLE, "python -m benchmarks.poisoning" + (" --quick" if args.quick else ""), body, t0)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

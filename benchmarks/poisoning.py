"""Poisoned updates (issue 7): 5 sites, one sends sign-flipped x10 updates, another NaNs.

Each strategy (fedavg, fedmedian, fedtrimmedavg, krum) runs once clean and once attacked on the
in-process engine; the attacks are the ClientApp's robustness-study hook
(:mod:`fedsilo.federation.attacks`, node config ``attack``), i.e. the same code path a SuperNode
runs. Update validation (:mod:`fedsilo.federation.validation`) rejects the NaN site before any
strategy sees it; the sign-flipped update passes validation (it is finite and well-shaped) and
must be handled by the aggregation rule.

    python -m benchmarks.poisoning [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from fedsilo.config import config_from_dict
from fedsilo.federation.client_app import app as client_app
from fedsilo.federation.inprocess import run_inprocess
from fedsilo.federation.server_app import make_server_app
from fedsilo.runs import RunDir

from .common import table, write_section

NAME = "poisoning"
TITLE = "Poisoned updates: sign-flip x10 and NaN sites vs robust aggregation (issue 7)"
STRATEGIES = ("fedavg", "fedmedian", "fedtrimmedavg", "krum", "multikrum")
ATTACKS = {1: {"attack": "signflip10"}, 3: {"attack": "nan"}}  # partition id -> node config
#: The best any defence can do: the two bad sites' data are lost (both send NaNs, both rejected).
HONEST_ONLY = {1: {"attack": "nan"}, 3: {"attack": "nan"}}


def _config(strategy: str, rounds: int, n_train: int):
    return config_from_dict({
        "experiment": {"name": f"poison-{strategy}", "threads": 1, "seed": 0},
        "data": {"source": "phantom", "image_size": 32, "val_fraction": 0.15,
                 "phantom": {"n_train": n_train, "n_test": 1000, "n_cameras": 3}},
        "partition": {"name": "iid"},
        "federation": {"num_sites": 5, "rounds": rounds, "eval_every": rounds, "min_sites": 3,
                       "strategy": {"name": strategy, "trim_beta": 0.25, "num_malicious": 1,
                                    "num_selected": 3}},
        "train": {"local_epochs": 2, "batch_size": 32, "lr": 0.003, "optimizer": "adamw"},
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
            out.update({k: r[k] for k in ("test_kappa", "test_accuracy") if k in r})
    return out


def one(strategy: str, attacks: dict | None, label: str, rounds: int, n_train: int, tmp: Path) -> dict[str, float]:
    cfg = _config(strategy, rounds, n_train)
    run = RunDir.create(tmp / f"{strategy}-{label}", cfg, engine="local")
    run_inprocess(make_server_app(run.path), client_app, 5, node_extra=attacks)
    return _final(run.path)


def run(quick: bool = False) -> str:
    rounds, n_train = (3, 500) if quick else (15, 2000)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        honest = one("fedavg", HONEST_ONLY, "honest-only", rounds, n_train, Path(tmp))
        clean_ref = None
        for strategy in STRATEGIES:
            clean = one(strategy, None, "clean", rounds, n_train, Path(tmp))
            bad = one(strategy, ATTACKS, "attacked", rounds, n_train, Path(tmp))
            if clean_ref is None:
                clean_ref = clean
            for label, res in (("clean", clean), ("attacked", bad)):
                dk = 100 * (res["test_kappa"] - clean["test_kappa"])
                da = 100 * (res["test_accuracy"] - clean["test_accuracy"])
                if label == "clean" or strategy == "fedavg":
                    goal = ""
                elif clean["test_kappa"] < 0.05:  # nothing to keep: the verdict would be vacuous
                    goal = "n/a (clean run did not learn)"
                else:
                    goal = f"{'yes' if dk >= -2.0 else 'no'} / {'yes' if da >= -2.0 else 'no'}"
                rows.append([strategy, label, f"{res['test_kappa']:.3f}", f"{res['test_accuracy']:.3f}",
                             f"{dk:+.1f}", f"{da:+.1f}", f"{100 * (res['test_kappa'] - clean_ref['test_kappa']):+.1f}",
                             int(res["rejected"]), goal])
            logging.getLogger(__name__).warning("%s done", strategy)
        rows.append(["fedavg", "honest sites only (3 of 5)", f"{honest['test_kappa']:.3f}",
                     f"{honest['test_accuracy']:.3f}", "", "",
                     f"{100 * (honest['test_kappa'] - clean_ref['test_kappa']):+.1f}", int(honest["rejected"]), ""])
    note = (f"5 sites (IID split of {n_train} phantom fundus images, 32 px), {rounds} rounds, seed 0, "
            "GradeCNN w16 d3, 2 local epochs. Attacked runs: site-2 sends `w = g - 10 (w_honest - g)` "
            "(sign-flip x10), site-4 sends NaNs. Deltas are in points (x100) against the same strategy's clean "
            "run, and (last delta) against clean fedavg. "
            "'Rejected' counts updates refused by validation over all rounds (the NaN site, every round); "
            "fedtrimmedavg trims 25% at each end (with the NaN site rejected, 4 updates remain: "
            "one trimmed at each end; 20% would trim none); krum and multikrum assume 1 malicious site, multikrum "
            "averages the 3 best-scored updates. The last row is the ceiling for any defence: fedavg over the 3 "
            "honest sites only (both bad sites send NaNs and are rejected). Goal column: the attacked run lost "
            "at most 2 points of kappa / accuracy against the strategy's clean run (a gain counts as kept). "
            "Test set: 1000 held-out phantom images.\n\n")
    return note + table(["strategy", "run", "test kappa", "test accuracy", "delta kappa (pts)",
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

"""Engine overhead: per-round time outside client compute, in-process engine vs Flower simulation.

Round overhead = the server's wall time of the training phase (configure, send, receive, validate,
aggregate) minus the sites' own training time (measured inside the ClientApp). Reported as the
median over rounds 2..R (round 1 pays start-up costs), for a tiny and a realistic model at 3, 10
and 50 sites, both engines in one process run.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import table, write_section
from fedsilo.config import config_from_dict
from fedsilo.run.start import start_run

NAME = "engine"
TITLE = "Engine overhead: in-process vs Flower simulation (issue 9)"

MODELS = {
    "tiny (GradeCNN w4 d1, 28 px, 20 img/site)": {"image_size": 28, "width": 4, "depth": 1, "per_site": 20},
    "realistic (GradeCNN w32 d3, 32 px, 100 img/site)": {"image_size": 32, "width": 32, "depth": 3, "per_site": 100},
}


def _config(sites: int, model: dict, rounds: int):
    return config_from_dict({
        "experiment": {"name": f"engine-{sites}", "threads": 1},
        "data": {"source": "phantom", "image_size": model["image_size"], "val_fraction": 0.1,
                 "phantom": {"n_train": sites * model["per_site"], "n_test": 0}},
        "partition": {"name": "iid"},
        "federation": {"num_sites": sites, "rounds": rounds, "eval_every": rounds},
        "classifier": {"width": model["width"], "depth": model["depth"]},
    })


def overhead(run_dir: Path) -> tuple[float, float]:
    """Median (overhead seconds, round seconds) over rounds >= 2."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    per_round = {}
    for r in rows:
        if r["scope"] == "global" and "round_seconds" in r:
            per_round[r["round"]] = [r["round_seconds"], 0.0]
    for r in rows:
        if r["scope"] != "global" and "train_seconds" in r and r["round"] in per_round:
            per_round[r["round"]][1] += r["train_seconds"]
    late = [v for k, v in per_round.items() if k >= 2]
    return statistics.median(t - c for t, c in late), statistics.median(t for t, _ in late)


def run(quick: bool = False) -> str:
    rounds = 3 if quick else 4
    site_counts = (3, 10) if quick else (3, 10, 50)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, model in MODELS.items():
            for sites in site_counts:
                res = {}
                for engine in ("local", "simulation"):
                    out = Path(tmp) / f"{engine}-{sites}-{model['width']}"
                    start_run(_config(sites, model, rounds), out, engine)
                    res[engine] = overhead(out)
                (lo, lr), (so, sr) = res["local"], res["simulation"]
                rows.append([label, sites, f"{lr:.3f}", f"{lo * 1000:.1f} ms ({100 * lo / lr:.2f}%)",
                             f"{sr:.3f}", f"{so * 1000:.1f} ms ({100 * so / sr:.1f}%)", f"{so / max(lo, 1e-9):.0f}x"])
    return table(["model", "sites", "local round (s)", "local overhead", "simulation round (s)",
                  "simulation overhead", "simulation / local overhead"], rows) + (
        "\n\nOverhead = round wall time of the training phase minus the sum of the sites' training "
        "times (sites run one at a time on both engines; simulation gives each Ray actor all CPUs so "
        "that weights are identical). Median over rounds 2.." + str(rounds) + ".")


if __name__ == "__main__":
    t0 = time.monotonic()
    write_section(NAME, TITLE, "python -m benchmarks.bench_engine", run(), t0)

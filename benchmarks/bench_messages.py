"""Message size: bytes a site receives and sends per round, for every task with a quick config.

One federated round of each task's quick config; ``message_bytes`` in metrics.jsonl is the size
of the global model's ArrayRecord (what the server sends each sampled site, and what each site
sends back). Also given: how many parameters and buffers that is, and what a float16 transfer
would save (fedsilo sends float32: halving would change the aggregated weights, so it is not on
by default and not offered yet).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from benchmarks.common import REPO, table
from fedsilo.config import load_config
from fedsilo.run.start import start_run

NAME = "messages"
TITLE = "Message size per round and site (issue 9)"

CONFIGS = {"classification": "quick-classify.toml", "synthesis (FedGAN)": "quick-fedgan.toml",
           "segmentation (FedGIN)": "quick-fedgin.toml"}


def run(quick: bool = False) -> str:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for task, name in CONFIGS.items():
            path = REPO / "configs" / name
            if not path.exists():
                rows.append([task, name, "–", "–", "config not available"])
                continue
            cfg = load_config(path, ["experiment.threads=1", "federation.rounds=1", "federation.eval_every=1",
                                     "eval.keep_models=false"])
            run_dir = start_run(cfg, Path(tmp) / path.stem)
            metrics = [json.loads(line) for line in (run_dir.path / "metrics.jsonl").read_text().splitlines()]
            size = next(r["message_bytes"] for r in metrics if "message_bytes" in r)
            state = torch.load(run_dir.final_path, map_location="cpu", weights_only=False)["model"]
            numel = sum(v.numel() for v in state.values())
            rows.append([task, name, f"{numel:,}", f"{size / 2**20:.2f} MiB",
                         f"{2 * size / 2**20:.2f} MiB per site and round (down + up); float16 would halve it"])
    full = []
    for task_name, name in (("classification", "retinamnist-classify.toml"), ("synthesis (FedGAN)", "fedgan-retinamnist.toml"),
                            ("segmentation (FedGIN)", "fedgin-phantom-limited.toml"), ("segmentation (FedGIN)", "fedgin-chaos.toml")):
        from fedsilo.tasks import make_task

        state = make_task(load_config(REPO / "configs" / name)).build_model().state_dict()
        size = sum(v.numel() * v.element_size() for v in state.values())
        full.append([task_name, name, f"{sum(v.numel() for v in state.values()):,}", f"{size / 2**20:.2f} MiB",
                     f"{2 * size / 2**20:.2f} MiB per site and round"])
    return ("One round of each quick config (local engine). The payload is the whole global state "
            "(parameters and normalisation buffers); strategies that keep layers local (fedbn, DSBN) "
            "still send the full state, and the server keeps site-local parts out of the average.\n\n"
            + table(["task", "config", "values", "model message", "traffic"], rows)
            + "\n\nThe study configs' models (state dict size, float32; the message carries the same arrays):\n\n"
            + table(["task", "config", "values", "model message", "traffic"], full) + "\n")

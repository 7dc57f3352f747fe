"""``MODEL_CARD.md``: what a run's model is, what it was trained on, how good it is, what it is for.

Written into every run folder with its report (Mitchell et al., "Model Cards for Model
Reporting", FAT* 2019): task and model, data sources and sites (aggregate counts and modalities
only, never patient data), training and privacy settings with the epsilon actually spent, final
evaluation metrics with their 95% confidence intervals, intended use and known limitations.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from fedsilo.fileio import atomic_write_text
from fedsilo.report.summary import (
    empirical_epsilon_line,
    final_rows,
    fmt,
    markdown_table,
    secure_aggregation_line,
)
from fedsilo.report.tasks import TaskPresenter, presenter_for
from fedsilo.run.folder import RunDir

logger = logging.getLogger(__name__)

MODEL_CARD = "MODEL_CARD.md"


def write_model_card(run_dir: str | Path) -> Path:
    """Write ``RUN_DIR/MODEL_CARD.md`` (replacing an older card of the same run) and return its path."""
    from fedsilo.tasks import make_task

    run = RunDir.open(run_dir)
    task = make_task(run.cfg)
    presenter = presenter_for(run.cfg)
    parts = [
        f"# Model card: {run.cfg.experiment.name}\n",
        _details(run, task),
        _data(run),
        _training(run),
        _privacy(run),
        _evaluation(run),
        f"## Intended use\n\n{presenter.intended_use()}\n",
        _limitations(run, presenter),
    ]
    path = run.path / MODEL_CARD
    atomic_write_text(path, "\n".join(parts))
    logger.info("Model card: %s", path)
    return path


def _details(run: RunDir, task: Any) -> str:
    cfg, env = run.cfg, run.read_env()
    model = task.build_model()
    params = sum(p.numel() for p in model.parameters())
    git = env.get("git", {})
    commit = str(git.get("commit", "unknown")) + (" (with uncommitted changes)" if git.get("dirty") else "")
    rows = [
        ["task", cfg.experiment.task],
        ["model", f"{type(model).__name__}, {params:,} parameters"],
        ["mode", cfg.experiment.mode],
        ["strategy", cfg.federation.strategy.name if cfg.experiment.mode == "federated" else "–"],
        ["rounds", str(cfg.federation.rounds)],
        ["seed", str(cfg.experiment.seed)],
        ["engine", str(env.get("engine", "–"))],
        ["trained", str(env.get("start_time", "–"))],
        ["fedsilo commit", commit],
        ["weights", "final.pt (exported with `fedsilo export`)"],
    ]
    return "## Model\n\n" + markdown_table(["setting", "value"], rows) + "\n"


def _data(run: RunDir) -> str:
    d = run.cfg.data
    if d.source == "volumes":
        described = ", ".join(f"{s.name or s.kind} ({s.kind}, {s.modality.upper()})" for s in d.sites)
        tests = ", ".join(f"{t.name or t.kind} ({t.kind}, {t.modality.upper()})" for t in d.test) or "none"
        source = f"abdominal volumes: sites {described}; held-out test sets: {tests}"
    elif d.source == "phantom":
        source = "built-in fundus phantom (synthetic images; no patient data)"
    else:
        source = f"{d.source} from `{d.path}`"
    text = f"## Data\n\nSource: {source}.\n\n"
    sites = run.read_sites()
    if sites:
        keys = sorted({k for s in sites for k in s} - {"name", "index", "class_counts", "num_train", "num_val"})
        rows = [[s["name"], str(s.get("num_train", "–")), str(s.get("num_val", "–")),
                 *(str(s.get(k, "–")) for k in keys)] for s in sites]
        text += markdown_table(["site", "training samples", "validation samples", *keys], rows) + "\n\n"
    partition = run.path / "partition.csv"
    if partition.exists():
        text += "Training samples per class and site: `partition.csv` / `partition.png`.\n\n"
    text += ("The card holds aggregate counts only; no image, label or patient identifier left the sites "
             "in training or appears here.\n")
    return text


def _training(run: RunDir) -> str:
    t, cfg = run.cfg.train, run.cfg
    steps = f"{t.local_steps} steps" if t.local_steps else f"{t.local_epochs} epoch(s)"
    rows = [
        ["local training per round", steps],
        ["batch size", str(t.batch_size)],
        ["optimiser", f"{t.optimizer}, lr {t.lr:g} ({t.lr_schedule}), weight decay {t.weight_decay:g}"],
        ["sites per round", f"fraction {cfg.federation.fraction_train:g}, at least {cfg.federation.min_sites}"],
        ["partition", cfg.partition.name if cfg.data.source != "volumes" else "one site per [[data.sites]] entry"],
    ]
    return "## Training\n\n" + markdown_table(["setting", "value"], rows) + "\n\nEvery setting: `config.toml`.\n"


def _privacy(run: RunDir) -> str:
    from fedsilo.report.summary import privacy_spent

    p = run.cfg.privacy
    text = "## Privacy\n\n"
    if p.mode == "none":
        text += "No formal differential privacy: the model may memorise training images (see the audit).\n"
    else:
        spent = privacy_spent(run)
        eps = spent.get("epsilon")
        eps_text = "∞ (DP layers without noise)" if eps is not None and math.isinf(eps) else fmt(eps, 3)
        level = "each training sample of a site" if p.mode == "sample" else "each site's whole contribution"
        text += (f"Differential privacy ({p.mode} level, protects {level}): epsilon spent {eps_text}, "
                 f"delta {fmt(spent.get('delta'), 8)}; {p.guarantee}.\n")
    secure = secure_aggregation_line(run)
    if secure:
        text += f"\n{secure}\n"
    if p.canaries and p.mode == "sample" and p.active:
        text += (f"\nThis is an audit run: {p.canaries} gradient canaries (single weights nudged by at most the "
                 f"clipping norm per step; no image) were trained in for the one-run privacy audit. For release, "
                 f"train again with privacy.canaries = 0.\n")
    empirical = empirical_epsilon_line(run)
    if empirical:
        text += f"\n{empirical}\n"
    audit = run.path / "audit.json"
    if audit.exists():
        summary = json.loads(audit.read_text(encoding="utf-8")).get("summary", {})
        rows = [[k, fmt(v, 3) if isinstance(v, (int, float)) else str(v)] for k, v in summary.items()]
        text += "\nMeasured leakage (`fedsilo audit`, details in `audit.md`):\n\n" + markdown_table(["attack", "value"], rows) + "\n"
    else:
        text += "\nNo privacy audit was run yet (`fedsilo audit RUN_DIR`).\n"
    return text


def _evaluation(run: RunDir) -> str:
    rows = final_rows(run).get("global", {})
    names = sorted(k for k in rows if k.startswith("test_") and not k.endswith(("_ci_low", "_ci_high", "_n"))
                   and isinstance(rows[k], (int, float)))
    if not names:
        return "## Evaluation\n\nNo held-out test evaluation was recorded.\n"
    table = []
    for k in names:
        lo, hi = rows.get(f"{k}_ci_low"), rows.get(f"{k}_ci_high")
        ci = f"{fmt(lo, 3)} – {fmt(hi, 3)}" if lo is not None and hi is not None else "–"
        table.append([k.removeprefix("test_"), fmt(rows[k], 4), ci])
    n = rows.get("test_n")
    head = f"Final model on the held-out test split{f' (n = {n})' if n else ''}; 95% bootstrap intervals where computed.\n\n"
    return "## Evaluation\n\n" + head + markdown_table(["metric", "value", "95% CI"], table) + "\n"


def _limitations(run: RunDir, presenter: TaskPresenter) -> str:
    notes = list(presenter.protocol_notes())
    d = run.cfg.data
    synthetic = d.source == "phantom" or (d.source == "volumes" and all(s.kind == "phantom" for s in d.sites))
    if synthetic:
        notes.insert(0, "Trained on built-in phantoms: its numbers say how the method behaves, not how the "
                        "model would do on real images.")
    notes.append("Evaluated on the test split named above only; performance on other scanners, cameras, "
                 "populations or protocols is unknown.")
    return "## Known limitations\n\n" + "".join(f"- {n}\n" for n in notes)

"""``fedsilo audit RUN_DIR``: measure what a finished run leaks, with per-task plug-ins.

An audit loads the run's final model, runs the attacks its task registered, and writes into
the run folder:

- ``audit.json``: every attack's headline numbers, ROC curve, details and the run's privacy
  settings and spent epsilon, plus a flat ``summary`` (the ``audit_*`` columns of sweep tables);
- ``audit.md``: the same as Markdown tables;
- ``audit/``: plots (ROC curves, reconstruction and nearest-neighbour grids).

Plug-ins: a task's audits live in ``fedsilo/privacy/audits/<task name>.py`` and register
themselves with :func:`register_audit`; each takes an :class:`AuditContext` and returns an
:class:`AuditOutcome`. Adding the GAN or segmentation audit means adding such a module; the
runner, the CLI, the files and the sweep columns need no change.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedsilo import progress
from fedsilo.audit.attacks.metrics import AttackResult, plot_roc
from fedsilo.config import ConfigError, ExperimentConfig, config_from_dict, to_dict
from fedsilo.fileio import atomic_write_text
from fedsilo.report.summary import fmt, markdown_table, privacy_spent
from fedsilo.run.folder import RunDir, RunDirError, git_commit
from fedsilo.seeding import derive_seed, resolve_device

logger = logging.getLogger(__name__)

AUDIT_JSON = "audit.json"
AUDIT_MD = "audit.md"
AUDIT_DIR = "audit"


@dataclass
class AuditContext:
    """What an audit plug-in gets: the run, its task, the attacked model and where to write.

    Attributes
    ----------
    run
        The run folder (config with any ``audit.*`` overrides applied).
    task
        The run's task (data, model, training: reference models use ``task.train``).
    model
        The attacked model in eval mode on ``device``: the global model, or in ``local`` mode
        the first site's own model.
    final
        The run's ``final.pt`` contents (other models, e.g. per-site ones, site state).
    site
        Index of the site whose data the model trained on (local mode), else None (all sites).
    device
        Where to compute.
    out_dir
        Folder for plots (``RUN_DIR/audit``).
    """

    run: RunDir
    task: Any
    model: nn.Module
    final: dict[str, Any]
    site: int | None
    device: torch.device
    out_dir: Path

    @property
    def cfg(self) -> ExperimentConfig:
        return self.run.cfg

    @property
    def settings(self) -> Any:
        """The ``[audit]`` section."""
        return self.run.cfg.audit

    def seed(self, purpose: str) -> int:
        """A seed for one purpose of this audit (from the experiment seed)."""
        return derive_seed(self.cfg.experiment.seed, "audit", purpose) % 2**31

    def artifact(self, name: str) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return self.out_dir / name


@dataclass
class AuditOutcome:
    """What a plug-in found.

    Attributes
    ----------
    attacks
        Attack results (membership, realism, distance) for the main table and ROC plot.
    tables
        Further tables: title -> (header, rows of cells).
    summary
        Flat numbers for sweep tables (written as ``audit_<key>``).
    files
        Files written (relative to the run folder).
    notes
        Sentences for the report (assumptions, what a number does and does not mean).
    """

    attacks: list[AttackResult] = field(default_factory=list)
    tables: dict[str, tuple[list[str], list[list[Any]]]] = field(default_factory=dict)
    summary: dict[str, float] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


AuditFn = Callable[[AuditContext], AuditOutcome]
_AUDITS: dict[str, dict[str, AuditFn]] = {}
#: ``register_audit(ANY_TASK, name)`` offers an audit to every task (e.g. the DP canary audit).
ANY_TASK = "*"
#: Modules of audits that serve every task, imported with any task's own.
_GENERIC = ("fedsilo.audit.tasks.canary",)


def register_audit(task: str, name: str) -> Callable[[AuditFn], AuditFn]:
    """Decorator registering ``fn`` as audit ``name`` of task ``task``."""

    def deco(fn: AuditFn) -> AuditFn:
        _AUDITS.setdefault(task, {})[name] = fn
        return fn

    return deco


def audits_for(task: str) -> dict[str, AuditFn]:
    """The audits registered for ``task`` and for every task (importing ``fedsilo.audit.tasks.<task>``
    and the generic audit modules first)."""
    for module in _GENERIC:
        importlib.import_module(module)
    try:
        importlib.import_module(f"fedsilo.audit.tasks.{task}")
    except ModuleNotFoundError as exc:
        if exc.name != f"fedsilo.audit.tasks.{task}":
            raise
    return {**_AUDITS.get(task, {}), **_AUDITS.get(ANY_TASK, {})}


def _with_overrides(cfg: ExperimentConfig, overrides: Sequence[str]) -> ExperimentConfig:
    for item in overrides:
        if not item.split("=", 1)[0].strip().startswith("audit."):
            raise ConfigError(f"fedsilo audit --set only changes audit.* keys (the run is fixed), got {item!r}")
    return config_from_dict(to_dict(cfg), overrides) if overrides else cfg


def _attacked_model(task: Any, final: dict[str, Any], mode: str) -> tuple[nn.Module, int | None]:
    from fedsilo.run.load import choose_weights

    weights, site = choose_weights(final, mode, None)
    model = task.build_model()
    model.load_state_dict(weights)
    return model, (list(final.get("site_models") or {}).index(site) if site is not None else None)


def run_audit(run_dir: str | Path, attacks: Sequence[str] | None = None, overrides: Sequence[str] = (),
              device: str | None = None) -> dict[str, Any]:
    """Audit a finished run; write ``audit.json``, ``audit.md`` and ``audit/``; return what
    ``audit.json`` holds (non-finite numbers as the strings ``"inf"``/``"-inf"``, NaN as null).

    Parameters
    ----------
    run_dir
        A finished run folder (with ``final.pt``).
    attacks
        Names of the task's audits to run (default: ``audit.attacks`` of the config, or all).
    overrides
        ``audit.key=value`` settings for this audit.
    device
        Torch device (default: the run's ``experiment.device``).
    """
    from fedsilo.tasks import make_task

    run = RunDir.open(run_dir)
    if not run.final_path.exists():
        raise RunDirError(f"run {str(run_dir)!r} has not finished (no final.pt); finish or resume it first")
    run = RunDir(run.path, _with_overrides(run.cfg, overrides))
    cfg = run.cfg
    available = audits_for(cfg.experiment.task)
    if not available:
        raise ConfigError(f"no audit is registered for task {cfg.experiment.task!r} yet")
    chosen = list(attacks or cfg.audit.attacks or available)
    unknown = [a for a in chosen if a not in available]
    if unknown:
        raise ConfigError(f"audit.attacks must be among {', '.join(available)}, got {unknown}")
    if cfg.experiment.threads:
        torch.set_num_threads(cfg.experiment.threads)
    dev = resolve_device(device or cfg.experiment.device)
    logger.info("Auditing %s (%s): loading its model", run.path, ", ".join(chosen))
    task = make_task(cfg)
    final = torch.load(run.final_path, map_location="cpu", weights_only=False)
    model, site = _attacked_model(task, final, cfg.experiment.mode)
    model.to(dev).eval()
    ctx = AuditContext(run, task, model, final, site, dev, run.path / AUDIT_DIR)
    outcomes: dict[str, AuditOutcome] = {}
    for i, name in enumerate(chosen, 1):
        logger.info("Audit %s: %s (%d of %d)", run.path, name, i, len(chosen))
        outcomes[name] = available[name](ctx)
        progress.current().step("audit", i, len(chosen), f"{name} done")
    report = _report(run, outcomes)
    results = [r for o in outcomes.values() for r in o.attacks]
    if results:
        plot_roc(results, ctx.artifact("roc.png"), title=f"Attacks on {cfg.experiment.name}")
        report["files"].append(f"{AUDIT_DIR}/roc.png")
    atomic_write_text(run.path / AUDIT_MD, _markdown(report, outcomes))
    report = _jsonable(report)
    atomic_write_text(run.path / AUDIT_JSON, json.dumps(report, indent=2, allow_nan=False) + "\n")
    logger.info("Audit written: %s", run.path / AUDIT_JSON)
    return report


def _report(run: RunDir, outcomes: dict[str, AuditOutcome]) -> dict[str, Any]:
    cfg = run.cfg
    summary: dict[str, float] = {}
    for outcome in outcomes.values():
        summary.update(outcome.summary)
    return {
        "run": str(run.path),
        "name": cfg.experiment.name,
        "task": cfg.experiment.task,
        "mode": cfg.experiment.mode,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git_commit(),
        "settings": dataclasses.asdict(cfg.audit),
        "privacy": privacy_spent(run),
        "attacks": {r.name: r.to_dict() for o in outcomes.values() for r in o.attacks},
        "tables": {t: {"header": h, "rows": rows} for o in outcomes.values() for t, (h, rows) in o.tables.items()},
        "summary": summary,
        "notes": [n for o in outcomes.values() for n in o.notes],
        "files": [f for o in outcomes.values() for f in o.files],
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return _jsonable(value.item())
    return value


def _markdown(report: dict[str, Any], outcomes: dict[str, AuditOutcome]) -> str:
    p = report["privacy"]
    eps = p.get("epsilon")
    if eps is None or eps == math.inf:
        dp_text = "no differential privacy" + (" (privacy.epsilon = inf)" if p["mode"] != "none" else "")
    else:
        level = "per site, sample level" if p["mode"] == "sample" else "client level"
        dp_text = f"epsilon spent **{eps:.3f}** (delta {p.get('delta') or 0:g}, {level})"
    lines = [f"# Privacy audit: {report['name']}", "", f"Run `{report['run']}`.", "",
             f"Task **{report['task']}**, mode **{report['mode']}**, {dp_text}.", ""]
    results = [r for o in outcomes.values() for r in o.attacks]
    if results:
        header = ["attack", "kind", "AUC", "balanced acc.", "TPR@0.1%FPR", "TPR@1%FPR", "positives", "negatives"]
        rows = [[r.name, r.kind, fmt(r.auc, 3), fmt(r.balanced_accuracy, 3), fmt(r.tpr_at_0_1pct_fpr, 3),
                 fmt(r.tpr_at_1pct_fpr, 3), r.n_pos, r.n_neg] for r in results]
        lines += ["## Attacks", "", markdown_table(header, rows), "",
                  "AUC 0.5 = no better than guessing. With N negatives the smallest measurable FPR is 1/N. "
                  "A `realism` row separates real from synthetic images and says nothing about membership.", ""]
    for title, table in report["tables"].items():
        lines += [f"## {title}", "", markdown_table(table["header"], [[fmt(c, 3) for c in r] for r in table["rows"]]),
                  ""]
    if report["notes"]:
        lines += ["## Notes", "", *[f"- {n}" for n in report["notes"]], ""]
    if report["files"]:
        lines += ["## Files", "", *[f"- `{f}`" for f in report["files"]], ""]
    return "\n".join(lines)


__all__ = [
    "AuditContext",
    "AuditFn",
    "AuditOutcome",
    "audits_for",
    "register_audit",
    "run_audit",
]

"""Run folders: resolved config, environment, metrics, atomic checkpoints, resume.

Layout of a run folder::

    RUN_DIR/
      config.toml        resolved config (every key, defaults filled in)
      env.json           package versions, git commit, seed, engine, start time, resumes,
                         the Ray cluster of a simulation
      metrics.jsonl      one JSON object per line: round, scope ("global" or a site), values
      checkpoints/
        latest.pt        global state after the last finished round (atomic replace)
      final.pt           final global state (and per-site state where a mode keeps one)
      models/
        round-NNNN.pt    the same for each evaluation round (``eval.keep_models``)
      sites.json         the sites: names, sample counts, aggregate descriptors (modality, organs)
      MODEL_CARD.md      what the model is, was trained on and is good for (written with the report)
      tracking.json      which TensorBoard folder / MLflow run also holds this run (experiment.tracking)
      tensorboard/       its TensorBoard event files, or mlflow/ its MLflow store (by default)

A run folder is never overwritten: :meth:`RunDir.create` refuses an existing non-empty folder,
except one in which no round finished (:func:`round_finished`), which holds no results: it is
cleared and reused, so that a run which failed or was stopped before its first round does not
block the corrected rerun.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import platform
import shutil
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from fedsilo.config import ExperimentConfig, config_from_toml_text, dumps
from fedsilo.fileio import atomic_torch_save, atomic_write_text

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.toml"
ENV_FILE = "env.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.pt"
FINAL_FILE = "final.pt"
MODELS_DIR = "models"
SITES_FILE = "sites.json"

_PACKAGES = ("fedsilo", "torch", "flwr", "flwr-datasets", "monai", "opacus", "numpy", "torchmetrics", "ray")


class RunDirError(ValueError):
    """A run folder cannot be created or resumed (exists, missing files, corrupt checkpoint)."""


# --------------------------------------------------------------------------------------------
# Environment record
# --------------------------------------------------------------------------------------------


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that determine a run's numbers."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit(start: Path | None = None) -> dict[str, Any]:
    """Commit of the fedsilo source tree and whether it has uncommitted changes."""
    where = start or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        return {"commit": commit, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown (not a git checkout)", "dirty": None}


def cpu_model() -> str:
    """The CPU model name (Linux ``/proc/cpuinfo``; else :func:`platform.processor`; else 'unknown CPU').

    Recorded because float kernels round differently on different CPU families: the same config
    and seed repeat exactly on one machine, but short noisy runs can end a few points apart on
    another (seen between an Intel Xeon and an AMD EPYC).
    """
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def environment_record(cfg: ExperimentConfig, engine: str) -> dict[str, Any]:
    """What env.json holds: enough to repeat the run."""
    return {
        "seed": cfg.experiment.seed,
        "engine": engine,
        "mode": cfg.experiment.mode,
        "task": cfg.experiment.task,
        "start_time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(),
        "git": git_commit(),
        "platform": {
            "system": platform.platform(),
            "machine": platform.machine(),
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "cuda": torch.cuda.is_available(),
        },
        "resumes": [],
    }


# --------------------------------------------------------------------------------------------
# The run folder
# --------------------------------------------------------------------------------------------


def round_finished(path: str | Path) -> bool:
    """Whether a round finished in run folder ``path`` (it then holds results that must be kept).

    A round has finished once a checkpoint, a final state, a kept round model or a metrics row of
    round 1 or later exists. The round-0 evaluation logged before training does not count.
    """
    path = Path(path)
    if (path / CHECKPOINT_DIR / LATEST).exists() or (path / FINAL_FILE).exists():
        return True
    if (path / MODELS_DIR).is_dir() and any((path / MODELS_DIR).iterdir()):
        return True
    metrics = path / METRICS_FILE
    if metrics.is_file():
        for line in metrics.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                return True  # unreadable: keep the folder rather than guess
            if not isinstance(row, dict) or int(row.get("round", 1) or 0) >= 1:
                return True
    return False


def reusable(path: str | Path) -> bool:
    """A fedsilo run folder (it has ``config.toml``) in which no round finished."""
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and not round_finished(path)


def clear_unstarted(path: str | Path, *, remove_folder: bool) -> None:
    """Delete what a run folder in which no round finished holds (and the folder itself).

    Raises
    ------
    RunDirError
        When a round finished in ``path`` (its results are never deleted).
    """
    path = Path(path)
    if round_finished(path):
        raise RunDirError(f"run folder {str(path)!r} holds finished rounds; it is kept")
    if remove_folder:
        shutil.rmtree(path)
        return
    for entry in path.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _clean(value: Any) -> Any:
    """Replace non-finite floats by None so every line is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class RunDir:
    """A run folder. Create with :meth:`create`, reopen for resume with :meth:`open`."""

    def __init__(self, path: str | Path, cfg: ExperimentConfig) -> None:
        self.path = Path(path)
        self.cfg = cfg

    # -- creation / opening --------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, cfg: ExperimentConfig, engine: str) -> RunDir:
        """Create a new run folder; refuse an existing non-empty one (nothing is overwritten).

        A run folder in which no round finished (one left by a run that failed or was stopped
        before its first round) holds no results: it is cleared and reused, with a warning.
        """
        path = Path(path)
        if path.is_dir() and reusable(path):
            logger.warning("Reusing run folder %s: no round finished there (a run that failed or was "
                           "stopped before its first round left it)", path)
            clear_unstarted(path, remove_folder=False)
        elif path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise RunDirError(
                f"run folder {str(path)!r} already exists and is not empty; choose another --out, "
                f"or continue it with `fedsilo run --resume {path}`"
            )
        (path / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
        run = cls(path, cfg)
        atomic_write_text(path / CONFIG_FILE, dumps(cfg))
        run.write_env(environment_record(cfg, engine))
        (path / METRICS_FILE).touch()
        logger.info("Run folder: %s", path)
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """Open an existing run folder (for resume, reports, audits)."""
        path = Path(path)
        cfg_path = path / CONFIG_FILE
        if not cfg_path.is_file():
            raise RunDirError(f"{str(path)!r} is not a fedsilo run folder (no {CONFIG_FILE})")
        return cls(path, config_from_toml_text(cfg_path.read_text(encoding="utf-8")))

    # -- env.json ------------------------------------------------------------------------------

    def read_env(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / ENV_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}

    def write_env(self, env: Mapping[str, Any]) -> None:
        atomic_write_text(self.path / ENV_FILE, json.dumps(env, indent=2, default=_json_default) + "\n")

    def record_resume(self, from_round: int, engine: str) -> None:
        env = self.read_env()
        env.setdefault("resumes", []).append(
            {
                "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "from_round": from_round,
                "engine": engine,
                "git": git_commit(),
            }
        )
        self.write_env(env)

    def record_cluster(self, cluster: Mapping[str, Any]) -> None:
        """Keep the Ray cluster a simulation runs on (in the latest resume entry when resumed)."""
        env = self.read_env()
        target = env["resumes"][-1] if env.get("resumes") else env
        target["cluster"] = dict(cluster)
        self.write_env(env)

    # -- metrics -------------------------------------------------------------------------------

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    def log_metrics(self, round_: int, scope: str, values: Mapping[str, Any], **extra: Any) -> None:
        """Append one line ``{"round", "scope", **extra, **values}`` to metrics.jsonl."""
        row = {"round": int(round_), "scope": scope, **extra, **values}
        line = json.dumps(_clean(row), default=_json_default, allow_nan=False)
        with self.metrics_path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    def metrics_lines(self) -> int:
        """How many lines metrics.jsonl holds (0 before the first)."""
        if not self.metrics_path.exists():
            return 0
        return self.metrics_path.read_bytes().count(b"\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """All rows of metrics.jsonl (a torn last line from a killed process is skipped)."""
        rows = []
        if not self.metrics_path.exists():
            return rows
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("Skipping a torn line in %s", self.metrics_path)
        return rows

    def truncate_metrics(self, last_round: int, lines: int | None = None) -> None:
        """Drop rows of rounds after ``last_round`` (written after the last checkpoint) and, when
        ``lines`` is given, every line after the first ``lines`` (the file as the checkpoint saw it)."""
        rows = [r for r in self.read_metrics()[:lines] if r.get("round", 0) <= last_round]
        text = "".join(json.dumps(r, allow_nan=False) + "\n" for r in rows)
        atomic_write_text(self.metrics_path, text)

    # -- checkpoints ---------------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_DIR / LATEST

    def save_checkpoint(self, state: Mapping[str, Any]) -> None:
        """Atomically replace checkpoints/latest.pt with ``state`` (must contain ``round``)."""
        if "round" not in state:
            raise ValueError("checkpoint state must contain 'round'")
        atomic_torch_save(dict(state), self.checkpoint_path)

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The last checkpoint, or None when no round has finished yet."""
        if not self.checkpoint_path.exists():
            return None
        try:
            return torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
            raise RunDirError(f"checkpoint {str(self.checkpoint_path)!r} cannot be read: {exc}") from exc

    def save_final(self, state: Mapping[str, Any]) -> None:
        atomic_torch_save(dict(state), self.path / FINAL_FILE)

    @property
    def final_path(self) -> Path:
        return self.path / FINAL_FILE

    def write_sites(self, sites: list[Mapping[str, Any]]) -> None:
        """Record the sites as the server knows them (names, sizes, aggregate descriptors; no data)."""
        atomic_write_text(self.path / SITES_FILE, json.dumps([_clean(dict(s)) for s in sites], indent=2,
                                                             default=_json_default) + "\n")

    def read_sites(self) -> list[dict[str, Any]]:
        """What :meth:`write_sites` recorded ([] for runs from before it existed)."""
        path = self.path / SITES_FILE
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else []

    def save_round_model(self, round_: int, state: Mapping[str, Any]) -> None:
        """Keep the model state of an evaluation round as ``models/round-NNNN.pt`` (atomic)."""
        atomic_torch_save({"round": round_, **state}, self.round_model_path(round_))

    def round_model_path(self, round_: int) -> Path:
        return self.path / MODELS_DIR / f"round-{round_:04d}.pt"

    def saved_rounds(self) -> list[int]:
        """Rounds whose model was kept (see :meth:`save_round_model`), ascending."""
        folder = self.path / MODELS_DIR
        if not folder.is_dir():
            return []
        return sorted(int(p.stem.split("-", 1)[1]) for p in folder.glob("round-*.pt")
                      if p.stem.split("-", 1)[1].isdigit())

    def artifact(self, *parts: str) -> Path:
        """Path of a file in the run folder (parent folders created)."""
        p = self.path.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

"""TensorBoard tracking through :class:`torch.utils.tensorboard.SummaryWriter` (see :mod:`fedsilo.run.tracking`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedsilo.config import ExperimentConfig, dumps
from fedsilo.run.tracking.base import (
    STATE_FILE,
    Scopes,
    config_params,
    numeric_metrics,
    read_state,
    require,
    write_state,
)

logger = logging.getLogger(__name__)


class TensorBoardTracker:
    """Event files through :class:`torch.utils.tensorboard.SummaryWriter` (see :mod:`fedsilo.run.tracking`)."""

    def __init__(self) -> None:
        self._writer: Any = None
        self._params: dict[str, str | int | float | bool] = {}
        self._global_tags: set[str] = set()

    def start(self, cfg: ExperimentConfig, run_dir: Path, *, first_round: int | None = 0) -> None:
        require("tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        run_dir = Path(run_dir)
        state = read_state(run_dir)
        if not state.get("logdir"):
            if first_round is None:
                logger.warning("No TensorBoard run is recorded in %s; nothing more is logged", run_dir / STATE_FILE)
                return
            state = {"tracking": "tensorboard", "logdir": str(new_logdir(cfg, run_dir))}
            write_state(run_dir, state)
        fresh = first_round == 0
        purge = first_round if first_round else None  # drop events a killed process wrote after its checkpoint
        self._writer = SummaryWriter(log_dir=state["logdir"], purge_step=purge)
        self._params = config_params(cfg)
        if fresh:
            self._writer.add_text("config", "```toml\n" + dumps(cfg) + "```", 0)
        logger.info("TensorBoard: %s (view with `tensorboard --logdir %s`)", state["logdir"], state["logdir"])

    def log_round(self, rnd: int, scopes: Scopes) -> None:
        if self._writer is None:
            return
        for tag, value in numeric_metrics(scopes).items():
            self._writer.add_scalar(tag, value, rnd)
            if tag.startswith("global/"):
                self._global_tags.add(tag)
        self._writer.flush()

    def log_artifacts(self, paths: Sequence[Path]) -> None:
        if self._writer is None:
            return
        for path in map(Path, paths):
            if path.suffix == ".md":  # the text dashboard renders markdown
                self._writer.add_text(path.stem.lower(), path.read_text(encoding="utf-8"), 0)
            else:
                self._writer.add_text(path.stem.lower(), f"`{path.resolve()}`", 0)
        self._writer.flush()

    def close(self, status: str | None = None) -> None:
        if self._writer is None:
            return
        if status is not None:
            from torch.utils.tensorboard.summary import hparams

            exp, ssi, sei = hparams(self._params, {tag: 0.0 for tag in sorted(self._global_tags)})
            for summary in (exp, ssi, sei) if status == "finished" else (exp, ssi):
                self._writer.file_writer.add_summary(summary)
        self._writer.close()
        self._writer = None


def new_logdir(cfg: ExperimentConfig, run_dir: Path) -> Path:
    """``RUN_DIR/tensorboard``, or a fresh ``<tracking_uri>/<parent>/<run>`` (``-2``, ``-3``... when taken)."""
    if not cfg.experiment.tracking_uri:
        return run_dir / "tensorboard"
    base = Path(cfg.experiment.tracking_uri) / run_dir.resolve().parent.name / run_dir.name
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


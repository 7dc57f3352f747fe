"""Experiment trackers: a run's metrics, config and report also in TensorBoard or MLflow.

A run folder is fedsilo's own record (``metrics.jsonl``, ``config.toml``, ``report.html``); with
``experiment.tracking`` set, the same numbers also go, through the library itself, to a tracker
that researchers already browse:

- ``tensorboard``: event files written by :class:`torch.utils.tensorboard.SummaryWriter` in
  ``RUN_DIR/tensorboard/`` (or ``<experiment.tracking_uri>/<parent folder>/<run folder>``): a
  scalar per metric tagged ``<scope>/<metric>`` (scope = ``global`` or a site's name) with the
  round as step; the resolved config as hyper-parameters and as text; the model card as text and
  the report's path as text (TensorBoard has no files beside its events).
- ``mlflow``: one MLflow run (named after the run folder, in the MLflow experiment
  ``experiment.name``) in a local SQLite store ``RUN_DIR/mlflow/mlflow.db`` with its artifacts in
  ``RUN_DIR/mlflow/artifacts/`` (no server), or at the tracking URI ``experiment.tracking_uri``:
  the same metrics with step = round, the resolved config as params ``section.key``, and
  ``config.toml``, ``report.html`` and ``MODEL_CARD.md`` as artifacts.

Which tracker run belongs to a run folder is kept in ``RUN_DIR/tracking.json``, so a resumed run
and a rewritten report (``fedsilo report``, ``fedsilo audit``) add to the same tracker run. Only
finite numbers are tracked; metrics.jsonl stays the complete record.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from fedsilo.config import ExperimentConfig
from fedsilo.run.tracking.base import (
    INSTALL_HINT,
    STATE_FILE,
    TRACKERS,
    GuardedTracker,
    NullTracker,
    Scopes,
    Tracker,
    config_params,
    numeric_metrics,
    read_state,
    require,
)
from fedsilo.run.tracking.mlflow_tracker import MlflowTracker
from fedsilo.run.tracking.tensorboard_tracker import TensorBoardTracker

logger = logging.getLogger(__name__)


def make_tracker(kind: str) -> Tracker:
    """The tracker of ``experiment.tracking`` (one of :data:`TRACKERS`), guarded (:class:`GuardedTracker`)."""
    if kind == "none":
        return NullTracker()
    if kind == "tensorboard":
        return GuardedTracker(TensorBoardTracker(), kind)
    if kind == "mlflow":
        return GuardedTracker(MlflowTracker(), kind)
    raise ValueError(f"experiment.tracking must be one of {', '.join(TRACKERS)}, got {kind!r}")


def check_tracking(cfg: ExperimentConfig) -> None:
    """Fail before any work when the configured tracker's library is missing; warn of an unused URI."""
    if cfg.experiment.tracking != "none":
        require(cfg.experiment.tracking)
    elif cfg.experiment.tracking_uri:
        logger.warning("experiment.tracking_uri = %r is ignored: experiment.tracking is 'none'",
                       cfg.experiment.tracking_uri)


def log_run_artifacts(run_dir: str | Path, cfg: ExperimentConfig, paths: Sequence[Path]) -> None:
    """Attach ``paths`` (those that exist) to the tracker run recorded for ``run_dir``, if any."""
    present = [Path(p) for p in paths if Path(p).is_file()]
    if cfg.experiment.tracking == "none" or not present:
        return
    tracker = make_tracker(cfg.experiment.tracking)
    tracker.start(cfg, Path(run_dir), first_round=None)
    try:
        tracker.log_artifacts(present)
    finally:
        tracker.close(None)


__all__ = ["INSTALL_HINT", "STATE_FILE", "TRACKERS", "GuardedTracker", "MlflowTracker", "NullTracker", "Scopes",
           "TensorBoardTracker", "Tracker", "check_tracking", "config_params", "log_run_artifacts", "make_tracker",
           "numeric_metrics", "read_state", "require"]

"""MLflow tracking through :class:`mlflow.tracking.MlflowClient` (see :mod:`fedsilo.run.tracking`)."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedsilo.config import ExperimentConfig
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

_MLFLOW_STATUS = {"finished": "FINISHED", "failed": "FAILED", "killed": "KILLED"}
_MLFLOW_NAME = re.compile(r"[^\w\-. /]")


class MlflowTracker:
    """One MLflow run through :class:`mlflow.tracking.MlflowClient` (see :mod:`fedsilo.run.tracking`)."""

    def __init__(self) -> None:
        self._client: Any = None
        self._run_id = ""

    def start(self, cfg: ExperimentConfig, run_dir: Path, *, first_round: int | None = 0) -> None:
        # MLflow reports usage to its makers unless told not to; a study's machine sends nothing unasked
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        require("mlflow")
        from mlflow.tracking import MlflowClient

        for name in ("alembic", "mlflow.store.db.utils"):  # database set-up chatter
            logging.getLogger(name).setLevel(logging.WARNING)
        run_dir = Path(run_dir)
        state = read_state(run_dir)
        if state.get("run_id"):
            self._client, self._run_id = MlflowClient(tracking_uri=state["uri"]), state["run_id"]
            if first_round is not None:
                self._client.update_run(self._run_id, status="RUNNING")
            return
        if first_round is None:
            logger.warning("No MLflow run is recorded in %s; nothing more is logged", run_dir / STATE_FILE)
            return
        uri, artifacts = mlflow_store(cfg, run_dir)
        self._client = MlflowClient(tracking_uri=uri)
        experiment_id = _mlflow_experiment(self._client, cfg.experiment.name, artifacts)
        tags = {"fedsilo.run_dir": str(run_dir.resolve()), "fedsilo.task": cfg.experiment.task,
                "fedsilo.mode": cfg.experiment.mode, "fedsilo.seed": str(cfg.experiment.seed)}
        self._run_id = self._client.create_run(experiment_id, run_name=run_dir.name, tags=tags).info.run_id
        write_state(run_dir, {"tracking": "mlflow", "uri": uri, "experiment_id": experiment_id,
                               "run_id": self._run_id})
        self._log_params(cfg)
        self._client.log_artifact(self._run_id, str(run_dir / "config.toml"))
        logger.info("MLflow: run %s in %s", self._run_id, uri)

    def _log_params(self, cfg: ExperimentConfig) -> None:
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        params = []
        for key, value in config_params(cfg).items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            if len(text) > MAX_PARAM_VAL_LENGTH:
                logger.warning("MLflow keeps %d characters of a param; %s is cut (config.toml has it whole)",
                               MAX_PARAM_VAL_LENGTH, key)
                text = text[:MAX_PARAM_VAL_LENGTH]
            params.append(Param(key, text))
        for i in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
            self._client.log_batch(self._run_id, params=params[i:i + MAX_PARAMS_TAGS_PER_BATCH])

    def log_round(self, rnd: int, scopes: Scopes) -> None:
        if self._client is None:
            return
        from mlflow.entities import Metric
        from mlflow.utils.validation import MAX_METRICS_PER_BATCH

        now = int(time.time() * 1000)
        metrics = [Metric(_MLFLOW_NAME.sub("_", key), value, now, rnd)
                   for key, value in numeric_metrics(scopes).items()]
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            self._client.log_batch(self._run_id, metrics=metrics[i:i + MAX_METRICS_PER_BATCH])

    def log_artifacts(self, paths: Sequence[Path]) -> None:
        if self._client is None:
            return
        for path in paths:
            self._client.log_artifact(self._run_id, str(path))

    def close(self, status: str | None = None) -> None:
        if self._client is not None and status is not None:
            self._client.set_terminated(self._run_id, _MLFLOW_STATUS[status])
        self._client = None


def mlflow_store(cfg: ExperimentConfig, run_dir: Path) -> tuple[str, str | None]:
    """The tracking URI, and where a new experiment keeps its artifacts (None = the store decides)."""
    uri = cfg.experiment.tracking_uri
    if not uri:
        folder = (run_dir / "mlflow").resolve()
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()
    if uri.startswith("sqlite:///"):  # MLflow's default would be ./mlruns of whatever folder a run starts in
        db = Path(uri[len("sqlite:///"):]).resolve()
        db.parent.mkdir(parents=True, exist_ok=True)
        return uri, (db.parent / "artifacts" / cfg.experiment.name).as_uri()
    return uri, None


def _mlflow_experiment(client: Any, name: str, artifacts: str | None) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifacts)
    except MlflowException:  # created meanwhile by another run of a sweep
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


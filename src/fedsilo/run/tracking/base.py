"""The tracker protocol, the null tracker, a guard against tracker failures, and what every tracker shares:
which metrics and config values are tracked, and ``RUN_DIR/tracking.json``."""

from __future__ import annotations

import importlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from fedsilo.config import ConfigError, ExperimentConfig, to_dict
from fedsilo.fileio import atomic_write_text

logger = logging.getLogger(__name__)

TRACKERS = ("none", "tensorboard", "mlflow")
STATE_FILE = "tracking.json"
INSTALL_HINT = "pip install 'fedsilo[tracking]'"
#: The package that provides each tracker (the ``tracking`` extra installs both).
_PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow-skinny")}

#: Metric values per scope (``global`` or a site's name) of one round.
Scopes = Mapping[str, Mapping[str, Any]]


class Tracker(Protocol):
    """What the round loop and the report writer tell a tracker."""

    def start(self, cfg: ExperimentConfig, run_dir: Path, *, first_round: int | None = 0) -> None:
        """Open (or, when ``RUN_DIR/tracking.json`` names one, reopen) the tracker run of ``run_dir``.

        ``first_round`` is the first round this process will log (0 for a new run, k + 1 when resuming
        after round k); ``None`` attaches to the recorded run only to add artifacts.
        """

    def log_round(self, rnd: int, scopes: Scopes) -> None:
        """Record the finite numeric metrics of round ``rnd`` (step = round)."""

    def log_artifacts(self, paths: Sequence[Path]) -> None:
        """Attach files of the run folder (report, model card) to the tracker run."""

    def close(self, status: str | None = None) -> None:
        """Release the tracker; ``"finished"``, ``"failed"`` or ``"killed"`` end the training, ``None`` leaves
        its status."""


class NullTracker:
    """``experiment.tracking = "none"``: the run folder is the only record."""

    def start(self, cfg: ExperimentConfig, run_dir: Path, *, first_round: int | None = 0) -> None:
        pass

    def log_round(self, rnd: int, scopes: Scopes) -> None:
        pass

    def log_artifacts(self, paths: Sequence[Path]) -> None:
        pass

    def close(self, status: str | None = None) -> None:
        pass


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def require(kind: str) -> Any:
    """Import the library of tracker ``kind``; a missing one is a :class:`ConfigError` naming the extra."""
    module, package = _PACKAGES[kind]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"experiment.tracking = {kind!r} needs the {package} package, which is not "
                          f"installed ({exc}): {INSTALL_HINT}") from None


def numeric_metrics(scopes: Scopes) -> dict[str, float]:
    """``{"<scope>/<metric>": value}`` for every finite number (nested mappings join keys with ``.``)."""
    out: dict[str, float] = {}

    def add(prefix: str, values: Mapping[str, Any]) -> None:
        for key, value in values.items():
            name = f"{prefix}.{key}" if not prefix.endswith("/") else f"{prefix}{key}"
            if isinstance(value, Mapping):
                add(name, value)
            elif isinstance(value, (int, float)) and math.isfinite(value):
                out[name] = float(value)

    for scope, values in scopes.items():
        add(f"{scope}/", values)
    return out


def config_params(cfg: ExperimentConfig) -> dict[str, str | int | float | bool]:
    """The resolved config flattened to ``{"section.key": value}`` (lists and tables as JSON text)."""
    out: dict[str, str | int | float | bool] = {}

    def add(prefix: str, data: Mapping[str, Any]) -> None:
        for key, value in data.items():
            name = f"{prefix}.{key}" if prefix else key
            if isinstance(value, Mapping):
                add(name, value)
            elif isinstance(value, (str, int, float, bool)):
                out[name] = value
            else:
                out[name] = json.dumps(value)

    add("", to_dict(cfg))
    return out


def read_state(run_dir: Path) -> dict[str, Any]:
    """What ``RUN_DIR/tracking.json`` records ({} when no tracker run was opened)."""
    path = Path(run_dir) / STATE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def write_state(run_dir: Path, state: Mapping[str, Any]) -> None:
    """Record which tracker run belongs to ``run_dir`` (``RUN_DIR/tracking.json``)."""
    atomic_write_text(Path(run_dir) / STATE_FILE, json.dumps(dict(state), indent=2) + "\n")


# --------------------------------------------------------------------------------------------
# The guard
# --------------------------------------------------------------------------------------------


class GuardedTracker:
    """A tracker whose failures after :meth:`start` are logged and end tracking, never the run.

    The run folder keeps every number, so a long run is not lost to an unreachable tracking
    server; a tracker that cannot start at all does stop the run, before any training.
    """

    def __init__(self, inner: Tracker, kind: str) -> None:
        self._inner: Tracker | None = inner
        self._kind = kind

    def start(self, cfg: ExperimentConfig, run_dir: Path, *, first_round: int | None = 0) -> None:
        if self._inner is None:
            return
        try:
            self._inner.start(cfg, run_dir, first_round=first_round)
        except ConfigError:
            raise
        except Exception as exc:  # an unreachable server, an unwritable folder: say which setting
            where = cfg.experiment.tracking_uri or f"its default place in {run_dir}"
            raise ConfigError(f"experiment.tracking = {self._kind!r} could not start at {where} "
                              f"(experiment.tracking_uri): {type(exc).__name__}: {exc}") from exc

    def log_round(self, rnd: int, scopes: Scopes) -> None:
        self._call("log_round", rnd, scopes)

    def log_artifacts(self, paths: Sequence[Path]) -> None:
        self._call("log_artifacts", paths)

    def close(self, status: str | None = None) -> None:
        self._call("close", status)

    def _call(self, method: str, *args: Any) -> None:
        if self._inner is None:
            return
        try:
            getattr(self._inner, method)(*args)
        except Exception:  # noqa: BLE001 - tracking is a copy; the run folder is the record
            logger.exception("Experiment tracking failed (%s) and is off for the rest of this process; the run "
                             "folder keeps every number", method)
            self._inner = None


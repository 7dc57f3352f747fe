"""Tasks fedsilo federates, by name (``experiment.task``; the names are :data:`fedsilo.registry.TASKS`)."""

from __future__ import annotations

import difflib

from fedsilo.config import ExperimentConfig
from fedsilo.registry import TASKS, resolve
from fedsilo.tasks.base import LocalSteps, Phase, StepLoss, Task, TrainContext, TrainResult


def task_class(name: str) -> type[Task]:
    """The task class registered as ``name``.

    Raises
    ------
    ValueError
        For a name that is not registered (the closest registered name is suggested).
    """
    if name not in TASKS:
        close = difflib.get_close_matches(name, list(TASKS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"experiment.task must be one of {', '.join(TASKS)}, got {name!r}{hint}")
    cls = resolve(TASKS[name])
    if not (isinstance(cls, type) and issubclass(cls, Task)) or cls.name != name:
        raise ValueError(f"{TASKS[name]} must be a Task subclass whose name is {name!r}")
    return cls


def make_task(cfg: ExperimentConfig) -> Task:
    """The task named by ``cfg.experiment.task``, built for ``cfg``."""
    return task_class(cfg.experiment.task)(cfg)


__all__ = ["LocalSteps", "Phase", "StepLoss", "Task", "TrainContext", "TrainResult", "make_task", "task_class"]

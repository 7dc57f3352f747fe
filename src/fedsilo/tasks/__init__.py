"""Tasks fedsilo federates, by name (``experiment.task``)."""

from __future__ import annotations

from fedsilo.config import ExperimentConfig
from fedsilo.tasks.base import Task, TrainContext, TrainResult


def task_registry() -> dict[str, type[Task]]:
    """Task classes by name (imported lazily so a task's heavy dependencies load only when used)."""
    from fedsilo.tasks.classification import ClassificationTask
    from fedsilo.tasks.segmentation import SegmentationTask
    from fedsilo.tasks.synthesis import SynthesisTask

    return {cls.name: cls for cls in (ClassificationTask, SegmentationTask, SynthesisTask)}


def make_task(cfg: ExperimentConfig) -> Task:
    """The task named by ``cfg.experiment.task``."""
    registry = task_registry()
    name = cfg.experiment.task
    if name not in registry:
        raise ValueError(f"experiment.task must be one of {', '.join(registry)}, got {name!r}")
    return registry[name](cfg)


__all__ = ["Task", "TrainContext", "TrainResult", "make_task", "task_registry"]

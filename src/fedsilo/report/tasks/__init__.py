"""Per-task presentation: which results a reader sees and how (see :class:`.base.TaskPresenter`).

:data:`PRESENTERS` maps a task name to its presenter (``"module:Class"``); a task without an
entry is presented by the default :class:`~.base.TaskPresenter`.
"""

from __future__ import annotations

import importlib

from fedsilo.config import ExperimentConfig
from fedsilo.report.tasks.base import TaskPresenter

PRESENTERS: dict[str, str] = {
    "classification": "fedsilo.report.tasks.classification:ClassificationPresenter",
    "segmentation": "fedsilo.report.tasks.segmentation:SegmentationPresenter",
    "synthesis": "fedsilo.report.tasks.synthesis:SynthesisPresenter",
}


def presenter_for(cfg: ExperimentConfig) -> TaskPresenter:
    """The presenter of ``cfg.experiment.task`` (the default one for a task without its own)."""
    target = PRESENTERS.get(cfg.experiment.task)
    if target is None:
        return TaskPresenter(cfg)
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)(cfg)


__all__ = ["PRESENTERS", "TaskPresenter", "presenter_for"]
